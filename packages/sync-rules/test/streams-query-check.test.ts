/**
 * The Sync Streams query language checks (STREAMS.md §3): what is accepted, and every rejected construct of
 * §3.9 / §3.10 with its message. Queries go through `parseSyncRules` inside a one-stream config.
 */
import { describe, expect, test } from 'vitest';
import { parseSyncRules } from '../src/index.js';

function streamConfig(query: string, edition = 3, extra = ''): string {
  return `config:\n  edition: ${edition}\nstreams:\n  s:\n${extra}    query: ${JSON.stringify(query)}\n`;
}

function diagnose(query: string, edition = 3) {
  const result = parseSyncRules(streamConfig(query, edition));
  return {
    errors: result.errors.map((issue) => issue.reason),
    warnings: result.warnings.map((issue) => issue.reason)
  };
}

describe('accepted edition-3 queries', () => {
  test.each([
    'SELECT * FROM t',
    'SELECT * FROM boards WHERE owner_id = auth.user_id()',
    "SELECT * FROM boards WHERE id IN subscription.parameter('ids')",
    'SELECT * FROM cards WHERE board_id IN (SELECT board_id FROM board_members WHERE user_id = auth.user_id())',
    'SELECT c.* FROM cards c JOIN boards b ON c.board_id = b.id JOIN board_members m ON m.board_id = b.id WHERE m.user_id = auth.user_id()',
    'SELECT * FROM boards WHERE owner_id = auth.user_id() OR is_public',
    "SELECT * FROM boards WHERE 'admin' IN (SELECT role FROM board_members WHERE user_id = auth.user_id())",
    'SELECT b.* FROM boards b',
    "SELECT * FROM boards WHERE state != 'x'",
    "SELECT * FROM boards WHERE tags && subscription.parameter('tags')",
    'SELECT * FROM boards WHERE auth.user_id() IN boards.editors',
    "SELECT * FROM boards WHERE 'x' IN connection.parameter('flags')",
    "SELECT * FROM boards WHERE id IN ARRAY['a', 'b']",
    "SELECT boards.* FROM boards, json_each(boards.tags) AS tag WHERE tag.value = auth.parameter('tag')",
    "SELECT * FROM boards WHERE id IN (SELECT value FROM json_each(auth.parameter('boards')))",
    'SELECT id, upper(title) AS title, CAST(rank AS TEXT) AS rank_text FROM cards',
    "SELECT * FROM cards WHERE (cards.state = 'open' AND NOT cards.archived) OR cards.pinned IS TRUE",
    'SELECT * FROM cards WHERE rank BETWEEN 1 AND 5',
    "SELECT * FROM cards WHERE data ->> 'kind' = 'x'",
    'SELECT id, cards.table_name() AS source FROM cards',
    'SELECT s.* FROM (SELECT id, title FROM cards) AS s(id, title)'
  ])('%s', (query) => {
    expect(diagnose(query).errors).toEqual([]);
  });
});

