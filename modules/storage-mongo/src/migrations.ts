/**
 * Versioned MongoDB migrations (PROTOCOL §4.13). Each migration declares the capped collections and indexes it
 * creates; `up` creates them, `down` drops them. Applied migrations are recorded by name in `migrations`.
 *
 * Concurrency: a run holds a lease document in `locks` (taken with an atomic find-one-and-update), and every
 * step is idempotent on its own (creating an existing identical index or collection is a no-op, dropping a
 * missing one is ignored), so a crashed run can simply be repeated.
 */
import type { Logger, MigrationDirection, MigrationReport } from '@syncpoint/service-core';
import { MongoServerError, ObjectId, type CreateIndexesOptions, type Db, type IndexSpecification } from 'mongodb';

export interface IndexPlan {
  collection: string;
  key: IndexSpecification;
  options: CreateIndexesOptions & { name: string };
}

export interface CappedCollectionPlan {
  name: string;
  /** Bytes. */
  size: number;
  max: number;
}

export interface Migration {
  name: string;
  collections: CappedCollectionPlan[];
  /**
   * Ordinary collections created up front (a transaction's first write must not have to create its collection on
   * servers before 4.4). `down` leaves them, and their data, in place: only indexes and capped collections go.
   */
  plainCollections?: string[];
  indexes: IndexPlan[];
}

export const WRITE_CHECKPOINTS = 'write_checkpoints';
export const CUSTOM_WRITE_CHECKPOINTS = 'custom_write_checkpoints';
export const CHECKPOINT_EVENTS = 'checkpoint_events';
export const MIGRATIONS_COLLECTION = 'migrations';
export const LOCKS_COLLECTION = 'locks';
/** Bucket data collections (PROTOCOL §8); documents in bucket-data-documents.ts. */
export const BUCKET_DATA_COLLECTIONS = [
  'bucket_data',
  'bucket_state',
  'current_data',
  'bucket_parameters',
  'op_id_sequence'
] as const;

const requestedAtPartial = { partialFilterExpression: { checkpoint_requested_at: { $exists: true } } };

/** In application order. Names sort in the same order (13-digit timestamp prefix). */
export const MIGRATIONS: readonly Migration[] = [
  {
    name: '1711543888062-write-checkpoint-index',
    collections: [],
    indexes: [{ collection: WRITE_CHECKPOINTS, key: { user_id: 1 }, options: { name: 'user_id' } }]
  },
  {
    name: '1727099539247-custom-write-checkpoint-index',
    collections: [],
    indexes: [
      {
        collection: CUSTOM_WRITE_CHECKPOINTS,
        key: { user_id: 1, sync_rules_id: 1 },
        options: { name: 'user_sync_rule_unique', unique: true }
      }
    ]
  },
  {
    name: '1749720702136-checkpoint-events',
    collections: [{ name: CHECKPOINT_EVENTS, size: 50 * 1024, max: 50 }],
    indexes: [
      { collection: WRITE_CHECKPOINTS, key: { processed_at_lsn: 1 }, options: { name: 'processed_at_lsn' } },
      { collection: CUSTOM_WRITE_CHECKPOINTS, key: { op_id: 1 }, options: { name: 'op_id' } }
    ]
  },
  {
    name: '1782950400000-checkpoint-requested-at-index',
    collections: [],
    indexes: [
      {
        collection: WRITE_CHECKPOINTS,
        key: { checkpoint_requested_at: 1 },
        options: { name: 'checkpoint_requested_at', ...requestedAtPartial }
      },
      {
        collection: CUSTOM_WRITE_CHECKPOINTS,
        key: { checkpoint_requested_at: 1 },
        options: { name: 'checkpoint_requested_at', ...requestedAtPartial }
      }
    ]
  },
  {
    name: '1783036800000-bucket-data',
    collections: [],
    plainCollections: [...BUCKET_DATA_COLLECTIONS],
    indexes: [
      // getParameterSets: equality on (g, lookup), newest entries ≤ checkpoint by `_id`. Every other bucket data
      // read is a range on the `_id` index ({g, b, o} / {g, t, k} / {g, b}).
      { collection: 'bucket_parameters', key: { 'key.g': 1, lookup: 1, _id: 1 }, options: { name: 'lookup' } },
      // getServingCheckpoint / getReplicatingStreams.
      { collection: 'sync_rules', key: { state: 1, _id: -1 }, options: { name: 'state' } }
    ]
  }
];

/** Server error codes treated as "already done". */
const NAMESPACE_NOT_FOUND = 26;
const INDEX_NOT_FOUND = 27;
const NAMESPACE_EXISTS = 48;
const DUPLICATE_KEY = 11000;

function hasCode(error: unknown, ...codes: number[]): boolean {
  return error instanceof MongoServerError && typeof error.code === 'number' && codes.includes(error.code);
}

async function ignoring(codes: number[], action: () => Promise<unknown>): Promise<void> {
  try {
    await action();
  } catch (error) {
    if (!hasCode(error, ...codes)) throw error;
  }
}

/**
 * Create a capped collection. One that exists but is not capped (implicitly created by an insert before this
 * migration ran) only ever holds empty notification documents, so it is dropped and created capped.
 */
