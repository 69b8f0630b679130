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

export const mod32 = (value: bigint): number => Number(((value % U32) + U32) % U32);
