import fc from 'fast-check';
import { describe, expect, test } from 'vitest';
import { stringify } from 'yaml';
import { parseSyncRules, SUPPORTED_FUNCTIONS, type SyncRules } from '../src/index.js';

function expectWellFormed(result: ReturnType<typeof parseSyncRules>): void {
  expect(typeof result.ok).toBe('boolean');
  if (result.ok) {
    expect(result.errors).toEqual([]);
  } else {
    expect(result.rules).toBeUndefined();
    expect(result.errors.length).toBeGreaterThan(0);
    for (const error of result.errors) {
      expect(typeof error.message).toBe('string');
      expect(error.message.length).toBeGreaterThan(0);
      expect(error.message).not.toMatch(/Internal error/);
    }
  }
}

/** Fragments that make random text look like sync rules SQL, so the fuzzer gets past the first token. */
const SQL_FRAGMENTS = [
  'SELECT',
  '*',
  'FROM',
  'WHERE',
  'AND',
  'OR',
  'NOT',
  'IN',
  'IS',
  'NULL',
  'AS',
  'CAST',
  'TEXT',
  'INTEGER',
  '(',
  ')',
  ',',
  '.',
  '=',
  '!=',
  '<',
  '>=',
  '->',
  '->>',
  '||',
  '+',
  '-',
  '/',
  "'x'",
  "'$.a'",
  '"q"',
  '1',
  '2.5',
  '0x10',
  'id',
  't',
  'bucket.p',
  'bucket.q',
  'request.user_id()',
  'request.jwt()',
  'request.parameters()',
  'token_parameters.a',
  'user_parameters.b',
  'upper',
  'json_extract',
  'JOIN',
  'GROUP BY',
  'LIMIT',
  ';',
  '--',
  '/*',
  '?',
  'CASE',
  'json_each(',
  'value',
  'key',
  'SELECT (SELECT',
  'coalesce(',
  'bucket',
  'request.',
  "'",
  '"'
];
const sqlish = fc
  .array(fc.oneof(fc.constantFrom(...SQL_FRAGMENTS), fc.string({ maxLength: 3 })), { maxLength: 14 })
  .map((parts) => parts.join(' '));

const yamlScalar = fc.oneof(fc.string(), fc.integer(), fc.double(), fc.boolean(), fc.constant(null), sqlish);
const { value: yamlValue } = fc.letrec((tie) => ({
  value: fc.oneof({ depthSize: 'small', withCrossShrink: true }, yamlScalar, tie('list'), tie('map')),
  list: fc.array(tie('value'), { maxLength: 4 }),
  map: fc.dictionary(
    fc.oneof(fc.string({ maxLength: 6 }), fc.constantFrom('data', 'parameters', 'priority', 'bucket_definitions')),
    tie('value'),
    { maxKeys: 4 }
  )
}));

const definitionLike = fc.record(
  {
    parameters: fc.oneof(sqlish, fc.array(sqlish, { maxLength: 3 }), yamlValue),
    data: fc.oneof(fc.array(sqlish, { maxLength: 3 }), yamlValue),
    priority: fc.oneof(fc.integer({ min: -2, max: 5 }), yamlValue),
    accept_potentially_dangerous_queries: fc.oneof(fc.boolean(), yamlValue)
  },
  { requiredKeys: [] }
);
const rulesLike = fc.record({
  bucket_definitions: fc.dictionary(fc.string({ minLength: 1, maxLength: 8 }), definitionLike, { maxKeys: 3 })
});

describe('parseSyncRules never throws', () => {
  test('on random strings', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary', maxLength: 300 }), (text) => {
        expectWellFormed(parseSyncRules(text));
      }),
      { numRuns: 500 }
    );
  });

  test('on random YAML structures', () => {
    fc.assert(
      fc.property(yamlValue, (value) => {
        expectWellFormed(parseSyncRules(stringify(value)));
      }),
      { numRuns: 300 }
    );
  });

  test('on random SQL-ish bucket definitions', () => {
    fc.assert(
      fc.property(rulesLike, (value) => {
        expectWellFormed(parseSyncRules(stringify(value)));
      }),
      { numRuns: 1000 }
    );
  });

  test('on mutated valid sync rules text', () => {
    const valid = `bucket_definitions:
  by_org:
    priority: 1
    parameters: SELECT org_id FROM memberships WHERE user_id = request.user_id()
    data:
      - SELECT id, upper(name) AS name, CAST(n AS TEXT) AS n FROM documents WHERE org_id = bucket.org_id AND deleted IS NULL
`;
    fc.assert(
      fc.property(fc.nat(valid.length), fc.nat(12), fc.string({ maxLength: 4 }), (at, remove, insert) => {
        expectWellFormed(parseSyncRules(valid.slice(0, at) + insert + valid.slice(at + remove)));
      }),
      { numRuns: 1000 }
    );
  });

  test('on values that are not strings', () => {
    for (const value of [undefined, null, 42, {}, [], Symbol('x')]) {
      const result = parseSyncRules(value as string);
      expect(result.ok).toBe(false);
    }
  });
});

