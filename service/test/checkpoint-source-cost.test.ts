import { startEmbeddedPostgres, type PostgresServer } from '@syncpoint/dev-postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startServiceHarness, watchMarkers, type ServiceHarness } from './service-harness.js';

/**
 * Issue 6 item 1: a duplicate or stale checkpoint request whose stored checkpoint is already processed costs the
 * source nothing — no marker, not one byte of WAL. Bucket storage runs on its own Postgres server here, so the
 * source server's WAL position moves only for source writes (markers included); replication runs (unified role),
 * as on a real idle server.
 *
 * Heartbeat markers (every 60 s) and the checkpointer/bgwriter's own records could land in a window: a window
 * that saw any marker is measured again (a heartbeat comes at most once a minute, a marker caused by the
 * requests would show in every window), and records of the XLOG/Standby resource managers (checkpoints,
 * running-xacts snapshots) are subtracted when pg_walinspect can list them.
 */
let storageServer: PostgresServer;
let harness: ServiceHarness;
let markers: Awaited<ReturnType<typeof watchMarkers>>;
let token: string;
let walInspect = false;

const USER = 'cost-user';

beforeAll(async () => {
  storageServer = await startEmbeddedPostgres();
  harness = await startServiceHarness({ role: 'unified', storagePostgres: storageServer });
  token = await harness.token(USER);
  walInspect = await harness.sourceDb
    .query('CREATE EXTENSION IF NOT EXISTS pg_walinspect')
    .then(() => true)
    .catch(() => false);
  markers = await watchMarkers(harness.sourceDb, 'source_cost_test');
}, 90_000);
afterAll(async () => {
  await markers?.drop().catch(() => {});
  await harness?.stop();
  await storageServer?.stop();
});

async function post(clientId: string, id: bigint): Promise<string> {
  for (;;) {
    const response = await fetch(`${harness.service.url}/sync/checkpoint-request`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', Authorization: `Token ${token}` },
      body: JSON.stringify({ client_id: clientId, checkpoint_request_id: id.toString() })
    });
    if (response.status === 429) continue; // the route's limiter (CHECKPOINT_ROUTE_LIMITS); SDKs retry too
    expect(response.status).toBe(200);
    return ((await response.json()) as { data: { checkpoint_request_id: string } }).data.checkpoint_request_id;
  }
}

async function postMany(clientId: string, id: bigint, count: number, concurrency = 32): Promise<string[]> {
  const answers: string[] = [];
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < count) {
        next++;
        answers.push(await post(clientId, id));
      }
    })
  );
  return answers;
}

async function waitProcessed(clientId: string) {
  const deadline = Date.now() + 20_000;
  for (;;) {
    const { rows } = await harness.storageDb.query<{ processed_at_lsn: string | null }>(
      `SELECT processed_at_lsn FROM powersync.write_checkpoints WHERE user_id = $1`,
      [`${USER}/${clientId}`]
    );
    if (rows[0]?.processed_at_lsn) return;
    if (Date.now() > deadline) throw new Error(`request of ${clientId} was never processed`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

const currentLsn = async () =>
  (await harness.sourceDb.query<{ lsn: string }>('SELECT pg_current_wal_lsn()::text AS lsn')).rows[0]!.lsn;

/**
 * Source WAL bytes written while `work` ran, less checkpoint and running-xacts records. A window in which a (heartbeat)
 * marker or another background record (autovacuum on a busy machine) landed is measured again, up to 3 times: work
 * that really writes shows up in every window.
 */
async function sourceWalBytes(work: () => Promise<unknown>): Promise<{ bytes: number; windows: number }> {
  for (let window = 1; ; window++) {
    await markers.take();
    const started = Date.now();
    const before = await currentLsn();
    await work();
    const after = await currentLsn();
    const seen = await markers.take();
    const { rows } = await harness.sourceDb.query<{ bytes: string }>('SELECT pg_wal_lsn_diff($2, $1)::text AS bytes', [
      before,
      after
    ]);
    let bytes = Number(rows[0]!.bytes);
    let writers = '';
    if (bytes > 0 && walInspect) {
      const { rows: records } = await harness.sourceDb.query<{ bytes: string; writers: string | null }>(
        `SELECT coalesce(sum(record_length), 0)::text AS bytes, string_agg(DISTINCT resource_manager, ',') AS writers
         FROM pg_get_wal_records_info($1, $2) WHERE resource_manager NOT IN ('XLOG', 'Standby')`,
        [before, after]
      );
      bytes = Number(records[0]!.bytes);
      writers = records[0]!.writers ?? '';
    }
    console.log(
      `source WAL: ${rows[0]!.bytes} bytes raw, ${bytes} bytes from request work (${writers || 'none'}), ${seen} markers, ${Date.now() - started} ms, window ${window}`
    );
    if ((seen > 0 || bytes > 0) && window < 3) continue;
    expect(seen).toBe(0);
    return { bytes, windows: window };
  }
}

describe('checkpoint requests that need nothing cost the source nothing (issue 6 item 1)', () => {
  it('1,000 duplicate requests after the id was processed write 0 bytes of source WAL and no marker', async () => {
    expect(await post('dup', 7n)).toBe('7');
    await waitProcessed('dup');
    const { bytes } = await sourceWalBytes(async () =>
      expect(new Set(await postMany('dup', 7n, 1000))).toEqual(new Set(['7']))
    );
    expect(bytes).toBe(0);
  }, 60_000);

  it('1,000 stale requests (below the processed stored id) write 0 bytes of source WAL and no marker', async () => {
    expect(await post('stale', 50n)).toBe('50');
    await waitProcessed('stale');
    const { bytes } = await sourceWalBytes(async () =>
      expect(new Set(await postMany('stale', 3n, 1000))).toEqual(new Set(['50']))
    );
    expect(bytes).toBe(0);
  }, 60_000);

  it('a repeated request whose checkpoint is still pending emits the marker again (lost-marker retry)', async () => {
    // A head far ahead of the source keeps the record pending however far replication gets.
    await harness.storageDb.query(
      `INSERT INTO powersync.write_checkpoints (user_id, lsns, write_checkpoint, checkpoint_requested_at)
       VALUES ($1, '{"1": "FFFFFFFF/00000000"}', 9, now())`,
      [`${USER}/pending`]
    );
    await markers.take();
    expect(await post('pending', 9n)).toBe('9');
    expect(await markers.take()).toBeGreaterThanOrEqual(1);
  });
});
