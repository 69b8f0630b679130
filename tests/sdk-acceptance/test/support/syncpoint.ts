import { testPostgresServer, type PostgresServer } from '@syncpoint/dev-postgres';
import { DEV_AUDIENCE, createModuleRegistry, signDevToken, type DevKey } from '@syncpoint/service';
import {
  createLogger,
  parseConfig,
  startService,
  type RunningService,
  type ServiceRole
} from '@syncpoint/service-core';
import pg from 'pg';
import { stringify } from 'yaml';

/**
 * The real service, in-process, on real (embedded) Postgres. Like service/test/service-harness.ts, but one Postgres
 * server can carry several services (each gets its own source and storage database and its own replication slot
 * prefix), the source schema is created before the service starts (so its rows go through the initial snapshot),
 * the role is selectable, and the service's logs are kept for failure reports.
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

export const GLOBAL_SYNC_CONFIG = `bucket_definitions:
  global:
    data:
      - SELECT * FROM todos
`;

export const BY_USER_SYNC_CONFIG = `bucket_definitions:
  by_user:
    parameters: SELECT request.user_id() AS user_id
    data:
      - SELECT * FROM todos WHERE owner_id = bucket.user_id
`;

/** The source table every test uses: the harness's `todos` plus an owner. */
export const TODOS_DDL = `CREATE TABLE IF NOT EXISTS todos (id text PRIMARY KEY, description text, owner_id text)`;

export async function startPostgres(): Promise<PostgresServer> {
  return testPostgresServer();
}

let counter = 0;

export async function startSyncpoint(
  postgres: PostgresServer,
  options: { syncConfig: string; setupSql?: string[]; role?: ServiceRole; logLevel?: 'debug' | 'info' }
): Promise<SyncpointEnv> {
  const suffix = `${process.pid}_${++counter}`;
  const sourceName = `sdk_acceptance_source_${suffix}`;
  const storageName = `sdk_acceptance_storage_${suffix}`;
  await postgres.ensureDatabase(sourceName);
  await postgres.ensureDatabase(storageName);
  const sourceDb = new pg.Pool({ connectionString: postgres.url(sourceName), max: 4 });
  sourceDb.on('error', () => {}); // the server stops at the end of the run
  await sourceDb.query(TODOS_DDL);
  await sourceDb.query(`DROP PUBLICATION IF EXISTS powersync; CREATE PUBLICATION powersync FOR ALL TABLES`);
  for (const sql of options.setupSql ?? []) await sourceDb.query(sql);

  const devKey: DevKey = {
    kty: 'oct',
    alg: 'HS256',
    kid: 'sdk-acceptance',
    k: Buffer.from('an-sdk-acceptance-secret-of-at-least-32-bytes').toString('base64url')
  };
  const configText = stringify({
    replication: {
      connections: [
        {
          type: 'postgresql',
          uri: postgres.url(sourceName),
          sslmode: 'disable',
          // Slot names are cluster-wide: several services share this Postgres server.
          slot_name_prefix: `sdk_${suffix}_`
        }
      ]
    },
    storage: { type: 'postgresql', uri: postgres.url(storageName), sslmode: 'disable' },
    port: 0,
    sync_config: { content: options.syncConfig },
    client_auth: { audience: [DEV_AUDIENCE], jwks: { keys: [devKey] } }
  });
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
  const registry = createModuleRegistry();
  const config = await parseConfig(configText, { source: 'sdk-acceptance', configDir: process.cwd(), registry });
  const service = await startService(config, { registry, logger, host: '127.0.0.1', role: options.role ?? 'unified' });
  return {
    url: service.url,
    service,
    sourceDb,
    logs,
    token: (sub, tokenOptions) => signDevToken(devKey, { sub, ...tokenOptions }),
    async stop() {
      await service.stop();
      await sourceDb.end();
    }
  };
}
