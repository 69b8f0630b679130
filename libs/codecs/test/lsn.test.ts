import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  compareLsn,
  CorruptStoredValueError,
  decodeLsn,
  encodeLsn,
  lsnDistance,
  lsnFromBigint,
  lsnToBigint,
  MAX_LSN_VALUE,
  normalizeLsn
} from '../src/index.js';

/** How Postgres prints a pg_lsn: upper-case hex halves without padding (`16/B374D848`). */
const postgresText = (value: bigint) =>
  `${(value >> 32n).toString(16).toUpperCase()}/${(value & 0xffffffffn).toString(16).toUpperCase()}`;

describe('LSN', () => {
  it('normalises to zero-padded upper-case halves', () => {
    expect(normalizeLsn('16/b374d848')).toBe('00000016/B374D848');
    expect(normalizeLsn('0/0')).toBe('00000000/00000000');
  });
  it('rejects malformed pg_lsn text with a typed error', () => {
    for (const bad of ['', '1', '1/', '/1', '123456789/0', 'G/0', '1/2/3', ' 1/2']) {
      expect(() => normalizeLsn(bad)).toThrow(CorruptStoredValueError);
      expect(() => normalizeLsn(bad)).toThrow(/Invalid LSN/);
      expect(decodeLsn(bad).ok).toBe(false);
      expect(() => encodeLsn(bad)).toThrow(RangeError);
    }
    expect(decodeLsn(42)).toEqual({ ok: false, message: expect.stringContaining('Expected an LSN') as unknown });
  });
  it('orders numerically, not by text length', () => {
    expect(compareLsn('9/0', '10/0')).toBe(-1);
    expect(compareLsn('0/FFFFFFFF', '1/0')).toBe(-1);
    expect(compareLsn('1/A', '1/a')).toBe(0);
    expect(lsnDistance('1/0', '1/10')).toBe(16n);
    expect(lsnDistance('1/10', '1/0')).toBe(0n);
  });
  it('round-trips every position through pg_lsn text, JSON and uint64', () => {
    fc.assert(
      fc.property(fc.bigInt({ min: 0n, max: MAX_LSN_VALUE }), (value) => {
        const lsn = lsnFromBigint(value);
        expect(lsnToBigint(normalizeLsn(postgresText(value)))).toBe(value);
        expect(normalizeLsn(postgresText(value))).toBe(lsn);
        expect(normalizeLsn(postgresText(value).toLowerCase())).toBe(lsn);
        expect(decodeLsn(JSON.parse(JSON.stringify(encodeLsn(lsn)))).ok && lsnToBigint(encodeLsn(lsn))).toBe(value);
      })
    );
  });
  it('normalised text sorts like the positions', () => {
    fc.assert(
      fc.property(fc.bigInt({ min: 0n, max: MAX_LSN_VALUE }), fc.bigInt({ min: 0n, max: MAX_LSN_VALUE }), (a, b) => {
        const byText = lsnFromBigint(a) < lsnFromBigint(b) ? -1 : lsnFromBigint(a) > lsnFromBigint(b) ? 1 : 0;
        expect(byText).toBe(a < b ? -1 : a > b ? 1 : 0);
        expect(compareLsn(postgresText(a), postgresText(b))).toBe(byText);
      })
    );
  });
  it('refuses positions outside uint64', () => {
    expect(() => lsnFromBigint(-1n)).toThrow(RangeError);
    expect(() => lsnFromBigint(MAX_LSN_VALUE + 1n)).toThrow(RangeError);
    expect(lsnFromBigint(MAX_LSN_VALUE)).toBe('FFFFFFFF/FFFFFFFF');
  });
});
