import type { Lsn } from '@syncpoint/codecs';

/** Source heads keyed by replication connection id; with one source connection the key is always "1". */
export type ReplicationHeads = { '1': Lsn };

export interface ManagedWriteCheckpointRequest {
  /** Full user id (PROTOCOL §4.2): `user_id` or `user_id/client_id`. */
  user_id: string;
  heads: ReplicationHeads;
  /** Client-supplied request id; absent for generated (legacy `/write-checkpoint2.json`) requests. */
  checkpoint_request_id?: bigint;
}

/** What a request did to its record: a new id, the stored id again, a lower id, or a generated (legacy) id. */
export type CheckpointOutcome = 'advanced' | 'duplicate' | 'stale' | 'generated';

export interface CreateManagedWriteCheckpointsResult {
  /** Full user id → the id stored for it after the batch (the current maximum). */
  writeCheckpoints: Map<string, bigint>;
  /** True when a record touched by the batch is still pending: the caller must emit a source marker. */
  shouldAdvance: boolean;
  /** Per full user id, what its entry did (for metrics); optional for storages that cannot tell. */
  outcomes?: Map<string, CheckpointOutcome>;
}

/**
 * Checkpoint requests ("managed write checkpoints"), PROTOCOL §4.7–§4.10.
 * Records are global to the storage, not per replication stream.
 */
export interface WriteCheckpointAPI {
  createManagedWriteCheckpoints(batch: ManagedWriteCheckpointRequest[]): Promise<CreateManagedWriteCheckpointsResult>;

  /** The request id acknowledged for this full user id at a checkpoint whose LSN is `lsn` (null: nothing replicated). */
  lastWriteCheckpoint(fullUserId: string, lsn: Lsn | null): Promise<bigint | null>;

  /**
   * `lastWriteCheckpoint` for many full user ids in one query (ids without an acknowledged request are absent). A new
   * checkpoint wakes every open stream of a process at once, and each needs its user's value. Optional: without it
   * the lookups are made one by one.
   */
  lastWriteCheckpoints?(fullUserIds: string[], lsn: Lsn): Promise<Map<string, bigint>>;

  /**
   * Called by replication when a checkpoint at `lsn` commits (or is kept alive): every pending record whose head
   * is ≤ `lsn` becomes processed. Returns the number of records marked.
   */
  markWriteCheckpointsProcessed(lsn: Lsn): Promise<number>;

  /**
   * Retention: delete client-requested records last requested before `cutoff`. Pending records and generated
   * (legacy) records are never deleted. Returns the number deleted.
   */
  deleteExpiredCheckpointRequests(cutoff: Date): Promise<number>;
}

/**
 * De-duplicate a batch before it reaches the database (PROTOCOL §4.7): one entry per full user id; among
 * client-supplied ids the greatest wins; a supplied entry wins over a generated one.
 */
export function dedupeManagedWriteCheckpoints(batch: ManagedWriteCheckpointRequest[]): {
  supplied: Array<ManagedWriteCheckpointRequest & { checkpoint_request_id: bigint }>;
  generated: ManagedWriteCheckpointRequest[];
} {
  const byUser = new Map<string, ManagedWriteCheckpointRequest>();
  for (const entry of batch) {
    const current = byUser.get(entry.user_id);
    if (current === undefined) {
      byUser.set(entry.user_id, entry);
    } else if (entry.checkpoint_request_id !== undefined) {
      if (current.checkpoint_request_id === undefined || entry.checkpoint_request_id > current.checkpoint_request_id) {
        byUser.set(entry.user_id, entry);
      }
    }
  }
  const supplied: Array<ManagedWriteCheckpointRequest & { checkpoint_request_id: bigint }> = [];
  const generated: ManagedWriteCheckpointRequest[] = [];
  for (const entry of byUser.values()) {
    if (entry.checkpoint_request_id === undefined) generated.push(entry);
    else supplied.push(entry as ManagedWriteCheckpointRequest & { checkpoint_request_id: bigint });
  }
  return { supplied, generated };
}
