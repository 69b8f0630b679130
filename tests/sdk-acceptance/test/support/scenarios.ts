import { randomUUID } from 'node:crypto';
import type { PostgresServer } from '@syncpoint/dev-postgres';
import { afterAll, afterEach, beforeAll, beforeEach, expect } from 'vitest';
import { openClient, type CheckpointMode, type TestClient, type TodoRow } from './client.js';
import { startSyncpoint, type SyncpointEnv } from './syncpoint.js';
import { waitFor, withTimeout } from './wait.js';

/**
 * The acceptance scenarios, shared by the HTTP streaming and the WebSocket test files: each transport opens its
 * clients its own way and checks afterwards that the transport it meant was the one used.
 */
export const WAIT_MS = 20_000;

/** Rows of the global bucket that exist before the service starts (they arrive through the initial snapshot). */
export const SNAPSHOT_ROWS_SQL = `INSERT INTO todos (id, description) VALUES ('snap-1', 'from the snapshot'), ('snap-2', 'also snapshot')`;

/** Rows of the per-user scenario: two of alice's, one of bob's, one of nobody's. */
export const PER_USER_ROWS_SQL = `INSERT INTO todos (id, description, owner_id) VALUES
  ('a-1', 'alice one', 'alice'), ('a-2', 'alice two', 'alice'),
  ('b-1', 'bob one', 'bob'), ('nobody-1', 'no owner', NULL)`;

function descriptions(rows: TodoRow[]) {
  return Object.fromEntries(rows.map((row) => [row.id, row.description]));
}

