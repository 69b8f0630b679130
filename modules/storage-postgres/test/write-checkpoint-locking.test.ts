import { normalizeLsn } from '@syncpoint/codecs';
import { testPostgresServer, type PostgresServer } from '@syncpoint/dev-postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPostgresStorage, type PostgresBucketStorage } from '../src/index.js';

describe('checkpoint requests under concurrent replication commits', () => {
  let server: PostgresServer;
  let storage: PostgresBucketStorage;
  beforeAll(async () => {
    server = await testPostgresServer();
    const database = `syncpoint_locking_${process.pid}`;
    await server.ensureDatabase(database);
    storage = createPostgresStorage({ type: 'postgresql', uri: server.url(database), max_pool_size: 12 });
    await storage.migrate('up');
  });
  afterAll(async () => {
    await storage?.close();
    await server?.stop();
  });

  it('multi-user batches in any order and processed-marking never deadlock', async () => {
    const users = Array.from({ length: 40 }, (_, i) => `locking-user-${i}/c`);
    let lsn = 0x1000n;
    const nextLsn = () => normalizeLsn(`0/${(lsn += 0x10n).toString(16)}`);
    const deadline = Date.now() + 4_000;
    let id = 0n;
    const writer = async () => {
      while (Date.now() < deadline) {
        // Each batch names the users in a different random order.
        const batch = [...users].sort(() => Math.random() - 0.5).slice(0, 25);
        const head = nextLsn();
        await storage.createManagedWriteCheckpoints(
          batch.map((user) => ({ user_id: user, heads: { '1': head }, checkpoint_request_id: ++id }))
        );
      }
    };
    const replication = async () => {
      while (Date.now() < deadline) await storage.markWriteCheckpointsProcessed(nextLsn());
    };
    const results = await Promise.allSettled([writer(), writer(), writer(), writer(), replication(), replication()]);
    expect(results.filter((r) => r.status === 'rejected').map((r) => String(r.reason))).toEqual([]);
  });
});
