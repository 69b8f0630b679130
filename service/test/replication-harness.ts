import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { compareLsn, normalizeLsn } from '@syncpoint/codecs';
import { testPostgresServer, type PostgresServer } from '@syncpoint/dev-postgres';
import { postgresServiceConfig, syncConfig, testJwks, testPrivateJwk } from '@syncpoint/test-fixtures';
import { type BucketDataChunk, type OplogEntry, type RunningService, type ServiceRole } from '@syncpoint/service-core';
import { createPostgresStorage, type PostgresBucketStorage } from '@syncpoint/storage-postgres';
import pg from 'pg';
import { DEV_AUDIENCE, type DevKey } from '../src/dev-token.js';
import { startFromConfig } from './service-harness.js';

const serviceDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

/**
 * Shared setup of the replication-* tests: a Postgres server (embedded, or PG_TEST_URL), databases and a slot prefix
 * unique to this test run (so runs against one shared server never collide), services in-process or as a CLI child
 * process, and cleanup that drops this run's slots and databases.
 */
export interface ReplicationEnv {
  postgres: PostgresServer;
  /** Unique per env: `<tag>_<pid>_<random>`. */
  id: string;
  /** slot_name_prefix of every service of this env (all its slots start with it). */
  slotPrefix: string;
  sourceName: string;
  sourceDb: pg.Pool;
  /** A new storage database of this env (dropped at cleanup). */
  createStorageDatabase(label: string): Promise<string>;
  configText(options: ServiceOptions): string;
  startInProcess(options: ServiceOptions & { role?: ServiceRole }): Promise<RunningService>;
  startChild(options: ServiceOptions & { role?: ServiceRole; env?: Record<string, string> }): Promise<ChildService>;
  openStorage(storageName: string): PostgresBucketStorage;
  /** The source's WAL position, after everything committed so far; emits a marker so an idle source moves on. */
  sourcePosition(): Promise<string>;
  /** This env's replication slots on the server. */
  slots(): Promise<Array<{ slot_name: string; active: boolean; confirmed_flush_lsn: string | null }>>;
  cleanup(): Promise<void>;
}

interface ServiceOptions {
  storageName: string;
  /** The storage database's URL when it is not `storageName` on the env's server (a dedicated or proxied server). */
  storageUri?: string;
  syncConfig: string;
  heartbeatSeconds?: number;
}

export interface ChildService {
  child: ChildProcessWithoutNullStreams;
  /** Everything the child printed so far. */
  output(): string;
  /** SIGKILL and wait for the exit. */
  kill(): Promise<void>;
  /** SIGTERM (graceful shutdown) and wait for the exit. */
  stop(): Promise<number | null>;
}

/** Sync rules of the fault and crash tests: every row of `items` in one global bucket and in its owner's bucket. */
export const ITEMS_SYNC_CONFIG = syncConfig('items');

/** The key the services of these tests accept (the test-fixtures `hs256` key), for `signDevToken`. */
export const TEST_DEV_KEY = testPrivateJwk('hs256') as DevKey;

