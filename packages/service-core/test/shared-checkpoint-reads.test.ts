import type { Lsn } from '@syncpoint/codecs';
import type { ParameterLookup } from '@syncpoint/sync-rules';
import { describe, expect, it } from 'vitest';
import type { BucketChecksum, ReplicationStreamStorage } from '../src/storage/bucket-data.js';
import type { BucketStorage } from '../src/storage/bucket-storage.js';
import { SharedCheckpointReads } from '../src/sync/shared-checkpoint-reads.js';

/** Counts storage calls; checksums are a function of (bucket, checkpoint), as in real storage. */
function fakeStorage(options: { batched: boolean }) {
  const calls = { checksums: [] as string[][], lastWriteCheckpoint: 0, lastWriteCheckpoints: [] as string[][] };
  const acknowledged = new Map([
    ['alice/phone', 5n],
    ['bob/laptop', 7n]
  ]);
  const streamStorage = {
    stream: { id: 1 },
    getChecksums(checkpoint: bigint, buckets: string[]) {
      calls.checksums.push(buckets);
      const result = new Map<string, BucketChecksum>();
      for (const bucket of buckets)
        if (bucket !== 'empty[]')
          result.set(bucket, { bucket, checksum: bucket.length + Number(checkpoint), count: 1 });
      return Promise.resolve(result);
    }
  } as unknown as ReplicationStreamStorage;
  const storage = {
    lastWriteCheckpoint(id: string) {
      calls.lastWriteCheckpoint++;
      return Promise.resolve(acknowledged.get(id) ?? null);
    },
    ...(options.batched
      ? {
          lastWriteCheckpoints(ids: string[]) {
            calls.lastWriteCheckpoints.push(ids);
            return Promise.resolve(
              new Map(ids.filter((id) => acknowledged.has(id)).map((id) => [id, acknowledged.get(id)!]))
            );
          }
        }
      : {})
  } as unknown as BucketStorage;
  return { calls, streamStorage, storage };
}

const LSN = '0/100' as Lsn;

