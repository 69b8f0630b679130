/**
 * Pure planning of compaction (PROTOCOL §8.4), fed with ops read in batches. Every storage module runs
 * `compactBucket` with its own `BucketCompactionAccess` (its reads and writes), so the rules live only here.
 *
 * 1. `MovePlanner`, newest → oldest: a PUT/REMOVE whose (table, id, source table, source key) appears again later
 *    becomes MOVE with `target_op` = the op that superseded it (the next newer op of the key). Memory-bounded by
 *    `SeenKeysLimit` (less compaction past it, never a wrong result). A CLEAR ends the scan: nothing older than it
 *    remains.
 * 2. `ClearPlanner`, oldest → newest: the longest prefix of REMOVE/MOVE/CLEAR ops becomes one CLEAR at the last
 *    replaced op id, checksum = wrapping sum of the replaced ops, target_op = the highest target_op among them.
 */
import { addChecksums } from '@syncpoint/codecs';
import type { CompactOptions, CompactResult, OpType } from './bucket-data.js';

export interface CompactionOpView {
  opId: bigint;
  op: OpType;
  /** PUT/REMOVE identity: output table, row id, source table, replica key. */
  table?: string | null;
  rowId?: string | null;
  sourceTable?: string | null;
  sourceKey?: string | null;
  checksum: number;
  targetOp: bigint | null;
}

export interface MoveUpdate {
  opId: bigint;
  targetOp: bigint;
}

/**
 * How many keys the MOVE pass remembers in one bucket, and what happens past that: `forget-all` drops every key after
 * the batch that crossed the limit (memory stays bounded by the limit plus one batch); `keep-known` stops adding new
 * keys but keeps following the known ones (memory bounded by the limit, older ops of known rows still move).
 */
export interface SeenKeysLimit {
  maxSeenKeys: number;
  whenFull: 'forget-all' | 'keep-known';
}

export const DEFAULT_SEEN_KEYS_LIMIT: SeenKeysLimit = { maxSeenKeys: 200_000, whenFull: 'forget-all' };

export class MovePlanner {
  private seen = new Map<string, bigint>();
  /** A CLEAR was reached: older ops need not be read. */
  done = false;

  constructor(private readonly limit: SeenKeysLimit = DEFAULT_SEEN_KEYS_LIMIT) {}

  /** Ops of one batch, newest first; returns the ops to turn into MOVE. */
  plan(batch: Iterable<CompactionOpView>): MoveUpdate[] {
    const moves: MoveUpdate[] = [];
    for (const op of batch) {
      if (this.done) break;
      if (op.op === 'CLEAR') {
        this.done = true;
        break;
      }
      if (op.op !== 'PUT' && op.op !== 'REMOVE') continue;
      const key = `${op.table}\u0000${op.rowId}\u0000${op.sourceTable}\u0000${op.sourceKey}`;
      const newer = this.seen.get(key);
      if (newer !== undefined) moves.push({ opId: op.opId, targetOp: newer });
      if (newer !== undefined || this.limit.whenFull === 'forget-all' || this.seen.size < this.limit.maxSeenKeys)
        this.seen.set(key, op.opId);
    }
    if (this.limit.whenFull === 'forget-all' && this.seen.size > this.limit.maxSeenKeys) this.seen = new Map();
    return moves;
  }
}

export interface ClearPlan {
  /** The op that becomes the CLEAR; every older op of the bucket is deleted. */
  lastOpId: bigint;
  /** Wrapping sum (u32) of the replaced ops. */
  checksum: number;
  targetOp: bigint | null;
  /** Number of ops replaced, the CLEAR included. */
  replaced: number;
}

export class ClearPlanner {
  private sum = 0;
  private count = 0;
  private last: bigint | null = null;
  private lastOp: OpType | null = null;
  private maxTarget: bigint | null = null;
  /** A PUT was reached: the prefix ends. */
  done = false;

  /** Ops of one batch, oldest first. */
  add(batch: Iterable<CompactionOpView>): void {
    for (const op of batch) {
      if (this.done) return;
      if (op.op === 'PUT') {
        this.done = true;
        return;
      }
      this.sum = addChecksums(this.sum, op.checksum);
      this.count++;
      this.last = op.opId;
      this.lastOp = op.op;
      if (op.targetOp !== null && (this.maxTarget === null || op.targetOp > this.maxTarget))
        this.maxTarget = op.targetOp;
    }
  }

