/**
 * The checkpoint decision of `commit`/`keepalive` (PROTOCOL §8.3), as a pure function of the stream's stored state.
 * Every storage module reads its stream record into `StreamCheckpointState`, asks `planCheckpoint`, and writes what
 * the plan says, so the modules cannot disagree on when a checkpoint is created.
 */
import { compareLsn, type Lsn } from '@syncpoint/codecs';
import type { Logger } from '../logger.js';
import type { ReplicationStreamState } from './replication-stream.js';

export interface StreamCheckpointState {
  state: ReplicationStreamState;
  snapshotDone: boolean;
  lastCheckpoint: bigint | null;
  lastCheckpointLsn: Lsn | null;
  noCheckpointBefore: Lsn | null;
  /** Highest op id flushed (every flush raises it) or kept while checkpoints were blocked; null when none. */
  keepaliveOp: bigint | null;
}

export type CheckpointPlan =
  /** Checkpoints are not allowed yet at this lsn; flushed ops stay in `keepalive_op` for the first allowed one. */
  | { kind: 'blocked' }
  /** Allowed, but nothing would change: no write, no notification (e.g. an empty commit). */
  | { kind: 'unchanged' }
  | {
      kind: 'checkpoint';
      checkpoint: bigint;
      lsn: Lsn;
      /** The stream becomes ACTIVE (older ACTIVE streams → STOP). */
      activate: boolean;
      /** The op id advanced (or this is the first checkpoint): `last_checkpoint_ts` is refreshed. */
      advanced: boolean;
    };

/** `snapshot_done AND (last_checkpoint_lsn ≤ lsn or null) AND (no_checkpoint_before ≤ lsn or null)`. */
export function canCheckpoint(stream: StreamCheckpointState, lsn: Lsn): boolean {
  return (
    stream.snapshotDone &&
    (stream.lastCheckpointLsn === null || compareLsn(stream.lastCheckpointLsn, lsn) <= 0) &&
    (stream.noCheckpointBefore === null || compareLsn(stream.noCheckpointBefore, lsn) <= 0)
  );
}

/**
 * - blocked unless `canCheckpoint`;
 * - new checkpoint = max(last_checkpoint, keepalive_op, the batch's last flushed op, 0);
 * - a checkpoint is written when it is a keepalive, the op id advances, checkpoint requests with head ≤ lsn are
 *   pending (the marker transaction of a request has no ops but needs a checkpoint at its lsn), there was no
 *   checkpoint yet, or the stream is still PROCESSING (its first allowed commit activates it).
 */
export function planCheckpoint(
  stream: StreamCheckpointState,
  lsn: Lsn,
  options: { keepalive: boolean; lastFlushedOp: bigint; pendingRequestsReached: boolean }
): CheckpointPlan {
  if (!canCheckpoint(stream, lsn)) return { kind: 'blocked' };
  const previous = stream.lastCheckpoint ?? 0n;
  let next = previous;
  for (const candidate of [stream.keepaliveOp ?? 0n, options.lastFlushedOp]) if (candidate > next) next = candidate;
  const needed =
    options.keepalive ||
    next > previous ||
    options.pendingRequestsReached ||
    stream.lastCheckpointLsn === null ||
    stream.state === 'PROCESSING';
  if (!needed) return { kind: 'unchanged' };
  return {
    kind: 'checkpoint',
    checkpoint: next,
    lsn,
    activate: stream.state === 'PROCESSING',
    advanced: next > previous || stream.lastCheckpoint === null
  };
}

/** How often a stream whose checkpoints are blocked says so at most (replication keeps committing meanwhile). */
const BLOCKED_LOG_INTERVAL_MS = 5_000;

/** Logs, at most every few seconds, that a stream is waiting before it may create a checkpoint. */
export class BlockedCheckpointLog {
  private lastLoggedAt = 0;

  constructor(
    private readonly streamId: number,
    private readonly logger?: Logger,
    private readonly intervalMs = BLOCKED_LOG_INTERVAL_MS
  ) {}

  blocked(lsn: Lsn, stream: StreamCheckpointState): void {
    if (Date.now() - this.lastLoggedAt <= this.intervalMs) return;
    this.lastLoggedAt = Date.now();
    this.logger?.info(
      {
        stream: this.streamId,
        lsn,
        snapshotDone: stream.snapshotDone,
        noCheckpointBefore: stream.noCheckpointBefore,
        lastCheckpointLsn: stream.lastCheckpointLsn
      },
      'waiting before creating a checkpoint'
    );
  }
}
