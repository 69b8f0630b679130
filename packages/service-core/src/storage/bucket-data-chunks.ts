import type { SqliteRow } from '@syncpoint/sync-rules';
import { parseParameterRows } from '@syncpoint/sync-rules';
import type { BucketDataChunk, OplogEntry } from './bucket-data.js';
import type { BucketStorageBatch } from './bucket-data.js';

/** `getBucketData` defaults (PROTOCOL §7.4): ops per call, and row data per chunk. */
export const DEFAULT_BUCKET_DATA_LIMIT = 1000;
export const DEFAULT_CHUNK_LIMIT_BYTES = 1024 * 1024;

/** `startBatch`: run the callback with the batch, then flush what it buffered (not committed). */
export async function runBatch<T>(
  batch: BucketStorageBatch,
  callback: (batch: BucketStorageBatch) => Promise<T>
): Promise<T> {
  const result = await callback(batch);
  await batch.flush();
  return result;
}

/**
 * `getParameterSets` from the newest stored entry per (lookup, source row) at the checkpoint: `[]` entries mean the
 * row left the lookup; `result[i]` holds the rows for `keys[i]`.
 */
export function parameterSetsOf(
  keys: string[],
  entries: Iterable<{ lookup: string; bucketParameters: string }>
): SqliteRow[][] {
  const byLookup = new Map<string, SqliteRow[]>();
  for (const entry of entries) {
    if (entry.bucketParameters === '[]') continue;
    const list = byLookup.get(entry.lookup) ?? [];
    list.push(...parseParameterRows(entry.bucketParameters));
    byLookup.set(entry.lookup, list);
  }
  return keys.map((key) => [...(byLookup.get(key) ?? [])]);
}

export interface BucketOp {
  bucket: string;
  entry: OplogEntry;
}

/**
 * Splits ops (buckets in name order, ops in id order, at most `limit + 1` of them as read from the server) into
 * chunks (PROTOCOL §7.4 step 3), for every storage module:
 * - a new chunk per bucket; `after` is the bucket's start position, `nextAfter` the id of its last op;
 * - once a chunk holds `chunkLimitBytes` of row data (UTF-16 length of `data`) and the next op is of the same
 *   bucket, the chunk is closed with `hasMore` and the bucket continues in the next chunk;
 * - when more than `limit` ops were read (the `limit + 1`-th proves more exist), only `limit` are returned and the
 *   last chunk says `hasMore` (more may follow in its bucket or in buckets not reached).
 * Works on any async source so the server cursor is consumed as it streams.
 */
export async function* chunkBucketOps(
  source: AsyncIterable<BucketOp> | Iterable<BucketOp>,
  start: ReadonlyMap<string, bigint>,
  limit: number,
  chunkLimitBytes: number
): AsyncGenerator<BucketDataChunk> {
  if (limit <= 0) return;
  let chunk: BucketDataChunk | null = null;
  let bytes = 0;
  let taken = 0;
  let truncated = false;
  // One op of look-ahead: a byte split happens only when the next op is of the same bucket.
  let pending: BucketOp | null = null;

  const emit = function* (op: BucketOp, next: BucketOp | null): Generator<BucketDataChunk> {
    if (chunk && chunk.bucket !== op.bucket) {
      yield chunk;
      chunk = null;
    }
    if (!chunk) {
      const after = start.get(op.bucket) ?? 0n;
      chunk = { bucket: op.bucket, after, nextAfter: after, hasMore: false, data: [] };
      bytes = 0;
    }
    chunk.data.push(op.entry);
    chunk.nextAfter = op.entry.op_id;
    bytes += op.entry.data?.length ?? 0;
    if (bytes >= chunkLimitBytes && next !== null && next.bucket === op.bucket) {
      chunk.hasMore = true;
      yield chunk;
      chunk = { bucket: op.bucket, after: op.entry.op_id, nextAfter: op.entry.op_id, hasMore: false, data: [] };
      bytes = 0;
    }
  };

  for await (const op of source) {
    if (taken === limit) {
      truncated = true;
      break;
    }
    taken++;
    if (pending !== null) yield* emit(pending, op);
    pending = op;
  }
  // With the limit reached, the extra op (not returned) is the look-ahead of the last returned one.
  if (pending !== null) yield* emit(pending, null);
  const last = chunk as BucketDataChunk | null;
  if (last && last.data.length > 0) {
    last.hasMore = truncated;
    yield last;
  }
}
