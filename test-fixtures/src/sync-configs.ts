import { listFixtures, readFixture } from './files.js';

/**
 * Sync configs (bucket definitions; later Sync Streams) in `sync-configs/<name>.yaml`, as the text a service config's
 * `sync_config.content` takes.
 */
export type SyncConfigName = 'demo-todos' | 'todos-by-user' | 'items' | 'items-global' | 'items-by-user' | 'lists';

export function syncConfig(name: SyncConfigName): string {
  return readFixture('sync-configs', name, '.yaml');
}

export function syncConfigNames(): string[] {
  return listFixtures('sync-configs', '.yaml');
}
