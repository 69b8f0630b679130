import { normalizeLsn, type Lsn } from '@syncpoint/codecs';
import { serializeParameterRows, type SyncRules } from '@syncpoint/sync-rules';
import type { Logger } from '../logger.js';
import type { BucketStorageBatch, RowChange, SourceTableRef } from './bucket-data.js';
import { BucketTotals } from './bucket-state.js';
import { BlockedCheckpointLog, type StreamCheckpointState } from './checkpoint-plan.js';
import { evaluateRowChange, replicaKeyOf, subkeyOf, type CurrentRowState } from './row-evaluation.js';

/**
 * The decisions of a replication batch (PROTOCOL §8.3) that every storage module makes the same way: queueing row
 * changes, evaluating them in groups against the rows' current state, handing out op ids from reserved blocks,
 * buffering ops, lookups and bucket totals, deciding when to flush, and keeping the row-state cache bounded. A
 * storage module extends `ReplicationBatch` with its driver's reads and writes only.
 */

/** One source row change to evaluate, with the row's replica key. */
export interface PendingRowChange {
  table: SourceTableRef;
  replicaKey: string;
  change: RowChange;
}

/** A row's place in current data: its source table id and replica key. */
export interface CurrentRowKey {
  tableId: string;
  replicaKey: string;
}

export interface CurrentRow extends CurrentRowKey {
  state: CurrentRowState;
}

/** A row whose current data must be written by the next flush (`state` null: delete it). */
export interface ChangedRow extends CurrentRowKey {
  state: CurrentRowState | null;
}

/** One op to insert into bucket data. */
export interface BufferedOp {
  id: bigint;
  op: 'PUT' | 'REMOVE';
  bucket: string;
  sourceTable: string;
  replicaKey: string;
  subkey: string;
  /** Output table and row id. */
  table: string;
  rowId: string;
  checksum: number;
  /** PUT: the row's JSON; REMOVE: null. */
  data: string | null;
}

/** One parameter lookup entry to insert (`outputs` `[]`: the row left the lookup). */
export interface BufferedLookup {
  id: bigint;
  sourceTable: string;
  replicaKey: string;
  lookup: string;
  outputs: string;
}

/** Everything one flush writes, in one transaction. */
export interface FlushBuffers {
  ops: BufferedOp[];
  lookups: BufferedLookup[];
  bucketTotals: BucketTotals;
  rows: ChangedRow[];
  /** Highest op id handed out for this flush (0n when none): recorded so the next checkpoint includes it. */
  maxOpId: bigint;
}

/** How a storage module tunes its batch: group and flush sizes, id block size, and flush overlap. */
export interface ReplicationBatchLimits {
  /** Row changes evaluated together (one bulk read of their current data). */
  evaluateRows: number;
  /** A flush is triggered at this many buffered ops plus lookups, or this many changed rows… */
  flushOps: number;
  /** …or this many characters of row data. */
  flushDataChars: number;
  /** Op ids are reserved at least this many at a time. */
  minIdBlock: number;
  /** Current rows of a truncated table read at a time. */
  truncatePage: number;
  /** Rows whose state is kept in memory across flushes; beyond this, only the rows of the flush being written. */
  maxCachedRows: number;
  /**
   * Start writing a flush and return once the PREVIOUS one is written, so evaluating the next rows overlaps with
   * the write. Flushes stay strictly sequential; `flush()` and checkpoints wait for the last one.
   */
  overlapFlushes: boolean;
}

/** Limits a module does not override: sized for one Postgres transaction per flush. */
export const DEFAULT_BATCH_LIMITS: ReplicationBatchLimits = {
  evaluateRows: 5_000,
  flushOps: 10_000,
  flushDataChars: 5 * 1024 * 1024,
  minIdBlock: 10_000,
  truncatePage: 5_000,
  maxCachedRows: 100_000,
  overlapFlushes: true
};

export type CheckpointWriteResult = { created: boolean; blocked?: StreamCheckpointState };

/** The row changes a source change amounts to: an update that changes the replica identity is a delete and an insert. */
export function rowChangesOf(change: RowChange): PendingRowChange[] {
  if (change.kind === 'update' && change.beforeKey) {
    const before = replicaKeyOf(change.table, change.beforeKey);
    const after = replicaKeyOf(change.table, change.after);
    if (before !== after) {
      return [
        {
          table: change.table,
          replicaKey: before,
          change: { kind: 'delete', table: change.table, beforeKey: change.beforeKey }
        },
        { table: change.table, replicaKey: after, change: { kind: 'insert', table: change.table, after: change.after } }
      ];
    }
  }
  const key = change.kind === 'delete' ? change.beforeKey : change.after;
  return [{ table: change.table, replicaKey: replicaKeyOf(change.table, key), change }];
}

/** Whether two row states are the same (then current data needs no write). */
export function sameRowState(a: CurrentRowState | null, b: CurrentRowState | null): boolean {
  if (a === null || b === null) return a === b;
  if (a.buckets.length !== b.buckets.length || a.lookups.length !== b.lookups.length) return false;
  for (let i = 0; i < a.buckets.length; i++) {
    const x = a.buckets[i]!;
    const y = b.buckets[i]!;
    if (x.bucket !== y.bucket || x.table !== y.table || x.id !== y.id) return false;
  }
  return a.lookups.every((lookup, i) => lookup === b.lookups[i]);
}

