import type { SourceModule } from '@syncpoint/service-core';
import { createPostgresSource } from './replication-head.js';
import { postgresSourceConfigSchema, type PostgresSourceConfig } from './source-config.js';

export * from './replication-head.js';
export * from './source-config.js';
export { effectiveSslMode, isTransientPgError } from './source-connection.js';

export const postgresSourceModule: SourceModule<PostgresSourceConfig> = {
  type: 'postgresql',
  configSchema: postgresSourceConfigSchema,
  async createSource(config, context) {
    return createPostgresSource(config, context.logger);
  }
};
