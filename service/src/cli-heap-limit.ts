import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { constants, totalmem } from 'node:os';
import path from 'node:path';

/**
 * `syncpoint start` without a heap limit of the operator's: run the service in a child process with
 * `--max-old-space-size` sized from the memory this process may use (issue 12 item 7). Node otherwise lets the heap
 * grow lazily towards a limit sized for the whole machine, so RSS creeps for minutes without a leak and a container
 * is OOM-killed instead of collecting garbage. Only Node built-ins here: this runs in the supervising parent before
 * the service's modules load, so the parent stays small.
 */

/** Set in the child: the heap limit it was started with (MB), so it does not re-execute itself again. */
export const HEAP_LIMIT_ENV = 'SYNCPOINT_HEAP_LIMIT_MB';
/** Set in the child beside it: how the limit was sized, for its start-up log line. */
export const HEAP_LIMIT_REASON_ENV = 'SYNCPOINT_HEAP_LIMIT_REASON';

/** Share of the available memory given to the JS heap; the rest is off-heap (buffers, young generation, code). */
const HEAP_SHARE = 0.75;
/**
 * Below this the service cannot hold its ordinary working set (Node's own heap is ~10 MB, each open stream tens of
 * KB): a smaller container is too small for the service, and a heap error there would hide the real cause.
 */
export const HEAP_FLOOR_MB = 128;
/**
 * V8 lets garbage pile up longer the larger its limit (its heap growth factor rises with the limit, up to 4× the live
 * heap at ~2 GB), so a machine-sized limit makes RSS creep. The service's live heap is ~120 MB with 1,000 open streams
 * (five times the default `max_concurrent_connections`): 512 MB leaves four times that, so a heavier load or a slow
 * leak does not crash the process early. Bigger deployments set their own limit.
 */
export const HEAP_CAP_MB = 512;

/** cgroup values at or above this mean "no limit" (v1 writes 2^63 rounded down to a page). */
const UNLIMITED_BYTES = 2 ** 60;
const MB = 1024 * 1024;

export interface MemoryLimit {
  bytes: number;
  source: 'cgroup v2' | 'cgroup v1' | 'physical memory';
}

export interface HeapLimit {
  megabytes: number;
  /** Why this size, for the log: e.g. `75 % of the cgroup v2 limit of 2048 MB`. */
  reason: string;
}

/** Where the cgroup files are; tests point it at a folder of their own. */
export interface CgroupPaths {
  /** `/proc/self/cgroup`. */
  procSelfCgroup: string;
  /** The cgroup v2 mount (`/sys/fs/cgroup`). */
  v2Mount: string;
  /** The cgroup v1 memory controller mount (`/sys/fs/cgroup/memory`). */
  v1MemoryMount: string;
}

const SYSTEM_CGROUP_PATHS: CgroupPaths = {
  procSelfCgroup: '/proc/self/cgroup',
  v2Mount: '/sys/fs/cgroup',
  v1MemoryMount: '/sys/fs/cgroup/memory'
};

/** A limit file's value in bytes, or null for "max", huge values, unreadable or bogus content. */
function readLimitFile(file: string): number | null {
  let text: string;
  try {
    text = readFileSync(file, 'utf8').trim();
  } catch {
    return null;
  }
  if (!/^\d+$/.test(text)) return null; // "max", empty, negative, garbage
  const bytes = Number(text);
  return bytes > 0 && bytes < UNLIMITED_BYTES ? bytes : null;
}

/** The smallest valid limit in `file` of the cgroup at `cgroupPath` and of each of its ancestors (a parent's binds). */
function smallestLimitUpwards(mount: string, cgroupPath: string, file: string): number | null {
  let smallest: number | null = null;
  let dir = path.posix.normalize(`/${cgroupPath}`);
  for (;;) {
    const bytes = readLimitFile(path.join(mount, dir, file));
    if (bytes !== null && (smallest === null || bytes < smallest)) smallest = bytes;
    if (dir === '/') return smallest;
    dir = path.posix.dirname(dir);
  }
}

/** This process's cgroup memory limit (v2 `memory.max`, else v1 `memory.limit_in_bytes`), or null when none. */
export function readCgroupMemoryLimit(paths: CgroupPaths = SYSTEM_CGROUP_PATHS): MemoryLimit | null {
  let lines: string[];
  try {
    lines = readFileSync(paths.procSelfCgroup, 'utf8').split('\n');
  } catch {
    return null; // not Linux, or no /proc
  }
  // Lines are `hierarchy-id:controllers:path`; v2 is `0::path`, v1's memory controller lists `memory`.
  for (const line of lines) {
    const [id, controllers, cgroupPath] = line.split(/:(.*?):/);
    if (cgroupPath === undefined) continue;
    if (id === '0' && controllers === '') {
      const bytes = smallestLimitUpwards(paths.v2Mount, cgroupPath, 'memory.max');
      if (bytes !== null) return { bytes, source: 'cgroup v2' };
    } else if (controllers?.split(',').includes('memory')) {
      const bytes = smallestLimitUpwards(paths.v1MemoryMount, cgroupPath, 'memory.limit_in_bytes');
      if (bytes !== null) return { bytes, source: 'cgroup v1' };
    }
  }
  return null;
}

