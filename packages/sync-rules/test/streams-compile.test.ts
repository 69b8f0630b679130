/**
 * Compiling Sync Streams to buckets (STREAMS.md §4.1–4.4) and the "Query language" checklist items of §7 that
 * are about which rows land in which buckets.
 */
import { describe, expect, test } from 'vitest';
import { bucketsOf, loadStreams, noLookups, parameterIndex, request, stream, subscribe } from './streams-support.js';

async function bucketIds(rules: ReturnType<typeof loadStreams>, parameters: Record<string, unknown> | null = {}) {
  const resolved = await rules.resolveConnection(request({ subscriptions: [subscribe('s', parameters)] }), noLookups);
  return resolved.buckets.map((bucket) => bucket.bucket);
}

describe('bucket ids (§4.2)', () => {
  test('a stream without parameters has one bucket <d>#s|0[], shared by every subscriber', async () => {
    const rules = loadStreams(stream('SELECT * FROM t'), 12);
    expect(bucketsOf(rules, 't', { id: 'r1' })).toEqual(['12#s|0[]']);
    expect(await bucketIds(rules)).toEqual(['12#s|0[]']);
    const other = await rules.resolveConnection(request({ userId: 'u2', subscriptions: [subscribe('s')] }), noLookups);
    expect(other.buckets.map((bucket) => bucket.bucket)).toEqual(['12#s|0[]']);
  });

  test('ids are identical when recompiled for the same deployment and differ after a redeploy', () => {
    const yaml = stream('SELECT * FROM boards WHERE owner_id = auth.user_id()');
    const row = { id: 'b1', owner_id: 'u1' };
    expect(bucketsOf(loadStreams(yaml, 12), 'boards', row)).toEqual(bucketsOf(loadStreams(yaml, 12), 'boards', row));
    expect(bucketsOf(loadStreams(yaml, 12), 'boards', row)).toEqual(['12#s|0["u1"]']);
    expect(bucketsOf(loadStreams(yaml, 13), 'boards', row)).toEqual(['13#s|0["u1"]']);
  });

  test('versioned_bucket_ids: false, or no deployment id, gives unprefixed ids', () => {
    const yaml = `config:\n  edition: 3\n  versioned_bucket_ids: false\nstreams:\n  s:\n    query: SELECT * FROM t\n`;
    expect(bucketsOf(loadStreams(yaml, 12), 't', { id: 'x' })).toEqual(['s|0[]']);
    expect(bucketsOf(loadStreams(stream('SELECT * FROM t')), 't', { id: 'x' })).toEqual(['s|0[]']);
  });

  test('bucket definitions get the prefix from edition 2, not in edition 1', () => {
    const definitions = 'bucket_definitions:\n  g:\n    data: [SELECT * FROM lists]\n';
    expect(bucketsOf(loadStreams(`config:\n  edition: 2\n${definitions}`, 5), 'lists', { id: 'l' })).toEqual(['5#g[]']);
    expect(bucketsOf(loadStreams(definitions, 5), 'lists', { id: 'l' })).toEqual(['g[]']);
  });

  test('64-bit integers stay exact in bucket ids, rows and resolution', async () => {
    const rules = loadStreams(stream("SELECT * FROM t WHERE n = subscription.parameter('n')"), 1);
    expect(bucketsOf(rules, 't', { id: 'a', n: 9007199254740993n })).toEqual(['1#s|0[9007199254740993]']);
    expect(await bucketIds(rules, { n: 9007199254740993n })).toEqual(['1#s|0[9007199254740993]']);
  });

  test("5 and '5' select different buckets; 5 and 5.0 the same", async () => {
    const rules = loadStreams(stream("SELECT * FROM t WHERE n = subscription.parameter('n')"), 1);
    expect(bucketsOf(rules, 't', { id: 'a', n: 5n })).toEqual(['1#s|0[5]']);
    expect(bucketsOf(rules, 't', { id: 'a', n: 5.0 })).toEqual(['1#s|0[5]']);
    expect(bucketsOf(rules, 't', { id: 'a', n: '5' })).toEqual(['1#s|0["5"]']);
    expect(await bucketIds(rules, { n: 5 })).toEqual(['1#s|0[5]']);
    expect(await bucketIds(rules, { n: '5' })).toEqual(['1#s|0["5"]']);
  });
});

