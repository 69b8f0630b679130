import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startServiceHarness, type ServiceHarness } from './service-harness.js';
import { openSyncStream } from './sync-stream-client.js';

/**
 * Issue 6 item 3: the replication process deletes client-requested records older than
 * `checkpoint_request_retention_minutes` periodically; pending and generated records survive; a client whose
 * record was deleted and restarts at id 1 is acknowledged normally.
 */
let harness: ServiceHarness;
let token: string;

beforeAll(async () => {
  harness = await startServiceHarness({
    role: 'unified',
    retentionIntervalMs: 200,
    config: { api: { parameters: { checkpoint_request_retention_minutes: 1 } } }
  });
  token = await harness.token('retained');
  const deadline = Date.now() + 30_000;
  while (!(await harness.service.storage.getServingCheckpoint())?.checkpoint.lsn) {
    if (Date.now() > deadline) throw new Error('replication did not reach a first checkpoint');
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}, 60_000);
afterAll(async () => harness?.stop());

async function request(clientId: string, id: number): Promise<string> {
  const response = await fetch(`${harness.service.url}/sync/checkpoint-request`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', Authorization: `Token ${token}` },
    body: JSON.stringify({ client_id: clientId, checkpoint_request_id: String(id) })
  });
  expect(response.status).toBe(200);
  return ((await response.json()) as { data: { checkpoint_request_id: string } }).data.checkpoint_request_id;
}

async function acknowledged(clientId: string, id: string) {
  const stream = await openSyncStream(harness.service.url, token, { client_id: clientId, raw_data: true });
  try {
    await stream.until((line) => (line.checkpoint_diff ?? line.checkpoint)?.write_checkpoint === id, 15_000);
  } finally {
    await stream.close();
  }
}

const records = async () =>
  (
    await harness.storageDb.query<{ user_id: string }>(
      `SELECT user_id FROM powersync.write_checkpoints ORDER BY user_id`
    )
  ).rows.map((row) => row.user_id);

describe('checkpoint request retention in the replication process (issue 6 item 3)', () => {
  it('deletes expired processed requests, keeps pending and generated ones; a restarted client is acknowledged at 1', async () => {
    expect(await request('device', 5)).toBe('5');
    await acknowledged('device', '5');
    await harness.storageDb.query(
      `INSERT INTO powersync.write_checkpoints (user_id, lsns, write_checkpoint, checkpoint_requested_at)
       VALUES ('retained/pending', '{"1": "FFFFFFFF/00000000"}', 3, now() - interval '1 hour'),
              ('retained/legacy', '{"1": "00000000/00000001"}', 9, NULL)`
    );
    await harness.storageDb.query(
      `UPDATE powersync.write_checkpoints SET checkpoint_requested_at = now() - interval '2 minutes' WHERE user_id = 'retained/device'`
    );
    const deadline = Date.now() + 10_000;
    while ((await records()).includes('retained/device')) {
      if (Date.now() > deadline) throw new Error('the periodic retention job did not delete the expired request');
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    expect(await records()).toEqual(['retained/legacy', 'retained/pending']);

    // The client lost its state and starts again at 1.
    expect(await request('device', 1)).toBe('1');
    await acknowledged('device', '1');
  }, 40_000);
});
