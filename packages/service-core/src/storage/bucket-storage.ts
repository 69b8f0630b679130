import type { WriteCheckpointAPI } from './write-checkpoint-api.js';

export type ReplicationStreamState = 'PROCESSING' | 'ACTIVE' | 'STOP' | 'TERMINATED' | 'ERRORED';

/** One deployed version of the sync config (PROTOCOL §1 "replication stream"). */
export interface ReplicationStream {
  id: number;
  state: ReplicationStreamState;
  content: string;
}

export type MigrationDirection = 'up' | 'down';

export interface MigrationReport {
  /** Migration names applied (up) or reverted (down), in order. */
  applied: string[];
}

export interface BucketStorage extends WriteCheckpointAPI {
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

  close(): Promise<void>;
}