describe('rows into buckets (§4.3)', () => {
  test('owner_id = auth.user_id() puts each row into the bucket of its owner only', () => {
    const rules = loadStreams(stream('SELECT * FROM boards WHERE owner_id = auth.user_id()'), 1);
    expect(bucketsOf(rules, 'boards', { id: 'b1', owner_id: 'u1' })).toEqual(['1#s|0["u1"]']);
    expect(bucketsOf(rules, 'boards', { id: 'b2', owner_id: 'u2' })).toEqual(['1#s|0["u2"]']);
  });

  test('a NULL partition value puts the row in no bucket of that source', () => {
    const rules = loadStreams(stream('SELECT * FROM boards WHERE owner_id = auth.user_id() OR is_public'), 1);
    expect(bucketsOf(rules, 'boards', { id: 'b1', owner_id: null, is_public: 0n })).toEqual([]);
    expect(bucketsOf(rules, 'boards', { id: 'b1', is_public: 1n })).toEqual(['1#s|1[]']);
  });

  test("state != 'x' keeps rows whose state is NULL (reference parity, §3.4)", () => {
    const rules = loadStreams(stream("SELECT * FROM cards WHERE state != 'done'"), 1);
    expect(bucketsOf(rules, 'cards', { id: 'c1', state: null })).toEqual(['1#s|0[]']);
    expect(bucketsOf(rules, 'cards', { id: 'c2', state: 'done' })).toEqual([]);
    expect(bucketsOf(rules, 'cards', { id: 'c3', state: 'open' })).toEqual(['1#s|0[]']);
  });

  test('SELECT b.* FROM boards b syncs rows under the table name b; output rows and ids', () => {
    const rules = loadStreams(stream('SELECT b.* FROM boards b'), 1);
    const result = rules.evaluateRow({ table: 'boards', row: { id: 7n, title: 'x', blob: new Uint8Array([1]) } });
    expect(result.buckets).toEqual([{ bucket: '1#s|0[]', table: 'b', id: '7', data: '{"id":7,"title":"x"}' }]);
  });

  test('expression columns, and a missing id gives the object id ""', () => {
    const rules = loadStreams(stream('SELECT upper(title) AS title, CAST(rank AS TEXT) AS r FROM cards'), 1);
    expect(rules.evaluateRow({ table: 'cards', row: { title: 'a', rank: 2n } }).buckets).toEqual([
      { bucket: '1#s|0[]', table: 'cards', id: '', data: '{"title":"A","r":"2"}' }
    ]);
  });

  test('auth.user_id() IN boards.editors places a board in one bucket per editor', () => {
    const rules = loadStreams(stream('SELECT * FROM boards WHERE auth.user_id() IN boards.editors'), 1);
    expect(bucketsOf(rules, 'boards', { id: 'b', editors: '["u1","u2"]' })).toEqual(['1#s|0["u1"]', '1#s|0["u2"]']);
  });

  test('an evaluation error skips that source for the row and is reported; other sources still apply', () => {
    const rules = loadStreams(
      stream(['SELECT * FROM boards WHERE auth.user_id() IN boards.editors', 'SELECT * FROM boards WHERE is_public']),
      1
    );
    const result = rules.evaluateRow({ table: 'boards', row: { id: 'b', editors: 'not json', is_public: 1n } });
    expect(result.buckets.map((bucket) => bucket.bucket)).toEqual(['1#s|1[]']);
    expect(result.errors).toHaveLength(1);
    expect(result.errors[0]!.message).toMatch(/^streams\.s \(bucket source 0\): .*row skipped$/);
  });

  test('CASE, BETWEEN and IS TRUE evaluate with SQLite semantics', () => {
    const rules = loadStreams(
      stream(
        "SELECT id, CASE WHEN rank > 5 THEN 'high' ELSE 'low' END AS level FROM cards WHERE rank BETWEEN 1 AND 9 AND done IS NOT TRUE"
      ),
      1
    );
    expect(rules.evaluateRow({ table: 'cards', row: { id: 'a', rank: 7n, done: 0n } }).buckets[0]!.data).toBe(
      '{"id":"a","level":"high"}'
    );
    expect(bucketsOf(rules, 'cards', { id: 'a', rank: 10n, done: 0n })).toEqual([]);
    expect(bucketsOf(rules, 'cards', { id: 'a', rank: 3n, done: 1n })).toEqual([]);
  });

  test('row metadata: table_suffix() of a wildcard table', () => {
    const rules = loadStreams(
      stream('SELECT * FROM "items_%" AS items WHERE items.table_suffix() = auth.user_id()'),
      1
    );
    expect(bucketsOf(rules, 'items_u1', { id: 'a' })).toEqual(['1#s|0["u1"]']);
    expect(rules.tableSyncsData({ table: 'items_u2' })).toBe(true);
    expect(rules.tableSyncsData({ table: 'other' })).toBe(false);
  });
});

