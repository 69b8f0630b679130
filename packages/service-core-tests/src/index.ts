export * from './write-checkpoint-conformance.js';
export * from './bucket-data-conformance.js';
