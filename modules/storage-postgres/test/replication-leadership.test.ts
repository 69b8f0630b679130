import { lsnFromBigint } from '@syncpoint/codecs';
import { testPostgresServer, type PostgresServer } from '@syncpoint/dev-postgres';
import { isReplicationLeadershipLost } from '@syncpoint/service-core';
import { testSyncConfig, todos } from '@syncpoint/service-core-tests';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPostgresStorage, type PostgresBucketStorage } from '../src/index.js';

/**
 * Issue 12 items 1–2: leadership is a session advisory lock (released with its connection), a paused holder is deposed
 * once its lease expires, and every replication write of a deposed holder is refused in its own transaction.
 * Each "process" is its own storage object (own pool, own lock connection) on one database.
 */
describe('replication leadership and fencing (Postgres)', () => {
  let server: PostgresServer;
  let url: string;
  const opened: PostgresBucketStorage[] = [];
  const open = async () => {
    const storage = createPostgresStorage({ type: 'postgresql', uri: url, max_pool_size: 4 });
    opened.push(storage);
    await storage.migrate('up');
    return storage;
  };
  const epochRow = async (storage: PostgresBucketStorage) =>
    (
      await storage.pool.query<{ epoch: bigint; holder: string }>(
        `SELECT epoch, holder FROM powersync.replication_lock`
      )
    ).rows[0];

  beforeAll(async () => {
    server = await testPostgresServer();
    const database = `syncpoint_leadership_${process.pid}_${Date.now()}`;
    await server.ensureDatabase(database);
    url = server.url(database);
  }, 60_000);
  afterAll(async () => {
    for (const storage of opened) await storage.close().catch(() => undefined);
    await server?.stop();
  });

  it('a crashed holder (its connection closed) is replaced at once, with the next epoch', async () => {
    const first = await open();
    const second = await open();
    expect(await first.replicationLock.acquire('first', 60_000)).toBe(true);
    expect(await second.replicationLock.acquire('second', 60_000)).toBe(false);
    const before = (await epochRow(first))!.epoch;
    // The lease still runs for a minute; only the closed connection tells the holder is gone.
    await first.close();
    const started = Date.now();
    expect(await second.replicationLock.acquire('second', 60_000)).toBe(true);
    expect(Date.now() - started).toBeLessThan(1_000);
    expect((await epochRow(second))!.epoch).toBe(before + 1n);
    await second.replicationLock.release('second');
  });

  it('a paused holder is deposed at lease expiry; its flush, checkpoint and processed-marking are all refused', async () => {
    const paused = await open();
    const standby = await open();
    const stream = await paused.deploySyncConfig(testSyncConfig());
    let lostReported = 0;
    expect(await paused.replicationLock.acquire('paused', 400, () => lostReported++)).toBe(true);
    const pausedStreamStorage = await paused.getStreamStorage(stream);
    await pausedStreamStorage.markSnapshotDone(lsnFromBigint(1n));
    await pausedStreamStorage.startBatch(async (batch) => {
      await batch.save({ kind: 'insert', table: todos, after: { id: 'before', owner_id: 'u1' } });
      expect(await batch.commit(lsnFromBigint(0x10n))).toBe(true);
    });
    await paused.createManagedWriteCheckpoints([
      { user_id: 'u1/device', heads: { '1': lsnFromBigint(0x100n) }, checkpoint_request_id: 5n }
    ]);

    // The holder stops renewing (paused); the standby waits for the lease to expire, then takes over.
    expect(await standby.replicationLock.acquire('standby', 10_000)).toBe(false);
    await new Promise((resolve) => setTimeout(resolve, 600));
    expect(await standby.replicationLock.acquire('standby', 10_000)).toBe(true);
    const standbyStreamStorage = await standby.getStreamStorage(stream);
    await standbyStreamStorage.startBatch(async (batch) => {
      await batch.save({ kind: 'insert', table: todos, after: { id: 'by-standby', owner_id: 'u1' } });
      expect(await batch.commit(lsnFromBigint(0x20n))).toBe(true);
    });
    const afterTakeover = await standbyStreamStorage.getCheckpoint();
    const opsAfterTakeover = await paused.pool.query(`SELECT count(*)::int AS n FROM powersync.bucket_data`);

    // The paused one resumes: every replication write is refused.
    const refused = async (write: () => Promise<unknown>) => {
      const error = await write().then(
        () => null,
        (caught: unknown) => caught
      );
      expect(isReplicationLeadershipLost(error), String(error)).toBe(true);
    };
    await refused(() =>
      pausedStreamStorage.startBatch(async (batch) => {
        await batch.save({ kind: 'insert', table: todos, after: { id: 'by-deposed', owner_id: 'u1' } });
        await batch.flush();
      })
    );
    await refused(() => pausedStreamStorage.startBatch((batch) => batch.keepalive(lsnFromBigint(0x200n))));
    await refused(() => paused.markWriteCheckpointsProcessed(lsnFromBigint(0x200n)));
    await refused(() =>
      pausedStreamStorage.saveSnapshotProgress({ table: todos, done: true, rowsDone: 1, lastKey: null })
    );
    expect(await paused.replicationLock.renew('paused', 400)).toBe(false);
    expect(lostReported).toBe(1);

    // Storage shows nothing of the deposed holder after the takeover.
    expect(await standbyStreamStorage.getCheckpoint()).toEqual(afterTakeover);
    expect((await paused.pool.query(`SELECT count(*)::int AS n FROM powersync.bucket_data`)).rows[0]).toEqual(
      opsAfterTakeover.rows[0]
    );
    const { rows: requests } = await standby.pool.query(`SELECT processed_at_lsn FROM powersync.write_checkpoints`);
    expect(requests).toEqual([{ processed_at_lsn: null }]);
    expect((await epochRow(standby))!.holder).toBe('standby');
    await standby.replicationLock.release('standby');
  });

  it('a takeover waits for (or ends) a deposed holder write that already passed the fence', async () => {
    const deposed = await open();
    const next = await open();
    expect(await deposed.replicationLock.acquire('deposed', 300)).toBe(true);
    // A fenced write transaction left open, as by a holder paused mid-write.
    const client = await deposed.pool.connect();
    await client.query('BEGIN');
    await deposed.leadership.fence(client);
    await new Promise((resolve) => setTimeout(resolve, 400));
    const started = Date.now();
    expect(await next.replicationLock.acquire('next', 10_000)).toBe(true);
    // It waited the takeover lock timeout, then terminated the open transaction's session.
    expect(Date.now() - started).toBeGreaterThanOrEqual(1_500);
    const commit = await client.query('COMMIT').then(
      () => 'committed',
      () => 'failed'
    );
    expect(commit).toBe('failed');
    client.release(true);
    await next.replicationLock.release('next');
  });
  it('with a short lease the takeover still ends the open write (its waits stay below the query timeout)', async () => {
    const deposed = await open();
    const next = await open();
    expect(await deposed.replicationLock.acquire('deposed-short', 300)).toBe(true);
    const client = await deposed.pool.connect();
    await client.query('BEGIN');
    await deposed.leadership.fence(client);
    await new Promise((resolve) => setTimeout(resolve, 400));
    // ttl 3 s: the lock connection's queries time out after 1.5 s, so the takeover may wait 0.5 s per step.
    expect(await next.replicationLock.acquire('next-short', 3_000)).toBe(true);
    const commit = await client.query('COMMIT').then(
      () => 'committed',
      () => 'failed'
    );
    expect(commit).toBe('failed');
    client.release(true);
    await next.replicationLock.release('next-short');
  });
});
