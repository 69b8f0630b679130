/**
 * Worker-thread entry: runs checkpoint load phases sent by the main thread, so the benchmark client does not
 * share the service's event loop (as with a client in its own process on the same machine).
 */
import { parentPort } from 'node:worker_threads';
import { CheckpointLoadGenerator } from './checkpoint-load.js';
import type { WorkerReply, WorkerRequest } from './load-client.js';
import { stormRequests } from './storm-client.js';

const port = parentPort;
if (!port) throw new Error('load-worker.ts must run in a worker thread');
const generator = new CheckpointLoadGenerator();

port.on('message', (message: WorkerRequest) => {
  void (async () => {
    try {
      if (message.type === 'close') {
        await generator.close();
        port.postMessage({ type: 'closed', id: message.id } satisfies WorkerReply);
        port.close();
        return;
      }
      if (message.type === 'storm') {
        port.postMessage({
          type: 'storm-result',
          id: message.id,
          result: await stormRequests(message.spec)
        } satisfies WorkerReply);
        return;
      }
      const result = await generator.run(message.spec);
      port.postMessage({ type: 'result', id: message.id, result } satisfies WorkerReply, [
        result.latencies.buffer as ArrayBuffer
      ]);
    } catch (error) {
      port.postMessage({
        type: 'error',
        id: message.id,
        message: (error as Error).stack ?? String(error)
      } satisfies WorkerReply);
    }
  })();
});
