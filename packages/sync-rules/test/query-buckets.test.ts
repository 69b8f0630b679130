import { describe, expect, test } from 'vitest';
import {
  parseParameterRows,
  serializeParameterLookup,
  serializeParameterRows,
  type ParameterLookup,
  type SqliteRow,
  type SyncRules
} from '../src/index.js';
import { loadRules } from './helpers.js';

/** An in-memory parameter index, filled the way replication fills storage. */
class LookupIndex {
  private readonly entries = new Map<string, Map<string, string>>();
  constructor(private readonly rules: SyncRules) {}

  put(table: string, key: string, row: Record<string, unknown>): void {
    for (const byRow of this.entries.values()) byRow.delete(`${table}/${key}`);
    for (const entry of this.rules.evaluateParameterRow({ table, row }).lookups) {
      const byRow = this.entries.get(entry.serializedLookup) ?? new Map<string, string>();
      byRow.set(`${table}/${key}`, serializeParameterRows(entry.outputs));
      this.entries.set(entry.serializedLookup, byRow);
    }
  }

  fetch = (lookups: ParameterLookup[]): Promise<SqliteRow[][]> =>
    Promise.resolve(
      lookups.map((lookup) =>
        [...(this.entries.get(serializeParameterLookup(lookup))?.values() ?? [])].flatMap(parseParameterRows)
      )
    );
}

const RULES = `
bucket_definitions:
  global:
    data: [SELECT * FROM lists]
  user_lists:
    parameters: SELECT request.user_id() AS user_id
    data: [SELECT * FROM lists WHERE owner_id = bucket.user_id]
  by_org:
    priority: 1
    parameters: SELECT org_id FROM memberships WHERE user_id = request.user_id()
    data: [SELECT * FROM documents WHERE org_id = bucket.org_id]
  by_claim:
    parameters: SELECT request.jwt() ->> 'region' AS region, token_parameters.team AS team
    data: [SELECT * FROM regional WHERE region = bucket.region AND team = bucket.team]
  admins:
    priority: 0
    parameters: SELECT 1 AS yes WHERE request.jwt() ->> 'role' = 'admin'
    data: [SELECT * FROM admin_stuff WHERE 1 = bucket.yes]
  by_project:
    accept_potentially_dangerous_queries: true
    parameters: SELECT user_parameters.project AS project WHERE request.parameters() ->> 'project' IS NOT NULL
    data: [SELECT * FROM tasks WHERE project = bucket.project]
`;

describe('token → buckets', () => {
  const rules = loadRules(RULES);

  test('static buckets need no I/O; dynamic ones ask for lookups', () => {
    const plan = rules.planBuckets({
      userId: 'u1',
      tokenParameters: { sub: 'u1', region: 'eu', parameters: { team: 7 } }
    });
    expect(plan.staticBuckets).toEqual([
      { bucket: 'global[]', definition: 'global', priority: 3 },
      { bucket: 'user_lists["u1"]', definition: 'user_lists', priority: 3 },
      { bucket: 'by_claim["eu",7]', definition: 'by_claim', priority: 3 }
    ]);
    expect(plan.lookups).toEqual([{ definition: 'by_org', queryIndex: 0, values: ['u1'] }]);
    expect(plan.errors).toEqual([]);
    const finished = plan.finish([[{ org_id: 'o1' }, { org_id: 'o2' }]]);
    expect(finished.buckets.map((bucket) => bucket.bucket)).toEqual([
      'global[]',
      'user_lists["u1"]',
      'by_claim["eu",7]',
      'by_org["o1"]',
      'by_org["o2"]'
    ]);
    expect(finished.buckets.find((bucket) => bucket.definition === 'by_org')!.priority).toBe(1);
  });

  test('request conditions, claims and client parameters', () => {
    const admin = rules.planBuckets({
      userId: 'a',
      tokenParameters: { sub: 'a', role: 'admin' },
      clientParameters: { project: 'p1' }
    });
    expect(admin.staticBuckets.map((bucket) => `${bucket.bucket}@${bucket.priority}`)).toEqual([
      'global[]@3',
      'user_lists["a"]@3',
      'admins[1]@0',
      'by_project["p1"]@3'
    ]);
  });

  test('missing claims give no bucket rather than a NULL bucket', () => {
    const plan = rules.planBuckets({ userId: 'u1' });
    expect(plan.staticBuckets.map((bucket) => bucket.bucket)).toEqual(['global[]', 'user_lists["u1"]']);
  });

  test('queryBuckets resolves lookups against an index filled by evaluateParameterRow', async () => {
    const index = new LookupIndex(rules);
    index.put('memberships', 'm1', { user_id: 'u1', org_id: 'o1' });
    index.put('memberships', 'm2', { user_id: 'u1', org_id: 9007199254740993n });
    index.put('memberships', 'm3', { user_id: 'u2', org_id: 'o3' });
    const result = await rules.queryBuckets({ userId: 'u1' }, index.fetch);
    expect(result).toEqual({
      buckets: [
        { bucket: 'global[]', definition: 'global', priority: 3 },
        { bucket: 'user_lists["u1"]', definition: 'user_lists', priority: 3 },
        { bucket: 'by_org["o1"]', definition: 'by_org', priority: 1 },
        { bucket: 'by_org[9007199254740993]', definition: 'by_org', priority: 1 }
      ],
      errors: []
    });
    // The same org id on a data row lands in the same bucket.
    expect(
      rules.evaluateRow({ table: 'documents', row: { id: 'd', org_id: 9007199254740993n } }).buckets[0]!.bucket
    ).toBe('by_org[9007199254740993]');

    index.put('memberships', 'm1', { user_id: 'u9', org_id: 'o1' }); // membership moved to another user
    const after = await rules.queryBuckets({ userId: 'u1' }, index.fetch);
    expect(after.buckets.map((bucket) => bucket.bucket)).toEqual([
      'global[]',
      'user_lists["u1"]',
      'by_org[9007199254740993]'
    ]);
  });

  test('queryBuckets does not call fetch when nothing needs a lookup', async () => {
    const staticRules = loadRules('bucket_definitions:\n  g:\n    data: [SELECT * FROM t]\n');
    const result = await staticRules.queryBuckets({ userId: 'u' }, () => {
      throw new Error('should not be called');
    });
    expect(result.buckets).toEqual([{ bucket: 'g[]', definition: 'g', priority: 3 }]);
  });
});

