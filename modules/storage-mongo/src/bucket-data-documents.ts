/**
 * Documents of the bucket data collections (PROTOCOL §8) and the pure query/update builders used on them. No I/O
 * here: every filter, pipeline and checksum computation sent to the server is unit-tested without one.
 *
 * Ids: op ids are Int64 (`Long`) in every document and every query; `g` is the stream (sync_rules) id.
 */
import type { CurrentRowState, OplogEntry, OpType, SnapshotTableState, SourceTableRef } from '@syncpoint/service-core';
import { subkeyOf } from '@syncpoint/service-core';
import { inspect } from 'node:util';
import { Long, MaxKey, MinKey, type Document } from 'mongodb';
import { int64ToLong } from './write-checkpoint-updates.js';

export const BUCKET_DATA = 'bucket_data';
export const CURRENT_DATA = 'current_data';
export const BUCKET_PARAMETERS = 'bucket_parameters';
export const BUCKET_STATE = 'bucket_state';
export const OP_ID_SEQUENCE = 'op_id_sequence';

/** 2^32: op checksums are u32 and every sum of them is taken modulo this. */
export const U32 = 4294967296n;

export interface BucketDataKey {
  g: number;
  b: string;
  o: Long;
}

/** One op of a bucket's log. MOVE/CLEAR keep only `_id`, `op`, `checksum` and `target_op`. */
export interface BucketDataDocument {
  _id: BucketDataKey;
  op: OpType;
  /** PUT/REMOVE: source table id and replica key of the source row (the subkey is derived from both). */
  source_table?: string | null;
  source_key?: string | null;
  /** PUT/REMOVE: output table name (object_type) and row id (object_id). */
  table?: string | null;
  row_id?: string | null;
  /** Unsigned 32-bit value as Int64. */
  checksum: Long;
  /** PUT: the row JSON sent to clients; otherwise null. */
  data: string | null;
  /** MOVE/CLEAR from compaction: op id of the newest op that superseded the data. */
  target_op: Long | null;
}

export interface CurrentDataKey {
  g: number;
  /** Source table id. */
  t: string;
  /** Replica key (`replicaKeyOf`). */
  k: string;
}

export interface CurrentDataDocument {
  _id: CurrentDataKey;
  buckets: CurrentRowState['buckets'];
  lookups: string[];
}

export interface BucketParameterDocument {
  /** Op id, from the same sequence as bucket ops. */
  _id: Long;
  key: CurrentDataKey;
  /** `serializeParameterLookup` of the lookup. */
  lookup: string;
  /** `serializeParameterRows` of the output rows; `[]` means the row no longer contributes to the lookup. */
  bucket_parameters: string;
}

/** Running totals of a bucket over ALL its ops (checkpointed or not). */
export interface BucketStateDocument {
  _id: { g: number; b: string };
  last_op: Long;
  /** Wrapping sum mod 2^32 of every op's checksum, as Int64. */
  checksum_sum: Long;
  count: Long;
}

export interface OpIdSequenceDocument {
  _id: string;
  value: Long;
}

/** Snapshot progress of one table, stored in the stream's `sync_rules` document. */
export interface SnapshotTableDocument {
  table: SourceTableRef;
  done: boolean;
  rows_done: number;
  last_key: string | null;
}

// ---------------------------------------------------------------------------------------------------------------
// Conversions

/** An Int64 / number read back as bigint (null stays null). */
export function longToBigint(value: unknown): bigint | null {
  if (value === null || value === undefined) return null;
  if (value instanceof Long) return value.toBigInt();
  if (typeof value === 'bigint') return value;
  if (typeof value === 'number' && Number.isSafeInteger(value)) return BigInt(value);
  throw new TypeError(`Stored value is not an integer: ${inspect(value)}`);
}

/** Any stored integer (Long, Int32, whole Double) reduced modulo 2^32 to an unsigned checksum. */
export function toUnsignedChecksum(value: unknown): number {
  return Number(BigInt.asUintN(32, longToBigint(value) ?? 0n));
}

/** `a - b` modulo 2^32, unsigned. */
export function subtractChecksums(a: unknown, b: unknown): number {
  return Number(BigInt.asUintN(32, (longToBigint(a) ?? 0n) - (longToBigint(b) ?? 0n)));
}

export function checksumToLong(checksum: number): Long {
  return Long.fromNumber(checksum >>> 0);
}

export const opIdKey = (g: number, b: string, o: bigint | Long | MinKey | MaxKey) => ({
  g,
  b,
  o: typeof o === 'bigint' ? int64ToLong(o) : o
});

