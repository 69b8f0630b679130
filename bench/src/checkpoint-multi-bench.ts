import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { cpus, loadavg, tmpdir } from 'node:os';
import path from 'node:path';
import { startEmbeddedPostgres } from '@syncpoint/dev-postgres';
import {
  DEMO_SYNC_CONFIG,
  DEV_AUDIENCE,
  loadOrCreateDevKey,
  prepareDemoSourceDatabase,
  signDevToken
} from '@syncpoint/service';
import pg from 'pg';
import { numberFlag, type Benchmark, type BenchmarkContext, type BenchmarkOutcome } from './benchmark.js';
import { MarkerCounter } from './checkpoint-bench.js';
import { startChildService, type ChildService } from './lib/child-service.js';
import type { CheckpointLoadResult } from './lib/checkpoint-load.js';
import { startLoadClient, type LoadClient } from './lib/load-client.js';
import type { ReportRow } from './lib/report.js';
import { readCpuMs } from './soak-service.js';
import { round, summarizeLatencies } from './lib/stats.js';

const SOURCE_DATABASE = 'bench_multi_source';
const STORAGE_DATABASE = 'bench_multi_storage';
/** How long replication may take, after a run, to process every stored request (what the streams acknowledge). */
const PROCESSED_WITHIN_MS = 30_000;

interface LayoutResult {
  layout: string;
  processes: string[];
  requests: number;
  warmupRequests: number;
  errors: number;
  errorSamples: string[];
  throughput: number;
  p50: number;
  p99: number;
  /** Source markers (`powersync` messages) in the measured run: one per batch that stored something new. */
  markers: number;
  /** CPU of each service process over the measured run, per request (µs), by role. */
  cpuUsPerRequest: Record<string, number>;
  /** Requests stored (sum of the clients' stored ids) against requests answered 200: equal when nothing was lost. */
  stored: number;
  answered: number;
  /** Time from the end of the run until replication had processed every stored request (null: not within 30 s). */
  processedAfterMs: number | null;
}

/**
 * Issue 14 item 5: checkpoint-request throughput in the multi-process layout (N `api` processes and one `replication`
 * process, all `syncpoint start` children sharing one config and one Postgres) against the same load on one `unified`
 * child process, in the same run. Each request must be answered 200 with its own id; afterwards the storage must hold
 * exactly the answered requests (stored before each response) and replication must process all of them.
 */
