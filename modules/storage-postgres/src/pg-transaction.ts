import type pg from 'pg';

/** Runs `fn` in one transaction on a pooled client: COMMIT when it resolves, ROLLBACK when it throws. */
export async function inTransaction<T>(pool: pg.Pool, fn: (client: pg.PoolClient) => Promise<T>): Promise<T> {
  const client = await pool.connect();
  try {
    await client.query('BEGIN');
    const result = await fn(client);
    await client.query('COMMIT');
    return result;
  } catch (error) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw error;
  } finally {
    client.release();
  }
}

/** The NOTIFY channel checkpoints are announced on (PROTOCOL §6.1). */
export const CHECKPOINT_CHANNEL = 'powersynccheckpoints';

/** 2^32: op checksums are u32 and every sum of them is taken modulo this. */
export const U32 = 4294967296n;

/**
 * Marks the pending checkpoint requests whose head is reached (PROTOCOL §4.9). The rows are locked in user id order,
 * like the batch upserts, so the two never deadlock.
 */
export const MARK_PROCESSED_SQL = `
  UPDATE powersync.write_checkpoints w SET processed_at_lsn = $1::pg_lsn
  FROM (
    SELECT user_id FROM powersync.write_checkpoints
    WHERE processed_at_lsn IS NULL AND head_lsn <= $1::pg_lsn
    ORDER BY user_id FOR UPDATE
  ) reached
  WHERE w.user_id = reached.user_id`;
