import type { Lsn } from '@syncpoint/codecs';
import {
  dedupeManagedWriteCheckpoints,
  ErrorCode,
  recognizeUnavailableErrors,
  ServiceError,
  silentLogger,
  syncRulesOfStream,
  type BucketStorage,
  type CreateManagedWriteCheckpointsResult,
  type Logger,
  type ManagedWriteCheckpointRequest,
  type MigrationDirection,
  type MigrationReport,
  type ModuleContext,
  type ReplicationCheckpoint,
  type ReplicationStream,
  type ReplicationStreamState,
  type StorageStatus,
  type ReplicationLock
} from '@syncpoint/service-core';
import {
  MongoClient,
  MongoServerError,
  type AnyBulkWriteOperation,
  type Collection,
  type Db,
  type MongoClientOptions
} from 'mongodb';
import {
  BUCKET_DATA,
  BUCKET_PARAMETERS,
  BUCKET_STATE,
  CURRENT_DATA,
  longToBigint,
  OP_ID_SEQUENCE,
  type BucketDataDocument,
  type BucketParameterDocument,
  type BucketStateDocument,
  type CurrentDataDocument,
  type OpIdSequenceDocument
} from './bucket-data-documents.js';
import { tailCheckpointEvents } from './checkpoint-listener.js';
import { CHECKPOINT_EVENTS, runMigrations, WRITE_CHECKPOINTS } from './migrations.js';
import { isMongoUnavailable } from './mongo-errors.js';
import { MongoStreamStorage } from './mongo-stream-storage.js';
import type { StreamCollections } from './stream-collections.js';
import { checkpointOf, lsnOrNull, newStreamFields, toStream, type SyncRulesDocument } from './sync-rules-document.js';
import { resolveDatabaseName, type MongoStorageConfig } from './storage-config.js';
import {
  expiredRequestFilter,
  generatedCheckpointUpdate,
  latestCheckpointPerUser,
  reachedPendingFilter,
  storedIdToBigint,
  suppliedCheckpointUpdate,
  suppliedShouldAdvance,
  type StoredCheckpoint,
  type WriteCheckpointDocument,
  acknowledgedAt,
  GENERATED_ID_EXHAUSTED
} from './write-checkpoint-updates.js';
import { MongoReplicationLeadership } from './replication-leadership.js';
import { REPLICATION_LOCK, type ReplicationLockDocument } from './replication-lock.js';

export const SYNC_RULES = 'sync_rules';
export const COUNTERS = 'counters';
export type { SyncRulesDocument } from './sync-rules-document.js';

interface CounterDocument {
  _id: string;
  value: number;
}

const DUPLICATE_KEY = 11000;
/** A user missing from the read-back (deleted by a concurrent retention run) is re-requested this often. */
const READ_BACK_ATTEMPTS = 3;

/** Bucket storage on MongoDB (PROTOCOL §4.9 "MongoDB storage"). Construct with `createMongoStorage`. */
export class MongoBucketStorage implements BucketStorage {
  readonly writeCheckpoints: Collection<WriteCheckpointDocument>;
  readonly replicationLocks: Collection<ReplicationLockDocument>;
  /** Replication leadership and the fence every replication write passes (issue 12 items 1–2). */
  readonly leadership: MongoReplicationLeadership;
  readonly syncRules: Collection<SyncRulesDocument>;
  /** The collections of bucket data, shared with every stream's storage. */
  readonly collections: StreamCollections;

  constructor(
    readonly client: MongoClient,
    readonly db: Db,
    protected readonly logger: Logger = silentLogger
  ) {
    this.writeCheckpoints = db.collection<WriteCheckpointDocument>(WRITE_CHECKPOINTS);
    this.replicationLocks = db.collection<ReplicationLockDocument>(REPLICATION_LOCK);
    this.leadership = new MongoReplicationLeadership(this.replicationLocks, logger);
    this.syncRules = db.collection<SyncRulesDocument>(SYNC_RULES);
    this.collections = {
      client,
      syncRules: this.syncRules,
      writeCheckpoints: this.writeCheckpoints,
      bucketData: db.collection<BucketDataDocument>(BUCKET_DATA),
      bucketState: db.collection<BucketStateDocument>(BUCKET_STATE),
      currentData: db.collection<CurrentDataDocument>(CURRENT_DATA),
      bucketParameters: db.collection<BucketParameterDocument>(BUCKET_PARAMETERS),
      opIdSequence: db.collection<OpIdSequenceDocument>(OP_ID_SEQUENCE),
      notify: () => this.notifyCheckpointEvent(),
      fence: (session) => this.leadership.fence(session)
    };
  }

