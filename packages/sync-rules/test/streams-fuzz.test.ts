/**
 * Random Sync Streams configs and queries never crash the loader: every outcome is a list of diagnostics
 * (never an "Internal error"), and a config without other problems is refused only as "not served yet".
 */
import fc from 'fast-check';
import { describe, expect, test } from 'vitest';
import { stringify } from 'yaml';
import { parseSyncRules } from '../src/index.js';

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
  // Streams are never served yet: a streams config never loads.
  expect(result.ok).toBe(false);
}

describe('streams fuzz', () => {
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
