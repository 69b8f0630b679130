import { performance } from 'node:perf_hooks';
import type { BucketStorage, ReplicationSource } from '@syncpoint/service-core';

/** Time split of the batches the service executed while a probe was recording, in ms (sums over batches). */
export interface BatchBreakdown {
  batches: number;
  /** Requests carried by those batches. */
  requests: number;
  /** Batches that asked for a marker (shouldAdvance). */
  advancing: number;
  headReadMs: number;
  storageWriteMs: number;
  markerMs: number;
  totalMs: number;
}

const empty = (): BatchBreakdown => ({
  batches: 0,
  requests: 0,
  advancing: 0,
  headReadMs: 0,
  storageWriteMs: 0,
  markerMs: 0,
  totalMs: 0
});

/**
 * Observes the in-process service's batches through the two interface calls the batcher makes:
 * `source.createReplicationHead(callback)` (head read → callback → marker) and, inside the callback,
 * `storage.createManagedWriteCheckpoints(batch)`. Wraps them on the instances; `restore()` undoes it.
 * The cost is a few performance.now() calls per batch.
 */
export class BatchProbe {
  private current = empty();
  private readonly restoreFns: Array<() => void> = [];

  constructor(source: ReplicationSource, storage: BucketStorage) {
    // The originals are kept unbound so that restore() puts back the very same functions; the wrappers call them
    // with the instance as `this`.
    // eslint-disable-next-line @typescript-eslint/unbound-method
    const createReplicationHead = source.createReplicationHead;
    const currentStats = () => this.current;
    source.createReplicationHead = async function <T>(
      this: ReplicationSource,
      callback: Parameters<ReplicationSource['createReplicationHead']>[0]
    ): Promise<T> {
      const started = performance.now();
      let callbackStarted = 0;
      let callbackEnded = 0;
      let advancing = false;
      const response = (await createReplicationHead.call(this, async (head) => {
        callbackStarted = performance.now();
        const result = await callback(head);
        callbackEnded = performance.now();
        advancing = result.shouldAdvance;
        return result;
      })) as T;
      const ended = performance.now();
      const stats = currentStats();
      stats.batches++;
      if (advancing) stats.advancing++;
      stats.headReadMs += callbackStarted - started;
      stats.storageWriteMs += callbackEnded - callbackStarted;
      stats.markerMs += ended - callbackEnded;
      stats.totalMs += ended - started;
      return response;
    };
    this.restoreFns.push(() => {
      source.createReplicationHead = createReplicationHead;
    });

    // eslint-disable-next-line @typescript-eslint/unbound-method
    const createManagedWriteCheckpoints = storage.createManagedWriteCheckpoints;
    storage.createManagedWriteCheckpoints = function (this: BucketStorage, batch) {
      currentStats().requests += batch.length;
      return createManagedWriteCheckpoints.call(this, batch);
    };
    this.restoreFns.push(() => {
      storage.createManagedWriteCheckpoints = createManagedWriteCheckpoints;
    });
  }

  /** Start a new recording; returns what was recorded since the last call. */
  take(): BatchBreakdown {
    const taken = this.current;
    this.current = empty();
    return taken;
  }

  restore(): void {
    for (const restore of this.restoreFns.splice(0)) restore();
  }
}
