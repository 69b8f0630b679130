import { describe, expect, test } from 'vitest';
import { parseSyncRules } from '../src/index.js';
import { definition, loadRules } from './helpers.js';

const PROTOCOL_EXAMPLE = `
bucket_definitions:
  global:                       # everyone gets global[]
    data:
      - SELECT * FROM lists
      - SELECT id, description, list_id FROM todos

  user_lists:                   # one bucket per user: user_lists["<sub>"]
    parameters: SELECT request.user_id() AS user_id
    data:
      - SELECT * FROM lists WHERE owner_id = bucket.user_id

  by_org:                       # dynamic: org memberships looked up in a table
    priority: 1
    parameters: SELECT org_id FROM memberships WHERE user_id = request.user_id()
    data:
      - SELECT * FROM documents WHERE org_id = bucket.org_id
      - SELECT id, name, org_id FROM projects WHERE org_id = bucket.org_id
`;

describe('valid sync rules', () => {
  test('the PROTOCOL §11 example loads with its definitions, parameters and priorities', () => {
    const rules = loadRules(PROTOCOL_EXAMPLE);
    expect(rules.definitions.map(({ name, priority, parameterNames }) => ({ name, priority, parameterNames }))).toEqual(
      [
        { name: 'global', priority: 3, parameterNames: [] },
        { name: 'user_lists', priority: 3, parameterNames: ['user_id'] },
        { name: 'by_org', priority: 1, parameterNames: ['org_id'] }
      ]
    );
    expect(rules.definitions[2]!.parameterQueries).toEqual([
      {
        sql: 'SELECT org_id FROM memberships WHERE user_id = request.user_id()',
        kind: 'lookup',
        table: { schema: 'public', name: 'memberships', wildcard: false }
      }
    ]);
  });

  test('sourceTables lists data and lookup tables once, with the default schema', () => {
    const rules = loadRules(`
bucket_definitions:
  a:
    parameters: SELECT id AS list_id FROM lists WHERE owner_id = request.user_id()
    data:
      - SELECT * FROM lists WHERE id = bucket.list_id
      - SELECT * FROM other.todos WHERE list_id = bucket.list_id
      - SELECT * FROM "todos_%" AS todos WHERE list_id = bucket.list_id
`);
    expect(rules.sourceTables()).toEqual([
      { schema: 'public', name: 'lists', wildcard: false },
      { schema: 'other', name: 'todos', wildcard: false },
      { schema: 'public', name: 'todos_%', wildcard: true }
    ]);
    expect(rules.tableSyncsData({ table: 'todos_2024' })).toBe(true);
    expect(rules.tableSyncsData({ schema: 'other', table: 'lists' })).toBe(false);
    expect(rules.tableSyncsParameters({ table: 'lists' })).toBe(true);
    expect(rules.tableSyncsParameters({ schema: 'other', table: 'todos' })).toBe(false);
  });

  test.each([
    ['static user id', 'SELECT request.user_id() AS user_id', 'SELECT * FROM t WHERE owner = bucket.user_id'],
    ['jwt claim', "SELECT request.jwt() ->> 'org' AS org", 'SELECT * FROM t WHERE org = bucket.org'],
    [
      'client parameter',
      "SELECT request.parameters() ->> 'project' AS project",
      'SELECT * FROM t WHERE project_id = bucket.project'
    ],
    [
      'legacy token_parameters',
      'SELECT token_parameters.user_id AS user_id',
      'SELECT * FROM t WHERE owner = bucket.user_id'
    ],
    ['legacy column name default', 'SELECT token_parameters.region', 'SELECT * FROM t WHERE region = bucket.region'],
    ['user_parameters', 'SELECT user_parameters.lang AS lang', 'SELECT * FROM t WHERE lang = bucket.lang'],
    [
      'static WHERE on request',
      "SELECT request.user_id() AS user_id WHERE request.jwt() ->> 'role' = 'admin'",
      'SELECT * FROM t WHERE owner = bucket.user_id'
    ],
    [
      'lookup with =',
      'SELECT id AS list_id FROM lists WHERE owner_id = request.user_id()',
      'SELECT * FROM todos WHERE list_id = bucket.list_id'
    ],
    [
      'lookup, request value on the left',
      'SELECT id AS list_id FROM lists WHERE request.user_id() = owner_id',
      'SELECT * FROM todos WHERE list_id = bucket.list_id'
    ],
    [
      'lookup with IN request array',
      "SELECT id AS list_id FROM lists WHERE id IN request.jwt() -> 'lists'",
      'SELECT * FROM todos WHERE list_id = bucket.list_id'
    ],
    [
      'lookup with IN row array',
      'SELECT id AS list_id FROM lists WHERE request.user_id() IN members',
      'SELECT * FROM todos WHERE list_id = bucket.list_id'
    ],
    [
      'lookup with AND and row filter',
      "SELECT id AS list_id FROM lists WHERE owner_id = request.user_id() AND archived = 0 AND request.jwt() ->> 'role' = 'x'",
      'SELECT * FROM todos WHERE list_id = bucket.list_id'
    ],
    ['data with IN array', 'SELECT request.user_id() AS user_id', 'SELECT * FROM docs WHERE bucket.user_id IN editors'],
    [
      'data with row conditions',
      'SELECT request.user_id() AS user_id',
      "SELECT * FROM docs WHERE owner = bucket.user_id AND deleted_at IS NULL AND status != 'draft' AND size >= 10"
    ],
    [
      'data with OR of matches',
      'SELECT request.user_id() AS user_id',
      'SELECT * FROM docs WHERE owner = bucket.user_id OR bucket.user_id IN editors'
    ],
    [
      'functions and renames',
      'SELECT request.user_id() AS user_id',
      "SELECT id, upper(name) AS name, CAST(n AS TEXT) AS n, json_extract(doc, '$.a') AS a, doc ->> 'b' AS b, length(name) AS l, ifnull(x, 0) AS x, coalesce(y, z, 1) AS y FROM docs WHERE lower(owner) = bucket.user_id"
    ],
    [
      'schema-qualified and aliased',
      'SELECT request.user_id() AS user_id',
      'SELECT d.id, d.name FROM app.docs AS d WHERE d.owner = bucket.user_id'
    ],
    [
      'comments and trailing semicolon',
      'SELECT request.user_id() AS user_id -- me',
      'SELECT * /* all */ FROM docs WHERE owner = bucket.user_id;'
    ],
    [
      'json_each over a claim',
      "SELECT value AS org FROM json_each(request.jwt() -> 'orgs') WHERE value != 'banned'",
      'SELECT * FROM t WHERE org = bucket.org'
    ],
    [
      '_priority column',
      'SELECT request.user_id() AS user_id, 0 AS _priority',
      'SELECT * FROM docs WHERE owner = bucket.user_id'
    ]
  ])('%s', (_name, parameters, data) => {
    loadRules(definition('def', { parameters, data: [data] }));
  });

  test('parameters may be a list; data may reference several tables', () => {
    const rules = loadRules(
      definition('lists', {
        parameters: [
          'SELECT id AS list_id FROM lists WHERE owner_id = request.user_id()',
          'SELECT list_id FROM shares WHERE user_id = request.user_id()'
        ],
        data: ['SELECT * FROM lists WHERE id = bucket.list_id', 'SELECT * FROM todos WHERE list_id = bucket.list_id']
      })
    );
    expect(rules.definitions[0]!.parameterQueries).toHaveLength(2);
  });

  test('warnings do not refuse the rules', () => {
    const result = parseSyncRules(`
bucket_definitions:
  by_project:
    parameters: SELECT request.parameters() ->> 'project' AS project
    data:
      - SELECT name FROM docs WHERE project = bucket.project
`);
    expect(result.ok).toBe(true);
    expect(result.warnings.map((warning) => warning.reason)).toEqual([
      expect.stringContaining('client parameters'),
      expect.stringContaining('no "id" output column')
    ]);
    const accepted = parseSyncRules(`
bucket_definitions:
  by_project:
    accept_potentially_dangerous_queries: true
    parameters: SELECT request.parameters() ->> 'project' AS project
    data:
      - SELECT * FROM docs WHERE project = bucket.project
`);
    expect(accepted.ok && accepted.warnings).toEqual([]);
  });

  test('an empty bucket_definitions mapping is valid and has no buckets', () => {
    const rules = loadRules('bucket_definitions: {}\n');
    expect(rules.definitions).toEqual([]);
    expect(rules.sourceTables()).toEqual([]);
  });
});