describe('§3.9 rejected constructs', () => {
  test.each([
    ['INSERT INTO t VALUES (1)', /Only SELECT statements/],
    ['SELECT * FROM t UNION SELECT * FROM u', /UNION is not supported/],
    ['WITH x AS (SELECT id FROM t) SELECT * FROM x', /WITH inside a query/],
    ['SELECT * FROM t; SELECT * FROM u', /Only one statement per query/],
    ['SELECT 1 AS one', /needs FROM/],
    ['SELECT 1 AS one FROM t', /references no table/],
    ['SELECT * FROM t, json_each(t.tags) AS j', /"\*" with several sources/],
    ["SELECT * FROM json_each(auth.parameter('x'))", /Cannot select from json_each/],
    ['SELECT a.id, b.name FROM a, b WHERE a.id = b.id', /must all come from one table/],
    ['SELECT *, auth.user_id() AS me FROM t', /Connection data .* cannot be selected/],
    ['SELECT * FROM t LIMIT 1', /LIMIT is not supported/],
    ['SELECT * FROM t ORDER BY id', /ORDER BY is not supported/],
    ['SELECT id FROM t GROUP BY id', /GROUP BY is not supported/],
    ['SELECT id FROM t GROUP BY id HAVING id > 1', /HAVING is not supported/],
    ['SELECT * FROM t OFFSET 3', /OFFSET is not supported/],
    ['SELECT DISTINCT id FROM t', /SELECT DISTINCT is not supported/],
    ['SELECT t.* FROM t LEFT JOIN u ON t.id = u.id', /LEFT JOIN is not supported/],
    ['SELECT t.* FROM t JOIN u USING (id)', /USING is not supported/],
    ['SELECT * FROM t WHERE id IN (SELECT * FROM u)', /"\*" is not allowed in a subquery/],
    ['SELECT * FROM t WHERE id IN (SELECT a, b FROM u)', /exactly one column, found 2/],
    ['SELECT * FROM t WHERE id = (SELECT a FROM u)', /subquery is only supported on the right of IN/],
    ['SELECT t.* FROM t, u WHERE id = auth.user_id()', /Column "id" is ambiguous/],
    ['SELECT * FROM t WHERE x.id = 1', /Unknown table or alias "x"/],
    ['SELECT t.* FROM t, u AS t', /Duplicate name "t" in FROM/],
    ['SELECT * FROM t WHERE owner_id != auth.user_id()', /!= between row data of "t" and connection data/],
    ["SELECT * FROM t WHERE rank < connection.parameter('max')", /mixes data of different sources/],
    ['SELECT * FROM t WHERE id NOT IN (SELECT a FROM u WHERE u.owner = auth.user_id())', /NOT IN \(SELECT …\)/],
    ['SELECT * FROM t WHERE NOT (t.owner = auth.user_id())', /NOT \(… = …\) between/],
    ["SELECT t.* FROM t, u WHERE lower(t.x) || u.y = 'q'", /mixes data of different sources/],
    ['SELECT t.* FROM t, u, json_each(t.a || u.b) AS j', /must depend on one table/],
    ['SELECT t.* FROM t, json_each(t.a) AS j, json_each(j.value) AS k', /cannot depend on another json_each/],
    ['SELECT * FROM t WHERE id = $1', /Positional parameters \(\$1\)/],
    ["SELECT * FROM t WHERE title LIKE 'a%'", /LIKE is not supported/],
    ['SELECT * FROM t WHERE rank = -1', /Unary minus/],
    ['SELECT * FROM t WHERE rank = -(rank)', /Unary minus/],
    ['SELECT * FROM t WHERE random() > 0', /random\(\) is not deterministic/],
    ['SELECT * FROM t WHERE nope(id)', /Unknown or unsupported function nope\(\)/],
    ['SELECT * FROM t WHERE upper(a, b) = 1', /upper\(\) takes 1 argument/],
    ['SELECT CAST(id AS VARCHAR) AS id FROM t', /CAST to VARCHAR is not supported/],
    ['SELECT * FROM t WHERE owner = request.user_id()', /request\.user_id\(\) does not exist in streams/],
    ['SELECT * FROM t WHERE owner = auth.jwt()', /auth\.jwt\(\) is not a stream function/],
    ['SELECT * FROM t WHERE owner = subscription.user_id()', /subscription\.user_id\(\) is not a stream function/],
    ['SELECT * FROM t WHERE owner = auth.parameter()', /auth\.parameter\(\) is not a stream function/],
    ["SELECT * FROM t WHERE id IN ('a', 'b')", /parenthesised value list/],
    ['SELECT * FROM t WHERE (flags & 4) = 4', /Operator & is not supported/],
    ['SELECT * FROM generate_series(1, 3) AS g', /only json_each/],
    ['SELECT * FROM t WHERE t.nope() = 1', /t\.nope\(\) is not supported; row metadata/],
    ['SELECT * FROM t WHERE EXISTS (SELECT 1 FROM u)', /Unsupported expression|subquery/]
  ])('%s', (query, reason) => {
    const { errors } = diagnose(query);
    expect(
      errors.some((error) => reason.test(error)),
      JSON.stringify(errors)
    ).toBe(true);
  });
});

