/**
 * The pure parts of `pnpm soak`: its options, the acknowledgement bookkeeping, the RSS slope and the report rows.
 * Kept free of I/O so bench/test/soak.test.ts can check them.
 */
import type { BenchmarkFlags } from './benchmark.js';
import type { ReportRow } from './lib/report.js';
import { round, summarizeLatencies, type LatencySummary } from './lib/stats.js';

/** What the soak holds its figures against (issue 7 item 4; 2-core machine, load generator on the same machine). */
export const SOAK_TARGETS = {
  /** Any non-2xx, failed request, stream error or early stream end. */
  errors: 0,
  /** Share of the requested checkpoint-request rate that must actually be sent (clients wait for their responses). */
  minimumRateShare: 0.98,
  /** RSS growth of the service process after the warm-up, least-squares slope. */
  rssSlopeMbPerMinute: 1,
  /** A checkpoint request not acknowledged on its stream within this bound counts as an error. */
  ackBoundMs: 30_000
} as const;

export interface SoakOptions {
  /** Measured load, seconds (the streams are opened before it starts). */
  durationSeconds: number;
  /** Concurrent sync streams, spread over `users` users (client i belongs to user i mod users). */
  streams: number;
  users: number;
  /** Checkpoint requests per second over all streams. */
  rate: number;
  /** The first part of the run left out of the RSS slope. */
  warmupSeconds: number;
  /** RSS sampling interval. */
  sampleSeconds: number;
  /** Rows in the synced table; every stream downloads them before the load starts. */
  rows: number;
  ackBoundMs: number;
  /** The service's storage `max_pool_size`; undefined = its default (8). */
  storagePoolSize: number | undefined;
}

export const SOAK_FLAGS: Record<string, string> = {
  duration: 'seconds of load (default 300)',
  streams: 'concurrent sync streams (default 1000)',
  users: 'users the streams are spread over (default 100; clients per user = streams / users)',
  rate: 'checkpoint requests per second (default 500)',
  warmup: 'seconds at the start left out of the RSS slope (default 20% of --duration)',
  sample: 'RSS sampling interval in seconds (default 5)',
  rows: 'rows in the synced table, downloaded by every stream before the load (default 100)',
  'ack-bound': 'seconds within which every checkpoint request must be acknowledged on its stream (default 30)',
  pool: "the service's storage max_pool_size (default: the service's default, 8)"
};

function positive(
  flags: BenchmarkFlags,
  name: string,
  fallback: number,
  options: { integer?: boolean; allowZero?: boolean } = {}
): number {
  const raw = flags.get(name);
  if (raw === undefined) return fallback;
  const value = Number(raw);
  const valid =
    Number.isFinite(value) &&
    (options.allowZero ? value >= 0 : value > 0) &&
    (!options.integer || Number.isInteger(value));
  if (!valid)
    throw new Error(
      `--${name} must be a ${options.allowZero ? 'non-negative' : 'positive'} ${options.integer ? 'integer' : 'number'}, got ${JSON.stringify(raw)}`
    );
  return value;
}

/** The options from `--name=value` flags; throws a usage message on unknown flags or bad values. */
export function parseSoakOptions(flags: BenchmarkFlags): SoakOptions {
  const unknown = [...flags.keys()].filter((name) => !(name in SOAK_FLAGS));
  if (unknown.length > 0)
    throw new Error(`unknown flag${unknown.length > 1 ? 's' : ''}: ${unknown.map((name) => `--${name}`).join(', ')}`);
  const durationSeconds = positive(flags, 'duration', 300);
  const streams = positive(flags, 'streams', 1000, { integer: true });
  const users = positive(flags, 'users', Math.min(100, streams), { integer: true });
  if (users > streams)
    throw new Error(`--users (${users}) cannot exceed --streams (${streams}): every user needs a stream`);
  const warmupSeconds = positive(flags, 'warmup', durationSeconds * 0.2, { allowZero: true });
  if (warmupSeconds >= durationSeconds)
    throw new Error(`--warmup (${warmupSeconds}) must be shorter than --duration (${durationSeconds})`);
  return {
    durationSeconds,
    streams,
    users,
    rate: positive(flags, 'rate', 500),
    warmupSeconds,
    sampleSeconds: positive(flags, 'sample', 5),
    rows: positive(flags, 'rows', 100, { integer: true, allowZero: true }),
    ackBoundMs: positive(flags, 'ack-bound', SOAK_TARGETS.ackBoundMs / 1000) * 1000,
    storagePoolSize: flags.has('pool') ? positive(flags, 'pool', 8, { integer: true }) : undefined
  };
}

