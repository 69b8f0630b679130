/**
 * The replication lock (issue 6 item 5): only one process per bucket storage replicates. It is a lease stored
 * in the storage itself, so it works across hosts and through connection poolers, and a crashed holder's lease
 * simply expires. Expiry is judged by the storage server's clock, never the caller's.
 *
 * The holder calls `acquireReplicationLock` again (or `renewReplicationLock`) well within `ttlMs` — the runner
 * does every ttl/3 — and stops replicating as soon as a renewal fails.
 */
export interface ReplicationLockAPI {
  /**
   * Take the lease for `holderId` if it is free, expired, or already held by `holderId` (then it is extended).
   * True when `holderId` holds it for the next `ttlMs`.
   */
  acquireReplicationLock(holderId: string, ttlMs: number): Promise<boolean>;
  /** Extend the lease held by `holderId`; false (and nothing changed) when someone else holds it or none exists. */
  renewReplicationLock(holderId: string, ttlMs: number): Promise<boolean>;
  /** Give the lease up if `holderId` holds it (on a clean stop), so a standby takes over without waiting. */
  releaseReplicationLock(holderId: string): Promise<void>;
}
