import { fork, type ChildProcess } from 'node:child_process';
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { cpus, loadavg, tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import v8 from 'node:v8';
import vm from 'node:vm';
import { lsnToBigint } from '@syncpoint/codecs';
import { startEmbeddedPostgres } from '@syncpoint/dev-postgres';
import {
  DEMO_SYNC_CONFIG,
  DEV_AUDIENCE,
  createModuleRegistry,
  loadOrCreateDevKey,
  signDevToken
} from '@syncpoint/service';
import { parseConfig, silentLogger, startService, type RunningService } from '@syncpoint/service-core';
import pg from 'pg';
import { numberFlag, type Benchmark, type BenchmarkContext, type BenchmarkOutcome } from './benchmark.js';
import type { ReportRow } from './lib/report.js';
import { percentile, round, summarizeLatencies } from './lib/stats.js';

/** Targets of issue 5 item 6 (2-core machine, clients on the same machine). */
const SYNC_TARGETS = {
  ackP50Ms: 15,
  ackP99Ms: 40,
  oneClientSeconds: 1.5,
  idleStreamsRssMb: 250
} as const;

/** Targets of issue 15 item 7 (Sync Streams). */
const STREAMS_TARGETS = {
  subscribeP50Ms: 50,
  subscribedStreamsRssMb: 300,
  fanoutP99Ms: 100
} as const;

/** The reference service's figures on the same kind of machine. */
const SYNC_REFERENCE = {
  ackP50Ms: 200,
  ackP99Ms: 214,
  oneClientSeconds: '3.7–3.9 s'
} as const;

const SOURCE_DATABASE = 'bench_sync_source';
const STORAGE_DATABASE = 'bench_sync_storage';

/**
 * The load client runs in a child process (plain ESM written to the temp folder), so the service's event loop,
 * CPU figures and RSS are its own. Commands arrive over IPC; every stream is a raw node:http request that reads
 * NDJSON or BSON lines as the SDK does and tracks `checkpoint_complete` and `write_checkpoint`.
 */
const CLIENT_SCRIPT = String.raw`
import http from 'node:http';
const bsonModule = await import(process.env.BENCH_BSON_URL);
const BSON = bsonModule.BSON ?? bsonModule.default?.BSON ?? bsonModule.default ?? bsonModule;

function openStream(url, token, body, format, handlers) {
  const started = performance.now();
  const request = http.request(url + '/sync/stream', {
    method: 'POST',
    agent: false,
    headers: {
      'Content-Type': 'application/json',
      Authorization: 'Token ' + token,
      Accept: format === 'bson' ? 'application/vnd.powersync.bson-stream;q=0.9,application/x-ndjson;q=0.8' : 'application/x-ndjson'
    }
  });
  request.on('error', (error) => handlers.error?.(error));
  request.on('response', (res) => {
    if (res.statusCode !== 200) {
      let text = '';
      res.on('data', (chunk) => (text += chunk));
      res.on('end', () => handlers.error?.(new Error('HTTP ' + res.statusCode + ' ' + text)));
      return;
    }
    const bson = (res.headers['content-type'] ?? '').startsWith('application/vnd.powersync.bson-stream');
    let pending = Buffer.alloc(0);
    res.on('data', (chunk) => {
      let buffer = pending.length > 0 ? Buffer.concat([pending, chunk]) : chunk;
      let offset = 0;
      if (bson) {
        while (buffer.length - offset >= 4) {
          const size = buffer.readInt32LE(offset);
          if (buffer.length - offset < size) break;
          handlers.line(BSON.deserialize(buffer.subarray(offset, offset + size)));
          offset += size;
        }
      } else {
        let newline;
        while ((newline = buffer.indexOf(10, offset)) >= 0) {
          handlers.line(JSON.parse(buffer.toString('utf8', offset, newline)));
          offset = newline + 1;
        }
      }
      pending = offset === buffer.length ? Buffer.alloc(0) : buffer.subarray(offset);
    });
    res.on('end', () => handlers.end?.());
    res.on('error', (error) => handlers.error?.(error));
  });
  request.end(JSON.stringify(body));
  return { started, close: () => request.destroy() };
}

/** Sync from scratch until checkpoint_complete: ms and ops received. */
function syncOnce(url, token, body, format) {
  return new Promise((resolve, reject) => {
    let ops = 0;
    const stream = openStream(url, token, body, format, {
      line(line) {
        if (line.data) ops += line.data.data.length;
        else if (line.checkpoint_complete) {
          const ms = performance.now() - stream.started;
          stream.close();
          resolve({ ms, ops });
        } else if (line.error) reject(new Error(JSON.stringify(line.error)));
      },
      error: reject,
      end: () => reject(new Error('stream ended before checkpoint_complete'))
    });
  });
}

const held = [];

async function ack({ url, token, clientId, count, after }) {
  let waiting = null;
  let ready;
  const readyPromise = new Promise((resolve) => (ready = resolve));
  const stream = openStream(url, token, { client_id: clientId, raw_data: true, buckets: after ? [{ name: 'global[]', after }] : [] }, 'ndjson', {
    line(line) {
      if (line.checkpoint_complete) ready();
      const wc = line.checkpoint?.write_checkpoint ?? line.checkpoint_diff?.write_checkpoint;
      if (waiting && wc === waiting.id) {
        const resolve = waiting.resolve;
        waiting = null;
        resolve(performance.now());
      }
    },
    error: (error) => process.send({ log: 'ack stream error ' + error.message })
  });
  await readyPromise;
  const latencies = [];
  let errors = 0;
  for (let i = 1; i <= count; i++) {
    const id = String(i);
    const acknowledged = new Promise((resolve) => (waiting = { id, resolve }));
    const start = performance.now();
    const response = await fetch(url + '/sync/checkpoint-request', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', Authorization: 'Token ' + token },
      body: JSON.stringify({ client_id: clientId, checkpoint_request_id: id })
    });
    await response.arrayBuffer();
    if (response.status !== 200) errors++;
    const timeout = new Promise((resolve) => setTimeout(() => resolve(null), 5000));
    const at = await Promise.race([acknowledged, timeout]);
    if (at === null) {
      errors++;
      waiting = null;
    } else latencies.push(at - start);
  }
  stream.close();
  return { latencies, errors };
}

async function hold({ url, token, count, after }) {
  let failed = 0;
  const opened = [];
  for (let i = 0; i < count; i++) {
    opened.push(
      new Promise((resolve) => {
        let done = false;
        const stream = openStream(url, token, { client_id: 'idle-' + i, buckets: [{ name: 'global[]', after }] }, 'bson', {
          line(line) {
            if (line.checkpoint_complete && !done) {
              done = true;
              resolve();
            }
          },
          error: () => {
            failed++;
            if (!done) (done = true), resolve();
          }
        });
        held.push(stream);
      })
    );
    if (i % 50 === 49) await new Promise((resolve) => setTimeout(resolve, 10)); // do not open 1,000 sockets in one tick
  }
  await Promise.all(opened);
  return { failed };
}

/** Sync until the first checkpoint_complete, keeping the stream open: ms, ops, and the buckets' positions. */
function syncTracked(url, token, body, onLaterComplete, onLaterDiff) {
  return new Promise((resolve, reject) => {
    let ops = 0;
    let complete = false;
    const positions = {};
    const stream = openStream(url, token, body, 'bson', {
      line(line) {
        if (line.data) {
          ops += line.data.data.length;
          positions[line.data.bucket] = line.data.next_after;
        } else if (line.checkpoint_diff) {
          if (complete) onLaterDiff?.();
        } else if (line.checkpoint_complete) {
          if (!complete) {
            complete = true;
            resolve({ ms: performance.now() - stream.started, ops, positions, stream });
          } else onLaterComplete?.();
        } else if (line.error) reject(new Error(JSON.stringify(line.error)));
      },
      error: (error) => (complete ? process.send({ log: 'stream error ' + error.message }) : reject(error)),
      end: () => complete || reject(new Error('stream ended before checkpoint_complete'))
    });
  });
}

const subscription = (list) => ({ stream: 'list_items', parameters: { list }, override_priority: null });

/**
 * A new subscription over an open connection, as the SDK does it: the open request (one small list) ends and a new
 * one with both subscriptions starts, passing the retained bucket's position. Time from the switch to the new
 * request's checkpoint_complete, and the ops it brought (only the new list's rows).
 */
async function subscribeLatency({ url, token, runs, base, added }) {
  const results = [];
  for (let i = 0; i < runs; i++) {
    const open = await syncTracked(url, token, { raw_data: true, streams: { include_defaults: false, subscriptions: [subscription(base)] } });
    const started = performance.now();
    open.stream.close();
    const next = await syncTracked(url, token, {
      raw_data: true,
      buckets: Object.entries(open.positions).map(([name, after]) => ({ name, after })),
      streams: { include_defaults: false, subscriptions: [subscription(base), subscription(added)] }
    });
    next.stream.close();
    results.push({ ms: performance.now() - started, ops: next.ops });
  }
  return results;
}

const fanout = { streams: [], receipts: [], diffs: [] };
const now = () => performance.timeOrigin + performance.now();

/** Open one stream per token with these subscriptions; each later checkpoint_complete is a receipt (epoch ms). */
async function fanoutOpen({ url, tokens, lists }) {
  let failed = 0;
  for (let i = 0; i < tokens.length; i += 50) {
    await Promise.all(
      tokens.slice(i, i + 50).map((token, j) =>
        syncTracked(url, token, { client_id: 'fan-' + (i + j), raw_data: true, streams: { include_defaults: false, subscriptions: lists.map(subscription) } }, () =>
          fanout.receipts.push(now()), () => fanout.diffs.push(now())
        ).then(
          (opened) => fanout.streams.push(opened.stream),
          () => failed++
        )
      )
    );
  }
  return { failed };
}

process.on('message', async (message) => {
  try {
    let result;
    if (message.cmd === 'sync') {
      result = await Promise.all(Array.from({ length: message.clients }, (_, i) => syncOnce(message.url, message.token, { client_id: 'sync-' + i, raw_data: true }, message.format)));
    } else if (message.cmd === 'ack') result = await ack(message);
    else if (message.cmd === 'hold') result = await hold(message);
    else if (message.cmd === 'release') {
      for (const stream of held.splice(0)) stream.close();
      result = {};
    } else if (message.cmd === 'rss') result = { rss: process.memoryUsage().rss };
    else if (message.cmd === 'subscribe') result = await subscribeLatency(message);
    else if (message.cmd === 'fanout-open') result = await fanoutOpen(message);
    else if (message.cmd === 'fanout-receipts') result = { complete: fanout.receipts.splice(0), diff: fanout.diffs.splice(0) };
    else if (message.cmd === 'fanout-release') {
      for (const stream of fanout.streams.splice(0)) stream.close();
      result = {};
    }
    process.send({ id: message.id, result });
  } catch (error) {
    process.send({ id: message.id, error: String(error && error.stack || error) });
  }
});
process.send({ ready: true });
`;

/** A message from the client child process: a log line, or the answer (result or error) to request `id`. */
interface ClientMessage {
  log?: string;
  id: number;
  error?: string;
  result?: unknown;
}

class ClientProcess {
  private nextId = 0;
  private readonly pending = new Map<number, { resolve: (value: unknown) => void; reject: (error: Error) => void }>();
  private constructor(private readonly child: ChildProcess) {
    child.on('message', (message: ClientMessage) => {
      if (message.log) return;
      const waiter = this.pending.get(message.id);
      if (!waiter) return;
      this.pending.delete(message.id);
      if (message.error) waiter.reject(new Error(message.error));
      else waiter.resolve(message.result);
    });
  }

  static async start(dir: string): Promise<ClientProcess> {
    const file = path.join(dir, 'sync-client.mjs');
    await writeFile(file, CLIENT_SCRIPT);
    // bson is a dependency of service-core; the client process imports it from there.
    const serviceCore = path.resolve(
      path.dirname(fileURLToPath(import.meta.url)),
      '../../packages/service-core/package.json'
    );
    const bsonUrl = pathToFileURL(createRequire(serviceCore).resolve('bson')).href;
    const child = fork(file, [], {
      env: { ...process.env, BENCH_BSON_URL: bsonUrl },
      execArgv: [],
      stdio: ['ignore', 'inherit', 'inherit', 'ipc']
    });
    await new Promise<void>((resolve, reject) => {
      child.once('message', () => resolve());
      child.once('exit', (code) => reject(new Error(`client process exited (${code})`)));
    });
    return new ClientProcess(child);
  }

  call<T>(command: Record<string, unknown>): Promise<T> {
    const id = ++this.nextId;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: (value) => resolve(value as T), reject });
      this.child.send({ ...command, id });
    });
  }

  stop() {
    this.child.kill();
  }
}

