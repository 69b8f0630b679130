import {
  checksum as checksumCodec,
  opId,
  parseJsonWithBigints,
  writeCheckpoint as writeCheckpointCodec
} from '@syncpoint/codecs';
import type {
  BucketInclusion,
  ConnectionRequest,
  ResolvedBucket,
  SqliteRow,
  SubscribedStream
} from '@syncpoint/sync-rules';
import type { TokenPayload } from '../auth/token-verifier.js';
import { ServiceError } from '../errors.js';
import type { Logger } from '../logger.js';
import type { ServiceMetrics } from '../metrics.js';
import type { BucketChecksum, OplogEntry, ReplicationStreamStorage } from '../storage/bucket-data.js';
import type { ReplicationStream } from '../storage/replication-stream.js';
import type { CheckpointWatcher, ServingCheckpoint } from './checkpoint-watcher.js';
import type { SharedCheckpointReads } from './shared-checkpoint-reads.js';
import type { SyncRequest } from './sync-request.js';

/** Per-connection limits (PROTOCOL §7.4, config `api.parameters`). */
export interface SyncLimits {
  maxBuckets: number;
  maxParameterResults: number;
  /** Ops per data batch across buckets (1000) and bytes of row data per line (1 MiB). */
  opsPerBatch?: number;
  bytesPerLine?: number;
  /** Ops sent for one checkpoint after which a newer checkpoint supersedes the download. */
  supersedeAfterOps?: number;
}

export const TOO_MANY_BUCKETS = 'PSYNC_S2305';

interface BucketLine {
  bucket: string;
  checksum: number;
  count: number;
  priority: number;
  /** Why the connection has the bucket: `{sub: j}` request positions, `{default: i}` first-line `streams` indexes. */
  subscriptions: BucketInclusion[];
}

/** A `streams` entry of the first `checkpoint` line (STREAMS §5.2). */
interface StreamLine {
  name: string;
  is_default: boolean;
  errors: Array<{ subscription: number | 'default'; message: string }>;
}

export type SyncLine =
  | {
      checkpoint: {
        last_op_id: string;
        write_checkpoint?: string;
        buckets: BucketLine[];
        streams: StreamLine[];
      };
    }
  | {
      checkpoint_diff: {
        last_op_id: string;
        write_checkpoint?: string;
        updated_buckets: BucketLine[];
        removed_buckets: string[];
      };
    }
  | { data: { bucket: string; after: string; next_after: string; has_more: boolean; data: unknown[] } }
  | { checkpoint_complete: { last_op_id: string } }
  | { partial_checkpoint_complete: { last_op_id: string; priority: number } }
  | { token_expires_in: number };

export interface SyncStreamOptions {
  watcher: CheckpointWatcher;
  /** Per-process cache of parsed stream storages. */
  streamStorage(stream: ReplicationStream): Promise<ReplicationStreamStorage>;
  /** Checksum and write-checkpoint reads shared by the connections of the process. */
  reads: SharedCheckpointReads;
  /** Limits concurrent data fetches per process (PROTOCOL §7.4 step 6). */
  withDataFetchSlot<T>(fetch: () => Promise<T>): Promise<T>;
  token: TokenPayload;
  request: SyncRequest;
  fullUserId: string;
  limits: SyncLimits;
  signal: AbortSignal;
  logger: Logger;
  metrics?: ServiceMetrics;
}

/** A line for one op; MOVE/CLEAR carry only id, type and checksum (PROTOCOL §7.3). */
function opLine(op: OplogEntry, rawData: boolean): Record<string, unknown> {
  const checksum = checksumCodec.encodeOp(op.checksum);
  if (op.op === 'MOVE' || op.op === 'CLEAR') return { op_id: opId.encode(op.op_id), op: op.op, checksum };
  return {
    op_id: opId.encode(op.op_id),
    op: op.op,
    object_type: op.object_type,
    object_id: op.object_id,
    subkey: op.subkey,
    checksum,
    // Legacy JSON clients (raw_data false) get the row embedded as an object; int8 values beyond 2^53 stay exact
    // (bigint, written back as JSON integers by the line writer).
    data: op.op === 'PUT' ? (rawData ? op.data : parseJsonWithBigints(op.data ?? 'null')) : null
  };
}

/**
 * The lines of one sync connection (PROTOCOL §7.4): a full `checkpoint` first, then `checkpoint_diff`s, with `data`
 * for changed buckets by priority, `partial_checkpoint_complete` per priority group and `checkpoint_complete`. Ends
 * when the signal aborts or the served replication stream changes (the client reconnects to the new one).
 */
