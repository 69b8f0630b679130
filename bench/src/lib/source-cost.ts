import { signDevToken } from '@syncpoint/service';
import pg from 'pg';
import type { BenchService } from './embedded-service.js';

const SLOT = 'syncpoint_bench_source_cost';

export interface SourceCostResult {
  requests: number;
  /** Source WAL bytes written by the requests (background records excluded when pg_walinspect can list them). */
  walBytes: number;
  /** Raw WAL position difference of the window. */
  rawWalBytes: number;
  markers: number;
  windows: number;
  elapsedMs: number;
}

/**
 * Issue 6 item 1: WAL the source writes for duplicate and stale checkpoint requests whose stored checkpoint is
 * already processed. Needs a bench service whose bucket storage is on its own server (`separateStorage`), with
 * replication running. A window in which a marker shows (the 60 s heartbeat) is measured again; XLOG/Standby
 * records (checkpoints, running-xacts snapshots) are excluded through pg_walinspect when it is available.
 */
export async function measureSourceCost(
  bench: BenchService,
  requests: number
): Promise<{ duplicate: SourceCostResult; stale: SourceCostResult }> {
  const source = new pg.Client({ connectionString: bench.sourceUrl });
  const storage = new pg.Client({ connectionString: bench.storageUrl });
  await source.connect();
  await storage.connect();
  try {
    const walInspect = await source
      .query('CREATE EXTENSION IF NOT EXISTS pg_walinspect')
      .then(() => true)
      .catch(() => false);
    await source.query(`SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1`, [
      SLOT
    ]);
    await source.query(`SELECT pg_create_logical_replication_slot($1, 'test_decoding')`, [SLOT]);
    const token = await signDevToken(bench.devKey, { sub: 'source-cost' });
    const post = async (clientId: string, id: number) => {
      for (;;) {
        const response = await fetch(`${bench.url}/sync/checkpoint-request`, {
          method: 'POST',
          headers: { 'Content-Type': 'application/json', Authorization: `Token ${token}` },
          body: JSON.stringify({ client_id: clientId, checkpoint_request_id: String(id) })
        });
        await response.arrayBuffer();
        if (response.status === 429) continue;
        if (response.status !== 200) throw new Error(`checkpoint request answered ${response.status}`);
        return;
      }
    };
    const postMany = async (clientId: string, id: number) => {
      let sent = 0;
      await Promise.all(
        Array.from({ length: 16 }, async () => {
          while (sent < requests) {
            sent++;
            await post(clientId, id);
          }
        })
      );
    };
    const waitProcessed = async (clientId: string) => {
      const deadline = Date.now() + 30_000;
      for (;;) {
        const { rows } = await storage.query<{ processed_at_lsn: string | null }>(
          `SELECT processed_at_lsn FROM powersync.write_checkpoints WHERE user_id = $1`,
          [`source-cost/${clientId}`]
        );
        if (rows[0]?.processed_at_lsn) return;
        if (Date.now() > deadline) throw new Error('the seed request was never processed by replication');
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
    };
    const takeMarkers = async () => {
      const { rows } = await source.query<{ markers: number }>(
        `SELECT count(*) FILTER (WHERE data LIKE 'message: %prefix: powersync%')::int AS markers FROM pg_logical_slot_get_changes($1, NULL, NULL)`,
        [SLOT]
      );
      return rows[0]!.markers;
    };
    const lsn = async () =>
      (await source.query<{ lsn: string }>('SELECT pg_current_wal_lsn()::text AS lsn')).rows[0]!.lsn;
    const measure = async (clientId: string, id: number): Promise<SourceCostResult> => {
      for (let windows = 1; ; windows++) {
        await takeMarkers();
        const before = await lsn();
        const started = performance.now();
        await postMany(clientId, id);
        const elapsedMs = performance.now() - started;
        const after = await lsn();
        const markers = await takeMarkers();
        if (markers > 0 && windows < 3) continue; // a heartbeat landed in the window
        const { rows } = await source.query<{ bytes: string }>('SELECT pg_wal_lsn_diff($2, $1)::text AS bytes', [
          before,
          after
        ]);
        const rawWalBytes = Number(rows[0]!.bytes);
        let walBytes = rawWalBytes;
        if (walBytes > 0 && walInspect) {
          const { rows: records } = await source.query<{ bytes: string }>(
            `SELECT coalesce(sum(record_length), 0)::text AS bytes FROM pg_get_wal_records_info($1, $2) WHERE resource_manager NOT IN ('XLOG', 'Standby')`,
            [before, after]
          );
          walBytes = Number(records[0]!.bytes);
        }
        return { requests, walBytes, rawWalBytes, markers, windows, elapsedMs };
      }
    };

    await post('dup', 7);
    await waitProcessed('dup');
    const duplicate = await measure('dup', 7);
    await post('stale', 50);
    await waitProcessed('stale');
    const stale = await measure('stale', 3);
    return { duplicate, stale };
  } finally {
    await source.query('SELECT pg_drop_replication_slot($1)', [SLOT]).catch(() => {});
    await source.end();
    await storage.end();
  }
}
