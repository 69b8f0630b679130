import fc from 'fast-check';
import { describe, expect, test } from 'vitest';
import { stringify } from 'yaml';
import { parseSyncRules, type SyncRules } from '../src/index.js';

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
  'SELECT', '*', 'FROM', 'WHERE', 'AND', 'OR', 'NOT', 'IN', 'IS', 'NULL', 'AS', 'CAST', 'TEXT', 'INTEGER', '(', ')', ',', '.', '=', '!=',
  '<', '>=', '->', '->>', '||', '+', '-', '/', "'x'", "'$.a'", '"q"', '1', '2.5', '0x10', 'id', 't', 'bucket.p', 'bucket.q', 'request.user_id()',
  'request.jwt()', 'request.parameters()', 'token_parameters.a', 'user_parameters.b', 'upper', 'json_extract', 'JOIN', 'GROUP BY', 'LIMIT',
  ';', '--', '/*', '?', 'CASE', 'json_each(', 'value', 'key', 'SELECT (SELECT', 'coalesce(', 'bucket', 'request.', "'", '"'
];
const sqlish = fc.array(fc.oneof(fc.constantFrom(...SQL_FRAGMENTS), fc.string({ maxLength: 3 })), { maxLength: 14 }).map((parts) => parts.join(' '));

const yamlScalar = fc.oneof(fc.string(), fc.integer(), fc.double(), fc.boolean(), fc.constant(null), sqlish);
const { value: yamlValue } = fc.letrec((tie) => ({
  value: fc.oneof({ depthSize: 'small', withCrossShrink: true }, yamlScalar, tie('list'), tie('map')),
  list: fc.array(tie('value'), { maxLength: 4 }),
  map: fc.dictionary(fc.oneof(fc.string({ maxLength: 6 }), fc.constantFrom('data', 'parameters', 'priority', 'bucket_definitions')), tie('value'), { maxKeys: 4 })
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
const rulesLike = fc.record({ bucket_definitions: fc.dictionary(fc.string({ minLength: 1, maxLength: 8 }), definitionLike, { maxKeys: 3 }) });

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
      const result = parseSyncRules(value as unknown as string);
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
    parameters: SELECT id AS owner, p AS _priority FROM t WHERE request.user_id() IN members AND kind = request.jwt() ->> 'kind'
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
  const row = fc.dictionary(fc.constantFrom('id', 'name', 'owner', 'doc', 'n', 'tags', 'members', 'kind', 'p', '__proto__', 'toString'), columnValue);

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
      fc.property(fc.string(), fc.anything(), fc.anything(), fc.array(fc.array(fc.anything(), { maxLength: 3 }), { maxLength: 3 }), (userId, token, client, results) => {
        const plan = rules.planBuckets({ userId, tokenParameters: token as Record<string, unknown>, clientParameters: client as Record<string, unknown> });
        plan.finish(results as never);
      }),
      { numRuns: 500 }
    );
  });
});
