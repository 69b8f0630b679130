import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { testPostgresServer, type PostgresServer } from '@syncpoint/dev-postgres';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { stringify } from 'yaml';
import { runCli } from './run-cli.js';

// Every case spawns the CLI (tsx compiles it on start): slow on a busy 2-core machine.
vi.setConfig({ testTimeout: 180_000 });

let server: PostgresServer;
let dir: string;

const goodRules = 'bucket_definitions:\n  global:\n    data:\n      - SELECT * FROM items\n';

async function writeConfig(name: string, overrides: Record<string, unknown> = {}) {
  const file = path.join(dir, name);
  await writeFile(
    file,
    stringify({
      replication: { connections: [{ type: 'postgresql', uri: server.url('cli_source'), sslmode: 'disable' }] },
      storage: { type: 'postgresql', uri: server.url('cli_storage'), sslmode: 'disable' },
      sync_config: { content: goodRules },
      client_auth: { audience: ['x'] },
      ...overrides
    })
  );
  return file;
}

beforeAll(async () => {
  server = await testPostgresServer();
  await server.ensureDatabase('cli_source');
  await server.ensureDatabase('cli_storage');
  const source = new pg.Client({ connectionString: server.url('cli_source') });
  await source.connect();
  await source.query('CREATE TABLE IF NOT EXISTS items (id text PRIMARY KEY, name text)');
  await source.query('CREATE TABLE IF NOT EXISTS keyless (name text)');
  await source.query('DROP PUBLICATION IF EXISTS powersync');
  await source.query('CREATE PUBLICATION powersync FOR ALL TABLES');
  await source.end();
  dir = await mkdtemp(path.join(tmpdir(), 'syncpoint-cli-'));
}, 60_000);
afterAll(async () => server?.stop());

describe('syncpoint CLI', () => {
  it('prints help for every command and exits 0', async () => {
    for (const args of [
      ['--help'],
      ['start', '--help'],
      ['migrate', '--help'],
      ['validate', '--help'],
      ['compact', '--help']
    ]) {
      const { code, stdout } = await runCli(args);
      expect(code).toBe(0);
      expect(stdout).toContain('Usage: syncpoint');
    }
  });

  it('exits 2 on wrong usage: unknown command, unknown flag, bad argument', async () => {
    expect((await runCli(['frobnicate'])).code).toBe(2);
    const unknownFlag = await runCli(['migrate', 'up', '--frobnicate']);
    expect(unknownFlag.code).toBe(2);
    expect(unknownFlag.stderr).toContain("unknown option '--frobnicate'");
    const sideways = await runCli(['migrate', 'sideways', '-c', await writeConfig('usage.yaml')]);
    expect(sideways.code).toBe(2);
    expect(sideways.stderr).toContain('expected "up" or "down"');
    expect((await runCli(['start', '--role', 'janitor'])).code).toBe(2);
    const badHost = await runCli(['start', '--host', 'example.com']);
    expect(badHost.code).toBe(2);
    expect(badHost.stderr).toContain('--host: expected an IP address');
  });

  it('exits 3 with a clear message for a missing file or a bad config', async () => {
    const missing = await runCli(['migrate', 'up', '-c', path.join(dir, 'nope.yaml')]);
    expect(missing.code).toBe(3);
    expect(missing.stderr).toMatch(/cannot read config file .*nope\.yaml: ENOENT/);
    const bad = await runCli([
      'migrate',
      'up',
      '-c',
      await writeConfig('bad.yaml', {
        storage: { type: 'postgresql', uri: server.url('cli_storage'), max_pool_size: 'many' }
      })
    ]);
    expect(bad.code).toBe(3);
    expect(bad.stderr).toContain('storage.max_pool_size');
  });

  it('migrates up and down', async () => {
    const file = await writeConfig('migrate.yaml');
    const up = await runCli(['migrate', 'up', '-c', file]);
    expect(up.code).toBe(0);
    expect(up.stdout).toMatch(/applied 1700000000000-initial/);
    expect((await runCli(['migrate', 'up', '-c', file])).stdout).toContain('Nothing to migrate up');
    const down = await runCli(['migrate', 'down', '-c', file]);
    expect(down.code).toBe(0);
    expect(down.stdout).toMatch(/^reverted /);
    expect((await runCli(['migrate', 'up', '-c', file])).code).toBe(0);
  });

  it('validate: OK on a ready source, one line per problem otherwise', async () => {
    const ok = await runCli(['validate', '-c', await writeConfig('ok.yaml')]);
    expect(ok.stdout).toContain('OK:');
    expect(ok.code).toBe(0);
  });

  it('validate: reports a missing publication, bad sync rules and a table without a key', async () => {
    const source = new pg.Client({ connectionString: server.url('cli_source') });
    await source.connect();
    await source.query('DROP PUBLICATION IF EXISTS powersync');
    const noPublication = await runCli(['validate', '-c', await writeConfig('nopub.yaml')]);
    expect(noPublication.code).toBe(1);
    expect(noPublication.stdout).toContain('publication "powersync" does not exist');

    await source.query('CREATE PUBLICATION powersync FOR ALL TABLES');
    const keyless = await runCli([
      'validate',
      '-c',
      await writeConfig('keyless.yaml', {
        sync_config: { content: 'bucket_definitions:\n  g:\n    data:\n      - SELECT * FROM keyless\n' }
      })
    ]);
    expect(keyless.code).toBe(1);
    expect(keyless.stdout).toContain('table public.keyless has no primary key or usable replica identity');
    await source.end();

    const badRules = await runCli([
      'validate',
      '-c',
      await writeConfig('badrules.yaml', {
        sync_config: {
          content: 'bucket_definitions:\n  g:\n    data:\n      - SELECT * FROM items WHERE id = bucket.nope\n'
        }
      })
    ]);
    expect(badRules.code).toBe(1);
    expect(badRules.stdout).toMatch(/sync config: .*bucket_definitions\.g\.data\[0\].*bucket\.nope/);
  });

  it('start refuses invalid sync rules and says why', async () => {
    const result = await runCli([
      'start',
      '--port',
      '0',
      '-c',
      await writeConfig('start-bad.yaml', {
        sync_config: { content: 'bucket_definitions:\n  g:\n    priority: 9\n    data:\n      - SELECT * FROM items\n' }
      })
    ]);
    expect(result.code).toBe(3);
    expect(result.stderr).toMatch(/sync config: .*priority/);
  });

  it('compact deletes expired checkpoint requests and compacts every stream', async () => {
    const file = await writeConfig('compact.yaml');
    const result = await runCli(['compact', '-c', file]);
    expect(result.stderr).toBe('');
    expect(result.code).toBe(0);
    expect(result.stdout).toMatch(/deleted \d+ checkpoint request\(s\) older than 60 minutes/);
  });
});
