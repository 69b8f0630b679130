import { checksum, normalizeLsn, opId, type Lsn } from '@syncpoint/codecs';
import {
  bucketChecksumAtCheckpoint,
  StreamStorageBase,
  type BucketChecksum,
  type BucketOp,
  type CompactOptions,
  type CompactResult,
  type Logger,
  type OplogEntry,
  type OpType,
  type ReplicationCheckpoint,
  type ReplicationState,
  type ReplicationStream,
  type ReplicationStreamStorage,
  type SnapshotTableState
} from '@syncpoint/service-core';
import type { SyncRules } from '@syncpoint/sync-rules';
import type pg from 'pg';
import { compactStream } from './postgres-compaction.js';
import { PostgresBatch } from './postgres-batch.js';
import { inTransaction } from './pg-transaction.js';
import type { PostgresReplicationLeadership } from './replication-leadership.js';

interface BucketDataRow {
  ord: bigint;
  op_id: bigint;
  op: OpType;
  table_name: string | null;
  row_id: string | null;
  source_key: string | null;
  checksum: bigint;
  data: string | null;
  target_op: bigint | null;
}

const lsnOrNull = (text: string | null): Lsn | null => (text === null ? null : normalizeLsn(text));

function toOplogEntry(row: BucketDataRow): OplogEntry {
  if (row.op === 'PUT' || row.op === 'REMOVE') {
    return {
      op_id: row.op_id,
      op: row.op,
      object_type: row.table_name ?? '',
      object_id: row.row_id ?? '',
      subkey: row.source_key ?? '',
      data: row.op === 'PUT' ? row.data : null,
      checksum: checksum.fromPgInt8(row.checksum)
    };
  }
  return {
    op_id: row.op_id,
    op: row.op,
    data: null,
    checksum: checksum.fromPgInt8(row.checksum),
    target_op: row.target_op
  };
}

/** One replication stream's data in Postgres storage (PROTOCOL §8); `group_id` is the stream id. */
export class PostgresStreamStorage extends StreamStorageBase<pg.Pool> implements ReplicationStreamStorage {
  constructor(
    pool: pg.Pool,
    stream: ReplicationStream,
    syncRules: SyncRules,
    logger?: Logger,
    /** Fences the replication writes below (issue 12 item 2); absent: unfenced (no election takes part). */
    private readonly leadership?: PostgresReplicationLeadership
  ) {
    super(pool, stream, syncRules, logger);
  }

  protected createBatch(): PostgresBatch {
    return new PostgresBatch(this.pool, this.groupId, this.syncRules, this.logger, this.leadership);
  }

  /** A replication write of one or more statements, refused in its own transaction when leadership was lost. */
  private fencedWrite<T>(write: (client: pg.ClientBase) => Promise<T>): Promise<T> {
    return inTransaction(this.pool, async (client) => {
      await this.leadership?.fence(client);
      return write(client);
    });
  }

  /** The pool every read and write of the stream goes through. */
  private get pool(): pg.Pool {
    return this.driver;
  }

  async getReplicationState(): Promise<ReplicationState> {
    const { rows } = await this.pool.query<{
      slot_name: string | null;
      snapshot_done: boolean;
      last_checkpoint: bigint | null;
      lsn: string | null;
      no_checkpoint_before: string | null;
    }>(
      `SELECT slot_name, snapshot_done, last_checkpoint, last_checkpoint_lsn::text AS lsn, no_checkpoint_before::text AS no_checkpoint_before
       FROM powersync.sync_rules WHERE id = $1`,
      [this.groupId]
    );
    const stream = rows[0];
    if (!stream) throw new Error(`replication stream ${this.groupId} does not exist`);
    const tables = await this.pool.query<{
      table_id: string;
      schema_name: string;
      table_name: string;
      replica_id_columns: string[];
      done: boolean;
      rows_done: bigint;
      last_key: string | null;
    }>(
      `SELECT table_id, schema_name, table_name, replica_id_columns, done, rows_done, last_key
       FROM powersync.snapshot_progress WHERE group_id = $1 ORDER BY table_id`,
      [this.groupId]
    );
    return {
      slotName: stream.slot_name,
      snapshotDone: stream.snapshot_done,
      lastCheckpoint: { checkpoint: stream.last_checkpoint ?? 0n, lsn: lsnOrNull(stream.lsn) },
      noCheckpointBefore: lsnOrNull(stream.no_checkpoint_before),
      tables: tables.rows.map((row) => ({
        table: {
          id: row.table_id,
          schema: row.schema_name,
          name: row.table_name,
          replicaIdColumns: row.replica_id_columns
        },
        done: row.done,
        rowsDone: Number(row.rows_done),
        lastKey: row.last_key
      }))
    };
  }

