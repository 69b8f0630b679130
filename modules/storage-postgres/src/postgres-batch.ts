import { compareLsn, normalizeLsn, type Lsn } from '@syncpoint/codecs';
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
import type pg from 'pg';
import { CHECKPOINT_CHANNEL, inTransaction, MARK_PROCESSED_SQL, U32 } from './pg-transaction.js';
import type { PostgresReplicationLeadership } from './replication-leadership.js';

/** Row changes evaluated together (one bulk read of their current_data). */
const EVALUATE_ROWS = 5_000;
/** A flush is triggered at this many buffered ops (plus lookups)… */
const FLUSH_OPS = 10_000;
/** …or this many characters of row data. */
const FLUSH_DATA_CHARS = 5 * 1024 * 1024;
/** Op ids are reserved from the sequence at least this many at a time. */
const MIN_ID_BLOCK = 10_000;
/** pg_advisory_xact_lock key serialising op id range reservations. */
const OP_ID_LOCK_KEY = 7_240_003;
const WAITING_LOG_INTERVAL_MS = 5_000;

interface PendingChange {
  table: SourceTableRef;
  replicaKey: string;
  change: RowChange;
}

interface StreamRow {
  state: string;
  snapshot_done: boolean;
  last_checkpoint: bigint | null;
  lsn: string | null;
  no_checkpoint_before: string | null;
  keepalive_op: bigint | null;
}

function sameRowState(a: CurrentRowState | null, b: CurrentRowState | null): boolean {
  if (a === null || b === null) return a === b;
  if (a.buckets.length !== b.buckets.length || a.lookups.length !== b.lookups.length) return false;
  for (let i = 0; i < a.buckets.length; i++) {
    const x = a.buckets[i]!;
    const y = b.buckets[i]!;
    if (x.bucket !== y.bucket || x.table !== y.table || x.id !== y.id) return false;
  }
  return a.lookups.every((lookup, i) => lookup === b.lookups[i]);
}

/** Rows whose current state the batch keeps in memory across flushes (beyond this, only unflushed ones). */
const MAX_CACHED_ROWS = 100_000;

interface FlushData {
  opBuckets: string[];
  opIds: string[];
  opTypes: string[];
  opSourceTables: string[];
  opSubkeys: string[];
  opTables: string[];
  opRowIds: string[];
  opChecksums: number[];
  opData: Array<string | null>;
  bucketTotals: Map<string, { sum: number; count: number; last: bigint }>;
  paramIds: string[];
  paramSourceTables: string[];
  paramSourceKeys: string[];
  paramLookups: string[];
  paramValues: string[];
  dirty: Map<string, { tableId: string; replicaKey: string; state: CurrentRowState | null }>;
  maxId: bigint;
}

const rowKey = (tableId: string, replicaKey: string) => `${tableId}\u0000${replicaKey}`;

/**
 * The replication batch of one stream (PROTOCOL §8.3). `save` queues changes; they are evaluated in groups (one
 * bulk read of the rows' current_data, then `evaluateRowChange` in order), their ops get ids from blocks reserved
 * from `op_id_sequence`, and a flush writes everything buffered in ONE transaction: bucket_data, bucket_state
 * increments, current_data, bucket_parameters, and `keepalive_op` on the stream.
 *
 * Crash safety: flushed ops have ids above the stream's `last_checkpoint`, so readers never see them until a
 * checkpoint includes them. If the process dies after a flush and before `commit`, nothing is deleted on restart:
 * current_data already reflects those ops (deleting them would leave current_data claiming memberships whose ops are
 * gone), replication re-processes the source transaction from the last checkpoint's lsn (producing PUTs again,
 * which are idempotent for clients), and the flush recorded its highest id in `keepalive_op`, so the next checkpoint
 * (`max(last_checkpoint, keepalive_op, …)`) makes the earlier ops visible together with the re-processed ones.
 */
export class PostgresBatch implements BucketStorageBatch {
  skippedRows = 0;

  private pending: PendingChange[] = [];
  /** Current state of rows seen since the last flush (null: the row is in no bucket and no lookup). */
  private cache = new Map<string, CurrentRowState | null>();
  private dirty = new Map<string, { tableId: string; replicaKey: string; state: CurrentRowState | null }>();