  migrate(direction: MigrationDirection): Promise<MigrationReport> {
    return runMigrations(this.db, direction, { logger: this.logger });
  }

  async createManagedWriteCheckpoints(
    batch: ManagedWriteCheckpointRequest[]
  ): Promise<CreateManagedWriteCheckpointsResult> {
    const { supplied, generated } = dedupeManagedWriteCheckpoints(batch);
    const writeCheckpoints = new Map<string, bigint>();
    let shouldAdvance = false;

    if (supplied.length > 0) {
      const now = new Date();
      let remaining = supplied;
      for (let attempt = 1; remaining.length > 0; attempt++) {
        if (attempt > READ_BACK_ATTEMPTS) {
          throw new Error(`Write checkpoints for ${remaining.length} user(s) vanished after being stored`);
        }
        const operations: AnyBulkWriteOperation<WriteCheckpointDocument>[] = remaining.map((entry) => ({
          updateMany: {
            filter: { user_id: entry.user_id },
            update: suppliedCheckpointUpdate(entry.checkpoint_request_id, entry.heads, now),
            upsert: true
          }
        }));
        await this.writeCheckpoints.bulkWrite(operations, { ordered: false });

        // Read back every user's stored maximum, including stale requests that changed nothing.
        const users = remaining.map((entry) => entry.user_id);
        const stored = await this.writeCheckpoints
          .find<StoredCheckpoint>(
            { user_id: { $in: users } },
            { projection: { _id: 0, user_id: 1, client_id: 1, processed_at_lsn: 1 } }
          )
          .toArray();
        const states = latestCheckpointPerUser(stored);
        for (const [user, state] of states) writeCheckpoints.set(user, state.id);
        shouldAdvance ||= suppliedShouldAdvance(users, states);
        remaining = remaining.filter((entry) => !states.has(entry.user_id));
      }
    }

    if (generated.length > 0) {
      // One find-one-and-update per user returns exactly the id this request produced. With duplicate documents
      // (from racing upserts) the one with the highest id is incremented, so the answer continues from the max.
      const ids = await Promise.all(generated.map((entry) => this.incrementGenerated(entry)));
      generated.forEach((entry, i) => writeCheckpoints.set(entry.user_id, ids[i]!));
      shouldAdvance = true;
    }

    return { writeCheckpoints, shouldAdvance };
  }

  private async incrementGenerated(entry: ManagedWriteCheckpointRequest): Promise<bigint> {
    try {
      const document = await this.writeCheckpoints.findOneAndUpdate(
        { user_id: entry.user_id },
        generatedCheckpointUpdate(entry.heads),
        { upsert: true, returnDocument: 'after', sort: { client_id: -1 }, projection: { client_id: 1 } }
      );
      if (document === null) throw new Error(`Upsert of the write checkpoint for ${entry.user_id} returned nothing`);
      return storedIdToBigint(document.client_id);
    } catch (error) {
      // Past 2^63-1 the pipeline fails on purpose (a $toLong of GENERATED_ID_EXHAUSTED) rather than wrapping.
      if (error instanceof MongoServerError && error.message.includes(GENERATED_ID_EXHAUSTED)) {
        throw new ServiceError(
          ErrorCode.CHECKPOINT_ID_EXHAUSTED,
          409,
          'Checkpoint id exhausted',
          'The stored write checkpoint id is already the largest int64; use a new client_id',
          { cause: error }
        );
      }
      throw error;
    }
  }

  async lastWriteCheckpoint(fullUserId: string, lsn: Lsn | null): Promise<bigint | null> {
    if (lsn === null) return null;
    // Normalised LSN strings compare correctly as plain (binary, collation-free) strings; see write-checkpoint-updates.ts.
    // The greatest id, latest or kept earlier pair, whose head is reached (issue 6); usually one document.
    const documents = await this.writeCheckpoints
      .find({ user_id: fullUserId }, { projection: { _id: 0, client_id: 1, lsns: 1, pending: 1 } })
      .toArray();
    return acknowledgedAt(documents, lsn);
  }

