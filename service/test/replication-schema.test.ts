import type { PostgresBucketStorage } from '@syncpoint/storage-postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sourceSchema } from '@syncpoint/test-fixtures';
import {
  createReplicationEnv,
  downloadBuckets,
  waitFor,
  waitForCheckpointLsn,
  type ReplicationEnv
} from './replication-harness.js';

const SYNC_CONFIG = `bucket_definitions:
  global:
    data:
      - SELECT * FROM todos
      - SELECT * FROM later
      - SELECT * FROM lists
      - SELECT * FROM dropme
      - SELECT * FROM trunc
      - SELECT * FROM nokey
`;

/** Schema changes while replicating (issue 4 item 6). The tests run in order on one service. */
describe('replication through schema changes', () => {
  let env: ReplicationEnv;
  let storage: PostgresBucketStorage;

  /** Rows of the global bucket, by `table/id`, once replication has caught up with the source. */
  async function caughtUpRows(): Promise<Map<string, unknown>> {
    const served = await waitForCheckpointLsn(storage, await env.sourcePosition(), 60_000);
    return (
      (await downloadBuckets(storage, served.checkpoint.checkpoint)).get('global[]')?.rows ?? new Map<string, unknown>()
    );
  }
  const ids = (rows: Map<string, unknown>, table: string) =>
    [...rows.keys()].filter((key) => key.startsWith(`${table}/`)).sort();

  beforeAll(async () => {
    env = await createReplicationEnv('schema', [
      sourceSchema('todos').ddl,
      `INSERT INTO todos VALUES ('t1', 'one'), ('t2', 'two')`,
      `CREATE TABLE lists (id text PRIMARY KEY, name text)`,
      `INSERT INTO lists VALUES ('l1', 'list one'), ('l2', 'list two')`,
      `CREATE TABLE dropme (id text PRIMARY KEY)`,
      `INSERT INTO dropme VALUES ('d1')`,
      `CREATE TABLE trunc (id text PRIMARY KEY)`,
      `INSERT INTO trunc SELECT 'x' || i FROM generate_series(1, 50) i`,
      // Replication refuses to start unless every table the sync rules use exists, is published and has a key.
      `CREATE TABLE later (id text PRIMARY KEY, v text)`,
      `CREATE TABLE nokey (id text PRIMARY KEY, v text)`
    ]);
    const storageName = await env.createStorageDatabase('s');
    await env.startInProcess({ storageName, syncConfig: SYNC_CONFIG, role: 'replication' });
    storage = env.openStorage(storageName);
    const rows = await caughtUpRows();
    expect(ids(rows, 'todos')).toEqual(['todos/t1', 'todos/t2']);
    expect(ids(rows, 'trunc')).toHaveLength(50);
  }, 120_000);
  afterAll(async () => env?.cleanup(), 60_000);

  it('follows a new column', async () => {
    await env.sourceDb.query(`ALTER TABLE todos ADD COLUMN priority int8 DEFAULT 3`);
    await env.sourceDb.query(`INSERT INTO todos VALUES ('t3', 'three', 9007199254740993)`);
    await env.sourceDb.query(`UPDATE todos SET description = 'one!' WHERE id = 't1'`);
    const rows = await caughtUpRows();
    expect(rows.get('todos/t3')).toEqual({ id: 't3', description: 'three', priority: 9007199254740992 }); // parsed as a JS number
    expect(rows.get('todos/t1')).toEqual({ id: 't1', description: 'one!', priority: 3 });
    // Untouched rows keep their old data until they change (no re-snapshot on ALTER).
    expect(rows.get('todos/t2')).toEqual({ id: 't2', description: 'two' });
  });

  it('copies a new table swapped in under a name the sync rules use, including rows written before the swap', async () => {
    // Sync rules must name existing tables at start, so a "new table" joins them by name: created, filled, then
    // renamed into place (a common migration), in a publication FOR ALL TABLES.
    await env.sourceDb.query(`CREATE TABLE later_v2 (id text PRIMARY KEY, v text)`);
    await env.sourceDb.query(`INSERT INTO later_v2 VALUES ('a', 'before the swap'), ('b', 'before the swap')`);
    await env.sourceDb.query(
      `BEGIN; ALTER TABLE later RENAME TO later_v1; ALTER TABLE later_v2 RENAME TO later; COMMIT`
    );
    await env.sourceDb.query(`INSERT INTO later VALUES ('c', 'after the swap')`);
    await env.sourceDb.query(`UPDATE later SET v = 'updated after the swap' WHERE id = 'a'`);
    const rows = await caughtUpRows();
    expect(ids(rows, 'later')).toEqual(['later/a', 'later/b', 'later/c']);
    expect(rows.get('later/a')).toEqual({ id: 'a', v: 'updated after the swap' });
    expect(rows.get('later/b')).toEqual({ id: 'b', v: 'before the swap' });
  });

  it('removes the rows of a table renamed out of the sync rules, and brings them back when renamed back', async () => {
    await env.sourceDb.query(`ALTER TABLE lists RENAME TO lists_archived`);
    // pgoutput sends the new name with the next change of the table: that is when replication notices.
    await env.sourceDb.query(`UPDATE lists_archived SET name = 'renamed' WHERE id = 'l1'`);
    let rows = await caughtUpRows();
    expect(ids(rows, 'lists')).toEqual([]);
    expect(ids(rows, 'todos')).toHaveLength(3); // other tables are untouched

    await env.sourceDb.query(`ALTER TABLE lists_archived RENAME TO lists`);
    await env.sourceDb.query(`UPDATE lists SET name = 'back' WHERE id = 'l2'`);
    rows = await caughtUpRows();
    expect(ids(rows, 'lists')).toEqual(['lists/l1', 'lists/l2']);
    expect(rows.get('lists/l1')).toEqual({ id: 'l1', name: 'renamed' });
    expect(rows.get('lists/l2')).toEqual({ id: 'l2', name: 'back' });
  });

  it('keeps replicating other tables after a table is dropped', async () => {
    await env.sourceDb.query(`DROP TABLE dropme`);
    await env.sourceDb.query(`INSERT INTO todos (id, description) VALUES ('t4', 'after the drop')`);
    const rows = await caughtUpRows();
    expect(rows.get('todos/t4')).toMatchObject({ id: 't4', description: 'after the drop' });
    // Documented behaviour: pgoutput sends no event for DROP TABLE, so the dropped table's rows stay in the buckets
    // (nothing is silently changed either); a re-deploy of the sync config (new snapshot) or a TRUNCATE before the
    // DROP removes them.
    expect(ids(rows, 'dropme')).toEqual(['dropme/d1']);
  });

  it('turns TRUNCATE into REMOVE ops', async () => {
    const before = (await storage.getServingCheckpoint())!.checkpoint.checkpoint;
    await env.sourceDb.query(`TRUNCATE trunc`);
    const rows = await caughtUpRows();
    expect(ids(rows, 'trunc')).toEqual([]);
    const served = (await storage.getServingCheckpoint())!;
    const stream = await storage.getStreamStorage(served.stream);
    const ops = [];
    for await (const chunk of stream.getBucketData(served.checkpoint.checkpoint, new Map([['global[]', before]]), {
      limit: 10_000
    })) {
      ops.push(...chunk.data);
    }
    const removes = ops.filter((op) => op.object_type === 'trunc');
    expect(removes).toHaveLength(50);
    expect(removes.every((op) => op.op === 'REMOVE')).toBe(true);
  });

  it('stops with a clear error when a table loses its primary key (REPLICA IDENTITY DEFAULT), never losing data silently', async () => {
    await env.sourceDb.query(`ALTER TABLE nokey DROP CONSTRAINT nokey_pkey`);
    await env.sourceDb.query(`INSERT INTO nokey VALUES ('n1', 'no key')`);
    await env.sourceDb.query(`INSERT INTO todos (id, description) VALUES ('t5', 'after the keyless insert')`);
    const error = await waitFor(
      'the error to be recorded',
      async () => {
        const { rows } = await storage.pool.query<{ last_fatal_error: string | null }>(
          `SELECT last_fatal_error FROM powersync.sync_rules WHERE last_fatal_error IS NOT NULL`
        );
        return rows[0]?.last_fatal_error;
      },
      30_000
    );
    expect(error).toMatch(/nokey has no replica identity: ALTER TABLE public\.nokey REPLICA IDENTITY FULL/);
    // Replication stops at that transaction rather than skipping it: the later todo is not checkpointed (nothing is
    // skipped silently). What the code does: the job retries with backoff and fails the same way, since the decoded
    // relation keeps the identity it had at that time; operator action (re-deploy, or a new slot) is needed.
    const served = (await storage.getServingCheckpoint())!;
    const stream = await storage.getStreamStorage(served.stream);
    const ops = [];
    for await (const chunk of stream.getBucketData(served.checkpoint.checkpoint, new Map([['global[]', 0n]]), {
      limit: 100_000
    })) {
      ops.push(...chunk.data);
    }
    expect(ops.some((op) => op.object_id === 't5')).toBe(false);
  });
});
