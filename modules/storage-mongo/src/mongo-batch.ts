import { normalizeLsn, type Lsn } from '@syncpoint/codecs';
import {
  evaluateRowChange,
  replicaKeyOf,
  subkeyOf,
  type BucketStorageBatch,
  type CurrentRowState,
  type Logger,
  type RowChange,
  type SourceTableRef
} from '@syncpoint/service-core';
import { serializeParameterRows, type SyncRules } from '@syncpoint/sync-rules';
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
import { planCheckpoint } from './checkpoint-plan.js';
import type { StreamCollections } from './mongo-stream-storage.js';
import { streamCheckpointState } from './sync-rules-document.js';
import { int64ToLong, reachedPendingFilter } from './write-checkpoint-updates.js';

/** Row changes evaluated together (one bulk read of their current_data). */
const EVALUATE_ROWS = 2_000;
/** A flush is triggered at this many buffered ops (plus lookups)… */
const FLUSH_OPS = 10_000;
/** …or this many characters of row data (keeps one transaction well below MongoDB's limits). */
const FLUSH_DATA_CHARS = 5 * 1024 * 1024;
/** Op ids are reserved from `op_id_sequence` at least this many at a time. */
const MIN_ID_BLOCK = 1_000;
const WAITING_LOG_INTERVAL_MS = 5_000;
/** Current rows of a truncated table read at a time. */
const TRUNCATE_PAGE = 5_000;
export const OP_ID_SEQUENCE_ID = 'op_id';

interface PendingChange {
  table: SourceTableRef;
  replicaKey: string;
  change: RowChange;
}

const rowKey = (tableId: string, replicaKey: string) => `${tableId}\u0000${replicaKey}`;

/**
 * The replication batch of one stream (PROTOCOL §8.3), the MongoDB twin of the Postgres batch. `save` queues
 * changes; they are evaluated in groups (one `$in` read of the rows' current_data, then `evaluateRowChange` in
 * order), their ops get ids from blocks reserved in `op_id_sequence` (one `$inc` per block, Int64), and a flush
 * writes everything buffered in ONE MongoDB transaction: bucket_data inserts, bucket_state upserts, current_data
 * upserts/deletes, bucket_parameters inserts, and `keepalive_op` (`$max`) on the stream's sync_rules document.
 *
 * Crash safety: flushed ops have ids above the stream's `last_checkpoint`, so readers never see them until a
 * checkpoint includes them. They are never deleted after a crash: current_data already reflects them, replication
 * re-processes the source transaction from the last checkpoint's lsn, and the flush recorded its highest id in
 * `keepalive_op`, so the next checkpoint makes the earlier ops visible together with the re-processed ones.
 */
export class MongoBatch implements BucketStorageBatch {
  skippedRows = 0;

  private pending: PendingChange[] = [];
  /** Current state of rows seen since the last flush (null: the row is in no bucket and no lookup). */
  private cache = new Map<string, CurrentRowState | null>();
  private dirty = new Map<string, { key: CurrentDataKey; state: CurrentRowState | null }>();

  private ops: BucketDataDocument[] = [];
  private parameters: BucketParameterDocument[] = [];
  private dataChars = 0;
  private bucketTotals = new Map<string, { checksum: number; count: number; lastOp: bigint }>();

  /** Reserved ids: next to hand out, and the last one of the block. */
  private nextReserved = 1n;
  private lastReserved = 0n;
  private bufferedMaxId = 0n;
  /** Highest id this batch has persisted. */
  private lastFlushedId = 0n;
  private lastWaitingLog = 0;

  constructor(
    private readonly collections: StreamCollections,
    private readonly groupId: number,
    private readonly syncRules: SyncRules,
    private readonly logger?: Logger
  ) {}

  async save(change: RowChange): Promise<void> {
    if (change.kind === 'update' && change.beforeKey) {
      const before = replicaKeyOf(change.table, change.beforeKey);
      const after = replicaKeyOf(change.table, change.after);
      if (before !== after) {
        // The replica identity changed: the old row is gone and a new one appeared.
        this.pending.push({
          table: change.table,
          replicaKey: before,
          change: { kind: 'delete', table: change.table, beforeKey: change.beforeKey }
        });
        this.pending.push({
          table: change.table,
          replicaKey: after,
          change: { kind: 'insert', table: change.table, after: change.after }
        });
        return this.maybeEvaluate();
      }
    }
    const key = change.kind === 'delete' ? change.beforeKey : change.after;
    this.pending.push({ table: change.table, replicaKey: replicaKeyOf(change.table, key), change });
    return this.maybeEvaluate();
  }