  async setSlotName(slotName: string): Promise<void> {
    await this.fencedWrite((client) =>
      client.query(`UPDATE powersync.sync_rules SET slot_name = $2 WHERE id = $1`, [this.groupId, slotName])
    );
  }

  async saveSnapshotProgress(state: SnapshotTableState): Promise<void> {
    await this.fencedWrite((client) =>
      client.query(
        `INSERT INTO powersync.snapshot_progress
         (group_id, table_id, schema_name, table_name, replica_id_columns, done, rows_done, last_key)
       VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7, $8)
       ON CONFLICT (group_id, table_id) DO UPDATE SET
         schema_name = excluded.schema_name, table_name = excluded.table_name,
         replica_id_columns = excluded.replica_id_columns, done = excluded.done,
         rows_done = excluded.rows_done, last_key = excluded.last_key`,
        [
          this.groupId,
          state.table.id,
          state.table.schema,
          state.table.name,
          JSON.stringify(state.table.replicaIdColumns),
          state.done,
          state.rowsDone,
          state.lastKey
        ]
      )
    );
  }

  async markSnapshotDone(noCheckpointBefore: Lsn): Promise<void> {
    await this.fencedWrite((client) =>
      client.query(
        `UPDATE powersync.sync_rules SET snapshot_done = true, no_checkpoint_before = $2::pg_lsn WHERE id = $1`,
        [this.groupId, normalizeLsn(noCheckpointBefore)]
      )
    );
  }

  async clear(): Promise<void> {
    await this.fencedWrite(async (client) => {
      for (const table of ['bucket_data', 'bucket_state', 'current_data', 'bucket_parameters', 'snapshot_progress']) {
        await client.query(`DELETE FROM powersync.${table} WHERE group_id = $1`, [this.groupId]);
      }
      await client.query(
        `UPDATE powersync.sync_rules SET snapshot_done = false, last_checkpoint = NULL, last_checkpoint_lsn = NULL,
           no_checkpoint_before = NULL, keepalive_op = NULL, snapshot_lsn = NULL
         WHERE id = $1`,
        [this.groupId]
      );
    });
  }

  async getCheckpoint(): Promise<ReplicationCheckpoint> {
    const { rows } = await this.pool.query<{ last_checkpoint: bigint | null; lsn: string | null }>(
      `SELECT last_checkpoint, last_checkpoint_lsn::text AS lsn FROM powersync.sync_rules WHERE id = $1`,
      [this.groupId]
    );
    return { checkpoint: rows[0]?.last_checkpoint ?? 0n, lsn: lsnOrNull(rows[0]?.lsn ?? null) };
  }

