export * from './files.js';
export * from './sync-configs.js';
export * from './service-configs.js';
export * from './jwt.js';
export * from './schemas.js';
export * from './service.js';
export * from './sync-lines.js';
