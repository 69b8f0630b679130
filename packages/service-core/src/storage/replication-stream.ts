/**
 * The replication stream types, on their own so that bucket data (per stream) and bucket storage (all streams) both
 * depend on them without depending on each other.
 */

export type ReplicationStreamState = 'PROCESSING' | 'ACTIVE' | 'STOP' | 'TERMINATED' | 'ERRORED';

/** One deployed version of the sync config (PROTOCOL §1 "replication stream"). */
export interface ReplicationStream {
  id: number;
  state: ReplicationStreamState;
  content: string;
}