export async function* syncLines(options: SyncStreamOptions): AsyncGenerator<SyncLine> {
  const { reads, watcher, request, limits, signal } = options;
  const opsPerBatch = limits.opsPerBatch ?? 1000;
  const bytesPerLine = limits.bytesPerLine ?? 1024 * 1024;
  const supersedeAfterOps = limits.supersedeAfterOps ?? 1000;

  const positions = new Map<string, bigint>();
  let lastSent: Map<string, BucketLine> | null = null;
  /** The buckets behind `lastSent`, and the op id they were read at. */
  let lastResolved: ResolvedBuckets | null = null;
  let lineCheckpointOfLastSent = -1n;
  let lastWriteCheckpoint: bigint | null = null;
  let lineCheckpoint = 0n;
  let pendingDownload = new Set<string>();
  let served: ServingCheckpoint | null = null;
  const resolution: ResolutionState = { firstStreams: null, loggedErrors: new Set() };

  for (;;) {
    const next = await watcher.next(served, signal);
    if (next === null || signal.aborted) return;
    if (served && next.stream.id !== served.stream.id) return; // new sync config: the client reconnects
    served = next;
    const { checkpoint, lsn } = next.checkpoint;
    const streamStorage = await options.streamStorage(next.stream);

    // A checkpoint that moved only the LSN (a marker, a keepalive) has the same op id: the user's buckets and their
    // checksums are those of the last line, and only the acknowledged request id can have changed.
    let current: ResolvedBuckets;
    let lines: Map<string, BucketLine>;
    if (lastSent !== null && lastResolved !== null && checkpoint === lineCheckpointOfLastSent) {
      current = lastResolved;
      lines = lastSent;
    } else {
      // Without parameter lookups the bucket set depends only on the request: resolved once per connection. With
      // lookups it is resolved again at every new checkpoint, as index data may have changed (STREAMS §4.8).
      current =
        lastResolved !== null && !lastResolved.usesLookups
          ? lastResolved
          : await resolveBuckets(streamStorage, checkpoint, options, resolution);
      const readChecksums = () => reads.getChecksums(streamStorage, checkpoint, [...current.buckets.keys()]);
      const checksums = await (options.metrics
        ? options.metrics.time('get_checksums', readChecksums)
        : readChecksums());
      lines = new Map<string, BucketLine>();
      for (const [bucket, description] of current.buckets) {
        const sum: BucketChecksum | undefined = checksums.get(bucket);
        lines.set(bucket, {
          bucket,
          checksum: checksumCodec.encodeBucket(sum?.checksum ?? 0),
          count: sum?.count ?? 0,
          priority: description.priority,
          subscriptions: description.subscriptions
        });
      }
    }

    // Never report a smaller acknowledged id on one connection (PROTOCOL §6, recommendation).
    const resolve = () => reads.lastWriteCheckpoint(options.fullUserId, lsn);
    const resolved = await (options.metrics ? options.metrics.time('last_write_checkpoint', resolve) : resolve());
    const writeCheckpoint: bigint | null =
      resolved !== null && (lastWriteCheckpoint === null || resolved > lastWriteCheckpoint)
        ? resolved
        : lastWriteCheckpoint;
    const writeCheckpointField =
      writeCheckpoint !== null && writeCheckpoint !== 0n
        ? { write_checkpoint: writeCheckpointCodec.encode(writeCheckpoint) }
        : {};

    let toFetch: string[];
    let sentLine = true;
    if (lastSent === null) {
      for (const [bucket, after] of request.buckets) {
        if (!lines.has(bucket)) continue; // no longer the user's: the client drops it on this full checkpoint
        if (after > checkpoint) {
          // The client claims ops past the newest checkpoint (e.g. storage restored from a backup): download the
          // bucket again; the client's checksum check then replaces its copy.
          options.logger.warn(
            { bucket, after: opId.encode(after), checkpoint: opId.encode(checkpoint) },
            'bucket position ahead of the checkpoint; resending'
          );
          continue;
        }
        positions.set(bucket, after);
      }
      yield {
        checkpoint: {
          last_op_id: opId.encode(checkpoint),
          ...writeCheckpointField,
          buckets: [...lines.values()],
          streams: current.streams.map((stream) => ({
            name: stream.name,
            is_default: stream.isDefault,
            errors: stream.errors.map(({ subscription, message }) => ({ subscription, message }))
          }))
        }
      };
      toFetch = [...lines.keys()];
    } else {
      const previous: Map<string, BucketLine> = lastSent;
      const updated = [...lines.values()].filter((line) => {
        const before = previous.get(line.bucket);
        return (
          !before ||
          before.checksum !== line.checksum ||
          before.count !== line.count ||
          before.priority !== line.priority ||
          !sameInclusions(before.subscriptions, line.subscriptions)
        );
      });
      const removed = [...previous.keys()].filter((bucket) => !lines.has(bucket));
      const changed = updated.length > 0 || removed.length > 0 || writeCheckpoint !== lastWriteCheckpoint;
      if (changed) {
        yield {
          checkpoint_diff: {
            last_op_id: opId.encode(checkpoint),
            ...writeCheckpointField,
            updated_buckets: updated,
            removed_buckets: removed
          }
        };
      } else if (pendingDownload.size === 0) {
        // Same buckets, same checksums: what was sent stands for this op id too.
        lastResolved = current;
        lineCheckpointOfLastSent = checkpoint;
        continue;
      } else {
        // Nothing changed for this connection, but a superseded download is unfinished: resume it against the
        // checkpoint of the last line sent (no op of these buckets lies between the two checkpoints).
        sentLine = false;
      }
      for (const bucket of removed) positions.delete(bucket);
      toFetch = [...new Set([...updated.map((line) => line.bucket), ...pendingDownload])].filter((bucket) =>
        lines.has(bucket)
      );
    }
    lastSent = lines;
    lastResolved = current;
    lineCheckpointOfLastSent = checkpoint;
    if (writeCheckpoint !== null && writeCheckpoint !== lastWriteCheckpoint)
      options.metrics?.requestAcknowledged(options.fullUserId, writeCheckpoint);
    lastWriteCheckpoint = writeCheckpoint;
    // The data of a download belongs to the checkpoint of the last line sent.
    if (sentLine) lineCheckpoint = checkpoint;

    // Download by priority, most urgent first.
    const groups = new Map<number, string[]>();
    for (const bucket of toFetch.sort()) {
      const priority = lines.get(bucket)!.priority;
      groups.set(priority, [...(groups.get(priority) ?? []), bucket]);
    }
    const priorities = [...groups.keys()].sort((a, b) => a - b);
    let opsSent = 0;
    let invalidated = false;
    let superseded = false;
    const unfinished = new Set(toFetch);
    for (const [groupIndex, priority] of priorities.entries()) {
      const opsBeforeGroup = opsSent;
      // One storage read returns at most `opsPerBatch` ops; when it is cut short, its last chunk says `hasMore` and
      // every bucket before that chunk's bucket (name order) is complete. Read again for the rest.
      let remaining = groups.get(priority)!;
      while (remaining.length > 0 && !superseded) {
        const start = new Map(remaining.map((bucket) => [bucket, positions.get(bucket) ?? 0n]));
        let last: { bucket: string; hasMore: boolean } | null = null;
        const iterator = streamStorage
          .getBucketData(lineCheckpoint, start, { limit: opsPerBatch, chunkLimitBytes: bytesPerLine })
          [Symbol.asyncIterator]();
        try {
          for (;;) {
            if (signal.aborted) return;
            const result = await options.withDataFetchSlot(() => iterator.next());
            if (result.done) break;
            const chunk = result.value;
            yield {
              data: {
                bucket: chunk.bucket,
                after: opId.encode(chunk.after),
                next_after: opId.encode(chunk.nextAfter),
                has_more: chunk.hasMore,
                data: chunk.data.map((op) => opLine(op, request.rawData))
              }
            };
            positions.set(chunk.bucket, chunk.nextAfter);
            last = chunk;
            opsSent += chunk.data.length;
            if (chunk.data.some((op) => op.target_op != null && op.target_op > lineCheckpoint)) invalidated = true;
          }
        } finally {
          await iterator.return?.();
        }
        const cutAt: string | null = last?.hasMore ? last.bucket : null;
        for (const bucket of remaining) if (cutAt === null || bucket < cutAt) unfinished.delete(bucket);
        remaining = cutAt === null ? [] : remaining.filter((bucket) => bucket >= cutAt);
        // A newer checkpoint supersedes a long download at a batch boundary (PROTOCOL §7.4 step 5).
        if (
          remaining.length > 0 &&
          opsSent >= supersedeAfterOps &&
          watcher.latest &&
          isAdvance(watcher.latest, served)
        ) {
          superseded = true;
        }
      }
      if (superseded) break;
      // Only a group that needed data is confirmed early (STREAMS §5.5); with nothing to download, checkpoint_complete
      // alone follows.
      if (groupIndex < priorities.length - 1 && opsSent > opsBeforeGroup) {
        yield { partial_checkpoint_complete: { last_op_id: opId.encode(lineCheckpoint), priority } };
      }
    }
    pendingDownload = unfinished;
    if (!superseded && !invalidated) yield { checkpoint_complete: { last_op_id: opId.encode(lineCheckpoint) } };
  }
}

