import { normalizeLsn, type Lsn } from '@syncpoint/codecs';
import type { ReplicationStream, ReplicationStreamState, StreamCheckpointState } from '@syncpoint/service-core';
import type { Long } from 'mongodb';
import { longToBigint, type SnapshotTableDocument } from './bucket-data-documents.js';

/**
 * One replication stream (deployed sync config) in `sync_rules` (PROTOCOL §8.2). `_id` is a small integer
 * allocated from `counters`; it is the `g` of every bucket data document of the stream. Documents written before
 * bucket data existed lack the replication fields: they read as their defaults (null / false / []).
 */
export interface SyncRulesDocument {
  _id: number;
  state: ReplicationStreamState;
  content: string;
  created_at: Date;
  slot_name?: string | null;
  snapshot_done?: boolean;
  /** Op id of the current checkpoint (Int64); null before the first checkpoint. */
  last_checkpoint?: Long | null;
  last_checkpoint_lsn?: string | null;
  no_checkpoint_before?: string | null;
  /** Highest op id flushed (or kept while blocked) not yet covered by a checkpoint. */
  keepalive_op?: Long | null;
  /** Resume position of an interrupted snapshot; cleared by the first checkpoint. */
  snapshot_lsn?: string | null;
  last_checkpoint_ts?: Date | null;
  last_keepalive_ts?: Date | null;
  last_fatal_error?: string | null;
  snapshot_tables?: SnapshotTableDocument[];
}

export function toStream(document: Pick<SyncRulesDocument, '_id' | 'state' | 'content'>): ReplicationStream {
  return { id: Number(document._id), state: document.state, content: document.content };
}

export const lsnOrNull = (text: string | null | undefined): Lsn | null => (text == null ? null : normalizeLsn(text));

export function streamCheckpointState(document: SyncRulesDocument): StreamCheckpointState {
  return {
    state: document.state,
    snapshotDone: document.snapshot_done === true,
    lastCheckpoint: longToBigint(document.last_checkpoint),
    lastCheckpointLsn: lsnOrNull(document.last_checkpoint_lsn),
    noCheckpointBefore: lsnOrNull(document.no_checkpoint_before),
    keepaliveOp: longToBigint(document.keepalive_op)
  };
}

/** `(last_checkpoint, last_checkpoint_lsn)`, `(0, null)` before the first checkpoint. */
export function checkpointOf(document: Pick<SyncRulesDocument, 'last_checkpoint' | 'last_checkpoint_lsn'>) {
  return { checkpoint: longToBigint(document.last_checkpoint) ?? 0n, lsn: lsnOrNull(document.last_checkpoint_lsn) };
}

/** Fields of a newly deployed stream. */
export function newStreamFields(): Omit<SyncRulesDocument, '_id' | 'state' | 'content' | 'created_at'> {
  return {
    slot_name: null,
    snapshot_done: false,
    last_checkpoint: null,
    last_checkpoint_lsn: null,
    no_checkpoint_before: null,
    keepalive_op: null,
    snapshot_lsn: null,
    last_checkpoint_ts: null,
    last_keepalive_ts: null,
    last_fatal_error: null,
    snapshot_tables: []
  };
}
