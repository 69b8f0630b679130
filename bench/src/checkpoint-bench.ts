import { cpus, loadavg } from 'node:os';
import { performance } from 'node:perf_hooks';
import { signDevToken } from '@syncpoint/service';
import { createTokenVerifier, silentLogger } from '@syncpoint/service-core';
import pg from 'pg';
import { numberFlag, type Benchmark, type BenchmarkContext, type BenchmarkOutcome } from './benchmark.js';
import { BatchProbe, type BatchBreakdown } from './lib/batch-probe.js';
import { cpuSince, sampleCpu, type CpuSample } from './lib/cpu.js';
import type { CheckpointLoadResult } from './lib/checkpoint-load.js';
import { startBenchService, type BenchService } from './lib/embedded-service.js';
import { startLoadClient, type ClientMode, type LoadClient } from './lib/load-client.js';
import { measureSourceCost, type SourceCostResult } from './lib/source-cost.js';
import { runStorm, type StormResult } from './lib/storm.js';
import type { ReportRow } from './lib/report.js';
import { round, summarizeLatencies, type LatencySummary } from './lib/stats.js';

/** Targets of issue 2 item 10 (2-core machine, benchmark client on the same machine). */
export const CHECKPOINT_TARGETS = {
  throughputAt64: 5000,
  p50SingleClientMs: 4
} as const;

/** The reference service's figures on the same kind of machine, printed for context. */
export const CHECKPOINT_REFERENCE = {
  throughputAt64: 2600,
  p50SingleClientMs: 8.5
} as const;

const DEFAULT_LEVELS = [1, 16, 64];
const SLOT = 'syncpoint_bench_markers';

interface LevelResult {
  clients: number;
  requests: number;
  errors: number;
  warmupRequests: number;
  warmupErrors: number;
  elapsedMs: number;
  throughput: number;
  latency: LatencySummary;
  markers: number;
  walBytes: number;
  serviceEventLoopUtilization: number;
  clientEventLoopUtilization: number | null;
  cpu: CpuSample;
  batches: BatchBreakdown;
  errorSamples: string[];
}

/** Counts `powersync` markers in the source WAL through a test_decoding slot created before the measured run. */
export class MarkerCounter {
  private constructor(
    private readonly client: pg.Client,
    private readonly startLsn: string
  ) {}

  static async start(sourceUrl: string): Promise<MarkerCounter> {
    const client = new pg.Client({ connectionString: sourceUrl });
    await client.connect();
    try {
      await client.query(`SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1`, [
        SLOT
      ]);
      await client.query(`SELECT pg_create_logical_replication_slot($1, 'test_decoding')`, [SLOT]);
      const { rows } = await client.query<{ lsn: string }>('SELECT pg_current_wal_lsn()::text AS lsn');
      return new MarkerCounter(client, rows[0]!.lsn);
    } catch (error) {
      await client.end();
      throw error;
    }
  }

  /** Markers since the slot was created, and the WAL written meanwhile (whole server: source and storage). */
  async finish(): Promise<{ markers: number; walBytes: number }> {
    try {
      const { rows: wal } = await this.client.query<{ bytes: string }>(
        'SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::pg_lsn)::text AS bytes',
        [this.startLsn]
      );
      const { rows } = await this.client.query<{ markers: number }>(
        `SELECT count(*) FILTER (WHERE data LIKE 'message: %prefix: powersync, sz: 4 content:ping')::int AS markers
         FROM pg_logical_slot_get_changes($1, NULL, NULL)`,
        [SLOT]
      );
      return { markers: rows[0]!.markers, walBytes: Number(wal[0]!.bytes) };
    } finally {
      await this.client.query('SELECT pg_drop_replication_slot($1)', [SLOT]).catch(() => {});
      await this.client.end();
    }
  }
}

