export * from './bounded-bigint.js';
export * from './lsn.js';
export * from './json-bigint.js';