describe('evaluation never throws on arbitrary rows and requests', () => {
  const result = parseSyncRules(`
bucket_definitions:
  everything:
    data: [SELECT * FROM t]
  by_owner:
    parameters: SELECT request.user_id() AS owner
    data:
      - SELECT id, upper(name) AS name, json_extract(doc, '$.a') AS a, doc ->> 'b' AS b, length(name) AS l FROM t WHERE owner = bucket.owner AND CAST(n AS INTEGER) > 0
      - SELECT id FROM t WHERE bucket.owner IN tags
  by_member:
    parameters: SELECT id AS owner, 1 AS _priority FROM t WHERE request.user_id() IN members AND kind = request.jwt() ->> 'kind'
    data: [SELECT id FROM t WHERE owner = bucket.owner]
`);
  const rules = result.rules as SyncRules;
  const columnValue = fc.oneof(
    fc.anything(),
    fc.bigInt(),
    fc.double(),
    fc.string(),
    fc.uint8Array({ maxLength: 4 }),
    fc.json(),
    fc.constantFrom('[1,[2]]', '["u"]', '{"a":{"b":1}}', '[', 'null')
  );
  const row = fc.dictionary(
    fc.constantFrom('id', 'name', 'owner', 'doc', 'n', 'tags', 'members', 'kind', 'p', '__proto__', 'toString'),
    columnValue
  );

  test('evaluateRow and evaluateParameterRow report instead of throwing', () => {
    expect(result.ok).toBe(true);
    fc.assert(
      fc.property(row, (value) => {
        const evaluated = rules.evaluateRow({ table: 't', row: value });
        for (const bucket of evaluated.buckets) JSON.parse(bucket.data);
        rules.evaluateParameterRow({ table: 't', row: value });
      }),
      { numRuns: 1000 }
    );
  });

  test('planBuckets and finish report instead of throwing', () => {
    fc.assert(
      fc.property(
        fc.string(),
        fc.anything(),
        fc.anything(),
        fc.array(fc.array(fc.anything(), { maxLength: 3 }), { maxLength: 3 }),
        (userId, token, client, results) => {
          const plan = rules.planBuckets({
            userId,
            tokenParameters: token as Record<string, unknown>,
            clientParameters: client as Record<string, unknown>
          });
          plan.finish(results as never);
        }
      ),
      { numRuns: 500 }
    );
  });
});

// --- grammar-aware fuzzing (issue 7 item 2) --------------------------------------------------------------------
//
// Queries generated from the parser's grammar (see src/sql/parser.ts) reach the semantic checks (bucket parameter
// matching, request values, table patterns, functions) instead of stopping at the first token; token-level mutations
// of valid queries probe the error paths next to valid input. Whatever comes out: `parseSyncRules` reports issues
// instead of throwing, and rules that parse evaluate rows and requests without throwing.

const COLUMNS = [
  'id',
  'name',
  'owner',
  'doc',
  'n',
  'tags',
  'members',
  'kind',
  'p',
  '"quoted col"',
  '`ticked`',
  'rowid',
  'value'
];
const REQUEST_VALUES = [
  'request.user_id()',
  'request.jwt()',
  'request.parameters()',
  "request.jwt() ->> 'kind'",
  "request.parameters() ->> 'list'",
  "request.jwt() -> 'orgs'",
  'token_parameters.user_id',
  'token_parameters.org',
  'user_parameters.role',
  'auth.user_id()',
  'request.nope()'
];
const TABLES = [
  't',
  'public.t',
  'other.t',
  '"todos_%"',
  'todos_%',
  '"Quoted Table"',
  'memberships',
  't AS alias',
  "json_each(request.jwt() -> 'orgs')"
];

