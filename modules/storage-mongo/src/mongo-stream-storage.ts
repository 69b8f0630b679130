import { normalizeLsn, type Lsn } from '@syncpoint/codecs';
import type {
  BucketChecksum,
  BucketDataChunk,
  BucketStorageBatch,
  CompactOptions,
  CompactResult,
  Logger,
  ReplicationCheckpoint,
  ReplicationState,
  ReplicationStream,
  ReplicationStreamStorage,
  SnapshotTableState
} from '@syncpoint/service-core';
import {
  parseParameterRows,
  serializeParameterLookup,
  type ParameterLookup,
  type SqliteRow,
  type SyncRules
} from '@syncpoint/sync-rules';
import type { ClientSession, Collection, Document, MongoClient, UpdateFilter } from 'mongodb';
import { chunkBucketOps, type BucketOp } from './bucket-data-chunks.js';
import {
  bucketDataFilter,
  checksumsAbovePipeline,
  combineChecksums,
  longToBigint,
  parameterSetsPipeline,
  snapshotProgressUpdate,
  streamBucketDataRange,
  streamBucketStateRange,
  streamCurrentDataRange,
  toOplogEntry,
  toSnapshotTableState,
  type BucketDataDocument,
  type BucketParameterDocument,
  type BucketStateDocument,
  type BucketStateView,
  type CurrentDataDocument,
  type OpIdSequenceDocument
} from './bucket-data-documents.js';
import { compactStream } from './mongo-compaction.js';
import { MongoBatch } from './mongo-batch.js';
import { checkpointOf, lsnOrNull, type SyncRulesDocument } from './sync-rules-document.js';
import type { WriteCheckpointDocument } from './write-checkpoint-updates.js';

const DEFAULT_LIMIT = 1000;
const DEFAULT_CHUNK_BYTES = 1024 * 1024;
/** Ops fetched per server round trip while streaming bucket data. */
const READ_BATCH_SIZE = 1000;

/** What a stream's storage needs from the bucket storage: the client (for transactions) and the collections. */
export interface StreamCollections {
  client: MongoClient;
  syncRules: Collection<SyncRulesDocument>;
  writeCheckpoints: Collection<WriteCheckpointDocument>;
  bucketData: Collection<BucketDataDocument>;
  bucketState: Collection<BucketStateDocument>;
  currentData: Collection<CurrentDataDocument>;
  bucketParameters: Collection<BucketParameterDocument>;
  opIdSequence: Collection<OpIdSequenceDocument>;
  /** Insert a change notification into `checkpoint_events` (PROTOCOL §6.2). */
  notify(): Promise<void>;
  /**
   * First operation of every replication write transaction: throws `ReplicationLeadershipLostError` when this process
   * lost replication leadership (issue 12 item 2). Absent: unfenced.
   */
  fence?: (session: ClientSession) => Promise<void>;
}

/** One replication stream's data in MongoDB storage (PROTOCOL §8); `g` in every key is the stream id. */
export class MongoStreamStorage implements ReplicationStreamStorage {
  constructor(
    private readonly collections: StreamCollections,
    readonly stream: ReplicationStream,
    readonly syncRules: SyncRules,
    private readonly logger?: Logger
  ) {}

  private get groupId(): number {
    return this.stream.id;
  }

  async startBatch<T>(callback: (batch: BucketStorageBatch) => Promise<T>): Promise<T> {
    const batch = new MongoBatch(this.collections, this.groupId, this.syncRules, this.logger);
    const result = await callback(batch);
    await batch.flush();
    return result;
  }

  private async document(): Promise<SyncRulesDocument> {
    const document = await this.collections.syncRules.findOne({ _id: this.groupId });
    if (!document) throw new Error(`replication stream ${this.groupId} does not exist`);
    return document;
  }

  async getReplicationState(): Promise<ReplicationState> {
    const document = await this.document();
    return {
      slotName: document.slot_name ?? null,
      snapshotDone: document.snapshot_done === true,
      lastCheckpoint: checkpointOf(document),
      noCheckpointBefore: lsnOrNull(document.no_checkpoint_before),
      tables: (document.snapshot_tables ?? [])
        .map(toSnapshotTableState)
        .sort((a, b) => (a.table.id < b.table.id ? -1 : a.table.id > b.table.id ? 1 : 0))
    };
  }

  /** A write to the stream's document, refused in its own transaction when leadership was lost. */
  private async fencedStreamUpdate(update: UpdateFilter<SyncRulesDocument> | Document[]): Promise<void> {
    const fence = this.collections.fence;
    if (!fence) {
      await this.collections.syncRules.updateOne({ _id: this.groupId }, update);
      return;
    }
    await this.collections.client.withSession((session) =>
      session.withTransaction(async () => {
        await fence(session);
        await this.collections.syncRules.updateOne({ _id: this.groupId }, update, { session });
      })
    );
  }

  async setSlotName(slotName: string): Promise<void> {
    await this.fencedStreamUpdate({ $set: { slot_name: slotName } });
  }

  async saveSnapshotProgress(state: SnapshotTableState): Promise<void> {
    await this.fencedStreamUpdate(snapshotProgressUpdate(state));
  }

