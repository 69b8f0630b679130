/**
 * `syncpoint start -c <config> --role <role>` as a child process of the benchmark, so its CPU (from /proc) is its own
 * and several processes can share one config, as a multi-process deployment does (DESIGN: N `api` + 1 `replication`).
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ServiceRole } from '@syncpoint/service-core';

const SERVICE_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../service');

/**
 * `syncpoint start -c <configFile> --port 0 --host 127.0.0.1 …startArgs` run by node itself with tsx's loader (not the
 * tsx CLI, whose grandchild a SIGKILL would miss). `ownHeapLimit` passes a heap limit of ours, so `start` runs the
 * service in this very process (its pid is the service's: for CPU readings, SIGKILL and SIGSTOP); without it, `start`
 * sizes the heap limit itself and supervises the service in a child process, as deployed by default.
 */
export function spawnSyncpointStart(
  configFile: string,
  startArgs: readonly string[],
  options: { ownHeapLimit: boolean }
): ChildProcessWithoutNullStreams {
  return spawn(
    process.execPath,
    [
      ...(options.ownHeapLimit ? ['--max-old-space-size=1024'] : []),
      '--import',
      'tsx',
      '--conditions=@syncpoint/source',
      path.join(SERVICE_DIR, 'src/cli.ts'),
      'start',
      '-c',
      configFile,
      '--port',
      '0',
      '--host',
      '127.0.0.1',
      ...startArgs
    ],
    { cwd: SERVICE_DIR, env: { ...process.env } }
  );
}
const START_TIMEOUT_MS = 120_000;

export interface ChildService {
  role: ServiceRole;
  pid: number;
  /** Base URL it listens on (loopback). */
  url: string;
  /** The last part of what it printed. */
  output(): string;
  /** SIGTERM, then SIGKILL after 30 s; resolves with the exit code. */
  stop(): Promise<number | null>;
}

export async function startChildService(configFile: string, role: ServiceRole): Promise<ChildService> {
  // CPU is read from /proc for this pid: the service must run in it.
  const child = spawnSyncpointStart(configFile, ['--role', role], { ownHeapLimit: true });
  let output = '';
  let partial = '';
  let resolveUrl: (url: string) => void;
  const listening = new Promise<string>((resolve) => (resolveUrl = resolve));
  const onOutput = (chunk: Buffer) => {
    const text = chunk.toString('utf8');
    output = (output + text).slice(-50_000);
    partial += text;
    let newline: number;
    while ((newline = partial.indexOf('\n')) >= 0) {
      const line = partial.slice(0, newline);
      partial = partial.slice(newline + 1);
      try {
        const entry = JSON.parse(line) as { msg?: string; url?: string };
        if (entry.msg === 'Syncpoint is listening' && entry.url) resolveUrl!(entry.url);
      } catch {
        // not a log line (e.g. a Node warning)
      }
    }
  };
  child.stdout.on('data', onOutput);
  child.stderr.on('data', onOutput);
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  const running = () => child.exitCode === null && child.signalCode === null;
  // If the bench process ends abruptly, do not leave the service running.
  const killOnExit = () => {
    if (running()) child.kill('SIGKILL');
  };
  process.once('exit', killOnExit);
  const stop = async () => {
    process.off('exit', killOnExit);
    if (!running()) return child.exitCode;
    child.kill('SIGTERM');
    const killTimer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    const code = await exited;
    clearTimeout(killTimer);
    return code;
  };

  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`the ${role} process did not start within 120 s`)), START_TIMEOUT_MS);
  });
  const early = exited.then((code) => {
    throw new Error(`the ${role} process exited (${code}) before listening`);
  });
  early.catch(() => {}); // settles when the child exits later; not an error then
  try {
    const url = await Promise.race([listening, timeout, early]);
    return { role, pid: child.pid!, url, output: () => output, stop };
  } catch (error) {
    await stop();
    throw new Error(`${(error as Error).message}; output:\n${output.slice(-5_000)}`, { cause: error });
  } finally {
    clearTimeout(timer);
  }
}
