import { lsnFromBigint, type Lsn } from '@syncpoint/codecs';
import { describe, expect, it } from 'vitest';
import {
  bucketChecksumAtCheckpoint,
  BucketTotals,
  OpIdBlock,
  ReplicationBatch,
  rowChangesOf,
  sameRowState,
  type CheckpointWriteResult,
  type CurrentRow,
  type CurrentRowKey,
  type CurrentRowState,
  type FlushBuffers,
  type ReplicationBatchLimits,
  type SourceTableRef
} from '../src/index.js';
import { lists, members, rules } from './lists-rules.js';

const LIMITS: ReplicationBatchLimits = {
  evaluateRows: 3,
  flushOps: 1_000,
  flushDataChars: 1_000_000,
  minIdBlock: 4,
  truncatePage: 2,
  maxCachedRows: 0,
  overlapFlushes: false
};

/**
 * The storage side of a batch kept in memory: what the lifted decisions ask a storage module to read and write.
 * Records each call so the tests can see what a module would be asked to do.
 */
class MemoryBatch extends ReplicationBatch {
  currentData = new Map<string, CurrentRow>();
  sequence = 0n;
  flushes: FlushBuffers[] = [];
  loads: CurrentRowKey[][] = [];
  checkpoints: Array<{ lsn: Lsn; keepalive: boolean; lastFlushedOp: bigint }> = [];
  /** Resolves writes only when the test says so (to observe overlapping flushes). */
  writeGate: Promise<void> | null = null;
  writesInProgress = 0;
  maxWritesInProgress = 0;
  blocked = false;

  constructor(limits: Partial<ReplicationBatchLimits> = {}) {
    super(7, rules, { ...LIMITS, ...limits });
  }

  protected loadCurrentRows(keys: CurrentRowKey[]): Promise<CurrentRow[]> {
    this.loads.push(keys);
    return Promise.resolve(
      keys.flatMap((key) => {
        const row = this.currentData.get(`${key.tableId}/${key.replicaKey}`);
        return row ? [row] : [];
      })
    );
  }

  protected readTableRows(table: SourceTableRef, after: string | null, limit: number): Promise<CurrentRow[]> {
    return Promise.resolve(
      [...this.currentData.values()]
        .filter((row) => row.tableId === table.id && (after === null || row.replicaKey > after))
        .sort((a, b) => (a.replicaKey < b.replicaKey ? -1 : 1))
        .slice(0, limit)
    );
  }

  protected reserveOpIds(size: bigint): Promise<bigint> {
    const first = this.sequence + 1n;
    this.sequence += size;
    return Promise.resolve(first);
  }

  protected async writeFlush(buffers: FlushBuffers): Promise<void> {
    this.writesInProgress++;
    this.maxWritesInProgress = Math.max(this.maxWritesInProgress, this.writesInProgress);
    if (this.writeGate) await this.writeGate;
    for (const row of buffers.rows) {
      const key = `${row.tableId}/${row.replicaKey}`;
      if (row.state === null) this.currentData.delete(key);
      else this.currentData.set(key, { tableId: row.tableId, replicaKey: row.replicaKey, state: row.state });
    }
    this.flushes.push(buffers);
    this.writesInProgress--;
  }

  protected writeCheckpoint(lsn: Lsn, keepalive: boolean, lastFlushedOp: bigint): Promise<CheckpointWriteResult> {
    this.checkpoints.push({ lsn, keepalive, lastFlushedOp });
    if (this.blocked) {
      const stream = {
        state: 'ACTIVE' as const,
        snapshotDone: false,
        lastCheckpoint: null,
        lastCheckpointLsn: null,
        noCheckpointBefore: null,
        keepaliveOp: null
      };
      return Promise.resolve({ created: false, blocked: stream });
    }
    return Promise.resolve({ created: true });
  }

  writtenOps() {
    return this.flushes.flatMap((flush) => flush.ops);
  }
}

const list = (id: string, owner = 'u1') => ({ id, title: `list ${id}`, owner_id: owner });

