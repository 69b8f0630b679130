import type { Lsn } from '@syncpoint/codecs';
import { noActiveSyncConfigError } from '../errors.js';
import type { BucketStorage } from '../storage/bucket-storage.js';
import type { ReplicationSource } from '../source/replication-source.js';
import type { ServiceMetrics } from '../metrics.js';
import type { CheckpointOutcome } from '../storage/write-checkpoint-api.js';
import type { Logger } from '../logger.js';

export interface CheckpointRequestOutcome {
  /** The id stored for the full user id after the batch (≥ the requested id). */
  writeCheckpoint: bigint;
  replicationHead: Lsn;
}

interface PendingRequest {
  fullUserId: string;
  requestId: bigint | undefined;
  resolve(outcome: CheckpointRequestOutcome): void;
  reject(error: unknown): void;
}

export interface WriteCheckpointBatcherOptions {
  storage: BucketStorage;
  source: ReplicationSource;
  /** Batches executing at once (PROTOCOL §4.6: 3). */
  maxInFlight?: number;
  metrics?: ServiceMetrics;
}

/**
 * Collects checkpoint requests that arrive together so they share one source-head read, one storage call and
 * at most one marker (PROTOCOL §4.6). Dispatch waits one timer tick; up to `maxInFlight` batches run at once,
 * each taking everything queued when it starts.
 */
/** What one request did, from the storage's report when it gives one, else from the ids alone. */
function outcomeOf(
  request: PendingRequest,
  stored: bigint,
  reported: Map<string, CheckpointOutcome> | undefined
): CheckpointOutcome {
  if (request.requestId === undefined) return 'generated';
  if (stored > request.requestId) return 'stale';
  // Several requests of one user in a batch collapse to the greatest id: the others were lower, so stale.
  return reported?.get(request.fullUserId) ?? 'advanced';
}

export class WriteCheckpointBatcher {
  private queue: PendingRequest[] = [];
  private inFlight = 0;
  private scheduled = false;
  private readonly maxInFlight: number;
  /** A deployed sync config is checked at most once a second; it rarely appears and never disappears. */
  private syncConfigCheckedAt = 0;

  constructor(private readonly options: WriteCheckpointBatcherOptions) {
    this.maxInFlight = options.maxInFlight ?? 3;
  }

  /** Store a checkpoint request for `fullUserId`: the supplied id, or a generated one when `requestId` is undefined. */
  enqueue(fullUserId: string, requestId?: bigint): Promise<CheckpointRequestOutcome> {
    return new Promise((resolve, reject) => {
      this.queue.push({ fullUserId, requestId, resolve, reject });
      this.schedule();
    });
  }

  private schedule() {
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      this.pump();
    });
  }

  private pump() {
    while (this.inFlight < this.maxInFlight && this.queue.length > 0) {
      const batch = this.queue;
      this.queue = [];
      this.inFlight++;
      void this.execute(batch).finally(() => {
        this.inFlight--;
        if (this.queue.length > 0) this.schedule();
      });
    }
  }

  private async execute(batch: PendingRequest[]): Promise<void> {
    try {
      await this.requireSyncConfig();
      const { metrics } = this.options;
      const outcomes = await this.options.source.createReplicationHead(async (head) => {
        const entries = batch.map((request) => ({
          user_id: request.fullUserId,
          heads: { '1': head },
          ...(request.requestId === undefined ? {} : { checkpoint_request_id: request.requestId })
        }));
        const store = () => this.options.storage.createManagedWriteCheckpoints(entries);
        const result = await (metrics ? metrics.time('create_managed_write_checkpoints', store) : store());
        if (metrics && result.shouldAdvance) metrics.markersEmitted.inc();
        return {
          response: { head, stored: result.writeCheckpoints, kinds: result.outcomes },
          shouldAdvance: result.shouldAdvance
        };
      });
      for (const request of batch) {
        const stored = outcomes.stored.get(request.fullUserId);
        if (stored === undefined) {
          request.reject(new Error(`storage returned no checkpoint request id for ${request.fullUserId}`));
        } else {
          this.options.metrics?.requestStored(request.fullUserId, stored, outcomeOf(request, stored, outcomes.kinds));
          request.resolve({ writeCheckpoint: stored, replicationHead: outcomes.head });
        }
      }
    } catch (error) {
      for (const request of batch) request.reject(error);
    }
  }

  private async requireSyncConfig(): Promise<void> {
    if (Date.now() - this.syncConfigCheckedAt < 1000) return;
    const stream = await this.options.storage.getServingStream();
    if (!stream) throw noActiveSyncConfigError();
    this.syncConfigCheckedAt = Date.now();
  }
}

/**
 * A process that dies after storing a checkpoint request and before emitting its marker (PROTOCOL §5.1) leaves the
 * request waiting, on an idle source, for the replicator's next heartbeat marker (up to `heartbeat_interval_seconds`),
 * unless the client retries. So at start, when storage holds pending requests, emit one marker. Returns the number
 * of pending requests found (0: no marker).
 */
export async function emitMarkerForPendingRequests(options: {
  storage: BucketStorage;
  source: ReplicationSource;
  logger: Logger;
}): Promise<number> {
  const { storage, source, logger } = options;
  if (!storage.getStatus) return 0;
  const { pending } = (await storage.getStatus()).checkpointRequests;
  if (pending === 0) return 0;
  await source.createReplicationHead(() => Promise.resolve({ response: undefined, shouldAdvance: true }));
  logger.info(
    { pending },
    'pending checkpoint requests found at start; emitted a source marker so replication reaches them'
  );
  return pending;
}
