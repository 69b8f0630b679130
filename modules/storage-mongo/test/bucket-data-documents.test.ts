import { addChecksums } from '@syncpoint/codecs';
import { putChecksum, removeChecksum, subkeyOf, type SourceTableRef } from '@syncpoint/service-core';
import fc from 'fast-check';
import { Long, MaxKey, MinKey } from 'mongodb';
import { describe, expect, it } from 'vitest';
import {
  bucketDataFilter,
  bucketOpRange,
  bucketOpsBefore,
  bucketStateIncrement,
  checksumsAbovePipeline,
  checksumToLong,
  combineChecksums,
  parameterSetsPipeline,
  snapshotProgressUpdate,
  storedSubkey,
  streamBucketDataRange,
  subtractChecksums,
  toOplogEntry,
  toSnapshotTableState,
  toUnsignedChecksum
} from '../src/index.js';

const todos: SourceTableRef = { id: '16390', schema: 'public', name: 'todos', replicaIdColumns: ['id'] };
const long = (value: bigint | number) => Long.fromBigInt(BigInt(value));

describe('checksum arithmetic (PROTOCOL §7.5)', () => {
  it('reduces any stored integer to an unsigned 32-bit value', () => {
    expect(toUnsignedChecksum(long(0))).toBe(0);
    expect(toUnsignedChecksum(long(2 ** 32 - 1))).toBe(2 ** 32 - 1);
    expect(toUnsignedChecksum(long(2 ** 32))).toBe(0);
    expect(toUnsignedChecksum(long(2n ** 40n + 5n))).toBe(5);
    expect(toUnsignedChecksum(long(-1))).toBe(2 ** 32 - 1);
    expect(toUnsignedChecksum(7)).toBe(7); // an Int32 from old data
    expect(toUnsignedChecksum(null)).toBe(0);
  });

  it('subtracts modulo 2^32', () => {
    expect(subtractChecksums(long(5), long(7))).toBe(2 ** 32 - 2);
    expect(subtractChecksums(long(2n ** 33n + 9n), 4)).toBe(5);
  });

  it('stores op checksums as Int64 with the unsigned value', () => {
    const value = checksumToLong(0xfffffffe);
    expect(value).toBeInstanceOf(Long);
    expect(value.toBigInt()).toBe(0xfffffffen);
  });

  it('state minus the ops above the checkpoint equals the wrapping sum of the ops at the checkpoint', () => {
    fc.assert(
      fc.property(
        fc.array(fc.nat({ max: 2 ** 32 - 1 }), { minLength: 1, maxLength: 60 }),
        fc.nat(),
        (checksums, cut) => {
          const checkpoint = cut % (checksums.length + 1);
          // bucket_state as the flushes leave it: sum mod 2^32 (bucketStateIncrement), count, last op id.
          const state = {
            bucket: 'b',
            lastOp: BigInt(checksums.length),
            checksumSum: long(checksums.reduce(addChecksums, 0)),
            count: long(checksums.length)
          };
          // What the aggregation returns for (checkpoint, last_op]: a plain (non-wrapping) $sum, possibly > 2^32.
          const aboveOps = checksums.slice(checkpoint);
          const above =
            aboveOps.length === 0
              ? []
              : [
                  {
                    _id: 'b',
                    checksum_total: long(aboveOps.reduce((a, b) => a + BigInt(b), 0n)),
                    count: aboveOps.length
                  }
                ];
          const result = combineChecksums([state], above);
          const expected = checksums.slice(0, checkpoint);
          if (expected.length === 0) expect(result.has('b')).toBe(false);
          else
            expect(result.get('b')).toEqual({
              bucket: 'b',
              checksum: expected.reduce(addChecksums, 0),
              count: expected.length
            });
        }
      )
    );
  });

  it('leaves out buckets with no op at the checkpoint, keeps the others', () => {
    const states = [
      { bucket: 'a', lastOp: 10n, checksumSum: long(100), count: long(2) },
      { bucket: 'b', lastOp: 3n, checksumSum: long(7), count: long(1) }
    ];
    const result = combineChecksums(states, [{ _id: 'a', checksum_total: long(100), count: long(2) }]);
    expect([...result.keys()]).toEqual(['b']);
    expect(result.get('b')).toEqual({ bucket: 'b', checksum: 7, count: 1 });
  });
});