describe('result-column warnings (edition 3)', () => {
  test('an expression column without alias warns that its name is unspecified', () => {
    const { errors, warnings } = diagnose('SELECT id, upper(title) FROM cards');
    expect(errors).toEqual([]);
    expect(warnings).toContainEqual(expect.stringMatching(/Result column has no name/));
  });

  test('an unquoted alias on the primary table of a join warns; a quoted one does not', () => {
    const query = 'SELECT c.* FROM cards c JOIN boards b ON c.board_id = b.id WHERE b.owner_id = auth.user_id()';
    const { errors, warnings } = diagnose(query);
    expect(errors).toEqual([]);
    expect(warnings).toContainEqual(expect.stringMatching(/Rows sync under the alias "c"/));
    expect(diagnose(query.replace('cards c', 'cards "c"').replace('c.', '"c".')).warnings).toEqual([]);
    expect(diagnose('SELECT b.* FROM boards b').warnings).toEqual([]);
  });

  test('table_suffix() on a table that is not a wildcard pattern warns', () => {
    expect(diagnose('SELECT id, t.table_suffix() AS suffix FROM t').warnings).toContainEqual(
      expect.stringMatching(/not a wildcard pattern/)
    );
    expect(diagnose('SELECT id, t.table_suffix() AS suffix FROM "items_%" AS t').warnings).toEqual([]);
  });

  test('* after an aliased column warns', () => {
    expect(diagnose('SELECT title AS id, * FROM cards').warnings).toContainEqual(
      expect.stringMatching(/"\*" after an aliased column/)
    );
  });
});

describe('edition 2 dialect (§3.10)', () => {
  test.each([
    ['SELECT * FROM t', []],
    ["SELECT * FROM t WHERE owner = auth.user_id() AND id IN subscription.parameter('ids')", []],
    ['SELECT * FROM t WHERE id IN (SELECT board_id FROM m WHERE m.user_id = auth.user_id())', []],
    ['SELECT * FROM t WHERE json_valid(data)', []]
  ])('accepted: %s', (query, expected) => {
    expect(diagnose(query, 2).errors).toEqual(expected);
  });

  test.each([
    ['SELECT t.* FROM t, u WHERE t.id = u.id', /exactly one table/],
    ['SELECT s.* FROM (SELECT id FROM t) AS s', /exactly one table/],
    ['SELECT title FROM t', /must output an "id" column/],
    ["SELECT * FROM t WHERE 'admin' IN (SELECT role FROM m WHERE m.user_id = auth.user_id())", /constant on the left/],
    ['SELECT * FROM t WHERE id IN (SELECT a FROM m WHERE m.x = 1 OR m.y = 2)', /OR is not supported inside a subquery/],
    ['SELECT * FROM t WHERE id IN (SELECT a FROM m, n WHERE m.x = n.y)', /subquery selects from exactly one table/]
  ])('rejected: %s', (query, reason) => {
    const { errors } = diagnose(query, 2);
    expect(
      errors.some((error) => reason.test(error)),
      JSON.stringify(errors)
    ).toBe(true);
  });
});

