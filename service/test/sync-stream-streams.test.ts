import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { dataParts, linePart, readFixture, TEST_AUDIENCE, testJwks, type SyncLine } from '@syncpoint/test-fixtures';
import { startServiceHarness, type ServiceHarness } from './service-harness.js';
import { openSyncStream } from './sync-stream-client.js';

/**
 * Sync Streams on the wire (STREAMS §5, checklist "Subscriptions and buckets" and "Protocol interplay") against real
 * Postgres: explicit subscriptions and their `{sub: j}` indexes, default streams and `{default: i}`, priorities and
 * overrides with `partial_checkpoint_complete`, per-subscription errors that leave the others syncing, buckets added
 * and removed by index changes, and the bucket / index-row limits. One replicating service for the file.
 */

const MAX_BUCKETS = 20;
const MAX_PARAMETER_RESULTS = 50;

const SOURCE_SETUP = [
  `INSERT INTO todos VALUES ('t1', 'first'), ('t2', 'second')`,
  `CREATE TABLE boards (id text PRIMARY KEY, owner_id text, is_public boolean)`,
  `CREATE TABLE cards (id text PRIMARY KEY, board_id text, title text, state text)`,
  `CREATE TABLE board_members (id text PRIMARY KEY, board_id text, user_id text)`,
  `INSERT INTO boards VALUES ('b1', 'user-1', false), ('b2', 'user-2', true), ('b3', 'user-2', false)`,
  `INSERT INTO cards VALUES ('c1', 'b1', 'one', 'open'), ('c2', 'b1', 'two', 'closed'), ('c3', 'b2', 'three', 'open'),
     ('c4', 'b2', 'four', 'open'), ('c5', 'b3', 'five', 'closed')`,
  `INSERT INTO board_members VALUES ('m1', 'b1', 'user-1')`,
  // 'crowded' is a member of more boards than one resolution may read index rows.
  `INSERT INTO board_members SELECT 'crowd' || i, 'b' || i, 'crowded' FROM generate_series(1, ${MAX_PARAMETER_RESULTS + 10}) i`
];