async function createCappedCollection(db: Db, plan: CappedCollectionPlan): Promise<void> {
  const create = () => db.createCollection(plan.name, { capped: true, size: plan.size, max: plan.max });
  try {
    await create();
  } catch (error) {
    if (!hasCode(error, NAMESPACE_EXISTS)) throw error;
    if (await db.collection(plan.name).isCapped()) return;
    await ignoring([NAMESPACE_NOT_FOUND], () => db.collection(plan.name).drop());
    await ignoring([NAMESPACE_EXISTS], create);
  }
}

async function applyUp(db: Db, migration: Migration): Promise<void> {
  for (const plan of migration.collections) {
    await createCappedCollection(db, plan);
  }
  for (const name of migration.plainCollections ?? []) {
    await ignoring([NAMESPACE_EXISTS], () => db.createCollection(name));
  }
  for (const plan of migration.indexes) {
    await db.collection(plan.collection).createIndex(plan.key, plan.options);
  }
}

async function applyDown(db: Db, migration: Migration): Promise<void> {
  for (const plan of [...migration.indexes].reverse()) {
    await ignoring([NAMESPACE_NOT_FOUND, INDEX_NOT_FOUND], () =>
      db.collection(plan.collection).dropIndex(plan.options.name)
    );
  }
  for (const plan of [...migration.collections].reverse()) {
    await ignoring([NAMESPACE_NOT_FOUND], () => db.collection(plan.name).drop());
  }
}

interface MigrationRecord {
  _id: string;
  applied_at: Date;
}

interface LockDocument {
  _id: string;
  owner: string;
  expires_at: Date;
}

export interface MigrationOptions {
  logger?: Logger;
  /** How long a run may hold the lock before another may take it over (a crashed run). */
  leaseMs?: number;
  /** How long to wait for another run's lock. */
  waitMs?: number;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Take the `migrations` lease, waiting while another live run holds it. Returns the owner token. */
async function acquireLock(db: Db, leaseMs: number, waitMs: number): Promise<string> {
  const locks = db.collection<LockDocument>(LOCKS_COLLECTION);
  const owner = new ObjectId().toHexString();
  const deadline = Date.now() + waitMs;
  for (;;) {
    const now = new Date();
    try {
      // Matches only a free or expired lock; if a live lock exists, the upsert collides on _id (E11000).
      await locks.findOneAndUpdate(
        { _id: 'migrations', expires_at: { $lt: now } },
        { $set: { owner, expires_at: new Date(now.getTime() + leaseMs) } },
        { upsert: true }
      );
      return owner;
    } catch (error) {
      if (!hasCode(error, DUPLICATE_KEY)) throw error;
      if (Date.now() > deadline) {
        throw new Error(
          `Timed out after ${waitMs} ms waiting for another migration run (lock "migrations" in ${LOCKS_COLLECTION})`,
          { cause: error }
        );
      }
      await sleep(250);
    }
  }
}

async function releaseLock(db: Db, owner: string): Promise<void> {
  await db.collection<LockDocument>(LOCKS_COLLECTION).deleteOne({ _id: 'migrations', owner });
}

/** Migrations not yet recorded, in application order. */
export function pendingMigrations(
  appliedNames: ReadonlySet<string>,
  migrations: readonly Migration[] = MIGRATIONS
): Migration[] {
  return migrations.filter((migration) => !appliedNames.has(migration.name));
}

/**
 * The most recently applied migration, to revert with `down`; undefined when none is applied. Throws when a
 * newer migration unknown to this version is recorded: reverting an older one underneath it would be wrong.
 */
export function migrationToRevert(
  appliedNames: ReadonlySet<string>,
  migrations: readonly Migration[] = MIGRATIONS
): Migration | undefined {
  const latest = [...migrations].reverse().find((migration) => appliedNames.has(migration.name));
  const known = new Set(migrations.map((migration) => migration.name));
  const newestUnknown = [...appliedNames]
    .filter((name) => !known.has(name))
    .sort()
    .pop();
  if (newestUnknown !== undefined && (latest === undefined || newestUnknown > latest.name)) {
    throw new Error(`Cannot revert migration ${newestUnknown}: it is unknown to this version`);
  }
  return latest;
}

/** Apply every pending migration in order (`up`), or revert the most recently applied one (`down`). */
export async function runMigrations(
  db: Db,
  direction: MigrationDirection,
  options: MigrationOptions = {},
  migrations: readonly Migration[] = MIGRATIONS
): Promise<MigrationReport> {
  const leaseMs = options.leaseMs ?? 5 * 60_000;
  const owner = await acquireLock(db, leaseMs, options.waitMs ?? leaseMs + 30_000);
  try {
    const records = db.collection<MigrationRecord>(MIGRATIONS_COLLECTION);
    const appliedNames = new Set((await records.find({}, { projection: { _id: 1 } }).toArray()).map((r) => r._id));
    const applied: string[] = [];

    if (direction === 'up') {
      for (const migration of pendingMigrations(appliedNames, migrations)) {
        await applyUp(db, migration);
        await records.updateOne(
          { _id: migration.name },
          { $setOnInsert: { applied_at: new Date() } },
          { upsert: true }
        );
        options.logger?.info({ migration: migration.name }, 'Applied MongoDB storage migration');
        applied.push(migration.name);
      }
    } else {
      const latest = migrationToRevert(appliedNames, migrations);
      if (latest !== undefined) {
        await applyDown(db, latest);
        await records.deleteOne({ _id: latest.name });
        options.logger?.info({ migration: latest.name }, 'Reverted MongoDB storage migration');
        applied.push(latest.name);
      }
    }
    return { applied };
  } finally {
    await releaseLock(db, owner);
  }
}
