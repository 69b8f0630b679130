/**
 * `pnpm bench failover` (issue 12 item 1): SIGKILL of the only `syncpoint start` process and an immediate restart.
 * Measured from the moment the new process logs that it listens until a client's stream has both acknowledged a
 * checkpoint request made then and delivered a row written just before the kill. Target: 3 s (was 30 s, the
 * replication lease of the dead process; the reference service takes about 57 s here).
 */
import type { ChildProcessWithoutNullStreams } from 'node:child_process';
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
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
import { spawnSyncpointStart } from './lib/child-service.js';
import { numberFlag, type Benchmark, type BenchmarkOutcome } from './benchmark.js';
import { checkpointRequestId, writeCheckpoint } from '@syncpoint/codecs';

const FAILOVER_TARGET_MS = 3_000;
const STEP_TIMEOUT_MS = 120_000;

interface Child {
  process: ChildProcessWithoutNullStreams;
  url: Promise<string>;
  output(): string;
}

function startChild(configFile: string): Child {
  // The kill must hit the process holding the lock: the service runs in this pid, not in a supervised child.
  const child = spawnSyncpointStart(configFile, [], { ownHeapLimit: true });
  let output = '';
  const url = new Promise<string>((resolve, reject) => {
    let partial = '';
    const onData = (chunk: Buffer) => {
      const text = chunk.toString('utf8');
      output = (output + text).slice(-50_000);
      partial += text;
      let newline: number;
      while ((newline = partial.indexOf('\n')) >= 0) {
        const line = partial.slice(0, newline);
        partial = partial.slice(newline + 1);
        if (!line.includes('Syncpoint is listening')) continue;
        try {
          resolve((JSON.parse(line) as { url: string }).url);
        } catch {
          // not a JSON log line
        }
      }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    child.on('exit', (code, signal) => reject(new Error(`the service exited (${code ?? signal}):\n${output}`)));
  });
  url.catch(() => undefined);
  return { process: child, url, output: () => output };
}

async function killed(child: Child): Promise<void> {
  if (child.process.exitCode !== null || child.process.signalCode !== null) return;
  const exited = new Promise((resolve) => child.process.once('exit', resolve));
  child.process.kill('SIGKILL');
  await exited;
}

/** Reads NDJSON sync lines until `done` says so; rejects on timeout or end of stream. */
async function readStreamUntil(
  url: string,
  token: string,
  body: object,
  done: (line: Record<string, unknown>) => boolean,
  timeoutMs: number
): Promise<void> {
  const response = await fetch(`${url}/sync/stream`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', Authorization: `Token ${token}`, Accept: 'application/x-ndjson' },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(timeoutMs)
  });
  if (response.status !== 200) throw new Error(`sync stream: HTTP ${response.status} ${await response.text()}`);
  const reader: ReadableStreamDefaultReader<Uint8Array> = response.body!.getReader();
  const decoder = new TextDecoder();
  let buffer = '';
  try {
    for (;;) {
      const { done: ended, value } = await reader.read();
      if (ended) throw new Error('the sync stream ended early');
      buffer += decoder.decode(value, { stream: true });
      let newline: number;
      while ((newline = buffer.indexOf('\n')) >= 0) {
        const line = buffer.slice(0, newline);
        buffer = buffer.slice(newline + 1);
        if (line.trim() && done(JSON.parse(line) as Record<string, unknown>)) return;
      }
    }
  } finally {
    await reader.cancel().catch(() => undefined);
  }
}