/** Full GC (through a V8 flag set at run time), so RSS/heap figures are not just garbage waiting for collection. */
function collectGarbage() {
  v8.setFlagsFromString('--expose-gc');
  const gc = vm.runInNewContext('gc') as () => void;
  gc();
  gc();
}

const mb = (bytes: number) => bytes / 1024 / 1024;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function memoryFigures(settleMs: number) {
  await sleep(settleMs);
  collectGarbage();
  await sleep(200);
  const usage = process.memoryUsage();
  return {
    rssMb: round(mb(usage.rss), 1),
    heapUsedMb: round(mb(usage.heapUsed), 1),
    externalMb: round(mb(usage.external + usage.arrayBuffers), 1)
  };
}

export const syncBenchmark: Benchmark = {
  name: 'sync',
  description:
    'sync stream: checkpoint-request acknowledgement latency, 100k-row initial sync (1 and 20 clients, NDJSON/BSON), RSS of 1,000 idle streams; Sync Streams: subscribe-to-first-sync latency, RSS and checkpoint fan-out of 1,000 connections with 5 subscriptions',
  flags: {
    rows: 'rows in the synced table (default 100000)',
    requests: 'sequential checkpoint requests for the acknowledgement latency (default 200)',
    concurrent: 'clients of the concurrent initial sync (default 20)',
    idle: 'idle streams held at once (default 1000)',
    runs: 'measured one-client syncs per format; the median is reported (default 3)',
    'streams-only': 'run only the Sync Streams part',
    'subscribe-runs': 'Sync Streams: measured subscribe-to-first-sync runs (default 50)',
    'subscribed-connections': 'Sync Streams: connections with 5 subscriptions each (default 1000)',
    changes: 'Sync Streams: source changes whose fan-out is timed (default 5)'
  },
  async run({ flags, log }: BenchmarkContext): Promise<BenchmarkOutcome> {
    const definitions = flags.has('streams-only') ? null : await definitionsPhases(flags, log);
    const streams = await streamsPhases(flags, log);
    return {
      rows: [...(definitions?.rows ?? []), ...streams.rows],
      errors: (definitions?.errors ?? 0) + streams.errors,
      notes: [...(definitions?.notes ?? []), ...(streams.notes ?? [])],
      json: { ...(definitions?.json as object | undefined), streams: streams.json }
    };
  }
};

