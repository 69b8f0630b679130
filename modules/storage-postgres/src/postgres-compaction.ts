import { checksum, opId } from '@syncpoint/codecs';
import {
  compactStreamBuckets,
  type BucketCompactionAccess,
  type CompactOptions,
  type CompactResult,
  type OpType,
  type SeenKeysLimit
} from '@syncpoint/service-core';
import type pg from 'pg';
import { inTransaction } from './pg-transaction.js';

/**
 * Keys remembered while scanning one bucket (bounds memory to roughly 100 MB). Past this no new key is remembered;
 * known keys are still recognised, so older ops of rows seen later are moved less often, never wrongly.
 */
const SEEN_KEYS_LIMIT: SeenKeysLimit = { maxSeenKeys: 500_000, whenFull: 'keep-known' };
const BUCKET_PAGE = 1_000;

/**
 * Compaction of one stream (PROTOCOL §8.4), bucket by bucket (`compactBucket`, see service-core's compaction-plan.ts
 * for the rules), touching only ops ≤ the stream's current checkpoint, reading at most `batchSize` ops at a time:
 * 1. newest → oldest: superseded PUT/REMOVE → MOVE (data dropped, checksum kept, target_op set), one UPDATE per batch;
 * 2. oldest → newest: the leading REMOVE/MOVE/CLEAR run → one CLEAR at its last op, in ONE transaction with the
 *    deletion of the older ops and the bucket_state.op_count decrement (the checksum sum is unchanged).
 */
export async function compactStream(pool: pg.Pool, groupId: number, options: CompactOptions): Promise<CompactResult> {
  const { rows } = await pool.query<{ last_checkpoint: bigint | null }>(
    `SELECT last_checkpoint FROM powersync.sync_rules WHERE id = $1`,
    [groupId]
  );
  return compactStreamBuckets(
    {
      checkpoint: rows[0]?.last_checkpoint ?? 0n,
      bucketNames: (only) => bucketNames(pool, groupId, only),
      bucket: (name) => bucketAccess(pool, groupId, name),
      seenKeysLimit: SEEN_KEYS_LIMIT
    },
    options
  );
}

async function* bucketNames(pool: pg.Pool, groupId: number, only: string[] | undefined): AsyncIterable<string> {
  if (only) {
    yield* only;
    return;
  }
  let after = '';
  for (;;) {
    const { rows } = await pool.query<{ bucket_name: string }>(
      `SELECT bucket_name FROM powersync.bucket_state WHERE group_id = $1 AND bucket_name > $2 ORDER BY bucket_name LIMIT ${BUCKET_PAGE}`,
      [groupId, after]
    );
    for (const row of rows) yield row.bucket_name;
    if (rows.length < BUCKET_PAGE) return;
    after = rows.at(-1)!.bucket_name;
  }
}

interface CompactionRow {
  op_id: bigint;
  op: OpType;
  table_name: string | null;
  row_id: string | null;
  /** The subkey, which already names the source table. */
  source_key: string | null;
  checksum: bigint;
  target_op: bigint | null;
}

const COMPACTION_COLUMNS = 'op_id, op, table_name, row_id, source_key, checksum, target_op';

function toView(row: CompactionRow) {
  return {
    opId: row.op_id,
    op: row.op,
    table: row.table_name,
    rowId: row.row_id,
    sourceTable: null,
    sourceKey: row.source_key,
    checksum: checksum.fromPgInt8(row.checksum),
    targetOp: row.target_op
  };
}

/** One bucket's ops in Postgres, for `compactBucket`. */
function bucketAccess(pool: pg.Pool, groupId: number, bucket: string): BucketCompactionAccess {
  return {
    async readNewestFirst(through, limit) {
      const { rows } = await pool.query<CompactionRow>(
        `SELECT ${COMPACTION_COLUMNS} FROM powersync.bucket_data
         WHERE group_id = $1 AND bucket_name = $2 AND op_id <= $3::int8
         ORDER BY op_id DESC LIMIT $4`,
        [groupId, bucket, opId.toPgInt8(through), limit]
      );
      return rows.map(toView);
    },
    async readOldestFirst(after, through, limit) {
      const { rows } = await pool.query<CompactionRow>(
        `SELECT ${COMPACTION_COLUMNS} FROM powersync.bucket_data
         WHERE group_id = $1 AND bucket_name = $2 AND op_id > $3::int8 AND op_id <= $4::int8
         ORDER BY op_id LIMIT $5`,
        [groupId, bucket, opId.toPgInt8(after ?? 0n), opId.toPgInt8(through), limit]
      );
      return rows.map(toView);
    },
    async writeMoves(moves) {
      await pool.query(
        `UPDATE powersync.bucket_data b SET op = 'MOVE', data = NULL, table_name = NULL, row_id = NULL,
           source_table = NULL, source_key = NULL, target_op = m.target_op
         FROM unnest($3::int8[], $4::int8[]) AS m(op_id, target_op)
         WHERE b.group_id = $1 AND b.bucket_name = $2 AND b.op_id = m.op_id`,
        [
          groupId,
          bucket,
          moves.map((move) => opId.toPgInt8(move.opId)),
          moves.map((move) => opId.toPgInt8(move.targetOp))
        ]
      );
    },
    writeClear(plan) {
      return inTransaction(pool, async (client) => {
        const deleted = await client.query(
          `DELETE FROM powersync.bucket_data WHERE group_id = $1 AND bucket_name = $2 AND op_id < $3::int8`,
          [groupId, bucket, opId.toPgInt8(plan.lastOpId)]
        );
        await client.query(
          `UPDATE powersync.bucket_data SET op = 'CLEAR', checksum = $4::int8, data = NULL, table_name = NULL, row_id = NULL,
             source_table = NULL, source_key = NULL, target_op = $5::int8
           WHERE group_id = $1 AND bucket_name = $2 AND op_id = $3::int8`,
          [
            groupId,
            bucket,
            opId.toPgInt8(plan.lastOpId),
            checksum.toPgInt8(plan.checksum),
            plan.targetOp === null ? null : opId.toPgInt8(plan.targetOp)
          ]
        );
        const removed = deleted.rowCount ?? 0;
        if (removed > 0) {
          await client.query(
            `UPDATE powersync.bucket_state SET op_count = op_count - $3 WHERE group_id = $1 AND bucket_name = $2`,
            [groupId, bucket, removed]
          );
        }
        return removed;
      });
    }
  };
}
