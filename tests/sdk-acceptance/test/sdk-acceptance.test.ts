import { randomUUID } from 'node:crypto';
import type { PostgresServer } from '@syncpoint/dev-postgres';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, test } from 'vitest';
import {
  BSON_CONTENT_TYPE,
  NDJSON_CONTENT_TYPE,
  openClient,
  type CheckpointMode,
  type Encoding,
  type TestClient,
  type TodoRow
} from './support/client.js';
import { BY_USER_SYNC_CONFIG, GLOBAL_SYNC_CONFIG, startPostgres, startSyncpoint, type SyncpointEnv } from './support/syncpoint.js';
import { waitFor, withTimeout } from './support/wait.js';

/**
 * The real `@powersync/node` SDK (1.1.0) against Syncpoint (unified role: API + replication, in-process) on embedded
 * Postgres, over HTTP streaming, for each stream encoding and each checkpoint mode. PROTOCOL §4, §6, §7; issue 5 item 4.
 */
const COMBINATIONS: Array<{ encoding: Encoding; mode: CheckpointMode }> = [
  { encoding: 'bson', mode: 'legacy' },
  { encoding: 'ndjson', mode: 'legacy' },
  { encoding: 'bson', mode: 'requests' },
  { encoding: 'ndjson', mode: 'requests' }
];

const WAIT_MS = 20_000;

let postgres: PostgresServer;
beforeAll(async () => {
  postgres = await startPostgres();
});
afterAll(async () => {
  await postgres?.stop();
});

function descriptions(rows: TodoRow[]) {
  return Object.fromEntries(rows.map((row) => [row.id, row.description]));
}

/** Clients of the running test (closed after it; their logs and the service's are printed if it fails). */
function clientTracking(getEnv: () => SyncpointEnv | undefined) {
  const clients: TestClient[] = [];
  beforeEach(({ onTestFailed }) => {
    clients.length = 0;
    onTestFailed(() => {
      const env = getEnv();
      console.log(
        [
          '---- SDK logs ----',
          ...clients.flatMap((client) => client.logs),
          '---- service logs (last 60) ----',
          ...(env?.logs.slice(-60).map((line) => (line.length > 600 ? `${line.slice(0, 600)}…` : line)) ?? [])
        ].join('\n')
      );
    });
  });
  afterEach(async () => {
    await Promise.all(clients.map((client) => client.close()));
  });
  return clients;
}