describe('SharedCheckpointReads', () => {
  it('answers the write-checkpoint lookups of one turn with one storage call', async () => {
    const { calls, storage } = fakeStorage({ batched: true });
    const reads = new SharedCheckpointReads(storage);
    const users = ['alice/phone', 'bob/laptop', 'carol/tab', ...Array.from({ length: 1000 }, (_, i) => `u${i}/c`)];
    const answers = await Promise.all(users.map((user) => reads.lastWriteCheckpoint(user, LSN)));
    expect(answers.slice(0, 3)).toEqual([5n, 7n, null]);
    expect(calls.lastWriteCheckpoints).toHaveLength(1);
    expect(calls.lastWriteCheckpoints[0]).toHaveLength(users.length);
    expect(await reads.lastWriteCheckpoint('alice/phone', null)).toBeNull();
  });

  it('falls back to one lookup per user when the storage has no batched lookup', async () => {
    const { calls, storage } = fakeStorage({ batched: false });
    const reads = new SharedCheckpointReads(storage);
    expect(await Promise.all(['alice/phone', 'nobody'].map((user) => reads.lastWriteCheckpoint(user, LSN)))).toEqual([
      5n,
      null
    ]);
    expect(calls.lastWriteCheckpoint).toBe(2);
  });

  it('merges checksum reads of one turn and serves later readers of the same checkpoint from the cache', async () => {
    const { calls, streamStorage, storage } = fakeStorage({ batched: true });
    const reads = new SharedCheckpointReads(storage);
    const [a, b] = await Promise.all([
      reads.getChecksums(streamStorage, 10n, ['global[]', 'user["a"]']),
      reads.getChecksums(streamStorage, 10n, ['global[]', 'user["b"]', 'empty[]'])
    ]);
    expect(calls.checksums).toEqual([['global[]', 'user["a"]', 'user["b"]', 'empty[]']]);
    expect([...a.keys()]).toEqual(['global[]', 'user["a"]']);
    expect([...b.keys()]).toEqual(['global[]', 'user["b"]']); // a bucket without ops stays absent
    expect(b.get('global[]')).toEqual({ bucket: 'global[]', checksum: 18, count: 1 });

    // Later: only what is not cached for this checkpoint is read; another checkpoint is read anew.
    await reads.getChecksums(streamStorage, 10n, ['global[]', 'empty[]', 'user["c"]']);
    expect(calls.checksums.slice(1)).toEqual([['user["c"]']]);
    expect((await reads.getChecksums(streamStorage, 11n, ['global[]'])).get('global[]')!.checksum).toBe(19);
    expect(calls.checksums).toHaveLength(3);
  });

  it('keeps the checksums of a few checkpoints only', async () => {
    const { calls, streamStorage, storage } = fakeStorage({ batched: true });
    const reads = new SharedCheckpointReads(storage, { cachedCheckpoints: 2 });
    for (const checkpoint of [1n, 2n, 3n]) await reads.getChecksums(streamStorage, checkpoint, ['global[]']);
    await reads.getChecksums(streamStorage, 3n, ['global[]']);
    expect(calls.checksums).toHaveLength(3);
    await reads.getChecksums(streamStorage, 1n, ['global[]']); // evicted
    expect(calls.checksums).toHaveLength(4);
  });

  it('fails every reader of a failed storage call, and the next turn tries again', async () => {
    const { streamStorage, storage } = fakeStorage({ batched: true });
    let fail = true;
    const getChecksums = streamStorage.getChecksums.bind(streamStorage);
    streamStorage.getChecksums = async (checkpoint, buckets) => {
      if (fail) throw new Error('storage down');
      return getChecksums(checkpoint, buckets);
    };
    const reads = new SharedCheckpointReads(storage);
    const results = await Promise.allSettled([
      reads.getChecksums(streamStorage, 1n, ['a[]']),
      reads.getChecksums(streamStorage, 1n, ['b[]'])
    ]);
    expect(results.map((result) => result.status)).toEqual(['rejected', 'rejected']);
    fail = false;
    expect((await reads.getChecksums(streamStorage, 1n, ['a[]'])).size).toBe(1);
  });

  it('merges the parameter-index reads of one turn into one storage call with the distinct lookups', async () => {
    const { storage } = fakeStorage({ batched: true });
    const calls: Array<{ checkpoint: bigint; lookups: ParameterLookup[] }> = [];
    const streamStorage = {
      stream: { id: 1 },
      getParameterSets(checkpoint: bigint, lookups: ParameterLookup[]) {
        calls.push({ checkpoint, lookups });
        return Promise.resolve(lookups.map((lookup) => [{ list_id: `${String(lookup.values[0])}@${checkpoint}` }]));
      }
    } as unknown as ReplicationStreamStorage;
    const reads = new SharedCheckpointReads(storage);
    const lookup = (user: string): ParameterLookup => ({ definition: 'lists', queryIndex: 0, values: [user] });
    const [a, b, later] = await Promise.all([
      reads.getParameterSets(streamStorage, 10n, [lookup('alice'), lookup('bob')]),
      reads.getParameterSets(streamStorage, 10n, [lookup('bob'), lookup('carol')]),
      reads.getParameterSets(streamStorage, 11n, [lookup('alice')])
    ]);
    expect(a).toEqual([[{ list_id: 'alice@10' }], [{ list_id: 'bob@10' }]]);
    expect(b).toEqual([[{ list_id: 'bob@10' }], [{ list_id: 'carol@10' }]]);
    expect(later).toEqual([[{ list_id: 'alice@11' }]]);
    // One call per checkpoint, each distinct lookup once.
    expect(calls.map((call) => [call.checkpoint, call.lookups.map((l) => l.values[0])])).toEqual([
      [10n, ['alice', 'bob', 'carol']],
      [11n, ['alice']]
    ]);
  });
});
