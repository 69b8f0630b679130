import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import type { Logger } from '../logger.js';
import type { ReplicationLockAPI } from '../storage/replication-lock-api.js';

/** Default lease of the replication lock; renewed every third of it. Tests shorten it (SYNCPOINT_REPLICATION_LOCK_TTL_MS). */
export const REPLICATION_LOCK_TTL_MS = 30_000;

export function replicationLockTtlMs(): number {
  const fromEnv = Number(process.env.SYNCPOINT_REPLICATION_LOCK_TTL_MS);
  return Number.isFinite(fromEnv) && fromEnv >= 100 ? fromEnv : REPLICATION_LOCK_TTL_MS;
}

/** What runs while this process holds the lock: started on election, stopped when the lock is lost or on stop. */
export type LeaderWork = () => Promise<() => Promise<void>>;

/**
 * Issue 6 item 5, issue 12 item 1: only the process holding the storage's replication lock replicates. Others stand by
 * (and say so once in the log), retrying every second (at most ttl/3): a crashed holder's lock is released with its
 * connection (Postgres) or judged gone by its pid (MongoDB), so a standby or a restarted process takes over within
 * about a second; a paused holder is deposed when its lease of `ttlMs` expires. The holder renews every ttl/3 and
 * stops its work as soon as a renewal fails, storage reports the loss (`onLost`: a refused write, a closed lock
 * connection), or no renewal has succeeded for a whole lease.
 */
export function startReplicationElection(options: {
  storage: ReplicationLockAPI;
  logger: Logger;
  work: LeaderWork;
  ttlMs?: number;
  holderId?: string;
  /** Called after each lock check while standing by (a standby is healthy: keeps the liveness probe fresh). */
  onStandby?: () => void;
}): { readonly holderId: string; isLeader(): boolean; stop(): Promise<void> } {
  const ttlMs = options.ttlMs ?? replicationLockTtlMs();
  const holderId = options.holderId ?? `${hostname()}:${process.pid}:${randomUUID().slice(0, 8)}`;
  const logger = options.logger;
  let stopWork: (() => Promise<void>) | null = null;
  let stopped = false;
  let announcedStandby = false;
  let timer: NodeJS.Timeout | undefined;
  let tick: Promise<void> = Promise.resolve();
  /** When the lease was last taken or renewed (this process's clock; only compared with itself). */
  let confirmedAt = 0;
  /** Bumped on each acquisition: a loss reported for an earlier term is ignored. */
  let term = 0;
  const standbyRetryMs = Math.max(50, Math.min(1000, Math.floor(ttlMs / 3)));

  const stopLeading = async (reason: string) => {
    logger.error({ holder: holderId, reason }, 'replication lock lost; stopping replication and standing by');
    const stop = stopWork;
    stopWork = null;
    announcedStandby = false;
    if (stop) await stop();
  };

  const step = async () => {
    if (stopped) return;
    try {
      if (stopWork === null) {
        const thisTerm = ++term;
        const onLost = () => {
          // Storage learned of the loss between renewals: check (and stop) now rather than at the next renewal.
          if (thisTerm !== term || stopped) return;
          if (timer) clearTimeout(timer);
          tick = tick.then(step).finally(schedule);
        };
        if (await options.storage.replicationLock.acquire(holderId, ttlMs, onLost)) {
          confirmedAt = Date.now();
          logger.info({ holder: holderId, ttl_ms: ttlMs }, 'replication lock acquired; replicating');
          announcedStandby = false;
          stopWork = await options.work();
        } else {
          options.onStandby?.();
          if (!announcedStandby) {
            announcedStandby = true;
            logger.info({ holder: holderId }, 'another process holds the replication lock; standing by');
          }
        }
      } else if (await options.storage.replicationLock.renew(holderId, ttlMs)) {
        confirmedAt = Date.now();
      } else {
        await stopLeading('renewal refused');
      }
    } catch (error) {
      logger.warn({ err: error }, 'replication lock check failed; retrying');
      // Storage unreachable for a whole lease: another process may have taken over by now (fencing refuses this
      // one's writes anyway); stand by until the lock can be taken again.
      if (stopWork !== null && Date.now() - confirmedAt > ttlMs) {
        await stopLeading('no renewal for a whole lease').catch((stopError: unknown) =>
          logger.warn({ err: stopError }, 'could not stop replication')
        );
      }
    }
  };
  const schedule = () => {
    if (stopped) return;
    if (timer) clearTimeout(timer);
    timer = setTimeout(
      () => {
        tick = step().finally(schedule);
      },
      stopWork === null ? standbyRetryMs : Math.max(50, Math.floor(ttlMs / 3))
    );
  };
  tick = step().finally(schedule);

  return {
    holderId,
    isLeader: () => stopWork !== null,
    async stop() {
      stopped = true;
      if (timer) clearTimeout(timer);
      await tick;
      if (stopWork) {
        const stop = stopWork;
        stopWork = null;
        await stop();
        await options.storage.replicationLock
          .release(holderId)
          .catch((error) => logger.warn({ err: error }, 'could not release the replication lock'));
      }
    }
  };
}
