import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { dataParts, linePart, readFixture, TEST_AUDIENCE, testJwks, type SyncLine } from '@syncpoint/test-fixtures';
import { startServiceHarness, type ServiceHarness } from './service-harness.js';
import { openSyncStream } from './sync-stream-client.js';

/**
 * The wire side of subscriptions (STREAMS §5) on real Postgres with bucket definitions, which are default streams:
 * the `streams` request field, the checkpoint line's `streams` and per-bucket `priority`/`subscriptions`,
 * `checkpoint_diff` when index data adds or removes buckets, priorities with `partial_checkpoint_complete`, and write
 * checkpoints with zero buckets. One service (role `unified`, replicating) for the whole file.
 */

const SOURCE_SETUP = [
  `INSERT INTO todos SELECT 't' || i, 'todo ' || i FROM generate_series(1, 5) i`,
  `CREATE TABLE memberships (id text PRIMARY KEY, user_id text, list_id text)`,
  `CREATE TABLE list_items (id text PRIMARY KEY, list_id text, v text)`,
  `INSERT INTO memberships VALUES ('m1', 'user-1', 'list1')`,
  `INSERT INTO list_items SELECT 'i' || i, 'list' || (i % 3 + 1), 'item ' || i FROM generate_series(1, 9) i`
];