  async truncate(tables: SourceTableRef[]): Promise<void> {
    await this.flush();
    for (const table of tables) {
      // Each page is flushed before the next is read, so the range restarts from the remaining rows.
      let after: string | null = null;
      for (;;) {
        const range = tableCurrentDataRange(this.groupId, table.id);
        if (after !== null) (range._id as Document).$gt = { g: this.groupId, t: table.id, k: after };
        const rows = await this.collections.currentData.find(range).sort({ _id: 1 }).limit(TRUNCATE_PAGE).toArray();
        if (rows.length === 0) break;
        for (const row of rows) {
          this.cache.set(rowKey(table.id, row._id.k), { buckets: row.buckets, lookups: row.lookups });
          this.pending.push({ table, replicaKey: row._id.k, change: { kind: 'delete', table, beforeKey: {} } });
        }
        after = rows.at(-1)!._id.k;
        await this.evaluatePending();
        if (this.bufferedOps() >= FLUSH_OPS) await this.flushBuffers();
      }
    }
    await this.flush();
  }

  async flush(): Promise<void> {
    await this.evaluatePending();
    await this.flushBuffers();
  }

  commit(lsn: Lsn): Promise<boolean> {
    return this.checkpoint(lsn, false);
  }

  keepalive(lsn: Lsn): Promise<boolean> {
    return this.checkpoint(lsn, true);
  }

  private bufferedOps(): number {
    return this.ops.length + this.parameters.length;
  }

  private async maybeEvaluate(): Promise<void> {
    if (this.pending.length < EVALUATE_ROWS) return;
    await this.evaluatePending();
    if (this.bufferedOps() >= FLUSH_OPS || this.dirty.size >= FLUSH_OPS || this.dataChars >= FLUSH_DATA_CHARS)
      await this.flushBuffers();
  }

  /** Evaluates the queued changes in order, buffering their ops with ids. */
  private async evaluatePending(): Promise<void> {
    if (this.pending.length === 0) return;
    const pending = this.pending;
    this.pending = [];
    await this.loadCurrentData(pending);

    const results = pending.map((item) => {
      const key = rowKey(item.table.id, item.replicaKey);
      const subkey = subkeyOf(item.table, item.replicaKey);
      const result = evaluateRowChange(this.syncRules, item.change, this.cache.get(key) ?? null, subkey);
      this.cache.set(key, result.state);
      this.dirty.set(key, { key: { g: this.groupId, t: item.table.id, k: item.replicaKey }, state: result.state });
      if (result.errors.length > 0) {
        this.skippedRows++;
        this.logger?.warn(
          {
            table: `${item.table.schema}.${item.table.name}`,
            key: item.replicaKey,
            errors: result.errors.map((e) => e.message)
          },
          'row could not be fully evaluated with the sync rules; the affected output is skipped'
        );
      }
      return { item, result };
    });

    const needed = results.reduce(
      (sum, { result }) =>
        sum + result.puts.length + result.removes.length + result.lookups.length + result.removedLookups.length,
      0
    );
    await this.reserveIds(needed);

    for (const { item, result } of results) {
      const source = { source_table: item.table.id, source_key: item.replicaKey };
      for (const put of result.puts)
        this.bufferOp(
          { op: 'PUT', ...source, table: put.table, row_id: put.id, data: put.data },
          put.bucket,
          put.checksum
        );
      for (const remove of result.removes)
        this.bufferOp(
          { op: 'REMOVE', ...source, table: remove.table, row_id: remove.id, data: null },
          remove.bucket,
          remove.checksum
        );
      const key: CurrentDataKey = { g: this.groupId, t: item.table.id, k: item.replicaKey };
      for (const entry of result.lookups) {
        this.parameters.push({
          _id: int64ToLong(this.nextId()),
          key,
          lookup: entry.serializedLookup,
          bucket_parameters: serializeParameterRows(entry.outputs)
        });
      }
      for (const lookup of result.removedLookups) {
        this.parameters.push({ _id: int64ToLong(this.nextId()), key, lookup, bucket_parameters: '[]' });
      }
    }
  }

  private async loadCurrentData(pending: PendingChange[]): Promise<void> {
    const keys: CurrentDataKey[] = [];
    const asked = new Set<string>();
    for (const item of pending) {
      const key = rowKey(item.table.id, item.replicaKey);
      if (this.cache.has(key) || asked.has(key)) continue;
      asked.add(key);
      keys.push({ g: this.groupId, t: item.table.id, k: item.replicaKey });
    }
    if (keys.length === 0) return;
    const rows = await this.collections.currentData.find({ _id: { $in: keys } }).toArray();
    for (const key of asked) this.cache.set(key, null);
    for (const row of rows)
      this.cache.set(rowKey(row._id.t, row._id.k), { buckets: row.buckets, lookups: row.lookups });
  }

