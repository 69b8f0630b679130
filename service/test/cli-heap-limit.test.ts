import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import {
  availableMemory,
  HEAP_CAP_MB,
  HEAP_FLOOR_MB,
  heapLimitFor,
  operatorHeapLimit,
  readCgroupMemoryLimit,
  type CgroupPaths
} from '../src/cli-heap-limit.js';
import { createReplicationEnv, ITEMS_SYNC_CONFIG, waitFor, type ReplicationEnv } from './replication-harness.js';

/**
 * Issue 12 item 7: `syncpoint start` without a heap limit of the operator's runs the service in a child process with
 * `--max-old-space-size` sized from the memory it may use, forwards signals to it and ends as it ends.
 */

vi.setConfig({ testTimeout: 120_000 });

const MB = 1024 * 1024;
const serviceDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

describe('heap limit sizing', () => {
  let root: string;
  let paths: CgroupPaths;

  beforeAll(async () => {
    root = await mkdtemp(path.join(tmpdir(), 'syncpoint-cgroup-'));
  });
  afterAll(async () => rm(root, { recursive: true, force: true }));

  /** A fake /proc/self/cgroup and cgroup mounts under a folder of their own; `files` are relative to the mounts. */
  async function cgroupTree(name: string, selfCgroup: string, files: Record<string, string>): Promise<CgroupPaths> {
    const base = path.join(root, name);
    const result: CgroupPaths = {
      procSelfCgroup: path.join(base, 'proc-self-cgroup'),
      v2Mount: path.join(base, 'v2'),
      v1MemoryMount: path.join(base, 'v1-memory')
    };
    await mkdir(base, { recursive: true });
    await writeFile(result.procSelfCgroup, selfCgroup);
    for (const [file, content] of Object.entries(files)) {
      const full = path.join(base, file);
      await mkdir(path.dirname(full), { recursive: true });
      await writeFile(full, content);
    }
    return result;
  }

  it('takes 75 % of the available memory, within the floor and the cap', () => {
    expect(heapLimitFor({ bytes: 512 * MB, source: 'cgroup v1' })).toEqual({
      megabytes: 384,
      reason: '75 % of 512 MB cgroup v1'
    });
    expect(heapLimitFor({ bytes: 600 * MB, source: 'cgroup v2' }).megabytes).toBe(450);
    expect(heapLimitFor({ bytes: 1024 * MB, source: 'cgroup v2' })).toEqual({
      megabytes: HEAP_CAP_MB,
      reason: '75 % of 1024 MB cgroup v2, capped'
    });
    expect(heapLimitFor({ bytes: 24 * 1024 * MB, source: 'physical memory' })).toEqual({
      megabytes: HEAP_CAP_MB,
      reason: '75 % of 24576 MB physical memory, capped'
    });
    expect(heapLimitFor({ bytes: 100 * MB, source: 'cgroup v2' })).toEqual({
      megabytes: HEAP_FLOOR_MB,
      reason: '75 % of 100 MB cgroup v2, floor'
    });
  });

  it('reads the cgroup v2 limit of this process, the smallest up its ancestors', async () => {
    paths = await cgroupTree('v2', '0::/kubepods/pod1/container\n', {
      'v2/kubepods/pod1/container/memory.max': 'max\n',
      'v2/kubepods/pod1/memory.max': `${512 * MB}\n`,
      'v2/kubepods/memory.max': `${4096 * MB}\n`
    });
    expect(readCgroupMemoryLimit(paths)).toEqual({ bytes: 512 * MB, source: 'cgroup v2' });
    expect(availableMemory(paths, 8192 * MB)).toEqual({ bytes: 512 * MB, source: 'cgroup v2' });
    // A cgroup limit above physical memory limits nothing.
    expect(availableMemory(paths, 256 * MB)).toEqual({ bytes: 256 * MB, source: 'physical memory' });
  });

  it('reads the cgroup v1 memory controller, where 2^63 rounded to a page means no limit', async () => {
    const selfCgroup = '9:name=systemd:/\n4:cpu,memory:/docker/abc\n0::/\n';
    paths = await cgroupTree('v1', selfCgroup, {
      'v1-memory/docker/abc/memory.limit_in_bytes': `${300 * MB}\n`,
      'v1-memory/memory.limit_in_bytes': '9223372036854771712\n'
    });
    expect(readCgroupMemoryLimit(paths)).toEqual({ bytes: 300 * MB, source: 'cgroup v1' });
    paths = await cgroupTree('v1-unlimited', selfCgroup, {
      'v1-memory/docker/abc/memory.limit_in_bytes': '9223372036854771712\n'
    });
    expect(readCgroupMemoryLimit(paths)).toBeNull();
    expect(availableMemory(paths, 8192 * MB)).toEqual({ bytes: 8192 * MB, source: 'physical memory' });
  });

  it('falls back to physical memory on bogus, empty, zero or missing cgroup values', async () => {
    for (const [name, content] of [
      ['garbage', 'lots\n'],
      ['empty', ''],
      ['zero', '0\n'],
      ['negative', '-1\n'],
      ['fraction', '1.5e9\n']
    ] as const) {
      paths = await cgroupTree(`bogus-${name}`, '0::/\n', { 'v2/memory.max': content });
      expect({ name, limit: readCgroupMemoryLimit(paths) }).toEqual({ name, limit: null });
      expect(availableMemory(paths, 4096 * MB)).toEqual({ bytes: 4096 * MB, source: 'physical memory' });
    }
    paths = await cgroupTree('no-files', '0::/somewhere\n', {});
    expect(readCgroupMemoryLimit(paths)).toBeNull();
    const missing = { ...paths, procSelfCgroup: path.join(root, 'does-not-exist') };
    expect(availableMemory(missing, 4096 * MB).source).toBe('physical memory');
  });

  it('sees an operator limit on the command line or in NODE_OPTIONS', () => {
    expect(operatorHeapLimit(['--max-old-space-size=300'], undefined)).toBe(true);
    expect(operatorHeapLimit([], '--enable-source-maps --max-old-space-size=300')).toBe(true);
    expect(operatorHeapLimit([], '--max_old_space_size=300')).toBe(true);
    expect(operatorHeapLimit(['--import', 'tsx'], '--enable-source-maps')).toBe(false);
    expect(operatorHeapLimit([], '--max-semi-space-size=16')).toBe(false);
  });
});

