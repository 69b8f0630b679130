import { normalizeLsn } from '@syncpoint/codecs';
import { registerWriteCheckpointConformance } from '@syncpoint/service-core-tests';
import { Long } from 'mongodb';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MIGRATIONS } from '../src/index.js';
import {
  createThrowAwayStorage,
  migratedStorage,
  mongoTestUrl,
  type ThrowAwayMongoStorage
} from './throw-away-storage.js';

const url = mongoTestUrl;

if (!url) {
  console.log('MongoDB conformance suite SKIPPED: MONGO_TEST_URL is not set (no MongoDB server on this machine)');
}

describe.skipIf(!url)('MongoDB storage conformance', () => registerWriteCheckpointConformance(migratedStorage));

describe.skipIf(!url)('MongoDB storage specifics', () => {
  let storage: ThrowAwayMongoStorage;
  beforeAll(async () => {
    storage = await createThrowAwayStorage();
  });
  afterAll(async () => {
    await storage?.close();
  });

  const indexNames = async (collection: string) =>
    (await storage.db.collection(collection).indexes()).map((index) => index.name).sort();

  it('migrates up concurrently once, down one at a time, and up again', async () => {
    const all = MIGRATIONS.map((migration) => migration.name);
    const [first, second] = await Promise.all([storage.migrate('up'), storage.migrate('up')]);
    expect([...first.applied, ...second.applied]).toEqual(all);
    expect(await indexNames('write_checkpoints')).toEqual([
      '_id_',
      'checkpoint_requested_at',
      'processed_at_lsn',
      'user_id'
    ]);
    expect(await storage.db.collection('checkpoint_events').isCapped()).toBe(true);

    expect(await indexNames('bucket_parameters')).toEqual(['_id_', 'lookup']);
    expect(await storage.migrate('down')).toEqual({ applied: [all[4]] });
    expect(await indexNames('bucket_parameters')).toEqual(['_id_']);
    expect(await storage.migrate('down')).toEqual({ applied: [all[3]] });
    expect(await indexNames('write_checkpoints')).toEqual(['_id_', 'processed_at_lsn', 'user_id']);
    expect(await storage.migrate('down')).toEqual({ applied: [all[2]] });
    expect(await storage.db.listCollections({ name: 'checkpoint_events' }).toArray()).toEqual([]);

    expect(await storage.migrate('up')).toEqual({ applied: all.slice(2) });
    expect(await storage.migrate('up')).toEqual({ applied: [] });
  });

  it('stores ids as Int64 for generated and supplied requests', async () => {
    const heads = { '1': normalizeLsn('0/100') };
    await storage.createManagedWriteCheckpoints([
      { user_id: 'int64-generated', heads },
      { user_id: 'int64-supplied', heads, checkpoint_request_id: 2n ** 62n }
    ]);
    const raw = await storage.db
      .collection('write_checkpoints')
      .find({ user_id: { $in: ['int64-generated', 'int64-supplied'] }, client_id: { $type: 'long' } })
      .toArray();
    expect(raw).toHaveLength(2);
    expect(raw.every((document) => document.client_id instanceof Long)).toBe(true);
    const supplied = raw.find((document) => document.user_id === 'int64-supplied')!;
    expect(supplied.checkpoint_requested_at).toBeInstanceOf(Date);
    expect(supplied.processed_at_lsn).toBeNull();
    const generated = raw.find((document) => document.user_id === 'int64-generated')!;
    expect('checkpoint_requested_at' in generated).toBe(false);
  });

  it('notifies checkpoint_events when records become processed', async () => {
    const events = storage.db.collection('checkpoint_events');
    const before = await events.estimatedDocumentCount();
    await storage.createManagedWriteCheckpoints([{ user_id: 'events', heads: { '1': normalizeLsn('0/10') } }]);
    expect(await storage.markWriteCheckpointsProcessed(normalizeLsn('0/10'))).toBeGreaterThanOrEqual(1);
    expect(await events.estimatedDocumentCount()).toBeGreaterThan(before);
  });

  it('serves the newest active stream, else the newest processing one, and supersedes older processing ones', async () => {
    const first = await storage.deploySyncConfig('bucket_definitions: {a: {data: ["SELECT * FROM a"]}}');
    expect(first.state).toBe('PROCESSING');
    expect(await storage.getServingStream()).toEqual(first);
    const second = await storage.deploySyncConfig('bucket_definitions: {b: {data: ["SELECT * FROM b"]}}');
    expect(second.id).toBeGreaterThan(first.id);
    expect((await storage.syncRules.findOne({ _id: first.id }))?.state).toBe('STOP');
    await storage.syncRules.updateOne({ _id: second.id }, { $set: { state: 'ACTIVE' } });
    const third = await storage.deploySyncConfig('bucket_definitions: {c: {data: ["SELECT * FROM c"]}}');
    expect(await storage.getServingStream()).toEqual({ ...second, state: 'ACTIVE' });
    expect(third.id).toBeGreaterThan(second.id);
  });
});
