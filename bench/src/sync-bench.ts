import { fork, type ChildProcess } from 'node:child_process';
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { cpus, loadavg, tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import v8 from 'node:v8';
import vm from 'node:vm';
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

function lsnValue(lsn: string): bigint {
  const [high, low] = lsn.split('/');
  return (BigInt(`0x${high}`) << 32n) + BigInt(`0x${low}`);
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
    'sync stream: checkpoint-request acknowledgement latency, 100k-row initial sync (1 and 20 clients, NDJSON/BSON), RSS of 1,000 idle streams',
  flags: {
    rows: 'rows in the synced table (default 100000)',
    requests: 'sequential checkpoint requests for the acknowledgement latency (default 200)',
    concurrent: 'clients of the concurrent initial sync (default 20)',
    idle: 'idle streams held at once (default 1000)',
    runs: 'measured one-client syncs per format; the median is reported (default 3)'
  },
  async run({ flags, log }: BenchmarkContext): Promise<BenchmarkOutcome> {
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
      const postgres = await startEmbeddedPostgres({ dataDir: path.join(root, 'postgres'), persistent: false });
      cleanups.push(() => postgres.stop());
      await postgres.ensureDatabase(SOURCE_DATABASE);
      await postgres.ensureDatabase(STORAGE_DATABASE);
      const source = new pg.Pool({ connectionString: postgres.url(SOURCE_DATABASE), max: 2 });
      source.on('error', () => {});
      cleanups.push(() => source.end());
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
      await source.query(
        `INSERT INTO todos (description) SELECT 'todo number ' || i FROM generate_series(1, ${rows}) i`
      );
      const { rows: lsnRows } = await source.query<{ lsn: string }>('SELECT pg_current_wal_lsn()::text AS lsn');
      const target = lsnValue(lsnRows[0]!.lsn);
      let served = await service.storage.getServingCheckpoint();
      const deadline = Date.now() + 600_000;
      while (!served?.checkpoint.lsn || lsnValue(served.checkpoint.lsn) < target) {
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
          oneClientMedianMs: Object.fromEntries(
            Object.entries(oneClient).map(([format, ms]) => [format, round(ms, 1)])
          ),
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
};
