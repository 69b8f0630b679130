import type { BucketDataChunk, OplogEntry } from '@syncpoint/service-core';

export interface BucketOp {
  bucket: string;
  entry: OplogEntry;
}

/**
 * Splits ops (buckets in name order, ops in id order, at most `limit + 1` of them as read from the server) into
 * chunks (PROTOCOL §7.4 step 3), the same way as the Postgres storage:
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