interface BadCase {
  name: string;
  yaml: string;
  reason: RegExp;
  bucketDefinition?: string;
  query?: string;
  queryKind?: 'parameters' | 'data';
  queryIndex?: number;
  /** Expected `position` of the problem in the query: the text found at that offset. */
  at?: string;
  yamlLine?: number;
}

const P = 'SELECT request.user_id() AS user_id';
function one(data: string, parameters: string = P): string {
  return definition('def', { parameters, data: [data] });
}

const BAD: BadCase[] = [
  { name: 'invalid YAML', yaml: 'bucket_definitions:\n  a: [\n', reason: /Invalid YAML/, yamlLine: 3 },
  { name: 'YAML that is not a mapping', yaml: '- a\n- b\n', reason: /must be a YAML mapping/ },
  { name: 'empty document', yaml: '', reason: /must be a YAML mapping/ },
  {
    name: 'missing bucket_definitions',
    yaml: 'other: 1\n',
    reason: /Unknown top-level key "other"|Missing "bucket_definitions"/
  },
  {
    name: 'sync streams under edition 1',
    yaml: 'streams:\n  a:\n    query: SELECT * FROM t\nbucket_definitions: {}\n',
    reason: /Sync Streams require edition 2 or later/
  },
  {
    name: 'duplicate bucket names',
    yaml: 'bucket_definitions:\n  a:\n    data: [SELECT * FROM t]\n  a:\n    data: [SELECT * FROM u]\n',
    reason: /Duplicate bucket definition name "a"/,
    bucketDefinition: 'a',
    yamlLine: 4
  },
  {
    name: 'duplicate key inside a definition',
    yaml: 'bucket_definitions:\n  a:\n    data: [SELECT * FROM t]\n    data: [SELECT * FROM u]\n',
    reason: /Duplicate key "data" in bucket_definitions.a/,
    bucketDefinition: 'a',
    yamlLine: 4
  },
  {
    name: 'missing data',
    yaml: 'bucket_definitions:\n  a:\n    parameters: SELECT request.user_id() AS u\n',
    reason: /Missing "data"/,
    bucketDefinition: 'a'
  },
  {
    name: 'data not a list of strings',
    yaml: 'bucket_definitions:\n  a:\n    data: [1, {x: 2}]\n',
    reason: /"data" must be a list of SELECT queries/,
    bucketDefinition: 'a'
  },
  {
    name: 'definition not a mapping',
    yaml: 'bucket_definitions:\n  a: SELECT * FROM t\n',
    reason: /must be a mapping/,
    bucketDefinition: 'a'
  },
  {
    name: 'unknown definition key',
    yaml: 'bucket_definitions:\n  a:\n    data: [SELECT * FROM t]\n    prio: 1\n',
    reason: /Unknown key "prio"/,
    bucketDefinition: 'a',
    yamlLine: 4
  },
  {
    name: 'priority out of range',
    yaml: 'bucket_definitions:\n  a:\n    priority: 4\n    data: [SELECT * FROM t]\n',
    reason: /"priority" must be an integer from 0 to 3, got "4"/,
    bucketDefinition: 'a',
    yamlLine: 3
  },
  {
    name: 'negative priority',
    yaml: 'bucket_definitions:\n  a:\n    priority: -1\n    data: [SELECT * FROM t]\n',
    reason: /"priority" must be an integer/,
    bucketDefinition: 'a'
  },
  {
    name: 'fractional priority',
    yaml: 'bucket_definitions:\n  a:\n    priority: 1.5\n    data: [SELECT * FROM t]\n',
    reason: /"priority" must be an integer/,
    bucketDefinition: 'a'
  },
  {
    name: 'priority as text',
    yaml: 'bucket_definitions:\n  a:\n    priority: "1"\n    data: [SELECT * FROM t]\n',
    reason: /"priority" must be an integer/,
    bucketDefinition: 'a'
  },
  {
    name: 'dangerous flag not boolean',
    yaml: 'bucket_definitions:\n  a:\n    accept_potentially_dangerous_queries: yes please\n    data: [SELECT * FROM t]\n',
    reason: /must be true or false/,
    bucketDefinition: 'a'
  },
  {
    name: 'unknown bucket parameter',
    yaml: one('SELECT * FROM t WHERE owner = bucket.owner'),
    reason: /Unknown bucket parameter "bucket.owner"; this definition's parameters are bucket.user_id/,
    bucketDefinition: 'def',
    queryKind: 'data',
    at: 'bucket.owner'
  },
  {
    name: 'bucket parameter without parameters',
    yaml: definition('def', { data: ['SELECT * FROM t WHERE owner = bucket.owner'] }),
    reason: /Unknown bucket parameter "bucket.owner"; this definition has no parameters/,
    bucketDefinition: 'def',
    at: 'bucket.owner'
  },
  {
    name: 'data query not filtering on a parameter',
    yaml: one('SELECT * FROM t'),
    reason: /must filter on every bucket parameter: missing "<column> = bucket.user_id"/,
    bucketDefinition: 'def',
    queryKind: 'data'
  },
  {
    name: 'OR branch without the parameter',
    yaml: one('SELECT * FROM t WHERE owner = bucket.user_id OR public = 1'),
    reason: /must filter on every bucket parameter/,
    at: 'owner = bucket.user_id OR'
  },
  {
    name: 'JOIN',
    yaml: one('SELECT * FROM t JOIN u ON t.id = u.id WHERE owner = bucket.user_id'),
    reason: /JOIN is not supported/,
    at: 'JOIN'
  },
  {
    name: 'LEFT JOIN',
    yaml: one('SELECT * FROM t LEFT JOIN u ON t.id = u.id'),
    reason: /JOIN is not supported/,
    at: 'LEFT'
  },
  {
    name: 'two tables',
    yaml: one('SELECT * FROM t, u WHERE owner = bucket.user_id'),
    reason: /several tables is not supported/,
    at: 'u WHERE'
  },
  {
    name: 'GROUP BY',
    yaml: one('SELECT owner FROM t WHERE owner = bucket.user_id GROUP BY owner'),
    reason: /GROUP BY is not supported/,
    at: 'GROUP'
  },
  {
    name: 'ORDER BY',
    yaml: one('SELECT * FROM t WHERE owner = bucket.user_id ORDER BY id'),
    reason: /ORDER BY is not supported/,
    at: 'ORDER'
  },
  {
    name: 'LIMIT',
    yaml: one('SELECT * FROM t WHERE owner = bucket.user_id LIMIT 10'),
    reason: /LIMIT is not supported/,
    at: 'LIMIT'
  },
  {
    name: 'subquery in WHERE',
    yaml: one('SELECT * FROM t WHERE owner = bucket.user_id AND id IN (SELECT id FROM u)'),
    reason: /Subqueries are not supported/,
    at: 'SELECT id'
  },
  {
    name: 'subquery in FROM',
    yaml: one('SELECT * FROM (SELECT * FROM t) AS s'),
    reason: /Subqueries are not supported/,
    at: '(SELECT * FROM t) AS s'
  },
  {
    // pgsql-ast-parser (and so the reference) needs an alias for a subquery in FROM; without one it is a syntax error.
    name: 'subquery in FROM without alias',
    yaml: one('SELECT * FROM (SELECT * FROM t)'),
    reason: /Syntax error: Unexpected end of query/
  },
  {
    name: 'unknown function',
    yaml: one('SELECT id, frobnicate(name) AS n FROM t WHERE owner = bucket.user_id'),
    reason: /Unknown or unsupported function frobnicate\(\)/,
    at: 'frobnicate(name)'
  },
  {
    name: 'aggregate',
    yaml: one('SELECT count(*) AS n FROM t WHERE owner = bucket.user_id'),
    reason: /Aggregate functions/,
    at: '*'
  },
  {
    name: 'wrong argument count',
    yaml: one('SELECT upper(a, b) AS n FROM t WHERE owner = bucket.user_id'),
    reason: /upper\(\) takes 1 argument, got 2/
  },
  {
    name: 'DISTINCT',
    yaml: one('SELECT DISTINCT owner FROM t WHERE owner = bucket.user_id'),
    reason: /DISTINCT is not supported/,
    at: 'DISTINCT'
  },
  {
    name: 'LIKE',
    yaml: one("SELECT * FROM t WHERE owner = bucket.user_id AND name LIKE 'a%'"),
    reason: /LIKE is not supported/,
    at: 'LIKE'
  },
  {
    name: 'CASE',
    yaml: one('SELECT CASE WHEN a THEN 1 END AS x FROM t WHERE owner = bucket.user_id'),
    reason: /CASE expressions are not supported/,
    at: 'CASE'
  },
  {
    name: 'query parameter placeholder',
    yaml: one('SELECT * FROM t WHERE owner = ?'),
    reason: /Query parameters such as "\?" are not supported/,
    at: '?'
  },
  { name: 'not a SELECT', yaml: one('DELETE FROM t'), reason: /Only SELECT statements are supported/, at: 'DELETE' },
  {
    name: 'two statements',
    yaml: one('SELECT * FROM t WHERE owner = bucket.user_id; SELECT * FROM u'),
    reason: /Only one statement/
  },
  { name: 'syntax error', yaml: one('SELECT * FROM t WHERE owner = '), reason: /Unexpected end of query/ },
  {
    name: 'unterminated string',
    yaml: one("SELECT * FROM t WHERE owner = 'abc"),
    reason: /Unterminated string literal/,
    at: "'abc"
  },
  { name: 'data query without FROM', yaml: one('SELECT 1 AS id'), reason: /Data queries need a FROM clause/ },
  {
    name: 'request value in a data query',
    yaml: one('SELECT * FROM t WHERE owner = request.user_id()'),
    reason: /only available in parameter queries/,
    at: 'request.user_id()'
  },
  {
    name: 'bucket parameter in an output column',
    yaml: one('SELECT bucket.user_id AS u FROM t WHERE owner = bucket.user_id'),
    reason: /bucket parameters can only be used in filters/,
    at: 'bucket.user_id AS'
  },
  {
    name: 'bucket parameter compared with <',
    yaml: one('SELECT * FROM t WHERE owner > bucket.user_id'),
    reason: /bucket parameters can only be used in filters/,
    at: 'owner >'
  },
  {
    name: 'NOT over a bucket filter',
    yaml: one('SELECT * FROM t WHERE NOT owner = bucket.user_id'),
    reason: /NOT cannot be applied/
  },
  {
    name: 'unknown table qualifier',
    yaml: one('SELECT * FROM t WHERE x.owner = bucket.user_id'),
    reason: /Unknown table "x"/,
    at: 'x.owner'
  },
  {
    name: 'expression output without alias',
    yaml: one('SELECT upper(name) FROM t WHERE owner = bucket.user_id'),
    reason: /needs a name: add "AS <name>"/,
    at: 'upper(name)'
  },
  {
    name: 'CAST to an unsupported type',
    yaml: one('SELECT CAST(a AS varchar) AS a FROM t WHERE owner = bucket.user_id'),
    reason: /CAST to varchar is not supported/
  },
  {
    name: 'unknown request function',
    yaml: one('SELECT * FROM t WHERE owner = bucket.user_id', 'SELECT request.role() AS user_id'),
    reason: /Unknown request function request.role\(\)/,
    queryKind: 'parameters',
    at: 'request.role()'
  },
  {
    name: 'SELECT * in a parameter query',
    yaml: one('SELECT * FROM t', 'SELECT * FROM users WHERE id = request.user_id()'),
    reason: /SELECT \* is not allowed in parameter queries/,
    queryKind: 'parameters'
  },
  {
    name: 'column in a static parameter query',
    yaml: one('SELECT * FROM t WHERE o = bucket.org', 'SELECT org AS org'),
    reason: /a query without FROM can only use request values/,
    queryKind: 'parameters',
    at: 'org AS'
  },
  {
    name: 'bucket reference in a parameter query',
    yaml: one('SELECT * FROM t', 'SELECT bucket.x AS x'),
    reason: /cannot be used in parameter queries/,
    queryKind: 'parameters'
  },
  {
    name: 'OR between lookup conditions',
    yaml: one(
      'SELECT * FROM t WHERE o = bucket.org',
      "SELECT org FROM m WHERE user_id = request.user_id() OR org = request.jwt() ->> 'org'"
    ),
    reason: /Left and right sides of OR must use the same request values/,
    queryKind: 'parameters'
  },
  {
    name: 'lookup comparison other than =',
    yaml: one('SELECT * FROM t WHERE o = bucket.org', "SELECT org FROM m WHERE level > request.jwt() ->> 'level'"),
    reason: /Conditions combining table columns and request values/,
    queryKind: 'parameters',
    at: 'level >'
  },
  {
    name: 'request value as lookup output',
    yaml: one(
      'SELECT * FROM t WHERE o = bucket.org',
      'SELECT org, org || request.user_id() AS u FROM m WHERE user_id = request.user_id()'
    ),
    reason: /Cannot use table values and request values in the same expression/,
    queryKind: 'parameters'
  },
  {
    name: 'parameter queries with different columns',
    yaml: definition('def', {
      parameters: ['SELECT request.user_id() AS a', 'SELECT request.user_id() AS b'],
      data: ['SELECT * FROM t WHERE x = bucket.a']
    }),
    reason: /must output the same columns: expected \["a"\], got \["b"\]/,
    queryKind: 'parameters',
    queryIndex: 1
  },
  {
    name: 'literal _priority out of range',
    yaml: one('SELECT * FROM t WHERE o = bucket.user_id', 'SELECT request.user_id() AS user_id, 5 AS _priority'),
    reason: /"_priority" must be an integer from 0 to 3/,
    queryKind: 'parameters',
    at: '5 AS _priority'
  },
  {
    name: 'json_each in a data query',
    yaml: one('SELECT value AS id FROM json_each(tags)'),
    reason: /json_each\(\) can only be used in parameter queries/,
    queryKind: 'data'
  },
  {
    name: 'other table-valued functions',
    yaml: one('SELECT * FROM t WHERE o = bucket.user_id', 'SELECT value AS user_id FROM generate_series(1, 3)'),
    reason: /Table-valued function generate_series is not defined/,
    queryKind: 'parameters',
    at: 'generate_series(1, 3)'
  },
  {
    name: 'wildcard in the middle of a table name',
    yaml: definition('def', { data: ['SELECT * FROM "a%b"'] }),
    reason: /single trailing "%" wildcard/
  }
];

