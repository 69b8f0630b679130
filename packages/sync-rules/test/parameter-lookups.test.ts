import { describe, expect, test } from 'vitest';
import { parseParameterRows, serializeParameterLookup, serializeParameterRows } from '../src/index.js';
import { definition, loadRules } from './helpers.js';

const DATA = ['SELECT * FROM todos WHERE list_id = bucket.list_id'];

describe('evaluateParameterRow: rows to lookup index entries', () => {
  test('column = request value: indexed under the column value', () => {
    const rules = loadRules(
      definition('lists', {
        parameters: 'SELECT id AS list_id FROM lists WHERE owner_id = request.user_id()',
        data: DATA
      })
    );
    expect(rules.evaluateParameterRow({ table: 'lists', row: { id: 'l1', owner_id: 'u1', name: 'n' } })).toEqual({
      lookups: [
        {
          lookup: { definition: 'lists', queryIndex: 0, values: ['u1'] },
          serializedLookup: '["lists",0,"u1"]',
          outputs: [{ list_id: 'l1' }]
        }
      ],
      errors: []
    });
  });

  test.each([
    ['NULL lookup column', { id: 'l1', owner_id: null }],
    ['missing lookup column', { id: 'l1' }],
    ['row filter excludes the row', { id: 'l1', owner_id: 'u1', archived: 1n }]
  ])('no entry for %s', (_name, row) => {
    const rules = loadRules(
      definition('lists', {
        parameters:
          'SELECT id AS list_id FROM lists WHERE owner_id = request.user_id() AND (archived IS NULL OR archived != 1)',
        data: DATA
      })
    );
    expect(rules.evaluateParameterRow({ table: 'lists', row })).toEqual({ lookups: [], errors: [] });
  });

  test('request value IN array column: one entry per element', () => {
    const rules = loadRules(
      definition('lists', {
        parameters: 'SELECT id AS list_id FROM lists WHERE request.user_id() IN members',
        data: DATA
      })
    );
    const result = rules.evaluateParameterRow({ table: 'lists', row: { id: 'l1', members: '["u1","u2","u1",null]' } });
    expect(result.lookups.map((entry) => entry.serializedLookup)).toEqual(['["lists",0,"u1"]', '["lists",0,"u2"]']);
    expect(result.lookups.every((entry) => entry.outputs[0]!['list_id'] === 'l1')).toBe(true);
  });

  test('column IN request array: indexed under the column value; the request expands its array', () => {
    const rules = loadRules(
      definition('lists', {
        parameters: "SELECT id AS list_id FROM lists WHERE id IN request.jwt() -> 'lists'",
        data: DATA
      })
    );
    expect(
      rules.evaluateParameterRow({ table: 'lists', row: { id: 'l1' } }).lookups.map((entry) => entry.serializedLookup)
    ).toEqual(['["lists",0,"l1"]']);
    const plan = rules.planBuckets({ userId: 'u1', tokenParameters: { sub: 'u1', lists: ['l1', 'l2'] } });
    expect(plan.lookups).toEqual([
      { definition: 'lists', queryIndex: 0, values: ['l1'] },
      { definition: 'lists', queryIndex: 0, values: ['l2'] }
    ]);
  });

  test('several conditions give multi-value lookups in WHERE order; integer keys stay exact', () => {
    const rules = loadRules(
      definition('by_org', {
        parameters:
          "SELECT org_id, 1 AS _priority FROM memberships WHERE org_id = request.jwt() ->> 'org' AND user_id = request.user_id() AND active",
        data: ['SELECT * FROM docs WHERE org_id = bucket.org_id']
      })
    );
    const result = rules.evaluateParameterRow({
      table: 'memberships',
      row: { org_id: 9007199254740993n, user_id: 'u1', role: 1n, active: 1n }
    });
    expect(result.lookups).toEqual([
      {
        lookup: { definition: 'by_org', queryIndex: 0, values: [9007199254740993n, 'u1'] },
        serializedLookup: '["by_org",0,9007199254740993,"u1"]',
        outputs: [{ org_id: 9007199254740993n, _priority: 1n }]
      }
    ]);
  });

  test('serialized lookups: INTEGER and integral REAL are the same key, text is not', () => {
    expect(serializeParameterLookup({ definition: 'd', queryIndex: 2, values: [5n] })).toBe('["d",2,5]');
    expect(serializeParameterLookup({ definition: 'd', queryIndex: 2, values: [5.0] })).toBe('["d",2,5]');
    expect(serializeParameterLookup({ definition: 'd', queryIndex: 2, values: ['5'] })).toBe('["d",2,"5"]');
    expect(serializeParameterLookup({ definition: 'd"x', queryIndex: 0, values: [] })).toBe('["d\\"x",0]');
  });

  test('only lookup queries of matching tables produce entries; static queries never do', () => {
    const rules = loadRules(`
bucket_definitions:
  a:
    parameters:
      - SELECT request.user_id() AS list_id
      - SELECT id AS list_id FROM lists WHERE owner_id = request.user_id()
    data: [SELECT * FROM todos WHERE list_id = bucket.list_id]
  b:
    parameters: SELECT list_id FROM shares WHERE user_id = request.user_id()
    data: [SELECT * FROM todos WHERE list_id = bucket.list_id]
`);
    expect(
      rules
        .evaluateParameterRow({ table: 'lists', row: { id: 'l', owner_id: 'u' } })
        .lookups.map((entry) => entry.serializedLookup)
    ).toEqual(['["a",1,"u"]']);
    expect(
      rules
        .evaluateParameterRow({ table: 'shares', row: { list_id: 'l', user_id: 'u' } })
        .lookups.map((entry) => entry.serializedLookup)
    ).toEqual(['["b",0,"u"]']);
    expect(rules.evaluateParameterRow({ table: 'todos', row: { id: 't' } }).lookups).toEqual([]);
    expect(
      rules.evaluateParameterRow({ schema: 'other', table: 'lists', row: { id: 'l', owner_id: 'u' } }).lookups
    ).toEqual([]);
  });

  test.each([
    ['a blob output', { id: new Uint8Array([1]), owner_id: 'u' }, /blob, which cannot be a bucket parameter/],
    ['an array in an output column', { id: ['x'], owner_id: 'u' }, /column "id" has a value of type array/],
    ['a nested array in the members column', { id: 'l', owner_id: 'u', members: '[["u"]]' }, /not a scalar/]
  ])('%s is reported, and the row gets no entries for that query', (_name, row, message) => {
    const rules = loadRules(`
bucket_definitions:
  a:
    parameters: SELECT id AS list_id, 2 AS _priority FROM lists WHERE owner_id = request.user_id()
    data: [SELECT * FROM todos WHERE list_id = bucket.list_id]
  b:
    parameters: SELECT id AS list_id FROM lists WHERE request.user_id() IN members
    data: [SELECT * FROM todos WHERE list_id = bucket.list_id]
`);
    const result = rules.evaluateParameterRow({ table: 'lists', row });
    expect(result.errors.length).toBe(1);
    expect(result.errors[0]!.message).toMatch(message);
    expect(result.errors[0]!.message).toMatch(/^bucket_definitions\.[ab]\.parameters\[0\]: /);
    expect(result.lookups.some((entry) => entry.lookup.definition === result.errors[0]!.bucketDefinition)).toBe(false);
  });

  test('output rows survive a JSON round trip for storage with exact integers', () => {
    const rows = [{ list_id: 9223372036854775807n, name: 'x', ratio: 0.5, none: null }];
    const text = serializeParameterRows(rows);
    expect(text).toBe('[{"list_id":9223372036854775807,"name":"x","ratio":0.5,"none":null}]');
    expect(parseParameterRows(text)).toEqual(rows);
  });
});
