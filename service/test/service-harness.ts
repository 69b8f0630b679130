import type { PostgresServer } from '@syncpoint/dev-postgres';
import {
  createLogger,
  parseConfig,
  silentLogger,
  startService,
  type LogLevel,
  type Logger,
  type RunningService,
  type ServiceRole
} from '@syncpoint/service-core';
import { startThrowAwayService, testLogLevel, testPrivateJwk, type SourceSchemaName } from '@syncpoint/test-fixtures';
import type pg from 'pg';
import type { DevKey } from '../src/dev-token.js';
import { createModuleRegistry } from '../src/module-registry.js';

export interface ServiceHarness {
  postgres: PostgresServer;
  service: RunningService;
  /** The HS256 key the service accepts (the test-fixtures `hs256` key). */
  devKey: DevKey;
  storageDb: pg.Pool;
  sourceDb: pg.Pool;
  token(sub: string, options?: { audience?: string; expiresInSeconds?: number }): Promise<string>;
  stop(): Promise<void>;
}

/** Options of `startService` besides the registry and the logger. */
type StartOptions = Omit<Parameters<typeof startService>[1], 'registry' | 'logger'>;

/**
 * Start the service a config text describes, in-process, with this package's module registry (what the test-fixtures
 * throw-away service is handed: it cannot import the service itself). Silent unless SYNCPOINT_TEST_LOG names a level.
 */
export async function startFromConfig(
  configText: string,
  options: StartOptions & { logger?: Logger } = {}
): Promise<RunningService> {
  const { logger, ...startOptions } = options;
  const registry = createModuleRegistry();
  const config = await parseConfig(configText, { source: 'test', configDir: process.cwd(), registry });
  const level = testLogLevel();
  return startService(config, {
    host: '127.0.0.1',
    ...startOptions,
    registry,
    logger: logger ?? (level ? createLogger({ level: level as LogLevel }) : silentLogger)
  });
}

/**
 * The real service (in-process) on real Postgres: the test-fixtures throw-away service (a source database with the
 * `todos` schema and the publication, a storage database, the `demo-todos` rules, the `hs256` test key), in the `api`
 * role unless told otherwise, with this package's module registry.
 */
export async function startServiceHarness(
  options: {
    syncConfig?: string | null;
    role?: ServiceRole;
    /** Fixture schemas of the source database (default `todos`). */
    schemas?: SourceSchemaName[];
    sourceSetup?: string[];
    /** Extra top-level config sections (e.g. `{ api: { parameters: { max_concurrent_connections: 2 } } }`). */
    config?: Record<string, unknown>;
    /** Sync stream keepalive period (default 18–20 s). */
    keepaliveMs?: () => number;
    /** Logger of the service (default: silent, or SYNCPOINT_TEST_LOG's level). */
    logger?: Logger;
    /** Period of the replication process's checkpoint-request retention job. */
    retentionIntervalMs?: number;
    /** Put bucket storage on this server instead of the source's (so the source's WAL shows only source writes). */
    storagePostgres?: PostgresServer;
  } = {}
): Promise<ServiceHarness> {
  // Tests that count markers run without replication (its snapshot and heartbeats emit markers of their own).
  const harness = await startThrowAwayService({
    start: (configText) =>
      startFromConfig(configText, {
        logger: options.logger,
        role: options.role ?? 'api',
        syncKeepaliveMs: options.keepaliveMs,
        retentionIntervalMs: options.retentionIntervalMs
      }),
    syncConfig: options.syncConfig,
    schemas: options.schemas,
    sourceSetup: options.sourceSetup,
    sections: options.config,
    storagePostgres: options.storagePostgres
  });
  return {
    postgres: harness.postgres,
    service: harness.service,
    devKey: testPrivateJwk('hs256') as DevKey,
    storageDb: harness.storageDb,
    sourceDb: harness.sourceDb,
    token: (sub, tokenOptions) =>
      harness.token(sub, { audience: tokenOptions?.audience, lifetimeSeconds: tokenOptions?.expiresInSeconds }),
    stop: () => harness.stop()
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
