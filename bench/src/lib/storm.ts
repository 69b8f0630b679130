import { signDevToken } from '@syncpoint/service';
import pg from 'pg';
import type { BenchService } from './embedded-service.js';
import type { LoadClient } from './load-client.js';

const SLOT = 'syncpoint_bench_storm';

export interface StormResult {
  clients: number;
  wallMs: number;
  storageCalls: number;
  markers: number;
  rejected429: number;
}

/**
 * Issue 6 item 4: a reconnect storm against the bench service, its client run by `client` (a worker thread by
 * default, so the 10,000 requests are not sent from the service's own event loop). Counts the storage calls and the
 * source markers the storm caused.
 */
export async function runStorm(bench: BenchService, clients: number, client: LoadClient): Promise<StormResult> {
  const source = new pg.Client({ connectionString: bench.sourceUrl });
  await source.connect();
  const storage = bench.service.storage;
  // Wrapped on the instance and called with it as `this` below; restored as the same function afterwards.
  // eslint-disable-next-line @typescript-eslint/unbound-method
  const original = storage.createManagedWriteCheckpoints;
  let storageCalls = 0;
  storage.createManagedWriteCheckpoints = (batch) => {
    storageCalls++;
    return original.call(storage, batch);
  };
  try {
    await source.query(`SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1`, [
      SLOT
    ]);
    await source.query(`SELECT pg_create_logical_replication_slot($1, 'test_decoding')`, [SLOT]);
    const token = await signDevToken(bench.devKey, { sub: `storm-${Date.now().toString(36)}` });
    const { wallMs, rejected429 } = await client.storm({ url: bench.url, token, clients });
    const { rows } = await source.query<{ markers: number }>(
      `SELECT count(*) FILTER (WHERE data LIKE 'message: %prefix: powersync%')::int AS markers FROM pg_logical_slot_get_changes($1, NULL, NULL)`,
      [SLOT]
    );
    return { clients, wallMs, storageCalls, markers: rows[0]!.markers, rejected429 };
  } finally {
    storage.createManagedWriteCheckpoints = original;
    await source.query('SELECT pg_drop_replication_slot($1)', [SLOT]).catch(() => {});
    await source.end();
  }
}
