import type { Document } from 'mongodb';

/** Collection of the replication lease (issue 6 item 5); created on first use, no index besides `_id`. */
export const REPLICATION_LOCK = 'replication_lock';
export const REPLICATION_LOCK_ID = 'replication';

export interface ReplicationLockDocument {
  _id: string;
  holder: string;
  expires_at: Date;
  acquired_at: Date;
}

/** Pipeline update taking or extending the lease: expiry = the server's `$$NOW` + ttl (never the caller's clock). */
export function replicationLeaseUpdate(holderId: string, ttlMs: number): Document[] {
  return [
    {
      $set: {
        holder: { $literal: holderId },
        expires_at: { $add: ['$$NOW', { $literal: Math.round(ttlMs) }] },
        acquired_at: { $cond: [{ $eq: ['$holder', { $literal: holderId }] }, '$acquired_at', '$$NOW'] }
      }
    }
  ];
}