  async markWriteCheckpointsProcessed(lsn: Lsn): Promise<number> {
    const result = await this.client.withSession((session) =>
      session.withTransaction(async () => {
        await this.leadership.fence(session);
        return this.writeCheckpoints.updateMany(
          reachedPendingFilter(lsn),
          { $set: { processed_at_lsn: lsn } },
          { session }
        );
      })
    );
    if (result.modifiedCount > 0) await this.notifyCheckpointEvent();
    return result.modifiedCount;
  }

  async deleteExpiredCheckpointRequests(cutoff: Date): Promise<number> {
    const result = await this.writeCheckpoints.deleteMany(expiredRequestFilter(cutoff));
    return result.deletedCount;
  }

  /** Leadership and the fence every replication write passes: see replication-leadership.ts. */
  get replicationLock(): ReplicationLock {
    return this.leadership;
  }

  async deploySyncConfig(content: string): Promise<ReplicationStream> {
    const latest = await this.syncRules.findOne({ state: { $in: ['PROCESSING', 'ACTIVE'] } }, { sort: { _id: -1 } });
    if (latest !== null && latest.content === content) return toStream(latest);

    const document: SyncRulesDocument = {
      _id: 0,
      state: 'PROCESSING',
      content,
      created_at: new Date(),
      ...newStreamFields()
    };
    for (;;) {
      document._id = await this.nextSyncRulesId();
      try {
        await this.syncRules.insertOne(document);
        break;
      } catch (error) {
        if (!(error instanceof MongoServerError && error.code === DUPLICATE_KEY)) throw error;
        // The counter is behind the collection (e.g. the counter document was lost): move it past the max.
        const max = await this.syncRules.findOne({}, { sort: { _id: -1 }, projection: { _id: 1 } });
        await this.db
          .collection<CounterDocument>(COUNTERS)
          .updateOne({ _id: SYNC_RULES }, { $max: { value: Number(max?._id ?? 0) } }, { upsert: true });
      }
    }
    // An older stream that never became active is superseded by this one.
    await this.syncRules.updateMany({ state: 'PROCESSING', _id: { $lt: document._id } }, { $set: { state: 'STOP' } });
    await this.notifyCheckpointEvent();
    return toStream(document);
  }

  async getServingStream(): Promise<ReplicationStream | null> {
    const serving =
      (await this.syncRules.findOne({ state: { $in: ['ACTIVE', 'ERRORED'] } }, { sort: { _id: -1 } })) ??
      (await this.syncRules.findOne({ state: 'PROCESSING' }, { sort: { _id: -1 } }));
    return serving === null ? null : toStream(serving);
  }

  // async: an invalid stored config is a rejected promise, as callers expect, not a synchronous throw.
  // eslint-disable-next-line @typescript-eslint/require-await
  async getStreamStorage(stream: ReplicationStream): Promise<MongoStreamStorage> {
    return new MongoStreamStorage(this.collections, stream, syncRulesOfStream(stream), this.logger);
  }

  async getReplicatingStreams(): Promise<ReplicationStream[]> {
    const documents = await this.syncRules
      .find({ state: { $in: ['PROCESSING', 'ACTIVE'] } }, { projection: { _id: 1, state: 1, content: 1 } })
      .sort({ _id: -1 })
      .toArray();
    return documents.map(toStream);
  }

  async setStreamState(streamId: number, state: ReplicationStreamState, error?: string): Promise<void> {
    await this.syncRules.updateOne(
      { _id: streamId },
      { $set: { state, ...(error !== undefined ? { last_fatal_error: error } : {}) } }
    );
    await this.notifyCheckpointEvent();
  }

  async getServingCheckpoint(): Promise<{ stream: ReplicationStream; checkpoint: ReplicationCheckpoint } | null> {
    const document = await this.syncRules.findOne({ state: { $in: ['ACTIVE', 'ERRORED'] } }, { sort: { _id: -1 } });
    return document === null ? null : { stream: toStream(document), checkpoint: checkpointOf(document) };
  }

