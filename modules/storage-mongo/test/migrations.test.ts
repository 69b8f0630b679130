import { describe, expect, it } from 'vitest';
import { MIGRATIONS, migrationToRevert, pendingMigrations, type IndexPlan } from '../src/index.js';

const names = MIGRATIONS.map((migration) => migration.name);
const allIndexes = (): IndexPlan[] => MIGRATIONS.flatMap((migration) => migration.indexes);
const index = (collection: string, name: string) =>
  allIndexes().find((plan) => plan.collection === collection && plan.options.name === name);

describe('MongoDB migrations (PROTOCOL §4.13)', () => {
  it('are the documented ones, in order, and their names sort in that order', () => {
    expect(names).toEqual([
      '1711543888062-write-checkpoint-index',
      '1727099539247-custom-write-checkpoint-index',
      '1749720702136-checkpoint-events',
      '1782950400000-checkpoint-requested-at-index',
      '1783036800000-bucket-data'
    ]);
    expect([...names].sort()).toEqual(names);
  });

  it('create the indexes of PROTOCOL §4.9 with their names', () => {
    expect(index('write_checkpoints', 'user_id')).toMatchObject({ key: { user_id: 1 } });
    expect(index('write_checkpoints', 'user_id')!.options.unique).toBeUndefined(); // user_id is not unique
    expect(index('write_checkpoints', 'processed_at_lsn')).toMatchObject({ key: { processed_at_lsn: 1 } });
    expect(index('custom_write_checkpoints', 'user_sync_rule_unique')).toMatchObject({
      key: { user_id: 1, sync_rules_id: 1 },
      options: { unique: true }
    });
    expect(index('custom_write_checkpoints', 'op_id')).toMatchObject({ key: { op_id: 1 } });
    for (const collection of ['write_checkpoints', 'custom_write_checkpoints']) {
      expect(index(collection, 'checkpoint_requested_at')).toEqual({
        collection,
        key: { checkpoint_requested_at: 1 },
        options: {
          name: 'checkpoint_requested_at',
          partialFilterExpression: { checkpoint_requested_at: { $exists: true } }
        }
      });
    }
    expect(allIndexes()).toHaveLength(8);
  });

  it('create checkpoint_events capped at 50 KiB and 50 documents', () => {
    const events = MIGRATIONS.find((migration) => migration.name === '1749720702136-checkpoint-events')!;
    expect(events.collections).toEqual([{ name: 'checkpoint_events', size: 51_200, max: 50 }]);
  });

  it('up applies what is not recorded yet, in order', () => {
    expect(pendingMigrations(new Set()).map((m) => m.name)).toEqual(names);
    expect(pendingMigrations(new Set([names[0]!, names[2]!])).map((m) => m.name)).toEqual([
      names[1],
      names[3],
      names[4]
    ]);
    expect(pendingMigrations(new Set(names))).toEqual([]);
  });

  it('down reverts only the most recently applied one', () => {
    expect(migrationToRevert(new Set(names))?.name).toBe(names[4]);
    expect(migrationToRevert(new Set(names.slice(0, 2)))?.name).toBe(names[1]);
    expect(migrationToRevert(new Set())).toBeUndefined();
  });

  it('down refuses when a newer migration unknown to this version is recorded', () => {
    expect(() => migrationToRevert(new Set([...names, '1900000000000-from-the-future']))).toThrow(
      /unknown to this version/
    );
    expect(migrationToRevert(new Set([...names.slice(1), '1000000000000-older-unknown']))?.name).toBe(names[4]);
  });

  it('create the bucket data collections and the lookup index (PROTOCOL §8)', () => {
    const bucketData = MIGRATIONS.find((migration) => migration.name === '1783036800000-bucket-data')!;
    expect(bucketData.plainCollections).toEqual([
      'bucket_data',
      'bucket_state',
      'current_data',
      'bucket_parameters',
      'op_id_sequence'
    ]);
    expect(index('bucket_parameters', 'lookup')).toEqual({
      collection: 'bucket_parameters',
      key: { 'key.g': 1, lookup: 1, _id: 1 },
      options: { name: 'lookup' }
    });
    // Field order of a compound key is the index order: equality fields first, then the `_id` range.
    expect(Object.keys(index('bucket_parameters', 'lookup')!.key)).toEqual(['key.g', 'lookup', '_id']);
    expect(index('sync_rules', 'state')).toMatchObject({ key: { state: 1, _id: -1 } });
  });
});