async function postCheckpointRequest(url: string, token: string, clientId: string, id: bigint): Promise<void> {
  const deadline = Date.now() + STEP_TIMEOUT_MS;
  for (;;) {
    const response = await fetch(`${url}/sync/checkpoint-request`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', Authorization: `Token ${token}` },
      body: JSON.stringify({ client_id: clientId, checkpoint_request_id: checkpointRequestId.encode(id) })
    }).catch((error: unknown) => error as Error);
    if (!(response instanceof Error) && response.status === 200) return;
    if (Date.now() > deadline) throw new Error(`checkpoint request ${id} was not stored`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

export const failoverBenchmark: Benchmark = {
  name: 'failover',
  description: 'SIGKILL of the only process and an immediate restart: time from listening to acknowledgement',
  flags: { rounds: 'kill/restart rounds (default 3)' },
  async run(context): Promise<BenchmarkOutcome> {
    const { flags } = context;
    const log = (line: string) => context.log(line);
    const rounds = numberFlag(flags, 'rounds', 3);
    const root = await mkdtemp(path.join(tmpdir(), 'syncpoint-failover-'));
    await chmod(root, 0o755); // as root, Postgres runs as the postgres user and must reach the data folder
    const postgres = await startEmbeddedPostgres({ dataDir: path.join(root, 'postgres'), persistent: false });
    let child: Child | undefined;
    const source = new pg.Pool({ connectionString: postgres.url('failover_source'), max: 2 });
    try {
      await postgres.ensureDatabase('failover_source');
      await postgres.ensureDatabase('failover_storage');
      await prepareDemoSourceDatabase(postgres.url('failover_source'));
      const devKey = await loadOrCreateDevKey(path.join(root, 'dev-key.json'));
      const configFile = path.join(root, 'config.yaml');
      await writeFile(
        configFile,
        JSON.stringify({
          replication: {
            connections: [{ type: 'postgresql', uri: postgres.url('failover_source'), sslmode: 'disable' }]
          },
          storage: { type: 'postgresql', uri: postgres.url('failover_storage'), sslmode: 'disable' },
          port: 0,
          sync_config: { content: DEMO_SYNC_CONFIG },
          client_auth: { audience: [DEV_AUDIENCE], jwks: { keys: [devKey] } },
          system: { logging: { level: 'info', format: 'json' } }
        }),
        { mode: 0o600 }
      );
      const token = await signDevToken(devKey, { sub: 'failover-user' });

      child = startChild(configFile);
      let url = await child.url;
      // The first start snapshots; a client syncing to completion shows replication is up.
      await readStreamUntil(
        url,
        token,
        { client_id: 'warmup', raw_data: true },
        (line) => 'checkpoint_complete' in line,
        STEP_TIMEOUT_MS
      );

      const timings: number[] = [];
      for (let attempt = 1; attempt <= rounds; attempt++) {
        const marker = `written before kill ${attempt} ${Date.now()}`;
        await source.query(`INSERT INTO todos (description) VALUES ($1)`, [marker]);
        await killed(child);
        child = startChild(configFile);
        url = await child.url;
        const listeningAt = Date.now();
        const clientId = `failover-${attempt}`;
        let sawRow = false;
        let acknowledged = false;
        const streamDone = readStreamUntil(
          url,
          token,
          { client_id: clientId, raw_data: true },
          (line) => {
            if (JSON.stringify(line).includes(marker)) sawRow = true;
            const checkpoint = (line.checkpoint ?? line.checkpoint_diff) as { write_checkpoint?: string } | undefined;
            if (checkpoint?.write_checkpoint !== undefined && writeCheckpoint.parse(checkpoint.write_checkpoint) >= 1n)
              acknowledged = true;
            return sawRow && acknowledged && 'checkpoint_complete' in line;
          },
          STEP_TIMEOUT_MS
        );
        await postCheckpointRequest(url, token, clientId, 1n);
        await streamDone;
        const elapsed = Date.now() - listeningAt;
        timings.push(elapsed);
        log(`round ${attempt}: acknowledged and caught up ${elapsed} ms after the restarted process listened`);
      }
      const sorted = [...timings].sort((a, b) => a - b);
      const median = sorted[Math.floor(sorted.length / 2)]!;
      const worst = sorted.at(-1)!;
      return {
        rows: [
          {
            label: 'restart-to-acknowledgement after SIGKILL, median',
            value: median,
            unit: 'ms',
            target: { comparison: '<=', value: FAILOVER_TARGET_MS },
            note: 'was ~30,000 ms (lease); reference ~57,000 ms'
          },
          {
            label: 'restart-to-acknowledgement after SIGKILL, worst',
            value: worst,
            unit: 'ms',
            target: { comparison: '<=', value: FAILOVER_TARGET_MS }
          }
        ],
        errors: 0,
        json: { rounds, timingsMs: timings, medianMs: median, worstMs: worst, targetMs: FAILOVER_TARGET_MS }
      };
    } finally {
      if (child) await killed(child).catch(() => undefined);
      await source.end().catch(() => undefined);
      await postgres.stop().catch(() => undefined);
      await rm(root, { recursive: true, force: true });
    }
  }
};
