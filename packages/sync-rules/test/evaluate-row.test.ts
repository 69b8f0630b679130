import { describe, expect, test } from 'vitest';
import { parseJson, type JsonValue } from '../src/index.js';
import { definition, loadRules } from './helpers.js';

const USER = 'SELECT request.user_id() AS user_id';

describe('evaluateRow: rows to bucket rows', () => {
  test('SELECT * keeps int8 precision and prints bigints as JSON integers', () => {
    const rules = loadRules(definition('global', { data: ['SELECT * FROM lists'] }));
    const result = rules.evaluateRow({
      table: 'lists',
      row: {
        id: 9223372036854775807n,
        big: -9223372036854775808n,
        unsafe: 9007199254740993n,
        real: 1.5,
        whole: 2.0,
        text: 'x"y',
        nothing: null
      }
    });
    expect(result).toEqual({
      buckets: [
        {
          bucket: 'global[]',
          table: 'lists',
          id: '9223372036854775807',
          data: '{"id":9223372036854775807,"big":-9223372036854775808,"unsafe":9007199254740993,"real":1.5,"whole":2.0,"text":"x\\"y","nothing":null}'
        }
      ],
      errors: []
    });
  });

  test('blob columns are left out of the JSON (it cannot carry them)', () => {
    const rules = loadRules(definition('global', { data: ['SELECT * FROM files'] }));
    expect(
      rules.evaluateRow({ table: 'files', row: { id: 'f1', content: new Uint8Array([1, 2]) } }).buckets[0]!.data
    ).toBe('{"id":"f1"}');
  });

  test.each([
    ['text id', { id: 'abc' }, 'abc'],
    ['integer id', { id: 42n }, '42'],
    ['real id', { id: 1.5 }, '1.5'],
    ['missing id', { name: 'x' }, ''],
    ['null id', { id: null }, '']
  ])('object id from %s', (_name, row, id) => {
    const rules = loadRules(definition('global', { data: ['SELECT * FROM t'] }));
    expect(rules.evaluateRow({ table: 't', row }).buckets[0]!.id).toBe(id);
  });

  test('renamed columns, table alias and schema', () => {
    const rules = loadRules(
      definition('mine', {
        parameters: USER,
        data: ['SELECT items.id, name AS title, owner FROM app.todos AS items WHERE items.owner = bucket.user_id']
      })
    );
    const row = { id: 't1', name: 'Buy milk', owner: 'u1', secret: 's' };
    expect(rules.evaluateRow({ schema: 'app', table: 'todos', row })).toEqual({
      buckets: [
        { bucket: 'mine["u1"]', table: 'items', id: 't1', data: '{"id":"t1","title":"Buy milk","owner":"u1"}' }
      ],
      errors: []
    });
    expect(rules.evaluateRow({ table: 'todos', row }).buckets).toEqual([]); // schema public does not match app
    expect(rules.evaluateRow({ schema: 'app', table: 'other', row }).buckets).toEqual([]);
  });

  test('a row lands in every definition and data query that matches', () => {
    const rules = loadRules(`
bucket_definitions:
  global:
    data:
      - SELECT * FROM lists
  user_lists:
    parameters: SELECT request.user_id() AS user_id
    data:
      - SELECT * FROM lists WHERE owner_id = bucket.user_id
      - SELECT id, 'shared' AS kind FROM lists WHERE bucket.user_id IN shared_with
`);
    const result = rules.evaluateRow({
      table: 'lists',
      row: { id: 'l1', owner_id: 'u1', shared_with: '["u2","u1","u3"]' }
    });
    expect(result.buckets.map(({ bucket, data }) => `${bucket} ${data}`)).toEqual([
      'global[] {"id":"l1","owner_id":"u1","shared_with":"[\\"u2\\",\\"u1\\",\\"u3\\"]"}',
      'user_lists["u1"] {"id":"l1","owner_id":"u1","shared_with":"[\\"u2\\",\\"u1\\",\\"u3\\"]"}',
      'user_lists["u2"] {"id":"l1","kind":"shared"}',
      'user_lists["u1"] {"id":"l1","kind":"shared"}',
      'user_lists["u3"] {"id":"l1","kind":"shared"}'
    ]);
  });

  test.each([
    ['JSON array of text', '["a","b","a"]', ['by_tag["a"]', 'by_tag["b"]']],
    ['JSON array of numbers', '[1, 2.0, 2]', ['by_tag[1]', 'by_tag[2]']],
    ['nulls are skipped', '[null, "a"]', ['by_tag["a"]']],
    ['empty array', '[]', []],
    ['not an array', '{"a":1}', []],
    ['NULL column', null, []]
  ])('bucket.p IN column with %s', (_name, tags, buckets) => {
    const rules = loadRules(
      definition('by_tag', {
        parameters: "SELECT request.jwt() ->> 'tag' AS tag",
        data: ['SELECT * FROM docs WHERE bucket.tag IN tags']
      })
    );
    const result = rules.evaluateRow({ table: 'docs', row: { id: 'd', tags } });
    expect(result.errors).toEqual([]);
    expect(result.buckets.map((row) => row.bucket)).toEqual(buckets);
  });

  test('multiple parameters follow declaration order, not WHERE order', () => {
    const rules = loadRules(
      definition('by_pair', {
        parameters: "SELECT request.jwt() ->> 'a' AS a, request.jwt() ->> 'b' AS b",
        data: ['SELECT * FROM t WHERE y = bucket.b AND x = bucket.a']
      })
    );
    expect(rules.evaluateRow({ table: 't', row: { id: '1', x: 'a', y: 1n } }).buckets.map((row) => row.bucket)).toEqual(
      ['by_pair["a",1]']
    );
  });

  test('an integral REAL and the same INTEGER give the same bucket id', () => {
    const rules = loadRules(
      definition('by_x', {
        parameters: "SELECT request.jwt() ->> 'x' AS x",
        data: ['SELECT * FROM t WHERE x = bucket.x']
      })
    );
    const bucketOf = (x: unknown) =>
      rules.evaluateRow({ table: 't', row: { id: '1', x } }).buckets.map((row) => row.bucket);
    expect(bucketOf(1n)).toEqual(['by_x[1]']);
    expect(bucketOf(1.0)).toEqual(['by_x[1]']);
    expect(bucketOf(1.25)).toEqual(['by_x[1.25]']);
    expect(bucketOf('1')).toEqual(['by_x["1"]']);
    expect(bucketOf(null)).toEqual([]); // NULL = anything is not true
    expect(bucketOf(undefined)).toEqual([]);
  });

  test('OR of parameter matches yields the union of buckets', () => {
    const rules = loadRules(
      definition('mine', {
        parameters: USER,
        data: ['SELECT * FROM docs WHERE owner = bucket.user_id OR bucket.user_id IN editors']
      })
    );
    const result = rules.evaluateRow({ table: 'docs', row: { id: 'd', owner: 'u1', editors: '["u1","u2"]' } });
    expect(result.buckets.map((row) => row.bucket)).toEqual(['mine["u1"]', 'mine["u2"]']);
  });

  test('AND of two matches on the same parameter keeps only agreeing values', () => {
    const rules = loadRules(
      definition('mine', {
        parameters: USER,
        data: ['SELECT * FROM docs WHERE owner = bucket.user_id AND bucket.user_id IN editors']
      })
    );
    expect(
      rules
        .evaluateRow({ table: 'docs', row: { id: 'd', owner: 'u1', editors: '["u1","u2"]' } })
        .buckets.map((row) => row.bucket)
    ).toEqual(['mine["u1"]']);
    expect(rules.evaluateRow({ table: 'docs', row: { id: 'd', owner: 'u3', editors: '["u1","u2"]' } }).buckets).toEqual(
      []
    );
  });

  test.each([
    ['deleted_at IS NULL', { deleted_at: null }, true],
    ['deleted_at IS NULL', { deleted_at: '2024-01-01' }, false],
    ['deleted_at IS NOT NULL', { deleted_at: '2024-01-01' }, true],
    ["status = 'open'", { status: 'open' }, true],
    ["status = 'open'", { status: 'closed' }, false],
    ["status != 'open'", { status: null }, false],
    ['size > 10', { size: 11n }, true],
    ['size > 10', { size: 10n }, false],
    ['size >= 10.5', { size: 11n }, true],
    ['size < 10', { size: 9.99 }, true],
    ['size <= 10', { size: '5' }, false], // text sorts after numbers, as in SQLite
    ['archived = false', { archived: false }, true],
    ['archived', { archived: true }, true],
    ['NOT archived', { archived: 1n }, false],
    ["kind IN ('a', 'b')", { kind: 'b' }, true],
    ["kind NOT IN ('a', 'b')", { kind: 'b' }, false],
    ["(kind = 'a' OR kind = 'b') AND size > 1", { kind: 'a', size: 2n }, true],
    ["upper(kind) = 'A'", { kind: 'a' }, true],
    ["doc ->> 'state' = 'done'", { doc: '{"state":"done"}' }, true],
    ['missing_column IS NULL', {}, true]
  ])('row filter %s on %o → %s', (condition, row, kept) => {
    const rules = loadRules(
      definition('mine', { parameters: USER, data: [`SELECT * FROM t WHERE owner = bucket.user_id AND ${condition}`] })
    );
    const result = rules.evaluateRow({ table: 't', row: { id: 'x', owner: 'u1', ...row } });
    expect(result.errors).toEqual([]);
    expect(result.buckets.length).toBe(kept ? 1 : 0);
  });

  test('a definition without parameters may filter on row values only', () => {
    const rules = loadRules(definition('public_docs', { data: ['SELECT * FROM docs WHERE public = 1'] }));
    expect(rules.evaluateRow({ table: 'docs', row: { id: 'a', public: 1n } }).buckets.map((row) => row.bucket)).toEqual(
      ['public_docs[]']
    );
    expect(rules.evaluateRow({ table: 'docs', row: { id: 'a', public: 0n } }).buckets).toEqual([]);
  });

  test('wildcard tables keep the source table name as output table unless aliased', () => {
    const rules = loadRules(`
bucket_definitions:
  all:
    data:
      - SELECT * FROM "todos_%"
      - SELECT id FROM "notes_%" AS notes
`);
    expect(rules.evaluateRow({ table: 'todos_2024', row: { id: 'a' } }).buckets[0]!.table).toBe('todos_2024');
    expect(rules.evaluateRow({ table: 'notes_x', row: { id: 'a' } }).buckets[0]!.table).toBe('notes');
    expect(rules.evaluateRow({ table: 'todo', row: { id: 'a' } }).buckets).toEqual([]);
  });
});

