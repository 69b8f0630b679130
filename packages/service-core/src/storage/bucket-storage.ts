import type { Lsn } from '@syncpoint/codecs';
import type { ReplicationCheckpoint, ReplicationStreamStorage } from './bucket-data.js';
import type { ReplicationStream, ReplicationStreamState } from './replication-stream.js';
import type { ReplicationLockAPI } from './replication-lock-api.js';
import type { WriteCheckpointAPI } from './write-checkpoint-api.js';

export type MigrationDirection = 'up' | 'down';

export interface MigrationReport {
  /** Migration names applied (up) or reverted (down), in order. */
  applied: string[];
}

/** One replication stream as operators see it (`syncpoint status`, admin diagnostics). */
export interface StreamStatus {
  id: number;
  state: ReplicationStreamState;
  slotName: string | null;
  snapshotDone: boolean;
  /** Op id of the stream's newest checkpoint; null before the first one. */
  lastCheckpoint: bigint | null;
  lastCheckpointLsn: Lsn | null;
  lastCheckpointAt: Date | null;
  /** Last time replication confirmed the stream while idle (keepalive); null if never. */
  lastKeepaliveAt: Date | null;
  /** The error that stopped replication of this stream, if any. */
  lastError: string | null;
}

/** Read-only storage figures for operators. */
export interface StorageStatus {
  /** PROCESSING, ACTIVE and ERRORED streams, newest first. */
  streams: StreamStatus[];
  checkpointRequests: {
    total: number;
    /** Not yet processed: replication has not reached their head. */
    pending: number;
  };
  /** Bytes the bucket storage uses on disk (tables and indexes); null when the database cannot tell. */
  sizeBytes: number | null;
}

export interface BucketStorage extends WriteCheckpointAPI, ReplicationLockAPI {
  /** Apply all pending migrations (`up`), or revert the most recent one (`down`). Safe to run concurrently. */
  migrate(direction: MigrationDirection): Promise<MigrationReport>;

  /**
   * Make `content` the sync config to replicate: if it differs from the newest PROCESSING/ACTIVE stream,
   * a new PROCESSING stream is created. Returns the stream for `content`.
   */
  deploySyncConfig(content: string): Promise<ReplicationStream>;

  /**
   * The stream that checkpoint requests and sync streams are served for: the newest ACTIVE or ERRORED
   * stream, else the newest PROCESSING one (so requests made during the first snapshot are accepted and
   * acknowledged once it checkpoints). Null when no sync config was ever deployed.
   */
  getServingStream(): Promise<ReplicationStream | null>;

  /** Storage of one replication stream's data, its sync rules parsed from the stream's content. */
  getStreamStorage(stream: ReplicationStream): Promise<ReplicationStreamStorage>;

  /** Streams replication works on: every PROCESSING and ACTIVE stream, newest first. */
  getReplicatingStreams(): Promise<ReplicationStream[]>;

  /** Record a stream's state change (e.g. ERRORED with the error that stopped replication). */
  setStreamState(streamId: number, state: ReplicationStreamState, error?: string): Promise<void>;

  /**
   * The checkpoint clients are served: that of the newest ACTIVE or ERRORED stream (PROTOCOL §8.2), or null when
   * no stream has checkpointed yet.
   */
  getServingCheckpoint(): Promise<{ stream: ReplicationStream; checkpoint: ReplicationCheckpoint } | null>;

  /**
   * Call `onChange` (possibly spuriously, possibly coalesced) whenever a checkpoint is created or a stream changes
   * state, in any process using this storage (Postgres LISTEN/NOTIFY, MongoDB change notifications). The returned
   * function stops listening. One listener per process is enough: the sync engine fans it out.
   */
  listenForCheckpoints(onChange: () => void): Promise<() => Promise<void>>;

  /** Read-only status for operators (`syncpoint status`, `/api/admin/v1/diagnostics`). Optional. */
  getStatus?(): Promise<StorageStatus>;

  close(): Promise<void>;
}