describe('bucket sources (§4.1)', () => {
  test('a = auth.user_id() OR is_public yields two bucket sources; a row in both is in both buckets', async () => {
    const rules = loadStreams(stream('SELECT * FROM boards WHERE owner_id = auth.user_id() OR is_public'), 1);
    expect(bucketsOf(rules, 'boards', { id: 'b', owner_id: 'u1', is_public: 1n })).toEqual(['1#s|0["u1"]', '1#s|1[]']);
    expect(await bucketIds(rules)).toEqual(['1#s|0["u1"]', '1#s|1[]']);
  });

  test('identical candidates of one stream merge into one bucket holding both tables', () => {
    const rules = loadStreams(
      stream([
        'SELECT * FROM boards WHERE owner_id = auth.user_id()',
        'SELECT * FROM cards WHERE author_id = auth.user_id()'
      ]),
      1
    );
    expect(bucketsOf(rules, 'boards', { id: 'b', owner_id: 'u1' })).toEqual(['1#s|0["u1"]']);
    expect(bucketsOf(rules, 'cards', { id: 'c', author_id: 'u1' })).toEqual(['1#s|0["u1"]']);
  });

  test('partition keys have a canonical order: the same keys written in another order give the same ids', () => {
    const a = loadStreams(
      stream([
        "SELECT * FROM t WHERE x = subscription.parameter('a') AND y = auth.user_id()",
        "SELECT * FROM u WHERE q = auth.user_id() AND p = subscription.parameter('a')"
      ]),
      1
    );
    // Merged: one bucket source, the same parameter order for both tables.
    expect(bucketsOf(a, 't', { id: '1', x: 'A', y: 'u1' })).toEqual(bucketsOf(a, 'u', { id: '2', p: 'A', q: 'u1' }));
  });

  test('a gap in <n> after merging keeps the index of the first candidate', () => {
    const rules = loadStreams(
      stream([
        'SELECT * FROM boards WHERE owner_id = auth.user_id()',
        'SELECT * FROM boards WHERE is_public',
        'SELECT * FROM cards WHERE author_id = auth.user_id()'
      ]),
      1
    );
    expect(bucketsOf(rules, 'cards', { id: 'c', author_id: 'u1' })).toEqual(['1#s|0["u1"]']);
    expect(bucketsOf(rules, 'boards', { id: 'b', is_public: 1n })).toEqual(['1#s|1[]']);
  });

  test('sourceTables and tableSyncs* include stream tables and index tables', () => {
    const rules = loadStreams(
      stream('SELECT * FROM cards WHERE board_id IN (SELECT board_id FROM members WHERE user_id = auth.user_id())'),
      1
    );
    expect(rules.sourceTables().map((table) => table.name)).toEqual(['cards', 'members']);
    expect(rules.tableSyncsData({ table: 'cards' })).toBe(true);
    expect(rules.tableSyncsData({ table: 'members' })).toBe(false);
    expect(rules.tableSyncsParameters({ table: 'members' })).toBe(true);
    expect(rules.tableSyncsParameters({ table: 'cards' })).toBe(false);
  });
});