/** SQL literals, including the awkward ones: escaped quotes, int64 edges, reals, blobs-ish, NULL/TRUE/FALSE. */
const sqlLiteral = fc.oneof(
  fc.string({ maxLength: 6 }).map((text) => `'${text.replace(/'/g, "''")}'`),
  fc.bigInt({ min: -(2n ** 64n), max: 2n ** 64n }).map(String),
  fc.constantFrom(
    '9223372036854775807',
    '9223372036854775808',
    '-9223372036854775808',
    '0',
    '1.5',
    '1e308',
    '1e999',
    '.5',
    '0x10',
    "x'00ff'",
    'NULL',
    'TRUE',
    'FALSE'
  )
);

const sqlExpression: fc.Arbitrary<string> = fc.letrec<{ expr: string }>((tie) => ({
  expr: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    sqlLiteral,
    fc.constantFrom(...COLUMNS),
    fc.constantFrom(...COLUMNS).map((column) => `t.${column}`),
    fc.constantFrom(...REQUEST_VALUES),
    fc.constantFrom('bucket.p', 'bucket.q', 'bucket.owner', 'bucket.nope'),
    fc
      .tuple(
        tie('expr'),
        fc.constantFrom(
          '=',
          '==',
          '!=',
          '<>',
          '<',
          '<=',
          '>',
          '>=',
          'AND',
          'OR',
          'IS',
          'IS NOT',
          '+',
          '-',
          '*',
          '/',
          '%',
          '||',
          '->',
          '->>'
        ),
        tie('expr')
      )
      .map(([left, operator, right]) => `${left} ${operator} ${right}`),
    fc
      .tuple(tie('expr'), fc.array(tie('expr'), { minLength: 0, maxLength: 3 }), fc.boolean())
      .map(([left, items, not]) => `${left} ${not ? 'NOT IN' : 'IN'} (${items.join(', ')})`),
    fc.tuple(tie('expr'), tie('expr')).map(([left, right]) => `${left} IN ${right}`),
    fc.tuple(fc.constantFrom('NOT', '-', '+'), tie('expr')).map(([operator, operand]) => `${operator} ${operand}`),
    fc
      .tuple(tie('expr'), fc.constantFrom('IS NULL', 'IS NOT NULL', 'ISNULL', 'NOTNULL', 'NOT NULL'))
      .map(([operand, suffix]) => `${operand} ${suffix}`),
    fc
      .tuple(
        fc.constantFrom(...SUPPORTED_FUNCTIONS, 'nope', 'json_each', 'count'),
        fc.array(tie('expr'), { maxLength: 3 })
      )
      .map(([name, args]) => `${name}(${args.join(', ')})`),
    fc
      .tuple(tie('expr'), fc.constantFrom('TEXT', 'INTEGER', 'REAL', 'NUMERIC', 'BLOB', 'JSON', 'VARCHAR(10)'))
      .map(([operand, type]) => `CAST(${operand} AS ${type})`),
    tie('expr').map((inner) => `(${inner})`)
  )
})).expr;

const resultColumn = fc.oneof(
  fc.constant('*'),
  fc.constant('t.*'),
  fc.constantFrom(...COLUMNS),
  fc
    .tuple(sqlExpression, fc.constantFrom('a', 'b', 'id', 'p', 'q', 'owner', '_priority', '"odd name"'), fc.boolean())
    .map(([expr, alias, as]) => `${expr}${as ? ' AS' : ''} ${alias}`)
);

const selectQuery = fc
  .record({
    columns: fc.array(resultColumn, { minLength: 1, maxLength: 4 }),
    table: fc.option(fc.constantFrom(...TABLES), { freq: 4, nil: undefined }),
    where: fc.option(sqlExpression, { nil: undefined }),
    semicolon: fc.boolean()
  })
  .map(
    ({ columns, table, where, semicolon }) =>
      `SELECT ${columns.join(', ')}${table ? ` FROM ${table}` : ''}${where ? ` WHERE ${where}` : ''}${semicolon ? ';' : ''}`
  );

/** Data queries shaped like real ones (`... FROM t WHERE column = bucket.x`), with generated parts. */
const dataQuery = fc.oneof(
  selectQuery,
  fc
    .tuple(
      fc.constantFrom(...COLUMNS),
      fc.constantFrom('bucket.p', 'bucket.q'),
      fc.option(sqlExpression, { nil: undefined })
    )
    .map(
      ([column, parameter, extra]) => `SELECT * FROM t WHERE ${column} = ${parameter}${extra ? ` AND ${extra}` : ''}`
    )
);
/** Parameter queries: static (no FROM), table lookups, json_each, with generated conditions. */
const parameterQuery = fc.oneof(
  selectQuery,
  fc
    .tuple(fc.constantFrom(...REQUEST_VALUES), fc.option(sqlExpression, { nil: undefined }))
    .map(([value, where]) => `SELECT ${value} AS p${where ? ` WHERE ${where}` : ''}`),
  fc
    .tuple(
      fc.constantFrom(...COLUMNS),
      fc.constantFrom(...COLUMNS),
      fc.constantFrom(...REQUEST_VALUES),
      fc.constantFrom('=', 'IN')
    )
    .map(
      ([output, column, value, operator]) =>
        `SELECT ${output} AS p FROM memberships WHERE ${column} ${operator} ${value}`
    )
);