interface StartedCli {
  child: ChildProcessWithoutNullStreams;
  output(): string;
  /** Log lines (JSON) so far. */
  logs(): Array<Record<string, unknown>>;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

describe('syncpoint start under a heap limit of its own (real processes)', () => {
  let env: ReplicationEnv;
  let configFile: string;
  const started: StartedCli[] = [];

  beforeAll(async () => {
    env = await createReplicationEnv('heap', [
      `CREATE TABLE items (id int8 PRIMARY KEY, owner text NOT NULL, val int8 NOT NULL)`
    ]);
    const storageName = await env.createStorageDatabase('heap');
    const dir = await mkdtemp(path.join(tmpdir(), 'syncpoint-heap-'));
    configFile = path.join(dir, 'config.yaml');
    await writeFile(configFile, env.configText({ storageName, syncConfig: ITEMS_SYNC_CONFIG }));
  }, 120_000);
  afterAll(async () => {
    for (const { child } of started) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await env?.cleanup();
  }, 120_000);

  /** `syncpoint start` as an operator runs it: node and the CLI, with no heap flag unless `nodeOptions` has one. */
  function startCli(args: string[], nodeOptions?: string): StartedCli {
    const child = spawn(
      process.execPath,
      ['--import', 'tsx', '--conditions=@syncpoint/source', path.join(serviceDir, 'src/cli.ts'), 'start', ...args],
      {
        cwd: serviceDir,
        env: { ...process.env, SYNCPOINT_LOG_LEVEL: 'info', NODE_OPTIONS: nodeOptions ?? '' }
      }
    );
    let output = '';
    child.stdout.on('data', (chunk) => (output += chunk));
    child.stderr.on('data', (chunk) => (output += chunk));
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
      child.on('close', (code, signal) => resolve({ code, signal }))
    );
    const handle: StartedCli = {
      child,
      output: () => output,
      logs: () =>
        output
          .split('\n')
          .filter((line) => line.startsWith('{'))
          .map((line) => JSON.parse(line) as Record<string, unknown>),
      exited
    };
    started.push(handle);
    return handle;
  }

  const startService = (nodeOptions?: string) =>
    startCli(['-c', configFile, '--role', 'api', '--port', '0', '--host', '127.0.0.1'], nodeOptions);

  async function listening(cli: StartedCli): Promise<string> {
    const entry = await waitFor(
      'the service to listen',
      async () => {
        if (cli.child.exitCode !== null) throw new Error(`exited early:\n${cli.output()}`);
        return Promise.resolve(cli.logs().find((line) => line.msg === 'Syncpoint is listening'));
      },
      90_000
    ).catch((error: Error) => {
      throw new Error(`${error.message}\n${cli.output()}`, { cause: error });
    });
    return entry.url as string;
  }

  /** The supervised child's pid, from its "heap limit set" log line. */
  function servicePid(cli: StartedCli): { pid: number; heapLimitMb: number } {
    const line = cli.logs().find((entry) => String(entry.msg).startsWith('heap limit set'));
    if (!line) throw new Error(`no "heap limit set" line:\n${cli.output()}`);
    return { pid: line.pid as number, heapLimitMb: line.heap_limit_mb as number };
  }

  const alive = (pid: number) => {
    try {
      process.kill(pid, 0);
      return true;
    } catch {
      return false;
    }
  };

  async function childrenOf(pid: number): Promise<number[]> {
    const children: number[] = [];
    for (const name of await readdir('/proc')) {
      if (!/^\d+$/.test(name)) continue;
      const stat = await readFile(`/proc/${name}/stat`, 'utf8').catch(() => '');
      // `pid (comm) state ppid …`; comm may contain spaces and parentheses.
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === pid) children.push(Number(name));
    }
    return children;
  }

