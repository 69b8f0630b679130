import { readdirSync, readFileSync } from 'node:fs';

/** CPU time in milliseconds, split by who spent it. Linux only (reads /proc); zero elsewhere. */
export interface CpuSample {
  /** This process's main thread: the service (and, in inline client mode, the client). */
  mainThreadMs: number;
  /** The whole process: main thread, load worker, libuv pool, GC and compiler threads. */
  processMs: number;
  /** Every descendant process of this one: the embedded Postgres server and its backends. */
  postgresMs: number;
}

const TICK_MS = 10; // USER_HZ is 100 on Linux

function statFields(file: string): string[] | undefined {
  try {
    const text = readFileSync(file, 'utf8');
    // Field 2 (comm) is in parentheses and may contain spaces; split what follows it.
    return text.slice(text.lastIndexOf(')') + 2).split(' ');
  } catch {
    return undefined;
  }
}

/** utime + stime (+ reaped children's cutime + cstime) of a /proc stat line, in ms. */
function cpuMs(fields: string[] | undefined, withChildren: boolean): number {
  if (!fields) return 0;
  // After comm: [0]=state [1]=ppid … [11]=utime [12]=stime [13]=cutime [14]=cstime
  const ticks = Number(fields[11]) + Number(fields[12]) + (withChildren ? Number(fields[13]) + Number(fields[14]) : 0);
  return ticks * TICK_MS;
}

function descendantsCpuMs(rootPid: number): number {
  let entries: string[];
  try {
    entries = readdirSync('/proc').filter((name) => /^\d+$/.test(name));
  } catch {
    return 0;
  }
  const parents = new Map<number, number>();
  const stats = new Map<number, string[]>();
  for (const name of entries) {
    const fields = statFields(`/proc/${name}/stat`);
    if (!fields) continue;
    parents.set(Number(name), Number(fields[1]));
    stats.set(Number(name), fields);
  }
  let total = 0;
  for (const [pid, fields] of stats) {
    let ancestor = parents.get(pid);
    for (let depth = 0; ancestor !== undefined && ancestor > 1 && depth < 10; depth++) {
      if (ancestor === rootPid) {
        total += cpuMs(fields, true);
        break;
      }
      ancestor = parents.get(ancestor);
    }
  }
  return total;
}

export function sampleCpu(): CpuSample {
  const usage = process.cpuUsage();
  return {
    mainThreadMs: cpuMs(statFields(`/proc/self/task/${process.pid}/stat`), false),
    processMs: (usage.user + usage.system) / 1000,
    postgresMs: descendantsCpuMs(process.pid)
  };
}

export function cpuSince(before: CpuSample): CpuSample {
  const now = sampleCpu();
  return {
    mainThreadMs: now.mainThreadMs - before.mainThreadMs,
    processMs: now.processMs - before.processMs,
    postgresMs: now.postgresMs - before.postgresMs
  };
}
