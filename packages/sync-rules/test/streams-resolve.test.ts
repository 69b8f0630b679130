/**
 * `resolveConnection` with Sync Streams (STREAMS.md §4.5–4.7, §5.2): which subscriptions a connection has,
 * the `streams` list, inclusion reasons, priorities, per-subscription errors and bad input.
 */
import { describe, expect, test } from 'vitest';
import { loadStreams, noLookups, parameterIndex, request, subscribe } from './streams-support.js';

const MIXED = `config:
  edition: 2
bucket_definitions:
  global:
    data: [SELECT * FROM lists]
streams:
  mine:
    auto_subscribe: true
    query: SELECT * FROM boards WHERE owner_id = auth.user_id()
  picked:
    query: SELECT * FROM boards WHERE id = subscription.parameter('id')
  defaults_see:
    auto_subscribe: true
    query: SELECT * FROM docs WHERE subscription.parameters() = '{}'
`;

const EDITION_3 = `config:
  edition: 3
streams:
  mine:
    auto_subscribe: true
    priority: 1
    query: SELECT * FROM boards WHERE owner_id = auth.user_id()
  picked:
    accept_potentially_dangerous_queries: true
    query: SELECT * FROM boards WHERE id IN subscription.parameter('ids')
  owner:
    query: SELECT * FROM boards WHERE owner_id = ifnull(subscription.parameter('owner'), auth.user_id())
  sees_null:
    auto_subscribe: true
    query: SELECT * FROM docs WHERE subscription.parameters() IS NULL
  broken_default:
    auto_subscribe: true
    query: SELECT * FROM docs WHERE id IN connection.parameter('ids')
`;