function evaluateExpression(expression: string, row: Record<string, unknown> = {}): JsonValue | undefined {
  const rules = loadRules(definition('global', { data: [`SELECT ${expression} AS v FROM t`] }));
  const result = rules.evaluateRow({ table: 't', row });
  expect(result.errors).toEqual([]);
  const data = parseJson(result.buckets[0]!.data) as Record<string, JsonValue>;
  return data['v'];
}

describe('functions and operators', () => {
  const doc = '{"a":{"b":[1,9007199254740993,2.5]},"s":"text","t":true,"n":null}';
  test.each([
    ['upper(name)', 'Ab', 'AB'],
    ['lower(name)', 'Ab', 'ab'],
    ['upper(name)', null, null],
    ['length(name)', 'héllo', 5n],
    ['length(name)', 12345n, 5n],
    ['length(name)', new Uint8Array([1, 2, 3]), 3n],
    ['CAST(name AS TEXT)', 5n, '5'],
    ['CAST(name AS TEXT)', 1.5, '1.5'],
    // REAL → text as the reference prints it ('real-to-text' in src/reference-deviations.ts).
    ['CAST(name AS TEXT)', 2.0, '2'],
    ['CAST(name AS TEXT)', 1e21, '1e+21'],
    ['CAST(name AS INTEGER)', '12abc', 12n],
    ['CAST(name AS INTEGER)', 'abc', 0n],
    ['CAST(name AS INTEGER)', -3.9, -3n],
    ['CAST(name AS INTEGER)', '99999999999999999999', 9223372036854775807n],
    ['CAST(name AS REAL)', ' 3.5e-1xyz', 0.35],
    ['CAST(name AS REAL) + 0.5', 'xyz', 0.5],
    ['typeof(CAST(name AS REAL))', 7n, 'real'],
    ['typeof(name)', 7n, 'integer'],
    ['typeof(name)', 7.5, 'real'],
    ['typeof(name)', null, 'null'],
    ["json_extract(name, '$.a.b[1]')", doc, 9007199254740993n],
    ["json_extract(name, '$.a.b[#-1]')", doc, 2.5],
    ["json_extract(name, '$.s')", doc, 'text'],
    ["json_extract(name, '$.t')", doc, 1n],
    ["json_extract(name, '$.missing')", doc, null],
    ["json_extract(name, '$.a')", doc, '{"b":[1,9007199254740993,2.5]}'],
    ["name -> 'a'", doc, '{"b":[1,9007199254740993,2.5]}'],
    ["name -> 's'", doc, '"text"'],
    ["name ->> 's'", doc, 'text'],
    ["name ->> '$.a.b[0]'", doc, 1n],
    ["name -> 'a' -> 'b' ->> '$[1]'", doc, 9007199254740993n],
    ["json_array_length(name, '$.a.b')", doc, 3n],
    ['ifnull(name, 7)', null, 7n],
    ['ifnull(name, 7)', 'x', 'x'],
    ['coalesce(name, NULL, 3)', null, 3n],
    ['nullif(name, 1)', 1n, null],
    ["name || '!'", 1n, '1!'],
    ["name || '!'", null, null],
    ['name + 1', 9007199254740993n, 9007199254740994n],
    ['name + 1', 9223372036854775807n, 9223372036854775808],
    ['name / 2', 5n, 2n],
    ['name / 2', 5.0, 2.5],
    ['name / 0', 5n, null],
    ['name % 3', 7n, 1n],
    ['-name', 5n, -5n],
    ["name * '2'", 3n, 6n],
    ['abs(name)', -4n, 4n],
    ["iif(name > 1, 'big', 'small')", 2n, 'big'],
    ['name = 1', 1.0, 1n],
    ['name IS NULL', null, 1n],
    ['name IN (1, 2)', 2n, 1n],
    ['name IN (1, NULL)', 3n, null]
  ])('%s with %o', (expression, name, expected) => {
    expect(evaluateExpression(expression, { name })).toEqual(expected);
  });
});

