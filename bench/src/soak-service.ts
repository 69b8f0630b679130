/**
 * The service under soak: embedded Postgres in a temp folder (source + storage databases) and `syncpoint start` as a
 * child process, so the RSS and CPU read from /proc are the service's alone.
 */
import type { ChildProcessWithoutNullStreams } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { startEmbeddedPostgres, type PostgresServer } from '@syncpoint/dev-postgres';
import {
  DEMO_SYNC_CONFIG,
  DEV_AUDIENCE,
  loadOrCreateDevKey,
  prepareDemoSourceDatabase,
  type DevKey
} from '@syncpoint/service';
import pg from 'pg';
import { spawnSyncpointStart } from './lib/child-service.js';

const SOURCE_DATABASE = 'soak_source';
const STORAGE_DATABASE = 'soak_storage';
/** Pino levels: 40 = warn, 50 = error, 60 = fatal. */
const WARN_LEVEL = 40;

export interface SoakService {
  url: string;
  /** The process running the service (RSS and CPU are read from it). */
  pid: number;
  /** The supervising `syncpoint start` parent, when it re-executed itself with a heap limit. */
  supervisorPid: number | undefined;
  devKey: DevKey;
  /** Warning/error log lines of the service so far (parsed JSON), at most the first 20 kept. */
  warnings: { count: number; samples: string[] };
  /** The last part of what the child printed. */
  output(): string;
  /** Whether the child is still running. */
  running(): boolean;
  /** SIGTERM, wait for the exit (SIGKILL after 30 s); then Postgres and the temp folder go. Returns the exit code. */
  stop(): Promise<number | null>;
}

