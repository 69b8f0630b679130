import type { Lsn } from '@syncpoint/codecs';
import {
  dedupeManagedWriteCheckpoints,
  ErrorCode,
  ServiceError,
  type BucketStorage,
  type Logger,
  type CreateManagedWriteCheckpointsResult,
  type ManagedWriteCheckpointRequest,
  type MigrationDirection,
  type MigrationReport,
  type ReplicationStream,
  type ReplicationStreamState
} from '@syncpoint/service-core';
import { Kysely, PostgresDialect, sql } from 'kysely';
import pg from 'pg';
import { migrate } from './migrations.js';
import { poolConfigFromStorageConfig } from './pg-connection.js';
import type { PostgresStorageConfig } from './storage-config.js';

interface SyncRulesTable {
  id: number;
  state: ReplicationStreamState;
  content: string;
}

interface StorageDatabase {
  'powersync.sync_rules': SyncRulesTable;
}

interface StoredCheckpointRow {
  user_id: string;
  write_checkpoint: bigint;
  pending: boolean;
}

/** Serialises sync config deployment across processes (pg_advisory_xact_lock key). */
const DEPLOY_LOCK_KEY = 7_240_002;

/** Postgres raises numeric_value_out_of_range when a generated id would pass 2^63−1. */
const NUMERIC_VALUE_OUT_OF_RANGE = '22003';

export class PostgresBucketStorage implements BucketStorage {
  readonly db: Kysely<StorageDatabase>;

  constructor(readonly pool: pg.Pool) {
    this.db = new Kysely<StorageDatabase>({ dialect: new PostgresDialect({ pool }) });
  }

  async migrate(direction: MigrationDirection): Promise<MigrationReport> {
    return { applied: await migrate(this.db, direction) };
  }

  async createManagedWriteCheckpoints(
    batch: ManagedWriteCheckpointRequest[]
  ): Promise<CreateManagedWriteCheckpointsResult> {
    const { supplied, generated } = dedupeManagedWriteCheckpoints(batch);
    const writeCheckpoints = new Map<string, bigint>();
    let shouldAdvance = false;

    if (generated.length > 0) {
      for (const row of await this.incrementGenerated(generated)) writeCheckpoints.set(row.user_id, row.write_checkpoint);
      shouldAdvance = true;
    }
    if (supplied.length > 0) {
      for (const row of await this.upsertSupplied(supplied)) {
        writeCheckpoints.set(row.user_id, row.write_checkpoint);
        shouldAdvance ||= row.pending;
      }
    }
    return { writeCheckpoints, shouldAdvance };
  }

  /** Legacy generated ids: one statement for the whole batch; a new record starts at 1. */
  private async incrementGenerated(entries: ManagedWriteCheckpointRequest[]): Promise<StoredCheckpointRow[]> {
    try {
      const { rows } = await sql<StoredCheckpointRow>`
        INSERT INTO powersync.write_checkpoints AS w
          (user_id, lsns, write_checkpoint, checkpoint_requested_at, processed_at_lsn)
        SELECT input.user_id, jsonb_build_object('1', input.head), 1, NULL, NULL
        FROM unnest(${entries.map((e) => e.user_id)}::text[], ${entries.map((e) => e.heads['1'])}::text[])
          AS input(user_id, head)
        ON CONFLICT (user_id) DO UPDATE SET
          write_checkpoint = w.write_checkpoint + 1,
          lsns = excluded.lsns,
          checkpoint_requested_at = NULL,
          processed_at_lsn = NULL
        RETURNING user_id, write_checkpoint, true AS pending`.execute(this.db);
      return rows;
    } catch (error) {
      if ((error as { code?: string }).code === NUMERIC_VALUE_OUT_OF_RANGE) {
        throw new ServiceError(
          ErrorCode.CHECKPOINT_ID_EXHAUSTED,
          409,
          'The stored checkpoint request id is already 9223372036854775807 and cannot be incremented'
        );
      }
      throw error;
    }
  }

