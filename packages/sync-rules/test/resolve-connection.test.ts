import { describe, expect, test } from 'vitest';
import type { ConnectionRequest } from '../src/index.js';
import { loadRules } from './helpers.js';

const RULES = `
bucket_definitions:
  global:
    data: [SELECT * FROM lists]
  by_org:
    parameters: SELECT org_id FROM memberships WHERE user_id = request.user_id()
    data: [SELECT * FROM lists WHERE org_id = bucket.org_id]
  mine:
    priority: 1
    parameters: SELECT request.user_id() AS user_id
    data: [SELECT * FROM lists WHERE owner_id = bucket.user_id]
`;

const request = (overrides: Partial<ConnectionRequest> = {}): ConnectionRequest => ({
  userId: 'u1',
  includeDefaults: true,
  subscriptions: [],
  ...overrides
});

describe('resolveConnection with bucket definitions', () => {
  const rules = loadRules(RULES);
  const fetchOrgs = (lookups: unknown[]) => Promise.resolve(lookups.map(() => [{ org_id: 'o1' }]));

  test('every definition is a default source, in definition order', () => {
    expect(rules.sources).toEqual([
      { name: 'global', kind: 'bucket_definition', isDefault: true, priority: 3 },
      { name: 'by_org', kind: 'bucket_definition', isDefault: true, priority: 3 },
      { name: 'mine', kind: 'bucket_definition', isDefault: true, priority: 1 }
    ]);
  });

  test('defaults give every definition, with reasons indexing the streams array', async () => {
    const resolved = await rules.resolveConnection(request(), fetchOrgs);
    expect(resolved.streams.map((stream) => [stream.name, stream.isDefault, stream.errors])).toEqual([
      ['global', true, []],
      ['by_org', true, []],
      ['mine', true, []]
    ]);
    expect(resolved.buckets).toEqual(
      expect.arrayContaining([
        { bucket: 'global[]', priority: 3, subscriptions: [{ default: 0 }] },
        { bucket: 'by_org["o1"]', priority: 3, subscriptions: [{ default: 1 }] },
        { bucket: 'mine["u1"]', priority: 1, subscriptions: [{ default: 2 }] }
      ])
    );
    expect(resolved.buckets).toHaveLength(3);
    expect(resolved.usesLookups).toBe(true);
  });

  test('include_defaults false gives nothing and reads no index', async () => {
    let fetched = false;
    const resolved = await rules.resolveConnection(request({ includeDefaults: false }), () => {
      fetched = true;
      return Promise.resolve([]);
    });
    expect(resolved).toMatchObject({ streams: [], buckets: [], usesLookups: false });
    expect(fetched).toBe(false);
  });

  test('naming a definition explicitly includes it like a default; unknown names are ignored', async () => {
    const resolved = await rules.resolveConnection(
      request({
        includeDefaults: false,
        subscriptions: [
          { stream: 'nope', parameters: null, overridePriority: null },
          { stream: 'mine', parameters: { ignored: 1 }, overridePriority: 0 }
        ]
      }),
      fetchOrgs
    );
    expect(resolved.streams).toEqual([{ name: 'mine', isDefault: true, errors: [] }]);
    expect(resolved.buckets).toEqual([{ bucket: 'mine["u1"]', priority: 1, subscriptions: [{ default: 0 }] }]);
    expect(resolved.usesLookups).toBe(false);
  });

  test('a rejecting fetch rejects the resolution (the caller ends the stream)', async () => {
    await expect(rules.resolveConnection(request(), () => Promise.reject(new Error('limit')))).rejects.toThrow('limit');
  });
});
