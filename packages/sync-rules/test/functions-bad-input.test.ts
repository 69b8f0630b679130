import { describe, expect, test } from 'vitest';
import { stringify } from 'yaml';
import { parseSyncRules } from '../src/index.js';
import { withSqliteSemantics } from '../src/reference-deviations.js';
import { loadErrors, valueOf } from './support/evaluate.js';

describe('functions that cannot work are refused when the rules load', () => {
  test('unknown function, naming it and the position', () => {
    const [message] = loadErrors('frobnicate(id)');
    expect(message).toMatch(/data\[0\] at line 1, column 12: Unknown or unsupported function frobnicate\(\)/);
  });
  test.each([
    ['upper(id, id)', /upper\(\) takes 1 argument, got 2/],
    ['instr(id)', /instr\(\) takes 2 arguments, got 1/],
    ['json_array_length(id, id, id)', /json_array_length\(\) takes 1 to 2 arguments, got 3/],
    ['iif(id, 1)', /iif\(\) takes 3 arguments, got 2/],
    ['coalesce(id)', /coalesce\(\) takes at least 2 arguments, got 1/],
    ['ST_AsText()', /st_astext\(\) takes 1 argument, got 0/],
    ['datetime()', /datetime\(\) takes at least 1 argument, got 0/]
  ])('wrong argument count: %s', (expression, reason) => {
    const [message] = loadErrors(expression);
    expect(message).toMatch(reason);
    expect(message).toMatch(/bucket_definitions\.all\.data\[0\] at line 1, column 12/);
  });
});

describe('a value a function cannot take fails that row for that query only', () => {
  const rules = parseSyncRules(
    stringify({
      bucket_definitions: {
        extracted: { data: ["SELECT id, json_extract(doc, '$.a') AS a FROM t"] },
        plain: { data: ['SELECT id FROM t'] }
      }
    })
  );
  if (!rules.ok) throw new Error(rules.errors[0]!.message);

  test('malformed JSON: an error for one query, the other still gets the row, nothing thrown', () => {
    const result = rules.rules.evaluateRow({ table: 't', row: { id: 'r1', doc: '{"a":' } });
    expect(result.buckets.map((bucket) => bucket.bucket)).toEqual(['plain[]']);
    expect(result.errors).toHaveLength(1);
    expect(result.errors[0]).toMatchObject({ bucketDefinition: 'extracted', queryKind: 'data', queryIndex: 0 });
    expect(result.errors[0]!.message).toMatch(/malformed JSON/);
  });

  test('non-UTF-8 and binary values go through every function without a crash', () => {
    const garbage = new Uint8Array([0xff, 0xfe, 0x00, 0xc3, 0x28, 0x80]);
    for (const expression of [
      'upper(x)',
      'length(x)',
      'substring(x, 2)',
      'hex(x)',
      'base64(x)',
      "instr(x, 'a')",
      "x || 'a'",
      'CAST(x AS INTEGER)',
      'CAST(x AS NUMERIC)',
      'json_valid(x)',
      'datetime(x)',
      'x = 1'
    ]) {
      expect(() => valueOf(expression, { x: garbage })).not.toThrow();
    }
    expect(valueOf('length(x)', { x: garbage })).toBe(6n);
    // Invalid UTF-8 in a blob decodes with U+FFFD, never an exception.
    expect(valueOf('CAST(x AS TEXT)', { x: new Uint8Array([0x61, 0xff]) })).toBe('a\ufffd');
  });
});

describe("NOT over a column the row does not have ('not-missing-column')", () => {
  const rules = parseSyncRules(
    stringify({ bucket_definitions: { live: { data: ['SELECT id FROM todos WHERE NOT archived'] } } })
  );
  if (!rules.ok) throw new Error(rules.errors[0]!.message);
  const synced = (row: Record<string, unknown>) => rules.rules.evaluateRow({ table: 'todos', row }).buckets.length;

  test('a missing column counts as false, so the row is synced', () => {
    expect(synced({ id: '1' })).toBe(1);
  });
  test('present values follow SQLite: 0 syncs, 1 and NULL do not', () => {
    expect(synced({ id: '1', archived: 0n })).toBe(1);
    expect(synced({ id: '1', archived: 1n })).toBe(0);
    expect(synced({ id: '1', archived: null })).toBe(0);
  });
  test('with SQLite semantics the missing column is NULL and the row is not synced', () => {
    expect(withSqliteSemantics(() => synced({ id: '1' }))).toBe(0);
  });
});