/** The subkey of a stored op: derived from its source table id and replica key, exactly as at write time. */
export function storedSubkey(sourceTable: string, sourceKey: string): string {
  return subkeyOf({ id: sourceTable, schema: '', name: '', replicaIdColumns: [] }, sourceKey);
}

/** A stored op as sent to clients. */
export function toOplogEntry(
  document: Pick<
    BucketDataDocument,
    '_id' | 'op' | 'source_table' | 'source_key' | 'table' | 'row_id' | 'checksum' | 'data' | 'target_op'
  >
): OplogEntry {
  const op_id = longToBigint(document._id.o)!;
  const checksum = toUnsignedChecksum(document.checksum);
  if (document.op === 'PUT' || document.op === 'REMOVE') {
    return {
      op_id,
      op: document.op,
      object_type: document.table ?? '',
      object_id: document.row_id ?? '',
      subkey: storedSubkey(document.source_table ?? '', document.source_key ?? ''),
      data: document.op === 'PUT' ? (document.data ?? null) : null,
      checksum
    };
  }
  return { op_id, op: document.op, data: null, checksum, target_op: longToBigint(document.target_op) };
}

// ---------------------------------------------------------------------------------------------------------------
// Key ranges

/** All `_id`s of one stream in bucket_data: `{g, b: MinKey, o: MinKey}` … `{g, b: MaxKey, o: MaxKey}`. */
export function streamBucketDataRange(g: number): Document {
  return { _id: { $gt: { g, b: new MinKey(), o: new MinKey() }, $lt: { g, b: new MaxKey(), o: new MaxKey() } } };
}

/** Ops of `bucket` with `after < op_id ≤ through`: a range on the `_id` index. */
export function bucketOpRange(g: number, bucket: string, after: bigint | null, through: bigint): Document {
  return {
    _id: {
      $gt: opIdKey(g, bucket, after === null ? new MinKey() : after),
      $lte: opIdKey(g, bucket, through)
    }
  };
}

/** Every op of `bucket` older than `opId` (what a CLEAR at `opId` replaces). */
export function bucketOpsBefore(g: number, bucket: string, opId: bigint): Document {
  return { _id: { $gt: opIdKey(g, bucket, new MinKey()), $lt: opIdKey(g, bucket, opId) } };
}

export function streamBucketStateRange(g: number): Document {
  return { _id: { $gt: { g, b: new MinKey() }, $lt: { g, b: new MaxKey() } } };
}

export function streamCurrentDataRange(g: number): Document {
  return { _id: { $gt: { g, t: new MinKey(), k: new MinKey() }, $lt: { g, t: new MaxKey(), k: new MaxKey() } } };
}

/** The current rows of one source table of the stream. */
export function tableCurrentDataRange(g: number, tableId: string): Document {
  return { _id: { $gt: { g, t: tableId, k: new MinKey() }, $lt: { g, t: tableId, k: new MaxKey() } } };
}

// ---------------------------------------------------------------------------------------------------------------
// bucket_state

/**
 * Upsert pipeline adding one flush's totals to a bucket's state: `checksum_sum` stays reduced modulo 2^32 (an
 * `$inc` would overflow Int64 after ~2^31 ops), `count` grows, `last_op` is the maximum. A fresh document starts
 * from zero. Constants are `$literal` so nothing is read as a field path.
 */
export function bucketStateIncrement(totals: { checksum: number; count: number; lastOp: bigint }): Document[] {
  return [
    {
      $set: {
        checksum_sum: {
          $mod: [
            {
              $add: [
                { $ifNull: ['$checksum_sum', { $literal: Long.ZERO }] },
                { $literal: checksumToLong(totals.checksum) }
              ]
            },
            { $literal: Long.fromBigInt(U32) }
          ]
        },
        count: {
          $add: [{ $ifNull: ['$count', { $literal: Long.ZERO }] }, { $literal: Long.fromNumber(totals.count) }]
        },
        last_op: {
          $max: [{ $ifNull: ['$last_op', { $literal: Long.ZERO }] }, { $literal: int64ToLong(totals.lastOp) }]
        }
      }
    }
  ];
}

// ---------------------------------------------------------------------------------------------------------------
// Checksums

export interface BucketStateView {
  bucket: string;
  lastOp: bigint;
  checksumSum: unknown;
  count: unknown;
}

