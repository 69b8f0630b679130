import { parseSyncRules, type SyncRules } from '@syncpoint/sync-rules';
import { syncConfig } from '@syncpoint/test-fixtures';
import type { SourceTableRef } from '../src/index.js';

/** The test-fixtures `lists` rules, parsed, and the two source tables they read (shared by the storage-logic tests). */
function parseListsRules(): SyncRules {
  const parsed = parseSyncRules(syncConfig('lists'));
  if (!parsed.ok) throw new Error(JSON.stringify(parsed.errors));
  return parsed.rules;
}

export const rules: SyncRules = parseListsRules();
export const lists: SourceTableRef = { id: '16384', schema: 'public', name: 'lists', replicaIdColumns: ['id'] };
export const members: SourceTableRef = { id: '16390', schema: 'public', name: 'members', replicaIdColumns: ['id'] };