async function runLevel(
  bench: BenchService,
  client: LoadClient,
  tokens: string[],
  probe: BatchProbe,
  clients: number,
  settings: { warmupMs: number; durationMs: number; maxRequests: number; runId: string }
): Promise<LevelResult> {
  const common = {
    url: bench.url,
    concurrency: clients,
    tokens,
    clientIdPrefix: `bench-${settings.runId}-c${clients}`
  };
  const warmup = await client.run({ ...common, durationMs: settings.warmupMs, maxRequests: settings.maxRequests });

  const counter = await MarkerCounter.start(bench.sourceUrl);
  probe.take();
  const cpuBefore = sampleCpu();
  const serviceElu = performance.eventLoopUtilization();
  const clientElu = client.eventLoopUtilization?.();
  let measured: CheckpointLoadResult;
  try {
    measured = await client.run({ ...common, durationMs: settings.durationMs, maxRequests: settings.maxRequests });
  } catch (error) {
    await counter.finish().catch(() => {});
    throw error;
  }
  const serviceUtilization = performance.eventLoopUtilization(serviceElu);
  const clientUtilization = clientElu ? client.eventLoopUtilization?.(clientElu) : undefined;
  const cpu = cpuSince(cpuBefore);
  const batches = probe.take();
  const wal = await counter.finish();

  return {
    clients,
    requests: measured.requests,
    errors: measured.errors + warmup.errors,
    warmupRequests: warmup.requests,
    warmupErrors: warmup.errors,
    elapsedMs: measured.elapsedMs,
    throughput: measured.requests / (measured.elapsedMs / 1000),
    latency: summarizeLatencies(measured.latencies),
    markers: wal.markers,
    walBytes: wal.walBytes,
    serviceEventLoopUtilization: serviceUtilization.utilization,
    clientEventLoopUtilization: clientUtilization?.utilization ?? null,
    cpu,
    batches,
    errorSamples: [...warmup.errorSamples, ...measured.errorSamples].slice(0, 5)
  };
}

const plural = (clients: number) => `${clients} client${clients === 1 ? '' : 's'}`;

function rowsFor(levels: LevelResult[]): ReportRow[] {
  const rows: ReportRow[] = [];
  for (const level of levels) {
    const at = `@${level.clients}`;
    const perRequest = (ms: number) => (level.requests > 0 ? ms / level.requests : Number.NaN);
    rows.push({
      label: `throughput ${at} ${level.clients === 1 ? 'client' : 'clients'}`,
      value: level.throughput,
      unit: 'req/s',
      digits: 0,
      ...(level.clients === 64
        ? {
            target: { comparison: '>=' as const, value: CHECKPOINT_TARGETS.throughputAt64 },
            note: `(reference ≈ ${CHECKPOINT_REFERENCE.throughputAt64.toLocaleString('en-US')} req/s)`
          }
        : {})
    });
    rows.push({
      label: `latency p50 ${at}`,
      value: level.latency.p50,
      unit: 'ms',
      digits: 2,
      ...(level.clients === 1
        ? {
            target: { comparison: '<=' as const, value: CHECKPOINT_TARGETS.p50SingleClientMs },
            note: `(reference ${CHECKPOINT_REFERENCE.p50SingleClientMs} ms)`
          }
        : {})
    });
    rows.push({ label: `latency p99 ${at}`, value: level.latency.p99, unit: 'ms', digits: 2 });
    rows.push({
      label: `markers per request ${at}`,
      value: level.requests > 0 ? level.markers / level.requests : Number.NaN,
      unit: '',
      digits: 3,
      note: `(${level.markers} markers for ${level.requests} requests)`
    });
    const batches = level.batches;
    rows.push({
      label: `requests per batch ${at}`,
      value: batches.batches > 0 ? batches.requests / batches.batches : Number.NaN,
      unit: '',
      digits: 1,
      note:
        batches.batches > 0
          ? `(${batches.batches} batches, each ${round(batches.totalMs / batches.batches, 2)} ms: head read ${round(batches.headReadMs / batches.batches, 2)}, storage write ${round(batches.storageWriteMs / batches.batches, 2)}, marker ${round(batches.markerMs / batches.batches, 2)} ms)`
          : ''
    });
    rows.push({
      label: `CPU per request ${at}`,
      value: perRequest(level.cpu.mainThreadMs) * 1000,
      unit: 'µs',
      digits: 0,
      note: `service thread; Postgres ${round(perRequest(level.cpu.postgresMs) * 1000, 0)} µs, whole node process ${round(perRequest(level.cpu.processMs) * 1000, 0)} µs; service event loop ${Math.round(level.serviceEventLoopUtilization * 100)}% busy`
    });
  }
  const errors = levels.reduce((sum, level) => sum + level.errors, 0);
  rows.push({
    label: 'errors (all levels, warm-up included)',
    value: errors,
    unit: '',
    digits: 0,
    target: { comparison: '<=', value: 0 }
  });
  return rows;
}

