export * from './errors.js';
export * from './storage/write-checkpoint-api.js';
export * from './storage/bucket-storage.js';
export * from './source/replication-source.js';
export * from './logger.js';
export * from './modules.js';