/** Issue 5 item 6: acknowledgement latency, initial syncs, idle streams (bucket definitions). */
async function definitionsPhases(
  flags: BenchmarkContext['flags'],
  log: BenchmarkContext['log']
): Promise<BenchmarkOutcome> {
  const rows = numberFlag(flags, 'rows', 100_000);
  const requests = numberFlag(flags, 'requests', 200);
  const concurrent = numberFlag(flags, 'concurrent', 20);
  const idle = numberFlag(flags, 'idle', 1000);
  const runs = numberFlag(flags, 'runs', 3);

  const root = await mkdtemp(path.join(tmpdir(), 'syncpoint-bench-sync-'));
  await chmod(root, 0o755);
  const cleanups: Array<() => Promise<unknown>> = [() => rm(root, { recursive: true, force: true })];
  let errors = 0;
  const notes: string[] = [];
  try {
    log('starting embedded Postgres (default settings) and the service (unified role, in this process)');
    const { postgres, source } = await startBenchPostgres(root, SOURCE_DATABASE, STORAGE_DATABASE, cleanups);
    await source.query(`
        CREATE TABLE todos (
          id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
          description text NOT NULL,
          completed boolean NOT NULL DEFAULT false,
          created_at timestamptz NOT NULL DEFAULT now()
        )`);
    await source.query('CREATE PUBLICATION powersync FOR ALL TABLES');

    const devKey = await loadOrCreateDevKey(path.join(root, 'dev-key.json'));
    const configText = JSON.stringify({
      replication: { connections: [{ type: 'postgresql', uri: postgres.url(SOURCE_DATABASE), sslmode: 'disable' }] },
      storage: { type: 'postgresql', uri: postgres.url(STORAGE_DATABASE), sslmode: 'disable' },
      port: 0,
      sync_config: { content: DEMO_SYNC_CONFIG },
      client_auth: { audience: [DEV_AUDIENCE], jwks: { keys: [devKey] } },
      api: { parameters: { max_concurrent_connections: idle + 100 } }
    });
    const registry = createModuleRegistry();
    const config = await parseConfig(configText, { source: 'bench', configDir: root, registry });
    const service: RunningService = await startService(config, {
      registry,
      logger: silentLogger,
      host: '127.0.0.1',
      role: 'unified'
    });
    cleanups.push(() => service.stop());
    const token = await signDevToken(devKey, { sub: 'bench-user' });

    log(`inserting ${rows.toLocaleString('en-US')} rows and waiting for replication`);
    const loadStart = performance.now();
    await source.query(`INSERT INTO todos (description) SELECT 'todo number ' || i FROM generate_series(1, ${rows}) i`);
    const { rows: lsnRows } = await source.query<{ lsn: string }>('SELECT pg_current_wal_lsn()::text AS lsn');
    const target = lsnToBigint(lsnRows[0]!.lsn);
    let served = await service.storage.getServingCheckpoint();
    const deadline = Date.now() + 600_000;
    while (!served?.checkpoint.lsn || lsnToBigint(served.checkpoint.lsn) < target) {
      if (Date.now() > deadline) throw new Error('replication did not catch up within 10 minutes');
      await sleep(100);
      served = await service.storage.getServingCheckpoint();
    }
    const checkpoint = served.checkpoint.checkpoint.toString();
    log(`replicated in ${((performance.now() - loadStart) / 1000).toFixed(1)} s (checkpoint ${checkpoint})`);

    const client = await ClientProcess.start(root);
    cleanups.push(() => {
      client.stop();
      return Promise.resolve();
    });

    // 1. Checkpoint-request acknowledgement latency on an idle source.
    log(`acknowledgement latency: ${requests} sequential checkpoint requests`);
    await client.call({ cmd: 'ack', url: service.url, token, clientId: 'ack-warmup', count: 10, after: checkpoint });
    const ack = await client.call<{ latencies: number[]; errors: number }>({
      cmd: 'ack',
      url: service.url,
      token,
      clientId: 'ack',
      count: requests,
      after: checkpoint
    });
    errors += ack.errors;
    const ackSummary = summarizeLatencies(ack.latencies);
    const ackSorted = Float64Array.from(ack.latencies).sort();
    const ackP95 = percentile(ackSorted, 95);
    log(
      `  p50 ${ackSummary.p50.toFixed(1)} ms, p95 ${ackP95.toFixed(1)} ms, p99 ${ackSummary.p99.toFixed(1)} ms (${ack.errors} errors)`
    );

    // 2. New clients syncing the whole table.
    type SyncResult = { ms: number; ops: number };
    const syncRuns: Record<string, unknown> = {};
    const oneClient: Record<string, number> = {};
    const concurrentFigures: Record<string, { allMs: number; p50Ms: number; maxMs: number }> = {};
    for (const format of ['ndjson', 'bson'] as const) {
      await client.call<SyncResult[]>({ cmd: 'sync', url: service.url, token, format, clients: 1 }); // warm-up
      const times: number[] = [];
      for (let run = 0; run < runs; run++) {
        const [result] = await client.call<SyncResult[]>({
          cmd: 'sync',
          url: service.url,
          token,
          format,
          clients: 1
        });
        if (result!.ops !== rows) {
          errors++;
          notes.push(`${format} one client: ${result!.ops} ops instead of ${rows}`);
        }
        times.push(result!.ms);
      }
      const median = [...times].sort((a, b) => a - b)[Math.floor(times.length / 2)]!;
      oneClient[format] = median;
      log(
        `  ${format}, 1 client: ${times.map((ms) => (ms / 1000).toFixed(2)).join(', ')} s (median ${(median / 1000).toFixed(2)} s)`
      );

      const started = performance.now();
      const results = await client.call<SyncResult[]>({
        cmd: 'sync',
        url: service.url,
        token,
        format,
        clients: concurrent
      });
      const allMs = performance.now() - started;
      for (const result of results) {
        if (result.ops !== rows) {
          errors++;
          notes.push(`${format} ${concurrent} clients: a client got ${result.ops} ops instead of ${rows}`);
        }
      }
      const sorted = Float64Array.from(results.map((result) => result.ms)).sort();
      concurrentFigures[format] = { allMs, p50Ms: percentile(sorted, 50), maxMs: sorted[sorted.length - 1]! };
      log(
        `  ${format}, ${concurrent} clients: all done after ${(allMs / 1000).toFixed(2)} s (per client p50 ${(percentile(sorted, 50) / 1000).toFixed(2)} s)`
      );
      syncRuns[format] = {
        oneClientMs: times.map((ms) => round(ms, 1)),
        concurrent: {
          clients: concurrent,
          allMs: round(allMs, 1),
          perClientMs: results.map((result) => round(result.ms, 1))
        }
      };
    }

    // 3. RSS with many idle streams.
    log(`memory: ${idle} idle streams`);
    const before = await memoryFigures(2_000);
    const held = await client.call<{ failed: number }>({
      cmd: 'hold',
      url: service.url,
      token,
      count: idle,
      after: checkpoint
    });
    if (held.failed > 0) {
      errors += held.failed;
      notes.push(`${held.failed} of ${idle} idle streams failed to open`);
    }
    const openCount = service.syncConnections?.count ?? Number.NaN;
    const waiting = service.watcher?.waiting ?? Number.NaN;
    const during = await memoryFigures(1_000);
    await client.call({ cmd: 'release' });
    const deadlineClose = Date.now() + 10_000;
    while ((service.syncConnections?.count ?? 0) > 0 && Date.now() < deadlineClose) await sleep(20);
    const after = await memoryFigures(3_000);
    log(
      `  RSS idle ${before.rssMb} MB, with ${openCount} streams ${during.rssMb} MB (${waiting} watcher waiters), after close ${after.rssMb} MB`
    );
    const backToIdle = after.heapUsedMb <= before.heapUsedMb * 1.1 + 2 && after.rssMb <= before.rssMb * 1.1;

    const rowsOut: ReportRow[] = [
      {
        label: 'ack latency p50',
        value: ackSummary.p50,
        unit: 'ms',
        target: { comparison: '<=', value: SYNC_TARGETS.ackP50Ms },
        note: `(reference ${SYNC_REFERENCE.ackP50Ms} ms)`
      },
      { label: 'ack latency p95', value: ackP95, unit: 'ms' },
      {
        label: 'ack latency p99',
        value: ackSummary.p99,
        unit: 'ms',
        target: { comparison: '<=', value: SYNC_TARGETS.ackP99Ms },
        note: `(reference ${SYNC_REFERENCE.ackP99Ms} ms)`
      },
      ...(['ndjson', 'bson'] as const).flatMap((format): ReportRow[] => [
        {
          label: `${rows / 1000}k rows, 1 client, ${format}`,
          value: oneClient[format]! / 1000,
          unit: 's',
          target: { comparison: '<=', value: SYNC_TARGETS.oneClientSeconds },
          note: `(reference ${SYNC_REFERENCE.oneClientSeconds}; median of ${runs})`
        },
        {
          label: `${rows / 1000}k rows, ${concurrent} clients, ${format}`,
          value: concurrentFigures[format]!.allMs / 1000,
          unit: 's',
          note: `(all done; per-client p50 ${(concurrentFigures[format]!.p50Ms / 1000).toFixed(2)} s)`
        }
      ]),
      { label: 'RSS idle (before)', value: before.rssMb, unit: 'MB', digits: 1 },
      {
        label: `RSS with ${idle} idle streams`,
        value: during.rssMb,
        unit: 'MB',
        digits: 1,
        target: { comparison: '<=', value: SYNC_TARGETS.idleStreamsRssMb }
      },
      {
        label: 'RSS after they close',
        value: after.rssMb,
        unit: 'MB',
        digits: 1,
        target: { comparison: '<=', value: round(before.rssMb * 1.1, 1) },
        note: '(idle level + 10%)'
      },
      {
        label: 'heap used idle / streams / after',
        value: after.heapUsedMb,
        unit: 'MB',
        digits: 1,
        note: `(${before.heapUsedMb} / ${during.heapUsedMb} / ${after.heapUsedMb} MB)`
      }
    ];
    if (!Number.isFinite(openCount) || openCount < idle - held.failed) {
      errors++;
      notes.push(`expected ${idle} open streams, the service counted ${openCount}`);
    }
    return {
      rows: rowsOut,
      errors,
      notes,
      json: {
        machine: { cpus: cpus().length, loadavg: loadavg().map((value) => round(value, 2)), node: process.version },
        rows,
        checkpoint,
        ack: {
          requests,
          errors: ack.errors,
          p50Ms: round(ackSummary.p50),
          p95Ms: round(ackP95),
          p99Ms: round(ackSummary.p99),
          maxMs: round(ackSummary.max),
          meanMs: round(ackSummary.mean)
        },
        sync: syncRuns,
        oneClientMedianMs: Object.fromEntries(Object.entries(oneClient).map(([format, ms]) => [format, round(ms, 1)])),
        idleStreams: {
          count: idle,
          open: openCount,
          watcherWaiters: waiting,
          failed: held.failed,
          before,
          during,
          after,
          backToIdle
        },
        targets: SYNC_TARGETS,
        reference: SYNC_REFERENCE
      }
    };
  } finally {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup().catch(() => {});
  }
}

