import { normalizeLsn, type Lsn } from '@syncpoint/codecs';
import {
  StreamStorageBase,
  type BucketOp,
  type BucketChecksum,
  type CompactOptions,
  type CompactResult,
  type ReplicationCheckpoint,
  type ReplicationState,
  type ReplicationStreamStorage,
  type SnapshotTableState
} from '@syncpoint/service-core';
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
  type BucketStateView
} from './bucket-data-documents.js';
import type { Document, UpdateFilter } from 'mongodb';
import { compactStream } from './mongo-compaction.js';
import { MongoBatch } from './mongo-batch.js';
import type { StreamCollections } from './stream-collections.js';
import { checkpointOf, lsnOrNull, type SyncRulesDocument } from './sync-rules-document.js';

/** Ops fetched per server round trip while streaming bucket data. */
const READ_BATCH_SIZE = 1000;

/** One replication stream's data in MongoDB storage (PROTOCOL §8); `g` in every key is the stream id. */
export class MongoStreamStorage extends StreamStorageBase<StreamCollections> implements ReplicationStreamStorage {
  private get collections(): StreamCollections {
    return this.driver;
  }

  protected createBatch(): MongoBatch {
    return new MongoBatch(this.collections, this.groupId, this.syncRules, this.logger);
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

  protected async *readBucketOps(
    checkpoint: bigint,
    start: Map<string, bigint>,
    limit: number
  ): AsyncIterable<BucketOp> {
    const { filter } = bucketDataFilter(this.groupId, checkpoint, start);
    if (filter === null) return;
    // Sorted by `_id` = (g, bucket, op id): buckets in name order, ops in id order. MongoDB compares strings by UTF-8
    // bytes (no collation is ever set), which equals JavaScript's UTF-16 order except between astral characters and
    // U+E000–U+FFFF in bucket names.
    const cursor = this.collections.bucketData
      .find(filter)
      .sort({ _id: 1 })
      .limit(limit)
      .batchSize(Math.min(limit, READ_BATCH_SIZE));
    try {
      for await (const document of cursor) yield { bucket: document._id.b, entry: toOplogEntry(document) };
    } finally {
      await cursor.close();
    }
  }

  protected async readParameterEntries(
    checkpoint: bigint,
    lookups: string[]
  ): Promise<Array<{ lookup: string; bucketParameters: string }>> {
    const rows = await this.collections.bucketParameters
      .aggregate<{ _id: { lookup: string }; bucket_parameters: string }>(
        parameterSetsPipeline(this.groupId, checkpoint, lookups)
      )
      .toArray();
    return rows.map((row) => ({ lookup: row._id.lookup, bucketParameters: row.bucket_parameters }));
  }

  compact(options: CompactOptions = {}): Promise<CompactResult> {
    return compactStream(this.collections, this.groupId, options);
  }
}