describe('parameter indexes and lookups (§4.4)', () => {
  const membership =
    'SELECT * FROM cards WHERE board_id IN (SELECT board_id FROM members WHERE user_id = auth.user_id())';

  test('an index row maps its key to its outputs; NULL keys and outputs are not indexed', () => {
    const rules = loadStreams(stream(membership), 1);
    expect(rules.evaluateParameterRow({ table: 'members', row: { board_id: 'b1', user_id: 'u1' } })).toEqual({
      lookups: [
        {
          lookup: { definition: 's', queryIndex: 0, values: ['u1'] },
          serializedLookup: '["s",0,"u1"]',
          outputs: [{ o0: 'b1' }]
        }
      ],
      errors: []
    });
    expect(rules.evaluateParameterRow({ table: 'members', row: { board_id: null, user_id: 'u1' } }).lookups).toEqual(
      []
    );
    expect(rules.evaluateParameterRow({ table: 'members', row: { board_id: 'b', user_id: null } }).lookups).toEqual([]);
  });

  test('x IN (SELECT …) follows the index contents', async () => {
    const rules = loadStreams(stream(membership), 1);
    const before = parameterIndex(rules, { members: [{ board_id: 'b1', user_id: 'u1' }] });
    const after = parameterIndex(rules, {
      members: [
        { board_id: 'b1', user_id: 'u1' },
        { board_id: 'b2', user_id: 'u1' },
        { board_id: 'b3', user_id: 'u2' }
      ]
    });
    const subscription = request({ subscriptions: [subscribe('s')] });
    const first = await rules.resolveConnection(subscription, before.fetchLookups);
    expect(first.buckets.map((bucket) => bucket.bucket)).toEqual(['1#s|0["b1"]']);
    expect(first.usesLookups).toBe(true);
    const second = await rules.resolveConnection(subscription, after.fetchLookups);
    expect(second.buckets.map((bucket) => bucket.bucket)).toEqual(['1#s|0["b1"]', '1#s|0["b2"]']);
  });

  test('a two-level chain resolves through staged lookups, one fetch per stage', async () => {
    const rules = loadStreams(
      stream(
        'SELECT c.* FROM cards c, boards b, team_members m WHERE c.board_id = b.id AND b.team_id = m.team_id AND m.user_id = auth.user_id()'
      ),
      1
    );
    const { fetchLookups, calls } = parameterIndex(rules, {
      team_members: [
        { team_id: 't1', user_id: 'u1' },
        { team_id: 't2', user_id: 'u2' }
      ],
      boards: [
        { id: 'b1', team_id: 't1' },
        { id: 'b2', team_id: 't1' },
        { id: 'b3', team_id: 't2' }
      ]
    });
    const resolved = await rules.resolveConnection(request({ subscriptions: [subscribe('s')] }), fetchLookups);
    expect(resolved.buckets.map((bucket) => bucket.bucket)).toEqual(['1#s|0["b1"]', '1#s|0["b2"]']);
    expect(calls.map((call) => call.map((lookup) => [lookup.queryIndex, lookup.values]))).toEqual([
      [[0, ['u1']]],
      [[1, ['t1']]]
    ]);
  });

  test("'admin' IN (SELECT role …) gates the whole stream on the existence of a matching row", async () => {
    const rules = loadStreams(
      stream("SELECT * FROM cards WHERE 'admin' IN (SELECT role FROM members WHERE user_id = auth.user_id())"),
      1
    );
    const admins = parameterIndex(rules, { members: [{ user_id: 'u1', role: 'admin' }] });
    const members = parameterIndex(rules, { members: [{ user_id: 'u1', role: 'member' }] });
    const subscription = request({ subscriptions: [subscribe('s')] });
    expect((await rules.resolveConnection(subscription, admins.fetchLookups)).buckets).toEqual([
      { bucket: '1#s|0[]', priority: 3, subscriptions: [{ sub: 0 }] }
    ]);
    expect((await rules.resolveConnection(subscription, members.fetchLookups)).buckets).toEqual([]);
  });

  test('intersection: a subscription parameter and a membership must agree (§4.5 step 5)', async () => {
    const rules = loadStreams(
      stream(
        "SELECT * FROM cards WHERE board_id = subscription.parameter('id') AND board_id IN (SELECT board_id FROM members WHERE user_id = auth.user_id())"
      ),
      1
    );
    const { fetchLookups } = parameterIndex(rules, { members: [{ board_id: 'b1', user_id: 'u1' }] });
    const member = await rules.resolveConnection(
      request({ subscriptions: [subscribe('s', { id: 'b1' })] }),
      fetchLookups
    );
    expect(member.buckets.map((bucket) => bucket.bucket)).toEqual(['1#s|0["b1"]']);
    const stranger = await rules.resolveConnection(
      request({ subscriptions: [subscribe('s', { id: 'b2' })] }),
      fetchLookups
    );
    expect(stranger.buckets).toEqual([]);
    expect(stranger.streams[0]!.errors).toEqual([]);
  });

  test('values of one index row are only combined with each other (§4.5 step 6)', async () => {
    const rules = loadStreams(
      stream('SELECT t.* FROM t, grants g WHERE t.a = g.a AND t.b = g.b AND g.user_id = auth.user_id()'),
      1
    );
    const { fetchLookups } = parameterIndex(rules, {
      grants: [
        { a: 'a1', b: 'b1', user_id: 'u1' },
        { a: 'a2', b: 'b2', user_id: 'u1' }
      ]
    });
    const resolved = await rules.resolveConnection(request({ subscriptions: [subscribe('s')] }), fetchLookups);
    expect(resolved.buckets.map((bucket) => bucket.bucket).sort()).toEqual(['1#s|0["a1","b1"]', '1#s|0["a2","b2"]']);
  });

  test('json_each over an index column: a key-less join through a JSON array', async () => {
    const rules = loadStreams(
      stream(
        'SELECT c.* FROM cards c, boards b, json_each(b.editors) AS e WHERE c.board_id = b.id AND e.value = auth.user_id()'
      ),
      1
    );
    const { fetchLookups } = parameterIndex(rules, {
      boards: [
        { id: 'b1', editors: '["u1","u2"]' },
        { id: 'b2', editors: '["u2"]' }
      ]
    });
    const resolved = await rules.resolveConnection(request({ subscriptions: [subscribe('s')] }), fetchLookups);
    expect(resolved.buckets.map((bucket) => bucket.bucket)).toEqual(['1#s|0["b1"]']);
  });
});