for (const { encoding, mode } of COMBINATIONS) describe(`${encoding} stream, ${mode} checkpoints`, () => {
  const expectedContentType = encoding === 'bson' ? BSON_CONTENT_TYPE : NDJSON_CONTENT_TYPE;

  describe('global bucket', () => {
    let env: SyncpointEnv | undefined;
    const clients = clientTracking(() => env);
    const open = async (name: string) => {
      const client = await openClient(env!, { userId: 'user-1', encoding, checkpointMode: mode, name });
      clients.push(client);
      return client;
    };

    beforeAll(async () => {
      env = await startSyncpoint(postgres, {
        syncConfig: GLOBAL_SYNC_CONFIG,
        // Rows that exist before the service starts reach the bucket through the initial snapshot.
        setupSql: [`INSERT INTO todos (id, description) VALUES ('snap-1', 'from the snapshot'), ('snap-2', 'also snapshot')`]
      });
    });
    afterAll(async () => {
      await env?.stop();
    });

    test('first sync of the table', async () => {
      // And a row written after the service started, before the client connects (replicated by streaming).
      await env!.sourceDb.query(`INSERT INTO todos (id, description) VALUES ('pre-1', 'before connecting')`);
      const client = await open('first-sync');
      await withTimeout('waitForFirstSync', client.db.waitForFirstSync({ signal: AbortSignal.timeout(WAIT_MS) }), WAIT_MS + 1000);
      expect(client.db.currentStatus.hasSynced, 'the SDK reports a completed first sync').toBe(true);
      const rows = await waitFor('pre-1 to be synced', () => client.todos(), (rows) => rows.some((row) => row.id === 'pre-1'));
      expect(descriptions(rows)).toMatchObject({
        'snap-1': 'from the snapshot',
        'snap-2': 'also snapshot',
        'pre-1': 'before connecting'
      });
      expect(client.streamContentTypes()[0]).toBe(expectedContentType);
    });

    test('source INSERT, UPDATE and DELETE show up live', async () => {
      const client = await open('live');
      await withTimeout('waitForFirstSync', client.db.waitForFirstSync({ signal: AbortSignal.timeout(WAIT_MS) }), WAIT_MS + 1000);
      const id = `live-${randomUUID()}`;

      await env!.sourceDb.query(`INSERT INTO todos (id, description) VALUES ($1, 'inserted at the source')`, [id]);
      await waitFor('the INSERT', () => client.todos(), (rows) => descriptions(rows)[id] === 'inserted at the source');

      await env!.sourceDb.query(`UPDATE todos SET description = 'updated at the source' WHERE id = $1`, [id]);
      await waitFor('the UPDATE', () => client.todos(), (rows) => descriptions(rows)[id] === 'updated at the source');

      await env!.sourceDb.query(`DELETE FROM todos WHERE id = $1`, [id]);
      await waitFor('the DELETE', () => client.todos(), (rows) => !rows.some((row) => row.id === id));

      // One connection carried all of it.
      expect(client.streamContentTypes()).toEqual([expectedContentType]);
    });

    test('a local write is uploaded through uploadData, acknowledged, and the local row holds the server state', async () => {
      const client = await open('upload');
      await withTimeout('waitForFirstSync', client.db.waitForFirstSync({ signal: AbortSignal.timeout(WAIT_MS) }), WAIT_MS + 1000);
      const id = randomUUID();
      await client.db.execute(`INSERT INTO todos (id, description) VALUES (?, ?)`, [id, 'buy milk']);

      // The backend applied it to the source (upper-cased, owner set: the server's state).
      await waitFor(
        'the upload to reach the source',
        async () => (await env!.sourceDb.query(`SELECT description, owner_id FROM todos WHERE id = $1`, [id])).rows,
        (rows) => rows.length === 1
      );
      // The checkpoint that acknowledges the upload brings the server's state back into the local row.
      const rows = await waitFor('the local row to hold the server state', () => client.todos(), (rows) => descriptions(rows)[id] === 'BUY MILK');
      expect(rows.find((row) => row.id === id)).toEqual({ id, description: 'BUY MILK', owner_id: 'user-1' });
      const queue = await waitFor('the upload queue to be empty', () => client.db.getUploadQueueStats(), (stats) => stats.count === 0);
      expect(queue.count).toBe(0);

      // The acknowledgement went through the checkpoint route of the mode.
      const checkpointPath = mode === 'legacy' ? '/write-checkpoint2.json' : '/sync/checkpoint-request';
      const checkpointCalls = client.requests.filter((r) => r.path === checkpointPath);
      expect(checkpointCalls.length).toBeGreaterThan(0);
      expect(checkpointCalls.every((r) => r.status === 200)).toBe(true);
      expect(client.backend.uploads).toBe(1);

      // A later local edit round-trips the same way (PATCH).
      await client.db.execute(`UPDATE todos SET description = ? WHERE id = ?`, ['buy oat milk', id]);
      await waitFor('the PATCH to come back', () => client.todos(), (rows) => descriptions(rows)[id] === 'BUY OAT MILK');
      await waitFor('the upload queue to be empty again', () => client.db.getUploadQueueStats(), (stats) => stats.count === 0);
    });

    if (mode === 'requests') {
      test('db.requestCheckpoint() resolves, and the checkpoint includes source writes made before it', async () => {
        const client = await open('request-checkpoint');
        await withTimeout('waitForFirstSync', client.db.waitForFirstSync({ signal: AbortSignal.timeout(WAIT_MS) }), WAIT_MS + 1000);
        const id = `req-${randomUUID()}`;
        await env!.sourceDb.query(`INSERT INTO todos (id, description) VALUES ($1, 'written before the request')`, [id]);
        const request = await withTimeout('requestCheckpoint()', client.db.requestCheckpoint());
        await withTimeout('checkpoint request waitForSync()', request.waitForSync({ signal: AbortSignal.timeout(WAIT_MS) }), WAIT_MS + 1000);
        expect(request.hasSynced).toBe(true);
        // Applied with the checkpoint: no polling needed.
        expect(descriptions(await client.todos())[id]).toBe('written before the request');
        // An idle source: a second request is acknowledged too (marker-driven).
        const second = await withTimeout('second requestCheckpoint()', client.db.requestCheckpoint());
        await withTimeout('second waitForSync()', second.waitForSync({ signal: AbortSignal.timeout(WAIT_MS) }), WAIT_MS + 1000);
        expect(second.hasSynced).toBe(true);
      });
    } else {
      test('db.requestCheckpoint() is refused by the SDK in legacy mode', async () => {
        const client = await open('request-checkpoint-legacy');
        await withTimeout('waitForFirstSync', client.db.waitForFirstSync({ signal: AbortSignal.timeout(WAIT_MS) }), WAIT_MS + 1000);
        await expect(client.db.requestCheckpoint()).rejects.toThrow();
      });
    }
  });

  describe('per-user buckets', () => {
    let env: SyncpointEnv | undefined;
    const clients = clientTracking(() => env);

    beforeAll(async () => {
      env = await startSyncpoint(postgres, {
        syncConfig: BY_USER_SYNC_CONFIG,
        setupSql: [
          `INSERT INTO todos (id, description, owner_id) VALUES
             ('a-1', 'alice one', 'alice'), ('a-2', 'alice two', 'alice'),
             ('b-1', 'bob one', 'bob'), ('nobody-1', 'no owner', NULL)`
        ]
      });
    });
    afterAll(async () => {
      await env?.stop();
    });

    test('two users see only their own rows', async () => {
      const alice = await openClient(env!, { userId: 'alice', encoding, checkpointMode: mode });
      clients.push(alice);
      const bob = await openClient(env!, { userId: 'bob', encoding, checkpointMode: mode });
      clients.push(bob);
      await withTimeout(
        'both first syncs',
        Promise.all([
          alice.db.waitForFirstSync({ signal: AbortSignal.timeout(WAIT_MS) }),
          bob.db.waitForFirstSync({ signal: AbortSignal.timeout(WAIT_MS) })
        ]),
        WAIT_MS + 1000
      );
      expect(descriptions(await alice.todos())).toEqual({ 'a-1': 'alice one', 'a-2': 'alice two' });
      expect(descriptions(await bob.todos())).toEqual({ 'b-1': 'bob one' });

      // Live: a new row for bob reaches bob only; moving a row from alice to bob moves it between their databases.
      await env!.sourceDb.query(`INSERT INTO todos (id, description, owner_id) VALUES ('b-2', 'bob two', 'bob')`);
      await env!.sourceDb.query(`UPDATE todos SET owner_id = 'bob' WHERE id = 'a-2'`);
      await waitFor('bob to get b-2 and a-2', () => bob.todos(), (rows) => rows.length === 3);
      expect(descriptions(await bob.todos())).toEqual({ 'b-1': 'bob one', 'b-2': 'bob two', 'a-2': 'alice two' });
      await waitFor('alice to lose a-2', () => alice.todos(), (rows) => !rows.some((row) => row.id === 'a-2'));
      expect(descriptions(await alice.todos())).toEqual({ 'a-1': 'alice one' });

      // A local write by alice: uploaded with her as owner, acknowledged, and never seen by bob.
      const id = randomUUID();
      await alice.db.execute(`INSERT INTO todos (id, description) VALUES (?, ?)`, [id, 'alice local']);
      await waitFor('alice to hold the server state', () => alice.todos(), (rows) => descriptions(rows)[id] === 'ALICE LOCAL');
      await waitFor('alice upload queue empty', () => alice.db.getUploadQueueStats(), (stats) => stats.count === 0);
      // Bob is caught up past alice's write once a newer source write of his has arrived.
      await env!.sourceDb.query(`INSERT INTO todos (id, description, owner_id) VALUES ('b-3', 'bob three', 'bob')`);
      await waitFor('bob to get b-3', () => bob.todos(), (rows) => rows.some((row) => row.id === 'b-3'));
      expect((await bob.todos()).map((row) => row.id).sort()).toEqual(['a-2', 'b-1', 'b-2', 'b-3']);
      expect(alice.streamContentTypes()[0]).toBe(expectedContentType);
      expect(bob.streamContentTypes()[0]).toBe(expectedContentType);
    });
  });
});