async function waitFor(condition: () => boolean | Promise<boolean>, what: string, timeoutMs = 15_000) {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** `subscriptions` entries as the SDK sends them (every key present). */
function subscribe(stream: string, parameters: object | null = null, overridePriority: number | null = null) {
  return { stream, parameters, override_priority: overridePriority };
}

/** A bucket id without its `<deployment>#` prefix (versioned ids, STREAMS §4.2). */
const unversioned = (bucket: string) => bucket.replace(/^\d+#/, '');

describe('Sync Streams on the wire', () => {
  let harness: ServiceHarness;
  let token: string;

  beforeAll(async () => {
    harness = await startServiceHarness({
      role: 'unified',
      syncConfig: readFixture('sync-configs', 'streams-wire', '.yaml'),
      config: {
        api: {
          parameters: { max_buckets_per_connection: MAX_BUCKETS, max_parameter_query_results: MAX_PARAMETER_RESULTS }
        },
        client_auth: { audience: [TEST_AUDIENCE], jwks: testJwks(['hs256']) }
      },
      sourceSetup: SOURCE_SETUP
    });
    token = await harness.token('user-1');
    await waitFor(
      async () => (await harness.service.storage.getServingCheckpoint()) !== null,
      'a first checkpoint',
      60_000
    );
  }, 90_000);
  afterAll(async () => harness?.stop());

  async function open(body: object, options: { format?: 'ndjson' | 'bson'; token?: string } = {}) {
    const stream = await openSyncStream(
      harness.service.url,
      options.token ?? token,
      { raw_data: true, ...body },
      options
    );
    expect(stream.response.status).toBe(200);
    return stream;
  }

  /** A stream's lines up to its first `checkpoint_complete`, and the checkpoint line's buckets without prefixes. */
  async function firstCheckpoint(body: object, format: 'ndjson' | 'bson' = 'ndjson') {
    const stream = await open(body, { format });
    const lines = await stream.until((line) => 'checkpoint_complete' in line);
    await stream.close();
    const checkpoint = linePart(lines[0], 'checkpoint');
    const buckets = Object.fromEntries(
      checkpoint.buckets.map((bucket) => [
        unversioned(bucket.bucket),
        { priority: bucket.priority, subscriptions: bucket.subscriptions, count: bucket.count }
      ])
    );
    return { lines, checkpoint, buckets };
  }

  it('without a streams field the default streams sync, each bucket with {default: i}', async () => {
    const { checkpoint, buckets, lines } = await firstCheckpoint({});
    expect(checkpoint.streams).toEqual([
      { name: 'everything', is_default: true, errors: [] },
      { name: 'my_boards', is_default: true, errors: [] },
      { name: 'by_request_state', is_default: true, errors: [] }
    ]);
    expect(buckets).toEqual({
      'everything|0[]': { priority: 3, subscriptions: [{ default: 0 }], count: 2 },
      'my_boards|0["user-1"]': { priority: 3, subscriptions: [{ default: 1 }], count: 1 },
      'my_boards|1[]': { priority: 3, subscriptions: [{ default: 1 }], count: 1 }
    });
    expect(
      dataParts(lines)
        .flatMap((data) => data.data.map((op) => op.object_id))
        .sort()
    ).toEqual(['b1', 'b2', 't1', 't2']);
  });

  it.each(['ndjson', 'bson'] as const)(
    'explicit subscriptions: {sub: j} by position with duplicates, priorities, per-subscription errors (%s)',
    async (format) => {
      const { checkpoint, buckets, lines } = await firstCheckpoint(
        {
          streams: {
            include_defaults: true,
            subscriptions: [
              subscribe('board', { id: 'b1' }),
              subscribe('board', { id: 'b1' }),
              subscribe('no_such_stream', { id: 'b1' }),
              subscribe('by_state', { states: 'abc' }),
              subscribe('board', { id: 'b3' }), // not a member: no bucket, no error
              subscribe('by_state', { states: ['closed'] }, 0),
              subscribe('board', { id: 'b1' }, 7)
            ]
          }
        },
        format
      );
      expect(checkpoint.streams?.map(({ name, is_default }) => [name, is_default])).toEqual([
        ['everything', true],
        ['board', false],
        ['my_boards', true],
        ['by_state', false],
        ['by_request_state', true]
      ]);
      const errors = Object.fromEntries(checkpoint.streams!.map(({ name, errors }) => [name, errors]));
      expect(errors.everything).toEqual([]);
      expect(errors.board?.map((error) => error.subscription)).toEqual([6]);
      expect(errors.board?.[0]?.message).toMatch(/^Error evaluating bucket ids: .*override_priority/);
      expect(errors.by_state?.map((error) => error.subscription)).toEqual([3]);
      expect(errors.by_state?.[0]?.message).toMatch(/^Error evaluating bucket ids: /);
      expect(buckets['board|0["b1"]']).toEqual({ priority: 2, subscriptions: [{ sub: 0 }, { sub: 1 }], count: 2 });
      expect(buckets['by_state|0["closed"]']).toEqual({ priority: 0, subscriptions: [{ sub: 5 }], count: 2 });
      expect(Object.keys(buckets).sort()).toEqual([
        'board|0["b1"]',
        'by_state|0["closed"]',
        'everything|0[]',
        'my_boards|0["user-1"]',
        'my_boards|1[]'
      ]);

      // Download by priority: 0, then 2, then 3; each group but the last confirmed by partial_checkpoint_complete.
      const kinds = lines
        .slice(1)
        .map((line) =>
          line.data
            ? unversioned(line.data.bucket)
            : line.partial_checkpoint_complete
              ? `partial ${line.partial_checkpoint_complete.priority}`
              : (Object.keys(line)[0] ?? '')
        );
      const collapsed = kinds.filter((kind, index) => kind !== kinds[index - 1]);
      expect(collapsed.slice(0, 4)).toEqual(['by_state|0["closed"]', 'partial 0', 'board|0["b1"]', 'partial 2']);
      expect(collapsed.at(-1)).toBe('checkpoint_complete');
      expect(collapsed.filter((kind) => kind.startsWith('partial'))).toEqual(['partial 0', 'partial 2']);
    }
  );

  it('an error in a default subscription is reported with subscription "default"; explicit null parameters are {}', async () => {
    const { checkpoint, buckets } = await firstCheckpoint({
      parameters: { states: 'not json' },
      streams: { include_defaults: true, subscriptions: [subscribe('board', null), subscribe('by_state', null)] }
    });
    const byRequest = checkpoint.streams?.find((stream) => stream.name === 'by_request_state');
    expect(byRequest?.errors.map((error) => error.subscription)).toEqual(['default']);
    expect(byRequest?.errors[0]?.message).toMatch(/^Error evaluating bucket ids: /);
    // `null` parameters are `{}`: no `id`/`states`, so no buckets and no errors for those subscriptions.
    const explicit = checkpoint.streams?.filter((stream) => stream.name === 'board' || stream.name === 'by_state');
    expect(explicit).toEqual([
      { name: 'board', is_default: false, errors: [] },
      { name: 'by_state', is_default: false, errors: [] }
    ]);
    expect(Object.keys(buckets).sort()).toEqual(['everything|0[]', 'my_boards|0["user-1"]', 'my_boards|1[]']);
  });

  it('include_defaults: false keeps only what is subscribed; an auto_subscribe stream stays is_default', async () => {
    const { checkpoint, buckets } = await firstCheckpoint({
      streams: { include_defaults: false, subscriptions: [subscribe('my_boards')] }
    });
    expect(checkpoint.streams).toEqual([{ name: 'my_boards', is_default: true, errors: [] }]);
    expect(buckets).toEqual({
      'my_boards|0["user-1"]': { priority: 3, subscriptions: [{ sub: 0 }], count: 1 },
      'my_boards|1[]': { priority: 3, subscriptions: [{ sub: 0 }], count: 1 }
    });
  });

  it('a bucket reached by a subscription and a default lists both reasons and the lower priority number', async () => {
    const { buckets } = await firstCheckpoint({
      streams: { include_defaults: true, subscriptions: [subscribe('my_boards', {}, 1)] }
    });
    expect(buckets['my_boards|1[]']).toEqual({ priority: 1, subscriptions: [{ sub: 0 }, { default: 1 }], count: 1 });
  });

  it('an index change adds the bucket through checkpoint_diff (priority, subscriptions) and removes it again', async () => {
    const stream = await open({
      streams: { include_defaults: false, subscriptions: [subscribe('board', { id: 'b2' })] }
    });
    try {
      const first = await stream.until((line) => 'checkpoint_complete' in line);
      expect(linePart(first[0], 'checkpoint').buckets).toEqual([]);
      expect(linePart(first[0], 'checkpoint').streams).toEqual([{ name: 'board', is_default: false, errors: [] }]);

      await harness.sourceDb.query(`INSERT INTO board_members VALUES ('m2', 'b2', 'user-1')`);
      const added = await stream.until((line) => (line.checkpoint_diff?.updated_buckets.length ?? 0) > 0, 20_000);
      const diff = linePart(added.at(-1), 'checkpoint_diff');
      expect(diff.updated_buckets.map((bucket) => ({ ...bucket, bucket: unversioned(bucket.bucket) }))).toEqual([
        expect.objectContaining({ bucket: 'board|0["b2"]', priority: 2, subscriptions: [{ sub: 0 }], count: 2 })
      ]);
      const data: SyncLine[] = await stream.until((line) => 'checkpoint_complete' in line);
      expect(
        dataParts(data)
          .flatMap((part) => part.data.map((op) => op.object_id))
          .sort()
      ).toEqual(['c3', 'c4']);

      await harness.sourceDb.query(`DELETE FROM board_members WHERE id = 'm2'`);
      const removed = await stream.until((line) => (line.checkpoint_diff?.removed_buckets.length ?? 0) > 0, 20_000);
      expect(linePart(removed.at(-1), 'checkpoint_diff').removed_buckets.map(unversioned)).toEqual(['board|0["b2"]']);
    } finally {
      await stream.close();
    }
  });

  it(`more than ${MAX_BUCKETS} distinct buckets end the stream with PSYNC_S2305`, async () => {
    const states = Array.from({ length: MAX_BUCKETS }, (_, i) => `s${i}`);
    const stream = await open({
      streams: { include_defaults: true, subscriptions: [subscribe('by_state', { states })] }
    });
    const lines = await stream.until((line) => 'error' in line);
    expect(lines.at(-1)!.error).toMatchObject({ code: 'PSYNC_S2305' });
    expect(await stream.next()).toBeNull();
  });

  it(`more than ${MAX_PARAMETER_RESULTS} index rows in one resolution end the stream with PSYNC_S2305`, async () => {
    const crowded = await harness.token('crowded');
    const stream = await open(
      { streams: { include_defaults: false, subscriptions: [subscribe('board', { id: 'b1' })] } },
      { token: crowded }
    );
    const lines = await stream.until((line) => 'error' in line);
    expect(lines.at(-1)!.error).toMatchObject({ code: 'PSYNC_S2305' });
    expect(await stream.next()).toBeNull();
  });
});