/** Issue 6 item 4: the reconnect storm's wall time (target ≤ 2 s for 10,000 clients) and its storage calls and markers. */
function stormRows(storm: StormResult): ReportRow[] {
  return [
    {
      label: `storm of ${storm.clients.toLocaleString('en-US')} clients, wall time`,
      value: storm.wallMs / 1000,
      unit: 's',
      digits: 2,
      ...(storm.clients === 10_000 ? { target: { comparison: '<=' as const, value: 2 } } : {}),
      note: `(requests spread over the first second; ${storm.rejected429} answers 429, retried)`
    },
    {
      label: 'storm storage calls / markers',
      value: storm.storageCalls,
      unit: '',
      digits: 0,
      note: `(${storm.markers} markers; ${round(storm.clients / Math.max(1, storm.storageCalls), 1)} requests per storage call)`
    }
  ];
}

/** Issue 6 item 1: source WAL per duplicate / stale request after processing (the reference writes ~820 / ~525). */
function costRows(cost: { duplicate: SourceCostResult; stale: SourceCostResult }): ReportRow[] {
  return (['duplicate', 'stale'] as const).map((kind) => {
    const result = cost[kind];
    return {
      label: `source WAL bytes per ${kind} request`,
      value: result.walBytes / result.requests,
      unit: 'B',
      digits: 2,
      target: { comparison: '<=' as const, value: 0 },
      note: `(${result.requests} requests, ${result.markers} markers, ${result.rawWalBytes} raw WAL bytes in the window incl. background records; reference ≈ ${kind === 'duplicate' ? 820 : 525} B)`
    };
  });
}

