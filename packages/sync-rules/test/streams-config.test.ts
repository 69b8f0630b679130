/**
 * Sync Streams configuration (STREAMS.md §2): editions, `config:`, stream entries, the mixing rules and the
 * §2.4 diagnostics.
 */
import { describe, expect, test } from 'vitest';
import { parseSyncRules, type SyncRulesIssue } from '../src/index.js';

function check(yaml: string) {
  const result = parseSyncRules(yaml);
  return {
    errors: result.errors,
    warnings: result.warnings,
    /** A valid streams config loads with its streams. */
    validStreams: result.ok && result.rules.sources.some((source) => source.kind === 'stream'),
    result
  };
}

function expectError(yaml: string, reason: RegExp): SyncRulesIssue {
  const { errors } = check(yaml);
  const error = errors.find((issue) => reason.test(issue.reason));
  expect(
    error,
    `expected an error matching ${reason}, got ${JSON.stringify(errors.map((e) => e.message))}`
  ).toBeDefined();
  expect(error!.severity).toBe('error');
  return error!;
}

const EDITION_3 = 'config:\n  edition: 3\n';

describe('editions and the mix with bucket_definitions', () => {
  test('config.edition missing means edition 1, where every stream is a fatal error', () => {
    const error = expectError('streams:\n  s:\n    query: SELECT * FROM t\n', /require edition 2 or later/);
    expect(error.stream).toBe('s');
    expect(error.message).toMatch(/^streams\.s \(YAML line 2, column 3\)/);
  });

  test('edition 2 accepts bucket_definitions and streams together and warns about the alpha dialect', () => {
    const { validStreams, warnings } = check(
      'config:\n  edition: 2\nbucket_definitions:\n  global:\n    data: [SELECT * FROM lists]\nstreams:\n  s:\n    query: SELECT * FROM t\n'
    );
    expect(validStreams).toBe(true);
    expect(warnings.map((w) => w.reason)).toContainEqual(expect.stringMatching(/alpha version/));
  });

  test('edition 3 rejects bucket_definitions and requires streams', () => {
    expectError(
      `${EDITION_3}bucket_definitions:\n  global:\n    data: [SELECT * FROM lists]\nstreams:\n  s:\n    query: SELECT * FROM t\n`,
      /Edition 3 does not accept "bucket_definitions"/
    );
    expectError(`${EDITION_3}bucket_definitions:\n  global:\n    data: [SELECT * FROM lists]\n`, /requires "streams"/);
  });

  test('a valid edition-3 config loads and serves its streams', () => {
    const { validStreams, result } = check(`${EDITION_3}streams:\n  s:\n    query: SELECT * FROM t\n`);
    expect(validStreams).toBe(true);
    expect(result.errors).toEqual([]);
    expect(result.rules!.sources).toEqual([{ name: 's', kind: 'stream', isDefault: false, priority: 3 }]);
  });

  test('a name used by a bucket definition and a stream is a fatal error', () => {
    expectError(
      'config:\n  edition: 2\nbucket_definitions:\n  same:\n    data: [SELECT * FROM lists]\nstreams:\n  same:\n    query: SELECT * FROM t\n',
      /Duplicate stream or bucket definition name "same"/
    );
  });

  test('unknown keys at the root, in config and in a stream entry are fatal errors', () => {
    expectError(`${EDITION_3}streams:\n  s:\n    query: SELECT * FROM t\nextra: 1\n`, /Unknown top-level key "extra"/);
    expectError(
      `config:\n  edition: 3\n  flux: true\nstreams:\n  s:\n    query: SELECT * FROM t\n`,
      /Unknown key "flux" in "config"/
    );
    const error = expectError(
      `${EDITION_3}streams:\n  s:\n    query: SELECT * FROM t\n    colour: red\n`,
      /Unknown key "colour" in stream/
    );
    expect(error.message).toMatch(/^streams\.s \(YAML line 6, column 5\)/);
  });
});

