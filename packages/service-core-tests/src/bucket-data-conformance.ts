import { addChecksums, lsnFromBigint, lsnToBigint, type Lsn } from '@syncpoint/codecs';
import {
  putChecksum,
  type BucketChecksum,
  removeChecksum,
  type BucketDataChunk,
  type BucketStorage,
  type OplogEntry,
  type ReplicationStream,
  type ReplicationStreamStorage,
  type RowChange,
  type SourceTableRef
} from '@syncpoint/service-core';
import type { SqliteRow } from '@syncpoint/sync-rules';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { StorageFactory } from './write-checkpoint-conformance.js';

/**
 * Conformance suite for bucket data (PROTOCOL §7.5, §8): ops, checksums, parameter lookups, checkpoints, stream
 * activation and compaction, written against the `BucketStorage` / `ReplicationStreamStorage` contracts only.
 * Every storage module registers it with a factory giving a fresh, migrated storage for the test file.
 */

/** LSN `n` as text; tests use small increasing numbers. */
const lsn = (n: number | bigint): Lsn => lsnFromBigint(BigInt(n));

export const lists: SourceTableRef = { id: '16384', schema: 'public', name: 'lists', replicaIdColumns: ['id'] };
export const todos: SourceTableRef = { id: '16390', schema: 'public', name: 'todos', replicaIdColumns: ['id'] };
export const items: SourceTableRef = { id: '16400', schema: 'public', name: 'items', replicaIdColumns: ['id'] };

let configCounter = 0;
/**
 * The sync config of the suite: a global bucket (lists), a per-user bucket from the token (todos) and a bucket per
 * list found through a parameter lookup on lists (items). Each call gives distinct content, so a new stream.
 */
export function testSyncConfig(): string {
  return `# conformance stream ${process.pid}-${++configCounter}-${Date.now()}
bucket_definitions:
  global:
    data:
      - SELECT * FROM lists
  by_user:
    parameters: SELECT request.user_id() AS user_id
    data:
      - SELECT * FROM todos WHERE owner_id = bucket.user_id
  by_list:
    parameters: SELECT id AS list_id FROM lists WHERE owner_id = request.user_id()
    data:
      - SELECT * FROM items WHERE list_id = bucket.list_id
`;
}

export const memberships: SourceTableRef = {
  id: '16410',
  schema: 'public',
  name: 'memberships',
  replicaIdColumns: ['id']
};

/**
 * A Sync Streams config (STREAMS §4.4): items of the lists a user is a member of, through a parameter index over
 * the joined table `memberships`. Distinct content per call, like {@link testSyncConfig}.
 */
export function testStreamsConfig(): string {
  return `# conformance streams ${process.pid}-${++configCounter}-${Date.now()}
config:
  edition: 3
streams:
  member_items:
    query: >
      SELECT * FROM items
       WHERE list_id IN (SELECT list_id FROM memberships WHERE user_id = auth.user_id())
`;
}

const insert = (table: SourceTableRef, after: SqliteRow): RowChange => ({ kind: 'insert', table, after });
const update = (table: SourceTableRef, after: SqliteRow, beforeKey?: SqliteRow): RowChange =>
  beforeKey ? { kind: 'update', table, after, beforeKey } : { kind: 'update', table, after };
const remove = (table: SourceTableRef, id: string): RowChange => ({ kind: 'delete', table, beforeKey: { id } });

/** Every op of the buckets up to `checkpoint`, read from the start with the default paging. */
export async function readBuckets(
  storage: ReplicationStreamStorage,
  checkpoint: bigint,
  buckets: string[],
  options?: { limit?: number; chunkLimitBytes?: number }
): Promise<Map<string, OplogEntry[]>> {
  const result = new Map<string, OplogEntry[]>();
  const positions = new Map(buckets.map((bucket) => [bucket, 0n]));
  // As the sync engine does: fetch again from the new positions while any chunk says more may follow.
  for (let round = 0, more = true; more; round++) {
    if (round > 100_000) throw new Error('getBucketData never finishes');
    more = false;
    for await (const chunk of storage.getBucketData(checkpoint, positions, options)) {
      expect(chunk.after).toBe(positions.get(chunk.bucket));
      const list = result.get(chunk.bucket) ?? [];
      list.push(...chunk.data);
      result.set(chunk.bucket, list);
      positions.set(chunk.bucket, chunk.nextAfter);
      if (chunk.hasMore) more = true;
    }
  }
  return result;
}

async function collect(iterable: AsyncIterable<BucketDataChunk>): Promise<BucketDataChunk[]> {
  const chunks: BucketDataChunk[] = [];
  for await (const chunk of iterable) chunks.push(chunk);
  return chunks;
}

const sumChecksums = (ops: OplogEntry[]) => ops.reduce((sum, op) => addChecksums(sum, op.checksum), 0);

/** The rows a client holds after applying `ops` on top of `rows` (PUT/REMOVE/MOVE/CLEAR semantics, §8.1). */
export function applyOps(
  start: { rows: Map<string, string>; checksum: number },
  ops: OplogEntry[]
): { rows: Map<string, string>; checksum: number } {
  let rows = new Map(start.rows);
  let checksum = start.checksum;
  for (const op of ops) {
    const key = `${op.object_type}\u0000${op.object_id}\u0000${op.subkey}`;
    if (op.op === 'CLEAR') {
      rows = new Map();
      checksum = op.checksum;
      continue;
    }
    checksum = addChecksums(checksum, op.checksum);
    if (op.op === 'PUT') rows.set(key, op.data!);
    else if (op.op === 'REMOVE') rows.delete(key);
  }
  return { rows, checksum };
}

