import { randomUUID } from 'node:crypto';
import { SyncStreamConnectionMethod } from '@powersync/node';
import type { PostgresServer } from '@syncpoint/dev-postgres';
import { readFixture } from '@syncpoint/test-fixtures';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import type { TestClient } from './support/client.js';
import { WAIT_MS, syncpointSuite, waitForFirstSync } from './support/scenarios.js';
import { startPostgres } from './support/syncpoint.js';
import { waitFor, withTimeout } from './support/wait.js';

/**
 * Sync Streams with the real `@powersync/node` SDK (1.1.0), over HTTP streaming and over WebSocket (issue 15 item 5,
 * STREAMS §5.8–5.9): default streams on connect, `db.syncStream(name, params).subscribe()` with `waitForFirstSync()`,
 * more subscriptions, live changes, rows following a membership (index) table, unsubscribe with a TTL, the SDK's
 * subscription status, priority overrides, unknown streams and bad parameters beside working subscriptions, and
 * checkpoint requests while subscribed. One service for the file; each transport uses its own users and lists.
 */

const TRANSPORTS = [
  ['http', SyncStreamConnectionMethod.HTTP],
  ['ws', SyncStreamConnectionMethod.WEB_SOCKET]
] as const;

const SETUP_SQL = [
  `ALTER TABLE todos ADD COLUMN IF NOT EXISTS list_id text`,
  `CREATE TABLE list_members (id text PRIMARY KEY, list_id text, user_id text)`,
  ...TRANSPORTS.flatMap(([p]) => [
    `INSERT INTO todos (id, description, owner_id, list_id) VALUES
       ('${p}-own-1', 'my own', '${p}-user', NULL),
       ('${p}-l1-1', 'list one a', 'someone', '${p}-L1'), ('${p}-l1-2', 'list one b', 'someone', '${p}-L1'),
       ('${p}-l2-1', 'list two', 'someone', '${p}-L2'),
       ('${p}-l3-1', 'list three', 'someone', '${p}-L3'),
       ('${p}-l4-1', 'list four', 'someone', '${p}-L4')`,
    `INSERT INTO list_members VALUES ('${p}-m1', '${p}-L1', '${p}-user'), ('${p}-m2', '${p}-L2', '${p}-user'),
       ('${p}-m4', '${p}-L4', '${p}-user')`
  ])
];

const KEEPALIVE_MS = 1_000;

let postgres: PostgresServer;
beforeAll(async () => {
  postgres = await startPostgres();
});
afterAll(async () => {
  await postgres?.stop();
});

const ids = async (client: TestClient) => (await client.todos()).map((row) => row.id).sort();

