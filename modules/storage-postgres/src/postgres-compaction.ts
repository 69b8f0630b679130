import type { CompactOptions, CompactResult } from '@syncpoint/service-core';
import type pg from 'pg';
import { inTransaction, U32 } from './pg-transaction.js';

const DEFAULT_BATCH_SIZE = 10_000;
/**
 * Keys remembered while scanning one bucket (bounds memory to roughly 100 MB). Past this no new key is remembered;
 * known keys are still recognised, so older ops of rows seen later are moved less often, never wrongly.
 */
const MAX_SEEN_KEYS = 500_000;
const BUCKET_PAGE = 1_000;

/**
 * Compaction of one stream (PROTOCOL §8.4), bucket by bucket, touching only ops ≤ the stream's current checkpoint:
 * 1. newest → oldest in batches of `batchSize`: a PUT/REMOVE whose (table, id, subkey) appears again later becomes
 *    MOVE (data dropped, checksum kept, target_op = the op that superseded it);
 * 2. oldest → newest: the longest prefix of REMOVE/MOVE/CLEAR ops is replaced by one CLEAR at the last replaced op id,
 *    checksum = wrapping sum of the replaced ops, target_op = the highest target_op among them; bucket_state.op_count
 *    drops by the number of deleted rows (the checksum sum is unchanged).
 */
export async function compactStream(pool: pg.Pool, groupId: number, options: CompactOptions): Promise<CompactResult> {
  const batchSize = Math.max(1, options.batchSize ?? DEFAULT_BATCH_SIZE);
  const { rows } = await pool.query<{ last_checkpoint: bigint | null }>(
    `SELECT last_checkpoint FROM powersync.sync_rules WHERE id = $1`,
    [groupId]
  );
  const checkpoint = rows[0]?.last_checkpoint ?? 0n;
  const result: CompactResult = { bucketsCompacted: 0, opsMoved: 0, opsCleared: 0 };
  if (checkpoint <= 0n) return result;

  let bucketsDone = 0;
  let opsScanned = 0;
  for await (const bucket of bucketNames(pool, groupId, options.buckets)) {
    const moved = await moveSuperseded(pool, groupId, bucket, checkpoint, batchSize);
    const cleared = await clearPrefix(pool, groupId, bucket, checkpoint, batchSize);
    opsScanned += moved.scanned + cleared.scanned;
    result.opsMoved += moved.moved;
    result.opsCleared += cleared.cleared;
    if (moved.moved > 0 || cleared.cleared > 0) result.bucketsCompacted++;
    options.onProgress?.({ bucketsDone: ++bucketsDone, opsScanned });
  }
  return result;
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

async function moveSuperseded(pool: pg.Pool, groupId: number, bucket: string, checkpoint: bigint, batchSize: number) {
  const seen = new Map<string, bigint>();
  let below = checkpoint + 1n;
  let moved = 0;
  let scanned = 0;
  for (;;) {
    const { rows } = await pool.query<{
      op_id: bigint;
      op: string;
      table_name: string | null;
      row_id: string | null;
      source_key: string | null;
    }>(
      `SELECT op_id, op, table_name, row_id, source_key FROM powersync.bucket_data
       WHERE group_id = $1 AND bucket_name = $2 AND op_id < $3::int8
       ORDER BY op_id DESC LIMIT $4`,
      [groupId, bucket, below.toString(), batchSize]
    );
    scanned += rows.length;
    const ids: string[] = [];
    const targets: string[] = [];
    let reachedClear = false;
    for (const row of rows) {
      if (row.op === 'CLEAR') {
        // A CLEAR is the first op of a compacted bucket: nothing older remains.
        reachedClear = true;
        break;
      }
      if (row.op !== 'PUT' && row.op !== 'REMOVE') continue;
      const key = `${row.table_name}\u0000${row.row_id}\u0000${row.source_key}`;
      const newer = seen.get(key);
      if (newer !== undefined) {
        ids.push(row.op_id.toString());
        targets.push(newer.toString());
      }
      if (newer !== undefined || seen.size < MAX_SEEN_KEYS) seen.set(key, row.op_id);
    }
    if (ids.length > 0) {
      await pool.query(
        `UPDATE powersync.bucket_data b SET op = 'MOVE', data = NULL, table_name = NULL, row_id = NULL,
           source_table = NULL, source_key = NULL, target_op = m.target_op
         FROM unnest($3::int8[], $4::int8[]) AS m(op_id, target_op)
         WHERE b.group_id = $1 AND b.bucket_name = $2 AND b.op_id = m.op_id`,
        [groupId, bucket, ids, targets]
      );
      moved += ids.length;
    }
    if (reachedClear || rows.length < batchSize) break;
    below = rows.at(-1)!.op_id;
  }
  return { moved, scanned };
}

async function clearPrefix(pool: pg.Pool, groupId: number, bucket: string, checkpoint: bigint, batchSize: number) {
  let after = 0n;
  let sum = 0n;
  let count = 0;
  let last: bigint | null = null;
  let lastOp = '';
  let maxTarget: bigint | null = null;
  let scanned = 0;
  scan: for (;;) {
    const { rows } = await pool.query<{ op_id: bigint; op: string; checksum: bigint; target_op: bigint | null }>(
      `SELECT op_id, op, checksum, target_op FROM powersync.bucket_data
       WHERE group_id = $1 AND bucket_name = $2 AND op_id > $3::int8 AND op_id <= $4::int8
       ORDER BY op_id LIMIT $5`,
      [groupId, bucket, after.toString(), checkpoint.toString(), batchSize]
    );
    scanned += rows.length;
    for (const row of rows) {
      if (row.op === 'PUT') break scan;
      sum += row.checksum;
      count++;
      last = row.op_id;
      lastOp = row.op;
      if (row.target_op !== null && (maxTarget === null || row.target_op > maxTarget)) maxTarget = row.target_op;
    }
    if (rows.length < batchSize) break;
    after = rows.at(-1)!.op_id;
  }
  if (last === null || (count === 1 && lastOp === 'CLEAR')) return { cleared: 0, scanned };

  const cleared = await inTransaction(pool, async (client) => {
    const deleted = await client.query(
      `DELETE FROM powersync.bucket_data WHERE group_id = $1 AND bucket_name = $2 AND op_id < $3::int8`,
      [groupId, bucket, last.toString()]
    );
    await client.query(
      `UPDATE powersync.bucket_data SET op = 'CLEAR', checksum = $4::int8, data = NULL, table_name = NULL, row_id = NULL,
         source_table = NULL, source_key = NULL, target_op = $5::int8
       WHERE group_id = $1 AND bucket_name = $2 AND op_id = $3::int8`,
      [groupId, bucket, last.toString(), (sum % U32).toString(), maxTarget?.toString() ?? null]
    );
    const removed = deleted.rowCount ?? 0;
    if (removed > 0) {
      await client.query(
        `UPDATE powersync.bucket_state SET op_count = op_count - $3 WHERE group_id = $1 AND bucket_name = $2`,
        [groupId, bucket, removed]
      );
    }
    return removed + 1;
  });
  return { cleared, scanned };
}
