import { lsnFromBigint } from '@syncpoint/codecs';
import { testPostgresServer, type PostgresServer } from '@syncpoint/dev-postgres';
import { readBuckets, testSyncConfig, todos } from '@syncpoint/service-core-tests';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPostgresStorage, type PostgresBucketStorage } from '../src/index.js';

describe('Postgres bucket data specifics', () => {
  let server: PostgresServer;
  let storage: PostgresBucketStorage;
  beforeAll(async () => {
    server = await testPostgresServer();
    const database = `syncpoint_bucket_data_pg_${process.pid}_${Date.now()}`;
    await server.ensureDatabase(database);
    storage = createPostgresStorage({ type: 'postgresql', uri: server.url(database), max_pool_size: 4 });
    await storage.migrate('up');
  });
  afterAll(async () => {
    await storage?.close();
    await server?.stop();
  });

  it('ops flushed by a process that died before commit become visible with the next checkpoint, none lost', async () => {
    const stream = await storage.deploySyncConfig(testSyncConfig());
    const s = await storage.getStreamStorage(stream);
    await s.markSnapshotDone(lsnFromBigint(1n));
    await s.startBatch(async (batch) => {
      await batch.save({ kind: 'insert', table: todos, after: { id: 't1', owner_id: 'u1' } });
      await batch.commit(lsnFromBigint(0x10n));
    });
    // The "dead" process: moves t1 to u2 and flushes, never commits.
    await s.startBatch(async (batch) => {
      await batch.save({ kind: 'update', table: todos, after: { id: 't1', owner_id: 'u2' } });
      await batch.flush();
    });
    const before = await s.getCheckpoint();
    expect(
      (await readBuckets(s, before.checkpoint, ['by_user["u1"]'])).get('by_user["u1"]')!.map((op) => op.op)
    ).toEqual(['PUT']);

    // The restarted process re-processes the same source transaction and commits it.
    const storage2 = await storage.getStreamStorage(stream);
    await storage2.startBatch(async (batch) => {
      await batch.save({ kind: 'update', table: todos, after: { id: 't1', owner_id: 'u2' } });
      expect(await batch.commit(lsnFromBigint(0x20n))).toBe(true);
    });
    const { checkpoint } = await storage2.getCheckpoint();
    const data = await readBuckets(storage2, checkpoint, ['by_user["u1"]', 'by_user["u2"]']);
    // The REMOVE from u1 was only written by the dead process: it must be part of the new checkpoint.
    expect(data.get('by_user["u1"]')!.map((op) => op.op)).toEqual(['PUT', 'REMOVE']);
    expect(data.get('by_user["u2"]')!.map((op) => op.op)).toEqual(['PUT', 'PUT']);
  });

  it('a transaction with no ops still includes ops a dead process flushed', async () => {
    const stream = await storage.deploySyncConfig(testSyncConfig());
    const s = await storage.getStreamStorage(stream);
    await s.markSnapshotDone(lsnFromBigint(1n));
    await s.startBatch(async (batch) => {
      await batch.save({ kind: 'insert', table: todos, after: { id: 't1', owner_id: 'u1' } });
      await batch.commit(lsnFromBigint(0x10n));
      await batch.save({ kind: 'delete', table: todos, beforeKey: { id: 't1' } });
      await batch.flush();
    });
    // Re-processing the delete finds no current row: no ops, but the flushed REMOVE must become visible.
    expect(
      await s.startBatch(async (batch) => {
        await batch.save({ kind: 'delete', table: todos, beforeKey: { id: 't1' } });
        return batch.commit(lsnFromBigint(0x20n));
      })
    ).toBe(true);
    const { checkpoint } = await s.getCheckpoint();
    expect((await readBuckets(s, checkpoint, ['by_user["u1"]'])).get('by_user["u1"]')!.map((op) => op.op)).toEqual([
      'PUT',
      'REMOVE'
    ]);
  });

  it('stores lsns as pg_lsn and reports them normalised', async () => {
    const stream = await storage.deploySyncConfig(testSyncConfig());
    const s = await storage.getStreamStorage(stream);
    await s.markSnapshotDone(lsnFromBigint(1n));
    await s.startBatch((batch) => batch.keepalive(lsnFromBigint(0x1_0000_00abn)));
    const { rows } = await storage.pool.query<{ lsn: string }>(
      `SELECT last_checkpoint_lsn::text AS lsn FROM powersync.sync_rules WHERE id = $1`,
      [stream.id]
    );
    expect(rows[0]?.lsn).toBe('1/AB');
    expect((await s.getCheckpoint()).lsn).toBe('00000001/000000AB');
  });

  it('the checkpoint listener reconnects after its connection is killed and reports a change', async () => {
    let calls = 0;
    const stop = await storage.listenForCheckpoints(() => calls++);
    try {
      const killed = await storage.pool.query(
        `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE datname = current_database() AND pid <> pg_backend_pid() AND query LIKE 'LISTEN%'`
      );
      expect(killed.rowCount).toBe(1);
      await expect.poll(() => calls, { timeout: 10_000 }).toBeGreaterThan(0);
      // Listening again: a commit on a new stream is noticed.
      const before = calls;
      const stream = await storage.deploySyncConfig(testSyncConfig());
      const s = await storage.getStreamStorage(stream);
      await s.markSnapshotDone(lsnFromBigint(1n));
      await s.startBatch((batch) => batch.keepalive(lsnFromBigint(0x30n)));
      await expect.poll(() => calls, { timeout: 10_000 }).toBeGreaterThan(before);
    } finally {
      await stop();
    }
    const listeners = async () =>
      (
        await storage.pool.query<{ n: number }>(
          `SELECT count(*)::int AS n FROM pg_stat_activity
           WHERE datname = current_database() AND (query LIKE 'LISTEN%' OR query LIKE 'UNLISTEN%')`
        )
      ).rows[0]?.n;
    await expect.poll(listeners, { timeout: 5_000 }).toBe(0);
  });
});
