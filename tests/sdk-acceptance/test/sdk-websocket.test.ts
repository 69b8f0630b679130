import { SyncStreamConnectionMethod } from '@powersync/node';
import type { PostgresServer } from '@syncpoint/dev-postgres';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import type { CheckpointMode, TestClient } from './support/client.js';
import {
  PER_USER_ROWS_SQL,
  SNAPSHOT_ROWS_SQL,
  firstSyncOfTheTable,
  localWriteIsUploadedAndAcknowledged,
  requestCheckpointResolves,
  sourceChangesShowUpLive,
  syncpointSuite,
  twoUsersSeeOnlyTheirOwnRows,
  waitForFirstSync
} from './support/scenarios.js';
import { BY_USER_SYNC_CONFIG, GLOBAL_SYNC_CONFIG, startPostgres, type SyncpointEnv } from './support/syncpoint.js';

/**
 * The real `@powersync/node` SDK (1.1.0) against Syncpoint with `connectionMethod: WEB_SOCKET`: the sync stream as
 * RSocket over WebSocket (PROTOCOL §7.10; SETUP with the token, REQUEST_STREAM with the §7.2 body, one BSON line per
 * PAYLOAD frame under request-N flow control). The scenarios of sdk-acceptance.test.ts; the checkpoint routes stay
 * HTTP. Issue 5 item 5.
 */
const WEB_SOCKET = SyncStreamConnectionMethod.WEB_SOCKET;

let postgres: PostgresServer;
beforeAll(async () => {
  postgres = await startPostgres();
});
afterAll(async () => {
  await postgres?.stop();
});

/** Service log records of WebSocket sync streams opened (pino JSON lines). */
function webSocketStreamsOpened(env: SyncpointEnv, userId: string): Array<Record<string, unknown>> {
  return env.logs
    .map((line) => JSON.parse(line) as Record<string, unknown>)
    .filter(
      (record) => record.transport === 'websocket' && record.msg === 'sync stream opened' && record.user_id === userId
    );
}

/** The client never used HTTP streaming, and the service served it over WebSocket. */
function expectWebSocketOnly(env: SyncpointEnv, client: TestClient) {
  expect(client.requests.filter((request) => request.path === '/sync/stream')).toEqual([]);
  expect(webSocketStreamsOpened(env, client.backend.userId).length).toBeGreaterThan(0);
}

describe('WebSocket (RSocket) transport', () => {
  describe('global bucket', () => {
    const suite = syncpointSuite(() => postgres, { syncConfig: GLOBAL_SYNC_CONFIG, setupSql: [SNAPSHOT_ROWS_SQL] });
    const open = (name: string, mode: CheckpointMode = 'legacy', firstToken?: string) =>
      suite.open({
        userId: 'user-1',
        encoding: 'bson',
        checkpointMode: mode,
        name,
        connectionMethod: WEB_SOCKET,
        firstToken
      });

    test('first sync of the table', async () => {
      const client = await firstSyncOfTheTable(suite.env, () => open('ws-first-sync'));
      expectWebSocketOnly(suite.env, client);
      const [opened] = webSocketStreamsOpened(suite.env, 'user-1');
      expect(opened).toMatchObject({ format: 'bson', path: '/sync/stream' });
      expect(String(opened!.user_agent)).toContain('powersync-node');
    });

    test('source INSERT, UPDATE and DELETE show up live', async () => {
      const client = await open('ws-live');
      await sourceChangesShowUpLive(suite.env, client);
      expectWebSocketOnly(suite.env, client);
    });

    for (const mode of ['legacy', 'requests'] as const) {
      test(`a local write is uploaded and acknowledged (${mode} checkpoints)`, async () => {
        const client = await open(`ws-upload-${mode}`, mode);
        await localWriteIsUploadedAndAcknowledged(suite.env, client, mode);
        expectWebSocketOnly(suite.env, client);
      });
    }

    test('db.requestCheckpoint() resolves, and the checkpoint includes source writes made before it', async () => {
      const client = await open('ws-request-checkpoint', 'requests');
      await requestCheckpointResolves(suite.env, client);
      expectWebSocketOnly(suite.env, client);
    });

    test('an invalid token is rejected with its PSYNC_S21xx code; the SDK fetches a new one and syncs', async () => {
      const client = await open('ws-bad-token', 'legacy', 'not-a-jwt');
      await waitForFirstSync(client);
      expect(client.db.currentStatus.hasSynced).toBe(true);
      expect(client.backend.credentialsFetched).toBeGreaterThanOrEqual(2);
      expect(client.logs.some((line) => line.includes('PSYNC_S2101'))).toBe(true);
      expect(
        suite.env.logs.some((line) => line.includes('WebSocket setup rejected') && line.includes('PSYNC_S2101'))
      ).toBe(true);
    });
  });

  describe('per-user buckets', () => {
    const suite = syncpointSuite(() => postgres, { syncConfig: BY_USER_SYNC_CONFIG, setupSql: [PER_USER_ROWS_SQL] });

    test('two users see only their own rows', async () => {
      const alice = await suite.open({
        userId: 'alice',
        encoding: 'bson',
        checkpointMode: 'legacy',
        connectionMethod: WEB_SOCKET
      });
      const bob = await suite.open({
        userId: 'bob',
        encoding: 'bson',
        checkpointMode: 'legacy',
        connectionMethod: WEB_SOCKET
      });
      await twoUsersSeeOnlyTheirOwnRows(suite.env, alice, bob);
      expectWebSocketOnly(suite.env, alice);
      expectWebSocketOnly(suite.env, bob);
    });
  });
});
