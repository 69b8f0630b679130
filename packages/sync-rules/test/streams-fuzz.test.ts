/**
 * Random Sync Streams configs and queries never crash the loader: every outcome is a list of diagnostics
 * (never an "Internal error"); configs that load compile, replicate and resolve without throwing.
 */
import fc from 'fast-check';
import { describe, expect, test } from 'vitest';
import { stringify } from 'yaml';
import { parseSyncRules, serializeParameterLookup, type ParameterLookup, type SqliteValue } from '../src/index.js';

const FRAGMENTS = [
  'SELECT',
  '*',
  'FROM',
  'WHERE',
  'AND',
  'OR',
  'NOT',
  'IN',
  '&&',
  'IS NULL',
  'AS',
  'JOIN',
  'ON',
  ',',
  '(',
  ')',
  '=',
  '!=',
  '<',
  '.',
  'cards',
  'boards',
  'c',
  'b',
  'id',
  'board_id',
  'mine',
  'json_each(b.tags)',
  'value',
  'auth.user_id()',
  "auth.parameter('t')",
  "subscription.parameter('id')",
  "connection.parameter('x')",
  'subscription.parameters()',
  "'a'",
  '1',
  '-1',
  'ARRAY[1, 2]',
  '(SELECT board_id FROM board_members WHERE user_id = auth.user_id())',
  'upper(id)',
  'c.*',
  'LIMIT 1',
  'DISTINCT',
  'CASE WHEN 1 THEN 2 END',
  'CAST(id AS TEXT)',
  "data ->> 'k'"
];

const query = fc.array(fc.constantFrom(...FRAGMENTS), { minLength: 1, maxLength: 24 }).map((parts) => parts.join(' '));
const selectQuery = fc
  .tuple(
    fc.constantFrom('SELECT * FROM cards', 'SELECT c.* FROM cards c, boards b', 'SELECT * FROM cards, mine AS m'),
    fc.array(fc.constantFrom(...FRAGMENTS), { maxLength: 16 })
  )
  .map(([head, tail]) => `${head} WHERE ${tail.join(' ')}`);

function expectDiagnosticsOnly(yaml: string): void {
  const result = parseSyncRules(yaml);
  for (const issue of [...result.errors, ...result.warnings]) {
    expect(issue.message).not.toMatch(/Internal error/);
    expect(issue.message.length).toBeGreaterThan(0);
  }
  if (result.ok) expect(result.errors).toEqual([]);
}

const sqlValue = fc.oneof(
  fc.constant(null),
  fc.constantFrom('a', 'b', 'u1', '["a","b"]', '{"k":1}', 'not json', '[1, [2]]'),
  fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }),
  fc.double(),
  fc.constant(new Uint8Array([1, 2]))
);
const jsonValue = fc.jsonValue({ maxDepth: 3 });
const columns = ['id', 'board_id', 'user_id', 'tags', 'owner_id', 'role', 'value', 'data'];
const row = fc.record(Object.fromEntries(columns.map((column) => [column, sqlValue])), { requiredKeys: [] });
const subscription = fc.record({
  stream: fc.constantFrom('s', 't', 'nope'),
  parameters: fc.oneof(fc.constant(null), fc.dictionary(fc.constantFrom('id', 'ids', 'x', 't'), jsonValue)),
  overridePriority: fc.oneof(fc.constant(null), fc.integer({ min: -1, max: 4 }), fc.double())
});

