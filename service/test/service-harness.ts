import { testPostgresServer, type PostgresServer } from '@syncpoint/dev-postgres';
import {
  createLogger,
  type Logger,
  parseConfig,
  silentLogger,
  type LogLevel,
  startService,
  type RunningService,
  type ServiceRole
} from '@syncpoint/service-core';
import pg from 'pg';
import { stringify } from 'yaml';
import { DEMO_SYNC_CONFIG } from '../src/embedded-default.js';
import { DEV_AUDIENCE, signDevToken, type DevKey } from '../src/dev-token.js';
import { createModuleRegistry } from '../src/module-registry.js';

export interface ServiceHarness {
  postgres: PostgresServer;
  service: RunningService;
  devKey: DevKey;
  storageDb: pg.Pool;
  sourceDb: pg.Pool;
  token(sub: string, options?: { audience?: string; expiresInSeconds?: number }): Promise<string>;
  stop(): Promise<void>;
}

let harnessCounter = 0;

/** The real service (in-process) on real Postgres: a source database with the publication and a storage database. */
export async function startServiceHarness(
  options: {
    syncConfig?: string | null;
    role?: ServiceRole;
    sourceSetup?: string[];
    /** Extra top-level config sections (e.g. `{ api: { parameters: { max_concurrent_connections: 2 } } }`). */
    config?: Record<string, unknown>;
    /** Sync stream keepalive period (default 20 s ± 10 %). */
    keepaliveMs?: () => number;
    /** Logger of the service (default: silent, or SYNCPOINT_TEST_LOG's level). */
    logger?: Logger;
    /** Period of the replication process's checkpoint-request retention job. */
    retentionIntervalMs?: number;
    /** Put bucket storage on this server instead of the source's (so the source's WAL shows only source writes). */
    storagePostgres?: PostgresServer;
  } = {}
): Promise<ServiceHarness> {
  const postgres = await testPostgresServer();
  const suffix = `${process.pid}_${++harnessCounter}`;
  const sourceName = `syncpoint_test_source_${suffix}`;
  const storageName = `syncpoint_test_storage_${suffix}`;
  await postgres.ensureDatabase(sourceName);
  const storageServer = options.storagePostgres ?? postgres;
  await storageServer.ensureDatabase(storageName);
  const sourceDb = new pg.Pool({ connectionString: postgres.url(sourceName), max: 2 });
  sourceDb.on('error', () => {}); // the server stops at the end of the run
  await sourceDb.query(`CREATE TABLE IF NOT EXISTS todos (id text PRIMARY KEY, description text)`);
  for (const statement of options.sourceSetup ?? []) await sourceDb.query(statement);
  await sourceDb.query(`DROP PUBLICATION IF EXISTS powersync; CREATE PUBLICATION powersync FOR ALL TABLES`);

  const devKey: DevKey = {
    kty: 'oct',
    alg: 'HS256',
    kid: 'test-key',
    k: Buffer.from('a-test-secret-of-at-least-32-bytes').toString('base64url')
  };
  const syncConfig = options.syncConfig === undefined ? DEMO_SYNC_CONFIG : options.syncConfig;
  const configText = stringify({
    replication: { connections: [{ type: 'postgresql', uri: postgres.url(sourceName), sslmode: 'disable' }] },
    storage: { type: 'postgresql', uri: storageServer.url(storageName), sslmode: 'disable' },
    port: 0,
    ...(syncConfig === null ? {} : { sync_config: { content: syncConfig } }),
    client_auth: { audience: [DEV_AUDIENCE], jwks: { keys: [devKey] } },
    ...options.config
  });
  const registry = createModuleRegistry();
  const config = await parseConfig(configText, { source: 'test', configDir: process.cwd(), registry });
  // Tests that count markers run without replication (its snapshot and heartbeats emit markers of their own).
  const service = await startService(config, {
    registry,
    logger:
      options.logger ??
      (process.env.SYNCPOINT_TEST_LOG
        ? createLogger({ level: process.env.SYNCPOINT_TEST_LOG as LogLevel })
        : silentLogger),
    host: '127.0.0.1',
    role: options.role ?? 'api',
    syncKeepaliveMs: options.keepaliveMs,
    retentionIntervalMs: options.retentionIntervalMs
  });
  const storageDb = new pg.Pool({ connectionString: storageServer.url(storageName), max: 2 });
  storageDb.on('error', () => {});
  return {
    postgres,
    service,
    devKey,
    storageDb,
    sourceDb,
    token: (sub, tokenOptions) => signDevToken(devKey, { sub, ...tokenOptions }),
    async stop() {
      await service.stop();
      await storageDb.end();
      await sourceDb.end();
      await postgres.stop();
    }
  };
}

/** Create a logical slot that decodes markers, to count them in the source WAL. */
export async function watchMarkers(sourceDb: pg.Pool, slot: string) {
  await sourceDb.query(`SELECT pg_create_logical_replication_slot($1, 'test_decoding')`, [slot]);
  return {
    /** Markers written since the last call (consumes them). */
    async take(): Promise<number> {
      const { rows } = await sourceDb.query<{ data: string }>(
        `SELECT data FROM pg_logical_slot_get_changes($1, NULL, NULL)`,
        [slot]
      );
      return rows.filter((row) => /^message: .*prefix: powersync/.test(row.data)).length;
    },
    drop: () => sourceDb.query('SELECT pg_drop_replication_slot($1)', [slot])
  };
}
