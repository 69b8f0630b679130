import { cpus, loadavg } from 'node:os';
import { performance } from 'node:perf_hooks';
import { testPostgresServer, type PostgresServer } from '@syncpoint/dev-postgres';
import { DEV_AUDIENCE, createModuleRegistry } from '@syncpoint/service';
import { parseConfig, silentLogger, startService, type RunningService } from '@syncpoint/service-core';
import { createPostgresStorage, type PostgresBucketStorage } from '@syncpoint/storage-postgres';
import pg from 'pg';
import { numberFlag, type Benchmark, type BenchmarkContext, type BenchmarkOutcome } from './benchmark.js';
import type { ReportRow } from './lib/report.js';
import { round, summarizeLatencies, type LatencySummary } from './lib/stats.js';

/** Targets of issue 4 item 8 (2-core machine, embedded Postgres). */
const REPLICATION_TARGETS = {
  snapshotRowsPerSecond: 30_000,
  streamingRowsPerSecond: 20_000,
  lagP50Ms: 5,
  lagP99Ms: 20
} as const;

/** The reference service's figures on the same kind of machine. */
const REPLICATION_REFERENCE = {
  snapshotRowsPerSecond: 5_300,
  streamingRowsPerSecond: 5_800,
  lagP50Ms: 11,
  lagP99Ms: 40
} as const;

const CONFIGS = {
  global: `bucket_definitions:
  global:
    data:
      - SELECT * FROM items
`,
  'per-user': `bucket_definitions:
  by_user:
    parameters: SELECT request.user_id() AS user_id
    data:
      - SELECT * FROM items WHERE owner = bucket.user_id
`
} as const;
type Mode = keyof typeof CONFIGS;

const USERS = 1_000;
const ROW_SQL = (from: string, to: string) =>
  `INSERT INTO items SELECT i, 'user-' || (i % ${USERS}), i * 7, 'item ' || i || ' ' || md5(i::text) FROM generate_series(${from}, ${to}) i`;

interface Run {
  mode: Mode;
  snapshotRows: number;
  snapshotSeconds: number;
  streamingRows: number;
  streamingSeconds: number;
}

async function compareLsnText(db: pg.Pool, a: string, b: string): Promise<number> {
  const { rows } = await db.query<{ c: number }>(`SELECT sign($1::pg_lsn - $2::pg_lsn)::int AS c`, [a, b]);
  return rows[0]!.c;
}

async function waitUntil(what: string, timeoutMs: number, probe: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await probe().catch(() => false))) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** Source and storage databases for one run, and the service (role replication) on them. */
async function setUp(server: PostgresServer, label: string, mode: Mode) {
  const suffix = `${label}_${process.pid}_${Date.now().toString(36)}`;
  const sourceName = `bench_repl_src_${suffix}`;
  const storageName = `bench_repl_st_${suffix}`;
  await server.ensureDatabase(sourceName);
  await server.ensureDatabase(storageName);
  const source = new pg.Pool({ connectionString: server.url(sourceName), max: 2 });
  source.on('error', () => {});
  await source.query(
    `CREATE TABLE items (id int8 PRIMARY KEY, owner text NOT NULL, n int8 NOT NULL, note text NOT NULL)`
  );
  await source.query(`CREATE PUBLICATION powersync FOR ALL TABLES`);
  const slotPrefix = `bench_${label}_${process.pid}_`.replace(/[^a-z0-9_]/g, '_');
  let service: RunningService | undefined;
  const storage: PostgresBucketStorage = createPostgresStorage({
    type: 'postgresql',
    uri: server.url(storageName),
    max_pool_size: 4
  });
  return {
    source,
    storage,
    async start() {
      const registry = createModuleRegistry();
      const configText = JSON.stringify({
        replication: {
          connections: [
            { type: 'postgresql', uri: server.url(sourceName), sslmode: 'disable', slot_name_prefix: slotPrefix }
          ]
        },
        storage: { type: 'postgresql', uri: server.url(storageName), sslmode: 'disable' },
        port: 0,
        sync_config: { content: CONFIGS[mode] },
        client_auth: {
          audience: [DEV_AUDIENCE],
          jwks: { keys: [{ kty: 'oct', alg: 'HS256', kid: 'k', k: Buffer.from('x'.repeat(32)).toString('base64url') }] }
        }
      });
      const config = await parseConfig(configText, { source: 'bench', configDir: process.cwd(), registry });
      service = await startService(config, { registry, logger: silentLogger, host: '127.0.0.1', role: 'replication' });
    },
    /** Wait until the served checkpoint is at or past the source's current position. */
    async catchUp(timeoutMs: number) {
      const { rows } = await source.query<{ lsn: string }>('SELECT pg_current_wal_lsn()::text AS lsn');
      await source.query(`SELECT pg_logical_emit_message(false, 'powersync', 'ping')`);
      await waitUntil('replication to catch up', timeoutMs, async () => {
        const serving = await storage.getServingCheckpoint();
        return !!serving?.checkpoint.lsn && (await compareLsnText(source, serving.checkpoint.lsn, rows[0]!.lsn)) >= 0;
      });
    },
    async stop() {
      await service?.stop();
      await storage.close();
      await source
        .query(
          `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE starts_with(slot_name, $1)`,
          [slotPrefix]
        )
        .catch(() => {});
      await source.end();
      const admin = new pg.Client({ connectionString: server.url('postgres') });
      await admin.connect();
      for (const name of [sourceName, storageName])
        await admin.query(`DROP DATABASE IF EXISTS ${pg.escapeIdentifier(name)} WITH (FORCE)`).catch(() => {});
      await admin.end();
    }
  };
}