export const checkpointMultiBenchmark: Benchmark = {
  name: 'checkpoint-multi',
  description:
    'POST /sync/checkpoint-request at 64 clients against 2 `api` processes + 1 `replication` process, beside 1 `unified` process on the same Postgres: requests/s, p50/p99, CPU per request per process, nothing lost, all processed',
  flags: {
    duration: 'measured seconds per layout (default 5)',
    warmup: 'warm-up seconds per layout (default 1)',
    clients: 'concurrent clients in total, split evenly over the API processes (default 64)',
    apis: 'API processes in the multi-process layout (default 2)',
    users: 'distinct JWT users the clients are spread over (default 4)'
  },
  async run({ flags, log }: BenchmarkContext): Promise<BenchmarkOutcome> {
    const durationMs = numberFlag(flags, 'duration', 5) * 1000;
    const warmupMs = numberFlag(flags, 'warmup', 1) * 1000;
    const clients = Math.floor(numberFlag(flags, 'clients', 64));
    const apis = Math.floor(numberFlag(flags, 'apis', 2));
    const users = Math.floor(numberFlag(flags, 'users', 4));
    const loadBefore = loadavg()[0]!;
    log(
      `load average (1 min) ${loadBefore.toFixed(2)} on ${cpus().length} CPUs${loadBefore > 0.5 ? ' (other work is running: figures will be pessimistic)' : ''}`
    );

    const root = await mkdtemp(path.join(tmpdir(), 'syncpoint-bench-multi-'));
    await chmod(root, 0o755); // as root, Postgres runs as the postgres user and must reach the data folder
    const cleanups: Array<() => Promise<unknown>> = [() => rm(root, { recursive: true, force: true })];
    try {
      log('starting embedded Postgres …');
      const postgres = await startEmbeddedPostgres({ dataDir: path.join(root, 'postgres'), persistent: false });
      cleanups.push(() => postgres.stop());
      await postgres.ensureDatabase(SOURCE_DATABASE);
      await postgres.ensureDatabase(STORAGE_DATABASE);
      const sourceUrl = postgres.url(SOURCE_DATABASE);
      const storageUrl = postgres.url(STORAGE_DATABASE);
      await prepareDemoSourceDatabase(sourceUrl);
      const devKey = await loadOrCreateDevKey(path.join(root, 'dev-key.json'));
      const configFile = path.join(root, 'config.yaml');
      // JSON is YAML; the embedded default's config, as `pnpm bench checkpoint` builds it, with JSON logs to read.
      await writeFile(
        configFile,
        JSON.stringify({
          replication: { connections: [{ type: 'postgresql', uri: sourceUrl, sslmode: 'disable' }] },
          storage: { type: 'postgresql', uri: storageUrl, sslmode: 'disable' },
          port: 0,
          sync_config: { content: DEMO_SYNC_CONFIG },
          client_auth: { audience: [DEV_AUDIENCE], jwks: { keys: [devKey] } },
          system: { logging: { level: 'info', format: 'json' } } // the start line (info) carries the URL
        }),
        { mode: 0o600 }
      );
      const tokens = await Promise.all(
        Array.from({ length: users }, (_, index) => signDevToken(devKey, { sub: `bench-user-${index + 1}` }))
      );
      const storage = new pg.Client({ connectionString: storageUrl });
      await storage.connect();
      cleanups.push(() => storage.end());

      const layouts: Array<{ name: string; roles: Array<'unified' | 'api' | 'replication'> }> = [
        { name: '1 unified process', roles: ['unified'] },
        {
          name: `${apis} api + 1 replication processes`,
          roles: ['replication', ...Array.from({ length: apis }, () => 'api' as const)]
        }
      ];
      const results: LayoutResult[] = [];
      for (const [index, layout] of layouts.entries()) {
        log(`${layout.name}: starting …`);
        const processes: ChildService[] = [];
        try {
          for (const role of layout.roles) processes.push(await startChildService(configFile, role));
          const servers = processes.filter((child) => child.role !== 'replication');
          await waitUntilAccepting(servers, tokens[0]!);
          log(`  ${processes.map((child) => `${child.role} pid ${child.pid}`).join(', ')}; ${clients} clients …`);
          const result = await runLayout({
            layout: layout.name,
            processes,
            servers,
            tokens,
            clients,
            warmupMs,
            durationMs,
            prefix: `multi-${Date.now().toString(36)}-${index}`,
            storage,
            sourceUrl
          });
          log(
            `  ${Math.round(result.throughput)} req/s, p50 ${result.p50.toFixed(2)} ms, p99 ${result.p99.toFixed(2)} ms, ` +
              `${result.errors} errors; stored ${result.stored} of ${result.answered} answered; processed ${result.processedAfterMs === null ? 'NOT within 30 s' : `${Math.round(result.processedAfterMs)} ms after the run`}`
          );
          results.push(result);
        } finally {
          for (const child of processes.reverse()) await child.stop();
        }
      }

      const [single, multi] = results as [LayoutResult, LayoutResult];
      const failedChecks = results.filter(
        (result) => result.stored !== result.answered || result.processedAfterMs === null
      ).length;
      const errors = results.reduce((sum, result) => sum + result.errors, 0) + failedChecks;
      const loadAfter = loadavg()[0]!;
      return {
        rows: rowsFor(single, multi),
        errors,
        notes: [
          ...results.flatMap((result) => result.errorSamples.map((sample) => `error (${result.layout}): ${sample}`)),
          `load average (1 min): ${loadBefore.toFixed(2)} before, ${loadAfter.toFixed(2)} after (the benchmark itself adds about 2)`
        ],
        json: {
          benchmark: 'checkpoint-multi',
          date: new Date().toISOString(),
          machine: {
            cpus: cpus().length,
            node: process.version,
            load_average_1m: { before: round(loadBefore, 2), after: round(loadAfter, 2) }
          },
          settings: { duration_s: durationMs / 1000, warmup_s: warmupMs / 1000, clients, apis, users },
          layouts: results.map((result) => ({
            ...result,
            throughput: round(result.throughput, 0),
            p50: round(result.p50, 3),
            p99: round(result.p99, 3)
          }))
        }
      };
    } finally {
      for (const cleanup of cleanups.splice(0).reverse()) await cleanup().catch(() => {});
    }
  }
};