describe('CTEs (§3.8)', () => {
  test('a CTE used twice in one query acts as two independent row sets', async () => {
    const yaml = `config:
  edition: 3
with:
  mine: SELECT board_id AS b FROM members WHERE user_id = auth.user_id()
streams:
  s:
    query: SELECT * FROM pairs WHERE a IN mine AND b IN mine
`;
    const rules = loadStreams(yaml, 1);
    const { fetchLookups } = parameterIndex(rules, {
      members: [
        { board_id: 'x', user_id: 'u1' },
        { board_id: 'y', user_id: 'u1' }
      ]
    });
    const resolved = await rules.resolveConnection(request({ subscriptions: [subscribe('s')] }), fetchLookups);
    expect(resolved.buckets.map((bucket) => bucket.bucket).sort()).toEqual([
      '1#s|0["x","x"]',
      '1#s|0["x","y"]',
      '1#s|0["y","x"]',
      '1#s|0["y","y"]'
    ]);
  });

  test('a local CTE shadows a global one with the same name', () => {
    const yaml = `config:
  edition: 3
with:
  picked: SELECT board_id FROM members WHERE user_id = auth.user_id()
streams:
  s:
    with:
      picked: SELECT id FROM owned WHERE owner = auth.user_id()
    query: SELECT * FROM cards WHERE board_id IN picked
`;
    const rules = loadStreams(yaml, 1);
    expect(rules.tableSyncsParameters({ table: 'owned' })).toBe(true);
    expect(rules.tableSyncsParameters({ table: 'members' })).toBe(false);
  });
});

describe('subscription parameters (§3.3, §6)', () => {
  const rules = loadStreams(stream("SELECT * FROM boards WHERE id IN subscription.parameter('ids')"), 1);

  test('id IN subscription.parameter(ids) yields exactly the buckets of the listed ids', async () => {
    expect(await bucketIds(rules, { ids: ['a', 'b'] })).toEqual(['1#s|0["a"]', '1#s|0["b"]']);
  });

  test('a JSON-text parameter behaves like the array form', async () => {
    expect(await bucketIds(rules, { ids: '["a"]' })).toEqual(['1#s|0["a"]']);
  });

  test('a missing key or an empty array gives no buckets and no error', async () => {
    expect(await bucketIds(rules, {})).toEqual([]);
    expect(await bucketIds(rules, { ids: [] })).toEqual([]);
  });
});

