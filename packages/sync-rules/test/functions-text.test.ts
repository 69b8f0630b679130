import { describe, expect, test } from 'vitest';
import type { SqliteValue } from '../src/index.js';
import { bytes, errorOf, evaluate, valueOf } from './support/evaluate.js';

type Row = [expression: string, expected: SqliteValue, row?: Record<string, unknown>];

const check = (rows: Row[]) =>
  test.each(rows)('%s → %o', (expression, expected, row) => {
    expect(valueOf(expression, row)).toEqual(expected);
  });

describe('upper / lower', () => {
  check([
    ["upper('abc')", 'ABC'],
    ["lower('AbC')", 'abc'],
    ['upper(NULL)', null],
    ['upper(x)', 'ÄSS', { x: 'äß' }], // full Unicode mapping ('unicode-case')
    ['lower(x)', 'ä', { x: 'Ä' }],
    ['upper(12)', '12'],
    ['upper(x)', '3E+60', { x: 3e60 }], // the number's text form, as the reference prints it ('real-to-text')
    ['lower(CAST(x AS BLOB))', 'ab', { x: 'AB' }]
  ]);
});

describe('length', () => {
  check([
    ["length('héllo')", 5n],
    ["length('😀')", 1n], // characters, not UTF-16 units
    ['length(12345)', 5n],
    ['length(x)', 3n, { x: bytes(0, 1, 2) }], // bytes of a blob
    ['length(NULL)', null],
    ["length('')", 0n]
  ]);
});

describe('substring (SQLite substr rules)', () => {
  check([
    ["substring('abcdef', 2)", 'bcdef'],
    ["substring('abcdef', 2, 3)", 'bcd'],
    ["substring('abcdef', 0, 2)", 'a'], // start 0 is one before the first character
    ["substring('abcdef', -2)", 'ef'], // negative start counts from the end
    ["substring('abcdef', -2, -3)", 'bcd'], // negative length takes the characters before
    ["substring('abcdef', 3, -2)", 'ab'],
    ["substring('abcdef', 10)", ''],
    ["substring('abcdef', -10, 3)", ''],
    ["substring('h😀llo', 2, 2)", '😀l'],
    ["substring('abc', NULL)", null],
    ["substring('abc', 1, NULL)", null],
    ['substring(NULL, 1)', null],
    ['substring(12345, 2, 2)', '23'],
    ["substring('abc', '2')", 'bc'],
    ['substring(x, 2, 2)', bytes(2, 3), { x: bytes(1, 2, 3, 4) }], // bytes of a blob
    ['substring(x, -1)', bytes(4), { x: bytes(1, 2, 3, 4) }]
  ]);
  test('substr is the same function', () => {
    expect(valueOf("substr('abcdef', 2, 3)")).toBe('bcd');
  });
});

describe('hex / base64 / uuid_blob', () => {
  check([
    ["hex('Ab')", '4162'],
    ['hex(x)', '00FF', { x: bytes(0, 255) }],
    ['hex(12)', '3132'],
    ['hex(NULL)', ''],
    ["base64('hello')", 'aGVsbG8='],
    ['base64(x)', 'AP8=', { x: bytes(0, 255) }],
    ['base64(NULL)', ''],
    ["hex(uuid_blob('01234567-89ab-cdef-0123-456789ABCDEF'))", '0123456789ABCDEF0123456789ABCDEF'],
    ['uuid_blob(NULL)', null],
    ['length(uuid_blob(x))', 16n, { x: '550e8400-e29b-41d4-a716-446655440000' }]
  ]);
  test('uuid_blob of text that is not a UUID fails the row', () => {
    expect(errorOf("uuid_blob('not-a-uuid')")).toMatch(/uuid_blob\(\): "not-a-uuid" is not a UUID/);
  });
});

describe('instr', () => {
  check([
    ["instr('abcabc', 'ca')", 3n],
    ["instr('abc', 'x')", 0n],
    ["instr('h😀llo', 'l')", 3n],
    ["instr('abc', '')", 1n],
    ['instr(12345, 34)', 3n],
    ["instr(NULL, 'a')", null],
    ["instr('a', NULL)", null],
    ['instr(x, y)', 2n, { x: bytes(1, 2, 3), y: bytes(2, 3) }]
  ]);
});