describe('bad sync rules are rejected with a message naming the place', () => {
  test.each(BAD)('$name', (bad) => {
    const result = parseSyncRules(bad.yaml);
    expect(result.ok).toBe(false);
    expect(result.rules).toBeUndefined();
    expect(result.errors.length).toBeGreaterThan(0);
    const error = result.errors.find((candidate) => bad.reason.test(candidate.reason));
    expect(
      error,
      `expected an error matching ${bad.reason}, got ${JSON.stringify(result.errors.map((e) => e.message))}`
    ).toBeDefined();
    expect(error!.severity).toBe('error');
    expect(error!.message).toContain(error!.reason);
    if (bad.bucketDefinition !== undefined) {
      expect(error!.bucketDefinition).toBe(bad.bucketDefinition);
      expect(error!.message).toContain(`bucket_definitions.${bad.bucketDefinition}`);
    }
    if (bad.queryKind !== undefined) expect(error!.queryKind).toBe(bad.queryKind);
    if (bad.queryIndex !== undefined) expect(error!.queryIndex).toBe(bad.queryIndex);
    if (error!.query !== undefined) {
      // Query errors name the definition, the query (kind, index, text) and the position.
      expect(error!.bucketDefinition).toBe('def');
      expect(error!.message).toMatch(/^bucket_definitions\.def\.(data|parameters)\[\d+\]/);
      expect(error!.message).toContain(JSON.stringify(error!.query));
      expect(error!.position).toBeDefined();
      expect(error!.message).toContain(`at line ${error!.position!.line}, column ${error!.position!.column}`);
      expect(error!.yamlPosition).toBeDefined();
    }
    if (bad.at !== undefined) {
      expect(error!.query, 'a query error').toBeDefined();
      expect(error!.query!.slice(error!.position!.start)).toMatch(
        new RegExp(`^${bad.at.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`)
      );
    }
    if (bad.yamlLine !== undefined) expect(error!.yamlPosition?.line).toBe(bad.yamlLine);
  });

  test('positions give line and column inside multi-line queries', () => {
    const result = parseSyncRules(`
bucket_definitions:
  def:
    parameters: SELECT request.user_id() AS user_id
    data:
      - |
        SELECT *
        FROM todos
        WHERE owner = bucket.owner
`);
    expect(result.ok).toBe(false);
    const [error] = result.errors;
    expect(error!.position).toMatchObject({ line: 3, column: 15 });
    expect(error!.yamlPosition).toEqual({ line: 6, column: 9 });
    expect(error!.message).toMatch(
      /^bucket_definitions\.def\.data\[0\] at line 3, column 15: Unknown bucket parameter "bucket\.owner"/
    );
  });

  test('all bad definitions are reported, not only the first', () => {
    const result = parseSyncRules(`
bucket_definitions:
  a:
    priority: 9
    data: [SELECT * FROM t]
  b:
    data: [SELECT * FROM t GROUP BY x]
  c:
    data: [SELECT * FROM t]
`);
    expect(result.errors.map((error) => error.bucketDefinition)).toEqual(['a', 'b']);
  });
});

