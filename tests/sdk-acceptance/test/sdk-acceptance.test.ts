import type { PostgresServer } from '@syncpoint/dev-postgres';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { BSON_CONTENT_TYPE, NDJSON_CONTENT_TYPE, type CheckpointMode, type Encoding } from './support/client.js';
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
import { BY_USER_SYNC_CONFIG, GLOBAL_SYNC_CONFIG, startPostgres } from './support/syncpoint.js';

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

let postgres: PostgresServer;
beforeAll(async () => {
  postgres = await startPostgres();
});
afterAll(async () => {
  await postgres?.stop();
});

for (const { encoding, mode } of COMBINATIONS)
  describe(`${encoding} stream, ${mode} checkpoints`, () => {
    const expectedContentType = encoding === 'bson' ? BSON_CONTENT_TYPE : NDJSON_CONTENT_TYPE;

    describe('global bucket', () => {
      const suite = syncpointSuite(() => postgres, { syncConfig: GLOBAL_SYNC_CONFIG, setupSql: [SNAPSHOT_ROWS_SQL] });
      const open = (name: string) => suite.open({ userId: 'user-1', encoding, checkpointMode: mode, name });

      test('first sync of the table', async () => {
        const client = await firstSyncOfTheTable(suite.env, () => open('first-sync'));
        expect(client.streamContentTypes()[0]).toBe(expectedContentType);
      });

      test('source INSERT, UPDATE and DELETE show up live', async () => {
        const client = await open('live');
        await sourceChangesShowUpLive(suite.env, client);
        // One connection carried all of it.
        expect(client.streamContentTypes()).toEqual([expectedContentType]);
      });

      test('a local write is uploaded through uploadData, acknowledged, and the local row holds the server state', async () => {
        await localWriteIsUploadedAndAcknowledged(suite.env, await open('upload'), mode);
      });

      if (mode === 'requests') {
        test('db.requestCheckpoint() resolves, and the checkpoint includes source writes made before it', async () => {
          await requestCheckpointResolves(suite.env, await open('request-checkpoint'));
        });
      } else {
        test('db.requestCheckpoint() is refused by the SDK in legacy mode', async () => {
          const client = await open('request-checkpoint-legacy');
          await waitForFirstSync(client);
          await expect(client.db.requestCheckpoint()).rejects.toThrow();
        });
      }
    });

    describe('per-user buckets', () => {
      const suite = syncpointSuite(() => postgres, { syncConfig: BY_USER_SYNC_CONFIG, setupSql: [PER_USER_ROWS_SQL] });

      test('two users see only their own rows', async () => {
        const alice = await suite.open({ userId: 'alice', encoding, checkpointMode: mode });
        const bob = await suite.open({ userId: 'bob', encoding, checkpointMode: mode });
        await twoUsersSeeOnlyTheirOwnRows(suite.env, alice, bob);
        expect(alice.streamContentTypes()[0]).toBe(expectedContentType);
        expect(bob.streamContentTypes()[0]).toBe(expectedContentType);
      });
    });
  });
