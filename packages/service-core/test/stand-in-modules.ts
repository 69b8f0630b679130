import { ModuleRegistry, type SourceModule, type StorageModule } from '../src/index.js';

/**
 * A registry of stand-in `postgresql` storage and source modules that only own their config sections, so config tests
 * stay inside service-core. Each test passes the schemas it needs; building a storage, source or replicator throws.
 */
export function standInRegistry(schemas: {
  storage: StorageModule['configSchema'];
  source: SourceModule['configSchema'];
}): ModuleRegistry {
  const notUsed = () => {
    throw new Error('not used');
  };
  const notUsedAsync = () => Promise.reject(new Error('not used'));
  const storageModule: StorageModule = {
    type: 'postgresql',
    configSchema: schemas.storage,
    createStorage: notUsedAsync
  };
  const sourceModule: SourceModule = {
    type: 'postgresql',
    configSchema: schemas.source,
    createSource: notUsedAsync,
    createReplicator: () => notUsed(),
    checkSource: () => Promise.resolve([])
  };
  return new ModuleRegistry().registerStorage(storageModule).registerSource(sourceModule);
}