async function throughputRun(
  server: PostgresServer,
  mode: Mode,
  snapshotRows: number,
  streamingRows: number,
  log: (line: string) => void
): Promise<Run> {
  const env = await setUp(server, mode.replace('-', ''), mode);
  try {
    log(`${mode}: writing ${snapshotRows.toLocaleString('en-US')} source rows …`);
    for (let from = 1; from <= snapshotRows; from += 50_000)
      await env.source.query(ROW_SQL(String(from), String(Math.min(snapshotRows, from + 49_999))));
    await env.source.query('ANALYZE items');
    const snapshotStart = performance.now();
    await env.start();
    await waitUntil(
      'the snapshot checkpoint',
      600_000,
      async () => (await env.storage.getServingCheckpoint()) !== null
    );
    const snapshotSeconds = (performance.now() - snapshotStart) / 1000;
    log(
      `  snapshot: ${(snapshotRows / snapshotSeconds).toFixed(0)} rows/s (${snapshotSeconds.toFixed(1)} s, service start included)`
    );

    const streamStart = performance.now();
    for (let t = 0; t < streamingRows / 1_000; t++) {
      const from = snapshotRows + 1 + t * 1_000;
      await env.source.query(ROW_SQL(String(from), String(from + 999)));
    }
    await env.catchUp(600_000);
    const streamingSeconds = (performance.now() - streamStart) / 1000;
    log(
      `  streaming: ${(streamingRows / streamingSeconds).toFixed(0)} rows/s (${streamingSeconds.toFixed(1)} s, 1,000-row transactions)`
    );
    return { mode, snapshotRows, snapshotSeconds, streamingRows, streamingSeconds };
  } finally {
    await env.stop();
  }
}

/**
 * Lag at `rate` rows/s in `txRows`-row transactions: from the source commit (the INSERT's reply, in this process) to the
 * moment the storage notification of a checkpoint containing it arrives here (what wakes a sync stream), checked by
 * reading the newest visible row id at that checkpoint.
 */
async function lagRun(
  server: PostgresServer,
  seconds: number,
  rate: number,
  txRows: number,
  log: (line: string) => void
): Promise<LatencySummary> {
  const env = await setUp(server, 'lag', 'global');
  try {
    await env.start();
    await waitUntil('the first checkpoint', 60_000, async () => (await env.storage.getServingCheckpoint()) !== null);
    const serving = (await env.storage.getServingCheckpoint())!;
    const commits: Array<{ lastId: number; at: number }> = [];
    const lags: number[] = [];
    let next = 0;
    let checking = Promise.resolve();
    const onCheckpoint = () => {
      const at = performance.now();
      checking = checking.then(async () => {
        const checkpoint = (await env.storage.getServingCheckpoint())!.checkpoint.checkpoint;
        const { rows } = await env.storage.pool.query<{ row_id: string }>(
          `SELECT row_id FROM powersync.bucket_data WHERE group_id = $1 AND bucket_name = 'global[]' AND op_id <= $2::int8 ORDER BY op_id DESC LIMIT 1`,
          [serving.stream.id, checkpoint.toString()]
        );
        const visible = Number(rows[0]?.row_id ?? 0);
        while (next < commits.length && commits[next]!.lastId <= visible) lags.push(at - commits[next++]!.at);
      });
    };
    const unlisten = await env.storage.listenForCheckpoints(onCheckpoint);
    const intervalMs = (txRows / rate) * 1000;
    const transactions = Math.round((seconds * 1000) / intervalMs);
    log(`lag: ${rate} rows/s in ${txRows}-row transactions for ${seconds} s …`);
    const start = performance.now();
    let id = 0;
    for (let t = 0; t < transactions; t++) {
      const due = start + t * intervalMs;
      const wait = due - performance.now();
      if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
      const from = id + 1;
      id += txRows;
      await env.source.query(ROW_SQL(String(from), String(id)));
      commits.push({ lastId: id, at: performance.now() });
    }
    await waitUntil('the last transaction to be visible', 60_000, () => Promise.resolve(next >= commits.length));
    await unlisten();
    await checking;
    return summarizeLatencies(lags);
  } finally {
    await env.stop();
  }
}