describe('edition 2 streams (§3.10)', () => {
  const rules = loadStreams(
    `config:\n  edition: 2\nstreams:\n  s:\n    query: SELECT * FROM boards WHERE id IN subscription.parameter('ids')\n`,
    3
  );

  test('IN over a non-array or non-text value matches nothing; non-JSON text is an error', async () => {
    expect(await bucketIds(rules, { ids: ['a'] })).toEqual(['3#s|0["a"]']);
    expect(await bucketIds(rules, { ids: 5 })).toEqual([]);
    expect(await bucketIds(rules, { ids: '"a"' })).toEqual([]);
    const broken = await rules.resolveConnection(
      request({ subscriptions: [subscribe('s', { ids: 'abc' })] }),
      noLookups
    );
    expect(broken.streams[0]!.errors).toHaveLength(1);
  });

  test('"*" skips columns starting with "_"', () => {
    const result = rules.evaluateRow({ table: 'boards', row: { id: 'a', _internal: 1n, title: 't' } });
    expect(result.buckets).toEqual([
      { bucket: '3#s|0["a"]', table: 'boards', id: 'a', data: '{"id":"a","title":"t"}' }
    ]);
  });
});

describe('IN, && and request filters (§3.7)', () => {
  test('tags && subscription.parameter(tags): one bucket per common element', async () => {
    const rules = loadStreams(stream("SELECT * FROM boards WHERE tags && subscription.parameter('tags')"), 1);
    expect(bucketsOf(rules, 'boards', { id: 'b', tags: '["red","blue"]' })).toEqual(['1#s|0["red"]', '1#s|0["blue"]']);
    expect(await bucketIds(rules, { tags: ['blue', 'green'] })).toEqual(['1#s|0["blue"]', '1#s|0["green"]']);
  });

  test('x IN ARRAY[…] and x NOT IN <row array> are row filters', () => {
    const rules = loadStreams(stream("SELECT * FROM t WHERE state IN ARRAY['a', 'b'] AND 'x' NOT IN t.flags"), 1);
    expect(bucketsOf(rules, 't', { id: '1', state: 'a', flags: '["y"]' })).toEqual(['1#s|0[]']);
    expect(bucketsOf(rules, 't', { id: '2', state: 'c', flags: '["y"]' })).toEqual([]);
    expect(bucketsOf(rules, 't', { id: '3', state: 'b', flags: '["x"]' })).toEqual([]);
  });

  test("'x' IN connection.parameter('flags') is a request filter", async () => {
    const rules = loadStreams(
      stream("SELECT * FROM t WHERE 'beta' IN connection.parameter('flags') AND owner = auth.user_id()"),
      1
    );
    expect(bucketsOf(rules, 't', { id: '1', owner: 'u1' })).toEqual(['1#s|0["u1"]']);
    const on = await rules.resolveConnection(
      request({ clientParameters: { flags: ['beta'] }, subscriptions: [subscribe('s')] }),
      noLookups
    );
    expect(on.buckets.map((bucket) => bucket.bucket)).toEqual(['1#s|0["u1"]']);
    const off = await rules.resolveConnection(
      request({ clientParameters: { flags: ['alpha'] }, subscriptions: [subscribe('s')] }),
      noLookups
    );
    expect(off.buckets).toEqual([]);
    expect(off.streams[0]!.errors).toEqual([]);
  });

  test('a subscription-side json_each in FROM: each element selects a bucket', async () => {
    const rules = loadStreams(
      stream("SELECT t.* FROM t, json_each(subscription.parameter('pairs')) AS p WHERE t.k = p.value ->> 'k'"),
      1
    );
    expect(await bucketIds(rules, { pairs: [{ k: 'a' }, { k: 7 }] })).toEqual(['1#s|0["a"]', '1#s|0[7]']);
  });
});
