/**
 * `syncpoint validate` reports the sync-rules rejections of issue 11 item 4 with the same precision as the
 * library: definition, query kind and index, line and column, the reason and the query. Sync-rules errors are
 * found before the source is contacted, so no database is needed here.
 */
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it, vi } from 'vitest';
import { stringify } from 'yaml';
import { runCli } from './run-cli.js';

// The CLI is spawned through tsx, which compiles it on start: slow on a busy 2-core machine.
vi.setConfig({ testTimeout: 180_000 });

const RULES = `config:
  unstable_sqlite_expression_engine: true
bucket_definitions:
  aliased:
    parameters: SELECT m.org_id FROM members m WHERE m.user_id = request.user_id()
    data:
      - SELECT * FROM docs WHERE org_id = bucket.org_id
  literal_list:
    parameters: SELECT org_id FROM members WHERE user_id = request.user_id() AND role IN ('admin', 'owner')
    data:
      - SELECT * FROM docs WHERE org_id = bucket.org_id
  two_arrays:
    parameters: SELECT org_id FROM members WHERE org_id IN request.jwt() -> 'orgs' AND team IN request.jwt() -> 'teams'
    data:
      - SELECT * FROM docs WHERE org_id = bucket.org_id
  twice:
    priority: 1
    parameters: SELECT request.user_id() AS owner, 0 AS _priority
    data:
      - SELECT * FROM docs WHERE owner = bucket.owner
  computed:
    parameters: SELECT org_id, level AS _priority FROM members WHERE user_id = request.user_id()
    data:
      - SELECT * FROM docs WHERE org_id = bucket.org_id
`;

async function writeServiceConfig(syncConfig: string): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), 'syncpoint-validate-'));
  const file = path.join(dir, 'config.yaml');
  await writeFile(
    file,
    stringify({
      replication: {
        connections: [{ type: 'postgresql', uri: 'postgresql://127.0.0.1:1/none', sslmode: 'disable' }]
      },
      storage: { type: 'postgresql', uri: 'postgresql://127.0.0.1:1/none', sslmode: 'disable' },
      sync_config: { content: syncConfig },
      client_auth: { audience: ['x'] }
    })
  );
  return file;
}

const STREAMS = `config:
  edition: 3
with:
  unused: SELECT id FROM teams
streams:
  board:
    query: SELECT * FROM cards WHERE board_id = subscription.parameter('id') LIMIT 10
  mine:
    query: SELECT * FROM boards WHERE owner_id = auth.user_id()
`;

describe('syncpoint validate', () => {
  it('reports Sync Streams diagnostics naming stream, query and position, warnings included', async () => {
    const { code, stdout } = await runCli(['validate', '-c', await writeServiceConfig(STREAMS)]);
    expect(code).toBe(1);
    const lines = stdout.trim().split('\n');
    expect(lines, stdout).toEqual([
      expect.stringMatching(/^warning: sync config: with\.unused \(YAML line 4, column 11\): CTE "unused" is not used/),
      expect.stringMatching(
        /^sync config: streams\.board\.query at line 1, column 1: LIMIT is not supported.*\(in "SELECT \* FROM cards/
      )
    ]);
  });

  it('accepts a valid Sync Streams config: its warnings, then only the (unreachable) source is a problem', async () => {
    const valid = STREAMS.replace(' LIMIT 10', '').replace('with:\n  unused: SELECT id FROM teams\n', '');
    const { code, stdout } = await runCli(['validate', '-c', await writeServiceConfig(valid)]);
    expect(code).toBe(1);
    expect(stdout.trim().split('\n'), stdout).toEqual([
      expect.stringMatching(
        /^warning: sync config: streams\.board\.query at line 1, column 38: Potentially dangerous query/
      ),
      expect.stringMatching(/^source: cannot connect to the source/)
    ]);
  });

  it('reports each sync-rules rejection with its definition, query and position', async () => {
    const { code, stdout } = await runCli(['validate', '-c', await writeServiceConfig(RULES)]);
    expect(code).toBe(1);
    const lines = stdout
      .trim()
      .split('\n')
      .filter((line) => !line.startsWith('warning: '));
    const expected = [
      /^sync config: YAML line 2, column 3: Enabling unstable_sqlite_expression_engine requires edition: 3$/,
      /^sync config: bucket_definitions\.aliased\.parameters\[0\] at line 1, column 22: Table aliases are not supported in parameter queries.* \(in "SELECT m\.org_id FROM members m WHERE/,
      /^sync config: bucket_definitions\.literal_list\.parameters\[0\] at line 1, column 66: IN with a literal list is not supported in parameter queries/,
      /^sync config: bucket_definitions\.two_arrays\.parameters\[0\] at line 1, column 34: Cannot have multiple array input parameters/,
      /^sync config: bucket_definitions\.twice\.parameters\[0\] at line 1, column 36: Cannot set priority multiple times/,
      /^sync config: bucket_definitions\.computed\.parameters\[0\] at line 1, column 16: "_priority" must be a constant/
    ];
    for (const pattern of expected)
      expect(
        lines.some((line) => pattern.test(line)),
        `${pattern}\n${stdout}`
      ).toBe(true);
    expect(lines.length, stdout).toBe(expected.length);
  });
});