describe('values the rules cannot represent are reported and the row skipped there', () => {
  const rules = loadRules(`
bucket_definitions:
  global:
    data:
      - SELECT id, title FROM docs
  everything:
    data:
      - SELECT * FROM docs
  mine:
    parameters: SELECT request.user_id() AS user_id
    data:
      - SELECT id FROM docs WHERE owner = bucket.user_id
  tagged:
    parameters: SELECT request.jwt() ->> 'tag' AS tag
    data:
      - SELECT id FROM docs WHERE bucket.tag IN tags
  parsed:
    data:
      - SELECT id, meta ->> 'a' AS a FROM docs
`);

  test.each([
    [
      'an array in the id column',
      { id: [1, [2]], title: 't', owner: 'u' },
      ['global', 'everything', 'mine', 'parsed'],
      /column "id" has a value of type array/
    ],
    [
      'an object in an output column',
      { id: 'd', title: { x: 1 }, owner: 'u' },
      ['global', 'everything'],
      /column "title" has a value of type object/
    ],
    [
      'a blob as bucket parameter',
      { id: 'd', owner: new Uint8Array([1]) },
      ['mine'],
      /blob, which cannot be a bucket parameter/
    ],
    [
      'a blob id',
      { id: new Uint8Array([1]) },
      ['global', 'everything', 'parsed'],
      /blob, which cannot be an object id/
    ],
    [
      'a nested array matched with IN',
      { id: 'd', tags: '[["a"]]' },
      ['tagged'],
      /array element \["a"\] is not a scalar/
    ],
    ['malformed JSON', { id: 'd', meta: '{oops' }, ['parsed'], /malformed JSON/],
    ['a non-finite number', { id: 'd', title: Infinity }, ['global', 'everything'], /non-finite number/],
    ['a Date', { id: 'd', title: new Date(0) }, ['global', 'everything'], /type Date/]
  ])('%s', (_name, row, failing, message) => {
    const result = rules.evaluateRow({ table: 'docs', row });
    expect(new Set(result.errors.map((error) => error.bucketDefinition))).toEqual(new Set(failing));
    for (const name of failing) {
      const error = result.errors.find((candidate) => candidate.bucketDefinition === name);
      expect(error, `error for ${name}`).toBeDefined();
      expect(error!.message).toMatch(message);
      expect(error!.message).toMatch(new RegExp(`^bucket_definitions\\.${name}\\.data\\[0\\]: .*row skipped$`));
      expect(result.buckets.some((bucket) => bucket.bucket.startsWith(`${name}[`))).toBe(false);
    }
    // Definitions that do not touch the bad value still produce their rows.
    const produced = new Set(result.buckets.map((bucket) => bucket.bucket.split('[')[0]));
    for (const name of produced) expect(failing).not.toContain(name);
  });

  test('malformed input objects are reported, never thrown', () => {
    const bad = [
      { table: 'docs', row: null },
      { table: undefined, row: {} },
      { table: 'docs', row: 'text' }
    ];
    for (const input of bad) {
      const result = rules.evaluateRow(input as never);
      expect(result.buckets).toEqual([]);
      expect(rules.evaluateParameterRow(input as never).lookups).toEqual([]);
    }
    expect(rules.evaluateRow({ table: 'docs', row: null as never }).errors.length).toBeGreaterThan(0);
  });

  test('other definitions still get the row', () => {
    const result = rules.evaluateRow({ table: 'docs', row: { id: 'd', title: { x: 1 }, owner: 'u1' } });
    expect(result.buckets.map((row) => row.bucket)).toEqual(['mine["u1"]', 'parsed[]']);
  });
});