describe('priorities', () => {
  const rules = loadRules(`
bucket_definitions:
  lists:
    parameters:
      - SELECT id AS list_id, 1 AS _priority FROM lists WHERE owner_id = request.user_id()
      - SELECT list_id FROM shares WHERE user_id = request.user_id()
      - SELECT request.jwt() ->> 'pinned' AS list_id, 0 AS _priority
    data: [SELECT * FROM todos WHERE list_id = bucket.list_id]
`);

  test('definition priority by default, _priority when present, lowest wins across paths', async () => {
    const index = new LookupIndex(rules);
    index.put('lists', 'l1', { id: 'l1', owner_id: 'u1' });
    index.put('shares', 's2', { list_id: 'l2', user_id: 'u1' });
    index.put('shares', 's1', { list_id: 'l1', user_id: 'u1' });
    index.put('shares', 's3', { list_id: 'l3', user_id: 'u1' });
    const result = await rules.queryBuckets({ userId: 'u1', tokenParameters: { pinned: 'l3' } }, index.fetch);
    expect(result.errors).toEqual([]);
    expect(Object.fromEntries(result.buckets.map((bucket) => [bucket.bucket, bucket.priority]))).toEqual({
      'lists["l3"]': 0, // pinned (0) beats the share (default priority 3)
      'lists["l1"]': 1, // _priority 1 beats the share (3)
      'lists["l2"]': 3 // only shared: the default priority
    });
  });

  test('bad lookup results are reported, not thrown', () => {
    const plan = rules.planBuckets({ userId: 'u1' });
    expect(plan.lookups).toHaveLength(2);
    const finished = plan.finish([
      [{ list_id: 'a', _priority: 9n }, { list_id: new Uint8Array([1]) }, null as never],
      []
    ]);
    expect(finished.buckets).toEqual([]);
    expect(finished.errors.map((error) => error.message)).toEqual([
      expect.stringMatching(/"_priority" must be an integer from 0 to 3/),
      expect.stringMatching(/blob, which cannot be a bucket parameter/),
      expect.stringMatching(/not an object/)
    ]);
    expect(plan.finish([]).errors).toHaveLength(2);
  });
});

describe('json_each in parameter queries', () => {
  const rules = loadRules(`
bucket_definitions:
  by_org:
    parameters: SELECT value AS org_id FROM json_each(request.jwt() -> 'orgs') WHERE value != 'banned'
    data: [SELECT * FROM docs WHERE org_id = bucket.org_id]
  by_role:
    parameters: SELECT key AS project, value AS role FROM json_each(request.jwt(), '$.roles') AS r WHERE r.type = 'text'
    data: [SELECT * FROM members WHERE project = bucket.project AND role = bucket.role]
`);

  test.each([
    ['array of ids', { orgs: ['o1', 2, 'banned', 'o1'] }, ['by_org["o1"]', 'by_org[2]']],
    [
      'object members',
      { roles: { p1: 'admin', p2: 3, p3: 'viewer' } },
      ['by_role["p1","admin"]', 'by_role["p3","viewer"]']
    ],
    ['missing claim', {}, []],
    ['scalar claim', { orgs: 'o9' }, ['by_org["o9"]']]
  ])('%s', (_name, tokenParameters, buckets) => {
    const plan = rules.planBuckets({ userId: 'u', tokenParameters });
    expect(plan.errors).toEqual([]);
    expect(plan.lookups).toEqual([]);
    expect(plan.staticBuckets.map((bucket) => bucket.bucket)).toEqual(buckets);
  });
});
