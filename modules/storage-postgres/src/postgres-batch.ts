import { CHECKSUM_MODULUS, normalizeLsn, opId, type Lsn } from '@syncpoint/codecs';
import {
  canCheckpoint,
  planCheckpoint,
  ReplicationBatch,
  type CheckpointWriteResult,
  type CurrentRow,
  type CurrentRowKey,
  type CurrentRowState,
  type FlushBuffers,
  type Logger,
  type ReplicationStreamState,
  type SourceTableRef,
  type StreamCheckpointState
} from '@syncpoint/service-core';
import type { SyncRules } from '@syncpoint/sync-rules';
import type pg from 'pg';
import { CHECKPOINT_CHANNEL, inTransaction, MARK_PROCESSED_SQL } from './pg-transaction.js';
import type { PostgresReplicationLeadership } from './replication-leadership.js';

/** pg_advisory_xact_lock key serialising op id range reservations. */
const OP_ID_LOCK_KEY = 7_240_003;

interface StreamRow {
  state: ReplicationStreamState;
  snapshot_done: boolean;
  last_checkpoint: bigint | null;
  lsn: string | null;
  no_checkpoint_before: string | null;
  keepalive_op: bigint | null;
}

function streamCheckpointState(row: StreamRow): StreamCheckpointState {
  return {
    state: row.state,
    snapshotDone: row.snapshot_done,
    lastCheckpoint: row.last_checkpoint,
    lastCheckpointLsn: row.lsn === null ? null : normalizeLsn(row.lsn),
    noCheckpointBefore: row.no_checkpoint_before === null ? null : normalizeLsn(row.no_checkpoint_before),
    keepaliveOp: row.keepalive_op
  };
}

interface CurrentDataRow {
  source_table: string;
  source_key: string;
  buckets: CurrentRowState['buckets'];
  lookups: string[];
}

const toCurrentRow = (row: CurrentDataRow): CurrentRow => ({
  tableId: row.source_table,
  replicaKey: row.source_key,
  state: { buckets: row.buckets, lookups: row.lookups }
});

/**
 * The replication batch of one stream (PROTOCOL §8.3) in Postgres: the decisions are `ReplicationBatch`'s
 * (service-core); this class reads current_data with one `unnest` join per evaluated group, reserves op id ranges
 * from `op_id_sequence`, and writes a flush in ONE transaction: bucket_data, bucket_state increments, current_data,
 * bucket_parameters, and `keepalive_op` on the stream. Flushes overlap with evaluating the next rows.
 *
 * Crash safety: flushed ops have ids above the stream's `last_checkpoint`, so readers never see them until a
 * checkpoint includes them. If the process dies after a flush and before `commit`, nothing is deleted on restart:
 * current_data already reflects those ops (deleting them would leave current_data claiming memberships whose ops are
 * gone), replication re-processes the source transaction from the last checkpoint's lsn (producing PUTs again,
 * which are idempotent for clients), and the flush recorded its highest id in `keepalive_op`, so the next checkpoint
 * (`max(last_checkpoint, keepalive_op, …)`) makes the earlier ops visible together with the re-processed ones.
 */
export class PostgresBatch extends ReplicationBatch {
  constructor(
    private readonly pool: pg.Pool,
    groupId: number,
    syncRules: SyncRules,
    logger?: Logger,
    /** Refuses flushes and checkpoints once this process lost replication leadership (issue 12 item 2). */
    private readonly leadership?: PostgresReplicationLeadership
  ) {
    // The default limits are this module's: overlapped flushes, 100k rows cached across flushes.
    super(groupId, syncRules, {}, logger);
  }

  protected async loadCurrentRows(keys: CurrentRowKey[]): Promise<CurrentRow[]> {
    const { rows } = await this.pool.query<CurrentDataRow>(
      `SELECT c.source_table, c.source_key, c.buckets, c.lookups
       FROM unnest($2::text[], $3::text[]) AS k(source_table, source_key)
       JOIN powersync.current_data c
         ON c.group_id = $1 AND c.source_table = k.source_table AND c.source_key = k.source_key`,
      [this.groupId, keys.map((key) => key.tableId), keys.map((key) => key.replicaKey)]
    );
    return rows.map(toCurrentRow);
  }

