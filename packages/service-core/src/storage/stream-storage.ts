import type { ParameterLookup, SqliteRow, SyncRules } from '@syncpoint/sync-rules';
import { parseSyncRules, serializeParameterLookup } from '@syncpoint/sync-rules';
import type { Logger } from '../logger.js';
import {
  chunkBucketOps,
  DEFAULT_BUCKET_DATA_LIMIT,
  DEFAULT_CHUNK_LIMIT_BYTES,
  parameterSetsOf,
  runBatch,
  type BucketOp
} from './bucket-data-chunks.js';
import type { BucketDataChunk, BucketStorageBatch } from './bucket-data.js';
import type { ReplicationStream } from './replication-stream.js';

/**
 * The sync rules a stream replicates, parsed from its stored content. A stored config that no longer parses (e.g.
 * written by another version) is an error naming the stream and every issue.
 */
export function syncRulesOfStream(stream: ReplicationStream): SyncRules {
  const parsed = parseSyncRules(stream.content, { deploymentId: stream.id });
  if (!parsed.ok) {
    throw new Error(
      `The sync config of replication stream ${stream.id} is invalid:\n${parsed.errors.map((issue) => `  - ${issue.message}`).join('\n')}`
    );
  }
  return parsed.rules;
}

/**
 * The part of a `ReplicationStreamStorage` every storage module shares: batches are flushed when their callback
 * returns, bucket data is read in one ordered pass and cut into chunks here, and parameter lookups are answered
 * from the newest stored entry per source row. A module supplies its driver, the batch and the two reads.
 */
export abstract class StreamStorageBase<Driver> {
  constructor(
    /** The module's handle on its database (a pool, a set of collections). */
    protected readonly driver: Driver,
    readonly stream: ReplicationStream,
    readonly syncRules: SyncRules,
    protected readonly logger?: Logger
  ) {}

  /** The stream id, which keys every stored record of the stream. */
  protected get groupId(): number {
    return this.stream.id;
  }

  protected abstract createBatch(): BucketStorageBatch;

  /**
   * Ops with `start.get(bucket) < op_id ≤ checkpoint` of the buckets in `start`, buckets in name order (as
   * JavaScript sorts), ops in id order, at most `limit` of them (the caller asks one more than it returns).
   */
  protected abstract readBucketOps(
    checkpoint: bigint,
    start: Map<string, bigint>,
    limit: number
  ): AsyncIterable<BucketOp>;

  /** Per (lookup, source row), the stored outputs of the newest entry with id ≤ checkpoint (`[]`: the row left). */
  protected abstract readParameterEntries(
    checkpoint: bigint,
    lookups: string[]
  ): Promise<Array<{ lookup: string; bucketParameters: string }>>;

  startBatch<T>(callback: (batch: BucketStorageBatch) => Promise<T>): Promise<T> {
    return runBatch(this.createBatch(), callback);
  }

  async *getBucketData(
    checkpoint: bigint,
    start: Map<string, bigint>,
    options: { limit?: number; chunkLimitBytes?: number } = {}
  ): AsyncIterable<BucketDataChunk> {
    const limit = options.limit ?? DEFAULT_BUCKET_DATA_LIMIT;
    if (limit <= 0 || start.size === 0) return;
    // limit + 1 proves whether more ops exist.
    const ops = this.readBucketOps(checkpoint, start, limit + 1);
    yield* chunkBucketOps(ops, start, limit, options.chunkLimitBytes ?? DEFAULT_CHUNK_LIMIT_BYTES);
  }

  async getParameterSets(checkpoint: bigint, lookups: ParameterLookup[]): Promise<SqliteRow[][]> {
    if (lookups.length === 0) return [];
    const keys = lookups.map((lookup) => serializeParameterLookup(lookup));
    return parameterSetsOf(keys, await this.readParameterEntries(checkpoint, [...new Set(keys)]));
  }
}