/** Least-squares slope of y over x; NaN with fewer than two distinct x. */
export function leastSquaresSlope(points: ReadonlyArray<{ x: number; y: number }>): number {
  const n = points.length;
  if (n < 2) return Number.NaN;
  let sumX = 0;
  let sumY = 0;
  for (const { x, y } of points) {
    sumX += x;
    sumY += y;
  }
  const meanX = sumX / n;
  const meanY = sumY / n;
  let covariance = 0;
  let varianceX = 0;
  for (const { x, y } of points) {
    covariance += (x - meanX) * (y - meanY);
    varianceX += (x - meanX) ** 2;
  }
  return varianceX === 0 ? Number.NaN : covariance / varianceX;
}

export interface RssSample {
  /** Since the load started. */
  atMs: number;
  rssBytes: number;
}

export const MB = 1024 * 1024;

/** RSS growth in MB per minute over the samples taken at or after the warm-up. */
export function rssSlopeMbPerMinute(samples: readonly RssSample[], warmupMs: number): number {
  return leastSquaresSlope(
    samples
      .filter((sample) => sample.atMs >= warmupMs)
      .map((sample) => ({ x: sample.atMs / 60_000, y: sample.rssBytes / MB }))
  );
}

/**
 * The lowest sample of each `windowMs` window (from the warm-up on). V8's heap makes RSS a sawtooth (it grows until
 * a major GC hands memory back), which moves a slope over a few minutes by several MB/min either way; the floor of
 * each window is what a leak raises, so its slope is reported beside the raw one.
 */
export function windowMinima(samples: readonly RssSample[], warmupMs: number, windowMs: number): RssSample[] {
  const minima = new Map<number, RssSample>();
  for (const sample of samples) {
    if (sample.atMs < warmupMs) continue;
    const window = Math.floor((sample.atMs - warmupMs) / windowMs);
    const lowest = minima.get(window);
    if (!lowest || sample.rssBytes < lowest.rssBytes) minima.set(window, sample);
  }
  return [...minima.values()];
}

export type AckFailure =
  | { kind: 'timeout'; client: string; id: bigint; ageMs: number }
  | { kind: 'regressed'; client: string; from: bigint; to: bigint };

/**
 * Checkpoint requests waiting for their acknowledgement, per client in id order. A request with id n is acknowledged
 * by the first `write_checkpoint` ≥ n on its client's stream (PROTOCOL §4.1: the client applies a checkpoint once
 * `write_checkpoint` ≥ the id it waits for). Usually the stream reports n itself; when the client sent n+1 before n
 * was reported, the two can be acknowledged together by n+1 (counted as `acknowledgedByLaterId`). An acknowledgement
 * after the bound, or none, is a failure; so is a stream whose `write_checkpoint` goes down.
 */
export class AckTracker {
  private readonly pending = new Map<string, Array<{ id: bigint; sentAt: number }>>();
  private readonly lastSeen = new Map<string, bigint>();
  private readonly latencyList: number[] = [];
  private waitingCount = 0;
  acknowledgedByLaterId = 0;

  constructor(readonly boundMs: number) {}