  // bucket_data columns, buffered
  private opBuckets: string[] = [];
  private opIds: string[] = [];
  private opTypes: string[] = [];
  private opSourceTables: string[] = [];
  private opSubkeys: string[] = [];
  private opTables: string[] = [];
  private opRowIds: string[] = [];
  private opChecksums: number[] = [];
  private opData: Array<string | null> = [];
  private dataChars = 0;
  private bucketTotals = new Map<string, { sum: number; count: number; last: bigint }>();

  // bucket_parameters columns, buffered
  private paramIds: string[] = [];
  private paramSourceTables: string[] = [];
  private paramSourceKeys: string[] = [];
  private paramLookups: string[] = [];
  private paramValues: string[] = [];

  /** The reserved, unused op ids: reservedNext..reservedEnd (empty when next > end). */
  private reservedNext = 1n;
  private reservedEnd = 0n;
  private bufferedMaxId = 0n;
  /** Highest id this batch has persisted. */
  private lastFlushedId = 0n;
  private lastWaitingLog = 0;
  /** The flush being written, if any. */
  private inflight: Promise<void> | null = null;

  constructor(
    private readonly pool: pg.Pool,
    private readonly groupId: number,
    private readonly syncRules: SyncRules,
    private readonly logger?: Logger,
    /** Refuses flushes and checkpoints once this process lost replication leadership (issue 12 item 2). */
    private readonly leadership?: PostgresReplicationLeadership
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
      let after = '';
      for (;;) {
        const { rows } = await this.pool.query<{
          source_key: string;
          buckets: CurrentRowState['buckets'];
          lookups: string[];
        }>(
          `SELECT source_key, buckets, lookups FROM powersync.current_data
           WHERE group_id = $1 AND source_table = $2 AND source_key > $3
           ORDER BY source_key LIMIT 5000`,
          [this.groupId, table.id, after]
        );
        if (rows.length === 0) break;
        for (const row of rows) {
          this.cache.set(rowKey(table.id, row.source_key), { buckets: row.buckets, lookups: row.lookups });
          this.pending.push({ table, replicaKey: row.source_key, change: { kind: 'delete', table, beforeKey: {} } });
        }
        after = rows.at(-1)!.source_key;
        await this.evaluatePending();
        if (this.bufferedOps() >= FLUSH_OPS) await this.flushBuffers();
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
    return this.opIds.length + this.paramIds.length;
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
      const previous = this.cache.get(key) ?? null;
      const result = evaluateRowChange(this.syncRules, item.change, previous, subkey);
      this.cache.set(key, result.state);
      // Most updates keep a row in the same buckets and lookups: then current_data needs no write.
      if (!sameRowState(previous, result.state)) {
        this.dirty.set(key, { tableId: item.table.id, replicaKey: item.replicaKey, state: result.state });
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
    await this.reserveIds(needed);

    for (const { item, result } of results) {
      for (const put of result.puts)
        this.bufferOp('PUT', item.table.id, put.bucket, put.table, put.id, put.subkey, put.checksum, put.data);
      for (const remove of result.removes)
        this.bufferOp(
          'REMOVE',
          item.table.id,
          remove.bucket,
          remove.table,
          remove.id,
          remove.subkey,
          remove.checksum,
          null
        );
      for (const entry of result.lookups)
        this.bufferParameters(
          item.table.id,
          item.replicaKey,
          entry.serializedLookup,
          serializeParameterRows(entry.outputs)
        );
      for (const lookup of result.removedLookups) this.bufferParameters(item.table.id, item.replicaKey, lookup, '[]');
    }
  }

  private async loadCurrentData(pending: PendingChange[]): Promise<void> {
    const tables: string[] = [];
    const keys: string[] = [];
    const asked = new Set<string>();
    for (const item of pending) {
      const key = rowKey(item.table.id, item.replicaKey);
      if (this.cache.has(key) || asked.has(key)) continue;
      asked.add(key);
      tables.push(item.table.id);
      keys.push(item.replicaKey);
    }
    if (keys.length === 0) return;
    const { rows } = await this.pool.query<{
      source_table: string;
      source_key: string;
      buckets: CurrentRowState['buckets'];
      lookups: string[];
    }>(
      `SELECT c.source_table, c.source_key, c.buckets, c.lookups
       FROM unnest($2::text[], $3::text[]) AS k(source_table, source_key)
       JOIN powersync.current_data c
         ON c.group_id = $1 AND c.source_table = k.source_table AND c.source_key = k.source_key`,
      [this.groupId, tables, keys]
    );
    for (const key of asked) this.cache.set(key, null);
    for (const row of rows)
      this.cache.set(rowKey(row.source_table, row.source_key), { buckets: row.buckets, lookups: row.lookups });
  }

  /**
   * Reserves a contiguous range of ids: under a transaction-level advisory lock (every reservation takes it),
   * `nextval` gives the first id and `setval` moves the sequence past the range, a constant cost per block.
   */
  private async reserveIds(count: number): Promise<void> {
    const available = this.reservedEnd - this.reservedNext + 1n;
    if (available >= BigInt(count)) return;
    const block = BigInt(Math.max(count, MIN_ID_BLOCK));
    const first = await inTransaction(this.pool, async (client) => {
      await client.query(`SELECT pg_advisory_xact_lock(${OP_ID_LOCK_KEY})`);
      const { rows } = await client.query<{ id: bigint }>(`SELECT nextval('powersync.op_id_sequence') AS id`);
      const start = rows[0]!.id;
      await client.query(`SELECT setval('powersync.op_id_sequence', $1::int8)`, [(start + block - 1n).toString()]);
      return start;
    });
    // Ids left from the previous block are dropped: ids only need to increase, gaps are fine.
    this.reservedNext = first;
    this.reservedEnd = first + block - 1n;
  }

  private nextId(): bigint {
    if (this.reservedNext > this.reservedEnd) throw new Error('internal error: op ids were not reserved');
    const id = this.reservedNext++;
    if (id > this.bufferedMaxId) this.bufferedMaxId = id;
    return id;
  }

  private bufferOp(
    op: 'PUT' | 'REMOVE',
    sourceTable: string,
    bucket: string,
    table: string,
    rowId: string,
    subkey: string,
    checksum: number,
    data: string | null
  ): void {
    const id = this.nextId();
    this.opBuckets.push(bucket);
    this.opIds.push(id.toString());
    this.opTypes.push(op);
    this.opSourceTables.push(sourceTable);
    this.opSubkeys.push(subkey);
    this.opTables.push(table);
    this.opRowIds.push(rowId);
    this.opChecksums.push(checksum);
    this.opData.push(data);
    if (data !== null) this.dataChars += data.length;
    const totals = this.bucketTotals.get(bucket);
    if (totals) {
      totals.sum = (totals.sum + checksum) >>> 0;
      totals.count++;
      totals.last = id;
    } else {
      this.bucketTotals.set(bucket, { sum: checksum, count: 1, last: id });
    }
  }

  private bufferParameters(sourceTable: string, sourceKey: string, lookup: string, outputs: string): void {
    this.paramIds.push(this.nextId().toString());
    this.paramSourceTables.push(sourceTable);
    this.paramSourceKeys.push(sourceKey);
    this.paramLookups.push(lookup);
    this.paramValues.push(outputs);
  }

  /**
   * Starts writing everything buffered in one transaction (still invisible: no checkpoint is created) and returns
   * once the PREVIOUS flush has completed, so evaluating the next rows overlaps with this write (Node and Postgres
   * work in parallel). Flushes are strictly sequential; `flush()` and checkpoints wait for the last one.
   */
  private async flushBuffers(): Promise<void> {
    await this.awaitInflight();
    if (this.opIds.length === 0 && this.paramIds.length === 0 && this.dirty.size === 0) return;
    const data = {
      opBuckets: this.opBuckets,
      opIds: this.opIds,
      opTypes: this.opTypes,
      opSourceTables: this.opSourceTables,
      opSubkeys: this.opSubkeys,
      opTables: this.opTables,
      opRowIds: this.opRowIds,
      opChecksums: this.opChecksums,
      opData: this.opData,
      bucketTotals: this.bucketTotals,
      paramIds: this.paramIds,
      paramSourceTables: this.paramSourceTables,
      paramSourceKeys: this.paramSourceKeys,
      paramLookups: this.paramLookups,
      paramValues: this.paramValues,
      dirty: this.dirty,
      maxId: this.bufferedMaxId
    };
    // Every earlier flush is complete, so current_data holds the state of every row not in this flush: the cache
    // may forget those (bounded memory). Rows of this flush stay cached until it is written.
    if (this.cache.size > MAX_CACHED_ROWS) {
      const kept = new Map<string, CurrentRowState | null>();
      for (const key of data.dirty.keys()) kept.set(key, this.cache.get(key) ?? null);
      this.cache = kept;
    }
    this.resetBuffers();
    const write = this.writeFlush(data);
    write.catch(() => undefined); // observed by awaitInflight
    this.inflight = write;
  }

  private resetBuffers(): void {
    this.opBuckets = [];
    this.opIds = [];
    this.opTypes = [];
    this.opSourceTables = [];
    this.opSubkeys = [];
    this.opTables = [];
    this.opRowIds = [];
    this.opChecksums = [];
    this.opData = [];
    this.dataChars = 0;
    this.bucketTotals = new Map();
    this.paramIds = [];
    this.paramSourceTables = [];
    this.paramSourceKeys = [];
    this.paramLookups = [];
    this.paramValues = [];
    this.dirty = new Map();
  }

  private async awaitInflight(): Promise<void> {
    const inflight = this.inflight;
    if (!inflight) return;
    await inflight;
    if (this.inflight === inflight) this.inflight = null;
  }

  private async writeFlush(data: FlushData): Promise<void> {
    const maxId = data.maxId;
    await inTransaction(this.pool, async (client) => {
      await this.leadership?.fence(client);
      // Not waiting for the WAL flush is safe: these writes are invisible until a checkpoint, and the checkpoint's
      // own (synchronous) commit flushes the WAL up to and including them. Lost flushes are redone by replication.
      await client.query(`SET LOCAL synchronous_commit = off`);
      if (data.opIds.length > 0) {
        await client.query(
          `INSERT INTO powersync.bucket_data
             (group_id, bucket_name, op_id, op, source_table, source_key, table_name, row_id, checksum, data)
           SELECT $1, * FROM unnest($2::text[], $3::int8[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::int8[], $10::text[])`,
          [
            this.groupId,
            data.opBuckets,
            data.opIds,
            data.opTypes,
            data.opSourceTables,
            data.opSubkeys,
            data.opTables,
            data.opRowIds,
            data.opChecksums,
            data.opData
          ]
        );
        const buckets = [...data.bucketTotals.keys()];
        const totals = [...data.bucketTotals.values()];
        await client.query(
          `INSERT INTO powersync.bucket_state AS s (group_id, bucket_name, last_op, checksum_sum, op_count)
           SELECT $1, * FROM unnest($2::text[], $3::int8[], $4::int8[], $5::int8[])
           ON CONFLICT (group_id, bucket_name) DO UPDATE SET
             last_op = greatest(s.last_op, excluded.last_op),
             checksum_sum = (s.checksum_sum + excluded.checksum_sum) % ${U32},
             op_count = s.op_count + excluded.op_count`,
          [
            this.groupId,
            buckets,
            totals.map((t) => t.last.toString()),
            totals.map((t) => t.sum),
            totals.map((t) => t.count)
          ]
        );
      }
      if (data.dirty.size > 0) {
        const gone = [...data.dirty.values()].filter((row) => row.state === null);
        const kept = [...data.dirty.values()].filter((row) => row.state !== null);
        if (gone.length > 0) {
          await client.query(
            `DELETE FROM powersync.current_data c USING unnest($2::text[], $3::text[]) AS k(source_table, source_key)
             WHERE c.group_id = $1 AND c.source_table = k.source_table AND c.source_key = k.source_key`,
            [this.groupId, gone.map((row) => row.tableId), gone.map((row) => row.replicaKey)]
          );
        }
        if (kept.length > 0) {
          await client.query(
            `INSERT INTO powersync.current_data AS c (group_id, source_table, source_key, buckets, lookups)
             SELECT $1, k.source_table, k.source_key, k.buckets::jsonb, k.lookups::jsonb
             FROM unnest($2::text[], $3::text[], $4::text[], $5::text[]) AS k(source_table, source_key, buckets, lookups)
             ON CONFLICT (group_id, source_table, source_key) DO UPDATE SET buckets = excluded.buckets, lookups = excluded.lookups`,
            [
              this.groupId,
              kept.map((row) => row.tableId),
              kept.map((row) => row.replicaKey),
              kept.map((row) => JSON.stringify(row.state!.buckets)),
              kept.map((row) => JSON.stringify(row.state!.lookups))
            ]
          );
        }
      }
      if (data.paramIds.length > 0) {
        await client.query(
          `INSERT INTO powersync.bucket_parameters (id, group_id, source_table, source_key, lookup, bucket_parameters)
           SELECT k.id, $1, k.source_table, k.source_key, k.lookup, k.bucket_parameters
           FROM unnest($2::int8[], $3::text[], $4::text[], $5::text[], $6::text[]) AS k(id, source_table, source_key, lookup, bucket_parameters)`,
          [
            this.groupId,
            data.paramIds,
            data.paramSourceTables,
            data.paramSourceKeys,
            data.paramLookups,
            data.paramValues
          ]
        );
      }
      if (maxId > 0n) {
        // The next checkpoint of this stream includes everything flushed, even after a crash (see the class doc).
        await client.query(
          `UPDATE powersync.sync_rules SET keepalive_op = greatest(coalesce(keepalive_op, 0), $2::int8) WHERE id = $1`,
          [this.groupId, maxId.toString()]
        );
      }
    });
    if (maxId > this.lastFlushedId) this.lastFlushedId = maxId;
  }

  /** PROTOCOL §8.3: flush, then create a checkpoint at `lsn` when allowed, in one transaction. */
  private async checkpoint(lsnText: Lsn, keepalive: boolean): Promise<boolean> {
    const lsn = normalizeLsn(lsnText);
    await this.flush();
    const outcome = await inTransaction(this.pool, async (client) => {
      await this.leadership?.fence(client);
      const { rows } = await client.query<StreamRow>(
        `SELECT state, snapshot_done, last_checkpoint, last_checkpoint_lsn::text AS lsn,
                no_checkpoint_before::text AS no_checkpoint_before, keepalive_op
         FROM powersync.sync_rules WHERE id = $1 FOR UPDATE`,
        [this.groupId]
      );
      const stream = rows[0];
      if (!stream) throw new Error(`replication stream ${this.groupId} does not exist`);
      const canCheckpoint =
        stream.snapshot_done &&
        (stream.lsn === null || compareLsn(stream.lsn, lsn) <= 0) &&
        (stream.no_checkpoint_before === null || compareLsn(stream.no_checkpoint_before, lsn) <= 0);
      if (!canCheckpoint) {
        // keepalive_op already holds every flushed op id (flushBuffers), so they come with the first allowed checkpoint.
        return { created: false as const, waiting: stream };
      }

      const processed = await client.query(MARK_PROCESSED_SQL, [lsn]);
      const previous = stream.last_checkpoint ?? 0n;
      let next = previous;
      for (const candidate of [stream.keepalive_op ?? 0n, this.lastFlushedId]) if (candidate > next) next = candidate;
      const needed =
        keepalive ||
        next > previous ||
        (processed.rowCount ?? 0) > 0 ||
        stream.lsn === null ||
        stream.state === 'PROCESSING';
      // An empty commit (e.g. the WAL of our own checkpoint writes when source and storage share a database)
      // writes nothing: no notification, so no feedback loop.
      if (!needed) return { created: false as const };

      const activate = stream.state === 'PROCESSING';
      const state = activate ? 'ACTIVE' : stream.state;
      await client.query(
        `UPDATE powersync.sync_rules SET
           last_checkpoint = $2::int8, last_checkpoint_lsn = $3::pg_lsn, keepalive_op = NULL, snapshot_lsn = NULL,
           last_fatal_error = NULL, state = $4,
           last_checkpoint_ts = CASE WHEN $5::bool THEN now() ELSE last_checkpoint_ts END,
           last_keepalive_ts = now()
         WHERE id = $1`,
        [this.groupId, next.toString(), lsn, state, next > previous || stream.last_checkpoint === null]
      );
      if (activate) {
        await client.query(`UPDATE powersync.sync_rules SET state = 'STOP' WHERE state = 'ACTIVE' AND id < $1`, [
          this.groupId
        ]);
      }
      if (state === 'ACTIVE' || state === 'ERRORED') {
        const payload = JSON.stringify({
          active_checkpoint: { id: this.groupId, last_checkpoint: next.toString(), last_checkpoint_lsn: lsn }
        });
        await client.query(`SELECT pg_notify($1, $2)`, [CHECKPOINT_CHANNEL, payload]);
      }
      return { created: true as const };
    });
    if ('waiting' in outcome && outcome.waiting && Date.now() - this.lastWaitingLog > WAITING_LOG_INTERVAL_MS) {
      this.lastWaitingLog = Date.now();
      const stream = outcome.waiting;
      this.logger?.info(
        {
          stream: this.groupId,
          lsn,
          snapshotDone: stream.snapshot_done,
          noCheckpointBefore: stream.no_checkpoint_before,
          lastCheckpointLsn: stream.lsn
        },
        'waiting before creating a checkpoint'
      );
    }
    return outcome.created;
  }
}