describe('streams fuzz', () => {
  test('compiled random streams evaluate random rows and resolve random subscriptions without throwing', async () => {
    let compiled = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(
          query,
          selectQuery,
          fc.constantFrom(
            'SELECT * FROM cards WHERE board_id IN mine',
            "SELECT c.* FROM cards c, boards b WHERE c.board_id = b.id AND b.owner_id = auth.user_id() AND c.id = subscription.parameter('id')",
            "SELECT * FROM cards WHERE 'admin' IN (SELECT role FROM board_members WHERE user_id = auth.user_id())",
            "SELECT b.* FROM boards b, json_each(b.tags) AS tag WHERE tag.value = auth.parameter('t')",
            "SELECT * FROM boards WHERE tags && subscription.parameter('ids') OR id IN ARRAY['a', 'b']",
            "SELECT * FROM cards WHERE NOT (data ->> 'k' = 'x') AND board_id = connection.parameter('x')"
          )
        ),
        fc.constantFrom(
          "SELECT * FROM cards WHERE board_id IN subscription.parameter('ids')",
          'SELECT * FROM boards WHERE auth.user_id() IN boards.tags OR owner_id = auth.user_id()'
        ),
        fc.array(fc.tuple(fc.constantFrom('cards', 'boards', 'board_members', 'c', 'b'), row), { maxLength: 6 }),
        fc.array(subscription, { maxLength: 4 }),
        fc.boolean(),
        fc.dictionary(fc.constantFrom('ids', 'x', 't', 'sub'), jsonValue),
        async (sql, other, rows, subscriptions, includeDefaults, token) => {
          const yaml = stringify({
            config: { edition: 3 },
            with: { mine: 'SELECT board_id FROM board_members WHERE user_id = auth.user_id()' },
            streams: { s: { query: sql, auto_subscribe: true }, t: { query: other } }
          });
          const loaded = parseSyncRules(yaml, { deploymentId: 3 });
          if (!loaded.ok) return;
          compiled++;
          const index = new Map<string, Array<Record<string, SqliteValue>>>();
          for (const [table, values] of rows) {
            const input = { table, row: values as Record<string, SqliteValue> };
            loaded.rules.evaluateRow(input);
            for (const entry of loaded.rules.evaluateParameterRow(input).lookups)
              index.set(entry.serializedLookup, [...(index.get(entry.serializedLookup) ?? []), ...entry.outputs]);
          }
          const resolved = await loaded.rules.resolveConnection(
            { userId: 'u1', tokenParameters: token, clientParameters: token, includeDefaults, subscriptions },
            (lookups: ParameterLookup[]) =>
              Promise.resolve(lookups.map((lookup) => index.get(serializeParameterLookup(lookup)) ?? []))
          );
          for (const stream of resolved.streams)
            for (const error of stream.errors) expect(error.message).toMatch(/^Error evaluating bucket ids: /);
        }
      ),
      { numRuns: 300 }
    );
    // Most runs must get past loading, or this would test nothing.
    expect(compiled).toBeGreaterThan(60);
  });

  test('random queries give diagnostics, never a crash', () => {
    fc.assert(
      fc.property(
        fc.oneof(query, selectQuery),
        fc.integer({ min: 2, max: 3 }),
        fc.boolean(),
        (sql, edition, withCte) => {
          const config: Record<string, unknown> = {
            config: { edition },
            streams: { s: { query: sql, auto_subscribe: true } }
          };
          if (withCte && edition === 3)
            config.with = { mine: 'SELECT board_id FROM board_members WHERE user_id = auth.user_id()' };
          expectDiagnosticsOnly(stringify(config));
        }
      ),
      { numRuns: 400 }
    );
  });

  test('random stream entry shapes give diagnostics, never a crash', () => {
    const value = fc.oneof(
      fc.constant(null),
      fc.boolean(),
      fc.integer({ min: -5, max: 9 }),
      fc.double({ noNaN: true }),
      fc.string({ maxLength: 8 }),
      fc.constant('SELECT * FROM t'),
      fc.array(fc.constantFrom('SELECT * FROM t', 'SELECT id FROM u', 7), { maxLength: 3 }),
      fc.dictionary(fc.constantFrom('c', 'D', '1x'), fc.constantFrom('SELECT id FROM t', 3))
    );
    const entry = fc.dictionary(
      fc.constantFrom(
        'query',
        'queries',
        'auto_subscribe',
        'priority',
        'accept_potentially_dangerous_queries',
        'with',
        'other'
      ),
      value
    );
    fc.assert(
      fc.property(
        fc.dictionary(fc.string({ minLength: 1, maxLength: 5 }), fc.oneof(entry, value), { maxKeys: 4 }),
        fc.integer({ min: 0, max: 4 }),
        (streams, edition) => expectDiagnosticsOnly(stringify({ config: { edition }, streams }))
      ),
      { numRuns: 300 }
    );
  });
});