async function waitFor(condition: () => boolean | Promise<boolean>, what: string, timeoutMs = 15_000) {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

describe('sync stream subscriptions on the wire', () => {
  let harness: ServiceHarness;
  let token: string;

  beforeAll(async () => {
    harness = await startServiceHarness({
      role: 'unified',
      syncConfig: readFixture('sync-configs', 'streams-wire-definitions', '.yaml'),
      config: { client_auth: { audience: [TEST_AUDIENCE], jwks: testJwks(['hs256']) } },
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

  /** A stream's lines up to and including its first `checkpoint_complete`. */
  async function firstCheckpoint(body: object, format: 'ndjson' | 'bson' = 'ndjson') {
    const stream = await openSyncStream(harness.service.url, token, { raw_data: true, ...body }, { format });
    expect(stream.response.status).toBe(200);
    const lines = await stream.until((line) => 'checkpoint_complete' in line);
    return { stream, lines, checkpoint: linePart(lines[0], 'checkpoint') };
  }

  it.each(['ndjson', 'bson'] as const)(
    'without a streams field every bucket definition is a default stream (%s)',
    async (format) => {
      const { stream, checkpoint } = await firstCheckpoint({ client_id: `defaults-${format}` }, format);
      await stream.close();
      expect(checkpoint.streams).toEqual([
        { name: 'global', is_default: true, errors: [] },
        { name: 'by_list', is_default: true, errors: [] }
      ]);
      const buckets = Object.fromEntries(
        checkpoint.buckets.map((bucket) => [bucket.bucket, [bucket.priority, bucket.subscriptions]])
      );
      expect(buckets).toEqual({
        'global[]': [0, [{ default: 0 }]],
        'by_list["list1"]': [3, [{ default: 1 }]]
      });
    }
  );

  it('include_defaults: false without subscriptions gives no buckets and no streams, then checkpoint_complete', async () => {
    const { stream, lines, checkpoint } = await firstCheckpoint({
      streams: { include_defaults: false, subscriptions: [] }
    });
    await stream.close();
    expect(checkpoint.buckets).toEqual([]);
    expect(checkpoint.streams).toEqual([]);
    expect(lines.map((line) => Object.keys(line)[0])).toEqual(['checkpoint', 'checkpoint_complete']);
  });

  it('naming a bucket definition includes it like a default; unknown stream names are ignored', async () => {
    const { stream, lines, checkpoint } = await firstCheckpoint({
      streams: {
        include_defaults: false,
        subscriptions: [
          { stream: 'no_such_stream', parameters: { id: 1 }, override_priority: null },
          { stream: 'by_list', parameters: null, override_priority: null },
          { stream: 'BY_LIST', parameters: {}, override_priority: null }
        ]
      }
    });
    await stream.close();
    expect(checkpoint.streams).toEqual([{ name: 'by_list', is_default: true, errors: [] }]);
    expect(
      checkpoint.buckets.map(({ bucket, priority, subscriptions }) => ({ bucket, priority, subscriptions }))
    ).toEqual([{ bucket: 'by_list["list1"]', priority: 3, subscriptions: [{ default: 0 }] }]);
    expect(new Set(dataParts(lines).map((data) => data.bucket))).toEqual(new Set(['by_list["list1"]']));
  });

  it('priority 0 data comes first, confirmed by partial_checkpoint_complete; one priority pending sends none', async () => {
    const { stream, lines } = await firstCheckpoint({ client_id: 'priorities' });
    await stream.close();
    const kinds = lines.map((line) => (line.data ? `data ${line.data.bucket}` : Object.keys(line)[0]));
    const partial = kinds.indexOf('partial_checkpoint_complete');
    expect(partial).toBeGreaterThan(0);
    expect(linePart(lines[partial], 'partial_checkpoint_complete').priority).toBe(0);
    expect(kinds.slice(1, partial).every((kind) => kind === 'data global[]')).toBe(true);
    expect(kinds.slice(partial + 1, -1).every((kind) => kind === 'data by_list["list1"]')).toBe(true);
    expect(kinds.at(-1)).toBe('checkpoint_complete');

    // Reconnect holding everything: nothing to download, so no partial line.
    const positions = new Map<string, string>();
    for (const data of dataParts(lines)) positions.set(data.bucket, data.next_after!);
    const again = await firstCheckpoint({
      buckets: [...positions].map(([name, after]) => ({ name, after }))
    });
    await again.stream.close();
    expect(again.lines.map((line) => Object.keys(line)[0])).toEqual(['checkpoint', 'checkpoint_complete']);
  });

  it('a new request with changed subscriptions and buckets[].after does not re-send retained buckets', async () => {
    const first = await firstCheckpoint({
      streams: { include_defaults: false, subscriptions: [{ stream: 'global' }] }
    });
    await first.stream.close();
    const after = dataParts(first.lines).at(-1)!.next_after!;
    const second = await firstCheckpoint({
      buckets: [{ name: 'global[]', after }],
      streams: { include_defaults: false, subscriptions: [{ stream: 'global' }, { stream: 'by_list' }] }
    });
    await second.stream.close();
    expect(second.checkpoint.buckets.map((bucket) => bucket.bucket).sort()).toEqual(['by_list["list1"]', 'global[]']);
    expect(new Set(dataParts(second.lines).map((data) => data.bucket))).toEqual(new Set(['by_list["list1"]']));
  });

  it('an index change adds a bucket through checkpoint_diff with priority and subscriptions, and removes it again', async () => {
    const { stream } = await firstCheckpoint({ client_id: 'index-changes' });
    try {
      await harness.sourceDb.query(`INSERT INTO memberships VALUES ('m2', 'user-1', 'list2')`);
      const added = await stream.until(
        (line) => line.checkpoint_diff?.updated_buckets.some((bucket) => bucket.bucket === 'by_list["list2"]') ?? false,
        20_000
      );
      const diff = linePart(added.at(-1), 'checkpoint_diff');
      expect(diff.updated_buckets.find((bucket) => bucket.bucket === 'by_list["list2"]')).toMatchObject({
        priority: 3,
        subscriptions: [{ default: 1 }],
        count: 3
      });
      expect(diff.removed_buckets).toEqual([]);
      const data = await stream.until((line) => 'checkpoint_complete' in line);
      expect(dataParts(data).map((part) => part.bucket)).toContain('by_list["list2"]');

      await harness.sourceDb.query(`DELETE FROM memberships WHERE id = 'm2'`);
      const removed = await stream.until((line) => (line.checkpoint_diff?.removed_buckets.length ?? 0) > 0, 20_000);
      expect(linePart(removed.at(-1), 'checkpoint_diff').removed_buckets).toEqual(['by_list["list2"]']);
    } finally {
      await stream.close();
    }
  });

  it('a write-checkpoint change alone gives an empty checkpoint_diff, even with zero buckets', async () => {
    const clientId = 'zero-buckets';
    const { stream } = await firstCheckpoint({
      client_id: clientId,
      streams: { include_defaults: false, subscriptions: [] }
    });
    try {
      const response = await fetch(`${harness.service.url}/write-checkpoint2.json?client_id=${clientId}`, {
        headers: { Authorization: `Token ${token}` }
      });
      expect(response.status).toBe(200);
      const { data } = (await response.json()) as { data: { write_checkpoint: string } };
      const lines: SyncLine[] = await stream.until(
        (line) => line.checkpoint_diff?.write_checkpoint === data.write_checkpoint,
        20_000
      );
      const diff = linePart(lines.at(-1), 'checkpoint_diff');
      expect(diff.updated_buckets).toEqual([]);
      expect(diff.removed_buckets).toEqual([]);
      const next = await stream.next(10_000);
      expect(next).toEqual({ checkpoint_complete: { last_op_id: diff.last_op_id } });
    } finally {
      await stream.close();
    }
  });
});