describe('row changes to evaluate', () => {
  it('an update that changes the replica identity is a delete of the old key and an insert of the new one', () => {
    const changes = rowChangesOf({ kind: 'update', table: lists, after: list('2'), beforeKey: { id: '1' } });
    expect(changes.map((c) => [c.change.kind, c.replicaKey])).toEqual([
      ['delete', '["1"]'],
      ['insert', '["2"]']
    ]);
    const same = rowChangesOf({ kind: 'update', table: lists, after: list('1'), beforeKey: { id: '1' } });
    expect(same.map((c) => [c.change.kind, c.replicaKey])).toEqual([['update', '["1"]']]);
    expect(rowChangesOf({ kind: 'delete', table: lists, beforeKey: { id: '1' } })[0]!.replicaKey).toBe('["1"]');
  });

  it('compares row states by bucket membership and lookups, in order', () => {
    const state: CurrentRowState = { buckets: [{ bucket: 'global[]', table: 'lists', id: '1' }], lookups: ['a'] };
    expect(sameRowState(state, structuredClone(state))).toBe(true);
    expect(sameRowState(null, null)).toBe(true);
    expect(sameRowState(state, null)).toBe(false);
    expect(sameRowState(state, { ...state, lookups: ['b'] })).toBe(false);
    expect(sameRowState(state, { ...state, buckets: [{ bucket: 'global[]', table: 'lists', id: '2' }] })).toBe(false);
  });
});

describe('op id blocks', () => {
  it('reserves only when too few ids are left, at least the minimum block, and hands ids out in order', () => {
    const block = new OpIdBlock();
    expect(() => block.take()).toThrow(/not reserved/);
    expect(block.toReserve(3, 10)).toBe(10n);
    block.reserved(101n, 10n);
    expect([block.take(), block.take()]).toEqual([101n, 102n]);
    expect(block.toReserve(8, 10)).toBe(0n);
    expect(block.toReserve(9, 10)).toBe(10n);
    expect(block.toReserve(25, 10)).toBe(25n);
  });
});

describe('bucket-state arithmetic', () => {
  it('totals wrap modulo 2^32 and remember the last op', () => {
    const totals = new BucketTotals();
    totals.add('b', 2 ** 32 - 1, 5n);
    totals.add('b', 2, 9n);
    totals.add('c', 7, 6n);
    expect(Object.fromEntries(totals.entries())).toEqual({
      b: { checksum: 1, count: 2, lastOp: 9n },
      c: { checksum: 7, count: 1, lastOp: 6n }
    });
  });

  it('the checksum at a checkpoint is the state minus the ops above it; empty buckets are absent', () => {
    const state = { checksumSum: 5n, count: 3n };
    expect(bucketChecksumAtCheckpoint('b', state, { checksumSum: 10n, count: 1n })).toEqual({
      bucket: 'b',
      checksum: 2 ** 32 - 5,
      count: 2
    });
    expect(bucketChecksumAtCheckpoint('b', state, undefined)).toEqual({ bucket: 'b', checksum: 5, count: 3 });
    // A stored sum that was never reduced (MongoDB sums) still gives a u32.
    expect(bucketChecksumAtCheckpoint('b', { checksumSum: 2n ** 40n + 3n, count: 1n }, undefined)?.checksum).toBe(3);
    expect(bucketChecksumAtCheckpoint('b', state, { checksumSum: 5n, count: 3n })).toBeNull();
  });
});