  /** Null when there is nothing to replace (no prefix, or it is already a single CLEAR). */
  result(): ClearPlan | null {
    if (this.last === null || (this.count === 1 && this.lastOp === 'CLEAR')) return null;
    return { lastOpId: this.last, checksum: this.sum, targetOp: this.maxTarget, replaced: this.count };
  }
}

/** Storage access of one bucket for `compactBucket`; each storage module implements it, tests use an in-memory log. */
export interface BucketCompactionAccess {
  /** Ops with op id ≤ `through`, newest first, at most `limit`. */
  readNewestFirst(through: bigint, limit: number): Promise<CompactionOpView[]>;
  /** Ops with `after` < op id ≤ `through` (no lower bound when null), oldest first, at most `limit`. */
  readOldestFirst(after: bigint | null, through: bigint, limit: number): Promise<CompactionOpView[]>;
  writeMoves(moves: MoveUpdate[]): Promise<void>;
  /** Atomically: delete the ops before `plan.lastOpId`, make that op the CLEAR, lower the bucket's count. Returns the deleted count. */
  writeClear(plan: ClearPlan): Promise<number>;
}

/**
 * Compacts one bucket up to `checkpoint`, reading at most `batchSize` ops at a time: the MOVE pass newest → oldest
 * (writes per batch), then the CLEAR pass oldest → newest (one write at the end).
 */
export async function compactBucket(
  access: BucketCompactionAccess,
  checkpoint: bigint,
  batchSize: number,
  seenKeysLimit: SeenKeysLimit = DEFAULT_SEEN_KEYS_LIMIT
): Promise<{ moved: number; cleared: number; scanned: number }> {
  let scanned = 0;
  let moved = 0;
  const movePlanner = new MovePlanner(seenKeysLimit);
  for (let through = checkpoint; through > 0n;) {
    const batch = await access.readNewestFirst(through, batchSize);
    scanned += batch.length;
    const moves = movePlanner.plan(batch);
    if (moves.length > 0) {
      await access.writeMoves(moves);
      moved += moves.length;
    }
    if (movePlanner.done || batch.length < batchSize) break;
    through = batch.at(-1)!.opId - 1n;
  }

  const clearPlanner = new ClearPlanner();
  for (let after: bigint | null = null; ;) {
    const batch = await access.readOldestFirst(after, checkpoint, batchSize);
    scanned += batch.length;
    clearPlanner.add(batch);
    if (clearPlanner.done || batch.length < batchSize) break;
    after = batch.at(-1)!.opId;
  }
  const plan = clearPlanner.result();
  const cleared = plan === null ? 0 : (await access.writeClear(plan)) + 1;
  return { moved, cleared, scanned };
}

/** Ops read at a time when `CompactOptions.batchSize` is not given. */
export const DEFAULT_COMPACTION_BATCH_SIZE = 10_000;

/** What a storage module supplies to compact one stream: its checkpoint, its buckets and each bucket's access. */
export interface StreamCompactionAccess {
  /** The stream's current checkpoint: only ops at or below it are touched. 0n: nothing to compact. */
  checkpoint: bigint;
  /** Every bucket of the stream with ops, or `only` when given. */
  bucketNames(only: string[] | undefined): AsyncIterable<string>;
  bucket(name: string): BucketCompactionAccess;
  seenKeysLimit?: SeenKeysLimit;
}

/** Compacts a stream bucket by bucket (`compactBucket`), reporting progress after each bucket. */
export async function compactStreamBuckets(
  access: StreamCompactionAccess,
  options: CompactOptions
): Promise<CompactResult> {
  const batchSize = Math.max(1, options.batchSize ?? DEFAULT_COMPACTION_BATCH_SIZE);
  const result: CompactResult = { bucketsCompacted: 0, opsMoved: 0, opsCleared: 0 };
  if (access.checkpoint <= 0n) return result;

  let bucketsDone = 0;
  let opsScanned = 0;
  for await (const bucket of access.bucketNames(options.buckets)) {
    const { moved, cleared, scanned } = await compactBucket(
      access.bucket(bucket),
      access.checkpoint,
      batchSize,
      access.seenKeysLimit
    );
    opsScanned += scanned;
    result.opsMoved += moved;
    result.opsCleared += cleared;
    if (moved > 0 || cleared > 0) result.bucketsCompacted++;
    options.onProgress?.({ bucketsDone: ++bucketsDone, opsScanned });
  }
  return result;
}
