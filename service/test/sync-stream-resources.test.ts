import http from 'node:http';
import type { ReplicationStreamStorage } from '@syncpoint/service-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { dataParts, firstLinePart, linePart, type SyncLine } from '@syncpoint/test-fixtures';
import { startServiceHarness, type ServiceHarness } from './service-harness.js';
import { openSyncStream } from './sync-stream-client.js';

/**
 * Resources and the per-connection algorithm on real Postgres (issue 5, items 1 and 3): backpressure against a
 * client that stops reading, watchers freed on close, priorities, a newer checkpoint superseding a long download,
 * bucket removal, and write_checkpoint never going backwards on a connection.
 */

const SYNC_CONFIG = `
bucket_definitions:
  mine:
    parameters: SELECT request.user_id() AS user_id
    data:
      - SELECT * FROM todos WHERE owner = bucket.user_id
  bulk:
    parameters: SELECT request.user_id() AS user_id
    data:
      - SELECT * FROM bulk WHERE owner = bucket.user_id
  urgent:
    priority: 0
    parameters: SELECT request.user_id() AS user_id
    data:
      - SELECT * FROM urgent WHERE owner = bucket.user_id
  by_list:
    parameters: SELECT list_id FROM memberships WHERE user_id = request.user_id()
    data:
      - SELECT * FROM items WHERE list_id = bucket.list_id
`;

const BULK_ROWS = Number(process.env.BULK_ROWS ?? 50_000);

async function waitFor(condition: () => boolean | Promise<boolean>, what: string, timeoutMs = 10_000) {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * A raw NDJSON sync client on node:http whose reading can be paused: while paused, nothing is read from the socket,
 * so the kernel buffers fill and the server sees backpressure.
 */
function rawSyncStream(url: string, token: string, body: object) {
  const lines: SyncLine[] = [];
  let buffered = '';
  let ended = false;
  let wake: (() => void) | undefined;
  let response: http.IncomingMessage | undefined;
  const request = http.request(`${url}/sync/stream`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', Authorization: `Token ${token}`, Accept: 'application/x-ndjson' }
  });
  const opened = new Promise<http.IncomingMessage>((resolve, reject) => {
    request.once('response', (res) => {
      response = res;
      res.setEncoding('utf8');
      res.on('data', (text: string) => {
        buffered += text;
        let newline: number;
        while ((newline = buffered.indexOf('\n')) >= 0) {
          lines.push(JSON.parse(buffered.slice(0, newline)) as SyncLine);
          buffered = buffered.slice(newline + 1);
        }
        wake?.();
      });
      res.on('end', () => {
        ended = true;
        wake?.();
      });
      res.on('error', () => {});
      resolve(res);
    });
    request.once('error', reject);
  });
  request.end(JSON.stringify(body));
  return {
    lines,
    opened,
    pause: () => response!.pause(),
    resume: () => response!.resume(),
    get ended() {
      return ended;
    },
    /** Waits (reading) until a received line matches; returns its index. */
    async until(predicate: (line: SyncLine) => boolean, from = 0, timeoutMs = 30_000): Promise<number> {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const index = lines.findIndex((line, i) => i >= from && predicate(line));
        if (index >= 0) return index;
        if (ended) throw new Error('stream ended before the expected line');
        if (Date.now() > deadline) throw new Error('timed out waiting for a sync line');
        await new Promise<void>((resolve) => {
          wake = resolve;
          setTimeout(resolve, 100);
        });
      }
    },
    close: () => request.destroy()
  };
}