  /** Records a request as sent; ids of one client must increase. */
  sent(client: string, id: bigint, now: number): void {
    let queue = this.pending.get(client);
    if (!queue) this.pending.set(client, (queue = []));
    const last = queue.at(-1);
    if (last && last.id >= id) throw new Error(`client ${client}: request ${id} after ${last.id}; ids must increase`);
    queue.push({ id, sentAt: now });
    this.waitingCount++;
  }

  /** Drops one outstanding request (its HTTP request failed, so no acknowledgement is due). */
  forget(client: string, id: bigint): void {
    const queue = this.pending.get(client);
    const index = queue?.findIndex((request) => request.id === id) ?? -1;
    if (index < 0) return;
    queue!.splice(index, 1);
    this.waitingCount--;
  }

  /** A `write_checkpoint` seen on the client's stream; returns the failures it reveals. */
  observe(client: string, writeCheckpoint: bigint, now: number): AckFailure[] {
    const previous = this.lastSeen.get(client);
    if (previous !== undefined && writeCheckpoint < previous)
      return [{ kind: 'regressed', client, from: previous, to: writeCheckpoint }];
    this.lastSeen.set(client, writeCheckpoint);
    const queue = this.pending.get(client);
    const failures: AckFailure[] = [];
    while (queue && queue.length > 0 && queue[0]!.id <= writeCheckpoint) {
      const request = queue.shift()!;
      this.waitingCount--;
      const latency = now - request.sentAt;
      if (latency > this.boundMs) {
        failures.push({ kind: 'timeout', client, id: request.id, ageMs: latency });
        continue;
      }
      if (request.id < writeCheckpoint) this.acknowledgedByLaterId++;
      this.latencyList.push(latency);
    }
    return failures;
  }

  /** Removes and returns the requests older than the bound. */
  expire(now: number): AckFailure[] {
    const failures: AckFailure[] = [];
    for (const [client, queue] of this.pending) {
      while (queue.length > 0 && now - queue[0]!.sentAt > this.boundMs) {
        const request = queue.shift()!;
        this.waitingCount--;
        failures.push({ kind: 'timeout', client, id: request.id, ageMs: now - request.sentAt });
      }
    }
    return failures;
  }

  /** Requests sent and not yet acknowledged or expired. */
  get outstanding(): number {
    return this.waitingCount;
  }

  get acknowledged(): number {
    return this.latencyList.length;
  }

  latencies(): LatencySummary {
    return summarizeLatencies(this.latencyList);
  }
}

export function describeAckFailure(failure: AckFailure): string {
  return failure.kind === 'timeout'
    ? `${failure.client}: request ${failure.id} not acknowledged within the bound (${(failure.ageMs / 1000).toFixed(1)} s)`
    : `${failure.client}: write_checkpoint went down from ${failure.from} to ${failure.to}`;
}

/** The measured figures of one soak run. */
export interface SoakFigures {
  options: SoakOptions;
  /** Wall time of the load phase. */
  elapsedMs: number;
  streamsOpened: number;
  /** Open sync streams the service reported (`syncpoint_open_sync_streams`) at the end of the load. */
  serviceOpenStreams: number;
  requestsSent: number;
  /** Requests that could not be sent on time because every client still had a request in flight. */
  requestsSkipped: number;
  requestsAcknowledged: number;
  /** Of those, acknowledged by a greater id of the same client (sent before theirs was reported). */
  acknowledgedByLaterId: number;
  /** The categories of `errors`. */
  httpErrors: number;
  streamErrors: number;
  ackFailures: number;
  errors: number;
  http: LatencySummary;
  ack: LatencySummary;
  rss: {
    samples: RssSample[];
    slopeMbPerMinute: number;
    /** Slope of the lowest sample of each 30 s window after the warm-up (see windowMinima). */
    floorSlopeMbPerMinute: number;
    startMb: number;
    endMb: number;
    maxMb: number;
    afterWarmupMb: number;
  };
  /** CPU time of the service process over the load, as a share of one core. */
  serviceCpuCores: number;
  /** Warning/error lines the service logged during the run. */
  serviceWarnings: number;
}

