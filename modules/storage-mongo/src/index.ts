import type { StorageModule } from '@syncpoint/service-core';
import { createMongoStorage } from './mongo-bucket-storage.js';
import { mongoStorageConfigSchema, type MongoStorageConfig } from './storage-config.js';

export * from './storage-config.js';
export * from './migrations.js';
export * from './write-checkpoint-updates.js';
export * from './replication-lock.js';
export * from './mongo-bucket-storage.js';
export * from './mongo-errors.js';
export * from './bucket-data-documents.js';
export * from './checkpoint-listener.js';
export * from './sync-rules-document.js';
export * from './mongo-stream-storage.js';
export * from './stream-collections.js';
export { MongoBatch } from './mongo-batch.js';

/** Owns `storage:` sections with `type: mongodb` (PROTOCOL §10). */
export const mongoStorageModule: StorageModule<MongoStorageConfig> = {
  type: 'mongodb',
  configSchema: mongoStorageConfigSchema,
  createStorage: (config, context) => createMongoStorage(config, context)
};