describe('which subscriptions a connection has (§4.6, §5.2)', () => {
  const mixed = loadStreams(MIXED, 9);
  const rules = loadStreams(EDITION_3, 4);

  test('sources list bucket definitions first, then streams, with their defaults and priorities', () => {
    expect(mixed.sources).toEqual([
      { name: 'global', kind: 'bucket_definition', isDefault: true, priority: 3 },
      { name: 'mine', kind: 'stream', isDefault: true, priority: 3 },
      { name: 'picked', kind: 'stream', isDefault: false, priority: 3 },
      { name: 'defaults_see', kind: 'stream', isDefault: true, priority: 3 }
    ]);
  });

  test('a request without streams gets every default stream and bucket definition', async () => {
    const resolved = await mixed.resolveConnection(request(), noLookups);
    expect(resolved.streams).toEqual([
      { name: 'global', isDefault: true, errors: [] },
      { name: 'mine', isDefault: true, errors: [] },
      { name: 'defaults_see', isDefault: true, errors: [] }
    ]);
    expect(resolved.buckets).toEqual([
      { bucket: '9#mine|0["u1"]', priority: 3, subscriptions: [{ default: 1 }] },
      // Edition 2: the default subscription sees subscription.parameters() as '{}' (§3.3).
      { bucket: '9#defaults_see|0[]', priority: 3, subscriptions: [{ default: 2 }] },
      { bucket: '9#global[]', priority: 3, subscriptions: [{ default: 0 }] }
    ]);
    expect(resolved.usesLookups).toBe(false);
  });

  test('include_defaults false with no subscriptions gives no streams and no buckets (bucket definitions too)', async () => {
    const resolved = await mixed.resolveConnection(request({ includeDefaults: false }), noLookups);
    expect(resolved).toEqual({ streams: [], buckets: [], errors: [], usesLookups: false });
  });

  test('an auto_subscribe stream only explicitly subscribed is still is_default; a non-auto one is not', async () => {
    const resolved = await rules.resolveConnection(
      request({ includeDefaults: false, subscriptions: [subscribe('mine'), subscribe('picked', { ids: ['b'] })] }),
      noLookups
    );
    expect(resolved.streams).toEqual([
      { name: 'mine', isDefault: true, errors: [] },
      { name: 'picked', isDefault: false, errors: [] }
    ]);
    // include_defaults false: the default subscription of `mine` is not resolved (edition 3 behaviour, §4.6).
    expect(resolved.buckets).toEqual([
      { bucket: '4#mine|0["u1"]', priority: 1, subscriptions: [{ sub: 0 }] },
      { bucket: '4#picked|0["b"]', priority: 3, subscriptions: [{ sub: 1 }] }
    ]);
  });

  test('an unknown stream is ignored and not listed; the other subscriptions still resolve', async () => {
    const resolved = await rules.resolveConnection(
      request({ includeDefaults: false, subscriptions: [subscribe('nope'), subscribe('picked', { ids: ['b'] })] }),
      noLookups
    );
    expect(resolved.streams.map((stream) => stream.name)).toEqual(['picked']);
    expect(resolved.buckets).toEqual([{ bucket: '4#picked|0["b"]', priority: 3, subscriptions: [{ sub: 1 }] }]);
  });

  test('a bucket definition named explicitly is included like a default, even without include_defaults', async () => {
    const resolved = await mixed.resolveConnection(
      request({ includeDefaults: false, subscriptions: [subscribe('global', { ignored: 1 })] }),
      noLookups
    );
    expect(resolved.streams).toEqual([{ name: 'global', isDefault: true, errors: [] }]);
    expect(resolved.buckets).toEqual([{ bucket: '9#global[]', priority: 3, subscriptions: [{ default: 0 }] }]);
  });

  test('{sub: j} is the position in the request, duplicates included; reasons merge with the lowest priority', async () => {
    const resolved = await rules.resolveConnection(
      request({
        subscriptions: [
          subscribe('picked', { ids: ['a'] }),
          subscribe('mine', {}, 2),
          subscribe('picked', { ids: ['a', 'b'] }, 0),
          subscribe('mine', null, 3)
        ]
      }),
      noLookups
    );
    expect(resolved.streams.map((stream) => stream.name)).toEqual(['mine', 'picked', 'sees_null', 'broken_default']);
    expect(resolved.buckets).toEqual([
      { bucket: '4#picked|0["a"]', priority: 0, subscriptions: [{ sub: 0 }, { sub: 2 }] },
      // Explicit first in request order, then the default; priority: min(2, 3, stream priority 1).
      { bucket: '4#mine|0["u1"]', priority: 1, subscriptions: [{ sub: 1 }, { sub: 3 }, { default: 0 }] },
      { bucket: '4#picked|0["b"]', priority: 0, subscriptions: [{ sub: 2 }] },
      { bucket: '4#sees_null|0[]', priority: 3, subscriptions: [{ default: 2 }] }
    ]);
  });

  test('override_priority 0 sets the priority; null keeps the stream priority', async () => {
    const zero = await rules.resolveConnection(
      request({ includeDefaults: false, subscriptions: [subscribe('mine', {}, 0)] }),
      noLookups
    );
    expect(zero.buckets[0]!.priority).toBe(0);
    const none = await rules.resolveConnection(
      request({ includeDefaults: false, subscriptions: [subscribe('mine', {}, null)] }),
      noLookups
    );
    expect(none.buckets[0]!.priority).toBe(1);
  });

  test('explicit parameters: null behaves like {}; the edition-3 default subscription sees NULL', async () => {
    const explicitNull = await rules.resolveConnection(
      request({ includeDefaults: false, subscriptions: [subscribe('sees_null', null)] }),
      noLookups
    );
    expect(explicitNull.buckets).toEqual([]);
    const byDefault = await rules.resolveConnection(request(), noLookups);
    expect(byDefault.buckets.map((bucket) => bucket.bucket)).toContain('4#sees_null|0[]');
    // ifnull() gives the default subscription a value.
    const owner = await rules.resolveConnection(
      request({ includeDefaults: false, subscriptions: [subscribe('owner', null)] }),
      noLookups
    );
    expect(owner.buckets.map((bucket) => bucket.bucket)).toEqual(['4#owner|0["u1"]']);
  });
});