function isAdvance(candidate: ServingCheckpoint, than: ServingCheckpoint): boolean {
  return candidate.stream.id !== than.stream.id || candidate.checkpoint.checkpoint > than.checkpoint.checkpoint;
}

function sameInclusions(a: readonly BucketInclusion[], b: readonly BucketInclusion[]): boolean {
  return a.length === b.length && a.every((inclusion, index) => JSON.stringify(inclusion) === JSON.stringify(b[index]));
}

/** A connection's buckets at one checkpoint, with the subscribed streams of that resolution. */
interface ResolvedBuckets {
  streams: SubscribedStream[];
  buckets: Map<string, ResolvedBucket>;
  usesLookups: boolean;
}

/** What a connection remembers between resolutions. */
interface ResolutionState {
  /** Stream names of the first line's `streams`: every later `{default: i}` indexes these (STREAMS §5.3). */
  firstStreams: string[] | null;
  /** Resolution problems already logged on this connection (re-resolutions would repeat them at every checkpoint). */
  loggedErrors: Set<string>;
}

const MAX_LOGGED_ERRORS = 100;

/**
 * The connection's streams and buckets at a checkpoint (STREAMS §4.5–4.7): the request's subscriptions and default
 * streams, resolved by the sync rules with parameter-index reads as of `checkpoint`. Ends the stream with
 * PSYNC_S2305 past the bucket or index-row limits (STREAMS §6).
 */
