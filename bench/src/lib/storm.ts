import http from 'node:http';
import { signDevToken } from '@syncpoint/service';
import pg from 'pg';
import type { BenchService } from './embedded-service.js';

const SLOT = 'syncpoint_bench_storm';

export interface StormResult {
  clients: number;
  wallMs: number;
  storageCalls: number;
  markers: number;
  rejected429: number;
}

/**
 * Issue 6 item 4: `clients` distinct clients each send one checkpoint request, spread over one second, over
 * keep-alive connections (at most 256 sockets). A 429 from the route's limiter (100 running + 100 queued) is
 * retried after 10–50 ms, as SDKs do. Wall time runs from the first send to the last answer.
 */
export async function runStorm(bench: BenchService, clients: number): Promise<StormResult> {
  const source = new pg.Client({ connectionString: bench.sourceUrl });
  await source.connect();
  const storage = bench.service.storage;
  const original = storage.createManagedWriteCheckpoints;
  let storageCalls = 0;
  let rejected429 = 0;
  storage.createManagedWriteCheckpoints = (batch) => {
    storageCalls++;
    return original.call(storage, batch);
  };
  const agent = new http.Agent({ keepAlive: true, maxSockets: 256 });
  try {
    await source.query(`SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1`, [SLOT]);
    await source.query(`SELECT pg_create_logical_replication_slot($1, 'test_decoding')`, [SLOT]);
    const token = await signDevToken(bench.devKey, { sub: `storm-${Date.now().toString(36)}` });
    const url = new URL(`${bench.url}/sync/checkpoint-request`);
    const post = (clientId: string) =>
      new Promise<number>((resolve, reject) => {
        const request = http.request(url, { method: 'POST', agent, headers: { 'Content-Type': 'application/json', Authorization: `Token ${token}` } }, (response) => {
          response.resume();
          response.on('end', () => resolve(response.statusCode ?? 0));
        });
        request.on('error', reject);
        request.end(JSON.stringify({ client_id: clientId, checkpoint_request_id: '1' }));
      });
    const started = performance.now();
    await Promise.all(
      Array.from({ length: clients }, async (_, index) => {
        await new Promise((resolve) => setTimeout(resolve, (index / clients) * 1000));
        for (;;) {
          const status = await post(`c${index}`);
          if (status === 200) return;
          if (status !== 429) throw new Error(`storm request answered ${status}`);
          rejected429++;
          await new Promise((resolve) => setTimeout(resolve, 10 + Math.random() * 40));
        }
      })
    );
    const wallMs = performance.now() - started;
    const { rows } = await source.query<{ markers: number }>(
      `SELECT count(*) FILTER (WHERE data LIKE 'message: %prefix: powersync%')::int AS markers FROM pg_logical_slot_get_changes($1, NULL, NULL)`,
      [SLOT]
    );
    return { clients, wallMs, storageCalls, markers: rows[0]!.markers, rejected429 };
  } finally {
    storage.createManagedWriteCheckpoints = original;
    agent.destroy();
    await source.query('SELECT pg_drop_replication_slot($1)', [SLOT]).catch(() => {});
    await source.end();
  }
}