  listenForCheckpoints(onChange: () => void): Promise<() => Promise<void>> {
    return tailCheckpointEvents(this.db.collection(CHECKPOINT_EVENTS), onChange, this.logger);
  }

  async getStatus(): Promise<StorageStatus> {
    const streams = await this.syncRules
      .find({ state: { $in: ['PROCESSING', 'ACTIVE', 'ERRORED'] } }, { projection: { content: 0, snapshot_tables: 0 } })
      .sort({ _id: -1 })
      .toArray();
    const [total, pending, stats] = await Promise.all([
      this.writeCheckpoints.countDocuments({}),
      this.writeCheckpoints.countDocuments({ processed_at_lsn: null }),
      this.db.command({ dbStats: 1 }).catch(() => null)
    ]);
    const size = stats === null ? null : Number(stats.storageSize ?? 0) + Number(stats.indexSize ?? 0);
    return {
      streams: streams.map((document) => ({
        id: Number(document._id),
        state: document.state,
        slotName: document.slot_name ?? null,
        snapshotDone: document.snapshot_done === true,
        lastCheckpoint: longToBigint(document.last_checkpoint),
        lastCheckpointLsn: lsnOrNull(document.last_checkpoint_lsn),
        lastCheckpointAt: document.last_checkpoint_ts ?? null,
        lastKeepaliveAt: document.last_keepalive_ts ?? null,
        lastError: document.last_fatal_error ?? null
      })),
      checkpointRequests: { total, pending },
      sizeBytes: size !== null && Number.isFinite(size) ? size : null
    };
  }

  async close(): Promise<void> {
    await this.client.close();
  }

  private async nextSyncRulesId(): Promise<number> {
    const counter = await this.db
      .collection<CounterDocument>(COUNTERS)
      .findOneAndUpdate({ _id: SYNC_RULES }, { $inc: { value: 1 } }, { upsert: true, returnDocument: 'after' });
    if (counter === null) throw new Error('Counter upsert returned nothing');
    return Number(counter.value);
  }

  /**
   * Wake readers tailing `checkpoint_events` (PROTOCOL §6.2). Write concern w:1: a lost notification only
   * delays sync until the next event or the 60 s re-check.
   */
  private async notifyCheckpointEvent(): Promise<void> {
    await this.db.collection(CHECKPOINT_EVENTS).insertOne({}, { writeConcern: { w: 1 } });
  }
}

/** The driver options for a validated `storage:` section: pool, credentials, timeouts (seconds → ms), codecs. */
export function mongoClientOptions(config: MongoStorageConfig): MongoClientOptions {
  const ms = (seconds: number) => Math.round(seconds * 1000);
  return {
    maxPoolSize: config.max_pool_size,
    appName: 'syncpoint',
    ...(config.username !== undefined || config.password !== undefined
      ? { auth: { username: config.username, password: config.password } }
      : {}),
    serverSelectionTimeoutMS: ms(config.server_selection_timeout_seconds),
    socketTimeoutMS: ms(config.socket_timeout_seconds),
    connectTimeoutMS: ms(config.connect_timeout_seconds),
    heartbeatFrequencyMS: ms(config.heartbeat_frequency_seconds),
    // Int64 values stay `Long` when read back, whatever their magnitude: ids never pass through a JS number.
    promoteLongs: false
  };
}

/** Connect to MongoDB for the `storage:` section of the config (already validated by `mongoStorageConfigSchema`). */
export async function createMongoStorage(
  config: MongoStorageConfig,
  context?: Partial<ModuleContext>
): Promise<MongoBucketStorage> {
  const logger = context?.logger ?? silentLogger;
  recognizeUnavailableErrors(isMongoUnavailable);
  const client = new MongoClient(config.uri, mongoClientOptions(config));
  try {
    await client.connect();
  } catch (error) {
    await client.close().catch(() => undefined);
    throw error;
  }
  const databaseName = resolveDatabaseName(config);
  logger.info({ database: databaseName }, 'Connected to MongoDB storage');
  return new MongoBucketStorage(client, client.db(databaseName), logger);
}