/**
 * Overall verdict: the load was actually applied (every stream open, at least 98 % of the requested rate sent), no
 * error, every request acknowledged within the bound, RSS slope within the target.
 */
export function soakPassed(figures: SoakFigures): boolean {
  return (
    figures.streamsOpened >= figures.options.streams &&
    figures.requestsSent / (figures.elapsedMs / 1000) >= figures.options.rate * SOAK_TARGETS.minimumRateShare &&
    figures.errors <= SOAK_TARGETS.errors &&
    figures.requestsAcknowledged === figures.requestsSent &&
    Number.isFinite(figures.rss.slopeMbPerMinute) &&
    figures.rss.slopeMbPerMinute <= SOAK_TARGETS.rssSlopeMbPerMinute
  );
}

export function soakRows(figures: SoakFigures): ReportRow[] {
  const { options } = figures;
  const seconds = figures.elapsedMs / 1000;
  const ackBound = options.ackBoundMs;
  return [
    {
      label: 'sync streams open',
      value: figures.streamsOpened,
      unit: 'streams',
      digits: 0,
      target: { comparison: '>=', value: options.streams },
      note: `(${options.users} users; the service counted ${figures.serviceOpenStreams} at the end)`
    },
    {
      label: 'checkpoint requests',
      value: figures.requestsSent / seconds,
      unit: 'req/s',
      digits: 0,
      target: { comparison: '>=', value: options.rate * SOAK_TARGETS.minimumRateShare },
      note: `(${figures.requestsSent.toLocaleString('en-US')} in ${seconds.toFixed(0)} s; ${figures.requestsSkipped} skipped: every client had one in flight)`
    },
    {
      label: 'errors',
      value: figures.errors,
      unit: '',
      digits: 0,
      target: { comparison: '<=', value: SOAK_TARGETS.errors },
      note: `(HTTP ${figures.httpErrors}, stream ${figures.streamErrors}, acknowledgement ${figures.ackFailures})`
    },
    {
      label: 'requests acknowledged',
      value: figures.requestsAcknowledged,
      unit: '',
      digits: 0,
      target: { comparison: '>=', value: figures.requestsSent },
      note: `(within ${ackBound / 1000} s on the stream of the same user+client; ${figures.acknowledgedByLaterId} by a later id of that client)`
    },
    {
      label: 'ack latency p50',
      value: figures.ack.p50,
      unit: 'ms',
      note: '(request sent → write_checkpoint line received)'
    },
    { label: 'ack latency p99', value: figures.ack.p99, unit: 'ms' },
    { label: 'ack latency max', value: figures.ack.max, unit: 'ms', target: { comparison: '<=', value: ackBound } },
    {
      label: 'HTTP latency p50 / p99',
      value: figures.http.p50,
      unit: 'ms',
      note: `(p99 ${figures.http.p99.toFixed(1)} ms, max ${figures.http.max.toFixed(1)} ms)`
    },
    {
      label: 'RSS slope after warm-up',
      value: figures.rss.slopeMbPerMinute,
      unit: 'MB/min',
      target: { comparison: '<=', value: SOAK_TARGETS.rssSlopeMbPerMinute },
      note: `(least squares over ${figures.rss.samples.filter((s) => s.atMs >= options.warmupSeconds * 1000).length} samples after ${options.warmupSeconds} s)`
    },
    {
      label: 'RSS floor slope (30 s minima)',
      value: figures.rss.floorSlopeMbPerMinute,
      unit: 'MB/min',
      note: '(informative: the lowest sample of each 30 s window, so GC sawtooth does not count)'
    },
    {
      label: 'RSS start / after warm-up / end',
      value: figures.rss.endMb,
      unit: 'MB',
      digits: 1,
      note: `(${figures.rss.startMb.toFixed(1)} / ${figures.rss.afterWarmupMb.toFixed(1)} / ${figures.rss.endMb.toFixed(1)} MB, max ${figures.rss.maxMb.toFixed(1)} MB)`
    },
    {
      label: 'service CPU',
      value: figures.serviceCpuCores * 100,
      unit: '% of a core',
      digits: 0,
      note: `(${figures.serviceWarnings} warning/error log lines)`
    }
  ];
}

