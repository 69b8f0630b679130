import type { StorageModule } from '@syncpoint/service-core';
import { createPostgresStorage } from './postgres-bucket-storage.js';
import { postgresStorageConfigSchema, type PostgresStorageConfig } from './storage-config.js';

export * from './postgres-bucket-storage.js';
export * from './storage-config.js';
export { MIGRATIONS } from './migrations.js';

export const postgresStorageModule: StorageModule<PostgresStorageConfig> = {
  type: 'postgresql',
  configSchema: postgresStorageConfigSchema,
  createStorage(config, context) {
    return Promise.resolve(createPostgresStorage(config, context.logger));
  }
};