/** The processes answer 500 until replication has deployed the sync config: wait for a 200 from each. */
async function waitUntilAccepting(servers: ChildService[], token: string): Promise<void> {
  const deadline = Date.now() + 60_000;
  for (const server of servers) {
    for (;;) {
      const response = await fetch(`${server.url}/sync/checkpoint-request`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', Authorization: `Token ${token}` },
        body: JSON.stringify({ client_id: 'bench-readiness', checkpoint_request_id: String(Date.now()) })
      }).catch(() => undefined);
      await response?.text();
      if (response?.status === 200) break;
      if (Date.now() > deadline) throw new Error(`${server.role} at ${server.url} did not accept requests within 60 s`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
}

async function runLayout(options: {
  layout: string;
  processes: ChildService[];
  servers: ChildService[];
  tokens: string[];
  clients: number;
  warmupMs: number;
  durationMs: number;
  prefix: string;
  storage: pg.Client;
  sourceUrl: string;
}): Promise<LayoutResult> {
  const { servers, clients } = options;
  // One load worker per API process, the clients split evenly; each virtual client keeps its connection and ids.
  const loaders: LoadClient[] = servers.map(() => startLoadClient('worker'));
  try {
    const phase = (durationMs: number) =>
      Promise.all(
        servers.map((server, index) =>
          loaders[index]!.run({
            url: server.url,
            concurrency: Math.ceil(clients / servers.length),
            tokens: options.tokens,
            clientIdPrefix: `${options.prefix}-p${index}`,
            durationMs,
            maxRequests: 1_000_000
          })
        )
      );
    const warmup = await phase(options.warmupMs);
    const counter = await MarkerCounter.start(options.sourceUrl);
    const cpuBefore = options.processes.map((child) => readCpuMs(child.pid));
    let measured: CheckpointLoadResult[];
    try {
      measured = await phase(options.durationMs);
    } catch (error) {
      await counter.finish().catch(() => {});
      throw error;
    }
    const cpuAfter = options.processes.map((child) => readCpuMs(child.pid));
    const ended = performance.now();
    const { markers } = await counter.finish();

    const requests = sum(measured.map((result) => result.requests));
    const warmupRequests = sum(warmup.map((result) => result.requests));
    const all = [...warmup, ...measured];
    const errors = sum(all.map((result) => result.errors));
    const latencies = concatLatencies(measured);
    const elapsedMs = Math.max(...measured.map((result) => result.elapsedMs));
    const cpuUsPerRequest: Record<string, number> = {};
    options.processes.forEach((child, index) => {
      const key = `${child.role}${options.processes.filter((other) => other.role === child.role).length > 1 ? ` ${index}` : ''}`;
      cpuUsPerRequest[key] = round(((cpuAfter[index]! - cpuBefore[index]!) / requests) * 1000, 0);
    });

    // Each virtual client sends 1, 2, 3 … and its stored id is the last one answered, so the stored ids add up to the
    // requests answered 200 (warm-up included) exactly when every answered request was stored.
    const pattern = `%/${options.prefix}-%`;
    const storedQuery = `SELECT coalesce(sum(write_checkpoint), 0)::text AS stored,
                                count(*) FILTER (WHERE processed_at_lsn IS NULL)::int AS unprocessed
                         FROM powersync.write_checkpoints WHERE user_id LIKE $1`;
    let processedAfterMs: number | null = null;
    let stored = 0;
    for (;;) {
      const { rows } = await options.storage.query<{ stored: string; unprocessed: number }>(storedQuery, [pattern]);
      stored = Number(rows[0]!.stored);
      if (rows[0]!.unprocessed === 0) {
        processedAfterMs = performance.now() - ended;
        break;
      }
      if (performance.now() - ended > PROCESSED_WITHIN_MS) break;
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    const summary = summarizeLatencies(latencies);
    return {
      layout: options.layout,
      processes: options.processes.map((child) => child.role),
      requests,
      warmupRequests,
      errors,
      errorSamples: all.flatMap((result) => result.errorSamples).slice(0, 5),
      throughput: requests / (elapsedMs / 1000),
      p50: summary.p50,
      p99: summary.p99,
      markers,
      cpuUsPerRequest,
      stored,
      answered: requests + warmupRequests - errors,
      processedAfterMs
    };
  } finally {
    await Promise.all(loaders.map((loader) => loader.close()));
  }
}

const sum = (values: number[]) => values.reduce((total, value) => total + value, 0);

function concatLatencies(results: CheckpointLoadResult[]): Float64Array {
  const all = new Float64Array(sum(results.map((result) => result.latencies.length)));
  let offset = 0;
  for (const result of results) {
    all.set(result.latencies, offset);
    offset += result.latencies.length;
  }
  return all;
}

function rowsFor(single: LayoutResult, multi: LayoutResult): ReportRow[] {
  const rows: ReportRow[] = [];
  for (const result of [single, multi]) {
    const isMulti = result === multi;
    rows.push({
      label: `throughput, ${result.layout}`,
      value: result.throughput,
      unit: 'req/s',
      digits: 0,
      ...(isMulti
        ? {
            target: { comparison: '>=' as const, value: Math.round(single.throughput) },
            note: '(target: more than 1 unified process, same run)'
          }
        : {})
    });
    rows.push({
      label: `latency p50 / p99, ${result.layout}`,
      value: result.p50,
      unit: 'ms',
      digits: 2,
      note: `(p99 ${result.p99.toFixed(2)} ms)`
    });
    rows.push({
      label: `markers per request, ${result.layout}`,
      value: result.requests > 0 ? result.markers / result.requests : Number.NaN,
      unit: '',
      digits: 3,
      note: `(${result.markers} markers for ${result.requests} requests: one per batch)`
    });
    rows.push({
      label: `CPU per request, ${result.layout}`,
      value: sum(Object.values(result.cpuUsPerRequest)),
      unit: 'µs',
      digits: 0,
      note: `(${Object.entries(result.cpuUsPerRequest)
        .map(([role, us]) => `${role} ${us}`)
        .join(', ')} µs; whole processes, all threads)`
    });
    rows.push({
      label: `requests answered but not stored, ${result.layout}`,
      value: result.answered - result.stored,
      unit: '',
      digits: 0,
      target: { comparison: '<=', value: 0 },
      note: `(${result.stored} stored, ${result.answered} answered incl. warm-up)`
    });
    rows.push({
      label: `all processed by replication, ${result.layout}`,
      value: result.processedAfterMs ?? Number.NaN,
      unit: 'ms',
      digits: 0,
      note: '(after the run ends; what the streams acknowledge; must happen within 30 s)'
    });
  }
  return rows;
}
