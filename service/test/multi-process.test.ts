import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { testPostgresServer, type PostgresServer } from '@syncpoint/dev-postgres';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { postgresServiceConfig, sourceSchema, syncConfig, testJwks, testPrivateJwk } from '@syncpoint/test-fixtures';
import { DEV_AUDIENCE, signDevToken, type DevKey } from '../src/dev-token.js';
import { waitForOutput } from './run-cli.js';
import { openSyncStream } from './sync-stream-client.js';

/**
 * Issue 6 item 5: two API processes and one replication process on one storage, as real child processes
 * (`syncpoint start --role …`). A request made through API 1 is acknowledged on a stream held by API 2; a second
 * replication process stands by until the first is killed (SIGKILL), then takes over once its lease expires.
 */
const LOCK_TTL_MS = 2000;
let postgres: PostgresServer;
let dir: string;
let configPath: string;
let storageDb: pg.Pool;
const children: ChildProcessWithoutNullStreams[] = [];
const logs: string[][] = [];
const devKey = testPrivateJwk('hs256') as DevKey;

const serviceDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

/**
 * `syncpoint start` from source. Node runs the CLI itself (tsx as an import hook, not the tsx binary, which would
 * put a wrapper process in between), so SIGKILL reaches the service process.
 */
function start(role: 'api' | 'replication') {
  const child = spawn(
    process.execPath,
    [
      '--max-old-space-size=1024', // our own heap limit: no supervised child that SIGKILL would miss
      '--conditions=@syncpoint/source',
      '--import',
      'tsx',
      path.join(serviceDir, 'src/cli.ts'),
      'start',
      '--role',
      role,
      '-c',
      configPath
    ],
    { cwd: serviceDir, env: { ...process.env, SYNCPOINT_REPLICATION_LOCK_TTL_MS: String(LOCK_TTL_MS) } }
  );
  const log: string[] = [];
  child.stdout.on('data', (chunk) => log.push(`[${role}] ${chunk}`));
  child.stderr.on('data', (chunk) => log.push(`[${role} stderr] ${chunk}`));
  child.on('exit', (code, signal) => log.push(`[${role}] exited ${code ?? signal}`));
  logs.push(log);
  children.push(child);
  return child;
}

async function listening(child: ChildProcessWithoutNullStreams): Promise<string> {
  const output = await waitForOutput(child, /Syncpoint is listening/);
  const line = output.split('\n').find((text) => text.includes('Syncpoint is listening'))!;
  return (JSON.parse(line) as { url: string }).url;
}

beforeAll(async () => {
  postgres = await testPostgresServer();
  const suffix = `${process.pid}_mp`;
  await postgres.ensureDatabase(`syncpoint_mp_source_${suffix}`);
  await postgres.ensureDatabase(`syncpoint_mp_storage_${suffix}`);
  const source = new pg.Client({ connectionString: postgres.url(`syncpoint_mp_source_${suffix}`) });
  await source.connect();
  await source.query(sourceSchema('todos').ddl);
  await source.query(`DROP PUBLICATION IF EXISTS powersync; CREATE PUBLICATION powersync FOR ALL TABLES`);
  await source.end();
  storageDb = new pg.Pool({ connectionString: postgres.url(`syncpoint_mp_storage_${suffix}`), max: 2 });
  dir = await mkdtemp(path.join(tmpdir(), 'syncpoint-mp-'));
  configPath = path.join(dir, 'config.yaml');
  await writeFile(
    configPath,
    postgresServiceConfig({
      sourceUri: postgres.url(`syncpoint_mp_source_${suffix}`),
      storageUri: postgres.url(`syncpoint_mp_storage_${suffix}`),
      syncConfig: syncConfig('demo-todos'),
      audience: [DEV_AUDIENCE],
      jwks: testJwks(['hs256']),
      sections: { system: { logging: { level: 'info', format: 'json' } } }
    })
  );
}, 60_000);

afterAll(async () => {
  if (process.env.SYNCPOINT_TEST_LOG) for (const log of logs) console.log(log.join(''));
  for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  await storageDb?.end();
  await postgres?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('API and replication in separate processes (issue 6 item 5)', () => {
  it('acknowledges a request made through API 1 on a stream of API 2; a standby replicator takes over after SIGKILL', async () => {
    const replication1 = start('replication');
    await waitForOutput(replication1, /replication lock acquired/);
    const api1 = start('api');
    const api2 = start('api');
    const [url1, url2] = await Promise.all([listening(api1), listening(api2)]);

    const token = await signDevToken(devKey, { sub: 'mp-user' });
    const deadline = Date.now() + 60_000;
    while (
      !(
        await storageDb.query(
          `SELECT 1 FROM powersync.sync_rules WHERE state = 'ACTIVE' AND last_checkpoint_lsn IS NOT NULL`
        )
      ).rowCount
    ) {
      if (Date.now() > deadline) throw new Error('replication never reached a first checkpoint');
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    const stream = await openSyncStream(url2, token, { client_id: 'device', raw_data: true });
    const request = async (id: number) => {
      const response = await fetch(`${url1}/sync/checkpoint-request`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', Authorization: `Token ${token}` },
        body: JSON.stringify({ client_id: 'device', checkpoint_request_id: String(id) })
      });
      expect(await response.json()).toEqual({ data: { checkpoint_request_id: String(id) } });
    };
    const acknowledged = (id: number) =>
      stream.until((line) => (line.checkpoint_diff ?? line.checkpoint)?.write_checkpoint === String(id), 20_000);
    try {
      await stream.until((line) => 'checkpoint_complete' in line, 20_000);
      await request(1);
      await acknowledged(1);

      const replication2 = start('replication');
      await waitForOutput(replication2, /standing by/);
      replication1.kill('SIGKILL');
      const killedAt = Date.now();
      await waitForOutput(replication2, /replication lock acquired/, 30_000);
      expect(Date.now() - killedAt).toBeLessThan(LOCK_TTL_MS + 10_000);

      await request(2);
      await acknowledged(2);
    } finally {
      await stream.close();
    }
  }, 150_000);
});
