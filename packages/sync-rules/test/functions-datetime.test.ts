import { describe, expect, test } from 'vitest';
import type { SqliteValue } from '../src/index.js';
import { clock } from '../src/functions/datetime.js';
import { evaluate, valueOf } from './support/evaluate.js';

describe('datetime', () => {
  test.each<[string, SqliteValue]>([
    ["datetime('2023-01-31')", '2023-01-31 00:00:00'],
    ["datetime('2023-01-31 10:20:30.999')", '2023-01-31 10:20:30'],
    ["datetime('2023-01-31T10:20:30.123', 'subsec')", '2023-01-31 10:20:30.123'],
    ["datetime('2023-01-31 10:20+02:00')", '2023-01-31 08:20:00'],
    ["datetime('2023-01-31 10:20:30Z')", '2023-01-31 10:20:30'],
    ["datetime('10:20')", '2000-01-01 10:20:00'],
    ['datetime(2460000.5)', '2023-02-25 00:00:00'],
    ["datetime('2460000.5')", '2023-02-25 00:00:00'],
    ["datetime(1700000000, 'unixepoch')", '2023-11-14 22:13:20'],
    ["datetime(1700000000.25, 'unixepoch', 'subsec')", '2023-11-14 22:13:20.250'],
    ["datetime(1700000000, 'auto')", '2023-11-14 22:13:20'],
    ["datetime(2460000.5, 'auto')", '2023-02-25 00:00:00'],
    ["datetime('2023-01-31', '+1 day')", '2023-02-01 00:00:00'],
    ["datetime('2023-01-31', '+1.5 days')", '2023-02-01 12:00:00'],
    ["datetime('2023-01-31', '-3 hours')", '2023-01-30 21:00:00'],
    ["datetime('2023-01-31', '+90 minutes')", '2023-01-31 01:30:00'],
    ["datetime('2023-01-31', '30 seconds')", '2023-01-31 00:00:30'],
    ["datetime('2023-01-31', '+1 month')", '2023-03-03 00:00:00'], // day rolls over, as in SQLite
    ["datetime('2024-02-29', '+1 year')", '2025-03-01 00:00:00'],
    ["datetime('2023-05-17 10:20', 'start of day')", '2023-05-17 00:00:00'],
    ["datetime('2023-05-17 10:20', 'start of month')", '2023-05-01 00:00:00'],
    ["datetime('2023-05-17 10:20', 'start of year')", '2023-01-01 00:00:00'],
    ["datetime('2023-01-01', 'weekday 3')", '2023-01-04 00:00:00'],
    // invalid input → NULL
    ["datetime('2023-13-01')", null],
    ["datetime('2023-1-01')", null],
    ["datetime(' 2023-01-01')", null],
    ["datetime('abc')", null],
    ["datetime('2023-01-01', 'bogus')", null],
    ["datetime('2023-01-01', '+1day')", null],
    ["datetime('2023-01-01', 'unixepoch')", null],
    ["datetime(1700000000, '+1 day', 'unixepoch')", null],
    ['datetime(NULL)', null],
    ["datetime('2023-01-01', NULL)", null],
    ['datetime(-1)', null]
  ])('%s → %o', (expression, expected) => {
    expect(valueOf(expression)).toEqual(expected);
  });

  test("'now' reads the clock", () => {
    const saved = clock.now;
    clock.now = () => Date.UTC(2024, 5, 1, 12, 0, 0);
    try {
      expect(valueOf("datetime('now')")).toBe('2024-06-01 12:00:00');
      expect(valueOf("unixepoch('now')")).toBe(1717243200n);
    } finally {
      clock.now = saved;
    }
  });
});

describe('unixepoch', () => {
  test.each<[string, string, SqliteValue]>([
    ["unixepoch('2023-01-01')", 'integer', 1672531200n],
    ["unixepoch('2023-01-01 00:00:00.750', 'subsec')", 'real', 1672531200.75],
    ["unixepoch('1969-12-31 23:59:59.5')", 'integer', -1n],
    ['unixepoch(2440587.5)', 'integer', 0n],
    ["unixepoch(1500000000.0, 'unixepoch')", 'integer', 1500000000n],
    ["unixepoch('x')", 'null', null]
  ])('%s → %s %o', (expression, type, value) => {
    expect(evaluate(expression)).toEqual({ type, value });
  });
});
