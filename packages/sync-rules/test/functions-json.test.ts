import { describe, expect, test } from 'vitest';
import { jsonEachRows } from '../src/expression.js';
import { parseJson, type SqliteValue } from '../src/index.js';
import { withSqliteSemantics } from '../src/reference-deviations.js';
import { errorOf, evaluate, valueOf } from './support/evaluate.js';

const doc = '{"a":{"b":[1,9007199254740993,2.5,42.0]},"s":"text","t":true,"n":null}';

describe('json_extract, -> and ->>', () => {
  test.each<[string, SqliteValue]>([
    ["json_extract(d, '$.a.b[1]')", 9007199254740993n],
    ["json_extract(d, '$.a.b[#-1]')", 42],
    ["json_extract(d, '$.s')", 'text'],
    ["json_extract(d, '$.t')", 1n],
    ["json_extract(d, '$.a')", '{"b":[1,9007199254740993,2.5,42.0]}'],
    ["json_extract(d, '$.missing')", null],
    ["json_extract(d, '$.s', '$.t')", '["text",true]'],
    ["json_extract(NULL, '$')", null],
    ["d -> 'a'", '{"b":[1,9007199254740993,2.5,42.0]}'],
    ["d -> '$.a.b'", '[1,9007199254740993,2.5,42.0]'], // 42.0 kept ('json-reprinted')
    ["d ->> 's'", 'text'],
    ["d -> 's'", '"text"'],
    ["d ->> '$.a.b[2]'", 2.5],
    ["d -> 'missing'", null],
    ["d -> 'n'", 'null'],
    // JSON null: the reference's text 'null' ('json-null-extract')
    ["json_extract(d, '$.n')", 'null'],
    ["d ->> 'n'", 'null']
  ])('%s → %o', (expression, expected) => {
    expect(valueOf(expression, { d: doc })).toEqual(expected);
  });

  test('with SQLite semantics a JSON null extracts as SQL NULL', () => {
    withSqliteSemantics(() => {
      expect(valueOf("json_extract(d, '$.n')", { d: doc })).toBeNull();
      expect(valueOf("d ->> 'n'", { d: doc })).toBeNull();
    });
  });

  test('malformed JSON or a bad path fails the row, naming the problem', () => {
    expect(errorOf("json_extract(d, '$.a')", { d: '{"a":' })).toMatch(/malformed JSON/);
    expect(errorOf("json_extract(d, 'a')", { d: doc })).toMatch(/bad JSON path/);
    expect(errorOf("d ->> 'a'", { d: new Uint8Array([0xff]) })).toMatch(/blob is not valid JSON/);
  });

  test('a REAL read from JSON keeps its type and prints as the reference prints it', () => {
    expect(evaluate("'{\"x\":123.0}' ->> 'x'")).toEqual({ type: 'real', value: 123 });
    expect(valueOf("'{\"x\":[123.0]}' -> 'x'")).toBe('[123.0]');
  });
});

describe('json_array_length, json_valid, json_keys', () => {
  test.each<[string, SqliteValue]>([
    ["json_array_length('[1,2,3]')", 3n],
    ["json_array_length('{}')", 0n],
    ["json_array_length('{\"a\":[1,2]}', '$.a')", 2n],
    ["json_array_length('{\"a\":[1,2]}', '$.x')", null],
    ['json_array_length(NULL)', null],
    ['json_valid(\'{"a":1}\')', 1n],
    ["json_valid('{a:1}')", 0n],
    ["json_valid('')", 0n],
    ['json_valid(5)', 1n],
    ['json_valid(NULL)', 0n], // SQLite: NULL ('json-valid-null')
    ['json_keys(\'{"b":1,"a":2}\')', '["b","a"]'],
    ['json_keys(NULL)', null]
  ])('%s → %o', (expression, expected) => {
    expect(valueOf(expression)).toEqual(expected);
  });

  test('json_keys of an array or scalar fails the row', () => {
    expect(errorOf("json_keys('[1]')")).toMatch(/json_keys\(\) needs a JSON object, got an array/);
    expect(errorOf("json_keys('1')")).toMatch(/got a scalar/);
  });
});

describe('json_each rows', () => {
  test('array elements with index keys, JSON null elements included as the text null', () => {
    expect(jsonEachRows(parseJson('[1,"a",null,[2]]'))).toEqual([
      { key: 0n, value: 1n, type: 'integer' },
      { key: 1n, value: 'a', type: 'text' },
      { key: 2n, value: 'null', type: 'null' },
      { key: 3n, value: '[2]', type: 'array' }
    ]);
  });
  test('object members with name keys; a scalar gives one row with key NULL; nothing for NULL', () => {
    expect(jsonEachRows(parseJson('{"x":1.5,"y":true}'))).toEqual([
      { key: 'x', value: 1.5, type: 'real' },
      { key: 'y', value: 1n, type: 'true' }
    ]);
    expect(jsonEachRows(parseJson('"s"'))).toEqual([{ key: null, value: 's', type: 'text' }]);
    expect(jsonEachRows(undefined)).toEqual([]);
  });
  test('with SQLite semantics a null element has the value NULL', () => {
    withSqliteSemantics(() => expect(jsonEachRows(parseJson('[null]'))[0]!.value).toBeNull());
  });
});
