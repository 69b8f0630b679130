import { BSON, Long } from 'bson';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  addChecksums,
  checksum,
  checksumFromSum,
  CHECKSUM_MODULUS,
  CorruptStoredValueError,
  MAX_CHECKSUM,
  subtractChecksums,
  toSignedChecksum,
  toUnsignedChecksum
} from '../src/index.js';

const u32 = fc.integer({ min: 0, max: MAX_CHECKSUM });

describe('checksum arithmetic (PROTOCOL §7.5)', () => {
  it('adds and subtracts modulo 2^32, like bigint arithmetic', () => {
    fc.assert(
      fc.property(u32, u32, (a, b) => {
        expect(addChecksums(a, b)).toBe(Number((BigInt(a) + BigInt(b)) % CHECKSUM_MODULUS));
        expect(subtractChecksums(addChecksums(a, b), b)).toBe(a);
        expect(subtractChecksums(a, b)).toBe(checksumFromSum(BigInt(a) - BigInt(b)));
      })
    );
  });

  it('reduces any stored sum (also negative or beyond 2^32) to a u32', () => {
    fc.assert(
      fc.property(fc.array(u32), (values) => {
        const sum = values.reduce((total, value) => total + BigInt(value), 0n);
        expect(checksumFromSum(sum)).toBe(values.reduce(addChecksums, 0));
        expect(checksumFromSum(-sum)).toBe(subtractChecksums(0, values.reduce(addChecksums, 0)));
      })
    );
    expect(addChecksums(0xffffffff, 2)).toBe(1);
  });

  it('converts between the signed and unsigned forms', () => {
    expect(toSignedChecksum(0xffffffff)).toBe(-1);
    expect(toSignedChecksum(0x80000000)).toBe(-(2 ** 31));
    expect(toUnsignedChecksum(-1)).toBe(0xffffffff);
    fc.assert(
      fc.property(u32, (value) => {
        expect(toUnsignedChecksum(toSignedChecksum(value))).toBe(value);
      })
    );
  });
});

describe('checksum boundaries', () => {
  it('round-trips op and bucket checksums through JSON, NDJSON and BSON lines', () => {
    fc.assert(
      fc.property(u32, (value) => {
        const line = { op: checksum.encodeOp(value), bucket: checksum.encodeBucket(value) };
        const json = JSON.parse(JSON.stringify(line) + '\n') as typeof line;
        // The bson package writes an integer number as Int32 when it fits, else as a whole Double.
        const bson = BSON.deserialize(BSON.serialize(line));
        const asInt64 = BSON.deserialize(BSON.serialize({ op: BigInt(value) }), { promoteLongs: false });
        for (const encoded of [json.op, json.bucket, bson.op, bson.bucket, asInt64.op]) {
          expect(checksum.decode(encoded)).toEqual({ ok: true, value });
        }
        expect(line.bucket).toBeGreaterThanOrEqual(-(2 ** 31));
        expect(line.bucket).toBeLessThan(2 ** 31);
      })
    );
  });

  it('round-trips through Postgres int8 and MongoDB Long', () => {
    fc.assert(
      fc.property(u32, (value) => {
        expect(checksum.fromPgInt8(checksum.toPgInt8(value))).toBe(value);
        expect(checksum.fromPgInt8(BigInt(value))).toBe(value);
        const long = checksum.toLong(value, Long);
        expect(long.toBigInt()).toBe(BigInt(value)); // the unsigned value, never a negative Int64
        expect(checksum.fromLong(long)).toBe(value);
        expect(checksum.fromLong({ high: long.high, low: long.low, unsigned: false })).toBe(value);
      })
    );
  });

  it('rejects values outside 32 bits with the message', () => {
    for (const bad of [2 ** 32, -(2 ** 31) - 1, 1.5, '1', null, Long.fromBigInt(2n ** 40n)]) {
      expect(checksum.decode(bad)).toEqual({
        ok: false,
        message: 'Expected a checksum: an integer between -2147483648 and 4294967295'
      });
    }
    for (const bad of [-1, 2 ** 32, 0.5]) {
      expect(() => checksum.encodeOp(bad)).toThrow(RangeError);
      expect(() => checksum.toLong(bad, Long)).toThrow(/unsigned 32-bit checksum/);
    }
    expect(() => checksum.fromPgInt8('4294967296')).toThrow(CorruptStoredValueError);
    expect(() => checksum.fromPgInt8(-1n)).toThrow('Corrupt checksum read from postgres int8');
    expect(() => checksum.fromLong(Long.fromInt(-1))).toThrow('Corrupt checksum read from mongodb Long');
  });
});
