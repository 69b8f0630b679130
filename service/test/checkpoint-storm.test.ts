import http from 'node:http';
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startServiceHarness, watchMarkers, type ServiceHarness } from './service-harness.js';

/**
 * Issue 6 item 4: a reconnect storm — 10,000 clients each sending a checkpoint request within one second — is
 * absorbed with a bounded number of storage statements and markers, on real Postgres.
 *
 * The route's concurrency limiter (CHECKPOINT_ROUTE_LIMITS: 1,000 running + 1,000 queued) answers the excess with 429, and
 * SDKs retry; so does this test (after 10–50 ms). 429s are counted and reported, not failures: every client
 * ends with its request stored and answered. The bound is on the work per request: batching must make the
 * storage calls, statements and markers a small fraction of the requests.
 */
let harness: ServiceHarness;
let markers: Awaited<ReturnType<typeof watchMarkers>>;

beforeAll(async () => {
  harness = await startServiceHarness({ role: 'api' });
  markers = await watchMarkers(harness.sourceDb, 'storm_test');
}, 60_000);
afterAll(async () => {
  await markers?.drop();
  await harness?.stop();
});

const CLIENTS = 10_000;

describe('reconnect storm (issue 6 item 4)', () => {
  it('10,000 clients within one second: every request answered, with few storage calls, statements and markers', async () => {
    const token = await harness.token('storm-user');
    const storage = harness.service.storage as typeof harness.service.storage & { pool: pg.Pool };
    const counts = { storageCalls: 0, statements: 0, rejected429: 0 };
    const original = storage.createManagedWriteCheckpoints.bind(storage);
    storage.createManagedWriteCheckpoints = async (batch) => {
      counts.storageCalls++;
      return original(batch);
    };
    const onAcquire = () => counts.statements++;
    storage.pool.on('acquire', onAcquire);
    await markers.take();

    const url = new URL(`${harness.service.url}/sync/checkpoint-request`);
    const agent = new http.Agent({ keepAlive: true, maxSockets: 256 });
    const post = (clientId: string) =>
      new Promise<{ status: number; body: string }>((resolve, reject) => {
        const request = http.request(
          url,
          { method: 'POST', agent, headers: { 'Content-Type': 'application/json', Authorization: `Token ${token}` } },
          (response) => {
            let body = '';
            response.on('data', (chunk) => (body += chunk));
            response.on('end', () => resolve({ status: response.statusCode ?? 0, body }));
          }
        );
        request.on('error', reject);
        request.end(JSON.stringify({ client_id: clientId, checkpoint_request_id: '1' }));
      });
    const client = async (index: number) => {
      await new Promise((resolve) => setTimeout(resolve, Math.random() * 1000)); // all within one second
      for (;;) {
        const { status, body } = await post(`c${index}`);
        if (status === 429) {
          counts.rejected429++;
          await new Promise((resolve) => setTimeout(resolve, 10 + Math.random() * 40));
          continue;
        }
        expect(status).toBe(200);
        expect(JSON.parse(body)).toEqual({ data: { checkpoint_request_id: '1' } });
        return;
      }
    };
    const started = performance.now();
    try {
      await Promise.all(Array.from({ length: CLIENTS }, (_, index) => client(index)));
    } finally {
      storage.pool.off('acquire', onAcquire);
      delete (storage as Partial<typeof storage>).createManagedWriteCheckpoints;
      agent.destroy();
    }
    const wallMs = performance.now() - started;
    const emitted = await markers.take();
    const { rows } = await harness.storageDb.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM powersync.write_checkpoints WHERE user_id LIKE 'storm-user/%'`
    );
    console.log(
      `storm: ${CLIENTS} clients in ${Math.round(wallMs)} ms; ${counts.storageCalls} storage calls, ${counts.statements} storage statements, ` +
        `${emitted} markers, ${counts.rejected429} answers 429 (retried)`
    );
    expect(rows[0]!.n).toBe(CLIENTS);
    // Batching: on average at least 20 requests share one storage call (one upsert) and one marker.
    expect(counts.storageCalls).toBeLessThanOrEqual(CLIENTS / 20);
    expect(counts.statements).toBeLessThanOrEqual(2 * counts.storageCalls + 10);
    expect(emitted).toBeLessThanOrEqual(counts.storageCalls);
  }, 120_000);
});