export async function createReplicationEnv(
  tag: string,
  sourceSetup: string[],
  options: { publication?: string } = {}
): Promise<ReplicationEnv> {
  const postgres = await testPostgresServer();
  const id = `${tag}_${process.pid}_${randomBytes(2).toString('hex')}`;
  const slotPrefix = `rt_${id}_`;
  const sourceName = `sp_src_${id}`;
  const databases = [sourceName];
  await postgres.ensureDatabase(sourceName);
  const sourceDb = new pg.Pool({ connectionString: postgres.url(sourceName), max: 4 });
  sourceDb.on('error', () => {});
  for (const statement of sourceSetup) await sourceDb.query(statement);
  await sourceDb.query(
    `DROP PUBLICATION IF EXISTS powersync; CREATE PUBLICATION powersync ${options.publication ?? 'FOR ALL TABLES'}`
  );

  const services: Array<() => Promise<unknown>> = [];
  const storages: PostgresBucketStorage[] = [];
  const dirs: string[] = [];

  // Tokens come from `signDevToken`, so the services accept the dev audience.
  const configText = (options: ServiceOptions) =>
    postgresServiceConfig({
      sourceUri: postgres.url(sourceName),
      storageUri: options.storageUri ?? postgres.url(options.storageName),
      syncConfig: options.syncConfig,
      slotPrefix,
      heartbeatSeconds: options.heartbeatSeconds ?? 60,
      audience: [DEV_AUDIENCE],
      jwks: testJwks(['hs256'])
    });

  const env: ReplicationEnv = {
    postgres,
    id,
    slotPrefix,
    sourceName,
    sourceDb,
    async createStorageDatabase(label) {
      const name = `sp_st_${label}_${id}`;
      await postgres.ensureDatabase(name);
      databases.push(name);
      return name;
    },
    configText,
    async startInProcess(options) {
      const service = await startFromConfig(configText(options), { role: options.role ?? 'unified' });
      let stopped = false;
      const wrapped = {
        ...service,
        stop: async () => {
          if (stopped) return;
          stopped = true;
          await service.stop();
        }
      };
      services.push(() => wrapped.stop());
      return wrapped;
    },
    async startChild(options) {
      const dir = await mkdtemp(path.join(tmpdir(), 'syncpoint-repl-'));
      dirs.push(dir);
      const file = path.join(dir, 'config.yaml');
      await writeFile(file, configText(options));
      const child = spawnServiceProcess(file, options.role ?? 'replication', { host: '127.0.0.1', env: options.env });
      let output = '';
      child.stdout.on('data', (chunk) => (output = (output + chunk).slice(-200_000)));
      child.stderr.on('data', (chunk) => (output = (output + chunk).slice(-200_000)));
      const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
      const waitExit = async (timeoutMs: number) => {
        const timeout = new Promise<'timeout'>((resolve) => setTimeout(() => resolve('timeout'), timeoutMs).unref());
        const result = await Promise.race([exited, timeout]);
        if (result === 'timeout') throw new Error(`the child did not exit within ${timeoutMs} ms; output:\n${output}`);
        return result;
      };
      const handle: ChildService = {
        child,
        output: () => output,
        async kill() {
          if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
          await waitExit(10_000);
        },
        async stop() {
          if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
          return waitExit(30_000);
        }
      };
      services.push(() => handle.kill());
      return handle;
    },
    openStorage(storageName) {
      const storage = createPostgresStorage({
        type: 'postgresql',
        uri: postgres.url(storageName),
        sslmode: 'disable',
        max_pool_size: 4
      });
      storages.push(storage);
      return storage;
    },
    async sourcePosition() {
      const { rows } = await sourceDb.query<{ lsn: string }>('SELECT pg_current_wal_lsn()::text AS lsn');
      await sourceDb.query(`SELECT pg_logical_emit_message(false, 'powersync', 'ping')`);
      return normalizeLsn(rows[0]!.lsn);
    },
    async slots() {
      const { rows } = await sourceDb.query<{ slot_name: string; active: boolean; confirmed_flush_lsn: string | null }>(
        `SELECT slot_name, active, confirmed_flush_lsn::text AS confirmed_flush_lsn FROM pg_replication_slots WHERE starts_with(slot_name, $1)`,
        [slotPrefix]
      );
      return rows;
    },
    async cleanup() {
      for (const stop of services.splice(0).reverse()) await stop().catch(() => {});
      for (const storage of storages.splice(0)) await storage.close().catch(() => {});
      await sourceDb.end().catch(() => {});
      const admin = new pg.Client({ connectionString: postgres.url('postgres') });
      await admin.connect();
      try {
        // A walsender may take a moment to go away after its client died.
        for (let attempt = 0; attempt < 50; attempt++) {
          await admin.query(
            `SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE starts_with(slot_name, $1) AND active_pid IS NOT NULL`,
            [slotPrefix]
          );
          const { rows } = await admin.query<{ slot_name: string; active: boolean }>(
            `SELECT slot_name, active FROM pg_replication_slots WHERE starts_with(slot_name, $1)`,
            [slotPrefix]
          );
          if (rows.length === 0) break;
          for (const row of rows.filter((r) => !r.active)) {
            await admin.query('SELECT pg_drop_replication_slot($1)', [row.slot_name]).catch(() => {});
          }
          await sleep(100);
        }
        for (const name of databases)
          await admin.query(`DROP DATABASE IF EXISTS ${pg.escapeIdentifier(name)} WITH (FORCE)`).catch(() => {});
      } finally {
        await admin.end();
      }
      for (const dir of dirs) await rm(dir, { recursive: true, force: true });
      await postgres.stop();
    }
  };
  return env;
}

/**
 * `syncpoint start -c <configFile>` in a child process on a free port. node itself with tsx's loader, not the tsx CLI
 * (`spawnCli`), which runs the service in a grandchild that a SIGKILL of the child would leave running; and with a heap
 * limit of its own, so that `start` runs in this process rather than in a supervised child that SIGKILL and SIGSTOP
 * of this one would miss.
 */