  protected async readTableRows(table: SourceTableRef, after: string | null, limit: number): Promise<CurrentRow[]> {
    const { rows } = await this.pool.query<CurrentDataRow>(
      `SELECT source_table, source_key, buckets, lookups FROM powersync.current_data
       WHERE group_id = $1 AND source_table = $2 AND source_key > $3
       ORDER BY source_key LIMIT $4`,
      [this.groupId, table.id, after ?? '', limit]
    );
    return rows.map(toCurrentRow);
  }

  /**
   * Under a transaction-level advisory lock (every reservation takes it), `nextval` gives the first id and `setval`
   * moves the sequence past the range, a constant cost per block.
   */
  protected reserveOpIds(size: bigint): Promise<bigint> {
    return inTransaction(this.pool, async (client) => {
      await client.query(`SELECT pg_advisory_xact_lock(${OP_ID_LOCK_KEY})`);
      const { rows } = await client.query<{ id: bigint }>(`SELECT nextval('powersync.op_id_sequence') AS id`);
      const start = rows[0]!.id;
      await client.query(`SELECT setval('powersync.op_id_sequence', $1::int8)`, [opId.toPgInt8(start + size - 1n)]);
      return start;
    });
  }

  protected async writeFlush(data: FlushBuffers): Promise<void> {
    const maxId = data.maxOpId;
    await inTransaction(this.pool, async (client) => {
      await this.leadership?.fence(client);
      // Not waiting for the WAL flush is safe: these writes are invisible until a checkpoint, and the checkpoint's
      // own (synchronous) commit flushes the WAL up to and including them. Lost flushes are redone by replication.
      await client.query(`SET LOCAL synchronous_commit = off`);
      if (data.ops.length > 0) {
        await client.query(
          `INSERT INTO powersync.bucket_data
             (group_id, bucket_name, op_id, op, source_table, source_key, table_name, row_id, checksum, data)
           SELECT $1, * FROM unnest($2::text[], $3::int8[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::int8[], $10::text[])`,
          [
            this.groupId,
            data.ops.map((op) => op.bucket),
            data.ops.map((op) => opId.toPgInt8(op.id)),
            data.ops.map((op) => op.op),
            data.ops.map((op) => op.sourceTable),
            data.ops.map((op) => op.subkey),
            data.ops.map((op) => op.table),
            data.ops.map((op) => op.rowId),
            data.ops.map((op) => op.checksum),
            data.ops.map((op) => op.data)
          ]
        );
        const totals = [...data.bucketTotals.entries()];
        await client.query(
          `INSERT INTO powersync.bucket_state AS s (group_id, bucket_name, last_op, checksum_sum, op_count)
           SELECT $1, * FROM unnest($2::text[], $3::int8[], $4::int8[], $5::int8[])
           ON CONFLICT (group_id, bucket_name) DO UPDATE SET
             last_op = greatest(s.last_op, excluded.last_op),
             checksum_sum = (s.checksum_sum + excluded.checksum_sum) % ${CHECKSUM_MODULUS},
             op_count = s.op_count + excluded.op_count`,
          [
            this.groupId,
            totals.map(([bucket]) => bucket),
            totals.map(([, t]) => opId.toPgInt8(t.lastOp)),
            totals.map(([, t]) => t.checksum),
            totals.map(([, t]) => t.count)
          ]
        );
      }
      if (data.rows.length > 0) {
        const gone = data.rows.filter((row) => row.state === null);
        const kept = data.rows.filter((row) => row.state !== null);
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
      if (data.lookups.length > 0) {
        await client.query(
          `INSERT INTO powersync.bucket_parameters (id, group_id, source_table, source_key, lookup, bucket_parameters)
           SELECT k.id, $1, k.source_table, k.source_key, k.lookup, k.bucket_parameters
           FROM unnest($2::int8[], $3::text[], $4::text[], $5::text[], $6::text[]) AS k(id, source_table, source_key, lookup, bucket_parameters)`,
          [
            this.groupId,
            data.lookups.map((entry) => opId.toPgInt8(entry.id)),
            data.lookups.map((entry) => entry.sourceTable),
            data.lookups.map((entry) => entry.replicaKey),
            data.lookups.map((entry) => entry.lookup),
            data.lookups.map((entry) => entry.outputs)
          ]
        );
      }
      if (maxId > 0n) {
        // The next checkpoint of this stream includes everything flushed, even after a crash (see the class doc).
        await client.query(
          `UPDATE powersync.sync_rules SET keepalive_op = greatest(coalesce(keepalive_op, 0), $2::int8) WHERE id = $1`,
          [this.groupId, opId.toPgInt8(maxId)]
        );
      }
    });
  }

  /** PROTOCOL §8.3: create a checkpoint at `lsn` when allowed, in one transaction. */
  protected writeCheckpoint(lsn: Lsn, keepalive: boolean, lastFlushedOp: bigint): Promise<CheckpointWriteResult> {
    return inTransaction(this.pool, async (client): Promise<CheckpointWriteResult> => {
      await this.leadership?.fence(client);
      const { rows } = await client.query<StreamRow>(
        `SELECT state, snapshot_done, last_checkpoint, last_checkpoint_lsn::text AS lsn,
                no_checkpoint_before::text AS no_checkpoint_before, keepalive_op
         FROM powersync.sync_rules WHERE id = $1 FOR UPDATE`,
        [this.groupId]
      );
      const row = rows[0];
      if (!row) throw new Error(`replication stream ${this.groupId} does not exist`);
      const stream = streamCheckpointState(row);
      if (!canCheckpoint(stream, lsn)) {
        // keepalive_op already holds every flushed op id (writeFlush), so they come with the first allowed checkpoint.
        return { created: false, blocked: stream };
      }

      // Marked before planning: requests reached at this lsn need a checkpoint even when no op was written.
      const processed = await client.query(MARK_PROCESSED_SQL, [lsn]);
      const plan = planCheckpoint(stream, lsn, {
        keepalive,
        lastFlushedOp,
        pendingRequestsReached: (processed.rowCount ?? 0) > 0
      });
      // An empty commit (e.g. the WAL of our own checkpoint writes when source and storage share a database)
      // writes nothing: no notification, so no feedback loop.
      if (plan.kind !== 'checkpoint') return { created: false };
      const next = plan.checkpoint;

      const activate = plan.activate;
      const state = activate ? 'ACTIVE' : stream.state;
      await client.query(
        `UPDATE powersync.sync_rules SET
           last_checkpoint = $2::int8, last_checkpoint_lsn = $3::pg_lsn, keepalive_op = NULL, snapshot_lsn = NULL,
           last_fatal_error = NULL, state = $4,
           last_checkpoint_ts = CASE WHEN $5::bool THEN now() ELSE last_checkpoint_ts END,
           last_keepalive_ts = now()
         WHERE id = $1`,
        [this.groupId, opId.toPgInt8(next), lsn, state, plan.advanced]
      );
      if (activate) {
        await client.query(`UPDATE powersync.sync_rules SET state = 'STOP' WHERE state = 'ACTIVE' AND id < $1`, [
          this.groupId
        ]);
      }
      if (state === 'ACTIVE' || state === 'ERRORED') {
        const payload = JSON.stringify({
          active_checkpoint: { id: this.groupId, last_checkpoint: opId.encode(next), last_checkpoint_lsn: lsn }
        });
        await client.query(`SELECT pg_notify($1, $2)`, [CHECKPOINT_CHANNEL, payload]);
      }
      return { created: true };
    });
  }
}