describe('sync stream resources and algorithm', () => {
  let harness: ServiceHarness;
  /** Ops storage handed to sync connections, per bucket (the progress of each connection's line generator). */
  const fetchedOps = new Map<string, number>();
  const fetched = (bucket: string) => fetchedOps.get(bucket) ?? 0;

  beforeAll(async () => {
    harness = await startServiceHarness({
      role: 'unified',
      syncConfig: SYNC_CONFIG,
      config: { api: { parameters: { max_concurrent_connections: 100 } } },
      sourceSetup: [
        `ALTER TABLE todos ADD COLUMN owner text`,
        `CREATE TABLE bulk (id text PRIMARY KEY, owner text, payload text)`,
        `CREATE TABLE urgent (id text PRIMARY KEY, owner text, note text)`,
        `CREATE TABLE memberships (id text PRIMARY KEY, user_id text, list_id text)`,
        `CREATE TABLE items (id text PRIMARY KEY, list_id text, v text)`,
        // ~1 KB rows for the bulk user.
        `INSERT INTO bulk SELECT 'b' || i, 'bulk', repeat(md5(i::text), 32) FROM generate_series(1, ${BULK_ROWS}) i`,
        `INSERT INTO todos SELECT 'p' || i, 'todo ' || i, 'prio' FROM generate_series(1, 5) i`,
        `INSERT INTO urgent SELECT 'u' || i, 'prio', 'urgent ' || i FROM generate_series(1, 3) i`,
        `INSERT INTO todos SELECT 'w' || i, 'todo ' || i, 'waiter' FROM generate_series(1, 3) i`,
        `INSERT INTO memberships VALUES ('r-a', 'remover', 'listA'), ('r-b', 'remover', 'listB')`,
        `INSERT INTO items VALUES ('ia1', 'listA', 'a1'), ('ia2', 'listA', 'a2'), ('ib1', 'listB', 'b1')`
      ]
    });
    // Count the ops each connection's generator takes from storage (it takes the next batch only after the
    // previous line was handed to the socket).
    const storage = harness.service.storage;
    const getStreamStorage = storage.getStreamStorage.bind(storage);
    storage.getStreamStorage = async (stream) => {
      const streamStorage: ReplicationStreamStorage = await getStreamStorage(stream);
      const getBucketData = streamStorage.getBucketData.bind(streamStorage);
      streamStorage.getBucketData = (...args: Parameters<ReplicationStreamStorage['getBucketData']>) => {
        const inner = getBucketData(...args);
        return (async function* () {
          for await (const chunk of inner) {
            fetchedOps.set(chunk.bucket, fetched(chunk.bucket) + chunk.data.length);
            yield chunk;
          }
        })();
      };
      return streamStorage;
    };
    await waitFor(
      async () => (await harness.service.storage.getServingCheckpoint()) !== null,
      'a first checkpoint',
      120_000
    );
  }, 180_000);
  afterAll(async () => harness?.stop());

  it('a client that stops reading pauses the server: it does not buffer the whole download', async () => {
    const token = await harness.token('bulk');
    const stream = rawSyncStream(harness.service.url, token, { client_id: 'slow' });
    const res = await stream.opened;
    expect(res.statusCode).toBe(200);
    await stream.until((line) => 'data' in line);
    stream.pause();
    const heapBefore = process.memoryUsage().heapUsed + process.memoryUsage().arrayBuffers;
    await sleep(1_500);
    const pausedAt = fetched('bulk["bulk"]');
    await sleep(1_000);
    const stillPausedAt = fetched('bulk["bulk"]');
    const heapAfter = process.memoryUsage().heapUsed + process.memoryUsage().arrayBuffers;
    // The generator waits for 'drain': nothing more is fetched while the client does not read, and what was fetched
    // is what fits in the socket buffers (a few MB), far below the ~55 MB download.
    expect(stillPausedAt).toBe(pausedAt);
    expect(pausedAt).toBeLessThan(BULK_ROWS / 4);
    expect(heapAfter - heapBefore).toBeLessThan(32 * 1024 * 1024);
    console.log(
      `slow client: ${pausedAt} of ${BULK_ROWS} ops fetched while paused; heap+buffers delta ${((heapAfter - heapBefore) / 1e6).toFixed(1)} MB`
    );

    // Meanwhile other clients are served: a new stream syncs in full, and a checkpoint request is acknowledged on it.
    const otherToken = await harness.token('prio');
    const other = rawSyncStream(harness.service.url, otherToken, { client_id: 'other' });
    const otherComplete = await other.until((line) => 'checkpoint_complete' in line, 0, 15_000);
    expect(dataParts(other.lines.slice(0, otherComplete)).flatMap((data) => data.data)).toHaveLength(5 + 3);
    const request = await fetch(`${harness.service.url}/sync/checkpoint-request`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', Authorization: `Token ${otherToken}` },
      body: JSON.stringify({ client_id: 'other', checkpoint_request_id: '1' })
    });
    expect(request.status).toBe(200);
    await other.until(
      (line) => line.checkpoint_diff?.write_checkpoint === '1' || line.checkpoint?.write_checkpoint === '1',
      otherComplete,
      15_000
    );
    other.close();
    expect(fetched('bulk["bulk"]')).toBe(pausedAt); // the stalled client is still paused

    // Reading again finishes the download.
    stream.resume();
    const complete = await stream.until((line) => 'checkpoint_complete' in line, 0, 60_000);
    const ops = dataParts(stream.lines.slice(0, complete)).flatMap((data) => data.data);
    expect(ops).toHaveLength(BULK_ROWS);
    stream.close();
    await waitFor(() => harness.service.syncConnections!.count === 0, 'the connection to close');
  }, 90_000);

  it('a closed connection frees its watcher waiter and timers at once', async () => {
    const watcher = harness.service.watcher!;
    await waitFor(() => watcher.waiting === 0 && harness.service.syncConnections!.count === 0, 'no open streams');
    const timers = () => process.getActiveResourcesInfo().filter((type) => type === 'Timeout').length;
    const timersBefore = timers();
    const token = await harness.token('waiter');
    // The raw client leaves no timers of its own behind (the fetch-based test client keeps one per read).
    const streams = Array.from({ length: 20 }, (_, i) =>
      rawSyncStream(harness.service.url, token, { client_id: `w${i}` })
    );
    for (const stream of streams) await stream.until((line) => 'checkpoint_complete' in line);
    // After checkpoint_complete every connection waits for the next checkpoint.
    await waitFor(() => watcher.waiting === 20, '20 waiters', 2_000);
    expect(harness.service.syncConnections!.count).toBe(20);

    await sleep(150); // the raw client's last 100 ms wait timers
    const timersOpen = timers();
    for (const stream of streams) stream.close();
    const closedAt = Date.now();
    await waitFor(
      () => watcher.waiting === 0 && harness.service.syncConnections!.count === 0,
      'waiters to be freed',
      1_000
    );
    expect(Date.now() - closedAt).toBeLessThan(500);
    // Each stream has its own timers (keepalive, expiry notice, expiry), at least 40 together; unrelated timers
    // (e.g. pool idle timers) may have ended meanwhile, so allow a few fewer.
    expect(timersOpen - timersBefore).toBeGreaterThanOrEqual(30);
    // (a few unrelated timers, e.g. pool idle timers, come and go: fewer than one per closed stream may remain)
    await waitFor(() => timers() - timersBefore < 20, 'the streams’ timers to be cleared', 1_000);
  });

  it('sends priority-0 buckets first, with partial_checkpoint_complete before checkpoint_complete', async () => {
    const token = await harness.token('prio');
    const stream = await openSyncStream(harness.service.url, token, { client_id: 'prio' });
    try {
      const lines = await stream.until((line) => 'checkpoint_complete' in line);
      const checkpoint = linePart(lines[0], 'checkpoint');
      const priorities = Object.fromEntries(checkpoint.buckets.map((bucket) => [bucket.bucket, bucket.priority]));
      expect(priorities).toEqual({ 'urgent["prio"]': 0, 'mine["prio"]': 3, 'bulk["prio"]': 3 });
      const shape = lines.map((line) => (line.data ? `data:${line.data.bucket}` : Object.keys(line)[0]));
      expect(shape.filter((entry) => entry !== 'token_expires_in')).toEqual([
        'checkpoint',
        'data:urgent["prio"]',
        'partial_checkpoint_complete',
        'data:mine["prio"]',
        'checkpoint_complete'
      ]);
      const partial = firstLinePart(lines, 'partial_checkpoint_complete');
      expect(partial).toEqual({ last_op_id: checkpoint.last_op_id, priority: 0 });

      // A live change in both: the diff's priority-0 data again comes first.
      await harness.sourceDb.query(
        `BEGIN; UPDATE todos SET description = 'x' WHERE id = 'p1'; UPDATE urgent SET note = 'y' WHERE id = 'u1'; COMMIT`
      );
      const live = await stream.until((line) => 'checkpoint_complete' in line);
      const liveShape = live
        .map((line) => (line.data ? `data:${line.data.bucket}` : Object.keys(line)[0]))
        .filter((entry) => entry !== 'token_expires_in');
      expect(liveShape).toEqual([
        'checkpoint_diff',
        'data:urgent["prio"]',
        'partial_checkpoint_complete',
        'data:mine["prio"]',
        'checkpoint_complete'
      ]);
    } finally {
      await stream.close();
    }
  });

  it('a newer checkpoint supersedes a long download: no checkpoint_complete for the first, a checkpoint_diff follows', async () => {
    const token = await harness.token('bulk');
    const stream = rawSyncStream(harness.service.url, token, { client_id: 'superseded' });
    await stream.opened;
    await stream.until((line) => 'data' in line);
    stream.pause();
    const first = linePart(stream.lines[0], 'checkpoint');
    const firstCheckpoint = BigInt(first.last_op_id);
    // A write while the download is under way.
    await harness.sourceDb.query(`INSERT INTO bulk VALUES ('late', 'bulk', 'late row')`);
    await waitFor(
      () => (harness.service.watcher!.latest?.checkpoint.checkpoint ?? 0n) > firstCheckpoint,
      'a newer checkpoint'
    );
    stream.resume();
    const completeAt = await stream.until((line) => 'checkpoint_complete' in line, 0, 60_000);
    const lines = stream.lines.slice(0, completeAt + 1);
    const diffAt = lines.findIndex((line) => 'checkpoint_diff' in line);
    expect(diffAt).toBeGreaterThan(0);
    // The first checkpoint never got its checkpoint_complete; the one that came is the diff's.
    expect(lines.filter((line) => 'checkpoint_complete' in line)).toHaveLength(1);
    const diff = linePart(lines[diffAt], 'checkpoint_diff');
    expect(BigInt(diff.last_op_id)).toBeGreaterThan(firstCheckpoint);
    expect(diff.updated_buckets.map((bucket) => bucket.bucket)).toEqual(['bulk["bulk"]']);
    expect(linePart(lines[completeAt], 'checkpoint_complete').last_op_id).toBe(diff.last_op_id);
    // Data before the diff belongs to the first checkpoint; nothing is sent twice, nothing is missing.
    const opIds = dataParts(lines).flatMap((data) => data.data.map((op) => BigInt(op.op_id)));
    for (const data of dataParts(lines.slice(0, diffAt))) {
      for (const op of data.data) expect(BigInt(op.op_id) <= firstCheckpoint).toBe(true);
    }
    expect(new Set(opIds).size).toBe(opIds.length);
    expect(opIds).toHaveLength(BULK_ROWS + 1);
    expect([...opIds].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0))).toEqual(opIds);
    const bucket = diff.updated_buckets[0]!;
    expect(bucket.count).toBe(BULK_ROWS + 1);
    const ops = dataParts(lines).flatMap((data) => data.data);
    expect(ops.reduce((total, op) => (total + op.checksum) >>> 0, 0) | 0).toBe(bucket.checksum);
    stream.close();
  }, 90_000);

  it('removes a bucket the user no longer has (removed_buckets) and sends it from 0 when it comes back', async () => {
    const token = await harness.token('remover');
    const stream = await openSyncStream(harness.service.url, token, { client_id: 'remover' });
    try {
      const lines = await stream.until((line) => 'checkpoint_complete' in line);
      expect(
        linePart(lines[0], 'checkpoint')
          .buckets.map((bucket) => bucket.bucket)
          .sort()
      ).toEqual(['bulk["remover"]', 'by_list["listA"]', 'by_list["listB"]', 'mine["remover"]', 'urgent["remover"]']);

      await harness.sourceDb.query(`DELETE FROM memberships WHERE id = 'r-b'`);
      const removal = await stream.until((line) => 'checkpoint_diff' in line);
      expect(linePart(removal.at(-1), 'checkpoint_diff')).toMatchObject({
        updated_buckets: [],
        removed_buckets: ['by_list["listB"]']
      });
      await stream.until((line) => 'checkpoint_complete' in line);

      // A row leaving one of the user's buckets: a REMOVE in that bucket.
      await harness.sourceDb.query(`UPDATE items SET list_id = 'listB' WHERE id = 'ia2'`);
      const moved = await stream.until((line) => 'checkpoint_complete' in line);
      const movedOps = dataParts(moved).flatMap((data) => data.data.map((op) => [data.bucket, op.op, op.object_id]));
      expect(movedOps).toEqual([['by_list["listA"]', 'REMOVE', 'ia2']]);

      // The bucket comes back: it is sent again from 0 (the client dropped it), with the moved row.
      await harness.sourceDb.query(`INSERT INTO memberships VALUES ('r-b2', 'remover', 'listB')`);
      const back = await stream.until((line) => 'checkpoint_complete' in line);
      const diff = firstLinePart(back, 'checkpoint_diff');
      expect(diff.updated_buckets.map((bucket) => bucket.bucket)).toEqual(['by_list["listB"]']);
      expect(diff.removed_buckets).toEqual([]);
      const data = dataParts(back).filter((part) => part.bucket === 'by_list["listB"]');
      expect(data[0]!.after).toBe('0');
      const rows = data
        .flatMap((part) => part.data)
        .filter((op) => op.op === 'PUT')
        .map((op) => op.object_id)
        .sort();
      expect(rows).toEqual(expect.arrayContaining(['ia2', 'ib1']));
    } finally {
      await stream.close();
    }
  });

  it('never lets write_checkpoint go backwards on a connection', async () => {
    const token = await harness.token('writer');
    const stream = await openSyncStream(harness.service.url, token, { client_id: 'dev' });
    const request = async (id: string) => {
      const response = await fetch(`${harness.service.url}/sync/checkpoint-request`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', Authorization: `Token ${token}` },
        body: JSON.stringify({ client_id: 'dev', checkpoint_request_id: id })
      });
      expect(response.status).toBe(200);
    };
    const seen: string[] = [];
    const record = (lines: SyncLine[]) => {
      for (const line of lines) {
        const value = line.checkpoint?.write_checkpoint ?? line.checkpoint_diff?.write_checkpoint;
        if (line.checkpoint || line.checkpoint_diff) seen.push(value ?? 'none');
      }
      return lines;
    };
    const storage = harness.service.storage;
    try {
      record(await stream.until((line) => 'checkpoint_complete' in line));
      await request('5');
      record(await stream.until((line) => line.checkpoint_diff?.write_checkpoint === '5'));

      // Postgres storage reports null when a newer request with an unreached head replaced the record (PROTOCOL
      // §6.1): the connection keeps reporting 5.
      storage.lastWriteCheckpoint = () => Promise.resolve(null);
      try {
        await harness.sourceDb.query(`INSERT INTO todos VALUES ('wr1', 'new', 'writer')`);
        const lines = record(await stream.until((line) => 'checkpoint_diff' in line));
        expect(linePart(lines.at(-1), 'checkpoint_diff').write_checkpoint).toBe('5');
        expect(linePart(lines.at(-1), 'checkpoint_diff').updated_buckets.map((bucket) => bucket.bucket)).toEqual([
          'mine["writer"]'
        ]);
        record(await stream.until((line) => 'checkpoint_complete' in line));
      } finally {
        delete (storage as { lastWriteCheckpoint?: unknown }).lastWriteCheckpoint;
      }

      // Many requests while the source is busy: the values only go up.
      const writes = (async () => {
        for (let i = 0; i < 30; i++)
          await harness.sourceDb.query(`INSERT INTO todos VALUES ('wr-busy-${i}', 'busy', 'someone-else')`);
      })();
      for (let id = 6; id <= 15; id++) await request(String(id));
      await writes;
      record(await stream.until((line) => line.checkpoint_diff?.write_checkpoint === '15', 10_000));
      const numbers = seen.filter((value) => value !== 'none').map(Number);
      expect(numbers).toEqual([...numbers].sort((a, b) => a - b));
      expect(seen.indexOf('none')).toBeLessThan(1); // only possibly before the first acknowledgement
      expect(seen.slice(seen.indexOf('5'))).not.toContain('none');
    } finally {
      await stream.close();
    }
  });
});
