import { chmod, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { sourceSchema, syncConfig } from '@syncpoint/test-fixtures';
import { afterAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { DEMO_SYNC_CONFIG } from '../src/embedded-default.js';
import { spawnCli, waitForOutput } from './run-cli.js';

// `expect.stringMatching` is typed `any`; held as `unknown` it sits in an expected object without an unsafe assignment.
const LSN_TEXT: unknown = expect.stringMatching(/^[0-9A-F]{8}\/[0-9A-F]{8}$/);

describe('syncpoint start with no config (embedded default)', () => {
  const cleanups: Array<() => unknown> = [];
  afterAll(async () => {
    for (const cleanup of cleanups.reverse()) await cleanup();
  });

  it(
    'serves a checkpoint request end to end: record stored, marker in the WAL, clean Ctrl-C',
    { timeout: 120_000 },
    async () => {
      const root = await mkdtemp(path.join(tmpdir(), 'syncpoint-default-'));
      await chmod(root, 0o755); // as root, Postgres runs as the postgres user and must reach .syncpoint/
      cleanups.push(() => rm(root, { recursive: true, force: true }));
      const child = spawnCli(['start', '--port', '0'], { cwd: root, env: { INIT_CWD: root } });
      cleanups.push(() => child.exitCode === null && child.kill('SIGKILL'));
      const output = await waitForOutput(child, /Press Ctrl-C to stop/);

      const url = /running at (http:\/\/\S+)/.exec(output)![1]!;
      const sourceUrl = /source: +(\S+)/.exec(output)![1]!;
      const storageUrl = /storage: +(\S+)/.exec(output)![1]!;
      const token = /valid 12 h\):\n +(\S+)/.exec(output)![1]!;
      expect(output).toContain(`curl -s -X POST ${url}/sync/checkpoint-request`);
      expect(output).toContain(path.join(root, '.syncpoint'));

      const source = new pg.Client({ connectionString: sourceUrl });
      await source.connect();
      source.on('error', () => {}); // the service stops this server at the end
      const slot = 'embedded_default_test';
      await source.query(`SELECT pg_create_logical_replication_slot($1, 'test_decoding')`, [slot]);
      const storage = new pg.Client({ connectionString: storageUrl });
      await storage.connect();
      storage.on('error', () => {});
      // Replication's own markers (after its snapshot) come before the request: wait until it serves a checkpoint.
      await waitUntil('replication to serve a checkpoint', async () => {
        const { rows } = await storage.query(`SELECT 1 FROM powersync.sync_rules WHERE last_checkpoint IS NOT NULL`);
        return rows.length > 0;
      });

      const response = await fetch(`${url}/sync/checkpoint-request`, {
        method: 'POST',
        headers: { Authorization: `Token ${token}`, 'Content-Type': 'application/json' },
        body: JSON.stringify({ client_id: 'my-device', checkpoint_request_id: '1' })
      });
      expect(response.status).toBe(200);
      expect(await response.json()).toEqual({ data: { checkpoint_request_id: '1' } });

      const { rows: records } = await storage.query<{ user_id: string; write_checkpoint: string; head: string }>(
        `SELECT user_id, write_checkpoint::text, lsns->>'1' AS head FROM powersync.write_checkpoints`
      );
      expect(records).toEqual([
        {
          user_id: 'dev-user/my-device',
          write_checkpoint: '1',
          head: LSN_TEXT
        }
      ]);
      // Replication (unified role) reaches the marker and marks the request processed.
      await waitUntil('replication to mark the checkpoint request processed', async () => {
        const { rows } = await storage.query<{ lsn: string | null }>(
          `SELECT processed_at_lsn::text AS lsn FROM powersync.write_checkpoints`
        );
        return rows[0]?.lsn != null;
      });

      const { rows: changes } = await source.query<{ lsn: string; data: string }>(
        `SELECT lsn::text, data FROM pg_logical_slot_peek_changes($1, NULL, NULL)`,
        [slot]
      );
      const markers = changes.filter((change) => /message: .*prefix: powersync, sz: 4 content:ping/.test(change.data));
      // The request's marker comes after the stored head. (Exactly one marker per request is checkpoint-source-cost's
      // test; here a heartbeat marker may also fall in the window on a slow machine.)
      const { rows: after } = await source.query<{ n: number }>(
        'SELECT count(*)::int AS n FROM unnest($1::pg_lsn[]) lsn WHERE lsn >= $2::pg_lsn',
        [markers.map((marker) => marker.lsn), records[0]!.head]
      );
      expect(after[0]!.n).toBeGreaterThanOrEqual(1);

      await source.query('SELECT pg_drop_replication_slot($1)', [slot]);
      await Promise.all([source.end(), storage.end()]);
      child.kill('SIGINT');
      const code = await new Promise((resolve) => child.on('close', resolve));
      expect(code).toBe(0);
    }
  );
});

async function waitUntil(what: string, probe: () => Promise<boolean>, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await probe())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

describe('the embedded default and the test fixtures', () => {
  // The service keeps its own copy of the demo rules and schema for runtime; tests use the test-fixtures copies.
  it('runs the demo-todos rules and schema of the fixtures', async () => {
    expect(parse(DEMO_SYNC_CONFIG)).toEqual(parse(syncConfig('demo-todos')));
    const source = await readFile(new URL('../src/embedded-default.ts', import.meta.url), 'utf8');
    const tableOf = (sql: string) => /CREATE TABLE IF NOT EXISTS todos \(([^;]*?)\)\s*(?:;|`)/.exec(sql)?.[1];
    const normalize = (columns: string | undefined) => columns?.replace(/\s+/g, ' ').trim();
    expect(normalize(tableOf(source))).toBeDefined();
    expect(normalize(tableOf(source))).toBe(normalize(tableOf(sourceSchema('demo-todos').ddl)));
  });
});
