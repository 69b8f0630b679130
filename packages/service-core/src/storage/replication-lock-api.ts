/**
 * The replication lock (issue 6 item 5, issue 12 items 1–2): only one process per bucket storage replicates.
 *
 * Leadership dies with its holder where the storage can tell: Postgres holds it as a session advisory lock on a
 * dedicated connection (released the moment that connection closes), MongoDB keeps a lease that a new process may
 * take over at once when the recorded holder is provably gone (same host, pid not alive). A holder that is merely
 * paused (GC, frozen VM, SIGSTOP) keeps its connection; it is deposed once its lease (`ttlMs`, renewed every ttl/3)
 * has expired. Expiry is judged by the storage server's clock, never the caller's.
 *
 * Each takeover increments the lock's epoch, and every replication write of the holder carries the epoch it was
 * elected with: storage refuses the write (`ReplicationLeadershipLostError`), in the same transaction, once the epoch
 * is no longer current. A deposed leader that resumes therefore never commits anything after losing leadership.
 */
export interface ReplicationLock {
  /**
   * Take leadership for `holderId` if it is free, its holder is gone, its lease expired, or it is already held by
   * `holderId` (then the lease is extended). True when `holderId` holds it for the next `ttlMs`. `onLost` is called
   * (at most once per acquisition) when storage learns that this holder lost leadership between renewals — its lock
   * connection closed, or a write was refused — so the caller can stop at once instead of at the next renewal.
   */
  acquire(holderId: string, ttlMs: number, onLost?: () => void): Promise<boolean>;
  /** Extend the lease held by `holderId`; false (and nothing changed) when someone else holds it or none exists. */
  renew(holderId: string, ttlMs: number): Promise<boolean>;
  /** Give the lease up if `holderId` holds it (on a clean stop), so a standby takes over without waiting. */
  release(holderId: string): Promise<void>;
}

/** What a bucket storage offers for leadership: its module's lock (Postgres advisory lock, MongoDB lease). */
export interface ReplicationLockAPI {
  readonly replicationLock: ReplicationLock;
}
