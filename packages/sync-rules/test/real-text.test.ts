import Database from 'better-sqlite3';
import fc from 'fast-check';
import { afterAll, describe, expect, test } from 'vitest';
import { sqliteRealToText } from '../src/real-text.js';

const sqlite = new Database(':memory:');
afterAll(() => sqlite.close());
const castToText = sqlite.prepare('SELECT CAST(? AS TEXT)').pluck();

describe('REAL → text as SQLite prints it', () => {
  test.each([
    [2.0, '2.0'],
    [0.1, '0.1'],
    [0.1 + 0.2, '0.30000000000000004'],
    [1 / 3, '0.33333333333333332'],
    [1e16, '10000000000000000.0'],
    [1e17, '1.0e+17'],
    [1e21, '1.0e+21'],
    [1e-5, '1.0e-05'],
    [0.0001, '0.0001'],
    [3.9444318517702714, '3.9444318517702715'],
    [-4118.37122797016, '-4118.3712279701604'],
    [-0, '0.0'],
    [5e-324, '4.9406564584124654e-324'],
    [Infinity, 'Inf'],
    [-Infinity, '-Inf']
  ])('%s → %s', (value, text) => {
    expect(sqliteRealToText(value)).toBe(text);
  });

  test('matches SQLite for 30,000 random doubles', () => {
    fc.assert(
      fc.property(fc.double({ noNaN: true, noDefaultInfinity: true }), (value) => {
        expect(sqliteRealToText(value)).toBe(castToText.get(value));
      }),
      { numRuns: 30_000 }
    );
  });
});