describe('the replication batch', () => {
  it('evaluates in groups and writes nothing before a flush; a flush writes ops with increasing ids and totals', async () => {
    const batch = new MemoryBatch();
    await batch.save({ kind: 'insert', table: lists, after: list('1') });
    await batch.save({ kind: 'insert', table: lists, after: list('2') });
    expect(batch.loads).toEqual([]);
    expect(batch.flushes).toEqual([]);
    await batch.flush();
    expect(batch.loads).toHaveLength(1);
    expect(batch.flushes).toHaveLength(1);
    const [flush] = batch.flushes;
    expect(flush!.ops.map((op) => [op.op, op.bucket, op.rowId])).toEqual([
      ['PUT', 'global[]', '1'],
      ['PUT', 'by_owner["u1"]', '1'],
      ['PUT', 'by_member["1"]', '1'],
      ['PUT', 'global[]', '2'],
      ['PUT', 'by_owner["u1"]', '2'],
      ['PUT', 'by_member["2"]', '2']
    ]);
    expect(flush!.ops.map((op) => op.id)).toEqual([1n, 2n, 3n, 4n, 5n, 6n]);
    expect(flush!.maxOpId).toBe(6n);
    expect([...flush!.bucketTotals.entries()].map(([bucket, total]) => [bucket, total.count, total.lastOp])).toEqual([
      ['global[]', 2, 4n],
      ['by_owner["u1"]', 2, 5n],
      ['by_member["1"]', 1, 3n],
      ['by_member["2"]', 1, 6n]
    ]);
    expect(flush!.rows.map((row) => row.replicaKey)).toEqual(['["1"]', '["2"]']);
  });

  it('an update that keeps the row in the same buckets writes a PUT but no current-data change', async () => {
    const batch = new MemoryBatch();
    await batch.save({ kind: 'insert', table: lists, after: list('1') });
    await batch.flush();
    await batch.save({ kind: 'update', table: lists, after: { ...list('1'), title: 'renamed' } });
    await batch.flush();
    expect(batch.flushes[1]!.ops.map((op) => op.op)).toEqual(['PUT', 'PUT', 'PUT']);
    expect(batch.flushes[1]!.rows).toEqual([]);
  });

  it('a row moving to another owner is removed from the old bucket; a delete removes it everywhere', async () => {
    const batch = new MemoryBatch();
    await batch.save({ kind: 'insert', table: lists, after: list('1', 'u1') });
    await batch.save({ kind: 'update', table: lists, after: list('1', 'u2') });
    await batch.save({ kind: 'delete', table: lists, beforeKey: { id: '1' } });
    await batch.flush();
    expect(batch.writtenOps().map((op) => `${op.op} ${op.bucket}`)).toEqual([
      'PUT global[]',
      'PUT by_owner["u1"]',
      'PUT by_member["1"]',
      'PUT global[]',
      'PUT by_owner["u2"]',
      'PUT by_member["1"]',
      'REMOVE by_owner["u1"]',
      'REMOVE global[]',
      'REMOVE by_owner["u2"]',
      'REMOVE by_member["1"]'
    ]);
    expect(batch.currentData.size).toBe(0);
  });

  it('parameter rows buffer lookups, and an empty entry when the row leaves a lookup', async () => {
    const batch = new MemoryBatch();
    await batch.save({ kind: 'insert', table: members, after: { id: 'm1', list_id: 'l1', user_id: 'u1' } });
    await batch.save({ kind: 'update', table: members, after: { id: 'm1', list_id: 'l1', user_id: 'u2' } });
    await batch.flush();
    const lookups = batch.flushes.flatMap((flush) => flush.lookups);
    expect(lookups.map((entry) => entry.outputs)).toEqual([
      expect.stringContaining('l1'),
      expect.stringContaining('l1'),
      '[]'
    ]);
    expect(lookups[2]!.lookup).toBe(lookups[0]!.lookup);
  });

  it('flushes by itself once the buffered ops reach the limit', async () => {
    const batch = new MemoryBatch({ evaluateRows: 1, flushOps: 4 });
    await batch.save({ kind: 'insert', table: lists, after: list('1') });
    expect(batch.flushes).toHaveLength(0);
    await batch.save({ kind: 'insert', table: lists, after: list('2') });
    expect(batch.flushes).toHaveLength(1);
  });

  it('truncate removes every current row of the table, page by page', async () => {
    const batch = new MemoryBatch();
    for (const id of ['1', '2', '3']) await batch.save({ kind: 'insert', table: lists, after: list(id) });
    await batch.flush();
    await batch.truncate([lists]);
    expect(batch.currentData.size).toBe(0);
    const removes = batch.writtenOps().filter((op) => op.op === 'REMOVE');
    expect(removes).toHaveLength(9);
    expect(new Set(removes.map((op) => op.rowId))).toEqual(new Set(['1', '2', '3']));
  });

  it('overlapping flushes never write concurrently, and flush() waits for the last one', async () => {
    const batch = new MemoryBatch({ evaluateRows: 1, flushOps: 1, overlapFlushes: true });
    let open!: () => void;
    batch.writeGate = new Promise((resolve) => (open = resolve));
    await batch.save({ kind: 'insert', table: lists, after: list('1') });
    // The first write is in progress; the next save must wait for it before starting another.
    const second = batch.save({ kind: 'insert', table: lists, after: list('2') });
    await new Promise((resolve) => setTimeout(resolve, 10));
    expect(batch.flushes).toHaveLength(0);
    open();
    await second;
    await batch.flush();
    expect(batch.flushes).toHaveLength(2);
    expect(batch.maxWritesInProgress).toBe(1);
  });

  it('a checkpoint flushes first and passes the highest flushed op id', async () => {
    const batch = new MemoryBatch();
    await batch.save({ kind: 'insert', table: lists, after: list('1') });
    expect(await batch.commit(lsnFromBigint(0x10n))).toBe(true);
    expect(batch.checkpoints).toEqual([{ lsn: lsnFromBigint(0x10n), keepalive: false, lastFlushedOp: 3n }]);
    batch.blocked = true;
    expect(await batch.keepalive(lsnFromBigint(0x20n))).toBe(false);
    expect(batch.checkpoints[1]).toMatchObject({ keepalive: true, lastFlushedOp: 3n });
  });
});