export const checkpointBenchmark: Benchmark = {
  name: 'checkpoint',
  description:
    'POST /sync/checkpoint-request over HTTP keep-alive at 1, 16 and 64 concurrent clients against embedded Postgres: requests/s, latency p50/p99, source markers per request',
  flags: {
    duration: 'measured seconds per level (default 5)',
    warmup: 'warm-up seconds per level (default 1)',
    'max-requests': 'cap on requests per measured run (default 200000)',
    levels: 'comma-separated client counts (default 1,16,64)',
    users: 'distinct JWT users the clients are spread over (default 4)',
    client: 'where the load generator runs: worker (a worker thread, default) or inline (the service event loop)',
    'cost-requests': 'duplicate and stale requests measured for source WAL cost (default 1000)',
    'skip-cost': 'skip the source WAL cost phase (separate servers for source and storage)',
    'storm-clients': 'clients in the reconnect storm, each sending one request within one second (default 10000)',
    'skip-storm': 'skip the reconnect storm'
  },
  async run({ flags, log }: BenchmarkContext): Promise<BenchmarkOutcome> {
    const durationMs = numberFlag(flags, 'duration', 5) * 1000;
    const warmupMs = numberFlag(flags, 'warmup', 1) * 1000;
    const maxRequests = Math.floor(numberFlag(flags, 'max-requests', 200_000));
    const users = Math.floor(numberFlag(flags, 'users', 4));
    const levels = flags.has('levels')
      ? flags
          .get('levels')!
          .split(',')
          .map((part) => {
            const value = Number(part);
            if (!Number.isInteger(value) || value < 1)
              throw new Error(`--levels: ${JSON.stringify(part)} is not a client count`);
            return value;
          })
      : DEFAULT_LEVELS;
    const mode = (flags.get('client') ?? 'worker') as ClientMode;
    if (mode !== 'worker' && mode !== 'inline')
      throw new Error(`--client must be worker or inline, got ${JSON.stringify(mode)}`);

    const loadBefore = loadavg()[0]!;
    log(
      `load average (1 min) ${loadBefore.toFixed(2)} on ${cpus().length} CPUs${loadBefore > 0.5 ? ' (other work is running: figures will be pessimistic)' : ''}`
    );
    log('starting embedded Postgres and the service …');
    const bench = await startBenchService();
    let client: LoadClient | undefined;
    let probe: BatchProbe | undefined;
    try {
      const serverVersion = await postgresVersion(bench.sourceUrl);
      log(
        `service at ${bench.url}; Postgres ${serverVersion}; client in ${mode === 'worker' ? 'a worker thread' : 'the service event loop'}`
      );
      const tokens = await Promise.all(
        Array.from({ length: users }, (_, index) => signDevToken(bench.devKey, { sub: `bench-user-${index + 1}` }))
      );
      const verifyUs = await timeTokenVerify(bench, tokens[0]!);
      log(`token verification (the service's verifier, HS256): ${verifyUs.toFixed(1)} µs per token`);
      probe = new BatchProbe(bench.service.source, bench.service.storage);
      client = startLoadClient(mode);
      const runId = Date.now().toString(36);
      const results: LevelResult[] = [];
      for (const clients of levels) {
        log(`${plural(clients)}: warm-up ${warmupMs / 1000} s, measuring ${durationMs / 1000} s …`);
        const result = await runLevel(bench, client, tokens, probe, clients, {
          warmupMs,
          durationMs,
          maxRequests,
          runId
        });
        log(
          `  ${Math.round(result.throughput)} req/s, p50 ${result.latency.p50.toFixed(2)} ms, p99 ${result.latency.p99.toFixed(2)} ms, ` +
            `${result.markers} markers / ${result.requests} requests, ${result.errors} errors`
        );
        results.push(result);
      }

      let storm: StormResult | null = null;
      if (!flags.has('skip-storm')) {
        const clients = Math.floor(numberFlag(flags, 'storm-clients', 10_000));
        log(`reconnect storm: ${clients} clients, one request each within one second (429s retried) …`);
        storm = await runStorm(bench, clients, client);
        log(
          `  ${Math.round(storm.wallMs)} ms; ${storm.storageCalls} storage calls, ${storm.markers} markers, ${storm.rejected429} answers 429`
        );
      }

      let cost: { duplicate: SourceCostResult; stale: SourceCostResult } | null = null;
      if (!flags.has('skip-cost')) {
        log(
          'source WAL cost: a second service with bucket storage on its own embedded Postgres, replication running …'
        );
        const costBench = await startBenchService({ separateStorage: true });
        try {
          cost = await measureSourceCost(costBench, Math.floor(numberFlag(flags, 'cost-requests', 1000)));
        } finally {
          await costBench.stop();
        }
        log(
          `  duplicates: ${cost.duplicate.walBytes} WAL bytes for ${cost.duplicate.requests} requests; stale: ${cost.stale.walBytes} WAL bytes for ${cost.stale.requests}`
        );
      }

      const errors = results.reduce((sum, level) => sum + level.errors, 0);
      const loadAfter = loadavg()[0]!;
      const notes = results.flatMap((level) =>
        level.errorSamples.map((sample) => `error @${level.clients}: ${sample}`)
      );
      return {
        rows: [...rowsFor(results), ...(storm ? stormRows(storm) : []), ...(cost ? costRows(cost) : [])],
        errors,
        notes: [
          ...notes,
          `load average (1 min): ${loadBefore.toFixed(2)} before, ${loadAfter.toFixed(2)} after (the benchmark itself adds about 2)`
        ],
        json: {
          benchmark: 'checkpoint',
          date: new Date().toISOString(),
          machine: { ...machineInfo(), load_average_1m: { before: round(loadBefore, 2), after: round(loadAfter, 2) } },
          postgres: serverVersion,
          token_verify_us: round(verifyUs, 1),
          settings: {
            duration_s: durationMs / 1000,
            warmup_s: warmupMs / 1000,
            max_requests: maxRequests,
            users,
            client: mode
          },
          targets: {
            throughput_at_64_clients_rps: {
              min: CHECKPOINT_TARGETS.throughputAt64,
              reference: CHECKPOINT_REFERENCE.throughputAt64
            },
            p50_single_client_ms: {
              max: CHECKPOINT_TARGETS.p50SingleClientMs,
              reference: CHECKPOINT_REFERENCE.p50SingleClientMs
            }
          },
          levels: results.map((level) => ({
            clients: level.clients,
            requests: level.requests,
            errors: level.errors,
            warmup_requests: level.warmupRequests,
            elapsed_s: round(level.elapsedMs / 1000, 3),
            throughput_rps: round(level.throughput, 0),
            latency_ms: {
              p50: round(level.latency.p50, 3),
              p90: round(level.latency.p90, 3),
              p99: round(level.latency.p99, 3),
              mean: round(level.latency.mean, 3),
              max: round(level.latency.max, 3)
            },
            markers: level.markers,
            markers_per_request: round(level.markers / level.requests, 4),
            wal_bytes_per_request: round(level.walBytes / level.requests, 0),
            cpu_us_per_request: {
              service_thread: round((level.cpu.mainThreadMs / level.requests) * 1000, 0),
              node_process: round((level.cpu.processMs / level.requests) * 1000, 0),
              postgres: round((level.cpu.postgresMs / level.requests) * 1000, 0)
            },
            batches: {
              count: level.batches.batches,
              with_marker: level.batches.advancing,
              requests_per_batch: round(level.batches.requests / level.batches.batches, 2),
              mean_ms: {
                total: round(level.batches.totalMs / level.batches.batches, 3),
                head_read: round(level.batches.headReadMs / level.batches.batches, 3),
                storage_write: round(level.batches.storageWriteMs / level.batches.batches, 3),
                marker: round(level.batches.markerMs / level.batches.batches, 3)
              }
            },
            service_event_loop_utilization: round(level.serviceEventLoopUtilization, 3),
            client_event_loop_utilization:
              level.clientEventLoopUtilization === null ? null : round(level.clientEventLoopUtilization, 3),
            error_samples: level.errorSamples
          })),
          storm: storm && { ...storm, wall_ms: round(storm.wallMs, 0) },
          source_cost: cost && {
            duplicate: { ...cost.duplicate, wal_bytes_per_request: cost.duplicate.walBytes / cost.duplicate.requests },
            stale: { ...cost.stale, wal_bytes_per_request: cost.stale.walBytes / cost.stale.requests }
          },
          summary: {
            storm_wall_ms: storm ? round(storm.wallMs, 0) : null,
            wal_bytes_per_duplicate_request: cost ? cost.duplicate.walBytes / cost.duplicate.requests : null,
            wal_bytes_per_stale_request: cost ? cost.stale.walBytes / cost.stale.requests : null,
            throughput_at_64_clients_rps: round(
              results.find((level) => level.clients === 64)?.throughput ?? Number.NaN,
              0
            ),
            p50_single_client_ms: round(results.find((level) => level.clients === 1)?.latency.p50 ?? Number.NaN, 3),
            errors
          }
        }
      };
    } finally {
      await client?.close().catch(() => {});
      probe?.restore();
      await bench.stop();
    }
  }
};

/** Mean time of the service's own token verifier (built from the same config) on one of the bench tokens. */
async function timeTokenVerify(bench: BenchService, token: string): Promise<number> {
  const verifier = await createTokenVerifier(bench.config.client_auth, { logger: silentLogger });
  for (let i = 0; i < 500; i++) await verifier.verify(token);
  const rounds = 5000;
  const started = performance.now();
  for (let i = 0; i < rounds; i++) await verifier.verify(token);
  return ((performance.now() - started) / rounds) * 1000;
}

async function postgresVersion(url: string): Promise<string> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    const { rows } = await client.query<{ server_version: string }>('SHOW server_version');
    return rows[0]!.server_version;
  } finally {
    await client.end();
  }
}

function machineInfo() {
  const list = cpus();
  return {
    platform: process.platform,
    arch: process.arch,
    node: process.version,
    cpus: list.length,
    cpu_model: list[0]?.model ?? null
  };
}
