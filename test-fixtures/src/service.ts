import { testPostgresServer, type PostgresServer } from '@syncpoint/dev-postgres';
import pg from 'pg';
import { createSourceSchema, type SourceSchemaName } from './schemas.js';
import { postgresServiceConfig, type PostgresServiceConfigOptions } from './service-configs.js';
import { syncConfig as fixtureSyncConfig } from './sync-configs.js';
import { mintToken, TEST_AUDIENCE, testJwks, type MintOptions, type TestKeyName } from './jwt.js';

/**
 * Throw-away services for tests: the real service, in-process, on real Postgres.
 *
 * This package imports neither `@syncpoint/service-core` nor `@syncpoint/service` nor modules/*: service-core's and
 * the service's own tests use it, and a package edge back would be a dependency cycle. So the caller hands in how to
 * start a service from a config text (service/test/service-harness.ts `startFromConfig`: parseConfig + startService
 * with the service's module registry); this helper does the rest: databases, schema, publication, config, tokens.
 */

/** What the helper needs of a started service. */
export interface StartedService {
  url: string;
  stop(): Promise<void>;
}

/** The log level tests run services at: none, unless SYNCPOINT_TEST_LOG names one (to debug a failing test). */
export function testLogLevel(): string | undefined {
  return process.env.SYNCPOINT_TEST_LOG || undefined;
}

export interface ThrowAwayDatabases {
  sourceName: string;
  storageName: string;
  sourceUrl: string;
  storageUrl: string;
  /** A small pool on the source database (the application's database). */
  sourceDb: pg.Pool;
}

let databaseCounter = 0;

/**
 * A source and a storage database, named uniquely for this process, with the source schema created and the
 * `powersync` publication (FOR ALL TABLES unless told otherwise) in place.
 */
export async function createThrowAwayDatabases(
  postgres: PostgresServer,
  options: {
    /** Prefix of the database names. */
    tag?: string;
    /** Fixture schemas to create (and seed, if `seed`), in order. */
    schemas?: SourceSchemaName[];
    seed?: boolean;
    /** Further statements particular to the test, run after the schemas and before the publication. */
    sourceSetup?: string[];
    /** Put the storage database on this server instead (so the source's WAL shows only source writes). */
    storagePostgres?: PostgresServer;
    publication?: string;
    poolSize?: number;
  } = {}
): Promise<ThrowAwayDatabases> {
  const suffix = `${process.pid}_${++databaseCounter}`;
  const tag = options.tag ?? 'syncpoint_test';
  const sourceName = `${tag}_source_${suffix}`;
  const storageName = `${tag}_storage_${suffix}`;
  const storageServer = options.storagePostgres ?? postgres;
  await postgres.ensureDatabase(sourceName);
  await storageServer.ensureDatabase(storageName);
  const sourceDb = new pg.Pool({ connectionString: postgres.url(sourceName), max: options.poolSize ?? 2 });
  sourceDb.on('error', () => {}); // the server may stop before the pool is closed
  for (const schema of options.schemas ?? [])
    await createSourceSchema(sourceDb, schema, { seed: options.seed ?? false });
  for (const statement of options.sourceSetup ?? []) await sourceDb.query(statement);
  await sourceDb.query(
    `DROP PUBLICATION IF EXISTS powersync; CREATE PUBLICATION powersync ${options.publication ?? 'FOR ALL TABLES'}`
  );
  return {
    sourceName,
    storageName,
    sourceUrl: postgres.url(sourceName),
    storageUrl: storageServer.url(storageName),
    sourceDb
  };
}

export interface ThrowAwayServiceOptions<S extends StartedService> {
  /** Starts the service a config text describes (see the note at the top of this file). */
  start: (configText: string) => Promise<S>;
  /** The Postgres server to use (default: a new one from `testPostgresServer()`, stopped by `stop()`). */
  postgres?: PostgresServer;
  storagePostgres?: PostgresServer;
  /** Sync config text (default: the `demo-todos` fixture); null starts without one. */
  syncConfig?: string | null;
  /** Fixture schemas of the source database (default: `todos`, without seed rows). */
  schemas?: SourceSchemaName[];
  seed?: boolean;
  sourceSetup?: string[];
  /** Key the service accepts and `token()` signs with (default `hs256`). */
  key?: TestKeyName;
  /** Audience the service accepts and `token()` uses (default TEST_AUDIENCE). */
  audience?: string;
  /** Replication slot prefix (needed when several services with replication share one Postgres server). */
  slotPrefix?: string;
  heartbeatSeconds?: number;
  /** Top-level config sections to set (they replace the template's). */
  sections?: PostgresServiceConfigOptions['sections'];
  tag?: string;
}

export interface ThrowAwayService<S extends StartedService> extends ThrowAwayDatabases {
  postgres: PostgresServer;
  service: S;
  url: string;
  configText: string;
  /** A small pool on the storage database. */
  storageDb: pg.Pool;
  /** A valid token for `sub`, signed with the service's key (options as `mintToken`). */
  token(sub: string, options?: MintOptions): Promise<string>;
  /** Stops the service and closes the pools; stops the Postgres server too when the helper started it. */
  stop(): Promise<void>;
}

/** The real service in-process on a source and a storage database of their own. */
export async function startThrowAwayService<S extends StartedService>(
  options: ThrowAwayServiceOptions<S>
): Promise<ThrowAwayService<S>> {
  const {
    start,
    postgres: givenPostgres,
    storagePostgres,
    syncConfig,
    schemas,
    seed,
    sourceSetup,
    key = 'hs256',
    audience = TEST_AUDIENCE,
    slotPrefix,
    heartbeatSeconds,
    sections,
    tag
  } = options;
  const postgres = givenPostgres ?? (await testPostgresServer());
  const databases = await createThrowAwayDatabases(postgres, {
    tag,
    schemas: schemas ?? ['todos'],
    seed,
    sourceSetup,
    storagePostgres
  });
  const configText = postgresServiceConfig({
    sourceUri: databases.sourceUrl,
    storageUri: databases.storageUrl,
    syncConfig: syncConfig === undefined ? fixtureSyncConfig('demo-todos') : syncConfig,
    jwks: testJwks([key]),
    audience: [audience],
    slotPrefix,
    heartbeatSeconds,
    sections
  });
  const service = await start(configText);
  const storageDb = new pg.Pool({ connectionString: databases.storageUrl, max: 2 });
  storageDb.on('error', () => {});
  return {
    ...databases,
    postgres,
    service,
    url: service.url,
    configText,
    storageDb,
    token: (sub, mintOptions) => mintToken({ key, audience, ...mintOptions, sub }),
    async stop() {
      await service.stop();
      await storageDb.end();
      await databases.sourceDb.end();
      if (!givenPostgres) await postgres.stop();
    }
  };
}
