/**
 * Every id codec through every boundary it crosses: round trips (property tests), the bounds exact at both ends,
 * and out-of-range values rejected with the codec's message (untrusted input) or a typed error (storage).
 */
import { BSON, Long } from 'bson';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  checkpointRequestId,
  CorruptStoredValueError,
  int64,
  INT64_MAX,
  INT64_MIN,
  opId,
  writeCheckpoint,
  type BoundedBigintCodec
} from '../src/index.js';

const codecs: BoundedBigintCodec[] = [int64, opId, checkpointRequestId, writeCheckpoint];
const inRange = (codec: BoundedBigintCodec) => fc.bigInt({ min: codec.min, max: codec.max });
/** Values just outside the range and far outside it (up to 2^70, beyond any int64). */
const outOfRange = (codec: BoundedBigintCodec) =>
  fc.oneof(
    fc.bigInt({ min: -(2n ** 70n), max: codec.min - 1n }),
    fc.bigInt({ min: codec.max + 1n, max: 2n ** 70n }),
    fc.constantFrom(codec.min - 1n, codec.max + 1n)
  );
/** A value as the `bson` package's `Long` keeps it: two signed int32 halves and a flag, no methods needed. */
const longShape = (value: bigint) => {
  const long = Long.fromBigInt(value);
  return { high: long.high, low: long.low, unsigned: long.unsigned };
};

/** Round trips of one value through each boundary; returns what each decoder gave back. */
function throughEveryBoundary(codec: BoundedBigintCodec, value: bigint): Record<string, bigint> {
  const decoded = (result: ReturnType<BoundedBigintCodec['decode']>) => {
    if (!result.ok) throw new Error(result.message);
    return result.value;
  };
  const json = JSON.parse(JSON.stringify({ id: codec.encode(value) })) as { id: unknown };
  const ndjsonLine = JSON.stringify({ checkpoint_complete: { last_op_id: codec.encode(value) } }) + '\n';
  const ndjson = JSON.parse(ndjsonLine.split('\n')[0]!) as { checkpoint_complete: { last_op_id: unknown } };
  const bson = BSON.deserialize(BSON.serialize({ id: codec.encodeBson(value) }));
  // Int64 in a BSON document (what a client could send): read back as Long, as bigint, and promoted to a number.
  const bsonInt64 = BSON.deserialize(BSON.serialize({ id: value }), { promoteLongs: false });
  const bsonBigint = BSON.deserialize(BSON.serialize({ id: value }), { useBigInt64: true });
  return {
    json: decoded(codec.decode(json.id)),
    ndjson: decoded(codec.decode(ndjson.checkpoint_complete.last_op_id)),
    bson: decoded(codec.decodeBson(bson.id)),
    bsonInt64: decoded(codec.decodeBson(bsonInt64.id)),
    bsonBigint: decoded(codec.decodeBson(bsonBigint.id)),
    pgInt8Text: codec.fromPgInt8(codec.toPgInt8(value)),
    pgInt8Parsed: codec.fromPgInt8(BigInt(codec.toPgInt8(value))),
    mongoLong: codec.fromLong(codec.toLong(value, Long)),
    mongoLongShape: codec.fromLong(longShape(value)),
    mongoToBigInt: codec.fromLong({ toBigInt: () => value })
  };
}

describe.each(codecs.map((codec) => [codec.name, codec] as const))('%s codec', (_name, codec) => {
  it('round-trips every in-range value through every boundary', () => {
    fc.assert(
      fc.property(inRange(codec), (value) => {
        for (const result of Object.values(throughEveryBoundary(codec, value))) expect(result).toBe(value);
      })
    );
  });

  it('keeps both bounds exact through every boundary', () => {
    for (const bound of [codec.min, codec.max]) {
      expect(throughEveryBoundary(codec, bound)).toEqual(
        Object.fromEntries(Object.keys(throughEveryBoundary(codec, bound)).map((key) => [key, bound]))
      );
    }
  });

  it('rejects out-of-range values at every boundary, with the range in the message', () => {
    const rangeMessage = `Expected ${codec.name} between ${codec.min} and ${codec.max}`;
    fc.assert(
      fc.property(outOfRange(codec), (value) => {
        for (const result of [
          codec.decode(value.toString()),
          codec.decode(value),
          codec.decodeBson(value.toString())
        ]) {
          expect(result).toEqual({ ok: false, message: expect.stringContaining(rangeMessage) as unknown });
        }
        expect(() => codec.encode(value)).toThrow(rangeMessage);
        expect(() => codec.encodeBson(value)).toThrow(rangeMessage);
        expect(() => codec.toPgInt8(value)).toThrow(rangeMessage);
        expect(() => codec.toLong(value, Long)).toThrow(rangeMessage);
        expect(() => codec.fromPgInt8(value.toString())).toThrow(CorruptStoredValueError);
        expect(() => codec.fromPgInt8(value)).toThrow(`Corrupt ${codec.name} read from postgres int8`);
        if (value >= INT64_MIN && value <= INT64_MAX) {
          // Only an int64 fits in a Long; a stored one outside a narrower range is corruption.
          expect(() => codec.fromLong(Long.fromBigInt(value))).toThrow(`Corrupt ${codec.name} read from mongodb Long`);
          expect(codec.decodeBson(Long.fromBigInt(value)).ok).toBe(false);
        }
      })
    );
  });
});