const STREAMS_SOURCE_DATABASE = 'bench_streams_source';
const STREAMS_STORAGE_DATABASE = 'bench_streams_storage';
/** Rows of the list a new subscription brings (issue 15 item 7). */
const SUBSCRIBE_ROWS = 1000;
const SUBSCRIPTIONS_PER_CONNECTION = 5;

/** Items of a list, for members only: every connection resolves through the membership index (STREAMS §4.4). */
const STREAMS_SYNC_CONFIG = `
config:
  edition: 3
streams:
  list_items:
    query: >
      SELECT * FROM items
       WHERE list_id = subscription.parameter('list')
         AND list_id IN (SELECT list_id FROM list_members WHERE user_id = auth.user_id())
`;

/**
 * Issue 15 item 7 (Sync Streams), on a service of its own: the time from a new subscription over an open connection to
 * its first sync (1,000 rows); and `connections` open connections, each a different user with 5 subscriptions
 * (membership lookups on every resolution): the service's RSS, and for one source change in a list all of them
 * subscribe to, the time from the source commit to each connection's `checkpoint_complete` (replication included).
 */
async function streamsPhases(
  flags: BenchmarkContext['flags'],
  log: BenchmarkContext['log']
): Promise<BenchmarkOutcome> {
  const subscribeRuns = numberFlag(flags, 'subscribe-runs', 50);
  const connections = numberFlag(flags, 'subscribed-connections', 1000);
  const changes = numberFlag(flags, 'changes', 5);
  const lists = Array.from({ length: SUBSCRIPTIONS_PER_CONNECTION }, (_, i) => `shared-${i}`);

  const root = await mkdtemp(path.join(tmpdir(), 'syncpoint-bench-streams-'));
  await chmod(root, 0o755);
  const cleanups: Array<() => Promise<unknown>> = [() => rm(root, { recursive: true, force: true })];
  let errors = 0;
  const notes: string[] = [];
  try {
    log('Sync Streams: starting embedded Postgres and a service with a streams config');
    const { postgres, source } = await startBenchPostgres(
      root,
      STREAMS_SOURCE_DATABASE,
      STREAMS_STORAGE_DATABASE,
      cleanups
    );
    await source.query(`
      CREATE TABLE items (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), list_id text NOT NULL, description text);
      CREATE TABLE list_members (id text PRIMARY KEY, list_id text NOT NULL, user_id text NOT NULL);
      CREATE PUBLICATION powersync FOR ALL TABLES`);
    await source.query(
      `INSERT INTO items (list_id, description) SELECT 'big', 'item ' || i FROM generate_series(1, ${SUBSCRIBE_ROWS}) i`
    );
    await source.query(
      `INSERT INTO items (list_id, description) SELECT 'shared-' || (i % ${lists.length}), 'shared ' || i
         FROM generate_series(1, ${lists.length * 20}) i`
    );
    await source.query(
      `INSERT INTO list_members VALUES ('bench-small', 'small', 'bench-user'), ('bench-big', 'big', 'bench-user')`
    );
    await source.query(
      `INSERT INTO items (list_id, description) SELECT 'small', 'small ' || i FROM generate_series(1, 10) i`
    );
    await source.query(
      `INSERT INTO list_members SELECT 'm-' || u || '-' || l, 'shared-' || l, 'user-' || u
         FROM generate_series(0, ${connections - 1}) u, generate_series(0, ${lists.length - 1}) l`
    );

    const devKey = await loadOrCreateDevKey(path.join(root, 'dev-key.json'));
    const configText = JSON.stringify({
      replication: {
        connections: [{ type: 'postgresql', uri: postgres.url(STREAMS_SOURCE_DATABASE), sslmode: 'disable' }]
      },
      storage: { type: 'postgresql', uri: postgres.url(STREAMS_STORAGE_DATABASE), sslmode: 'disable' },
      port: 0,
      sync_config: { content: STREAMS_SYNC_CONFIG },
      client_auth: { audience: [DEV_AUDIENCE], jwks: { keys: [devKey] } },
      api: { parameters: { max_concurrent_connections: connections + 100 } }
    });
    const registry = createModuleRegistry();
    const config = await parseConfig(configText, { source: 'bench', configDir: root, registry });
    const service: RunningService = await startService(config, {
      registry,
      logger: silentLogger,
      host: '127.0.0.1',
      role: 'unified'
    });
    cleanups.push(() => service.stop());
    await waitForReplication(source, service);
    const client = await ClientProcess.start(root);
    cleanups.push(() => {
      client.stop();
      return Promise.resolve();
    });

    // 1. Subscribe to first sync.
    log(`subscribe to first sync: ${subscribeRuns} runs, ${SUBSCRIBE_ROWS} rows each`);
    const token = await signDevToken(devKey, { sub: 'bench-user' });
    const subscribeCall = (runs: number) =>
      client.call<Array<{ ms: number; ops: number }>>({
        cmd: 'subscribe',
        url: service.url,
        token,
        runs,
        base: 'small',
        added: 'big'
      });
    await subscribeCall(3); // warm-up
    const subscribed = await subscribeCall(subscribeRuns);
    for (const run of subscribed) {
      if (run.ops !== SUBSCRIBE_ROWS) {
        errors++;
        notes.push(`a subscription brought ${run.ops} ops instead of ${SUBSCRIBE_ROWS}`);
      }
    }
    const subscribeSummary = summarizeLatencies(subscribed.map((run) => run.ms));
    log(`  p50 ${subscribeSummary.p50.toFixed(1)} ms, p99 ${subscribeSummary.p99.toFixed(1)} ms`);

    // 2. Many subscribed connections: RSS, and the fan-out of one source change.
    log(`${connections} connections with ${lists.length} subscriptions each`);
    const before = await memoryFigures(1_000);
    const tokens = await Promise.all(
      Array.from({ length: connections }, (_, u) => signDevToken(devKey, { sub: `user-${u}` }))
    );
    const opened = await client.call<{ failed: number }>({ cmd: 'fanout-open', url: service.url, tokens, lists });
    if (opened.failed > 0) {
      errors += opened.failed;
      notes.push(`${opened.failed} of ${connections} subscribed connections failed to open`);
    }
    const open = connections - opened.failed;
    const during = await memoryFigures(1_000);
    log(
      `  RSS before ${before.rssMb} MB, with ${service.syncConnections?.count ?? '?'} connections ${during.rssMb} MB`
    );
    const fanoutMs: number[] = [];
    /** When each connection got the change's checkpoint_diff: resolution and checksums, before the data. */
    const diffMs: number[] = [];
    /** Per change, the first connection's receipt: replication and one resolution, before the fan-out proper. */
    const firstMs: number[] = [];
    type Receipts = { complete: number[]; diff: number[] };
    for (let change = 0; change < changes; change++) {
      await client.call<Receipts>({ cmd: 'fanout-receipts' }); // drop anything unrelated
      const committedAt = performance.timeOrigin + performance.now();
      await source.query(`INSERT INTO items (list_id, description) VALUES ('shared-0', 'change ${change}')`);
      const receipts: number[] = [];
      const diffs: number[] = [];
      const deadline = Date.now() + 30_000;
      while (receipts.length < open && Date.now() < deadline) {
        await sleep(20);
        const taken = await client.call<Receipts>({ cmd: 'fanout-receipts' });
        receipts.push(...taken.complete);
        diffs.push(...taken.diff);
      }
      if (receipts.length < open) {
        errors++;
        notes.push(`change ${change}: ${receipts.length} of ${open} connections got it within 30 s`);
      }
      const latencies = receipts.map((at) => at - committedAt);
      fanoutMs.push(...latencies);
      diffMs.push(...diffs.map((at) => at - committedAt));
      if (latencies.length > 0) firstMs.push(Math.min(...latencies));
      const p99 = (values: number[]) => percentile(Float64Array.from(values).sort(), 99).toFixed(1);
      log(
        `  change ${change + 1}: first ${Math.min(...latencies).toFixed(1)} ms, checkpoint_diff p99 ${p99(diffs.map((at) => at - committedAt))} ms, checkpoint_complete p99 ${p99(latencies)} ms`
      );
      await sleep(200);
    }
    await client.call({ cmd: 'fanout-release' });
    const fanoutSummary = summarizeLatencies(fanoutMs);
    const diffSummary = summarizeLatencies(diffMs);

    const rows: ReportRow[] = [
      {
        label: `streams: subscribe → first sync (${SUBSCRIBE_ROWS} rows) p50`,
        value: subscribeSummary.p50,
        unit: 'ms',
        target: { comparison: '<=', value: STREAMS_TARGETS.subscribeP50Ms }
      },
      { label: `streams: subscribe → first sync p99`, value: subscribeSummary.p99, unit: 'ms' },
      {
        label: `streams: RSS with ${connections} × ${lists.length} subscriptions`,
        value: during.rssMb,
        unit: 'MB',
        digits: 1,
        target: { comparison: '<=', value: STREAMS_TARGETS.subscribedStreamsRssMb },
        note: `(before ${before.rssMb} MB; bench process: service + Postgres pools)`
      },
      {
        label: 'streams: change → first connection (median)',
        value: percentile(Float64Array.from(firstMs).sort(), 50),
        unit: 'ms',
        note: '(replication and the first delivery)'
      },
      {
        label: 'streams: change → checkpoint_diff p99',
        value: diffSummary.p99,
        unit: 'ms',
        note: '(re-resolution and checksums, before the data)'
      },
      { label: 'streams: change fan-out p50', value: fanoutSummary.p50, unit: 'ms' },
      {
        label: `streams: change fan-out p99 (${connections} connections)`,
        value: fanoutSummary.p99,
        unit: 'ms',
        target: { comparison: '<=', value: STREAMS_TARGETS.fanoutP99Ms },
        note: `(source commit → checkpoint_complete, replication included; ${changes} changes)`
      }
    ];
    return {
      rows,
      errors,
      notes,
      json: {
        machine: { cpus: cpus().length, loadavg: loadavg().map((value) => round(value, 2)), node: process.version },
        subscribe: {
          runs: subscribeRuns,
          rows: SUBSCRIBE_ROWS,
          p50Ms: round(subscribeSummary.p50),
          p99Ms: round(subscribeSummary.p99),
          maxMs: round(subscribeSummary.max)
        },
        subscribed: {
          connections,
          subscriptionsEach: lists.length,
          failed: opened.failed,
          before,
          during,
          fanout: {
            changes,
            firstConnectionMs: firstMs.map((ms) => round(ms, 1)),
            checkpointDiffP99Ms: round(diffSummary.p99),
            p50Ms: round(fanoutSummary.p50),
            p99Ms: round(fanoutSummary.p99),
            maxMs: round(fanoutSummary.max)
          }
        },
        targets: STREAMS_TARGETS
      }
    };
  } finally {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup().catch(() => {});
  }
}

