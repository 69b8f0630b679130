import type { PostgresBucketStorage } from '@syncpoint/storage-postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sourceSchema } from '@syncpoint/test-fixtures';
import {
  createReplicationEnv,
  ITEMS_SYNC_CONFIG,
  downloadBuckets,
  sleep,
  waitFor,
  waitForCheckpointLsn,
  type BucketContents,
  type ChildService,
  type ReplicationEnv
} from './replication-harness.js';

const SEED_ROWS = 2_000; // pairs (2k, 2k+1) are always updated together, in one transaction
const BIG_ROWS = 50_000;
const BIG_FIRST_ID = 1_000_000;
const OWNERS = 10;

interface Observation {
  checkpoint: bigint;
  bigRows: number;
  tornPairs: number;
}

/**
 * SIGKILL of the replicator (a `syncpoint start --role replication` child process) while it applies a 50,000-row
 * source transaction, with small two-row transactions committing around it; then a restart of the child.
 */
describe('replication survives SIGKILL mid-transaction', () => {
  let env: ReplicationEnv;
  let storageName: string;
  let storage: PostgresBucketStorage;
  let streamId: number;

  beforeAll(async () => {
    env = await createReplicationEnv('crash', [
      sourceSchema('items').ddl,
      `INSERT INTO items SELECT i, 'u' || ((i / 2) % ${OWNERS}), 0, 'seed' FROM generate_series(0, ${SEED_ROWS - 1}) i`
    ]);
    storageName = await env.createStorageDatabase('a');
  });
  afterAll(async () => env?.cleanup(), 60_000);

  /** At checkpoint `c`: how many big-transaction rows a client sees, and how many pairs show different values. */
  async function observe(checkpoint: bigint): Promise<Observation> {
    const { rows } = await storage.pool.query<{ big: string; torn: string }>(
      `WITH latest AS (
         SELECT DISTINCT ON (source_key) op, data::jsonb AS d
         FROM powersync.bucket_data
         WHERE group_id = $1 AND bucket_name = 'global[]' AND op_id <= $2::int8
         ORDER BY source_key, op_id DESC
       )
       SELECT
         (SELECT count(*) FROM latest WHERE op = 'PUT' AND d->>'batch' = 'big') AS big,
         (SELECT count(*) FROM (
            SELECT (d->>'id')::int8 / 2 AS pair FROM latest WHERE op = 'PUT' AND d->>'batch' = 'seed'
            GROUP BY 1 HAVING count(DISTINCT d->>'val') > 1 OR count(DISTINCT d->>'owner') > 1) p) AS torn`,
      [streamId, checkpoint.toString()]
    );
    return { checkpoint, bigRows: Number(rows[0]!.big), tornPairs: Number(rows[0]!.torn) };
  }

  it('ends in the source state, with no transaction lost or half-visible, and matches a fresh snapshot', async () => {
    let child: ChildService = await env.startChild({ storageName, syncConfig: ITEMS_SYNC_CONFIG, heartbeatSeconds: 5 });
    storage = env.openStorage(storageName);
    const first = await waitFor('the first checkpoint', () => storage.getServingCheckpoint(), 60_000).catch(
      (error: unknown) => {
        throw new Error(`${String(error)}\nchild output:\n${child.output()}`);
      }
    );
    streamId = first.stream.id;

    // Small two-row transactions (value and, sometimes, owner: the pair moves between per-owner buckets), plus
    // markers, until told to stop.
    let stopUpdates = false;
    let updates = 0;
    const updater = (async () => {
      while (!stopUpdates) {
        const pair = Math.floor(Math.random() * (SEED_ROWS / 2)) * 2;
        const n = ++updates;
        if (n % 5 === 0) {
          await env.sourceDb.query(`UPDATE items SET val = $1, owner = $2 WHERE id IN ($3, $4)`, [
            n,
            `u${n % OWNERS}`,
            pair,
            pair + 1
          ]);
        } else {
          await env.sourceDb.query(`UPDATE items SET val = $1 WHERE id IN ($2, $3)`, [n, pair, pair + 1]);
        }
        if (n % 25 === 0) await env.sourceDb.query(`SELECT pg_logical_emit_message(false, 'powersync', 'ping')`);
        await sleep(2);
      }
    })();

    try {
      await sleep(300);
      await env.sourceDb.query(
        `INSERT INTO items SELECT i, 'u' || (i % ${OWNERS}), i, 'big' FROM generate_series(${BIG_FIRST_ID}, ${BIG_FIRST_ID + BIG_ROWS - 1}) i`
      );
      // Kill once storage holds thousands of flushed ops of the big transaction above the last checkpoint.
      const flushed = await waitFor(
        'flushed ops above the checkpoint',
        async () => {
          const { rows } = await storage.pool.query<{ ahead: string }>(
            `SELECT (coalesce(keepalive_op, 0) - coalesce(last_checkpoint, 0))::text AS ahead FROM powersync.sync_rules WHERE id = $1`,
            [streamId]
          );
          return Number(rows[0]!.ahead) > 5_000 ? Number(rows[0]!.ahead) : null;
        },
        60_000,
        5
      );
      await child.kill();
      const atKill = await storage.getServingCheckpoint();
      const killedState = await observe(atKill!.checkpoint.checkpoint);
      // The kill hit the big transaction mid-way: flushed, but not in any checkpoint.
      expect(flushed).toBeGreaterThan(5_000);
      expect(killedState).toMatchObject({ bigRows: 0, tornPairs: 0 });

      child = await env.startChild({ storageName, syncConfig: ITEMS_SYNC_CONFIG, heartbeatSeconds: 5 });
      // Every checkpoint seen while the restarted replicator catches up shows the big transaction whole or not at all.
      const observations: Observation[] = [];
      let caughtUpTo: bigint | null = null;
      const catchUpDeadline = Date.now() + 120_000;
      const stopAt = Date.now() + 3_000;
      for (;;) {
        if (Date.now() > catchUpDeadline)
          throw new Error(`replication did not catch up; child output:\n${child.output()}`);
        if (!stopUpdates && Date.now() > stopAt) stopUpdates = true;
        const serving = await storage.getServingCheckpoint();
        const checkpoint = serving!.checkpoint.checkpoint;
        if (observations.at(-1)?.checkpoint !== checkpoint) observations.push(await observe(checkpoint));
        if (observations.at(-1)!.bigRows === BIG_ROWS && stopUpdates) {
          caughtUpTo = checkpoint;
          break;
        }
        await sleep(20);
      }
      await updater;
      expect(caughtUpTo).not.toBeNull();
      for (const observation of observations) {
        expect([0, BIG_ROWS], `big rows visible at checkpoint ${observation.checkpoint}`).toContain(
          observation.bigRows
        );
        expect(observation.tornPairs, `torn pairs at checkpoint ${observation.checkpoint}`).toBe(0);
      }

      // Caught up: the served checkpoint's LSN is at or past the source's position after the last write.
      const position = await env.sourcePosition();
      const served = await waitForCheckpointLsn(storage, position, 60_000);
      const synced = await downloadBuckets(storage, served.checkpoint.checkpoint);

      // The state a client syncing from scratch ends with equals the source's current rows, bucket by bucket.
      const { rows: sourceRows } = await env.sourceDb.query<{ id: string; owner: string; val: string; batch: string }>(
        `SELECT id::text, owner, val::text, batch FROM items ORDER BY id`
      );
      const expected = new Map<string, Map<string, unknown>>();
      const put = (bucket: string, row: (typeof sourceRows)[number]) => {
        if (!expected.has(bucket)) expected.set(bucket, new Map());
        expected
          .get(bucket)!
          .set(`items/${row.id}`, { id: Number(row.id), owner: row.owner, val: Number(row.val), batch: row.batch });
      };
      for (const row of sourceRows) {
        put('global[]', row);
        put(`by_owner[${JSON.stringify(row.owner)}]`, row);
      }
      expect(sourceRows).toHaveLength(SEED_ROWS + BIG_ROWS);
      expect([...synced.keys()].sort()).toEqual([...expected.keys()].sort());
      for (const [bucket, rows] of expected) {
        const actual = synced.get(bucket)!;
        expect(actual.rows.size, bucket).toBe(rows.size);
        for (const [id, row] of rows) {
          if (JSON.stringify(actual.rows.get(id)) !== JSON.stringify(row)) {
            expect(actual.rows.get(id), `${bucket} ${id}`).toEqual(row);
          }
        }
      }
      // (downloadBuckets also checked that each bucket's stored checksum and count equal the wrapping sum and count
      // of its ops.)

      // A fresh service (new storage database, fresh snapshot of the same source) ends with identical rows in every
      // bucket. Raw checksums differ: the crashed storage's ops include history (superseded PUTs, REMOVEs, the
      // replayed part of the big transaction), a fresh snapshot has one PUT per row, so we compare STATE.
      const freshStorageName = await env.createStorageDatabase('fresh');
      await env.startInProcess({ storageName: freshStorageName, syncConfig: ITEMS_SYNC_CONFIG, role: 'replication' });
      const freshStorage = env.openStorage(freshStorageName);
      const freshPosition = await env.sourcePosition();
      const freshServed = await waitForCheckpointLsn(freshStorage, freshPosition, 120_000);
      const fresh = await downloadBuckets(freshStorage, freshServed.checkpoint.checkpoint);
      expect([...fresh.keys()].sort()).toEqual([...synced.keys()].sort());
      for (const [bucket, contents] of fresh) {
        expect(sameRows(contents, synced.get(bucket)!), `rows of ${bucket}`).toBe(true);
        // A fresh snapshot has exactly one PUT per row.
        expect(contents.ops).toBe(contents.rows.size);
      }
    } finally {
      stopUpdates = true;
      await updater.catch(() => {});
      await child.kill();
    }
  }, 300_000);
});

function sameRows(a: BucketContents, b: BucketContents): boolean {
  if (a.rows.size !== b.rows.size) return false;
  for (const [id, row] of a.rows) if (JSON.stringify(row) !== JSON.stringify(b.rows.get(id))) return false;
  return true;
}
