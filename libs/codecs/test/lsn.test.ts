import { describe, expect, it } from 'vitest';
import { compareLsn, lsnFromBigint, lsnToBigint, normalizeLsn } from '../src/index.js';

describe('LSN', () => {
  it('normalises to zero-padded upper-case halves', () => {
    expect(normalizeLsn('16/b374d848')).toBe('00000016/B374D848');
    expect(normalizeLsn('0/0')).toBe('00000000/00000000');
  });
  it('rejects malformed text', () => {
    for (const bad of ['', '1', '1/', '/1', '123456789/0', 'G/0', '1/2/3']) {
      expect(() => normalizeLsn(bad)).toThrow(/Invalid LSN/);
    }
  });
  it('orders numerically, not by text length', () => {
    expect(compareLsn('9/0', '10/0')).toBe(-1);
    expect(compareLsn('0/FFFFFFFF', '1/0')).toBe(-1);
    expect(compareLsn('1/A', '1/a')).toBe(0);
  });
  it('round-trips through bigint', () => {
    expect(lsnFromBigint(lsnToBigint('16/B374D848'))).toBe('00000016/B374D848');
  });
});