export function spawnServiceProcess(
  configFile: string,
  role: ServiceRole,
  options: { host?: string; env?: Record<string, string> } = {}
): ChildProcessWithoutNullStreams {
  const hostArgs = options.host === undefined ? [] : ['--host', options.host];
  return spawn(
    process.execPath,
    [
      '--max-old-space-size=1024',
      '--import',
      'tsx',
      '--conditions=@syncpoint/source',
      path.join(serviceDir, 'src/cli.ts'),
      'start',
      '-c',
      configFile,
      '--role',
      role,
      '--port',
      '0',
      ...hostArgs
    ],
    {
      cwd: serviceDir,
      env: { ...process.env, SYNCPOINT_LOG_LEVEL: process.env.SYNCPOINT_TEST_LOG ?? 'info', ...options.env }
    }
  );
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Poll `probe` until it returns a truthy value; throws `what` after `timeoutMs`. */
export async function waitFor<T>(
  what: string,
  probe: () => Promise<T | null | undefined | false>,
  timeoutMs: number,
  intervalMs = 50
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: string | undefined;
  for (;;) {
    // Errors (e.g. storage not migrated yet by a starting service) count as "not yet".
    const value = await probe().catch((error: unknown) => {
      lastError = String(error);
      return null;
    });
    if (value) return value;
    if (Date.now() > deadline)
      throw new Error(
        `timed out after ${timeoutMs} ms waiting for ${what}${lastError ? ` (last error: ${lastError})` : ''}`
      );
    await sleep(intervalMs);
  }
}

/** Wait until the served checkpoint's LSN is at or past `lsn`; returns that checkpoint. */
export async function waitForCheckpointLsn(storage: PostgresBucketStorage, lsn: string, timeoutMs: number) {
  return waitFor(
    `a served checkpoint at LSN ≥ ${lsn}`,
    async () => {
      const serving = await storage.getServingCheckpoint();
      return serving?.checkpoint.lsn && compareLsn(serving.checkpoint.lsn, lsn) >= 0 ? serving : null;
    },
    timeoutMs
  );
}

export interface BucketContents {
  /** The rows a client ends with: object_id → parsed data (per `object_type/object_id/subkey`, collapsed by id). */
  rows: Map<string, unknown>;
  /** Wrapping (mod 2^32) sum of every op's checksum. */
  opChecksum: number;
  ops: number;
}

/**
 * What a client syncing from scratch ends with, per bucket: every op up to `checkpoint`, applied in order (PUT/REMOVE
 * by (object_type, object_id, subkey); CLEAR drops everything before; MOVE changes nothing).
 */
export async function downloadBuckets(
  storage: PostgresBucketStorage,
  checkpoint: bigint
): Promise<Map<string, BucketContents>> {
  const serving = await storage.getServingStream();
  if (!serving) throw new Error('no serving stream');
  const stream = await storage.getStreamStorage(serving);
  const { rows: names } = await storage.pool.query<{ bucket_name: string }>(
    `SELECT DISTINCT bucket_name FROM powersync.bucket_state WHERE group_id = $1 ORDER BY bucket_name`,
    [serving.id]
  );
  const state = new Map<string, { keyed: Map<string, OplogEntry>; checksum: number; ops: number; lastOp: bigint }>();
  // One bucket at a time; one read returns a limited number of ops, so read again after the last op until done.
  for (const { bucket_name: name } of names) {
    let after = 0n;
    for (;;) {
      let more = false;
      for await (const chunk of stream.getBucketData(checkpoint, new Map([[name, after]]), {
        limit: 10_000,
        chunkLimitBytes: 8 * 1024 * 1024
      })) {
        applyChunk(chunk);
        after = chunk.nextAfter;
        more = chunk.hasMore;
      }
      if (!more) break;
    }
  }
  function applyChunk(chunk: BucketDataChunk) {
    let bucket = state.get(chunk.bucket);
    if (!bucket) state.set(chunk.bucket, (bucket = { keyed: new Map(), checksum: 0, ops: 0, lastOp: 0n }));
    for (const op of chunk.data) {
      if (op.op_id <= bucket.lastOp) throw new Error(`ops of ${chunk.bucket} out of order at ${op.op_id}`);
      bucket.lastOp = op.op_id;
      bucket.checksum = (bucket.checksum + op.checksum) >>> 0;
      bucket.ops++;
      const key = `${op.object_type}\u0000${op.object_id}\u0000${op.subkey}`;
      if (op.op === 'PUT') bucket.keyed.set(key, op);
      else if (op.op === 'REMOVE') bucket.keyed.delete(key);
      else if (op.op === 'CLEAR') bucket.keyed.clear();
    }
  }
  const checksums = await stream.getChecksums(checkpoint, [...state.keys()]);
  const result = new Map<string, BucketContents>();
  for (const [name, bucket] of state) {
    const stored = checksums.get(name);
    if (!stored || stored.checksum >>> 0 !== bucket.checksum || stored.count !== bucket.ops) {
      throw new Error(
        `bucket ${name}: stored checksum/count ${stored?.checksum}/${stored?.count} != ops ${bucket.checksum}/${bucket.ops}`
      );
    }
    const rows = new Map<string, unknown>();
    for (const op of bucket.keyed.values()) {
      const id = `${op.object_type}/${op.object_id}`;
      if (rows.has(id)) throw new Error(`bucket ${name}: two source rows for ${id}`);
      rows.set(id, JSON.parse(op.data!));
    }
    if (rows.size > 0) result.set(name, { rows, opChecksum: bucket.checksum, ops: bucket.ops });
  }
  return result;
}

export { compareLsn };
