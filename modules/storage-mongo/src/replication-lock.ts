import type { Document } from 'mongodb';

/** Collection of the replication lease (issue 6 item 5); created on first use, no index besides `_id`. */
export const REPLICATION_LOCK = 'replication_lock';
export const REPLICATION_LOCK_ID = 'replication';

export interface ReplicationLockDocument {
  _id: string;
  holder: string;
  expires_at: Date;
  acquired_at: Date;
  /** Fencing epoch (issue 12 item 2): incremented on every change of holder, checked by every replication write. */
  epoch?: number;
  /** Host name and pid of the holder's process: a process on the same host can tell whether the holder is gone. */
  host?: string;
  pid?: number;
  /** Set by every fenced write: makes a concurrent takeover and the write conflict. */
  fenced_write_at?: Date;
}

/**
 * Pipeline update taking or extending the lease: expiry = the server's `$$NOW` + ttl (never the caller's clock). A
 * new holder gets the next epoch; the same holder keeps its epoch and `acquired_at`.
 */
export function replicationLeaseUpdate(
  holderId: string,
  ttlMs: number,
  process: { host: string; pid: number }
): Document[] {
  const sameHolder = { $eq: ['$holder', { $literal: holderId }] };
  return [
    {
      $set: {
        epoch: { $cond: [sameHolder, '$epoch', { $add: [{ $ifNull: ['$epoch', 0] }, 1] }] },
        acquired_at: { $cond: [sameHolder, '$acquired_at', '$$NOW'] },
        holder: { $literal: holderId },
        expires_at: { $add: ['$$NOW', { $literal: Math.round(ttlMs) }] },
        host: { $literal: process.host },
        pid: { $literal: process.pid }
      }
    }
  ];
}

/**
 * Issue 12 item 1: the recorded holder is provably gone when it ran on this host and its pid is not a live process,
 * or is this very process while the holder id is none this process ever used (a restarted container reusing the pid
 * of its previous incarnation). A holder on another host can only be judged by its lease.
 */
export function holderIsGone(
  lease: Pick<ReplicationLockDocument, 'holder' | 'host' | 'pid'>,
  self: { host: string; pid: number; holderIds: ReadonlySet<string> },
  isAlive: (pid: number) => boolean
): boolean {
  if (self.holderIds.has(lease.holder) || lease.host !== self.host || typeof lease.pid !== 'number') return false;
  if (lease.pid === self.pid) return true;
  return !isAlive(lease.pid);
}

/** `kill(pid, 0)` checks existence without signalling; EPERM means it exists (another user's process). */
export function processIsAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}
