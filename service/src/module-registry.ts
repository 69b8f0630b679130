import { ModuleRegistry } from '@syncpoint/service-core';
import { postgresSourceModule } from '@syncpoint/source-postgres';
import { mongoStorageModule } from '@syncpoint/storage-mongo';
import { postgresStorageModule } from '@syncpoint/storage-postgres';

/** Every module this binary ships, keyed by the config `type` each one owns. */
export function createModuleRegistry(): ModuleRegistry {
  return new ModuleRegistry()
    .registerStorage(postgresStorageModule)
    .registerStorage(mongoStorageModule)
    .registerSource(postgresSourceModule);
}