/**
 * A block of reserved op ids, handed out in order. Ids left in a block when a new one is reserved are dropped: ids
 * only need to increase, gaps are fine.
 */
export class OpIdBlock {
  private next = 1n;
  private end = 0n;

  /** How many ids to reserve so that `count` are available; 0 when enough are left. */
  toReserve(count: number, minBlock: number): bigint {
    if (this.end - this.next + 1n >= BigInt(count)) return 0n;
    return BigInt(Math.max(count, minBlock));
  }

  /** The block `first`..`first + size − 1` was reserved. */
  reserved(first: bigint, size: bigint): void {
    this.next = first;
    this.end = first + size - 1n;
  }

  take(): bigint {
    if (this.next > this.end) throw new Error('internal error: op ids were not reserved');
    return this.next++;
  }
}

const rowKey = (tableId: string, replicaKey: string) => `${tableId}\u0000${replicaKey}`;

/**
 * The replication batch of one stream. `save` queues changes; they are evaluated in groups (one bulk read of the
 * rows' current data, then `evaluateRowChange` in order), their ops get ids from reserved blocks, and a flush writes
 * everything buffered in ONE transaction of the storage (`writeFlush`), including the highest op id so that the next
 * checkpoint includes the flushed ops even after a crash.
 */
export abstract class ReplicationBatch implements BucketStorageBatch {
  skippedRows = 0;

  private pending: PendingRowChange[] = [];
  /** Current state of rows seen (null: the row is in no bucket and no lookup). */
  private cache = new Map<string, CurrentRowState | null>();
  private changedRows = new Map<string, ChangedRow>();
  private ops: BufferedOp[] = [];
  private lookups: BufferedLookup[] = [];
  private bucketTotals = new BucketTotals();
  private dataChars = 0;
  private bufferedMaxId = 0n;
  private readonly ids = new OpIdBlock();
  /** Highest op id this batch has persisted. */
  private flushedMaxId = 0n;
  /** The flush being written, if any (`overlapFlushes`). */
  private inflight: Promise<void> | null = null;
  private readonly blockedLog: BlockedCheckpointLog;
  private readonly limits: ReplicationBatchLimits;

  protected constructor(
    protected readonly groupId: number,
    private readonly syncRules: SyncRules,
    limits: Partial<ReplicationBatchLimits>,
    protected readonly logger?: Logger
  ) {
    this.limits = { ...DEFAULT_BATCH_LIMITS, ...limits };
    this.blockedLog = new BlockedCheckpointLog(groupId, logger);
  }

  /** Stored current data of these rows (rows without any are absent). */
  protected abstract loadCurrentRows(keys: CurrentRowKey[]): Promise<CurrentRow[]>;
  /** Stored current rows of a table with replica key > `after` (all when null), in key order, at most `limit`. */
  protected abstract readTableRows(table: SourceTableRef, after: string | null, limit: number): Promise<CurrentRow[]>;
  /** Reserves `size` consecutive op ids from the storage's sequence; returns the first. */
  protected abstract reserveOpIds(size: bigint): Promise<bigint>;
  /** Writes one flush in one transaction (still invisible to readers: no checkpoint is created). */
  protected abstract writeFlush(buffers: FlushBuffers): Promise<void>;
  /**
   * Creates a checkpoint at `lsn` if `planCheckpoint` allows (in one transaction), given the highest op id this
   * batch flushed; returns whether one was created, and the stream state when checkpoints are blocked.
   */
  protected abstract writeCheckpoint(
    lsn: Lsn,
    keepalive: boolean,
    lastFlushedOp: bigint
  ): Promise<CheckpointWriteResult>;

  async save(change: RowChange): Promise<void> {
    this.pending.push(...rowChangesOf(change));
    if (this.pending.length < this.limits.evaluateRows) return;
    await this.evaluatePending();
    if (
      this.bufferedOps() >= this.limits.flushOps ||
      this.changedRows.size >= this.limits.flushOps ||
      this.dataChars >= this.limits.flushDataChars
    )
      await this.flushBuffers();
  }

  async truncate(tables: SourceTableRef[]): Promise<void> {
    await this.flush();
    for (const table of tables) {
      // Each page is flushed before the next is read, so reading continues after the last key of the page.
      let after: string | null = null;
      for (;;) {
        const rows = await this.readTableRows(table, after, this.limits.truncatePage);
        if (rows.length === 0) break;
        for (const row of rows) {
          this.cache.set(rowKey(table.id, row.replicaKey), row.state);
          this.pending.push({ table, replicaKey: row.replicaKey, change: { kind: 'delete', table, beforeKey: {} } });
        }
        after = rows.at(-1)!.replicaKey;
        await this.evaluatePending();
        if (this.bufferedOps() >= this.limits.flushOps) await this.flushBuffers();
      }
    }
    await this.flush();
  }