describe('the config block', () => {
  test('edition 2 or later enables the four compatibility fixes unless overridden', () => {
    // Observable here through the option rules: timestamp_max_precision needs timestamps_iso8601.
    expect(
      check(`config:\n  edition: 3\n  timestamp_max_precision: seconds\nstreams:\n  s:\n    query: SELECT * FROM t\n`)
        .validStreams
    ).toBe(true);
    expectError(
      `config:\n  edition: 3\n  timestamps_iso8601: false\n  timestamp_max_precision: seconds\nstreams:\n  s:\n    query: SELECT * FROM t\n`,
      /requires "timestamps_iso8601"/
    );
  });

  test('timestamp_max_precision without timestamps_iso8601 (edition 1) is a fatal error', () => {
    expectError(
      'config:\n  timestamp_max_precision: seconds\nbucket_definitions:\n  g:\n    data: [SELECT * FROM t]\n',
      /requires "timestamps_iso8601"/
    );
  });

  test('option values are checked', () => {
    expectError(
      `config:\n  edition: 3\n  timestamp_max_precision: hours\nstreams:\n  s:\n    query: SELECT * FROM t\n`,
      /must be one of seconds/
    );
    expectError(
      `config:\n  edition: 3\n  storage_version: 7\nstreams:\n  s:\n    query: SELECT * FROM t\n`,
      /storage_version" must be 2 or 3/
    );
    expectError(
      `config:\n  edition: 3\n  fixed_json_extract: yes please\nstreams:\n  s:\n    query: SELECT * FROM t\n`,
      /must be true or false/
    );
    expectError(
      `config:\n  edition: three\nstreams:\n  s:\n    query: SELECT * FROM t\n`,
      /must be an integer from 1 to 3/
    );
    const { warnings } = check(
      `config:\n  edition: 3\n  storage_version: 3\nstreams:\n  s:\n    query: SELECT * FROM t\n`
    );
    expect(warnings.map((w) => w.reason)).toContainEqual(expect.stringMatching(/unstable/));
  });

  test('unstable_sqlite_expression_engine needs edition 3 and fixed_json_extract', () => {
    expectError(
      'config:\n  edition: 2\n  unstable_sqlite_expression_engine: true\nstreams:\n  s:\n    query: SELECT * FROM t\n',
      /requires edition: 3/
    );
    expectError(
      `config:\n  edition: 3\n  fixed_json_extract: false\n  unstable_sqlite_expression_engine: true\nstreams:\n  s:\n    query: SELECT * FROM t\n`,
      /requires fixed_json_extract/
    );
  });
});

describe('stream entries', () => {
  test('edition 3: a stream without query/queries, or with both, is a fatal error', () => {
    expectError(`${EDITION_3}streams:\n  s:\n    auto_subscribe: true\n`, /needs "query" or "queries"/);
    expectError(
      `${EDITION_3}streams:\n  s:\n    query: SELECT * FROM t\n    queries: [SELECT * FROM u]\n`,
      /either "query" or "queries", not both/
    );
  });

  test('edition 2: a stream without query is an error (the reference drops it silently)', () => {
    expectError('config:\n  edition: 2\nstreams:\n  s:\n    auto_subscribe: true\n', /needs "query"/);
  });

  test('edition 2 rejects queries, stream with and root with', () => {
    expectError(
      'config:\n  edition: 2\nstreams:\n  s:\n    queries: [SELECT * FROM t]\n',
      /"queries".*needs edition 3/
    );
    expectError(
      'config:\n  edition: 2\nstreams:\n  s:\n    with:\n      c: SELECT id FROM t\n    query: SELECT * FROM t\n',
      /"with".*needs edition 3/
    );
    expectError(
      'config:\n  edition: 2\nwith:\n  c: SELECT id FROM t\nstreams:\n  s:\n    query: SELECT * FROM t\n',
      /root "with".*needs edition 3/
    );
  });

  test.each([
    ['priority: 4', /"priority" must be an integer from 0 to 3, got "4"/],
    ['priority: 1.5', /"priority" must be an integer from 0 to 3, got "1.5"/],
    ['auto_subscribe: "yes"', /"auto_subscribe" must be true or false/],
    ['accept_potentially_dangerous_queries: 1', /must be true or false/],
    ['query: [SELECT 1]', /"query" must be a SELECT query/],
    ['queries: []', /"queries" must be a non-empty list/]
  ])('%s is a fatal error', (line, reason) => {
    const error = expectError(`${EDITION_3}streams:\n  s:\n    ${line}\n`, reason);
    expect(error.stream).toBe('s');
  });

  test('a stream that is not a mapping is a fatal error', () => {
    expectError(`${EDITION_3}streams:\n  s: SELECT * FROM t\n`, /A stream must be a mapping/);
  });

  test('every valid key is accepted, with any YAML scalar style for queries', () => {
    const { validStreams, errors } = check(`${EDITION_3}streams:
  s:
    auto_subscribe: true
    priority: 1
    accept_potentially_dangerous_queries: true
    with:
      mine: SELECT board_id FROM board_members WHERE user_id = auth.user_id()
    queries:
      - |
        SELECT * FROM cards
         WHERE board_id IN mine
      - >
        SELECT * FROM boards WHERE id IN mine
      - "SELECT * FROM teams WHERE id = auth.parameter('team')"
`);
    expect(errors).toEqual([]);
    expect(validStreams).toBe(true);
  });
});