export function waitForFirstSync(client: TestClient) {
  return withTimeout(
    'waitForFirstSync',
    client.db.waitForFirstSync({ signal: AbortSignal.timeout(WAIT_MS) }),
    WAIT_MS + 1000
  );
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

/**
 * For one describe block: a Syncpoint with these sync rules and rows, started before its tests and stopped after, and
 * `open` for clients that are closed after each test (their logs printed if it fails).
 */
export function syncpointSuite(
  postgres: () => PostgresServer,
  options: { syncConfig: string; setupSql: string[]; keepaliveMs?: number }
) {
  let env: SyncpointEnv | undefined;
  const clients = clientTracking(() => env);
  beforeAll(async () => {
    env = await startSyncpoint(postgres(), options);
  });
  afterAll(async () => {
    await env?.stop();
  });
  return {
    get env(): SyncpointEnv {
      return env!;
    },
    async open(clientOptions: Parameters<typeof openClient>[1]): Promise<TestClient> {
      const client = await openClient(env!, clientOptions);
      clients.push(client);
      return client;
    }
  };
}

/** The snapshot rows and a row written after the service started, before the client connects (streamed). */
export async function firstSyncOfTheTable(env: SyncpointEnv, open: () => Promise<TestClient>): Promise<TestClient> {
  await env.sourceDb.query(`INSERT INTO todos (id, description) VALUES ('pre-1', 'before connecting')`);
  const client = await open();
  await waitForFirstSync(client);
  expect(client.db.currentStatus.hasSynced, 'the SDK reports a completed first sync').toBe(true);
  const rows = await waitFor(
    'pre-1 to be synced',
    () => client.todos(),
    (rows) => rows.some((row) => row.id === 'pre-1')
  );
  expect(descriptions(rows)).toMatchObject({
    'snap-1': 'from the snapshot',
    'snap-2': 'also snapshot',
    'pre-1': 'before connecting'
  });
  return client;
}

export async function sourceChangesShowUpLive(env: SyncpointEnv, client: TestClient): Promise<void> {
  await waitForFirstSync(client);
  const id = `live-${randomUUID()}`;
  await env.sourceDb.query(`INSERT INTO todos (id, description) VALUES ($1, 'inserted at the source')`, [id]);
  await waitFor(
    'the INSERT',
    () => client.todos(),
    (rows) => descriptions(rows)[id] === 'inserted at the source'
  );
  await env.sourceDb.query(`UPDATE todos SET description = 'updated at the source' WHERE id = $1`, [id]);
  await waitFor(
    'the UPDATE',
    () => client.todos(),
    (rows) => descriptions(rows)[id] === 'updated at the source'
  );
  await env.sourceDb.query(`DELETE FROM todos WHERE id = $1`, [id]);
  await waitFor(
    'the DELETE',
    () => client.todos(),
    (rows) => !rows.some((row) => row.id === id)
  );
}

/**
 * A local write goes through the connector's uploadData to the source; the checkpoint that acknowledges it (through
 * the checkpoint route of `mode`) brings the server's state (upper-cased, owner set) back into the local row.
 */
export async function localWriteIsUploadedAndAcknowledged(
  env: SyncpointEnv,
  client: TestClient,
  mode: CheckpointMode
): Promise<void> {
  await waitForFirstSync(client);
  const id = randomUUID();
  await client.db.execute(`INSERT INTO todos (id, description) VALUES (?, ?)`, [id, 'buy milk']);
  await waitFor(
    'the upload to reach the source',
    async () =>
      (
        await env.sourceDb.query<{ description: string; owner_id: string | null }>(
          `SELECT description, owner_id FROM todos WHERE id = $1`,
          [id]
        )
      ).rows,
    (rows) => rows.length === 1
  );
  const rows = await waitFor(
    'the local row to hold the server state',
    () => client.todos(),
    (rows) => descriptions(rows)[id] === 'BUY MILK'
  );
  expect(rows.find((row) => row.id === id)).toEqual({ id, description: 'BUY MILK', owner_id: 'user-1' });
  await waitFor(
    'the upload queue to be empty',
    () => client.db.getUploadQueueStats(),
    (stats) => stats.count === 0
  );

  const checkpointPath = mode === 'legacy' ? '/write-checkpoint2.json' : '/sync/checkpoint-request';
  const checkpointCalls = client.requests.filter((r) => r.path === checkpointPath);
  expect(checkpointCalls.length).toBeGreaterThan(0);
  expect(checkpointCalls.every((r) => r.status === 200)).toBe(true);
  expect(client.backend.uploads).toBe(1);

  // A later local edit round-trips the same way (PATCH).
  await client.db.execute(`UPDATE todos SET description = ? WHERE id = ?`, ['buy oat milk', id]);
  await waitFor(
    'the PATCH to come back',
    () => client.todos(),
    (rows) => descriptions(rows)[id] === 'BUY OAT MILK'
  );
  await waitFor(
    'the upload queue to be empty again',
    () => client.db.getUploadQueueStats(),
    (stats) => stats.count === 0
  );
}

/** `requests` mode: db.requestCheckpoint() resolves with source writes made before it, also on an idle source. */
export async function requestCheckpointResolves(env: SyncpointEnv, client: TestClient): Promise<void> {
  await waitForFirstSync(client);
  const id = `req-${randomUUID()}`;
  await env.sourceDb.query(`INSERT INTO todos (id, description) VALUES ($1, 'written before the request')`, [id]);
  const request = await withTimeout('requestCheckpoint()', client.db.requestCheckpoint());
  await withTimeout(
    'checkpoint request waitForSync()',
    request.waitForSync({ signal: AbortSignal.timeout(WAIT_MS) }),
    WAIT_MS + 1000
  );
  expect(request.hasSynced).toBe(true);
  // Applied with the checkpoint: no polling needed.
  expect(descriptions(await client.todos())[id]).toBe('written before the request');
  // An idle source: a second request is acknowledged too (marker-driven).
  const second = await withTimeout('second requestCheckpoint()', client.db.requestCheckpoint());
  await withTimeout(
    'second waitForSync()',
    second.waitForSync({ signal: AbortSignal.timeout(WAIT_MS) }),
    WAIT_MS + 1000
  );
  expect(second.hasSynced).toBe(true);
}

/**
 * Per-user buckets: alice and bob see only their own rows, live changes move rows between them, and alice's local
 * write is uploaded with her as owner and never reaches bob.
 */
export async function twoUsersSeeOnlyTheirOwnRows(
  env: SyncpointEnv,
  alice: TestClient,
  bob: TestClient
): Promise<void> {
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

  await env.sourceDb.query(`INSERT INTO todos (id, description, owner_id) VALUES ('b-2', 'bob two', 'bob')`);
  await env.sourceDb.query(`UPDATE todos SET owner_id = 'bob' WHERE id = 'a-2'`);
  await waitFor(
    'bob to get b-2 and a-2',
    () => bob.todos(),
    (rows) => rows.length === 3
  );
  expect(descriptions(await bob.todos())).toEqual({ 'b-1': 'bob one', 'b-2': 'bob two', 'a-2': 'alice two' });
  await waitFor(
    'alice to lose a-2',
    () => alice.todos(),
    (rows) => !rows.some((row) => row.id === 'a-2')
  );
  expect(descriptions(await alice.todos())).toEqual({ 'a-1': 'alice one' });

  const id = randomUUID();
  await alice.db.execute(`INSERT INTO todos (id, description) VALUES (?, ?)`, [id, 'alice local']);
  await waitFor(
    'alice to hold the server state',
    () => alice.todos(),
    (rows) => descriptions(rows)[id] === 'ALICE LOCAL'
  );
  await waitFor(
    'alice upload queue empty',
    () => alice.db.getUploadQueueStats(),
    (stats) => stats.count === 0
  );
  // Bob is caught up past alice's write once a newer source write of his has arrived.
  await env.sourceDb.query(`INSERT INTO todos (id, description, owner_id) VALUES ('b-3', 'bob three', 'bob')`);
  await waitFor(
    'bob to get b-3',
    () => bob.todos(),
    (rows) => rows.some((row) => row.id === 'b-3')
  );
  expect((await bob.todos()).map((row) => row.id).sort()).toEqual(['a-2', 'b-1', 'b-2', 'b-3']);
}
