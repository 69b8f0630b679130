import type { Lsn } from '@syncpoint/codecs';
import type { ParameterLookup, SqliteRow, SyncRules } from '@syncpoint/sync-rules';
import type { ReplicationStream } from './replication-stream.js';

/**
 * Bucket data: operations, checksums, parameter lookups, checkpoints and compaction (PROTOCOL §7.5, §8).
 * One `ReplicationStreamStorage` per replication stream (deployed sync config).
 */

export type OpType = 'PUT' | 'REMOVE' | 'MOVE' | 'CLEAR';

/** One operation of a bucket's log, as sent to clients in `data` lines. */
export interface OplogEntry {
  op_id: bigint;
  op: OpType;
  /** PUT/REMOVE only. */
  object_type?: string;
  object_id?: string;
  subkey?: string;
  /** PUT: the row's JSON text exactly as sent to clients; otherwise null/absent. */
  data?: string | null;
  /** Unsigned 32-bit (PROTOCOL §7.5). */
  checksum: number;
  /**
   * MOVE/CLEAR written by compaction: the op id of the newest op that superseded the data. A client downloading a
   * checkpoint older than this must not be told the checkpoint is complete (PROTOCOL §7.4 step 4).
   */
  target_op?: bigint | null;
}

export interface BucketChecksum {
  bucket: string;
  /** Wrapping sum (mod 2^32) of the checksums of all ops with op_id ≤ checkpoint, unsigned. */
  checksum: number;
  /** Number of ops with op_id ≤ checkpoint. */
  count: number;
}

/** A source table as replication knows it. */
export interface SourceTableRef {
  /** Stable id of the table in the source (Postgres: relation oid as text); part of every row's subkey. */
  id: string;
  schema: string;
  name: string;
  /** Replica identity columns (the row key), in order. */
  replicaIdColumns: string[];
}

/** One source row change, with values already converted to SQLite values (PROTOCOL §9 "Values"). */
export type RowChange =
  | { kind: 'insert'; table: SourceTableRef; after: SqliteRow }
  | {
      kind: 'update';
      table: SourceTableRef;
      after: SqliteRow;
      /** The old replica identity when the key changed (pgoutput "old key"); else absent. */
      beforeKey?: SqliteRow;
    }
  | { kind: 'delete'; table: SourceTableRef; beforeKey: SqliteRow };

export interface ReplicationCheckpoint {
  /** Every op with op_id ≤ checkpoint is visible. 0n when nothing was replicated. */
  checkpoint: bigint;
  /** Source position replication has processed; null before the first checkpoint. */
  lsn: Lsn | null;
}

/**
 * Writes of the replication process. Operations saved in a batch become visible to clients only when a later
 * `commit`/`keepalive` creates a checkpoint that includes them: a source transaction is visible all at once
 * or not at all, even if the process dies between `flush` and `commit`.
 */
export interface BucketStorageBatch {
  /** Evaluate the change with the sync rules and buffer the resulting ops and parameter lookups. */
  save(change: RowChange): Promise<void>;
  /** Every current row of these tables leaves all its buckets and lookups (REMOVE ops). */
  truncate(tables: SourceTableRef[]): Promise<void>;
  /** Persist what is buffered (still invisible until a checkpoint). Called automatically when buffers grow. */
  flush(): Promise<void>;
  /**
   * Flush, then create a checkpoint at `lsn` if allowed (PROTOCOL §8.3): snapshot done, lsn ≥ the last checkpoint's
   * lsn and ≥ no_checkpoint_before. Marks checkpoint requests with head ≤ lsn processed and notifies listeners.
   * Returns true when a checkpoint was created.
   */
  commit(lsn: Lsn): Promise<boolean>;
  /** As `commit`, creating a checkpoint even when no op was written (advances only the lsn). */
  keepalive(lsn: Lsn): Promise<boolean>;
  /** Rows that could not be stored (e.g. larger than 15 MiB) or evaluated, since the batch started. */
  readonly skippedRows: number;
}

/** Progress of the initial snapshot, per table, so a restart resumes without redoing finished tables. */
export interface SnapshotTableState {
  table: SourceTableRef;
  done: boolean;
  rowsDone: number;
  /** Last replica-id value copied (single-column keys only), JSON text; null when not resumable by key. */
  lastKey: string | null;
}

export interface ReplicationState {
  slotName: string | null;
  snapshotDone: boolean;
  lastCheckpoint: ReplicationCheckpoint;
  /** No checkpoint may be created before streaming passes this lsn (end of the snapshot). */
  noCheckpointBefore: Lsn | null;
  tables: SnapshotTableState[];
}

export interface BucketDataChunk {
  bucket: string;
  /** Start position of this chunk (exclusive). */
  after: bigint;
  /** op_id of the last op in the chunk. */
  nextAfter: bigint;
  /** More ops may follow for this bucket in a later chunk. */
  hasMore: boolean;
  data: OplogEntry[];
}

export interface CompactOptions {
  /** Only these buckets (default: all). */
  buckets?: string[];
  /** Ops read into memory at a time (bounds memory). */
  batchSize?: number;
  onProgress?: (progress: { bucketsDone: number; opsScanned: number }) => void;
}

export interface CompactResult {
  bucketsCompacted: number;
  opsMoved: number;
  opsCleared: number;
}

export interface ReplicationStreamStorage {
  readonly stream: ReplicationStream;
  readonly syncRules: SyncRules;

  /** Run `callback` with a batch; buffered ops are flushed (not committed) when it returns. */
  startBatch<T>(callback: (batch: BucketStorageBatch) => Promise<T>): Promise<T>;

  getReplicationState(): Promise<ReplicationState>;
  setSlotName(slotName: string): Promise<void>;
  /** Record snapshot progress of one table (durable; used to resume). */
  saveSnapshotProgress(state: SnapshotTableState): Promise<void>;
  /** The whole snapshot is done; checkpoints are allowed once streaming passes `noCheckpointBefore`. */
  markSnapshotDone(noCheckpointBefore: Lsn): Promise<void>;
  /** Remove all data of this stream (ops, current rows, lookups, snapshot state) for a fresh snapshot. */
  clear(): Promise<void>;

  getCheckpoint(): Promise<ReplicationCheckpoint>;
  /** Checksums and counts at `checkpoint`; buckets without ops are absent from the map. */
  getChecksums(checkpoint: bigint, buckets: string[]): Promise<Map<string, BucketChecksum>>;
  /**
   * Ops of the given buckets with `start.get(bucket) < op_id ≤ checkpoint`, buckets in name order, ops in id order,
   * in chunks of at most `limit` ops in total (default 1000) and about `chunkLimitBytes` of row data (default 1 MiB).
   */
  getBucketData(
    checkpoint: bigint,
    start: Map<string, bigint>,
    options?: { limit?: number; chunkLimitBytes?: number }
  ): AsyncIterable<BucketDataChunk>;
  /** Stored output rows for each lookup, as of `checkpoint` (`result[i]` for `lookups[i]`). */
  getParameterSets(checkpoint: bigint, lookups: ParameterLookup[]): Promise<SqliteRow[][]>;

  compact(options?: CompactOptions): Promise<CompactResult>;
}