export async function startSoakService(options: {
  maxConnections: number;
  rows: number;
  storagePoolSize?: number | undefined;
  log: (line: string) => void;
}): Promise<SoakService> {
  const root = await mkdtemp(path.join(tmpdir(), 'syncpoint-soak-'));
  await chmod(root, 0o755); // as root, Postgres runs as the postgres user and must reach the data folder
  const cleanups: Array<() => Promise<unknown>> = [() => rm(root, { recursive: true, force: true })];
  const cleanup = async () => {
    for (const step of cleanups.splice(0).reverse()) await step().catch(() => {});
  };
  try {
    const postgres: PostgresServer = await startEmbeddedPostgres({
      dataDir: path.join(root, 'postgres'),
      persistent: false
    });
    cleanups.push(() => postgres.stop());
    await postgres.ensureDatabase(SOURCE_DATABASE);
    await postgres.ensureDatabase(STORAGE_DATABASE);
    const sourceUrl = postgres.url(SOURCE_DATABASE);
    await prepareDemoSourceDatabase(sourceUrl);
    if (options.rows > 0) {
      const source = new pg.Client({ connectionString: sourceUrl });
      await source.connect();
      try {
        await source.query(
          `INSERT INTO todos (description) SELECT 'soak todo ' || i FROM generate_series(1, $1::int) i`,
          [options.rows]
        );
      } finally {
        await source.end();
      }
    }

    const devKey = await loadOrCreateDevKey(path.join(root, 'dev-key.json'));
    const configFile = path.join(root, 'config.yaml');
    // JSON is YAML. max_concurrent_connections is raised above the stream count (default 200).
    await writeFile(
      configFile,
      JSON.stringify({
        replication: { connections: [{ type: 'postgresql', uri: sourceUrl, sslmode: 'disable' }] },
        storage: {
          type: 'postgresql',
          uri: postgres.url(STORAGE_DATABASE),
          sslmode: 'disable',
          ...(options.storagePoolSize !== undefined ? { max_pool_size: options.storagePoolSize } : {})
        },
        port: 0,
        sync_config: { content: DEMO_SYNC_CONFIG },
        client_auth: { audience: [DEV_AUDIENCE], jwks: { keys: [devKey] } },
        api: { parameters: { max_concurrent_connections: options.maxConnections } },
        system: { logging: { level: 'info', format: 'json' } }
      }),
      { mode: 0o600 }
    );

    // Without a heap limit of ours: the soak runs `syncpoint start` as deployed by default, which sizes the heap limit
    // itself and runs the service in a supervised child process (whose pid its "heap limit set" log line gives).
    const child: ChildProcessWithoutNullStreams = spawnSyncpointStart(configFile, ['--role', 'unified'], {
      ownHeapLimit: false
    });
    let output = '';
    // The process running the service: the supervised child when `start` sized the heap limit, else this child.
    let servicePid = child.pid!;
    let heapLimitMb: number | undefined;
    const warnings = { count: 0, samples: [] as string[] };
    let resolveUrl: (url: string) => void;
    const urlPromise = new Promise<string>((resolve) => (resolveUrl = resolve));
    let partial = '';
    const onOutput = (chunk: Buffer) => {
      const text = chunk.toString('utf8');
      output = (output + text).slice(-100_000);
      partial += text;
      let newline: number;
      while ((newline = partial.indexOf('\n')) >= 0) {
        const line = partial.slice(0, newline);
        partial = partial.slice(newline + 1);
        let entry: { level?: number; msg?: string; url?: string; pid?: number; heap_limit_mb?: number } | undefined;
        try {
          entry = JSON.parse(line) as typeof entry;
        } catch {
          continue; // not a log line (e.g. a Node warning)
        }
        if (entry?.msg?.startsWith('heap limit set') && entry.pid) {
          servicePid = entry.pid;
          heapLimitMb = entry.heap_limit_mb;
        }
        if (entry?.msg === 'Syncpoint is listening' && entry.url) resolveUrl!(entry.url);
        if ((entry?.level ?? 0) >= WARN_LEVEL) {
          warnings.count++;
          if (warnings.samples.length < 20) warnings.samples.push(line.slice(0, 500));
        }
      }
    };
    child.stdout.on('data', onOutput);
    child.stderr.on('data', onOutput);
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    const running = () => child.exitCode === null && child.signalCode === null;
    // If the bench process ends abruptly (Ctrl-C, an uncaught error), do not leave the service running.
    const killOnExit = () => {
      if (running()) child.kill('SIGKILL');
    };
    process.once('exit', killOnExit);
    cleanups.push(async () => {
      process.off('exit', killOnExit);
      if (running()) child.kill('SIGKILL');
      await exited;
    });

    const timeout = new Promise<never>((_, reject) =>
      setTimeout(() => reject(new Error('the service did not start within 120 s')), 120_000).unref()
    );
    const early = exited.then((code) => {
      throw new Error(`the service exited (${code}) before listening`);
    });
    const url = await Promise.race([urlPromise, timeout, early]).catch((error: Error) => {
      throw new Error(`${error.message}; output:\n${output.slice(-5_000)}`);
    });
    early.catch(() => {}); // settles (rejects) when the child exits later; not an error then
    options.log(
      `service pid ${servicePid} listening at ${url}` +
        (servicePid !== child.pid
          ? ` (heap limit ${heapLimitMb} MB set by \`syncpoint start\`, supervising pid ${child.pid})`
          : '')
    );

    return {
      url,
      pid: servicePid,
      supervisorPid: servicePid !== child.pid ? child.pid! : undefined,
      devKey,
      warnings,
      output: () => output,
      running,
      async stop() {
        let code: number | null;
        if (running()) {
          child.kill('SIGTERM');
          const killTimer = setTimeout(() => child.kill('SIGKILL'), 30_000);
          code = await exited;
          clearTimeout(killTimer);
        } else code = child.exitCode;
        await cleanup();
        return code;
      }
    };
  } catch (error) {
    await cleanup();
    throw error;
  }
}

/** Resident set size of a process, from /proc (Linux). */
export function readRssBytes(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const match = /^VmRSS:\s+(\d+) kB/m.exec(status);
  if (!match) throw new Error(`no VmRSS in /proc/${pid}/status`);
  return Number(match[1]) * 1024;
}

/** User + system CPU time of a process (all its threads), in ms, from /proc (Linux). */
export function readCpuMs(pid: number): number {
  const text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
  // After comm: [11] = utime, [12] = stime, in clock ticks (USER_HZ = 100).
  return (Number(fields[11]) + Number(fields[12])) * 10;
}