describe('pathological queries', () => {
  test.each([
    ['deeply parenthesised', `SELECT * FROM t WHERE ${'('.repeat(5000)}1${')'.repeat(5000)}`, /nested too deeply/],
    [
      'parenthesised just past the limit',
      `SELECT * FROM t WHERE ${'('.repeat(201)}1${')'.repeat(201)}`,
      /nested too deeply/
    ],
    [
      'AND chain deeper than the limit',
      `SELECT * FROM t WHERE ${Array.from({ length: 300 }, (_, i) => `c${i} = 1`).join(' AND ')}`,
      /nested too deeply/
    ],
    [
      'very long AND chain',
      `SELECT * FROM t WHERE ${Array.from({ length: 5000 }, (_, i) => `c${i} = 1`).join(' AND ')}`,
      /Query is too long \(\d+ characters; at most 16384\)/
    ],
    [
      'deeply nested function calls',
      `SELECT ${'upper('.repeat(300)}x${')'.repeat(300)} AS v FROM t`,
      /nested too deeply/
    ],
    ['enormous string literal', `SELECT '${'x'.repeat(20000)}' AS v FROM t`, /Query is too long/]
  ])('%s: rejected with a clear error', (_name, query, reason) => {
    const result = parseSyncRules(definition('def', { data: [query] }));
    expect(result.ok).toBe(false);
    expect(result.errors[0]!.reason).toMatch(reason);
    expect(result.errors[0]!.bucketDefinition).toBe('def');
  });
});
