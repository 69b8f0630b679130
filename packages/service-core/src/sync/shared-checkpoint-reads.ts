import type { Lsn } from '@syncpoint/codecs';
import { serializeParameterLookup, type ParameterLookup, type SqliteRow } from '@syncpoint/sync-rules';
import type { BucketChecksum, ReplicationStreamStorage } from '../storage/bucket-data.js';
import type { BucketStorage } from '../storage/bucket-storage.js';

/**
 * The storage reads every sync connection makes for each new checkpoint, shared by the connections of a process.
 * One checkpoint wakes every open stream at once; read one by one, 1,000 streams cost ~2,000 storage queries per
 * checkpoint and saturate the storage pool (the soak measured 300–450 ms waits for a connection). Here the reads
 * made in the same event-loop turn are merged into one storage call per checkpoint, and bucket checksums, which
 * depend only on the checkpoint's op id, are kept for the last few checkpoints so later readers get them for free.
 */
export class SharedCheckpointReads {
  private readonly writeCheckpoints = new TurnBatcher<Lsn, string, bigint>((lsn, ids) =>
    this.loadWriteCheckpoints(ids, lsn)
  );
  private readonly checksums = new TurnBatcher<ChecksumGroup, string, BucketChecksum>((group, buckets) =>
    this.loadChecksums(group, buckets)
  );
  private readonly parameterSets = new TurnBatcher<ChecksumGroup, ParameterLookup, SqliteRow[]>((group, lookups) =>
    this.loadParameterSets(group, lookups)
  );
  /** Checksums by `<stream id>:<checkpoint>`, newest last; a few checkpoints, since connections lag a little. */
  private readonly checksumCache = new Map<string, Map<string, BucketChecksum>>();

  constructor(
    private readonly storage: BucketStorage,
    private readonly options: { cachedCheckpoints?: number } = {}
  ) {}

  /** The request id acknowledged for `fullUserId` at `lsn` (see `WriteCheckpointApi.lastWriteCheckpoint`). */
  async lastWriteCheckpoint(fullUserId: string, lsn: Lsn | null): Promise<bigint | null> {
    if (lsn === null) return null;
    return (await this.writeCheckpoints.get(lsn, lsn, [fullUserId])).get(fullUserId) ?? null;
  }

  /** Checksums of `buckets` at `checkpoint`; buckets with no ops are absent. */
  async getChecksums(
    streamStorage: ReplicationStreamStorage,
    checkpoint: bigint,
    buckets: string[]
  ): Promise<Map<string, BucketChecksum>> {
    const key = `${streamStorage.stream.id}:${checkpoint}`;
    const cached = this.checksumCache.get(key);
    const missing = cached ? buckets.filter((bucket) => !cached.has(bucket)) : buckets;
    const loaded =
      missing.length > 0
        ? await this.checksums.get(key, { streamStorage, checkpoint, key }, missing)
        : new Map<string, BucketChecksum>();
    const result = new Map<string, BucketChecksum>();
    for (const bucket of buckets) {
      const value = loaded.get(bucket) ?? cached?.get(bucket);
      if (value && value !== EMPTY) result.set(bucket, value);
    }
    return result;
  }

  /**
   * Parameter-index rows of `lookups` at `checkpoint` (`result[i]` for `lookups[i]`). A checkpoint makes every
   * connection whose streams read an index resolve again (STREAMS §4.8): their lookups of one turn go to storage as
   * one call with the distinct lookups.
   */
  async getParameterSets(
    streamStorage: ReplicationStreamStorage,
    checkpoint: bigint,
    lookups: ParameterLookup[]
  ): Promise<SqliteRow[][]> {
    const key = `${streamStorage.stream.id}:${checkpoint}`;
    const loaded = await this.parameterSets.get(key, { streamStorage, checkpoint, key }, lookups);
    return lookups.map((lookup) => loaded.get(lookup) ?? []);
  }

  private async loadParameterSets(
    group: ChecksumGroup,
    lookups: ParameterLookup[]
  ): Promise<Map<ParameterLookup, SqliteRow[]>> {
    // Callers' lookup objects differ; storage gets each distinct lookup once.
    const distinct = new Map<string, ParameterLookup>();
    const keyOf = new Map<ParameterLookup, string>();
    for (const lookup of lookups) {
      const key = serializeParameterLookup(lookup);
      keyOf.set(lookup, key);
      if (!distinct.has(key)) distinct.set(key, lookup);
    }
    const rows = await group.streamStorage.getParameterSets(group.checkpoint, [...distinct.values()]);
    const byKey = new Map([...distinct.keys()].map((key, index) => [key, rows[index] ?? []]));
    return new Map(lookups.map((lookup) => [lookup, byKey.get(keyOf.get(lookup)!) ?? []]));
  }

  private async loadChecksums(group: ChecksumGroup, buckets: string[]): Promise<Map<string, BucketChecksum>> {
    const loaded = await group.streamStorage.getChecksums(group.checkpoint, buckets);
    let cached = this.checksumCache.get(group.key);
    if (!cached) {
      cached = new Map();
      this.checksumCache.set(group.key, cached);
      const limit = this.options.cachedCheckpoints ?? 4;
      while (this.checksumCache.size > limit) this.checksumCache.delete(this.checksumCache.keys().next().value!);
    }
    for (const bucket of buckets) cached.set(bucket, loaded.get(bucket) ?? EMPTY);
    return loaded;
  }

  private async loadWriteCheckpoints(fullUserIds: string[], lsn: Lsn): Promise<Map<string, bigint>> {
    if (this.storage.lastWriteCheckpoints) return this.storage.lastWriteCheckpoints(fullUserIds, lsn);
    const result = new Map<string, bigint>();
    await Promise.all(
      fullUserIds.map(async (id) => {
        const value = await this.storage.lastWriteCheckpoint(id, lsn);
        if (value !== null) result.set(id, value);
      })
    );
    return result;
  }
}

/** The reads of one checkpoint of one stream. */
interface ChecksumGroup {
  streamStorage: ReplicationStreamStorage;
  checkpoint: bigint;
  key: string;
}

/** A bucket without ops: cached as such, reported as absent (like the storage does). */
const EMPTY: BucketChecksum = Object.freeze({ bucket: '', checksum: 0, count: 0 });

/**
 * Collects the keys asked for in one event-loop turn, per group, and loads each group's keys with one call. Callers
 * get the values of their own keys; a failed load fails every caller of that group.
 */
class TurnBatcher<G, K, V> {
  private pending = new Map<
    string,
    { group: G; keys: Set<K>; waiters: Array<{ resolve(values: Map<K, V>): void; reject(error: unknown): void }> }
  >();
  private scheduled = false;

  constructor(private readonly load: (group: G, keys: K[]) => Promise<Map<K, V>>) {}

  get(groupKey: string, group: G, keys: K[]): Promise<Map<K, V>> {
    return new Promise((resolve, reject) => {
      let entry = this.pending.get(groupKey);
      if (!entry) this.pending.set(groupKey, (entry = { group, keys: new Set(), waiters: [] }));
      for (const key of keys) entry.keys.add(key);
      entry.waiters.push({ resolve, reject });
      if (!this.scheduled) {
        this.scheduled = true;
        setImmediate(() => this.flush());
      }
    });
  }

  private flush() {
    const groups = this.pending;
    this.pending = new Map();
    this.scheduled = false;
    for (const { group, keys, waiters } of groups.values()) {
      this.load(group, [...keys]).then(
        (values) => waiters.forEach((waiter) => waiter.resolve(values)),
        (error: unknown) => waiters.forEach((waiter) => waiter.reject(error))
      );
    }
  }
}