const EMPTY_CLIENT = { rows: new Map<string, string>(), checksum: 0 };

export function registerBucketDataConformance(factory: StorageFactory) {
  let storage: BucketStorage;
  beforeAll(async () => {
    storage = await factory();
  });
  afterAll(async () => {
    await storage?.close();
  });

  /** A fresh stream with its own sync config; snapshot done at LSN 1 unless `snapshotDone` is false. */
  async function newStream(options: { snapshotDone?: boolean; config?: string } = {}) {
    const stream = await storage.deploySyncConfig(options.config ?? testSyncConfig());
    const streamStorage = await storage.getStreamStorage(stream);
    if (options.snapshotDone !== false) await streamStorage.markSnapshotDone(lsn(1));
    let position = 1;
    /** Save changes and commit them at the next LSN. */
    const commit = async (...changes: RowChange[]) => {
      position += 16;
      const at = lsn(position);
      const created = await streamStorage.startBatch(async (batch) => {
        for (const change of changes) await batch.save(change);
        return batch.commit(at);
      });
      return { created, lsn: at, checkpoint: (await streamStorage.getCheckpoint()).checkpoint };
    };
    return { stream, storage: streamStorage, commit, nextLsn: () => lsn((position += 16)) };
  }

  describe('bucket operations (PROTOCOL §8.1, §8.3)', () => {
    it('inserts, updates and deletes produce PUT and REMOVE ops in the right buckets', async () => {
      const { storage: s, commit } = await newStream();
      const { checkpoint } = await commit(
        insert(lists, { id: 'l1', owner_id: 'u1', name: 'groceries' }),
        insert(todos, { id: 't1', owner_id: 'u1', title: 'milk', n: 9007199254740993n }),
        update(todos, { id: 't1', owner_id: 'u2', title: 'milk' }),
        insert(items, { id: 'i1', list_id: 'l1' }),
        remove(items, 'i1')
      );
      const data = await readBuckets(s, checkpoint, ['global[]', 'by_user["u1"]', 'by_user["u2"]', 'by_list["l1"]']);

      const [list] = data.get('global[]')!;
      expect(list).toMatchObject({ op: 'PUT', object_type: 'lists', object_id: 'l1' });
      expect(JSON.parse(list!.data!)).toEqual({ id: 'l1', owner_id: 'u1', name: 'groceries' });
      expect(list!.checksum).toBe(putChecksum('lists', 'l1', list!.data!));

      const u1 = data.get('by_user["u1"]')!;
      expect(u1.map((op) => op.op)).toEqual(['PUT', 'REMOVE']);
      expect(u1[0]!.data).toBe('{"id":"t1","owner_id":"u1","title":"milk","n":9007199254740993}');
      expect(u1[1]).toMatchObject({ object_type: 'todos', object_id: 't1', subkey: u1[0]!.subkey });
      expect(u1[1]!.checksum).toBe(removeChecksum(u1[0]!.subkey!));

      const u2 = data.get('by_user["u2"]')!;
      expect(u2.map((op) => op.op)).toEqual(['PUT']);
      expect(u2[0]!.subkey).toBe(u1[0]!.subkey);

      expect(data.get('by_list["l1"]')!.map((op) => op.op)).toEqual(['PUT', 'REMOVE']);

      const ids = [...data.values()].flat().map((op) => op.op_id);
      expect(new Set(ids).size).toBe(ids.length);
      for (const id of ids) {
        expect(typeof id).toBe('bigint');
        expect(id).toBeGreaterThan(0n);
        expect(id).toBeLessThanOrEqual(checkpoint);
      }
      for (const ops of data.values())
        expect(ops.map((op) => op.op_id)).toEqual([...ops.map((op) => op.op_id)].sort((a, b) => (a < b ? -1 : 1)));
    });

    it('an update that changes the replica key removes the old row and puts the new one', async () => {
      const { storage: s, commit } = await newStream();
      await commit(insert(todos, { id: 't1', owner_id: 'u1' }));
      const { checkpoint } = await commit(update(todos, { id: 't2', owner_id: 'u1' }, { id: 't1' }));
      const ops = (await readBuckets(s, checkpoint, ['by_user["u1"]'])).get('by_user["u1"]')!;
      expect(ops.map((op) => [op.op, op.object_id])).toEqual([
        ['PUT', 't1'],
        ['REMOVE', 't1'],
        ['PUT', 't2']
      ]);
      expect(ops[1]!.subkey).toBe(ops[0]!.subkey);
      expect(ops[2]!.subkey).not.toBe(ops[0]!.subkey);
    });

    it('a truncate removes every row of the table from all its buckets', async () => {
      const { storage: s, commit, nextLsn } = await newStream();
      await commit(
        insert(todos, { id: 't1', owner_id: 'u1' }),
        insert(todos, { id: 't2', owner_id: 'u2' }),
        insert(todos, { id: 't3', owner_id: 'u1' }),
        insert(lists, { id: 'l1', owner_id: 'u1' })
      );
      await s.startBatch(async (batch) => {
        await batch.truncate([todos]);
        await batch.commit(nextLsn());
      });
      const { checkpoint } = await s.getCheckpoint();
      const data = await readBuckets(s, checkpoint, ['by_user["u1"]', 'by_user["u2"]', 'global[]']);
      expect(
        data
          .get('by_user["u1"]')!
          .map((op) => `${op.op} ${op.object_id}`)
          .sort()
      ).toEqual(['PUT t1', 'PUT t3', 'REMOVE t1', 'REMOVE t3']);
      expect(data.get('by_user["u2"]')!.map((op) => `${op.op} ${op.object_id}`)).toEqual(['PUT t2', 'REMOVE t2']);
      expect(data.get('global[]')!.map((op) => op.op)).toEqual(['PUT']);
      // The truncated rows are gone: inserting one again gives just a PUT, no REMOVE from stale state.
      const again = await commit(insert(todos, { id: 't2', owner_id: 'u1' }));
      const u1 = (await readBuckets(s, again.checkpoint, ['by_user["u1"]'])).get('by_user["u1"]')!;
      expect(u1.at(-1)).toMatchObject({ op: 'PUT', object_id: 't2' });
      expect(u1.filter((op) => op.op_id > checkpoint)).toHaveLength(1);
    });

    it('rows the sync rules cannot represent are skipped and counted, not thrown', async () => {
      const { storage: s, nextLsn } = await newStream();
      const skipped = await s.startBatch(async (batch) => {
        await batch.save(insert(todos, { id: 't1', owner_id: ['not', 'a', 'scalar'] } as unknown as SqliteRow));
        await batch.save(insert(todos, { id: ['bad'], owner_id: 'u1' } as unknown as SqliteRow));
        await batch.save(insert(todos, { id: 't2', owner_id: 'u1' }));
        await batch.commit(nextLsn());
        return batch.skippedRows;
      });
      expect(skipped).toBe(2);
      const { checkpoint } = await s.getCheckpoint();
      const u1 = (await readBuckets(s, checkpoint, ['by_user["u1"]'])).get('by_user["u1"]')!;
      expect(u1.map((op) => op.object_id)).toEqual(['t2']);
    });
  });

  describe('checkpoints and visibility (PROTOCOL §8.2, §8.3)', () => {
    it('flushed but uncommitted ops are invisible; a committed transaction appears all at once', async () => {
      const { storage: s, commit, nextLsn } = await newStream();
      const first = await commit(insert(todos, { id: 't1', owner_id: 'u1' }));
      const before = await s.getChecksums(first.checkpoint, ['by_user["u1"]', 'by_user["u2"]']);

      let flushedOps = 0;
      await s.startBatch(async (batch) => {
        for (let i = 0; i < 50; i++) await batch.save(insert(todos, { id: `x${i}`, owner_id: i % 2 ? 'u1' : 'u2' }));
        await batch.flush();
        // Flushed, not committed: the checkpoint and everything read at it is unchanged.
        expect(await s.getCheckpoint()).toEqual({ checkpoint: first.checkpoint, lsn: first.lsn });
        expect(await s.getChecksums(first.checkpoint, ['by_user["u1"]', 'by_user["u2"]'])).toEqual(before);
        const data = await readBuckets(s, first.checkpoint, ['by_user["u1"]', 'by_user["u2"]']);
        flushedOps = [...data.values()].flat().length;
        expect(flushedOps).toBe(1);
      });
      // startBatch returned without commit: still invisible.
      expect((await s.getCheckpoint()).checkpoint).toBe(first.checkpoint);

      const at = nextLsn();
      expect(await s.startBatch((batch) => batch.commit(at))).toBe(true);
      const after = await s.getCheckpoint();
      expect(after.lsn).toBe(at);
      const data = await readBuckets(s, after.checkpoint, ['by_user["u1"]', 'by_user["u2"]']);
      expect(data.get('by_user["u1"]')).toHaveLength(26);
      expect(data.get('by_user["u2"]')).toHaveLength(25);
    });

    it('keepalive advances only the lsn; an empty commit creates no checkpoint', async () => {
      const { storage: s, commit, nextLsn } = await newStream();
      const first = await commit(insert(lists, { id: 'l1', owner_id: 'u1' }));
      expect(first.created).toBe(true);

      const empty = nextLsn();
      expect(await s.startBatch((batch) => batch.commit(empty))).toBe(false);
      expect(await s.getCheckpoint()).toEqual({ checkpoint: first.checkpoint, lsn: first.lsn });

      const kept = nextLsn();
      expect(await s.startBatch((batch) => batch.keepalive(kept))).toBe(true);
      expect(await s.getCheckpoint()).toEqual({ checkpoint: first.checkpoint, lsn: kept });
      expect((await s.getReplicationState()).lastCheckpoint).toEqual({ checkpoint: first.checkpoint, lsn: kept });

      // An lsn behind the last checkpoint's never creates a checkpoint.
      expect(await s.startBatch((batch) => batch.keepalive(first.lsn))).toBe(false);
      expect((await s.getCheckpoint()).lsn).toBe(kept);
    });

    it('no checkpoint before the snapshot is done and before no_checkpoint_before; the ops come with the first allowed one', async () => {
      const { stream, storage: s } = await newStream({ snapshotDone: false });
      expect(await s.getCheckpoint()).toEqual({ checkpoint: 0n, lsn: null });
      expect((await s.getReplicationState()).snapshotDone).toBe(false);

      expect(
        await s.startBatch(async (batch) => {
          await batch.save(insert(todos, { id: 't1', owner_id: 'u1' }));
          return batch.commit(lsn(0x100));
        })
      ).toBe(false);
      expect(await s.getCheckpoint()).toEqual({ checkpoint: 0n, lsn: null });

      await s.markSnapshotDone(lsn(0x200));
      const state = await s.getReplicationState();
      expect(state.snapshotDone).toBe(true);
      expect(state.noCheckpointBefore).toBe(lsn(0x200));

      expect(
        await s.startBatch(async (batch) => {
          await batch.save(insert(todos, { id: 't2', owner_id: 'u1' }));
          return batch.commit(lsn(0x1ff));
        })
      ).toBe(false);
      expect((await s.getCheckpoint()).checkpoint).toBe(0n);
      expect((await storage.getReplicatingStreams()).find((candidate) => candidate.id === stream.id)?.state).toBe(
        'PROCESSING'
      );

      // No new op in this transaction, but the blocked ones must now become visible.
      expect(await s.startBatch((batch) => batch.commit(lsn(0x200)))).toBe(true);
      const { checkpoint, lsn: at } = await s.getCheckpoint();
      expect(at).toBe(lsn(0x200));
      const u1 = (await readBuckets(s, checkpoint, ['by_user["u1"]'])).get('by_user["u1"]')!;
      expect(u1.map((op) => op.object_id)).toEqual(['t1', 't2']);
    });

    it('a commit marks checkpoint requests with head ≤ lsn processed', async () => {
      const { commit } = await newStream();
      const user = `bucket-data-${process.pid}-${Date.now()}/client`;
      const request = (head: Lsn) =>
        storage.createManagedWriteCheckpoints([{ user_id: user, heads: { '1': head }, checkpoint_request_id: 5n }]);
      const first = await commit(insert(lists, { id: 'l1', owner_id: 'u1' }));
      const head = lsn(lsnToBigint(first.lsn) + 20n);
      expect((await request(head)).shouldAdvance).toBe(true);

      const early = await commit(insert(lists, { id: 'l2', owner_id: 'u1' }));
      expect(early.lsn < head).toBe(true);
      expect((await request(head)).shouldAdvance).toBe(true);

      // The marker transaction: no ops, but the request it acknowledges needs a checkpoint at its lsn.
      const marker = await commit();
      expect(marker.lsn >= head).toBe(true);
      expect((await request(head)).shouldAdvance).toBe(false);
      expect(await storage.lastWriteCheckpoint(user, marker.lsn)).toBe(5n);
      expect((await storage.getServingCheckpoint())?.checkpoint.lsn).toBe(marker.lsn);
    });

    it('listenForCheckpoints fires when a checkpoint is created', async () => {
      const { commit } = await newStream();
      let resolve: () => void = () => {};
      let calls = 0;
      const stop = await storage.listenForCheckpoints(() => {
        calls++;
        resolve();
      });
      try {
        const notified = new Promise<void>((done) => (resolve = done));
        await commit(insert(lists, { id: 'l1', owner_id: 'u1' }));
        await Promise.race([
          notified,
          new Promise((_, reject) => setTimeout(() => reject(new Error('no notification within 10 s')), 10_000))
        ]);
        expect(calls).toBeGreaterThan(0);
      } finally {
        await stop();
      }
    });

    it('the first checkpoint activates a PROCESSING stream and stops the older ACTIVE one', async () => {
      const a = await newStream();
      expect(a.stream.state).toBe('PROCESSING');
      await a.commit(insert(lists, { id: 'l1', owner_id: 'u1' }));
      const state = async (stream: ReplicationStream) =>
        (await storage.getReplicatingStreams()).find((candidate) => candidate.id === stream.id)?.state ?? 'gone';
      expect(await state(a.stream)).toBe('ACTIVE');
      const servingA = await storage.getServingCheckpoint();
      expect(servingA?.stream.id).toBe(a.stream.id);
      expect(servingA?.checkpoint).toEqual(await a.storage.getCheckpoint());

      const b = await newStream();
      expect(await state(b.stream)).toBe('PROCESSING');
      expect((await storage.getServingCheckpoint())?.stream.id).toBe(a.stream.id);
      const streams = await storage.getReplicatingStreams();
      expect(streams.map((stream) => stream.id).slice(0, 2)).toEqual([b.stream.id, a.stream.id]);

      const committed = await b.commit(insert(lists, { id: 'l1', owner_id: 'u1' }));
      expect(committed.created).toBe(true);
      expect(await state(b.stream)).toBe('ACTIVE');
      expect(await state(a.stream)).toBe('gone');
      const servingB = await storage.getServingCheckpoint();
      expect(servingB?.stream.id).toBe(b.stream.id);
      expect(servingB?.checkpoint).toEqual({ checkpoint: committed.checkpoint, lsn: committed.lsn });

      await storage.setStreamState(b.stream.id, 'ERRORED', 'replication failed: test');
      expect((await storage.getServingCheckpoint())?.stream).toMatchObject({ id: b.stream.id, state: 'ERRORED' });
      expect((await storage.getReplicatingStreams()).some((stream) => stream.id === b.stream.id)).toBe(false);
    });

    it('getStreamStorage refuses invalid sync rules with a clear error', async () => {
      const stream = await storage.deploySyncConfig(
        'bucket_definitions:\n  broken:\n    data: ["SELECT * FROM t WHERE x = bucket.nope"]\n'
      );
      await expect(storage.getStreamStorage(stream)).rejects.toThrow(/nope/);
    });

    it('replication state: slot name, snapshot progress, clear', async () => {
      const { storage: s, commit } = await newStream({ snapshotDone: false });
      await s.setSlotName('syncpoint_test_slot');
      await s.saveSnapshotProgress({ table: todos, done: false, rowsDone: 10, lastKey: '"t9"' });
      await s.saveSnapshotProgress({ table: lists, done: true, rowsDone: 3, lastKey: null });
      await s.saveSnapshotProgress({ table: todos, done: false, rowsDone: 20, lastKey: '"t19"' });
      let state = await s.getReplicationState();
      expect(state.slotName).toBe('syncpoint_test_slot');
      expect(state.tables.sort((x, y) => x.table.id.localeCompare(y.table.id))).toEqual([
        { table: lists, done: true, rowsDone: 3, lastKey: null },
        { table: todos, done: false, rowsDone: 20, lastKey: '"t19"' }
      ]);

      await s.markSnapshotDone(lsn(1));
      const { checkpoint } = await commit(
        insert(todos, { id: 't1', owner_id: 'u1' }),
        insert(lists, { id: 'l1', owner_id: 'u1' })
      );
      expect((await s.getChecksums(checkpoint, ['by_user["u1"]'])).size).toBe(1);

      await s.clear();
      state = await s.getReplicationState();
      expect(state.tables).toEqual([]);
      expect(state.snapshotDone).toBe(false);
      expect((await s.getChecksums(checkpoint, ['by_user["u1"]', 'global[]'])).size).toBe(0);
      expect([...(await readBuckets(s, checkpoint, ['by_user["u1"]'])).values()].flat()).toEqual([]);
      const lookup = s.syncRules.planBuckets({ userId: 'u1' }).lookups;
      expect(await s.getParameterSets(checkpoint, lookup)).toEqual([[]]);
    });
  });

  describe('checksums (PROTOCOL §7.5)', () => {
    it('equal the wrapping sum and count of the ops read back, for many buckets and at older checkpoints', async () => {
      const { storage: s, commit } = await newStream();
      const users = Array.from({ length: 120 }, (_, i) => `u${i}`);
      const first = await commit(
        ...users.flatMap((user, i) => [
          insert(todos, { id: `a${i}`, owner_id: user }),
          insert(todos, { id: `b${i}`, owner_id: user, x: 1n })
        ])
      );
      const second = await commit(
        ...users.flatMap((user, i) =>
          i % 3 === 0
            ? [update(todos, { id: `a${i}`, owner_id: users[(i + 1) % users.length]! })]
            : i % 3 === 1
              ? [remove(todos, `b${i}`)]
              : []
        )
      );
      const buckets = users.map((user) => `by_user["${user}"]`);
      for (const checkpoint of [first.checkpoint, second.checkpoint]) {
        const data = await readBuckets(s, checkpoint, buckets);
        const checksums = await s.getChecksums(checkpoint, [...buckets, 'by_user["nobody"]']);
        expect(checksums.has('by_user["nobody"]')).toBe(false);
        expect(checksums.size).toBe(buckets.length);
        for (const bucket of buckets) {
          const ops = data.get(bucket) ?? [];
          expect(checksums.get(bucket)).toEqual({ bucket, checksum: sumChecksums(ops), count: ops.length });
        }
      }
      // Sums wrap at 2^32 and stay unsigned.
      const all = await s.getChecksums(second.checkpoint, buckets);
      for (const checksum of all.values()) {
        expect(Number.isInteger(checksum.checksum)).toBe(true);
        expect(checksum.checksum).toBeGreaterThanOrEqual(0);
        expect(checksum.checksum).toBeLessThan(2 ** 32);
      }
    });
  });

  describe('reading ops in pages', () => {
    it('yields at most `limit` ops, buckets in name order, with hasMore and nextAfter to resume', async () => {
      const { storage: s, commit } = await newStream();
      const changes: RowChange[] = [];
      for (let i = 0; i < 10; i++)
        changes.push(insert(todos, { id: `t${i}`, owner_id: 'ub' }), insert(todos, { id: `s${i}`, owner_id: 'ua' }));
      const { checkpoint } = await commit(...changes);
      const start = new Map([
        ['by_user["ub"]', 0n],
        ['by_user["ua"]', 0n]
      ]);
      const chunks = await collect(s.getBucketData(checkpoint, start, { limit: 15 }));
      expect(chunks.map((chunk) => [chunk.bucket, chunk.data.length, chunk.hasMore])).toEqual([
        ['by_user["ua"]', 10, false],
        ['by_user["ub"]', 5, true]
      ]);
      const [ua, ub] = chunks as [BucketDataChunk, BucketDataChunk];
      expect(ua.after).toBe(0n);
      expect(ua.nextAfter).toBe(ua.data.at(-1)!.op_id);
      expect(ub.nextAfter).toBe(ub.data.at(-1)!.op_id);

      const rest = await collect(
        s.getBucketData(checkpoint, new Map([['by_user["ub"]', ub.nextAfter]]), { limit: 15 })
      );
      expect(rest).toHaveLength(1);
      expect(rest[0]).toMatchObject({ bucket: 'by_user["ub"]', after: ub.nextAfter, hasMore: false });
      expect(rest[0]!.data.map((op) => op.object_id)).toEqual(['t5', 't6', 't7', 't8', 't9']);

      // Buckets already read to the end yield nothing; unknown buckets yield nothing.
      expect(
        await collect(
          s.getBucketData(
            checkpoint,
            new Map([
              ['by_user["ua"]', ua.nextAfter],
              ['by_user["zz"]', 0n]
            ])
          )
        )
      ).toEqual([]);
    });

    it('splits chunks at about chunkLimitBytes of row data, and the resume loop reads everything exactly once', async () => {
      const { storage: s, commit } = await newStream();
      const changes: RowChange[] = [];
      for (let i = 0; i < 40; i++)
        changes.push(insert(todos, { id: `t${i}`, owner_id: `u${i % 3}`, text: 'x'.repeat(50 + i) }));
      const { checkpoint } = await commit(...changes);
      const buckets = ['by_user["u0"]', 'by_user["u1"]', 'by_user["u2"]'];
      const chunks = await collect(
        s.getBucketData(checkpoint, new Map(buckets.map((b) => [b, 0n])), { limit: 1000, chunkLimitBytes: 300 })
      );
      expect(chunks.length).toBeGreaterThan(3);
      for (const chunk of chunks) {
        const bytes = chunk.data.slice(0, -1).reduce((sum, op) => sum + Buffer.byteLength(op.data ?? ''), 0);
        expect(bytes).toBeLessThan(300);
      }
      expect(chunks.map((chunk) => chunk.bucket)).toEqual([...chunks.map((chunk) => chunk.bucket)].sort());
      const byLimit = await readBuckets(s, checkpoint, buckets, { limit: 7 });
      const byBytes = await readBuckets(s, checkpoint, buckets, { chunkLimitBytes: 200 });
      const whole = await readBuckets(s, checkpoint, buckets);
      expect(byLimit).toEqual(whole);
      expect(byBytes).toEqual(whole);
      expect([...whole.values()].flat()).toHaveLength(40);
    });
  });

  describe('parameter lookups (PROTOCOL §8.3, §11)', () => {
    it('are read as of a checkpoint', async () => {
      const { storage: s, commit } = await newStream();
      const lookupsOf = (userId: string) => s.syncRules.planBuckets({ userId }).lookups;
      const sets = async (checkpoint: bigint, userId: string) =>
        (await s.getParameterSets(checkpoint, lookupsOf(userId)))[0]!.map((row) => row.list_id).sort();

      const c1 = await commit(
        insert(lists, { id: 'l1', owner_id: 'u1' }),
        insert(lists, { id: 'l2', owner_id: 'u1' }),
        insert(lists, { id: 'l3', owner_id: 'u2' })
      );
      const c2 = await commit(update(lists, { id: 'l1', owner_id: 'u2' }));
      const c3 = await commit(remove(lists, 'l3'), update(lists, { id: 'l2', owner_id: 'u1', name: 'renamed' }));

      // Changed after the checkpoint: not seen there.
      await s.startBatch(async (batch) => {
        await batch.save(insert(lists, { id: 'l4', owner_id: 'u1' }));
        await batch.flush();
      });

      expect(await sets(c1.checkpoint, 'u1')).toEqual(['l1', 'l2']);
      expect(await sets(c1.checkpoint, 'u2')).toEqual(['l3']);
      expect(await sets(c2.checkpoint, 'u1')).toEqual(['l2']);
      expect(await sets(c2.checkpoint, 'u2')).toEqual(['l1', 'l3']);
      expect(await sets(c3.checkpoint, 'u1')).toEqual(['l2']);
      expect(await sets(c3.checkpoint, 'u2')).toEqual(['l1']);
      expect(await sets(c3.checkpoint, 'u3')).toEqual([]);

      const both = await s.getParameterSets(c1.checkpoint, [...lookupsOf('u2'), ...lookupsOf('u1')]);
      expect(both.map((rows) => rows.map((row) => row.list_id).sort())).toEqual([['l3'], ['l1', 'l2']]);

      const planned = await s.syncRules.queryBuckets({ userId: 'u2' }, (lookups) =>
        s.getParameterSets(c3.checkpoint, lookups)
      );
      expect(planned.buckets.map((bucket) => bucket.bucket).sort()).toEqual([
        'by_list["l1"]',
        'by_user["u2"]',
        'global[]'
      ]);
    });
  });

  describe('Sync Streams parameter indexes (STREAMS §4.3, §4.4)', () => {
    it("a membership row added, removed or moved changes a subscriber's buckets as of each checkpoint", async () => {
      const { stream, storage: s, commit } = await newStream({ config: testStreamsConfig() });
      const bucket = (list: string) => `${stream.id}#member_items|0["${list}"]`;
      const bucketsAt = async (checkpoint: bigint, userId: string) => {
        const resolved = await s.syncRules.resolveConnection(
          { userId, tokenParameters: { sub: userId }, includeDefaults: false, subscriptions: [] },
          (lookups) => s.getParameterSets(checkpoint, lookups)
        );
        expect(resolved.buckets).toEqual([]);
        const subscribed = await s.syncRules.resolveConnection(
          {
            userId,
            tokenParameters: { sub: userId },
            includeDefaults: false,
            subscriptions: [{ stream: 'member_items', parameters: null, overridePriority: null }]
          },
          (lookups) => s.getParameterSets(checkpoint, lookups)
        );
        expect(subscribed.usesLookups).toBe(true);
        return subscribed.buckets.map((entry) => entry.bucket).sort();
      };

      const c1 = await commit(
        insert(items, { id: 'i1', list_id: 'l1' }),
        insert(items, { id: 'i2', list_id: 'l2' }),
        insert(memberships, { id: 'm1', list_id: 'l1', user_id: 'u1' })
      );
      const c2 = await commit(insert(memberships, { id: 'm2', list_id: 'l2', user_id: 'u1' }));
      const c3 = await commit(remove(memberships, 'm1'));
      const c4 = await commit(update(memberships, { id: 'm2', list_id: 'l3', user_id: 'u1' }));
      const c5 = await commit(update(memberships, { id: 'm2', list_id: 'l3', user_id: 'u2' }));

      expect(await bucketsAt(c1.checkpoint, 'u1')).toEqual([bucket('l1')]);
      expect(await bucketsAt(c2.checkpoint, 'u1')).toEqual([bucket('l1'), bucket('l2')]);
      expect(await bucketsAt(c3.checkpoint, 'u1')).toEqual([bucket('l2')]);
      expect(await bucketsAt(c4.checkpoint, 'u1')).toEqual([bucket('l3')]);
      expect(await bucketsAt(c5.checkpoint, 'u1')).toEqual([]);
      expect(await bucketsAt(c5.checkpoint, 'u2')).toEqual([bucket('l3')]);
      // As of an earlier checkpoint, later index changes are not seen.
      expect(await bucketsAt(c1.checkpoint, 'u2')).toEqual([]);

      const data = await readBuckets(s, c5.checkpoint, [bucket('l1'), bucket('l2')]);
      expect(data.get(bucket('l1'))!.map((op) => [op.op, op.object_type, op.object_id])).toEqual([
        ['PUT', 'items', 'i1']
      ]);
      expect(data.get(bucket('l2'))!.map((op) => [op.op, op.object_id])).toEqual([['PUT', 'i2']]);
    });

    it('a row moving between buckets is a REMOVE from the old one and a PUT into the new one', async () => {
      const { stream, storage: s, commit } = await newStream({ config: testStreamsConfig() });
      const bucket = (list: string) => `${stream.id}#member_items|0["${list}"]`;
      const c1 = await commit(insert(items, { id: 'i1', list_id: 'l1', title: 'a' }));
      const c2 = await commit(update(items, { id: 'i1', list_id: 'l2', title: 'b' }));
      const before = await readBuckets(s, c1.checkpoint, [bucket('l1'), bucket('l2')]);
      expect(applyOps(EMPTY_CLIENT, before.get(bucket('l1')) ?? []).rows.size).toBe(1);
      expect(before.get(bucket('l2')) ?? []).toEqual([]);
      const after = await readBuckets(s, c2.checkpoint, [bucket('l1'), bucket('l2')]);
      expect(after.get(bucket('l1'))!.map((op) => op.op)).toEqual(['PUT', 'REMOVE']);
      expect(applyOps(EMPTY_CLIENT, after.get(bucket('l1'))!).rows.size).toBe(0);
      const moved = applyOps(EMPTY_CLIENT, after.get(bucket('l2'))!);
      expect([...moved.rows.values()]).toEqual(['{"id":"i1","list_id":"l2","title":"b"}']);
      const checksums = await s.getChecksums(c2.checkpoint, [bucket('l1'), bucket('l2')]);
      expect([checksums.get(bucket('l1'))?.count, checksums.get(bucket('l2'))?.count]).toEqual([2, 1]);
    });
  });

  describe('compaction (PROTOCOL §8.4)', () => {
    type Command =
      | { kind: 'put'; table: 'lists' | 'todos'; row: number; owner: number; value: number }
      | { kind: 'delete'; table: 'lists' | 'todos'; row: number }
      | { kind: 'commit' };
    const command: fc.Arbitrary<Command> = fc.oneof(
      {
        weight: 5,
        arbitrary: fc.record({
          kind: fc.constant('put' as const),
          table: fc.constantFrom('lists' as const, 'todos' as const),
          row: fc.nat(3),
          owner: fc.nat(2),
          value: fc.nat(3)
        })
      },
      {
        weight: 2,
        arbitrary: fc.record({
          kind: fc.constant('delete' as const),
          table: fc.constantFrom('lists' as const, 'todos' as const),
          row: fc.nat(3)
        })
      },
      { weight: 2, arbitrary: fc.constant({ kind: 'commit' as const }) }
    );
    const toChange = (c: Exclude<Command, { kind: 'commit' }>): RowChange => {
      const table = c.table === 'lists' ? lists : todos;
      const id = `${c.table[0]}${c.row}`;
      return c.kind === 'delete'
        ? remove(table, id)
        : update(table, { id, owner_id: `u${c.owner}`, value: BigInt(c.value) });
    };
    const allBuckets = ['global[]', 'by_user["u0"]', 'by_user["u1"]', 'by_user["u2"]'];

    it('never changes a checksum, and a client resuming from any op id ends with the same rows', async () => {
      await fc.assert(
        fc.asyncProperty(
          fc.array(command, { minLength: 1, maxLength: 40 }),
          fc.array(
            command.filter((c) => c.kind !== 'commit'),
            { maxLength: 5 }
          ),
          fc.integer({ min: 1, max: 6 }),
          async (commands, trailing, batchSize) => {
            const { storage: s, nextLsn } = await newStream();
            await s.startBatch(async (batch) => {
              for (const c of commands) {
                if (c.kind === 'commit') await batch.commit(nextLsn());
                else await batch.save(toChange(c));
              }
              await batch.commit(nextLsn());
              // Saved after the last checkpoint: compaction must leave these alone.
              for (const c of trailing) await batch.save(toChange(c));
              await batch.flush();
            });
            const { checkpoint } = await s.getCheckpoint();
            const original = await readBuckets(s, checkpoint, allBuckets);
            const checksumsBefore = await s.getChecksums(checkpoint, allBuckets);

            await s.compact({ batchSize });
            const compactedAtCheckpoint = await readBuckets(s, checkpoint, allBuckets);
            const checksumsAfter = await s.getChecksums(checkpoint, allBuckets);
            const sums = (checksums: Map<string, BucketChecksum>) =>
              Object.fromEntries([...checksums.values()].map((c) => [c.bucket, c.checksum]));
            expect(sums(checksumsAfter)).toEqual(sums(checksumsBefore));
            for (const bucket of compactedAtCheckpoint.keys()) {
              expect(applyOps(EMPTY_CLIENT, compactedAtCheckpoint.get(bucket)!).checksum).toBe(
                checksumsBefore.get(bucket)!.checksum
              );
            }

            // The trailing ops become visible untouched.
            await s.startBatch((batch) => batch.commit(nextLsn()));
            const latest = (await s.getCheckpoint()).checkpoint;
            const compacted = await readBuckets(s, latest, allBuckets);
            const finalChecksums = await s.getChecksums(latest, allBuckets);

            for (const bucket of allBuckets) {
              const before = [
                ...(original.get(bucket) ?? []),
                ...(compacted.get(bucket) ?? []).filter((op) => op.op_id > checkpoint)
              ];
              const after = compacted.get(bucket) ?? [];
              const expected = applyOps(EMPTY_CLIENT, before);
              expect(expected.checksum).toBe(finalChecksums.get(bucket)?.checksum ?? 0);
              for (const op of after)
                if (op.op_id <= checkpoint && (op.op === 'MOVE' || op.op === 'CLEAR'))
                  expect(op.data ?? null).toBeNull();
              // A client that synced the uncompacted log up to any op id, then downloads the compacted rest.
              for (const position of [0n, ...before.map((op) => op.op_id)]) {
                const synced = applyOps(
                  EMPTY_CLIENT,
                  before.filter((op) => op.op_id <= position)
                );
                const resumed = applyOps(
                  synced,
                  after.filter((op) => op.op_id > position)
                );
                expect(resumed.rows).toEqual(expected.rows);
                expect(resumed.checksum).toBe(expected.checksum);
              }
            }
          }
        ),
        { numRuns: 40 }
      );
    }, 120_000);

    it('turns superseded ops into MOVE and a leading run of REMOVE/MOVE into one CLEAR', async () => {
      const { storage: s, commit } = await newStream();
      await commit(insert(todos, { id: 't1', owner_id: 'u1', v: 1n }), insert(todos, { id: 't2', owner_id: 'u1' }));
      await commit(update(todos, { id: 't1', owner_id: 'u1', v: 2n }), remove(todos, 't2'));
      const { checkpoint } = await commit(update(todos, { id: 't1', owner_id: 'u1', v: 3n }));
      const before = (await readBuckets(s, checkpoint, ['by_user["u1"]'])).get('by_user["u1"]')!;
      expect(before.map((op) => op.op)).toEqual(['PUT', 'PUT', 'PUT', 'REMOVE', 'PUT']);

      const result = await s.compact();
      expect(result.bucketsCompacted).toBeGreaterThanOrEqual(1);
      const after = (await readBuckets(s, checkpoint, ['by_user["u1"]'])).get('by_user["u1"]')!;
      // t1 v1, t2, t1 v2, REMOVE t2 are all superseded or removals: one CLEAR at the last of them, then t1 v3.
      expect(after.map((op) => op.op)).toEqual(['CLEAR', 'PUT']);
      expect(after[0]!.op_id).toBe(before[3]!.op_id);
      expect(after[0]!.checksum).toBe(sumChecksums(before.slice(0, 4)));
      expect(after[1]).toEqual(before[4]);
      expect(await s.getChecksums(checkpoint, ['by_user["u1"]'])).toEqual(
        new Map([['by_user["u1"]', { bucket: 'by_user["u1"]', checksum: sumChecksums(before), count: 2 }]])
      );
    });
  });
}