/**
 * One aggregation for the ops above the checkpoint of many buckets: for each bucket whose state has ops past
 * `checkpoint`, the `_id` range (checkpoint, last_op]; grouped per bucket with the sum of checksums and the count.
 * Returns null when no bucket has ops past the checkpoint (nothing to subtract).
 */
export function checksumsAbovePipeline(g: number, checkpoint: bigint, states: BucketStateView[]): Document[] | null {
  const ranges = states
    .filter((state) => state.lastOp > checkpoint)
    .map((state) => bucketOpRange(g, state.bucket, checkpoint, state.lastOp));
  if (ranges.length === 0) return null;
  return [
    { $match: ranges.length === 1 ? ranges[0]! : { $or: ranges } },
    { $group: { _id: '$_id.b', checksum_total: { $sum: '$checksum' }, count: { $sum: 1 } } }
  ];
}

/** bucket_state minus the ops above the checkpoint; buckets without ops at the checkpoint are left out. */
export function combineChecksums(
  states: BucketStateView[],
  above: Array<{ _id: string; checksum_total: unknown; count: unknown }>
): Map<string, { bucket: string; checksum: number; count: number }> {
  const aboveByBucket = new Map(above.map((row) => [row._id, row]));
  const result = new Map<string, { bucket: string; checksum: number; count: number }>();
  for (const state of states) {
    const row = aboveByBucket.get(state.bucket);
    const count = Number((longToBigint(state.count) ?? 0n) - (longToBigint(row?.count ?? 0) ?? 0n));
    if (count <= 0) continue;
    result.set(state.bucket, {
      bucket: state.bucket,
      checksum: subtractChecksums(state.checksumSum, row?.checksum_total ?? 0),
      count
    });
  }
  return result;
}

// ---------------------------------------------------------------------------------------------------------------
// Bucket data

/** `$or` of per-bucket `_id` ranges `start < op_id ≤ checkpoint`, buckets in name order (empty ranges left out). */
export function bucketDataFilter(
  g: number,
  checkpoint: bigint,
  start: Map<string, bigint>
): { buckets: string[]; filter: Document | null } {
  const buckets = [...start.keys()].sort();
  const ranges = buckets
    .filter((bucket) => start.get(bucket)! < checkpoint)
    .map((bucket) => bucketOpRange(g, bucket, start.get(bucket)!, checkpoint));
  if (ranges.length === 0) return { buckets, filter: null };
  return { buckets, filter: ranges.length === 1 ? ranges[0]! : { $or: ranges } };
}

// ---------------------------------------------------------------------------------------------------------------
// Parameter lookups

/**
 * For each lookup, the newest entry per source row with `_id ≤ checkpoint`: match (uses the `lookup` index
 * `{key.g, lookup, _id}`), newest first, then the first entry of each (lookup, source row).
 */
export function parameterSetsPipeline(g: number, checkpoint: bigint, lookups: string[]): Document[] {
  return [
    { $match: { 'key.g': g, lookup: { $in: lookups }, _id: { $lte: int64ToLong(checkpoint) } } },
    { $sort: { _id: -1 } },
    {
      $group: {
        _id: { lookup: '$lookup', t: '$key.t', k: '$key.k' },
        bucket_parameters: { $first: '$bucket_parameters' }
      }
    }
  ];
}

// ---------------------------------------------------------------------------------------------------------------
// Snapshot progress

/** Pipeline update replacing (or adding) one table's entry in `snapshot_tables`, keyed by table id. */
export function snapshotProgressUpdate(state: SnapshotTableState): Document[] {
  const entry: SnapshotTableDocument = {
    table: {
      id: state.table.id,
      schema: state.table.schema,
      name: state.table.name,
      replicaIdColumns: [...state.table.replicaIdColumns]
    },
    done: state.done,
    rows_done: state.rowsDone,
    last_key: state.lastKey
  };
  return [
    {
      $set: {
        snapshot_tables: {
          $concatArrays: [
            {
              $filter: {
                input: { $ifNull: ['$snapshot_tables', []] },
                cond: { $ne: ['$$this.table.id', { $literal: state.table.id }] }
              }
            },
            [{ $literal: entry }]
          ]
        }
      }
    }
  ];
}

export function toSnapshotTableState(document: SnapshotTableDocument): SnapshotTableState {
  return {
    table: {
      id: document.table.id,
      schema: document.table.schema,
      name: document.table.name,
      replicaIdColumns: [...document.table.replicaIdColumns]
    },
    done: document.done,
    rowsDone: Number(document.rows_done),
    lastKey: document.last_key ?? null
  };
}