/** The memory this process may use: its cgroup limit when that is below physical memory, else physical memory. */
export function availableMemory(
  paths: CgroupPaths = SYSTEM_CGROUP_PATHS,
  physicalBytes: number = totalmem()
): MemoryLimit {
  const cgroup = readCgroupMemoryLimit(paths);
  return cgroup && cgroup.bytes < physicalBytes ? cgroup : { bytes: physicalBytes, source: 'physical memory' };
}

/** `HEAP_SHARE` of the available memory, within [`HEAP_FLOOR_MB`, `HEAP_CAP_MB`]. */
export function heapLimitFor(memory: MemoryLimit): HeapLimit {
  const available = Math.floor(memory.bytes / MB);
  const share = Math.floor(available * HEAP_SHARE);
  const megabytes = Math.min(HEAP_CAP_MB, Math.max(HEAP_FLOOR_MB, share));
  const bound = megabytes === HEAP_CAP_MB && share > HEAP_CAP_MB ? ', capped' : megabytes > share ? ', floor' : '';
  return { megabytes, reason: `${HEAP_SHARE * 100} % of ${available} MB ${memory.source}${bound}` };
}

/** True when the operator chose a heap limit: on node's command line or in NODE_OPTIONS. */
export function operatorHeapLimit(execArgv: readonly string[], nodeOptions: string | undefined): boolean {
  const flag = /(^|\s)--max[-_]old[-_]space[-_]size(=|\s|$)/;
  return execArgv.some((arg) => flag.test(arg)) || flag.test(nodeOptions ?? '');
}

/** A debugger attached to this process would be asked to attach to a second one on the same port: leave it be. */
function inspecting(execArgv: readonly string[], nodeOptions: string | undefined): boolean {
  return [...execArgv, nodeOptions ?? ''].some((arg) => /(^|\s)--inspect/.test(arg));
}

const FORWARDED_SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;

/**
 * For `start` with no heap limit chosen: run this same CLI again as a child with `--max-old-space-size`, forward
 * SIGINT/SIGTERM/SIGHUP to it and end the way it ended (its exit code, or the same signal). Returns only when this
 * process should run the command itself.
 */
export async function superviseWithHeapLimit(argv: readonly string[]): Promise<void> {
  const env = process.env;
  if (
    argv[0] !== 'start' ||
    env[HEAP_LIMIT_ENV] !== undefined ||
    operatorHeapLimit(process.execArgv, env.NODE_OPTIONS) ||
    inspecting(process.execArgv, env.NODE_OPTIONS)
  ) {
    return;
  }
  const limit = heapLimitFor(availableMemory());
  const child = spawn(
    process.execPath,
    [...process.execArgv, `--max-old-space-size=${limit.megabytes}`, process.argv[1]!, ...argv],
    {
      // The IPC channel lets the child notice when this process dies without a chance to forward a signal.
      stdio: ['inherit', 'inherit', 'inherit', 'ipc'],
      env: { ...env, [HEAP_LIMIT_ENV]: `${limit.megabytes}`, [HEAP_LIMIT_REASON_ENV]: limit.reason }
    }
  );
  const forward = (signal: NodeJS.Signals) => () => {
    if (child.exitCode === null && child.signalCode === null) child.kill(signal);
  };
  const handlers = FORWARDED_SIGNALS.map((signal) => [signal, forward(signal)] as const);
  for (const [signal, handler] of handlers) process.on(signal, handler);
  const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', (exitCode, exitSignal) => resolve([exitCode, exitSignal]));
  });
  for (const [name, handler] of handlers) process.off(name, handler);
  if (signal !== null) {
    // End by the same signal, so whoever started us sees what happened to the service; for a signal Node ignores
    // (SIGPIPE) the shell's convention 128 + number instead.
    process.kill(process.pid, signal);
    await new Promise((resolve) => setTimeout(resolve, 100));
    process.exit(128 + (constants.signals[signal] ?? 0));
  }
  process.exit(code ?? 1);
}

/**
 * In the supervised child: start a graceful shutdown (`onOrphaned`) if the supervising parent dies without
 * forwarding a signal (SIGKILL, the OOM killer), instead of running on unsupervised.
 */
export function watchSupervisor(onOrphaned: () => void): void {
  if (process.env[HEAP_LIMIT_ENV] === undefined || !process.channel) return;
  if (!process.connected) return onOrphaned(); // it died while the service was starting
  process.once('disconnect', onOrphaned);
  // The channel must not keep the process alive once the service has stopped.
  process.channel.unref();
}