  async markSnapshotDone(noCheckpointBefore: Lsn): Promise<void> {
    await this.fencedStreamUpdate({
      $set: { snapshot_done: true, no_checkpoint_before: normalizeLsn(noCheckpointBefore) }
    });
  }

  async clear(): Promise<void> {
    const g = this.groupId;
    // Not one transaction: a stream's data can exceed what one transaction should hold. The sync_rules reset comes
    // first, so a crash midway leaves a stream that snapshots again (and clears again) rather than serving half.
    await this.fencedStreamUpdate({
      $set: {
        snapshot_done: false,
        last_checkpoint: null,
        last_checkpoint_lsn: null,
        no_checkpoint_before: null,
        keepalive_op: null,
        snapshot_lsn: null,
        snapshot_tables: []
      }
    });
    await this.collections.bucketData.deleteMany(streamBucketDataRange(g));
    await this.collections.bucketState.deleteMany(streamBucketStateRange(g));
    await this.collections.currentData.deleteMany(streamCurrentDataRange(g));
    await this.collections.bucketParameters.deleteMany({ 'key.g': g });
  }

  async getCheckpoint(): Promise<ReplicationCheckpoint> {
    const document = await this.collections.syncRules.findOne(
      { _id: this.groupId },
      { projection: { last_checkpoint: 1, last_checkpoint_lsn: 1 } }
    );
    return document ? checkpointOf(document) : { checkpoint: 0n, lsn: null };
  }

  /**
   * bucket_state holds each bucket's running sum (mod 2^32) and count over ALL its ops (checkpointed or not); the
   * ops above the checkpoint, (checkpoint, last_op], are subtracted with ONE aggregation over `_id` ranges for all
   * the buckets. A bucket with 1M ops costs only the ops written since the checkpoint.
   */
  async getChecksums(checkpoint: bigint, buckets: string[]): Promise<Map<string, BucketChecksum>> {
    if (buckets.length === 0) return new Map();
    const g = this.groupId;
    const unique = [...new Set(buckets)];
    const documents = await this.collections.bucketState
      .find({ _id: { $in: unique.map((b) => ({ g, b })) } })
      .toArray();
    const states: BucketStateView[] = documents.map((document) => ({
      bucket: document._id.b,
      lastOp: longToBigint(document.last_op) ?? 0n,
      checksumSum: document.checksum_sum,
      count: document.count
    }));
    const pipeline = checksumsAbovePipeline(g, checkpoint, states);
    const above =
      pipeline === null
        ? []
        : await this.collections.bucketData
            .aggregate<{ _id: string; checksum_total: unknown; count: unknown }>(pipeline)
            .toArray();
    return combineChecksums(states, above);
  }

  async *getBucketData(
    checkpoint: bigint,
    start: Map<string, bigint>,
    options: { limit?: number; chunkLimitBytes?: number } = {}
  ): AsyncIterable<BucketDataChunk> {
    const limit = options.limit ?? DEFAULT_LIMIT;
    const chunkLimitBytes = options.chunkLimitBytes ?? DEFAULT_CHUNK_BYTES;
    if (limit <= 0) return;
    const { filter } = bucketDataFilter(this.groupId, checkpoint, start);
    if (filter === null) return;
    // Sorted by `_id` = (g, bucket, op id): buckets in name order, ops in id order; limit + 1 proves whether more
    // exist. MongoDB compares strings by UTF-8 bytes (no collation is ever set), which equals JavaScript's
    // UTF-16 order except between astral characters and U+E000–U+FFFF in bucket names.
    const cursor = this.collections.bucketData
      .find(filter)
      .sort({ _id: 1 })
      .limit(limit + 1)
      .batchSize(Math.min(limit + 1, READ_BATCH_SIZE));
    const ops = (async function* (): AsyncGenerator<BucketOp> {
      for await (const document of cursor) yield { bucket: document._id.b, entry: toOplogEntry(document) };
    })();
    try {
      yield* chunkBucketOps(ops, start, limit, chunkLimitBytes);
    } finally {
      await cursor.close();
    }
  }

  /** For each lookup: per source row, its newest entry with id ≤ checkpoint; `[]` entries mean the row left. */
  async getParameterSets(checkpoint: bigint, lookups: ParameterLookup[]): Promise<SqliteRow[][]> {
    if (lookups.length === 0) return [];
    const keys = lookups.map((lookup) => serializeParameterLookup(lookup));
    const rows = await this.collections.bucketParameters
      .aggregate<{ _id: { lookup: string }; bucket_parameters: string }>(
        parameterSetsPipeline(this.groupId, checkpoint, [...new Set(keys)])
      )
      .toArray();
    const byLookup = new Map<string, SqliteRow[]>();
    for (const row of rows) {
      if (row.bucket_parameters === '[]') continue;
      const list = byLookup.get(row._id.lookup) ?? [];
      list.push(...parseParameterRows(row.bucket_parameters));
      byLookup.set(row._id.lookup, list);
    }
    return keys.map((key) => [...(byLookup.get(key) ?? [])]);
  }

  compact(options: CompactOptions = {}): Promise<CompactResult> {
    return compactStream(this.collections, this.groupId, options);
  }
}
