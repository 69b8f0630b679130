export * from './write-checkpoint-conformance.js';