describe('bucket_state update pipeline', () => {
  it('adds the checksum modulo 2^32, the count, and keeps the highest op id, all as Int64 literals', () => {
    const [stage] = bucketStateIncrement({ checksum: 0xffffffff, count: 3, lastOp: 2n ** 62n });
    expect(stage).toEqual({
      $set: {
        checksum_sum: {
          $mod: [
            { $add: [{ $ifNull: ['$checksum_sum', { $literal: Long.ZERO }] }, { $literal: long(0xffffffff) }] },
            { $literal: long(2n ** 32n) }
          ]
        },
        count: { $add: [{ $ifNull: ['$count', { $literal: Long.ZERO }] }, { $literal: long(3) }] },
        last_op: { $max: [{ $ifNull: ['$last_op', { $literal: Long.ZERO }] }, { $literal: long(2n ** 62n) }] }
      }
    });
    const literals = JSON.stringify(stage, (_key, value: unknown) =>
      value instanceof Long ? `Long(${value.toString()})` : value
    );
    expect(literals).toContain('Long(4611686018427387904)');
  });
});

describe('queries on the _id index', () => {
  it('a bucket range is (g, b, after) exclusive … (g, b, through) inclusive, with Int64 op ids', () => {
    expect(bucketOpRange(3, 'by_user["u1"]', 5n, 9n)).toEqual({
      _id: { $gt: { g: 3, b: 'by_user["u1"]', o: long(5) }, $lte: { g: 3, b: 'by_user["u1"]', o: long(9) } }
    });
    const open = bucketOpRange(3, 'x', null, 9n) as { _id: { $gt: { o: unknown } } };
    expect(open._id.$gt.o).toBeInstanceOf(MinKey);
    // Key field order is what makes embedded-document ranges work.
    expect(Object.keys((bucketOpRange(1, 'x', 1n, 2n) as { _id: { $gt: object } })._id.$gt)).toEqual(['g', 'b', 'o']);
  });

  it('a stream range spans every bucket of the stream only', () => {
    const range = streamBucketDataRange(4) as {
      _id: { $gt: { g: number; b: unknown }; $lt: { g: number; b: unknown } };
    };
    expect(range._id.$gt.g).toBe(4);
    expect(range._id.$gt.b).toBeInstanceOf(MinKey);
    expect(range._id.$lt.b).toBeInstanceOf(MaxKey);
  });

  it('what a CLEAR replaces: every op of the bucket below its id', () => {
    const filter = bucketOpsBefore(2, 'b', 40n) as { _id: { $gt: { o: unknown }; $lt: { o: unknown } } };
    expect(filter._id.$gt.o).toBeInstanceOf(MinKey);
    expect(filter._id.$lt.o).toEqual(long(40));
  });

  it('bucket data: one $or branch per bucket that has something to read, buckets in name order', () => {
    const start = new Map([
      ['b2', 0n],
      ['a1', 4n],
      ['done', 20n]
    ]);
    const { buckets, filter } = bucketDataFilter(7, 20n, start);
    expect(buckets).toEqual(['a1', 'b2', 'done']);
    expect(filter).toEqual({ $or: [bucketOpRange(7, 'a1', 4n, 20n), bucketOpRange(7, 'b2', 0n, 20n)] });
    expect(bucketDataFilter(7, 20n, new Map([['done', 20n]])).filter).toBeNull();
    expect(bucketDataFilter(7, 20n, new Map([['x', 1n]])).filter).toEqual(bucketOpRange(7, 'x', 1n, 20n));
  });

  it('checksums: one aggregation over the ranges (checkpoint, last_op] of the buckets that have ops above it', () => {
    const states = [
      { bucket: 'a', lastOp: 12n, checksumSum: long(1), count: long(1) },
      { bucket: 'b', lastOp: 8n, checksumSum: long(1), count: long(1) }
    ];
    expect(checksumsAbovePipeline(1, 10n, states)).toEqual([
      { $match: bucketOpRange(1, 'a', 10n, 12n) },
      { $group: { _id: '$_id.b', checksum_total: { $sum: '$checksum' }, count: { $sum: 1 } } }
    ]);
    expect(checksumsAbovePipeline(1, 12n, states)).toBeNull();
    const both = checksumsAbovePipeline(1, 5n, states)!;
    expect(both[0]).toEqual({ $match: { $or: [bucketOpRange(1, 'a', 5n, 12n), bucketOpRange(1, 'b', 5n, 8n)] } });
  });

  it('parameter sets: newest entry per (lookup, source row) with _id ≤ checkpoint', () => {
    expect(parameterSetsPipeline(3, 99n, ['["by_list",0,"u1"]'])).toEqual([
      { $match: { 'key.g': 3, lookup: { $in: ['["by_list",0,"u1"]'] }, _id: { $lte: long(99) } } },
      { $sort: { _id: -1 } },
      {
        $group: {
          _id: { lookup: '$lookup', t: '$key.t', k: '$key.k' },
          bucket_parameters: { $first: '$bucket_parameters' }
        }
      }
    ]);
  });
});

