import { parseSyncRules } from '@syncpoint/sync-rules';
import type { SourceModule } from '@syncpoint/service-core';
import { createPostgresSource } from './replication-head.js';
import { PostgresReplicator } from './replication/postgres-replicator.js';
import { checkSourcePreconditions } from './replication/source-schema.js';
import { createTextPool } from './replication/text-pool.js';
import { sourceClientConfig } from './source-connection.js';
import { postgresSourceConfigSchema, type PostgresSourceConfig } from './source-config.js';

export * from './replication-head.js';
export * from './source-config.js';
export { effectiveSslMode, isTransientPgError } from './source-connection.js';
export { PostgresReplicator, SourceNotReadyError } from './replication/postgres-replicator.js';
export { checkSourcePreconditions, publishedTables, PUBLICATION_NAME } from './replication/source-schema.js';
export { decodePgoutput, UNCHANGED_TOAST, type PgoutputMessage } from './replication/pgoutput-decoder.js';
export { convertValue, convertTuple } from './replication/value-conversion.js';
export { TypeCatalog } from './replication/type-catalog.js';
export type { SnapshotProgress } from './replication/initial-snapshot.js';

export const postgresSourceModule: SourceModule<PostgresSourceConfig> = {
  type: 'postgresql',
  configSchema: postgresSourceConfigSchema,
  createSource(config, context) {
    return Promise.resolve(createPostgresSource(config, context.logger));
  },
  createReplicator(config, context) {
    return new PostgresReplicator({
      config,
      storage: context.storage,
      logger: context.logger,
      onAlive: context.onAlive,
      onSnapshotProgress: context.onSnapshotProgress
    });
  },
  async checkSource(config, syncConfigContent) {
    const parsed = parseSyncRules(syncConfigContent);
    if (!parsed.ok) return parsed.errors.map((error) => error.message);
    const db = createTextPool(sourceClientConfig(config), 1);
    try {
      return (await checkSourcePreconditions(db, parsed.rules)).map((problem) => problem.message);
    } catch (error) {
      return [`cannot connect to the source: ${(error as Error).message}`];
    } finally {
      await db.end();
    }
  }
};