/** Row-only expressions that are well-formed (known functions with their arity), so whole definitions are valid often. */
const rowExpression: fc.Arbitrary<string> = fc.letrec<{ expr: string }>((tie) => ({
  expr: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    sqlLiteral,
    fc.constantFrom('id', 'name', 'owner', 'doc', 'n', 'kind'),
    fc
      .tuple(fc.constantFrom('upper', 'lower', 'length', 'typeof', 'abs', 'json_valid'), tie('expr'))
      .map(([name, arg]) => `${name}(${arg})`),
    fc
      .tuple(fc.constantFrom('ifnull', 'nullif', 'coalesce'), tie('expr'), tie('expr'))
      .map(([name, a, b]) => `${name}(${a}, ${b})`),
    fc.tuple(tie('expr'), tie('expr'), tie('expr')).map(([a, b, c]) => `iif(${a}, ${b}, ${c})`),
    fc
      .tuple(
        fc.constantFrom('doc', 'name', '\'{"a":[1,2]}\''),
        fc.constantFrom("'$.a'", "'$.a[0]'", "'$'", '\'$."b c"\'', "'$[#-1]'", "'not a path'")
      )
      .map(([document, path]) => `json_extract(${document}, ${path})`),
    fc
      .tuple(
        fc.constantFrom('doc', 'name'),
        fc.constantFrom('->', '->>'),
        fc.constantFrom("'a'", "'$.a'", '0', "'$[0]'")
      )
      .map(([document, operator, path]) => `${document} ${operator} ${path}`),
    fc
      .tuple(tie('expr'), fc.constantFrom('TEXT', 'INTEGER', 'REAL', 'NUMERIC', 'BLOB'))
      .map(([operand, type]) => `CAST(${operand} AS ${type})`),
    fc
      .tuple(
        tie('expr'),
        fc.constantFrom('=', '!=', '<', '>=', 'AND', 'OR', 'IS', 'IS NOT', '+', '-', '*', '/', '%', '||'),
        tie('expr')
      )
      .map(([a, operator, b]) => `(${a} ${operator} ${b})`),
    fc
      .tuple(tie('expr'), fc.array(sqlLiteral, { minLength: 1, maxLength: 3 }))
      .map(([operand, items]) => `${operand} IN (${items.join(', ')})`)
  )
})).expr;

/** A definition that is valid unless a generated value makes it not: `p` from the parameter query, used by data. */
const wellFormedDefinition = fc.record({
  parameters: fc.constantFrom(
    'SELECT request.user_id() AS p',
    "SELECT request.jwt() ->> 'org' AS p",
    'SELECT id AS p FROM memberships WHERE user_id = request.user_id()',
    "SELECT value AS p FROM json_each(request.jwt() -> 'orgs')",
    'SELECT token_parameters.org AS p'
  ),
  data: fc.array(
    fc
      .tuple(fc.array(rowExpression, { minLength: 1, maxLength: 3 }), fc.option(rowExpression, { nil: undefined }))
      .map(
        ([columns, where]) =>
          `SELECT id, ${columns.map((column, i) => `${column} AS c${i}`).join(', ')} FROM t WHERE owner = bucket.p${where ? ` AND ${where}` : ''}`
      ),
    { minLength: 1, maxLength: 2 }
  ),
  priority: fc.integer({ min: 0, max: 3 })
});

const grammarRules = fc
  .dictionary(
    fc.oneof(
      fc.constantFrom('b1', 'b2', 'by_owner', 'with space', 'ünïcode', '__proto__', 'constructor'),
      fc.string({ minLength: 1, maxLength: 6 })
    ),
    fc.oneof(
      wellFormedDefinition,
      fc.record(
        {
          parameters: fc.oneof(parameterQuery, fc.array(parameterQuery, { minLength: 1, maxLength: 2 })),
          data: fc.array(dataQuery, { minLength: 1, maxLength: 3 }),
          priority: fc.integer({ min: -1, max: 4 }),
          accept_potentially_dangerous_queries: fc.boolean()
        },
        { requiredKeys: ['data'] }
      )
    ),
    { minKeys: 1, maxKeys: 3 }
  )
  .map((definitions) => stringify({ bucket_definitions: definitions }));

