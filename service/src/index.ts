export * from './module-registry.js';
export * from './dev-token.js';
export * from './embedded-default.js';
