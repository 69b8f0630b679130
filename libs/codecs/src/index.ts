export * from './errors.js';
export * from './bounded-bigint.js';
export * from './checksum.js';
export * from './lsn.js';
export * from './mongo-long.js';
export * from './json-bigint.js';