async function resolveBuckets(
  streamStorage: ReplicationStreamStorage,
  checkpoint: bigint,
  options: SyncStreamOptions,
  state: ResolutionState
): Promise<ResolvedBuckets> {
  const { request, limits } = options;
  const connection: ConnectionRequest = {
    userId: options.token.userId,
    tokenParameters: options.token.claims,
    clientParameters: request.parameters,
    includeDefaults: request.includeDefaults,
    subscriptions: request.subscriptions
  };
  // Counted over every lookup stage of this resolution.
  let parameterResults = 0;
  const tooManyResults = () =>
    new ServiceError(
      TOO_MANY_BUCKETS,
      400,
      `Too many parameter query results: more than ${limits.maxParameterResults}`
    );
  const resolved = await streamStorage.syncRules.resolveConnection(connection, async (lookups) => {
    if (lookups.length > limits.maxParameterResults) throw tooManyResults();
    const sets: SqliteRow[][] = await options.reads.getParameterSets(streamStorage, checkpoint, lookups);
    parameterResults += sets.reduce((total, rows) => total + rows.length, 0);
    if (parameterResults > limits.maxParameterResults) throw tooManyResults();
    return sets;
  });
  for (const error of resolved.errors) {
    if (state.loggedErrors.has(error.message) || state.loggedErrors.size >= MAX_LOGGED_ERRORS) continue;
    state.loggedErrors.add(error.message);
    options.logger.warn({ error: error.message }, 'bucket query problem');
  }
  if (resolved.buckets.length > limits.maxBuckets) {
    throw new ServiceError(
      TOO_MANY_BUCKETS,
      400,
      `Too many buckets: ${resolved.buckets.length} (limit ${limits.maxBuckets})`
    );
  }

  // `{default: i}` of a later resolution must index the first line's `streams`: map it through the stream's name.
  const names = resolved.streams.map((stream) => stream.name);
  state.firstStreams ??= names;
  const firstIndex = new Map(state.firstStreams.map((name, index) => [name, index]));
  const buckets = new Map<string, ResolvedBucket>();
  for (const bucket of resolved.buckets) {
    const subscriptions = bucket.subscriptions.flatMap((inclusion): BucketInclusion[] => {
      if (!('default' in inclusion)) return [inclusion];
      const index = firstIndex.get(names[inclusion.default] ?? '');
      return index === undefined ? [] : [{ default: index }];
    });
    buckets.set(bucket.bucket, { bucket: bucket.bucket, priority: bucket.priority, subscriptions });
  }
  return { streams: resolved.streams, buckets, usesLookups: resolved.usesLookups };
}