/** Until the served checkpoint covers the source's current WAL position. */
async function waitForReplication(source: pg.Pool, service: RunningService) {
  const { rows } = await source.query<{ lsn: string }>('SELECT pg_current_wal_lsn()::text AS lsn');
  const target = lsnToBigint(rows[0]!.lsn);
  const deadline = Date.now() + 600_000;
  for (;;) {
    const served = await service.storage.getServingCheckpoint();
    if (served?.checkpoint.lsn && lsnToBigint(served.checkpoint.lsn) >= target) return;
    if (Date.now() > deadline) throw new Error('replication did not catch up within 10 minutes');
    await sleep(100);
  }
}

/** An embedded Postgres in `root` with a source and a storage database, and a small pool on the source. */
async function startBenchPostgres(
  root: string,
  sourceDatabase: string,
  storageDatabase: string,
  cleanups: Array<() => Promise<unknown>>
) {
  const postgres = await startEmbeddedPostgres({ dataDir: path.join(root, 'postgres'), persistent: false });
  cleanups.push(() => postgres.stop());
  await postgres.ensureDatabase(sourceDatabase);
  await postgres.ensureDatabase(storageDatabase);
  const source = new pg.Pool({ connectionString: postgres.url(sourceDatabase), max: 2 });
  source.on('error', () => {});
  cleanups.push(() => source.end());
  return { postgres, source };
}
