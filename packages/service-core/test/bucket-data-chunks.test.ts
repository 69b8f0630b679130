import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { chunkBucketOps, type BucketDataChunk, type BucketOp, type OplogEntry } from '../src/index.js';

/** An in-memory bucket log read as the server query does: `$or` of ranges, sorted by (bucket, op id), limit + 1. */
function serverRead(
  log: Map<string, OplogEntry[]>,
  checkpoint: bigint,
  start: Map<string, bigint>,
  limit: number
): BucketOp[] {
  const rows: BucketOp[] = [];
  for (const bucket of [...start.keys()].sort()) {
    for (const entry of log.get(bucket) ?? []) {
      if (entry.op_id > start.get(bucket)! && entry.op_id <= checkpoint) rows.push({ bucket, entry });
    }
  }
  return rows.slice(0, limit + 1);
}

async function collect(iterable: AsyncIterable<BucketDataChunk>) {
  const chunks: BucketDataChunk[] = [];
  for await (const chunk of iterable) chunks.push(chunk);
  return chunks;
}

const put = (op_id: bigint, data = 'x'): OplogEntry => ({
  op_id,
  op: 'PUT',
  object_type: 't',
  object_id: String(op_id),
  subkey: 's',
  data,
  checksum: 1
});

describe('chunking bucket data (PROTOCOL §7.4 step 3)', () => {
  const log = new Map([
    ['ua', Array.from({ length: 10 }, (_, i) => put(BigInt(2 * i + 2)))],
    ['ub', Array.from({ length: 10 }, (_, i) => put(BigInt(2 * i + 1)))]
  ]);

  it('yields at most `limit` ops, a chunk per bucket, and hasMore on the last one when the limit cut it', async () => {
    const start = new Map([
      ['ub', 0n],
      ['ua', 0n]
    ]);
    const chunks = await collect(chunkBucketOps(serverRead(log, 100n, start, 15), start, 15, 1 << 20));
    expect(chunks.map((c) => [c.bucket, c.data.length, c.hasMore, c.after])).toEqual([
      ['ua', 10, false, 0n],
      ['ub', 5, true, 0n]
    ]);
    expect(chunks[1]!.nextAfter).toBe(chunks[1]!.data.at(-1)!.op_id);
  });

  it('exactly `limit` ops available: no hasMore', async () => {
    const start = new Map([['ua', 0n]]);
    const [chunk] = await collect(chunkBucketOps(serverRead(log, 100n, start, 10), start, 10, 1 << 20));
    expect(chunk).toMatchObject({ bucket: 'ua', hasMore: false });
    expect(chunk!.data).toHaveLength(10);
  });

  it('splits a bucket at chunkLimitBytes only when the bucket goes on', async () => {
    const start = new Map([
      ['ua', 0n],
      ['ub', 0n]
    ]);
    const chunks = await collect(chunkBucketOps(serverRead(log, 100n, start, 1000), start, 1000, 3));
    // 10 ops of 1 char per bucket, split every 3: 3+3+3+1 per bucket.
    expect(chunks.map((c) => [c.bucket, c.data.length, c.hasMore])).toEqual([
      ['ua', 3, true],
      ['ua', 3, true],
      ['ua', 3, true],
      ['ua', 1, false],
      ['ub', 3, true],
      ['ub', 3, true],
      ['ub', 3, true],
      ['ub', 1, false]
    ]);
    for (let i = 1; i < chunks.length; i++) {
      if (chunks[i]!.bucket === chunks[i - 1]!.bucket) expect(chunks[i]!.after).toBe(chunks[i - 1]!.nextAfter);
    }
  });

  it('reads nothing for no ops, and nothing for a zero limit', async () => {
    expect(await collect(chunkBucketOps([], new Map([['x', 0n]]), 10, 10))).toEqual([]);
    expect(
      await collect(chunkBucketOps(serverRead(log, 100n, new Map([['ua', 0n]]), 0), new Map([['ua', 0n]]), 0, 10))
    ).toEqual([]);
  });

  it('the resume loop of the sync engine reads every op exactly once, in order, for any limit and byte budget', async () => {
    const arbitraryLog = fc
      .array(fc.record({ bucket: fc.constantFrom('a', 'b', 'c', 'd'), size: fc.nat(20) }), { maxLength: 60 })
      .map((ops) => {
        const result = new Map<string, OplogEntry[]>();
        ops.forEach((op, i) => {
          const list = result.get(op.bucket) ?? [];
          list.push(put(BigInt(i + 1), 'x'.repeat(op.size)));
          result.set(op.bucket, list);
        });
        return result;
      });
    await fc.assert(
      fc.asyncProperty(
        arbitraryLog,
        fc.integer({ min: 1, max: 12 }),
        fc.integer({ min: 1, max: 50 }),
        fc.nat(60),
        async (log, limit, bytes, cut) => {
          const checkpoint = BigInt(cut);
          const positions = new Map(['a', 'b', 'c', 'd', 'zz'].map((bucket) => [bucket, 0n]));
          const read = new Map<string, OplogEntry[]>();
          for (let round = 0, more = true; more; round++) {
            expect(round).toBeLessThan(200);
            more = false;
            const chunks = await collect(
              chunkBucketOps(serverRead(log, checkpoint, positions, limit), positions, limit, bytes)
            );
            expect(chunks.reduce((sum, c) => sum + c.data.length, 0)).toBeLessThanOrEqual(limit);
            for (const chunk of chunks) {
              expect(chunk.after).toBe(positions.get(chunk.bucket));
              const before = chunk.data.slice(0, -1).reduce((sum, op) => sum + (op.data?.length ?? 0), 0);
              expect(before).toBeLessThan(bytes);
              read.set(chunk.bucket, [...(read.get(chunk.bucket) ?? []), ...chunk.data]);
              positions.set(chunk.bucket, chunk.nextAfter);
              if (chunk.hasMore) more = true;
            }
          }
          for (const [bucket, ops] of log) {
            expect(read.get(bucket) ?? []).toEqual(ops.filter((op) => op.op_id <= checkpoint));
          }
        }
      ),
      { numRuns: 200 }
    );
  });
});