  /**
   * bucket_state holds each bucket's running sum and count over ALL its ops (committed or not); the ops above the
   * checkpoint, (checkpoint, last_op], are subtracted with an index range scan on the primary key. One statement for
   * any number of buckets; a bucket with 1M ops costs only the ops written since the checkpoint.
   */
  async getChecksums(checkpoint: bigint, buckets: string[]): Promise<Map<string, BucketChecksum>> {
    const result = new Map<string, BucketChecksum>();
    if (buckets.length === 0) return result;
    const { rows } = await this.pool.query<{
      bucket_name: string;
      checksum_sum: bigint;
      op_count: bigint;
      above_sum: bigint;
      above_count: bigint;
    }>(
      `SELECT s.bucket_name, s.checksum_sum, s.op_count, a.above_sum, a.above_count
       FROM powersync.bucket_state s
       CROSS JOIN LATERAL (
         SELECT coalesce(sum(b.checksum), 0)::int8 AS above_sum, count(*) AS above_count
         FROM powersync.bucket_data b
         WHERE b.group_id = s.group_id AND b.bucket_name = s.bucket_name AND b.op_id > $3::int8 AND b.op_id <= s.last_op
       ) a
       WHERE s.group_id = $1 AND s.bucket_name = ANY($2::text[])`,
      [this.groupId, buckets, opId.toPgInt8(checkpoint)]
    );
    for (const row of rows) {
      const checksum = bucketChecksumAtCheckpoint(
        row.bucket_name,
        { checksumSum: row.checksum_sum, count: row.op_count },
        { checksumSum: row.above_sum, count: row.above_count }
      );
      if (checksum) result.set(row.bucket_name, checksum);
    }
    return result;
  }

  protected async *readBucketOps(
    checkpoint: bigint,
    start: Map<string, bigint>,
    limit: number
  ): AsyncIterable<BucketOp> {
    // Name order as JavaScript sorts, independent of the database collation.
    const buckets = [...start.keys()].sort();
    // Each bucket's ops come from its own primary-key range scan (LATERAL, in the order of the input array); the
    // nested loop stops as soon as `limit` rows are found, so buckets past the limit are never read.
    const { rows } = await this.pool.query<BucketDataRow>(
      `SELECT s.ord, b.op_id, b.op, b.table_name, b.row_id, b.source_key, b.checksum, b.data, b.target_op
       FROM unnest($2::text[], $3::int8[]) WITH ORDINALITY AS s(bucket_name, after, ord)
       CROSS JOIN LATERAL (
         SELECT op_id, op, table_name, row_id, source_key, checksum, data, target_op
         FROM powersync.bucket_data
         WHERE group_id = $1 AND bucket_name = s.bucket_name AND op_id > s.after AND op_id <= $4::int8
         ORDER BY op_id
         LIMIT $5
       ) b
       LIMIT $5`,
      [
        this.groupId,
        buckets,
        buckets.map((bucket) => opId.toPgInt8(start.get(bucket)!)),
        opId.toPgInt8(checkpoint),
        limit
      ]
    );
    rows.sort((x, y) =>
      x.ord !== y.ord ? (x.ord < y.ord ? -1 : 1) : x.op_id < y.op_id ? -1 : x.op_id > y.op_id ? 1 : 0
    );
    for (const row of rows) yield { bucket: buckets[Number(row.ord) - 1]!, entry: toOplogEntry(row) };
  }

  protected async readParameterEntries(
    checkpoint: bigint,
    lookups: string[]
  ): Promise<Array<{ lookup: string; bucketParameters: string }>> {
    const { rows } = await this.pool.query<{ lookup: string; bucket_parameters: string }>(
      `SELECT DISTINCT ON (lookup, source_table, source_key) lookup, bucket_parameters
       FROM powersync.bucket_parameters
       WHERE group_id = $1 AND lookup = ANY($2::text[]) AND id <= $3::int8
       ORDER BY lookup, source_table, source_key, id DESC`,
      [this.groupId, lookups, opId.toPgInt8(checkpoint)]
    );
    return rows.map((row) => ({ lookup: row.lookup, bucketParameters: row.bucket_parameters }));
  }

  compact(options: CompactOptions = {}): Promise<CompactResult> {
    return compactStream(this.pool, this.groupId, options);
  }
}