describe('dangerous-parameter warning (§4.9, edition 3)', () => {
  const dangerous = (query: string, edition = 3, extra = '') =>
    parseSyncRules(streamConfig(query, edition, extra)).warnings.filter((w) =>
      w.reason.startsWith('Potentially dangerous query')
    );

  test.each([
    ["SELECT * FROM boards WHERE id = subscription.parameter('b')", true],
    ["SELECT * FROM boards WHERE id = subscription.parameter('b') AND auth.parameter('role') = 'admin'", true],
    ["SELECT * FROM boards WHERE id = subscription.parameter('b') AND team_id = auth.parameter('team')", false],
    ["SELECT * FROM boards WHERE connection.parameter('all')", true],
    ["SELECT * FROM boards WHERE owner_id = auth.user_id() OR id = subscription.parameter('b')", true],
    ['SELECT * FROM boards', false],
    ['SELECT * FROM boards WHERE owner_id = auth.user_id()', false],
    ["SELECT * FROM boards WHERE id IN subscription.parameter('ids')", true],
    [
      "SELECT * FROM cards WHERE board_id IN (SELECT board_id FROM board_members WHERE user_id = subscription.parameter('u'))",
      true
    ],
    [
      "SELECT * FROM cards WHERE board_id = subscription.parameter('id') AND board_id IN (SELECT board_id FROM board_members WHERE user_id = auth.user_id())",
      false
    ],
    // A key-less index (public boards) is neutral: nothing a client sends selects the bucket.
    ['SELECT * FROM cards WHERE board_id IN (SELECT id FROM boards WHERE is_public)', false],
    // A two-level chain inherits the trust of its first key.
    [
      "SELECT c.* FROM cards c, boards b, team_members m WHERE c.board_id = b.id AND b.team_id = m.team_id AND m.user_id = subscription.parameter('u')",
      true
    ],
    [
      'SELECT c.* FROM cards c, boards b, team_members m WHERE c.board_id = b.id AND b.team_id = m.team_id AND m.user_id = auth.user_id()',
      false
    ]
  ])('%s → warns: %s', (query, warns) => {
    const warnings = dangerous(query);
    expect(warnings.length > 0).toBe(warns);
    if (warns) expect(warnings[0]!.message).toMatch(/^streams\.s\.query at line 1, column \d+: Potentially dangerous/);
  });

  test('the warning points at the first untrusted reference', () => {
    const [warning] = dangerous("SELECT * FROM boards WHERE id = subscription.parameter('b')");
    expect(warning!.position).toMatchObject({ line: 1, column: 33 });
  });

  test('accept_potentially_dangerous_queries: true removes it', () => {
    expect(
      dangerous(
        "SELECT * FROM boards WHERE id = subscription.parameter('b')",
        3,
        '    accept_potentially_dangerous_queries: true\n'
      )
    ).toEqual([]);
  });

  test('edition 2 has no dangerous-query warning', () => {
    expect(dangerous("SELECT * FROM boards WHERE id = subscription.parameter('b')", 2)).toEqual([]);
  });

  test('CTEs are followed: an auth-keyed CTE makes the parameter authenticated', () => {
    const yaml = `config:
  edition: 3
with:
  mine: SELECT board_id FROM board_members WHERE user_id = auth.user_id()
  asked: SELECT board_id FROM board_members WHERE user_id = subscription.parameter('u')
streams:
  safe:
    query: SELECT * FROM cards WHERE board_id IN mine
  safe_join:
    query: SELECT c.* FROM cards c, mine AS m WHERE c.board_id = m.board_id
  unsafe:
    query: SELECT * FROM cards WHERE board_id IN asked
`;
    const result = parseSyncRules(yaml);
    expect(result.errors).toEqual([]);
    expect(result.ok).toBe(true);
    expect(result.warnings.filter((w) => w.reason.startsWith('Potentially dangerous')).map((w) => w.stream)).toEqual([
      'unsafe'
    ]);
  });
});

describe('size limits', () => {
  const ors = (column: string, count: number) =>
    Array.from({ length: count }, (_, index) => `${column} = ${index}`).join(' OR ');

  test('a filter that expands to more than 100 OR-of-AND terms is rejected', () => {
    const { errors } = diagnose(`SELECT * FROM t WHERE (${ors('a', 11)}) AND (${ors('b', 10)})`);
    expect(errors).toContainEqual(expect.stringMatching(/expands to more than 100 OR-of-AND terms/));
    expect(diagnose(`SELECT * FROM t WHERE (${ors('a', 10)}) AND (${ors('b', 10)})`).errors).toEqual([]);
  });

  test('a stream whose queries make more than 100 bucket sources is rejected', () => {
    const query = (count: number) => JSON.stringify(`SELECT * FROM t WHERE ${ors('a', count)}`);
    const yaml = (second: number) =>
      `config:\n  edition: 3\nstreams:\n  big:\n    queries:\n      - ${query(60)}\n      - ${query(second)}\n`;
    const over = parseSyncRules(yaml(41)).errors.map((e) => e.message);
    expect(over).toContainEqual(expect.stringMatching(/^streams\.big .*compiles to 101 bucket sources/));
    expect(parseSyncRules(yaml(40)).errors).toEqual([]);
  });
});

describe('the §4.10 worked example', () => {
  test('validates without warnings', () => {
    const result = parseSyncRules(`config:
  edition: 3
streams:
  board:                       # explicit only
    priority: 2
    query: >
      SELECT * FROM cards
       WHERE board_id = subscription.parameter('id')
         AND board_id IN (SELECT board_id FROM board_members
                          WHERE user_id = auth.user_id())
  my_boards:
    auto_subscribe: true
    queries:
      - SELECT * FROM boards WHERE owner_id = auth.user_id()
      - SELECT * FROM boards WHERE is_public
`);
    expect(result.warnings).toEqual([]);
    expect(result.errors).toEqual([]);
    expect(result.ok).toBe(true);
  });
});
