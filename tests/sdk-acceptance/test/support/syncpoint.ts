import { testPostgresServer, type PostgresServer } from '@syncpoint/dev-postgres';
import { createModuleRegistry } from '@syncpoint/service';
import {
  createLogger,
  parseConfig,
  startService,
  type RunningService,
  type ServiceRole
} from '@syncpoint/service-core';
import { startThrowAwayService, syncConfig } from '@syncpoint/test-fixtures';
import type pg from 'pg';

/**
 * The real service, in-process, on real (embedded) Postgres: the test-fixtures throw-away service. One Postgres server
 * carries several services (each gets its own source and storage database and its own replication slot prefix), the
 * source schema is created before the service starts (so its rows go through the initial snapshot), the role is
 * selectable, and the service's logs are kept for failure reports.
 */
export interface SyncpointEnv {
  url: string;
  service: RunningService;
  /** The application's source database (the one the app backend writes to). */
  sourceDb: pg.Pool;
  token(sub: string, options?: { expiresInSeconds?: number }): Promise<string>;
  /** Service log lines (JSON, pino), newest last. */
  logs: string[];
  stop(): Promise<void>;
}

export const GLOBAL_SYNC_CONFIG = syncConfig('demo-todos');
export const BY_USER_SYNC_CONFIG = syncConfig('todos-by-user');

/** The source table every test uses: the fixtures' `todos` plus the owner the by-user rules read. */
const OWNER_COLUMN = `ALTER TABLE todos ADD COLUMN IF NOT EXISTS owner_id text`;

export async function startPostgres(): Promise<PostgresServer> {
  return testPostgresServer();
}

let counter = 0;

export async function startSyncpoint(
  postgres: PostgresServer,
  options: {
    syncConfig: string;
    setupSql?: string[];
    role?: ServiceRole;
    logLevel?: 'debug' | 'info';
    /** Period of `token_expires_in` keepalive lines (default 18–20 s). */
    keepaliveMs?: number;
  }
): Promise<SyncpointEnv> {
  const logs: string[] = [];
  const logger = createLogger({
    level: options.logLevel ?? 'debug',
    destination: {
      write(line: string) {
        logs.push(line.trimEnd());
        if (logs.length > 5000) logs.splice(0, 1000);
      }
    }
  });
  const role = options.role ?? 'unified';
  const env = await startThrowAwayService({
    start: async (configText) => {
      const registry = createModuleRegistry();
      const config = await parseConfig(configText, { source: 'sdk-acceptance', configDir: process.cwd(), registry });
      const keepaliveMs = options.keepaliveMs;
      return startService(config, {
        registry,
        logger,
        host: '127.0.0.1',
        role,
        ...(keepaliveMs === undefined ? {} : { syncKeepaliveMs: () => keepaliveMs })
      });
    },
    postgres,
    tag: 'sdk_acceptance',
    schemas: ['todos'],
    sourceSetup: [OWNER_COLUMN, ...(options.setupSql ?? [])],
    syncConfig: options.syncConfig,
    // Slot names are cluster-wide: several services share this Postgres server.
    slotPrefix: `sdk_${process.pid}_${++counter}_`
  });
  return {
    url: env.url,
    service: env.service,
    sourceDb: env.sourceDb,
    logs,
    token: (sub, tokenOptions) => env.token(sub, { lifetimeSeconds: tokenOptions?.expiresInSeconds }),
    stop: () => env.stop()
  };
}
