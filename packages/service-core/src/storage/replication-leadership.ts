/**
 * Fencing (issue 12 item 2): storage throws this instead of committing a replication write (flush, checkpoint,
 * processed-marking, snapshot progress) made by a process whose leadership epoch is no longer current — another
 * process took over while this one was paused or cut off. Nothing of the refused write is committed.
 */
export class ReplicationLeadershipLostError extends Error {
  readonly code = 'REPLICATION_LEADERSHIP_LOST';

  constructor(
    /** The epoch this process was elected with (null: it had already learned it lost leadership). */
    readonly heldEpoch: bigint | null,
    /** The storage's current epoch, when read. */
    readonly currentEpoch: bigint | null = null
  ) {
    super(
      heldEpoch === null
        ? 'replication leadership was lost: this process no longer writes replication data'
        : `replication leadership was lost: this process was elected with epoch ${heldEpoch}, the storage is at ` +
            `${currentEpoch ?? 'no epoch'}; the write was refused`
    );
    this.name = 'ReplicationLeadershipLostError';
  }
}

export function isReplicationLeadershipLost(error: unknown): error is ReplicationLeadershipLostError {
  return (
    error instanceof ReplicationLeadershipLostError ||
    (typeof error === 'object' &&
      error !== null &&
      (error as { code?: unknown }).code === 'REPLICATION_LEADERSHIP_LOST')
  );
}
