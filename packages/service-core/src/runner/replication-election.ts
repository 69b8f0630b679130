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
 * Issue 6 item 5: only the process holding the storage's replication lock replicates. Others stand by (and say
 * so once in the log), retrying every ttl/3; a crashed holder's lease expires after `ttlMs`. The holder renews
 * every ttl/3 and stops its work as soon as a renewal fails (another process may take over after expiry).
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

  const step = async () => {
    if (stopped) return;
    try {
      if (stopWork === null) {
        if (await options.storage.acquireReplicationLock(holderId, ttlMs)) {
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
      } else if (!(await options.storage.renewReplicationLock(holderId, ttlMs))) {
        logger.error({ holder: holderId }, 'replication lock lost; stopping replication and standing by');
        const stop = stopWork;
        stopWork = null;
        await stop();
      }
    } catch (error) {
      logger.warn({ err: error }, 'replication lock check failed; retrying');
    }
  };
  const schedule = () => {
    if (stopped) return;
    timer = setTimeout(
      () => {
        tick = step().finally(schedule);
      },
      Math.max(50, Math.floor(ttlMs / 3))
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
        await options.storage
          .releaseReplicationLock(holderId)
          .catch((error) => logger.warn({ err: error }, 'could not release the replication lock'));
      }
    }
  };
}