describe('int64 and op id specifics', () => {
  it('2^63−1 is exact everywhere, 2^63 is rejected everywhere', () => {
    expect(int64.decode('9223372036854775807')).toEqual({ ok: true, value: INT64_MAX });
    expect(int64.fromPgInt8('9223372036854775807')).toBe(INT64_MAX);
    expect(int64.fromLong(Long.MAX_VALUE)).toBe(INT64_MAX);
    expect(int64.toLong(INT64_MAX, Long).equals(Long.MAX_VALUE)).toBe(true);
    expect(int64.decode('9223372036854775808').ok).toBe(false);
    expect(() => int64.fromPgInt8('9223372036854775808')).toThrow(CorruptStoredValueError);
  });

  it('−2^63 is exact where signed', () => {
    expect(int64.decode('-9223372036854775808')).toEqual({ ok: true, value: INT64_MIN });
    expect(int64.fromPgInt8('-9223372036854775808')).toBe(INT64_MIN);
    expect(int64.fromLong(Long.MIN_VALUE)).toBe(INT64_MIN);
    expect(int64.fromLong({ high: -0x80000000, low: 0, unsigned: false })).toBe(INT64_MIN);
    expect(int64.toLong(INT64_MIN, Long).equals(Long.MIN_VALUE)).toBe(true);
  });

  it('negative op ids are rejected at every boundary', () => {
    expect(opId.decode('-1')).toEqual({ ok: false, message: 'Expected op_id between 0 and 9223372036854775807' });
    expect(opId.decode(-1).ok).toBe(false);
    expect(opId.decodeBson(Long.fromInt(-1)).ok).toBe(false);
    expect(() => opId.fromPgInt8('-1')).toThrow('Corrupt op_id read from postgres int8: -1 is not between 0 and');
    expect(() => opId.fromLong(Long.fromInt(-1))).toThrow(CorruptStoredValueError);
    expect(() => opId.toLong(-1n, Long)).toThrow(RangeError);
  });

  it('an unsigned Long reads as its unsigned value (beyond int64 for an op id: corrupt)', () => {
    const unsigned = Long.fromBigInt(2n ** 64n - 1n, true);
    expect(() => opId.fromLong(unsigned)).toThrow(CorruptStoredValueError);
    expect(() => opId.fromLong({ high: unsigned.high, low: unsigned.low, unsigned: true })).toThrow(/is not between/);
    expect(int64.fromLong({ high: -1, low: -1, unsigned: false })).toBe(-1n);
  });

  it('rejects stored values that are not integers, naming the boundary', () => {
    for (const bad of ['', '1.5', '1e3', ' 1', '0x10', '042', 'abc', '-0']) {
      expect(() => opId.fromPgInt8(bad)).toThrow(/^Corrupt op_id read from postgres int8: not an integer/);
    }
    for (const bad of [null, undefined, 1.5, Number.NaN, 2 ** 53, '1', {}, { high: 1 }, { toBigInt: () => 1 }]) {
      expect(() => opId.fromLong(bad)).toThrow(/^Corrupt op_id read from mongodb Long: not an integer/);
    }
  });

  it('reads Int32 and whole Double numbers from older Mongo data', () => {
    expect(opId.fromLong(42)).toBe(42n);
    expect(writeCheckpoint.fromLong(Number.MAX_SAFE_INTEGER)).toBe(9007199254740991n);
  });

  it('untrusted BSON values: Int32/Double numbers as JSON numbers, strings canonical', () => {
    const doc = BSON.deserialize(BSON.serialize({ int32: 7, double: 2 ** 40, fraction: 1.5, text: '007' }));
    expect(opId.decodeBson(doc.int32)).toEqual({ ok: true, value: 7n });
    expect(opId.decodeBson(doc.double)).toEqual({ ok: true, value: 2n ** 40n });
    expect(opId.decodeBson(doc.fraction).ok).toBe(false);
    expect(opId.decodeBson(doc.text).ok).toBe(false);
    expect(opId.decodeBson({ high: 'x', low: 0 }).ok).toBe(false);
  });
});