describe('typeof, ifnull, iif, coalesce, nullif, abs', () => {
  check([
    ['typeof(1)', 'integer'],
    ['typeof(1.5)', 'real'],
    ["typeof('a')", 'text'],
    ['typeof(x)', 'blob', { x: bytes(1) }],
    ['typeof(NULL)', 'null'],
    ['typeof(1 / 2)', 'integer'],
    ['typeof(9223372036854775807 + 1)', 'real'],
    ["typeof(CAST('1.0' AS NUMERIC))", 'integer'],
    ['ifnull(NULL, 2)', 2n],
    ['ifnull(1, 2)', 1n],
    ["iif(1, 'y', 'n')", 'y'],
    ["iif(0, 'y', 'n')", 'n'],
    ["iif(NULL, 'y', 'n')", 'n'],
    ["iif('abc', 'y', 'n')", 'n'],
    ['coalesce(NULL, NULL, 3)', 3n],
    ['coalesce(NULL, NULL)', null],
    ['nullif(1, 1)', null],
    ['nullif(1, 2)', 1n],
    ["nullif(1, '1')", 1n],
    ['abs(-3)', 3n],
    ['abs(-2.5)', 2.5],
    ["abs('-4')", 4.0],
    ['abs(NULL)', null]
  ]);
  test('iif and coalesce do not evaluate arguments they do not need', () => {
    expect(valueOf("iif(1, 'ok', json_extract('not json', '$'))")).toBe('ok');
    expect(valueOf("coalesce(1, json_extract('not json', '$'))")).toBe(1n);
  });
  test('abs of the smallest integer fails the row (integer overflow, as in SQLite)', () => {
    expect(errorOf('abs(-9223372036854775807 - 1)')).toMatch(/integer overflow in abs\(\)/);
  });
});

describe('casts', () => {
  test.each([
    ["CAST('12abc' AS INTEGER)", 'integer', 12n],
    ["CAST('1e5' AS INTEGER)", 'integer', 1n],
    ["CAST('abc' AS INTEGER)", 'integer', 0n],
    ["CAST('99999999999999999999' AS INTEGER)", 'integer', 9223372036854775807n],
    ['CAST(1.9 AS INTEGER)', 'integer', 1n],
    ['CAST(-1.9 AS INTEGER)', 'integer', -1n],
    ["CAST(' 1.5e2x' AS REAL)", 'real', 150],
    ["CAST('1.0' AS NUMERIC)", 'integer', 1n],
    ["CAST('1.5' AS NUMERIC)", 'real', 1.5],
    ["CAST('12abc' AS NUMERIC)", 'integer', 12n],
    ["CAST('9223372036854775808' AS NUMERIC)", 'real', 9223372036854775808],
    ['CAST(1.0 AS NUMERIC)', 'real', 1],
    ['CAST(2.0 AS TEXT)', 'text', '2'], // reference printing ('real-to-text')
    ['CAST(0.1 + 0.2 AS TEXT)', 'text', '0.30000000000000004'],
    ['CAST(5 AS TEXT)', 'text', '5'],
    ["CAST('ab' AS BLOB)", 'blob', bytes(0x61, 0x62)],
    ['CAST(12 AS BLOB)', 'blob', bytes(0x31, 0x32)],
    ['CAST(NULL AS TEXT)', 'null', null]
  ])('%s → %s %o', (expression, type, value) => {
    expect(evaluate(expression)).toEqual({ type, value });
  });
});

describe('operators', () => {
  check([
    ["'a' || 1 || 1.5", 'a11.5'],
    ["'a' || NULL", null],
    ['7 / 2', 3n],
    ['-7 / 2', -3n],
    ['7 / 2.0', 3.5],
    ['1 / 0', null],
    ['1.5 / 0', null],
    ['7 % 3', 1n],
    ['5.5 % 2', 1],
    ['1 % 0', null],
    ['9223372036854775807 + 1', 9223372036854775808],
    ['9223372036854775807 * 2', 18446744073709551616],
    ["'3' + 4", 7n],
    ["'3.5' + 1", 4.5],
    ["'abc' + 1", 1n],
    ["5 = '5'", 0n], // no affinity between plain values
    ['CAST(5 AS TEXT) = 5', 1n], // TEXT affinity of the CAST applies to the other side
    ["CAST('5' AS INTEGER) = '5'", 1n], // NUMERIC affinity likewise
    ["1 < 'a'", 1n], // numbers sort before text
    ["'a' < x", 1n, { x: new Uint8Array([0]) }], // text before blob
    ['NULL = NULL', null],
    ['NULL IS NULL', 1n],
    ['1 IS NOT NULL', 1n],
    ['1 = 1.0', 1n],
    ['2 IN (1, 2)', 1n],
    ['3 IN (1, 2)', 0n],
    ['3 IN (1, NULL)', null],
    ['3 NOT IN (1, 2)', 1n],
    ['3 NOT IN (1, NULL)', null],
    ['CAST(1 AS TEXT) IN (1, 2)', 1n],
    ['NULL AND 0', 0n],
    ['NULL AND 1', null],
    ['NULL OR 1', 1n],
    ['NULL OR 0', null],
    ['NOT NULL', null],
    ["NOT 'abc'", 1n],
    ["'{\"a\":[1,2]}' -> 'a'", '[1,2]'],
    ["'{\"a\":[1,2]}' ->> '$.a[1]'", 2n],
    ["'[1,2,3]' -> '$[#-1]'", '3']
  ]);
});
