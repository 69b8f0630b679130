import { Worker, type WorkerOptions } from 'node:worker_threads';
import type { EventLoopUtilization } from 'node:perf_hooks';
import { CheckpointLoadGenerator, type CheckpointLoadResult, type CheckpointLoadSpec } from './checkpoint-load.js';
import { stormRequests, type StormSpec } from './storm-client.js';

export type WorkerRequest =
  | { type: 'run'; id: number; spec: CheckpointLoadSpec }
  | { type: 'storm'; id: number; spec: StormSpec }
  | { type: 'close'; id: number };
export type WorkerReply =
  | { type: 'result'; id: number; result: CheckpointLoadResult }
  | { type: 'storm-result'; id: number; result: { wallMs: number; rejected429: number } }
  | { type: 'error'; id: number; message: string }
  | { type: 'closed'; id: number };

/** Where the benchmark client runs: a worker thread (default) or the service's own event loop. */
export type ClientMode = 'worker' | 'inline';

export interface LoadClient {
  readonly mode: ClientMode;
  run(spec: CheckpointLoadSpec): Promise<CheckpointLoadResult>;
  /** The client side of the reconnect storm (`stormRequests`). */
  storm(spec: StormSpec): Promise<{ wallMs: number; rejected429: number }>;
  /** Event loop utilisation of the client's thread (worker mode only). */
  eventLoopUtilization?(previous?: EventLoopUtilization): EventLoopUtilization;
  close(): Promise<void>;
}

/**
 * A worker running a TypeScript file. Under tsx on Node 20 the loader is not inherited by workers, so the
 * worker first registers tsx's ESM hooks and then imports the entry.
 */
function typescriptWorker(entry: URL, options: WorkerOptions = {}): Worker {
  if (!entry.pathname.endsWith('.ts')) return new Worker(entry, options);
  const api = import.meta.resolve('tsx/esm/api');
  const code = `import(${JSON.stringify(api)}).then((tsx) => { tsx.register(); return import(${JSON.stringify(entry.href)}); });`;
  return new Worker(code, { ...options, eval: true });
}

export function startLoadClient(mode: ClientMode): LoadClient {
  if (mode === 'inline') {
    const generator = new CheckpointLoadGenerator();
    return { mode, run: (spec) => generator.run(spec), storm: stormRequests, close: () => generator.close() };
  }

  const entry = new URL(`./load-worker${import.meta.url.endsWith('.ts') ? '.ts' : '.js'}`, import.meta.url);
  const worker = typescriptWorker(entry);
  let nextId = 1;
  const pending = new Map<number, { resolve(reply: WorkerReply): void; reject(error: Error): void }>();
  const failAll = (error: Error) => {
    for (const entry of pending.values()) entry.reject(error);
    pending.clear();
  };
  worker.on('message', (reply: WorkerReply) => {
    const entry = pending.get(reply.id);
    pending.delete(reply.id);
    entry?.resolve(reply);
  });
  worker.on('error', failAll);
  worker.on('exit', (code) => failAll(new Error(`load worker exited with code ${code}`)));
  const call = (request: WorkerRequest) =>
    new Promise<WorkerReply>((resolve, reject) => {
      pending.set(request.id, { resolve, reject });
      worker.postMessage(request);
    });

  return {
    mode,
    async run(spec) {
      const reply = await call({ type: 'run', id: nextId++, spec });
      if (reply.type === 'error') throw new Error(`load worker failed: ${reply.message}`);
      if (reply.type !== 'result') throw new Error(`unexpected reply ${reply.type} from the load worker`);
      return reply.result;
    },
    async storm(spec) {
      const reply = await call({ type: 'storm', id: nextId++, spec });
      if (reply.type === 'error') throw new Error(`load worker failed: ${reply.message}`);
      if (reply.type !== 'storm-result') throw new Error(`unexpected reply ${reply.type} from the load worker`);
      return reply.result;
    },
    eventLoopUtilization: (previous) => worker.performance.eventLoopUtilization(previous),
    async close() {
      await call({ type: 'close', id: nextId++ }).catch(() => {});
      await worker.terminate();
    }
  };
}