describe('diagnostics name the stream, the query and the position', () => {
  test('an error in the second of several queries', () => {
    const error = expectError(
      `${EDITION_3}streams:\n  s:\n    queries:\n      - SELECT * FROM t\n      - SELECT * FROM t LIMIT 5\n`,
      /LIMIT is not supported/
    );
    expect(error).toMatchObject({ stream: 's', queryKind: 'queries', queryIndex: 1, query: 'SELECT * FROM t LIMIT 5' });
    expect(error.message).toMatch(/^streams\.s\.queries\[1\] at line 1, column 1: LIMIT/);
  });

  test('an error inside a multi-line block query has its line and column', () => {
    const error = expectError(
      `${EDITION_3}streams:\n  s:\n    query: |\n      SELECT * FROM cards\n       WHERE title LIKE 'a%'\n`,
      /LIKE is not supported/
    );
    expect(error.position).toMatchObject({ line: 2, column: 8 });
    expect(error.message).toMatch(/^streams\.s\.query at line 2, column 8/);
  });

  test('an error in a CTE names the CTE', () => {
    const error = expectError(
      `${EDITION_3}with:\n  bad: SELECT * FROM t\nstreams:\n  s:\n    query: SELECT * FROM t WHERE id IN bad\n`,
      /"\*" is not allowed in a subquery or CTE/
    );
    expect(error.cte).toBe('bad');
    expect(error.message).toMatch(/^with\.bad at line 1, column 8/);
  });
});

describe('CTE warnings', () => {
  test('an unused CTE (global or local) is a warning, not an error; warnings never block', () => {
    const { warnings, validStreams } = check(`${EDITION_3}with:
  unused_global: SELECT id FROM t
streams:
  s:
    with:
      unused_local: SELECT id FROM t
    query: SELECT * FROM t
`);
    expect(validStreams).toBe(true);
    expect(warnings.map((w) => w.message)).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/^streams\.s\.with\.unused_local .*CTE "unused_local" is not used/),
        expect.stringMatching(/^with\.unused_global .*CTE "unused_global" is not used/)
      ])
    );
  });

  test('a CTE with a syntax error is an error even if unused', () => {
    expectError(`${EDITION_3}with:\n  c: SELECT id FROM\nstreams:\n  s:\n    query: SELECT * FROM t\n`, /Syntax error/);
  });

  test('a local CTE shadows a global CTE of the same name', () => {
    // The global one has two columns (unusable with IN); the local one has one: no error, and the global is unused.
    const { errors, warnings } = check(`${EDITION_3}with:
  mine: SELECT board_id, role FROM board_members
streams:
  s:
    with:
      MINE: SELECT board_id FROM board_members WHERE user_id = auth.user_id()
    query: SELECT * FROM cards WHERE board_id IN mine
`);
    expect(errors).toEqual([]);
    expect(warnings.map((w) => w.message)).toContainEqual(expect.stringMatching(/^with\.mine .*not used/));
  });

  test('IN <cte> needs a one-column CTE', () => {
    expectError(
      `${EDITION_3}with:\n  two: SELECT board_id, role FROM board_members\nstreams:\n  s:\n    query: SELECT * FROM cards WHERE board_id IN two\n`,
      /needs a CTE with exactly one column; "two" has 2/
    );
  });
});

describe('edition 2 warnings', () => {
  test('an auto_subscribe stream reading subscription.* warns (default subscriptions have no parameters)', () => {
    const { warnings, validStreams } = check(
      "config:\n  edition: 2\nstreams:\n  s:\n    auto_subscribe: true\n    query: SELECT * FROM t WHERE id = subscription.parameter('id')\n"
    );
    expect(validStreams).toBe(true);
    expect(warnings.map((w) => w.message)).toContainEqual(
      expect.stringMatching(/^streams\.s\.query .*reads subscription\.\*/)
    );
  });
});