  /**
   * Reserves at least `count` ids: one `$inc` of the counter document by the block size, returning the new value;
   * the block is (value − size, value]. A fresh counter starts at 0, so the first id is 1.
   */
  private async reserveIds(count: number): Promise<void> {
    const available = this.lastReserved - this.nextReserved + 1n;
    if (available >= BigInt(count)) return;
    // The rest of an old block is left unused (ids may have gaps; only their order matters).
    const block = BigInt(Math.max(count, MIN_ID_BLOCK));
    const counter = await this.collections.opIdSequence.findOneAndUpdate(
      { _id: OP_ID_SEQUENCE_ID },
      { $inc: { value: int64ToLong(block) } },
      { upsert: true, returnDocument: 'after' }
    );
    if (counter === null) throw new Error('op_id_sequence upsert returned nothing');
    const last = longToBigint(counter.value);
    if (last === null) throw new Error('op_id_sequence holds no value');
    this.nextReserved = last - block + 1n;
    this.lastReserved = last;
  }

  private nextId(): bigint {
    if (this.nextReserved > this.lastReserved) throw new Error('internal error: op ids were not reserved');
    const id = this.nextReserved++;
    if (id > this.bufferedMaxId) this.bufferedMaxId = id;
    return id;
  }

  private bufferOp(
    fields: Pick<BucketDataDocument, 'op' | 'source_table' | 'source_key' | 'table' | 'row_id' | 'data'>,
    bucket: string,
    checksum: number
  ): void {
    const id = this.nextId();
    this.ops.push({
      _id: { g: this.groupId, b: bucket, o: int64ToLong(id) },
      ...fields,
      checksum: checksumToLong(checksum),
      target_op: null
    });
    if (fields.data != null) this.dataChars += fields.data.length;
    const totals = this.bucketTotals.get(bucket);
    if (totals) {
      totals.checksum = (totals.checksum + checksum) >>> 0;
      totals.count++;
      totals.lastOp = id;
    } else {
      this.bucketTotals.set(bucket, { checksum, count: 1, lastOp: id });
    }
  }

  /** Writes everything buffered in one transaction (still invisible: no checkpoint is created). */
  private async flushBuffers(): Promise<void> {
    if (this.ops.length === 0 && this.parameters.length === 0 && this.dirty.size === 0) return;
    const maxId = this.bufferedMaxId;
    const { ops, parameters } = this;
    const stateUpdates: AnyBulkWriteOperation<BucketStateDocument>[] = [...this.bucketTotals].map(
      ([bucket, totals]) => ({
        updateOne: {
          filter: { _id: { g: this.groupId, b: bucket } },
          update: bucketStateIncrement(totals),
          upsert: true
        }
      })
    );
    const rowWrites: AnyBulkWriteOperation<CurrentDataDocument>[] = [...this.dirty.values()].map(({ key, state }) =>
      state === null
        ? { deleteOne: { filter: { _id: key } } }
        : {
            replaceOne: {
              filter: { _id: key },
              replacement: { buckets: state.buckets, lookups: state.lookups },
              upsert: true
            }
          }
    );

    await this.collections.client.withSession((session) =>
      session.withTransaction(async () => {
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
    if (maxId > this.lastFlushedId) this.lastFlushedId = maxId;
    this.resetBuffers();
  }

  private resetBuffers(): void {
    this.ops = [];
    this.parameters = [];
    this.dataChars = 0;
    this.bucketTotals = new Map();
    this.dirty = new Map();
    // current_data now holds what the cache held; keep memory bounded.
    this.cache = new Map();
  }

  /** PROTOCOL §8.3: flush, then create a checkpoint at `lsn` when allowed, in one transaction. */
  private async checkpoint(lsnText: Lsn, keepalive: boolean): Promise<boolean> {
    const lsn = normalizeLsn(lsnText);
    await this.flush();
    const now = new Date();
    let created = false;
    let waiting: ReturnType<typeof streamCheckpointState> | null = null;

    await this.collections.client.withSession((session) =>
      session.withTransaction(async () => {
        created = false;
        waiting = null;
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
          lastFlushedOp: this.lastFlushedId,
          pendingRequestsReached: reached
        });
        if (plan.kind === 'blocked') {
          // keepalive_op already holds every flushed op id (flushBuffers), so they come with the first allowed checkpoint.
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
    const blocked = waiting as ReturnType<typeof streamCheckpointState> | null;
    if (blocked && Date.now() - this.lastWaitingLog > WAITING_LOG_INTERVAL_MS) {
      this.lastWaitingLog = Date.now();
      this.logger?.info(
        {
          stream: this.groupId,
          lsn,
          snapshotDone: blocked.snapshotDone,
          noCheckpointBefore: blocked.noCheckpointBefore,
          lastCheckpointLsn: blocked.lastCheckpointLsn
        },
        'waiting before creating a checkpoint'
      );
    }
    return created;
  }
}
