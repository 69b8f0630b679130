import { WriteCheckpointBatcher, type BucketStorage, type ReplicationSource } from '@syncpoint/service-core';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { startServiceHarness, watchMarkers, type ServiceHarness } from './service-harness.js';

/** Wraps the real storage and source to count calls; every call still goes to real Postgres. */
function counting(storage: BucketStorage, source: ReplicationSource) {
  const counts = {
    heads: 0,
    storageCalls: 0,
    failNextStorageCall: false,
    /** Set: the next storage call waits for this before it runs (it and its batch stay in flight meanwhile). */
    holdNextStorageCall: undefined as Promise<void> | undefined
  };
  const countedStorage = Object.create(storage) as BucketStorage;
  countedStorage.createManagedWriteCheckpoints = async (batch) => {
    counts.storageCalls++;
    // Both apply to this call, decided when it starts (a held call must not leave them to the calls after it).
    const hold = counts.holdNextStorageCall;
    const fail = counts.failNextStorageCall;
    counts.holdNextStorageCall = undefined;
    counts.failNextStorageCall = false;
    if (hold) await hold;
    if (fail) throw new Error('storage unavailable');
    return storage.createManagedWriteCheckpoints(batch);
  };
  const countedSource = Object.create(source) as ReplicationSource;
  countedSource.createReplicationHead = (callback) => {
    counts.heads++;
    return source.createReplicationHead(callback);
  };
  return { counts, storage: countedStorage, source: countedSource };
}

describe('write-checkpoint batcher (PROTOCOL §4.6) on real Postgres', () => {
  let harness: ServiceHarness;
  let markers: Awaited<ReturnType<typeof watchMarkers>>;
  beforeAll(async () => {
    harness = await startServiceHarness();
    markers = await watchMarkers(harness.sourceDb, 'batcher_test');
  });
  afterAll(async () => {
    await markers?.drop();
    await harness?.stop();
  });

  it('requests that arrive together share one head read, one storage call and one marker', async () => {
    const { counts, storage, source } = counting(harness.service.storage, harness.service.source);
    const batcher = new WriteCheckpointBatcher({ storage, source });
    await markers.take();
    const outcomes = await Promise.all([
      batcher.enqueue('u1/a', 5n),
      batcher.enqueue('u1/a', 7n),
      batcher.enqueue('u2/a', 3n),
      batcher.enqueue('u3'),
      batcher.enqueue('u3')
    ]);
    expect(outcomes.map((o) => o.writeCheckpoint)).toEqual([7n, 7n, 3n, 1n, 1n]);
    expect(new Set(outcomes.map((o) => o.replicationHead)).size).toBe(1);
    expect(counts).toMatchObject({ heads: 1, storageCalls: 1 });
    expect(await markers.take()).toBe(1);
  });

  it('a failed batch rejects only its own callers; the next batch succeeds', async () => {
    const { counts, storage, source } = counting(harness.service.storage, harness.service.source);
    const batcher = new WriteCheckpointBatcher({ storage, source });
    await markers.take();
    counts.failNextStorageCall = true;
    const failed = await Promise.allSettled([batcher.enqueue('f1/a', 1n), batcher.enqueue('f2/a', 1n)]);
    expect(failed.map((r) => r.status)).toEqual(['rejected', 'rejected']);
    expect((failed[0] as PromiseRejectedResult).reason).toMatchObject({ message: 'storage unavailable' });
    expect(await markers.take()).toBe(0); // nothing stored, so no marker
    const next = await batcher.enqueue('f1/a', 1n);
    expect(next.writeCheckpoint).toBe(1n);
    expect(await markers.take()).toBe(1);
  });

  it('fills the next batch while one is in flight; a failure there fails only its own requests', async () => {
    const { counts, storage, source } = counting(harness.service.storage, harness.service.source);
    const batcher = new WriteCheckpointBatcher({ storage, source });
    let release!: () => void;
    counts.holdNextStorageCall = new Promise((resolve) => (release = resolve));
    counts.failNextStorageCall = true; // the held (first) call fails once released
    const first = [batcher.enqueue('iso/a', 5n), batcher.enqueue('iso/b', 1n)].map((p) =>
      p.then(
        (outcome) => outcome.writeCheckpoint,
        (error: Error) => error.message
      )
    );
    await vi.waitFor(() => expect(counts.storageCalls).toBe(1)); // the first batch is in flight, held
    const second = await Promise.all([batcher.enqueue('iso/a', 6n), batcher.enqueue('iso/c', 2n)]);
    expect(second.map((outcome) => outcome.writeCheckpoint)).toEqual([6n, 2n]); // done while the first is held
    release();
    expect(await Promise.all(first)).toEqual(['storage unavailable', 'storage unavailable']);
    const stored = await harness.storageDb.query<{ user_id: string; id: string }>(
      `SELECT user_id, write_checkpoint::text AS id FROM powersync.write_checkpoints WHERE user_id LIKE 'iso/%' ORDER BY 1`
    );
    expect(stored.rows).toEqual([
      { user_id: 'iso/a', id: '6' },
      { user_id: 'iso/c', id: '2' }
    ]);
  });

  it('batches in flight together keep each stored id the greatest requested, whichever commits first', async () => {
    const { counts, storage, source } = counting(harness.service.storage, harness.service.source);
    const batcher = new WriteCheckpointBatcher({ storage, source });
    let release!: () => void;
    counts.holdNextStorageCall = new Promise((resolve) => (release = resolve));
    const held = batcher.enqueue('ord/a', 9n);
    await vi.waitFor(() => expect(counts.storageCalls).toBe(1));
    // A lower id in a later batch commits first: it is stored (nothing greater is yet) …
    expect((await batcher.enqueue('ord/a', 4n)).writeCheckpoint).toBe(4n);
    release();
    // … and the held batch then raises it; a request below the stored id answers the stored one.
    expect((await held).writeCheckpoint).toBe(9n);
    expect((await batcher.enqueue('ord/a', 5n)).writeCheckpoint).toBe(9n);
  });

  it('emits no marker when every request matches an already processed record', async () => {
    const batcher = new WriteCheckpointBatcher({ storage: harness.service.storage, source: harness.service.source });
    const { replicationHead } = await batcher.enqueue('p1/a', 9n);
    await harness.service.storage.markWriteCheckpointsProcessed(replicationHead);
    await markers.take();
    const duplicate = await batcher.enqueue('p1/a', 9n);
    const stale = await batcher.enqueue('p1/a', 2n);
    expect([duplicate.writeCheckpoint, stale.writeCheckpoint]).toEqual([9n, 9n]);
    expect(await markers.take()).toBe(0);
  });

  it('runs at most 3 batches at once and takes everything queued into the next batch', async () => {
    const { counts, storage, source } = counting(harness.service.storage, harness.service.source);
    const batcher = new WriteCheckpointBatcher({ storage, source });
    const waves = await Promise.all(
      Array.from({ length: 200 }, (_, i) => batcher.enqueue(`wave/${i % 50}`, BigInt(i + 1)))
    );
    waves.forEach((outcome, i) => expect(outcome.writeCheckpoint >= BigInt(i + 1)).toBe(true));
    expect(counts.storageCalls).toBeLessThanOrEqual(4);
  });
});
