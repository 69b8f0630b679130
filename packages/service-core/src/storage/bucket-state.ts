import type { BucketChecksum } from './bucket-data.js';

/**
 * Bucket-state arithmetic shared by the storage modules (PROTOCOL §7.5, §8.3). Each module keeps per bucket a running
 * checksum sum (mod 2^32), an op count and the highest op id over ALL its ops, checkpointed or not; a flush adds its
 * ops' totals, and the checksum at a checkpoint is that state minus the ops above the checkpoint.
 */

/** What one flush adds to a bucket's state. */
export interface BucketTotal {
  /** Wrapping (mod 2^32) sum of the flushed ops' checksums, unsigned. */
  checksum: number;
  count: number;
  /** Highest op id flushed into the bucket. */
  lastOp: bigint;
}

/** Accumulates per-bucket totals of the ops buffered for one flush. */
export class BucketTotals {
  private readonly totals = new Map<string, BucketTotal>();

  add(bucket: string, checksum: number, opId: bigint): void {
    const total = this.totals.get(bucket);
    if (total) {
      total.checksum = (total.checksum + checksum) >>> 0;
      total.count++;
      if (opId > total.lastOp) total.lastOp = opId;
    } else {
      this.totals.set(bucket, { checksum: checksum >>> 0, count: 1, lastOp: opId });
    }
  }

  get size(): number {
    return this.totals.size;
  }

  entries(): IterableIterator<[string, BucketTotal]> {
    return this.totals.entries();
  }
}

/** A stored running sum and count, as integers of any size (the stored sum may not be reduced yet). */
export interface ChecksumSum {
  checksumSum: bigint;
  count: bigint;
}

/**
 * The checksum and count of a bucket at a checkpoint: its state minus the ops above the checkpoint (those in
 * (checkpoint, last_op]). Null when no op of the bucket is at or below the checkpoint: such buckets are absent from
 * `getChecksums` results.
 */
export function bucketChecksumAtCheckpoint(
  bucket: string,
  state: ChecksumSum,
  above: ChecksumSum | undefined
): BucketChecksum | null {
  const count = Number(state.count - (above?.count ?? 0n));
  if (count <= 0) return null;
  return { bucket, checksum: Number(BigInt.asUintN(32, state.checksumSum - (above?.checksumSum ?? 0n))), count };
}