  /**
   * Client-supplied ids, monotonic per full user id (PROTOCOL §4.3): one atomic upsert for the batch, so
   * concurrent requests can never move an id backwards. Stale requests are not returned by the upsert and
   * are read back afterwards in a new snapshot, so they see the larger id that beat them.
   */
  private async upsertSupplied(
    entries: Array<ManagedWriteCheckpointRequest & { checkpoint_request_id: bigint }>
  ): Promise<StoredCheckpointRow[]> {
    const { rows: upserted } = await sql<StoredCheckpointRow>`
      INSERT INTO powersync.write_checkpoints AS w
        (user_id, lsns, write_checkpoint, checkpoint_requested_at, processed_at_lsn)
      SELECT input.user_id, jsonb_build_object('1', input.head), input.request_id, now(), NULL
      FROM unnest(
        ${entries.map((e) => e.user_id)}::text[],
        ${entries.map((e) => e.checkpoint_request_id.toString())}::int8[],
        ${entries.map((e) => e.heads['1'])}::text[]
      ) AS input(user_id, request_id, head)
      ON CONFLICT (user_id) DO UPDATE SET
        write_checkpoint = excluded.write_checkpoint,
        lsns = CASE WHEN excluded.write_checkpoint > w.write_checkpoint THEN excluded.lsns ELSE w.lsns END,
        processed_at_lsn =
          CASE WHEN excluded.write_checkpoint > w.write_checkpoint THEN NULL ELSE w.processed_at_lsn END,
        checkpoint_requested_at = now()
      WHERE excluded.write_checkpoint >= w.write_checkpoint
      RETURNING user_id, write_checkpoint, processed_at_lsn IS NULL AS pending`.execute(this.db);

    if (upserted.length === entries.length) return upserted;
    const answered = new Set(upserted.map((row) => row.user_id));
    const stale = entries.filter((entry) => !answered.has(entry.user_id));
    const { rows: current } = await sql<StoredCheckpointRow>`
      SELECT user_id, write_checkpoint, processed_at_lsn IS NULL AS pending
      FROM powersync.write_checkpoints
      WHERE user_id = ANY(${stale.map((e) => e.user_id)}::text[])`.execute(this.db);
    if (current.length === stale.length) return [...upserted, ...current];
    // A stale request's record was deleted by retention between the two statements: apply those again.
    const found = new Set(current.map((row) => row.user_id));
    return [...upserted, ...current, ...(await this.upsertSupplied(stale.filter((e) => !found.has(e.user_id))))];
  }

  async lastWriteCheckpoint(fullUserId: string, lsn: Lsn | null): Promise<bigint | null> {
    if (lsn === null) return null;
    const { rows } = await sql<{ write_checkpoint: bigint }>`
      SELECT write_checkpoint FROM powersync.write_checkpoints
      WHERE user_id = ${fullUserId} AND head_lsn <= ${lsn}::pg_lsn`.execute(this.db);
    return rows[0]?.write_checkpoint ?? null;
  }

  async markWriteCheckpointsProcessed(lsn: Lsn): Promise<number> {
    const result = await sql`
      UPDATE powersync.write_checkpoints SET processed_at_lsn = ${lsn}::pg_lsn
      WHERE processed_at_lsn IS NULL AND head_lsn <= ${lsn}::pg_lsn`.execute(this.db);
    return Number(result.numAffectedRows ?? 0n);
  }

  async deleteExpiredCheckpointRequests(cutoff: Date): Promise<number> {
    const managed = await sql`
      DELETE FROM powersync.write_checkpoints
      WHERE checkpoint_requested_at < ${cutoff} AND processed_at_lsn IS NOT NULL`.execute(this.db);
    const custom = await sql`
      DELETE FROM powersync.custom_write_checkpoints WHERE checkpoint_requested_at < ${cutoff}`.execute(this.db);
    return Number((managed.numAffectedRows ?? 0n) + (custom.numAffectedRows ?? 0n));
  }

  async deploySyncConfig(content: string): Promise<ReplicationStream> {
    return this.db.transaction().execute(async (trx) => {
      await sql`SELECT pg_advisory_xact_lock(${DEPLOY_LOCK_KEY})`.execute(trx);
      const newest = (state: ReplicationStreamState) =>
        trx
          .selectFrom('powersync.sync_rules')
          .select(['id', 'state', 'content'])
          .where('state', '=', state)
          .orderBy('id', 'desc')
          .limit(1)
          .executeTakeFirst();
      const processing = await newest('PROCESSING');
      if (processing?.content === content) return processing;
      if (processing) {
        await trx.updateTable('powersync.sync_rules').set({ state: 'STOP' }).where('id', '=', processing.id).execute();
      }
      const active = await newest('ACTIVE');
      if (active?.content === content) return active;
      return trx
        .insertInto('powersync.sync_rules')
        .values({ state: 'PROCESSING', content } as SyncRulesTable)
        .returning(['id', 'state', 'content'])
        .executeTakeFirstOrThrow();
    });
  }

  async getServingStream(): Promise<ReplicationStream | null> {
    const row = await this.db
      .selectFrom('powersync.sync_rules')
      .select(['id', 'state', 'content'])
      .where('state', 'in', ['ACTIVE', 'ERRORED', 'PROCESSING'])
      // ACTIVE/ERRORED before PROCESSING, newest first.
      .orderBy(sql`state = 'PROCESSING'`)
      .orderBy('id', 'desc')
      .limit(1)
      .executeTakeFirst();
    return row ?? null;
  }

  async close(): Promise<void> {
    await this.db.destroy();
  }
}

export function createPostgresStorage(config: PostgresStorageConfig, logger?: Logger): PostgresBucketStorage {
  const pool = new pg.Pool(poolConfigFromStorageConfig(config));
  // An idle connection dropped by the server (restart, failover) must not crash the process; the pool reconnects.
  pool.on('error', (error) => logger?.warn({ err: error }, 'idle storage connection failed'));
  return new PostgresBucketStorage(pool);
}
