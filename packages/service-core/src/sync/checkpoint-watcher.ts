import { compareLsn } from '@syncpoint/codecs';
import type { Logger } from '../logger.js';
import type { ReplicationCheckpoint } from '../storage/bucket-data.js';
import type { BucketStorage } from '../storage/bucket-storage.js';
import type { ReplicationStream } from '../storage/replication-stream.js';

export interface ServingCheckpoint {
  stream: ReplicationStream;
  checkpoint: ReplicationCheckpoint;
}

/**
 * One per process: listens to storage's checkpoint notifications once and fans the served checkpoint out to every
 * sync connection, so a thousand open streams cost one listener and one query per checkpoint, not a poll each.
 * A checkpoint is passed on only if neither its op id nor its lsn went backwards and one of them advanced, or the
 * served stream changed (PROTOCOL §6.1).
 */
/**
 * Issue 12 item 4: the served checkpoint is also re-read this often, so a notification lost on a silently dead
 * listener connection delays streams by at most this much (storage replaces such a connection too).
 */
export const CHECKPOINT_REREAD_MS = 10_000;

export class CheckpointWatcher {
  private rereadTimer: NodeJS.Timeout | undefined;
  private current: ServingCheckpoint | null = null;
  private readonly waiters = new Set<() => void>();
  private stopListening: (() => Promise<void>) | undefined;
  private refreshing: Promise<void> | undefined;
  private refreshAgain = false;

  constructor(
    private readonly storage: BucketStorage,
    private readonly logger: Logger
  ) {}

  async start(): Promise<void> {
    this.stopListening = await this.storage.listenForCheckpoints(() => void this.refresh());
    await this.refresh();
    this.rereadTimer = setInterval(() => void this.refresh(), CHECKPOINT_REREAD_MS);
    this.rereadTimer.unref();
  }

  async stop(): Promise<void> {
    clearInterval(this.rereadTimer);
    await this.stopListening?.();
    this.wakeAll();
  }

  get latest(): ServingCheckpoint | null {
    return this.current;
  }

  /** Re-read the served checkpoint (coalescing concurrent calls) and wake waiters if it moved. */
  refresh(): Promise<void> {
    if (this.refreshing) {
      this.refreshAgain = true;
      return this.refreshing;
    }
    this.refreshing = (async () => {
      do {
        this.refreshAgain = false;
        try {
          const next = await this.storage.getServingCheckpoint();
          if (next && isNewer(next, this.current)) {
            this.current = next;
            this.wakeAll();
          }
        } catch (error) {
          this.logger.warn({ err: error }, 'could not read the served checkpoint');
        }
      } while (this.refreshAgain);
    })().finally(() => (this.refreshing = undefined));
    return this.refreshing;
  }

  /** Resolves with the first served checkpoint newer than `after` (or the current one when `after` is null). */
  async next(after: ServingCheckpoint | null, signal: AbortSignal): Promise<ServingCheckpoint | null> {
    for (;;) {
      if (signal.aborted) return null;
      const current = this.current;
      if (current && (after === null || isNewer(current, after))) return current;
      await new Promise<void>((resolve) => {
        const wake = () => {
          this.waiters.delete(wake);
          signal.removeEventListener('abort', wake);
          resolve();
        };
        this.waiters.add(wake);
        signal.addEventListener('abort', wake, { once: true });
      });
    }
  }

  /** Connections waiting for a checkpoint (for metrics and tests). */
  get waiting(): number {
    return this.waiters.size;
  }

  private wakeAll() {
    for (const wake of [...this.waiters]) wake();
  }
}

function isNewer(candidate: ServingCheckpoint, than: ServingCheckpoint | null): boolean {
  if (!than) return true;
  if (candidate.stream.id !== than.stream.id) return true;
  const a = candidate.checkpoint;
  const b = than.checkpoint;
  if (a.checkpoint < b.checkpoint) return false;
  const lsnOrder = a.lsn === null ? (b.lsn === null ? 0 : -1) : b.lsn === null ? 1 : compareLsn(a.lsn, b.lsn);
  if (lsnOrder < 0) return false;
  return a.checkpoint > b.checkpoint || lsnOrder > 0;
}