  async flush(): Promise<void> {
    await this.evaluatePending();
    await this.flushBuffers();
    await this.awaitInflight();
  }

  commit(lsn: Lsn): Promise<boolean> {
    return this.checkpoint(lsn, false);
  }

  keepalive(lsn: Lsn): Promise<boolean> {
    return this.checkpoint(lsn, true);
  }

  private bufferedOps(): number {
    return this.ops.length + this.lookups.length;
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
      const previous = this.cache.get(key) ?? null;
      const result = evaluateRowChange(this.syncRules, item.change, previous, subkey);
      this.cache.set(key, result.state);
      // Most updates keep a row in the same buckets and lookups: then current data needs no write.
      if (!sameRowState(previous, result.state)) {
        this.changedRows.set(key, { tableId: item.table.id, replicaKey: item.replicaKey, state: result.state });
      }
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
    const size = this.ids.toReserve(needed, this.limits.minIdBlock);
    if (size > 0n) this.ids.reserved(await this.reserveOpIds(size), size);

    for (const { item, result } of results) {
      const source = { sourceTable: item.table.id, replicaKey: item.replicaKey };
      for (const put of result.puts)
        this.bufferOp({
          op: 'PUT',
          ...source,
          bucket: put.bucket,
          subkey: put.subkey,
          table: put.table,
          rowId: put.id,
          checksum: put.checksum,
          data: put.data
        });
      for (const remove of result.removes)
        this.bufferOp({
          op: 'REMOVE',
          ...source,
          bucket: remove.bucket,
          subkey: remove.subkey,
          table: remove.table,
          rowId: remove.id,
          checksum: remove.checksum,
          data: null
        });
      for (const entry of result.lookups)
        this.lookups.push({
          id: this.nextId(),
          ...source,
          lookup: entry.serializedLookup,
          outputs: serializeParameterRows(entry.outputs)
        });
      for (const lookup of result.removedLookups)
        this.lookups.push({ id: this.nextId(), ...source, lookup, outputs: '[]' });
    }
  }

  private async loadCurrentData(pending: PendingRowChange[]): Promise<void> {
    const keys: CurrentRowKey[] = [];
    const asked = new Set<string>();
    for (const item of pending) {
      const key = rowKey(item.table.id, item.replicaKey);
      if (this.cache.has(key) || asked.has(key)) continue;
      asked.add(key);
      keys.push({ tableId: item.table.id, replicaKey: item.replicaKey });
    }
    if (keys.length === 0) return;
    const rows = await this.loadCurrentRows(keys);
    for (const key of asked) this.cache.set(key, null);
    for (const row of rows) this.cache.set(rowKey(row.tableId, row.replicaKey), row.state);
  }

  private nextId(): bigint {
    const id = this.ids.take();
    if (id > this.bufferedMaxId) this.bufferedMaxId = id;
    return id;
  }

  private bufferOp(op: Omit<BufferedOp, 'id'>): void {
    const id = this.nextId();
    this.ops.push({ id, ...op });
    if (op.data !== null) this.dataChars += op.data.length;
    this.bucketTotals.add(op.bucket, op.checksum, id);
  }

  /** Writes (or, with `overlapFlushes`, starts writing) everything buffered; waits for the previous flush first. */
  private async flushBuffers(): Promise<void> {
    await this.awaitInflight();
    if (this.ops.length === 0 && this.lookups.length === 0 && this.changedRows.size === 0) return;
    const buffers: FlushBuffers = {
      ops: this.ops,
      lookups: this.lookups,
      bucketTotals: this.bucketTotals,
      rows: [...this.changedRows.values()],
      maxOpId: this.bufferedMaxId
    };
    // Every earlier flush is written, so current data holds the state of every row not in this flush: the cache may
    // forget those (bounded memory). Rows of this flush stay cached until it is written.
    if (this.cache.size > this.limits.maxCachedRows) {
      const kept = new Map<string, CurrentRowState | null>();
      for (const key of this.changedRows.keys()) kept.set(key, this.cache.get(key) ?? null);
      this.cache = kept;
    }
    this.ops = [];
    this.lookups = [];
    this.bucketTotals = new BucketTotals();
    this.changedRows = new Map();
    this.dataChars = 0;

    const write = this.writeFlush(buffers).then(() => {
      if (buffers.maxOpId > this.flushedMaxId) this.flushedMaxId = buffers.maxOpId;
    });
    if (!this.limits.overlapFlushes) return write;
    write.catch(() => undefined); // observed by awaitInflight
    this.inflight = write;
  }

  private async awaitInflight(): Promise<void> {
    const inflight = this.inflight;
    if (!inflight) return;
    await inflight;
    if (this.inflight === inflight) this.inflight = null;
  }

  /** PROTOCOL §8.3: flush, then create a checkpoint at `lsn` when allowed. */
  private async checkpoint(lsnText: Lsn, keepalive: boolean): Promise<boolean> {
    const lsn = normalizeLsn(lsnText);
    await this.flush();
    const outcome = await this.writeCheckpoint(lsn, keepalive, this.flushedMaxId);
    if (outcome.blocked) this.blockedLog.blocked(lsn, outcome.blocked);
    return outcome.created;
  }
}