async function runReplicationBenchmark({ flags, log }: BenchmarkContext): Promise<BenchmarkOutcome> {
  const snapshotRows = Math.floor(numberFlag(flags, 'rows', 100_000));
  const streamingRows = Math.floor(numberFlag(flags, 'stream-rows', 50_000) / 1_000) * 1_000;
  const lagSeconds = numberFlag(flags, 'lag-seconds', 15);
  const load = loadavg()[0]!;
  log(
    `load average (1 min) ${load.toFixed(2)} on ${cpus().length} CPUs${load > 0.5 ? ' (other work is running: figures will be pessimistic)' : ''}`
  );
  log(process.env.PG_TEST_URL ? 'using PG_TEST_URL' : 'starting embedded Postgres …');
  const server = await testPostgresServer();
  try {
    const admin = new pg.Client({ connectionString: server.url('postgres') });
    await admin.connect();
    const version = (await admin.query<{ server_version: string }>('SHOW server_version')).rows[0]!.server_version;
    await admin.end();
    log(`Postgres ${version}`);
    const runs: Run[] = [];
    for (const mode of Object.keys(CONFIGS) as Mode[])
      runs.push(await throughputRun(server, mode, snapshotRows, streamingRows, log));
    const lag = await lagRun(server, lagSeconds, 1_000, 20, log);
    log(`  lag p50 ${lag.p50.toFixed(1)} ms, p99 ${lag.p99.toFixed(1)} ms (${lag.count} transactions)`);

    const rows: ReportRow[] = [];
    for (const run of runs) {
      rows.push({
        label: `snapshot, ${run.mode} buckets (${run.snapshotRows.toLocaleString('en-US')} rows)`,
        value: run.snapshotRows / run.snapshotSeconds,
        unit: 'rows/s',
        target: { comparison: '>=', value: REPLICATION_TARGETS.snapshotRowsPerSecond },
        note: `reference ~${REPLICATION_REFERENCE.snapshotRowsPerSecond.toLocaleString('en-US')}`
      });
      rows.push({
        label: `streaming, ${run.mode} buckets (1,000-row transactions)`,
        value: run.streamingRows / run.streamingSeconds,
        unit: 'rows/s',
        target: { comparison: '>=', value: REPLICATION_TARGETS.streamingRowsPerSecond },
        note: `reference ~${REPLICATION_REFERENCE.streamingRowsPerSecond.toLocaleString('en-US')}`
      });
    }
    rows.push(
      {
        label: 'lag p50 (1,000 rows/s, 20-row transactions)',
        value: lag.p50,
        unit: 'ms',
        target: { comparison: '<=', value: REPLICATION_TARGETS.lagP50Ms },
        note: `reference ${REPLICATION_REFERENCE.lagP50Ms} ms`
      },
      {
        label: 'lag p99',
        value: lag.p99,
        unit: 'ms',
        target: { comparison: '<=', value: REPLICATION_TARGETS.lagP99Ms },
        note: `reference ~${REPLICATION_REFERENCE.lagP99Ms} ms`
      }
    );
    return {
      rows,
      errors: 0,
      notes: [
        'snapshot time includes service start (migrations, slot creation); lag = source commit reply → checkpoint notification in this process (what wakes a sync stream), same machine'
      ],
      json: {
        date: new Date().toISOString(),
        postgres: version,
        loadAverage: load,
        cpus: cpus().length,
        runs: runs.map((run) => ({
          ...run,
          snapshotRowsPerSecond: round(run.snapshotRows / run.snapshotSeconds, 0),
          streamingRowsPerSecond: round(run.streamingRows / run.streamingSeconds, 0)
        })),
        lag: {
          p50: round(lag.p50),
          p90: round(lag.p90),
          p99: round(lag.p99),
          max: round(lag.max),
          mean: round(lag.mean),
          count: lag.count
        },
        targets: REPLICATION_TARGETS,
        reference: REPLICATION_REFERENCE
      }
    };
  } finally {
    await server.stop();
  }
}

export const replicationBenchmark: Benchmark = {
  name: 'replication',
  description:
    'Postgres replication on embedded Postgres: initial snapshot and streaming rows/s (1,000-row transactions) with a global and a per-user bucket definition; lag source commit → checkpoint at 1,000 rows/s in 20-row transactions',
  flags: {
    rows: 'rows in the source table before the snapshot (default 100000)',
    'stream-rows': 'rows streamed after the snapshot, in 1,000-row transactions (default 50000)',
    'lag-seconds': 'duration of the lag measurement (default 15)'
  },
  run: runReplicationBenchmark
};