  it('runs the service in a child with --max-old-space-size and stops it gracefully on SIGTERM', async () => {
    const cli = startService();
    const url = await listening(cli);
    const { pid, heapLimitMb } = servicePid(cli);
    expect(pid).not.toBe(cli.child.pid);
    expect(heapLimitMb).toBe(heapLimitFor(availableMemory()).megabytes);
    const cmdline = (await readFile(`/proc/${pid}/cmdline`, 'utf8')).split('\0');
    expect(cmdline).toContain(`--max-old-space-size=${heapLimitMb}`);
    expect(await childrenOf(cli.child.pid!)).toContain(pid);
    expect((await fetch(`${url}/probes/liveness`)).status).toBe(200);

    cli.child.kill('SIGTERM');
    expect(await cli.exited).toEqual({ code: 0, signal: null });
    expect(cli.logs().some((line) => line.msg === 'shutting down' && line.signal === 'SIGTERM')).toBe(true);
    expect(alive(pid)).toBe(false);
  });

  it('shuts down once when Ctrl-C reaches both processes (SIGINT to each)', async () => {
    const cli = startService();
    await listening(cli);
    const { pid } = servicePid(cli);
    // A terminal sends SIGINT to the whole foreground process group; the parent forwards it once more.
    process.kill(pid, 'SIGINT');
    cli.child.kill('SIGINT');
    expect(await cli.exited).toEqual({ code: 0, signal: null });
    const shuttingDown = cli.logs().filter((line) => line.msg === 'shutting down');
    expect(shuttingDown).toHaveLength(1);
    expect(alive(pid)).toBe(false);
  });

  it('forwards SIGHUP, and ends as the service ends: its exit code or its signal', async () => {
    const hangup = startService();
    await listening(hangup);
    hangup.child.kill('SIGHUP');
    expect(await hangup.exited).toEqual({ code: 0, signal: null });

    const killed = startService();
    await listening(killed);
    process.kill(servicePid(killed).pid, 'SIGKILL');
    expect(await killed.exited).toEqual({ code: null, signal: 'SIGKILL' });

    // A config error in the child: exit code 3, as without the supervising parent.
    const badConfig = startCli(['-c', path.join(path.dirname(configFile), 'missing.yaml')]);
    const { code } = await badConfig.exited;
    expect(code, badConfig.output()).toBe(3);
    expect(badConfig.output()).toContain('missing.yaml');
  });

  it('the service shuts itself down when the supervising parent is killed', async () => {
    const cli = startService();
    await listening(cli);
    const { pid } = servicePid(cli);
    cli.child.kill('SIGKILL');
    await waitFor('the orphaned service to stop', () => Promise.resolve(!alive(pid)), 60_000);
    // The service's own output still reaches the pipe the parent shared with it.
    await cli.exited;
    expect(cli.output()).toContain('the supervising syncpoint process is gone; shutting down');
  });

  it('respects an operator limit in NODE_OPTIONS: no child process, no limit of its own', async () => {
    const cli = startService('--max-old-space-size=200');
    await listening(cli);
    expect(cli.logs().some((line) => String(line.msg).startsWith('heap limit set'))).toBe(false);
    expect(await childrenOf(cli.child.pid!)).toEqual([]);
    cli.child.kill('SIGTERM');
    expect(await cli.exited).toEqual({ code: 0, signal: null });
  });
});
