import { addChecksums } from '@syncpoint/service-core';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { compactBucket, type BucketCompactionAccess, type ClearPlan, type CompactionOpView } from '../src/index.js';

/** One bucket's log in memory, with the same read/write semantics as the MongoDB access. */
function memoryBucket(initial: CompactionOpView[]) {
  let log = initial.map((op) => ({ ...op }));
  let count = log.length;
  const access: BucketCompactionAccess = {
    readNewestFirst(through, limit) {
      return Promise.resolve(
        log
          .filter((op) => op.opId <= through)
          .reverse()
          .slice(0, limit)
          .map((op) => ({ ...op }))
      );
    },
    readOldestFirst(after, through, limit) {
      return Promise.resolve(
        log
          .filter((op) => (after === null || op.opId > after) && op.opId <= through)
          .slice(0, limit)
          .map((op) => ({ ...op }))
      );
    },
    writeMoves(moves) {
      for (const move of moves) {
        const op = log.find((candidate) => candidate.opId === move.opId)!;
        Object.assign(op, {
          op: 'MOVE',
          table: null,
          rowId: null,
          sourceTable: null,
          sourceKey: null,
          targetOp: move.targetOp
        });
      }
      return Promise.resolve();
    },
    writeClear(plan: ClearPlan) {
      const before = log.length;
      log = log.filter((op) => op.opId >= plan.lastOpId);
      Object.assign(log[0]!, {
        op: 'CLEAR',
        checksum: plan.checksum,
        table: null,
        rowId: null,
        sourceTable: null,
        sourceKey: null,
        targetOp: plan.targetOp
      });
      count -= before - log.length;
      return Promise.resolve(before - log.length);
    }
  };
  return { access, log: () => log, count: () => count };
}

/** A client applying ops (PROTOCOL §8.1). */
function apply(start: { rows: Map<string, number>; checksum: number }, ops: CompactionOpView[]) {
  let rows = new Map(start.rows);
  let checksum = start.checksum;
  for (const op of ops) {
    if (op.op === 'CLEAR') {
      rows = new Map();
      checksum = op.checksum;
      continue;
    }
    checksum = addChecksums(checksum, op.checksum);
    const key = `${op.table}/${op.rowId}/${op.sourceKey}`;
    if (op.op === 'PUT') rows.set(key, Number(op.opId));
    else if (op.op === 'REMOVE') rows.delete(key);
  }
  return { rows, checksum };
}
const EMPTY = { rows: new Map<string, number>(), checksum: 0 };

const op = (opId: number, kind: 'PUT' | 'REMOVE', row: string, checksum: number): CompactionOpView => ({
  opId: BigInt(opId),
  op: kind,
  table: 'todos',
  rowId: row,
  sourceTable: '16390',
  sourceKey: `["${row}"]`,
  checksum,
  targetOp: null
});

describe('compaction planning (PROTOCOL §8.4)', () => {
  it('turns superseded ops into MOVE and a leading run of REMOVE/MOVE into one CLEAR', async () => {
    const ops = [
      op(1, 'PUT', 't1', 10),
      op(2, 'PUT', 't2', 20),
      op(3, 'PUT', 't1', 30),
      op(4, 'REMOVE', 't2', 2 ** 32 - 5),
      op(5, 'PUT', 't1', 50)
    ];
    const bucket = memoryBucket(ops);
    const result = await compactBucket(bucket.access, 5n, 2);
    expect(result).toMatchObject({ moved: 3, cleared: 4 });
    expect(bucket.log().map((o) => [o.op, o.opId, o.checksum, o.targetOp])).toEqual([
      ['CLEAR', 4n, (10 + 20 + 30 + 2 ** 32 - 5) % 2 ** 32, 5n],
      ['PUT', 5n, 50, null]
    ]);
    expect(bucket.count()).toBe(2);
    // Compacting again changes nothing.
    expect(await compactBucket(bucket.access, 5n, 2)).toMatchObject({ moved: 0, cleared: 0 });
  });

  it('leaves ops above the checkpoint alone and does not supersede with them', async () => {
    const bucket = memoryBucket([op(1, 'PUT', 't1', 1), op(2, 'PUT', 't2', 2), op(3, 'PUT', 't1', 3)]);
    await compactBucket(bucket.access, 2n, 10);
    expect(bucket.log().map((o) => o.op)).toEqual(['PUT', 'PUT', 'PUT']);
  });

  it('a client resuming from any op id ends with the same rows and checksum; the checksum and the count stay right', async () => {
    const command = fc.record({
      kind: fc.constantFrom<'PUT' | 'REMOVE'>('PUT', 'PUT', 'REMOVE'),
      row: fc.constantFrom('a', 'b', 'c'),
      checksum: fc.nat({ max: 2 ** 32 - 1 })
    });
    await fc.assert(
      fc.asyncProperty(
        fc.array(command, { minLength: 1, maxLength: 30 }),
        fc.nat(30),
        fc.integer({ min: 1, max: 6 }),
        fc.integer({ min: 1, max: 4 }),
        async (commands, cut, batchSize, maxSeenKeys) => {
          const original = commands.map((c, i) => op(i + 1, c.kind, c.row, c.checksum));
          const checkpoint = BigInt(Math.min(cut, original.length));
          const bucket = memoryBucket(original);
          await compactBucket(bucket.access, checkpoint, batchSize, maxSeenKeys);
          const compacted = bucket.log();

          expect(compacted.filter((o) => o.opId > checkpoint)).toEqual(original.filter((o) => o.opId > checkpoint));
          expect(bucket.count()).toBe(compacted.length);
          const atCheckpoint = (ops: CompactionOpView[]) =>
            ops.filter((o) => o.opId <= checkpoint).reduce((sum, o) => addChecksums(sum, o.checksum), 0);
          expect(atCheckpoint(compacted)).toBe(atCheckpoint(original));

          const expected = apply(EMPTY, original);
          for (const position of [0n, ...original.map((o) => o.opId)]) {
            const synced = apply(
              EMPTY,
              original.filter((o) => o.opId <= position)
            );
            const resumed = apply(
              synced,
              compacted.filter((o) => o.opId > position)
            );
            expect(resumed).toEqual(expected);
          }
        }
      ),
      { numRuns: 300 }
    );
  });
});
