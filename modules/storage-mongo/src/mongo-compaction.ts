import {
  compactStreamBuckets,
  type BucketCompactionAccess,
  type CompactionOpView,
  type CompactOptions,
  type CompactResult
} from '@syncpoint/service-core';
import { Long, MinKey, type AnyBulkWriteOperation, type Document } from 'mongodb';
import {
  bucketOpRange,
  bucketOpsBefore,
  checksumToLong,
  longToBigint,
  opIdKey,
  streamBucketStateRange,
  toUnsignedChecksum,
  type BucketDataDocument
} from './bucket-data-documents.js';
import type { StreamCollections } from './stream-collections.js';
import { int64ToLong } from './write-checkpoint-updates.js';

const BUCKET_PAGE = 1_000;

const PROJECTION = {
  _id: 1,
  op: 1,
  table: 1,
  row_id: 1,
  source_table: 1,
  source_key: 1,
  checksum: 1,
  target_op: 1
} as const;

function toView(
  document: Pick<
    BucketDataDocument,
    '_id' | 'op' | 'table' | 'row_id' | 'source_table' | 'source_key' | 'checksum' | 'target_op'
  >
): CompactionOpView {
  return {
    opId: longToBigint(document._id.o)!,
    op: document.op,
    table: document.table ?? null,
    rowId: document.row_id ?? null,
    sourceTable: document.source_table ?? null,
    sourceKey: document.source_key ?? null,
    checksum: toUnsignedChecksum(document.checksum),
    targetOp: longToBigint(document.target_op)
  };
}

/**
 * Compaction of one stream (PROTOCOL §8.4), bucket by bucket (`compactBucket`), touching only ops ≤ the stream's
 * current checkpoint, reading at most `batchSize` ops at a time (see service-core's compaction-plan.ts for the rules):
 * 1. newest → oldest: superseded PUT/REMOVE → MOVE (data and identity dropped, checksum kept, target_op set), one
 *    unordered bulk write per batch; each MOVE is valid on its own, so no transaction is needed;
 * 2. oldest → newest: the leading REMOVE/MOVE/CLEAR run → one CLEAR at its last op, in ONE transaction with the
 *    deletion of the older ops and the bucket_state count decrement (the checksum sum is unchanged mod 2^32).
 */
export async function compactStream(
  collections: StreamCollections,
  groupId: number,
  options: CompactOptions
): Promise<CompactResult> {
  const stream = await collections.syncRules.findOne({ _id: groupId }, { projection: { last_checkpoint: 1 } });
  return compactStreamBuckets(
    {
      checkpoint: longToBigint(stream?.last_checkpoint) ?? 0n,
      bucketNames: (only) => bucketNames(collections, groupId, only),
      bucket: (name) => bucketAccess(collections, groupId, name)
    },
    options
  );
}

async function* bucketNames(
  collections: StreamCollections,
  groupId: number,
  only: string[] | undefined
): AsyncIterable<string> {
  if (only) {
    yield* only;
    return;
  }
  let after: string | MinKey = new MinKey();
  for (;;) {
    const range = streamBucketStateRange(groupId);
    (range._id as Document).$gt = { g: groupId, b: after };
    const rows = await collections.bucketState
      .find(range, { projection: { _id: 1 } })
      .sort({ _id: 1 })
      .limit(BUCKET_PAGE)
      .toArray();
    for (const row of rows) yield row._id.b;
    if (rows.length < BUCKET_PAGE) return;
    after = rows.at(-1)!._id.b;
  }
}

/** One bucket's ops in MongoDB, for `compactBucket`. */
function bucketAccess(collections: StreamCollections, groupId: number, bucket: string): BucketCompactionAccess {
  return {
    async readNewestFirst(through, limit) {
      const documents = await collections.bucketData
        .find(bucketOpRange(groupId, bucket, null, through), { projection: PROJECTION })
        .sort({ _id: -1 })
        .limit(limit)
        .toArray();
      return documents.map(toView);
    },
    async readOldestFirst(after, through, limit) {
      const documents = await collections.bucketData
        .find(bucketOpRange(groupId, bucket, after, through), { projection: PROJECTION })
        .sort({ _id: 1 })
        .limit(limit)
        .toArray();
      return documents.map(toView);
    },
    async writeMoves(moves) {
      const writes: AnyBulkWriteOperation<BucketDataDocument>[] = moves.map((move) => ({
        updateOne: {
          filter: { _id: opIdKey(groupId, bucket, move.opId) },
          update: {
            $set: { op: 'MOVE', data: null, target_op: int64ToLong(move.targetOp) },
            $unset: { table: '', row_id: '', source_table: '', source_key: '' }
          }
        }
      }));
      // Each MOVE is valid on its own (same checksum, same count): no transaction needed.
      await collections.bucketData.bulkWrite(writes, { ordered: false });
    },
    async writeClear(plan) {
      let removed = 0;
      await collections.client.withSession((session) =>
        session.withTransaction(async () => {
          const deleted = await collections.bucketData.deleteMany(bucketOpsBefore(groupId, bucket, plan.lastOpId), {
            session
          });
          removed = deleted.deletedCount;
          await collections.bucketData.updateOne(
            { _id: opIdKey(groupId, bucket, plan.lastOpId) },
            {
              $set: {
                op: 'CLEAR',
                checksum: checksumToLong(plan.checksum),
                data: null,
                target_op: plan.targetOp === null ? null : int64ToLong(plan.targetOp)
              },
              $unset: { table: '', row_id: '', source_table: '', source_key: '' }
            },
            { session }
          );
          if (removed > 0) {
            await collections.bucketState.updateOne(
              { _id: { g: groupId, b: bucket } },
              { $inc: { count: Long.fromNumber(-removed) } },
              { session }
            );
          }
        })
      );
      return removed;
    }
  };
}
