import type { Lsn } from '@syncpoint/codecs';
import {
  planCheckpoint,
  ReplicationBatch,
  type CheckpointWriteResult,
  type CurrentRow,
  type CurrentRowKey,
  type FlushBuffers,
  type Logger,
  type SourceTableRef,
  type StreamCheckpointState
} from '@syncpoint/service-core';
import type { SyncRules } from '@syncpoint/sync-rules';
import type { AnyBulkWriteOperation, Document } from 'mongodb';
import {
  bucketStateIncrement,
  checksumToLong,
  longToBigint,
  tableCurrentDataRange,
  type BucketDataDocument,
  type BucketParameterDocument,
  type BucketStateDocument,
  type CurrentDataDocument,
  type CurrentDataKey
} from './bucket-data-documents.js';
import type { StreamCollections } from './stream-collections.js';
import { streamCheckpointState } from './sync-rules-document.js';
import { int64ToLong, reachedPendingFilter } from './write-checkpoint-updates.js';

const OP_ID_SEQUENCE_ID = 'op_id';

/**
 * The replication batch of one stream (PROTOCOL §8.3) in MongoDB: the decisions are `ReplicationBatch`'s
 * (service-core); this class reads current_data with one `$in` per evaluated group, reserves op id blocks in
 * `op_id_sequence` (one `$inc` per block, Int64), and writes a flush in ONE MongoDB transaction: bucket_data inserts,
 * bucket_state upserts, current_data upserts/deletes, bucket_parameters inserts, and `keepalive_op` (`$max`) on the
 * stream's sync_rules document.
 *
 * Crash safety: flushed ops have ids above the stream's `last_checkpoint`, so readers never see them until a
 * checkpoint includes them. They are never deleted after a crash: current_data already reflects them, replication
 * re-processes the source transaction from the last checkpoint's lsn, and the flush recorded its highest id in
 * `keepalive_op`, so the next checkpoint makes the earlier ops visible together with the re-processed ones.
 */
export class MongoBatch extends ReplicationBatch {
  constructor(
    private readonly collections: StreamCollections,
    groupId: number,
    syncRules: SyncRules,
    logger?: Logger
  ) {
    // MongoDB's sizes: smaller evaluation groups and id blocks than the defaults, flushes written one at a time, and
    // current_data read again after each flush (only the rows of the last flush stay cached).
    super(
      groupId,
      syncRules,
      { evaluateRows: 2_000, minIdBlock: 1_000, maxCachedRows: 0, overlapFlushes: false },
      logger
    );
  }

  private currentDataKey(row: CurrentRowKey): CurrentDataKey {
    return { g: this.groupId, t: row.tableId, k: row.replicaKey };
  }

  protected async loadCurrentRows(keys: CurrentRowKey[]): Promise<CurrentRow[]> {
    const rows = await this.collections.currentData
      .find({ _id: { $in: keys.map((key) => this.currentDataKey(key)) } })
      .toArray();
    return rows.map((row) => ({
      tableId: row._id.t,
      replicaKey: row._id.k,
      state: { buckets: row.buckets, lookups: row.lookups }
    }));
  }

  protected async readTableRows(table: SourceTableRef, after: string | null, limit: number): Promise<CurrentRow[]> {
    const range = tableCurrentDataRange(this.groupId, table.id);
    if (after !== null) (range._id as Document).$gt = { g: this.groupId, t: table.id, k: after };
    const rows = await this.collections.currentData.find(range).sort({ _id: 1 }).limit(limit).toArray();
    return rows.map((row) => ({
      tableId: table.id,
      replicaKey: row._id.k,
      state: { buckets: row.buckets, lookups: row.lookups }
    }));
  }

  /**
   * One `$inc` of the counter document by the block size, returning the new value; the block is (value − size,
   * value]. A fresh counter starts at 0, so the first id is 1.
   */
  protected async reserveOpIds(size: bigint): Promise<bigint> {
    const counter = await this.collections.opIdSequence.findOneAndUpdate(
      { _id: OP_ID_SEQUENCE_ID },
      { $inc: { value: int64ToLong(size) } },
      { upsert: true, returnDocument: 'after' }
    );
    if (counter === null) throw new Error('op_id_sequence upsert returned nothing');
    const last = longToBigint(counter.value);
    if (last === null) throw new Error('op_id_sequence holds no value');
    return last - size + 1n;
  }

