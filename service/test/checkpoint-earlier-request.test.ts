import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeCheckpointOf } from '@syncpoint/test-fixtures';
import { startServiceHarness, type ServiceHarness } from './service-harness.js';
import { openSyncStream } from './sync-stream-client.js';

/**
 * Issue 6 item 2, through the service: replication is held back (API role, no replicator), and the checkpoint
 * replication would commit is written by hand, at an LSN between the heads of two requests.
 */
let harness: ServiceHarness;
let streamId: number;

beforeAll(async () => {
  harness = await startServiceHarness({ role: 'api' });
  const { rows } = await harness.storageDb.query<{ id: number }>(
    `SELECT id FROM powersync.sync_rules ORDER BY id DESC LIMIT 1`
  );
  streamId = rows[0]!.id;
}, 60_000);
afterAll(async () => harness?.stop());

/** What replication does at a commit: set the stream's checkpoint and notify (PROTOCOL §6.1). */
async function commitCheckpoint(opId: number, lsn: string) {
  await harness.storageDb.query(
    `UPDATE powersync.sync_rules SET state = 'ACTIVE', snapshot_done = true, last_checkpoint = $2, last_checkpoint_lsn = $3::pg_lsn
     WHERE id = $1`,
    [streamId, opId, lsn]
  );
  await harness.storageDb.query(`SELECT pg_notify('powersynccheckpoints', $1)`, [
    JSON.stringify({ active_checkpoint: { id: streamId, last_checkpoint: String(opId), last_checkpoint_lsn: lsn } })
  ]);
}

async function request(token: string, id: number): Promise<string> {
  const response = await fetch(`${harness.service.url}/sync/checkpoint-request`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', Authorization: `Token ${token}` },
    body: JSON.stringify({ client_id: 'device', checkpoint_request_id: String(id) })
  });
  expect(response.status).toBe(200);
  const { rows } = await harness.storageDb.query<{ head: string }>(
    `SELECT lsns->>'1' AS head FROM powersync.write_checkpoints WHERE user_id = 'early-user/device'`
  );
  return rows[0]!.head;
}

describe('an earlier checkpoint request is not delayed by a later one (issue 6 item 2)', () => {
  it('request 42 (head A) then 43 (head B) before replication reaches A: a checkpoint at A acknowledges 42', async () => {
    const token = await harness.token('early-user');
    await commitCheckpoint(1, '0/1');
    const stream = await openSyncStream(harness.service.url, token, { client_id: 'device', raw_data: true });
    try {
      await stream.until((line) => 'checkpoint_complete' in line);
      const headA = await request(token, 42);
      await harness.sourceDb.query(`INSERT INTO todos VALUES ('x', 'moves the source WAL past A')`);
      const headB = await request(token, 43);
      expect(headB > headA).toBe(true);

      await commitCheckpoint(2, headA);
      const atA = await stream.until(
        (line) => (line.checkpoint_diff ?? line.checkpoint)?.write_checkpoint !== undefined
      );
      expect(writeCheckpointOf(atA.at(-1))).toBe('42');

      await commitCheckpoint(3, headB);
      const atB = await stream.until((line) => (line.checkpoint_diff ?? line.checkpoint)?.write_checkpoint === '43');
      expect(atB.length).toBeGreaterThan(0);
    } finally {
      await stream.close();
    }
  }, 30_000);
});
