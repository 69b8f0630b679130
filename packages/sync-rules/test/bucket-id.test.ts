import { describe, expect, test } from 'vitest';
import { formatBucketId, type BucketParameterValue } from '../src/index.js';

describe('bucket ids (PROTOCOL §11)', () => {
  test.each<[string, BucketParameterValue[], string]>([
    ['global', [], 'global[]'],
    ['by_org', ['o1'], 'by_org["o1"]'],
    ['by_pair', ['a', 1n], 'by_pair["a",1]'],
    ['by_pair', ['a', 1], 'by_pair["a",1]'],
    ['by_pair', ['a', 1.0], 'by_pair["a",1]'],
    ['n', [1.5], 'n[1.5]'],
    ['n', [-0.25], 'n[-0.25]'],
    ['n', [9223372036854775807n], 'n[9223372036854775807]'],
    ['n', [-9223372036854775808n], 'n[-9223372036854775808]'],
    ['n', [1e21], 'n[1000000000000000000000]'],
    ['n', [-0], 'n[0]'],
    ['s', ['quote " and \\ backslash'], 's["quote \\" and \\\\ backslash"]'],
    ['s', ['ünïcødé ✓'], 's["ünïcødé ✓"]'],
    ['s', ['line\nbreak'], 's["line\\nbreak"]'],
    ['s', ['1'], 's["1"]']
  ])('%s %o → %s', (name, values, id) => {
    expect(formatBucketId(name, values)).toBe(id);
  });

  test('the same number as INTEGER or REAL gives the same id', () => {
    for (const value of [0, 1, -1, 2 ** 53, 2 ** 60, -(2 ** 63)]) {
      expect(formatBucketId('b', [value])).toBe(formatBucketId('b', [BigInt(value)]));
    }
  });
});