/** Rows and requests to evaluate parsed rules with. */
const ROW_COLUMNS = [
  // The queries' columns as a row names them (unquoted; `rowid` is SQLite's own), plus the parameter tables' keys.
  ...COLUMNS.filter((column) => column !== 'rowid').map((column) => column.replace(/^["`](.*)["`]$/, '$1')),
  'user_id',
  'org_id'
];
const sqlRow = fc.dictionary(
  fc.constantFrom(...ROW_COLUMNS),
  fc.oneof(
    fc.string({ maxLength: 8 }),
    fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }),
    fc.double(),
    fc.constant(null),
    fc.uint8Array({ maxLength: 4 }),
    fc.json(),
    fc.constantFrom('["a","b"]', '{"a":1}')
  )
);
const tableName = fc.constantFrom('t', 'memberships', 'todos_1', 'Quoted Table', 'other');
const requestParameters = fc.record({
  userId: fc.string({ maxLength: 8 }),
  tokenParameters: fc.dictionary(fc.string({ maxLength: 6 }), fc.jsonValue({ maxDepth: 2 })),
  clientParameters: fc.dictionary(fc.constantFrom('list', 'role', 'x', '__proto__'), fc.jsonValue({ maxDepth: 2 }))
});

/** Parses, and when the rules are valid, exercises every evaluation entry point once. */
function parseAndExercise(
  yaml: string,
  row: Record<string, unknown>,
  table: string,
  request: { userId: string; tokenParameters: Record<string, unknown>; clientParameters: Record<string, unknown> }
) {
  const result = parseSyncRules(yaml);
  expectWellFormed(result);
  if (!result.ok) return false;
  const rules = result.rules;
  const evaluated = rules.evaluateRow({ table, row: row });
  for (const bucket of evaluated.buckets) JSON.parse(bucket.data);
  for (const error of evaluated.errors) expect(typeof error.message).toBe('string');
  rules.evaluateParameterRow({ table, row: row });
  const plan = rules.planBuckets({
    userId: request.userId,
    tokenParameters: request.tokenParameters,
    clientParameters: request.clientParameters
  });
  plan.finish(plan.lookups.map(() => []));
  return true;
}

describe('grammar-aware fuzzing of sync rules', () => {
  test('generated bucket definitions parse or report; parsed ones evaluate without throwing', () => {
    let valid = 0;
    fc.assert(
      fc.property(grammarRules, sqlRow, tableName, requestParameters, (yaml, row, table, request) => {
        if (parseAndExercise(yaml, row, table, request)) valid++;
      }),
      { numRuns: 1000 }
    );
    // The grammar must produce valid rules often enough for the evaluation half to mean something. It still emits
    // SQLite-only syntax (`==`, `a IS b`, `ISNULL`, hex literals) that pgsql-ast-parser, like the reference, rejects,
    // which keeps those error paths covered; about 55 of 1000 come out valid.
    expect(valid).toBeGreaterThan(25);
  }, 60_000);

  const VALID_RULES = [
    `bucket_definitions:
  by_owner:
    parameters: SELECT request.user_id() AS owner
    data:
      - SELECT id, upper(name) AS name, json_extract(doc, '$.a') AS a, doc ->> 'b' AS b FROM t WHERE owner = bucket.owner AND CAST(n AS INTEGER) > 0
      - SELECT id FROM t WHERE bucket.owner IN tags
`,
    `bucket_definitions:
  by_member:
    priority: 1
    parameters:
      - SELECT org_id AS org FROM memberships WHERE user_id = request.user_id()
      - SELECT value AS org FROM json_each(request.jwt() -> 'orgs')
    data:
      - SELECT * FROM t WHERE kind = bucket.org OR owner = bucket.org
  global:
    data:
      - SELECT * FROM "todos_%"
      - SELECT id, coalesce(name, 'none') AS name FROM "Quoted Table" AS q
`,
    `bucket_definitions:
  by_list:
    accept_potentially_dangerous_queries: true
    parameters: SELECT request.parameters() ->> 'list' AS p WHERE request.jwt() ->> 'role' = 'admin'
    data:
      - SELECT id, length(name) AS l, iif(n > 1, 'big', 'small') AS size FROM t WHERE p = bucket.p AND name IS NOT NULL
`
  ];

  /** Splits a query into rough tokens (words, strings, operators) for token-level mutations. */
  const tokensOf = (sql: string) => sql.match(/'(?:[^']|'')*'|"[^"]*"|->>|->|\|\||[<>!=]=|<>|\w+|\S/g) ?? [];
  const vocabulary = [
    ...SQL_FRAGMENTS,
    'bucket.owner',
    'bucket.org',
    '$.a',
    'IS NOT',
    'NOT IN',
    'json_each',
    'CAST(',
    'AS INTEGER)',
    '((',
    '))'
  ];

  test('token-level mutations of valid rules: delete, duplicate, swap, insert, replace', () => {
    for (const rules of VALID_RULES) expect(parseSyncRules(rules).ok, rules).toBe(true);
    const mutationOf = fc.record({
      kind: fc.constantFrom('delete', 'duplicate', 'swap', 'insert', 'replace'),
      at: fc.nat(),
      other: fc.nat(),
      token: fc.oneof(fc.constantFrom(...vocabulary), sqlLiteral, fc.constantFrom(...REQUEST_VALUES))
    });
    fc.assert(
      fc.property(
        fc.constantFrom(...VALID_RULES),
        fc.array(mutationOf, { minLength: 1, maxLength: 3 }),
        sqlRow,
        tableName,
        requestParameters,
        (rules, mutations, row, table, request) => {
          // Mutate the SQL of one line (a query), keeping the YAML around it intact.
          const lines = rules.split('\n');
          const queryLines = lines.map((line, index) => [line, index] as const).filter(([line]) => /SELECT/.test(line));
          const [line, index] = queryLines[mutations[0]!.at % queryLines.length]!;
          const start = line.indexOf('SELECT');
          const end = line.endsWith(']') ? line.lastIndexOf(']') : line.length;
          const tokens = tokensOf(line.slice(start, end));
          for (const { kind, at, other, token } of mutations) {
            const i = at % Math.max(1, tokens.length);
            const j = other % Math.max(1, tokens.length);
            if (kind === 'delete') tokens.splice(i, 1);
            else if (kind === 'duplicate') tokens.splice(i, 0, tokens[i] ?? token);
            else if (kind === 'swap') [tokens[i], tokens[j]] = [tokens[j]!, tokens[i]!];
            else if (kind === 'insert') tokens.splice(i, 0, token);
            else tokens[i] = token;
          }
          const mutated = tokens.filter((token) => token !== undefined).join(' ');
          // JSON-quote the query so the YAML stays valid whatever the SQL became.
          lines[index] = line.slice(0, start) + JSON.stringify(mutated) + line.slice(end);
          parseAndExercise(lines.join('\n'), row, table, request);
        }
      ),
      // pgsql-ast-parser takes about 20 ms per run here (the hand-written parser took 1 ms): 1000 runs keep this under 30 s.
      { numRuns: 1000 }
    );
  }, 60_000);

  test('random SQL fragments in data and parameter queries of otherwise valid definitions', () => {
    fc.assert(
      fc.property(
        fc.oneof(sqlish, selectQuery),
        fc.oneof(sqlish, parameterQuery),
        fc.boolean(),
        sqlRow,
        requestParameters,
        (data, parameters, withParameters, row, request) => {
          const yaml = stringify({
            bucket_definitions: { b: { ...(withParameters ? { parameters } : {}), data: [data, 'SELECT * FROM t'] } }
          });
          parseAndExercise(yaml, row, 't', request);
        }
      ),
      { numRuns: 1500 }
    );
  });

  test('YAML-level mutations: definitions of the wrong shape around valid queries', () => {
    const query = fc.oneof(selectQuery, fc.constantFrom('SELECT * FROM t', 'SELECT request.user_id() AS p'));
    const wrongShape = fc.oneof(query, fc.array(query, { maxLength: 2 }), yamlValue, fc.constant(undefined));
    fc.assert(
      fc.property(
        fc.record(
          {
            parameters: wrongShape,
            data: wrongShape,
            priority: fc.oneof(fc.integer({ min: -2, max: 5 }), yamlValue),
            extra: yamlValue
          },
          { requiredKeys: [] }
        ),
        fc.constantFrom('bucket_definitions', 'streams', 'config', 'Bucket_Definitions'),
        (definition, topKey) => {
          expectWellFormed(parseSyncRules(stringify({ [topKey]: { b: definition } })));
        }
      ),
      { numRuns: 1000 }
    );
  });
});