/** The JSON written to bench/results/soak.json. */
export function soakJson(figures: SoakFigures, extra: Record<string, unknown>): Record<string, unknown> {
  const latency = (summary: LatencySummary) => ({
    count: summary.count,
    p50Ms: round(summary.p50),
    p99Ms: round(summary.p99),
    maxMs: round(summary.max),
    meanMs: round(summary.mean)
  });
  return {
    ...extra,
    options: figures.options,
    passed: soakPassed(figures),
    elapsedSeconds: round(figures.elapsedMs / 1000, 1),
    streams: { opened: figures.streamsOpened, serviceCounted: figures.serviceOpenStreams },
    requests: {
      sent: figures.requestsSent,
      perSecond: round(figures.requestsSent / (figures.elapsedMs / 1000), 1),
      skipped: figures.requestsSkipped,
      acknowledged: figures.requestsAcknowledged,
      acknowledgedByLaterId: figures.acknowledgedByLaterId
    },
    errors: {
      total: figures.errors,
      http: figures.httpErrors,
      stream: figures.streamErrors,
      acknowledgement: figures.ackFailures
    },
    httpLatency: latency(figures.http),
    ackLatency: latency(figures.ack),
    rss: {
      slopeMbPerMinute: round(figures.rss.slopeMbPerMinute, 3),
      floorSlopeMbPerMinute: round(figures.rss.floorSlopeMbPerMinute, 3),
      startMb: round(figures.rss.startMb, 1),
      afterWarmupMb: round(figures.rss.afterWarmupMb, 1),
      endMb: round(figures.rss.endMb, 1),
      maxMb: round(figures.rss.maxMb, 1),
      samples: figures.rss.samples.map((sample) => [round(sample.atMs / 1000, 1), round(sample.rssBytes / MB, 1)])
    },
    serviceCpuCores: round(figures.serviceCpuCores, 3),
    serviceWarnings: figures.serviceWarnings,
    targets: SOAK_TARGETS
  };
}

export interface OperationTotals {
  count: number;
  seconds: number;
}

/**
 * `syncpoint_storage_operation_seconds` per operation (count and total seconds) from the service's Prometheus text,
 * so the report can show what the sync streams and the checkpoint batcher asked of storage.
 */
export function parseStorageOperations(metricsText: string): Map<string, OperationTotals> {
  const totals = new Map<string, OperationTotals>();
  const pattern = /^syncpoint_storage_operation_seconds_(sum|count)\{operation="([^"]+)"\} ([0-9.e+-]+)$/gm;
  for (const match of metricsText.matchAll(pattern)) {
    const entry = totals.get(match[2]!) ?? { count: 0, seconds: 0 };
    if (match[1] === 'sum') entry.seconds = Number(match[3]);
    else entry.count = Number(match[3]);
    totals.set(match[2]!, entry);
  }
  return totals;
}

/** The operations between two scrapes, as one line: count, rate and mean duration of each. */
export function describeOperations(
  before: Map<string, OperationTotals>,
  after: Map<string, OperationTotals>,
  elapsedMs: number
): string {
  const parts: string[] = [];
  for (const [operation, total] of [...after].sort(([a], [b]) => a.localeCompare(b))) {
    const count = total.count - (before.get(operation)?.count ?? 0);
    const seconds = total.seconds - (before.get(operation)?.seconds ?? 0);
    if (count <= 0) continue;
    parts.push(
      `${operation} ${count.toLocaleString('en-US')} (${Math.round(count / (elapsedMs / 1000)).toLocaleString('en-US')}/s, mean ${((seconds / count) * 1000).toFixed(1)} ms)`
    );
  }
  return parts.length > 0 ? parts.join('; ') : 'none recorded';
}