describe('Sync Streams with the SDK', () => {
  // Short keepalives: the SDK drops an expired (unsubscribed) subscription only when a line arrives (STREAMS §5.9).
  const suite = syncpointSuite(() => postgres, {
    syncConfig: readFixture('sync-configs', 'streams-todo-lists', '.yaml'),
    setupSql: SETUP_SQL,
    keepaliveMs: KEEPALIVE_MS
  });

  describe.each(TRANSPORTS)('%s', (p, connectionMethod) => {
    const user = `${p}-user`;
    const open = (name: string, options: { includeDefaultStreams?: boolean; requests?: boolean } = {}) =>
      suite.open({
        userId: user,
        encoding: 'bson',
        checkpointMode: options.requests ? 'requests' : 'legacy',
        name: `${p}-${name}`,
        connectionMethod,
        includeDefaultStreams: options.includeDefaultStreams
      });
    const waitForIds = (client: TestClient, what: string, accept: (ids: string[]) => boolean) =>
      waitFor(what, () => ids(client), accept);

    test('default streams sync on connect; with includeDefaultStreams: false nothing syncs until a subscription', async () => {
      const client = await open('defaults');
      await waitForFirstSync(client);
      expect(await ids(client)).toEqual([`${p}-own-1`]);
      const status = client.db.currentStatus.forStream({ name: 'my_todos', parameters: null });
      expect(status?.subscription).toMatchObject({ name: 'my_todos', isDefault: true, hasSynced: true });

      const bare = await open('no-defaults', { includeDefaultStreams: false });
      await waitForFirstSync(bare);
      expect(await ids(bare)).toEqual([]);
      const subscription = await bare.db.syncStream('list_todos', { list: `${p}-L2` }).subscribe();
      await withTimeout('waitForFirstSync of the subscription', subscription.waitForFirstSync(), WAIT_MS);
      expect(await ids(bare)).toEqual([`${p}-l2-1`]);
    });

    test('subscribe, a second subscription, live changes, a membership change, status fields and a priority override', async () => {
      const client = await open('subscribe');
      await waitForFirstSync(client);
      const first = await client.db.syncStream('list_todos', { list: `${p}-L1` }).subscribe({ priority: 0 });
      await withTimeout('the first subscription to sync', first.waitForFirstSync(), WAIT_MS);
      expect(await ids(client)).toEqual([`${p}-l1-1`, `${p}-l1-2`, `${p}-own-1`]);
      const firstStatus = client.db.currentStatus.forStream({ name: 'list_todos', parameters: { list: `${p}-L1` } });
      expect(firstStatus?.subscription).toMatchObject({
        name: 'list_todos',
        parameters: { list: `${p}-L1` },
        active: true,
        isDefault: false,
        hasExplicitSubscription: true,
        hasSynced: true
      });
      expect(firstStatus?.priority).toBe(0);

      // A second subscription to the same stream with other parameters adds its rows.
      const second = await client.db.syncStream('list_todos', { list: `${p}-L2` }).subscribe();
      await withTimeout('the second subscription to sync', second.waitForFirstSync(), WAIT_MS);
      expect(await ids(client)).toContain(`${p}-l2-1`);
      expect(client.db.currentStatus.forStream({ name: 'list_todos', parameters: { list: `${p}-L2` } })?.priority).toBe(
        3
      );

      // Live insert, update and delete under a subscription.
      const live = `${p}-live-${randomUUID()}`;
      await suite.env.sourceDb.query(`INSERT INTO todos (id, description, list_id) VALUES ($1, 'live', $2)`, [
        live,
        `${p}-L1`
      ]);
      await waitFor(
        'the INSERT',
        () => client.todos(),
        (rows) => rows.some((row) => row.id === live)
      );
      await suite.env.sourceDb.query(`UPDATE todos SET description = 'live, updated' WHERE id = $1`, [live]);
      await waitFor(
        'the UPDATE',
        () => client.todos(),
        (rows) => rows.some((row) => row.id === live && row.description === 'live, updated')
      );
      await suite.env.sourceDb.query(`DELETE FROM todos WHERE id = $1`, [live]);
      await waitForIds(client, 'the DELETE', (rows) => !rows.includes(live));

      // A list the user is not a member of syncs nothing; joining it (the index table) brings its rows, leaving
      // removes them, without a new subscription.
      const third = await client.db.syncStream('list_todos', { list: `${p}-L3` }).subscribe();
      await withTimeout('the third subscription to sync', third.waitForFirstSync(), WAIT_MS);
      expect(await ids(client)).not.toContain(`${p}-l3-1`);
      await suite.env.sourceDb.query(`INSERT INTO list_members VALUES ($1, $2, $3)`, [`${p}-m3`, `${p}-L3`, user]);
      await waitForIds(client, 'the row of the joined list', (rows) => rows.includes(`${p}-l3-1`));
      await suite.env.sourceDb.query(`DELETE FROM list_members WHERE id = $1`, [`${p}-m3`]);
      await waitForIds(client, 'the row of the left list to go', (rows) => !rows.includes(`${p}-l3-1`));
      // A row moving to another list follows the subscriptions.
      await suite.env.sourceDb.query(`UPDATE todos SET list_id = $2 WHERE id = $1`, [`${p}-l1-2`, `${p}-L3`]);
      await waitForIds(client, 'the moved row to go', (rows) => !rows.includes(`${p}-l1-2`));
      await suite.env.sourceDb.query(`UPDATE todos SET list_id = $2 WHERE id = $1`, [`${p}-l1-2`, `${p}-L1`]);
      await waitForIds(client, 'the moved row to come back', (rows) => rows.includes(`${p}-l1-2`));
    });

    test('unsubscribe with a TTL removes the rows once it expires', async () => {
      const client = await open('unsubscribe');
      await waitForFirstSync(client);
      const subscription = await client.db.syncStream('list_todos', { list: `${p}-L4` }).subscribe({ ttl: 1 });
      await withTimeout('the subscription to sync', subscription.waitForFirstSync(), WAIT_MS);
      expect(await ids(client)).toContain(`${p}-l4-1`);
      subscription.unsubscribe();
      // The SDK re-evaluates expired subscriptions when a line arrives (STREAMS §5.9): the keepalive lines (every
      // second in this file, on both transports) let it reconnect without the subscription once the TTL is over.
      await waitForIds(client, 'the unsubscribed rows to go', (rows) => !rows.includes(`${p}-l4-1`));
      expect(
        client.db.currentStatus.forStream({ name: 'list_todos', parameters: { list: `${p}-L4` } })?.subscription
          .active ?? false
      ).toBe(false);
    });

    test('an unknown stream and bad parameters affect only their subscription; the others keep syncing', async () => {
      const client = await open('bad-subscriptions');
      await waitForFirstSync(client);
      const unknown = await client.db.syncStream('no_such_stream', { x: 1 }).subscribe();
      const bad = await client.db.syncStream('todos_by_id', { ids: 'not json' }).subscribe();
      const good = await client.db.syncStream('list_todos', { list: `${p}-L2` }).subscribe();
      await withTimeout('the good subscription to sync', good.waitForFirstSync(), WAIT_MS);
      expect(await ids(client)).toContain(`${p}-l2-1`);
      // The unknown stream is not served: the SDK shows it inactive (its waitForFirstSync resolves, STREAMS §5.9).
      await withTimeout('the unknown subscription', unknown.waitForFirstSync(), WAIT_MS);
      expect(
        client.db.currentStatus.forStream({ name: 'no_such_stream', parameters: { x: 1 } })?.subscription.active
      ).toBe(false);
      // The stream with bad parameters is served without buckets; the connection stays up and keeps syncing.
      expect(bad.name).toBe('todos_by_id');
      const live = `${p}-after-bad-${randomUUID()}`;
      await suite.env.sourceDb.query(`INSERT INTO todos (id, description, list_id) VALUES ($1, 'still live', $2)`, [
        live,
        `${p}-L2`
      ]);
      await waitForIds(client, 'a live row after the bad subscription', (rows) => rows.includes(live));
      const errors = suite.env.logs.filter((line) => line.includes('"level":50'));
      expect(errors, 'no service error logs').toEqual([]);
    });

    test('checkpoint requests (checkpointMode requests, db.requestCheckpoint()) are acknowledged while subscribed', async () => {
      const client = await open('requests', { requests: true });
      await waitForFirstSync(client);
      // The SDK seeds its request ids with a checkpoint request on connect; a subscription change reconnects and
      // aborts that request client-side, so the subscription is made once it has been answered.
      await waitFor(
        'the seeding checkpoint request',
        () =>
          Promise.resolve(
            client.requests.filter((r) => r.path === '/sync/checkpoint-request' && r.status === 200).length
          ),
        (answered) => answered > 0
      );
      const subscription = await client.db.syncStream('list_todos', { list: `${p}-L1` }).subscribe();
      await withTimeout('the subscription to sync', subscription.waitForFirstSync(), WAIT_MS);
      const id = `${p}-req-${randomUUID()}`;
      await suite.env.sourceDb.query(
        `INSERT INTO todos (id, description, list_id) VALUES ($1, 'before the request', $2)`,
        [id, `${p}-L1`]
      );
      const request = await withTimeout('requestCheckpoint()', client.db.requestCheckpoint());
      await withTimeout('waitForSync()', request.waitForSync({ signal: AbortSignal.timeout(WAIT_MS) }), WAIT_MS + 1000);
      expect(request.hasSynced).toBe(true);
      expect(await ids(client)).toContain(id);

      // A local write is uploaded and acknowledged through the checkpoint-request route.
      const local = randomUUID();
      await client.db.execute(`INSERT INTO todos (id, description) VALUES (?, ?)`, [local, 'local write']);
      await waitFor(
        'the acknowledged upload to hold the server state',
        () => client.todos(),
        (rows) => rows.some((row) => row.id === local && row.description === 'LOCAL WRITE')
      );
      expect(client.requests.some((r) => r.path === '/sync/checkpoint-request' && r.status === 200)).toBe(true);
    });
  });
});