describe('stored ops as sent to clients', () => {
  const key = '["t1"]';
  it('PUT and REMOVE carry the subkey of the source row, as evaluateRowChange computed it', () => {
    expect(storedSubkey(todos.id, key)).toBe(subkeyOf(todos, key));
    const data = '{"id":"t1"}';
    const put = toOplogEntry({
      _id: { g: 1, b: 'b', o: long(2n ** 62n) },
      op: 'PUT',
      source_table: todos.id,
      source_key: key,
      table: 'todos',
      row_id: 't1',
      checksum: checksumToLong(putChecksum('todos', 't1', data)),
      data,
      target_op: null
    });
    expect(put).toEqual({
      op_id: 2n ** 62n,
      op: 'PUT',
      object_type: 'todos',
      object_id: 't1',
      subkey: subkeyOf(todos, key),
      data,
      checksum: putChecksum('todos', 't1', data)
    });
    const remove = toOplogEntry({
      _id: { g: 1, b: 'b', o: long(3) },
      op: 'REMOVE',
      source_table: todos.id,
      source_key: key,
      table: 'todos',
      row_id: 't1',
      checksum: checksumToLong(removeChecksum(subkeyOf(todos, key))),
      data: null,
      target_op: null
    });
    expect(remove).toMatchObject({
      op: 'REMOVE',
      data: null,
      subkey: put.subkey,
      checksum: removeChecksum(put.subkey!)
    });
  });

  it('MOVE and CLEAR carry only id, checksum and target_op', () => {
    expect(
      toOplogEntry({ _id: { g: 1, b: 'b', o: long(3) }, op: 'MOVE', checksum: long(9), data: null, target_op: long(7) })
    ).toEqual({
      op_id: 3n,
      op: 'MOVE',
      data: null,
      checksum: 9,
      target_op: 7n
    });
    expect(
      toOplogEntry({
        _id: { g: 1, b: 'b', o: long(4) },
        op: 'CLEAR',
        checksum: long(2n ** 32n - 1n),
        data: null,
        target_op: null
      })
    ).toEqual({
      op_id: 4n,
      op: 'CLEAR',
      data: null,
      checksum: 2 ** 32 - 1,
      target_op: null
    });
  });
});

describe('snapshot progress', () => {
  it('replaces the entry of the table (by id) and keeps the others', () => {
    const [stage] = snapshotProgressUpdate({ table: todos, done: false, rowsDone: 20, lastKey: '"t19"' });
    expect(stage).toEqual({
      $set: {
        snapshot_tables: {
          $concatArrays: [
            {
              $filter: {
                input: { $ifNull: ['$snapshot_tables', []] },
                cond: { $ne: ['$$this.table.id', { $literal: '16390' }] }
              }
            },
            [{ $literal: { table: todos, done: false, rows_done: 20, last_key: '"t19"' } }]
          ]
        }
      }
    });
    expect(toSnapshotTableState({ table: todos, done: true, rows_done: 3, last_key: null })).toEqual({
      table: todos,
      done: true,
      rowsDone: 3,
      lastKey: null
    });
  });
});
