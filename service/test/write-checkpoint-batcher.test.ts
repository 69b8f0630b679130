import { WriteCheckpointBatcher, type BucketStorage, type ReplicationSource } from '@syncpoint/service-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startServiceHarness, watchMarkers, type ServiceHarness } from './service-harness.js';

/** Wraps the real storage and source to count calls; every call still goes to real Postgres. */
function counting(storage: BucketStorage, source: ReplicationSource) {
  const counts = { heads: 0, storageCalls: 0, failNextStorageCall: false };
  const countedStorage = Object.create(storage) as BucketStorage;
  countedStorage.createManagedWriteCheckpoints = async (batch) => {
    counts.storageCalls++;
    if (counts.failNextStorageCall) {
      counts.failNextStorageCall = false;
      throw new Error('storage unavailable');
    }
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