describe('per-subscription errors (§4.5, §5.4)', () => {
  const rules = loadStreams(EDITION_3, 4);

  test('non-JSON text for an IN gives an errors entry with the prefix and no buckets; others proceed', async () => {
    const resolved = await rules.resolveConnection(
      request({
        includeDefaults: false,
        subscriptions: [subscribe('picked', { ids: 'abc' }), subscribe('picked', { ids: ['b'] })]
      }),
      noLookups
    );
    expect(resolved.streams).toEqual([
      {
        name: 'picked',
        isDefault: false,
        errors: [{ subscription: 0, message: expect.stringMatching(/^Error evaluating bucket ids: /) as string }]
      }
    ]);
    expect(resolved.buckets).toEqual([{ bucket: '4#picked|0["b"]', priority: 3, subscriptions: [{ sub: 1 }] }]);
  });

  test('a number where a JSON array is expected is an error too (edition 3, §6)', async () => {
    const resolved = await rules.resolveConnection(
      request({ includeDefaults: false, subscriptions: [subscribe('picked', { ids: 5 })] }),
      noLookups
    );
    expect(resolved.streams[0]!.errors).toHaveLength(1);
    expect(resolved.buckets).toEqual([]);
  });

  test('an error in the default subscription is reported with subscription "default"', async () => {
    const resolved = await rules.resolveConnection(request({ clientParameters: { ids: 'not json' } }), noLookups);
    const broken = resolved.streams.find((stream) => stream.name === 'broken_default')!;
    expect(broken.errors).toEqual([
      { subscription: 'default', message: expect.stringMatching(/^Error evaluating bucket ids: /) as string }
    ]);
    expect(resolved.buckets.map((bucket) => bucket.bucket)).toContain('4#mine|0["u1"]');
  });

  test.each([4, -1, 1.5, Number.NaN, '1' as unknown as number])(
    'override_priority %s is a per-subscription error',
    async (override) => {
      const resolved = await rules.resolveConnection(
        request({
          includeDefaults: false,
          subscriptions: [subscribe('mine', {}, override), subscribe('picked', { ids: ['x'] })]
        }),
        noLookups
      );
      expect(resolved.streams[0]).toEqual({
        name: 'mine',
        isDefault: true,
        errors: [
          {
            subscription: 0,
            message: expect.stringMatching(/^Error evaluating bucket ids: override_priority/) as string
          }
        ]
      });
      expect(resolved.buckets).toEqual([{ bucket: '4#picked|0["x"]', priority: 3, subscriptions: [{ sub: 1 }] }]);
    }
  );

  test.each([
    ['an array', []],
    ['a string', 'x'],
    ['a number', 3]
  ])('parameters that are %s are a per-subscription error', async (_, parameters) => {
    const resolved = await rules.resolveConnection(
      request({
        includeDefaults: false,
        subscriptions: [{ stream: 'picked', parameters: parameters as unknown as null, overridePriority: null }]
      }),
      noLookups
    );
    expect(resolved.streams[0]!.errors).toEqual([
      { subscription: 0, message: 'Error evaluating bucket ids: parameters must be a JSON object or null' }
    ]);
  });

  test('deeply nested and huge parameters never throw', async () => {
    let deep: unknown = 'x';
    for (let depth = 0; depth < 20_000; depth++) deep = { a: deep };
    const huge = { ids: Array.from({ length: 20_000 }, (_, index) => `id${index}`) };
    const resolved = await rules.resolveConnection(
      request({
        includeDefaults: false,
        subscriptions: [
          { stream: 'picked', parameters: { ids: ['a'], deep }, overridePriority: null },
          { stream: 'picked', parameters: huge, overridePriority: null }
        ]
      }),
      noLookups
    );
    expect(resolved.streams[0]!.errors.map((error) => error.subscription)).toEqual([0, 1]);
    expect(resolved.buckets).toEqual([]);
  });

  test('subscriptions that are not objects, or name no stream, are skipped', async () => {
    const resolved = await rules.resolveConnection(
      request({
        includeDefaults: false,
        subscriptions: [null, 5, { stream: 7 }, subscribe('picked', { ids: ['y'] })] as never
      }),
      noLookups
    );
    expect(resolved.buckets).toEqual([{ bucket: '4#picked|0["y"]', priority: 3, subscriptions: [{ sub: 3 }] }]);
  });

  test('a rejecting fetchLookups (the caller ending the stream on its limits) rejects resolveConnection', async () => {
    const withIndex = loadStreams(
      `config:\n  edition: 3\nstreams:\n  s:\n    auto_subscribe: true\n    query: SELECT * FROM c WHERE b IN (SELECT b FROM m WHERE u = auth.user_id())\n`,
      1
    );
    await expect(withIndex.resolveConnection(request(), () => Promise.reject(new Error('limit')))).rejects.toThrow(
      'limit'
    );
    const { fetchLookups } = parameterIndex(withIndex, { m: [{ b: 'b1', u: 'u1' }] });
    const resolved = await withIndex.resolveConnection(request(), fetchLookups);
    expect(resolved.usesLookups).toBe(true);
    expect(resolved.buckets).toEqual([{ bucket: '1#s|0["b1"]', priority: 3, subscriptions: [{ default: 0 }] }]);
  });
});