  protected async writeFlush(buffers: FlushBuffers): Promise<void> {
    const maxId = buffers.maxOpId;
    const ops: BucketDataDocument[] = buffers.ops.map((op) => ({
      _id: { g: this.groupId, b: op.bucket, o: int64ToLong(op.id) },
      op: op.op,
      source_table: op.sourceTable,
      source_key: op.replicaKey,
      table: op.table,
      row_id: op.rowId,
      data: op.data,
      checksum: checksumToLong(op.checksum),
      target_op: null
    }));
    const parameters: BucketParameterDocument[] = buffers.lookups.map((entry) => ({
      _id: int64ToLong(entry.id),
      key: this.currentDataKey({ tableId: entry.sourceTable, replicaKey: entry.replicaKey }),
      lookup: entry.lookup,
      bucket_parameters: entry.outputs
    }));
    const stateUpdates: AnyBulkWriteOperation<BucketStateDocument>[] = [...buffers.bucketTotals.entries()].map(
      ([bucket, totals]) => ({
        updateOne: {
          filter: { _id: { g: this.groupId, b: bucket } },
          update: bucketStateIncrement(totals),
          upsert: true
        }
      })
    );
    const rowWrites: AnyBulkWriteOperation<CurrentDataDocument>[] = buffers.rows.map((row) =>
      row.state === null
        ? { deleteOne: { filter: { _id: this.currentDataKey(row) } } }
        : {
            replaceOne: {
              filter: { _id: this.currentDataKey(row) },
              replacement: { buckets: row.state.buckets, lookups: row.state.lookups },
              upsert: true
            }
          }
    );

    await this.collections.client.withSession((session) =>
      session.withTransaction(async () => {
        await this.collections.fence?.(session);
        if (ops.length > 0) await this.collections.bucketData.insertMany(ops, { session });
        if (stateUpdates.length > 0) await this.collections.bucketState.bulkWrite(stateUpdates, { session });
        if (rowWrites.length > 0) await this.collections.currentData.bulkWrite(rowWrites, { session });
        if (parameters.length > 0) await this.collections.bucketParameters.insertMany(parameters, { session });
        if (maxId > 0n) {
          // The next checkpoint of this stream includes everything flushed, even after a crash (see the class doc).
          await this.collections.syncRules.updateOne(
            { _id: this.groupId },
            { $max: { keepalive_op: int64ToLong(maxId) } },
            { session }
          );
        }
      })
    );
  }

  /** PROTOCOL §8.3: create a checkpoint at `lsn` when allowed, in one transaction. */
  protected async writeCheckpoint(lsn: Lsn, keepalive: boolean, lastFlushedOp: bigint): Promise<CheckpointWriteResult> {
    const now = new Date();
    let created = false;
    let waiting: StreamCheckpointState | null = null;

    await this.collections.client.withSession((session) =>
      session.withTransaction(async () => {
        created = false;
        waiting = null;
        await this.collections.fence?.(session);
        const document = await this.collections.syncRules.findOne({ _id: this.groupId }, { session });
        if (!document) throw new Error(`replication stream ${this.groupId} does not exist`);
        const stream = streamCheckpointState(document);
        const reached =
          (await this.collections.writeCheckpoints.findOne(reachedPendingFilter(lsn), {
            session,
            projection: { _id: 1 }
          })) !== null;
        const plan = planCheckpoint(stream, lsn, {
          keepalive,
          lastFlushedOp,
          pendingRequestsReached: reached
        });
        if (plan.kind === 'blocked') {
          // keepalive_op already holds every flushed op id (writeFlush), so they come with the first allowed checkpoint.
          waiting = stream;
          return;
        }
        if (plan.kind === 'unchanged') return;

        const state = plan.activate ? 'ACTIVE' : stream.state;
        await this.collections.syncRules.updateOne(
          { _id: this.groupId },
          {
            $set: {
              last_checkpoint: int64ToLong(plan.checkpoint),
              last_checkpoint_lsn: lsn,
              keepalive_op: null,
              snapshot_lsn: null,
              last_fatal_error: null,
              state,
              last_keepalive_ts: now,
              ...(plan.advanced ? { last_checkpoint_ts: now } : {})
            }
          },
          { session }
        );
        if (plan.activate) {
          await this.collections.syncRules.updateMany(
            { state: 'ACTIVE', _id: { $lt: this.groupId } },
            { $set: { state: 'STOP' } },
            { session }
          );
        }
        if (state === 'ACTIVE' || state === 'ERRORED') {
          // Requests are acknowledged only by a checkpoint that is served, at an lsn ≥ their head (this one).
          await this.collections.writeCheckpoints.updateMany(
            reachedPendingFilter(lsn),
            { $set: { processed_at_lsn: lsn } },
            { session }
          );
        }
        created = true;
      })
    );

    if (created) await this.collections.notify();
    const blocked = waiting as StreamCheckpointState | null;
    return blocked ? { created, blocked } : { created };
  }
}
