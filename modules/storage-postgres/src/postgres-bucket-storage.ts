import { checkpointRequestId, normalizeLsn, opId, writeCheckpoint, type Lsn } from '@syncpoint/codecs';
import {
  dedupeManagedWriteCheckpoints,
  ErrorCode,
  ServiceError,
  syncRulesOfStream,
  type BucketStorage,
  type CheckpointOutcome,
  type Logger,
  type CreateManagedWriteCheckpointsResult,
  type ManagedWriteCheckpointRequest,
  type MigrationDirection,
  type MigrationReport,
  type ReplicationCheckpoint,
  type ReplicationStream,
  type ReplicationStreamState,
  type StorageStatus,
  type ReplicationLock
} from '@syncpoint/service-core';
import { Kysely, PostgresDialect, sql } from 'kysely';
import pg from 'pg';
import { migrate } from './migrations.js';
import { destroyConnectionOnQueryTimeout, poolConfigFromStorageConfig } from './pg-connection.js';
import { CHECKPOINT_CHANNEL, inTransaction, MARK_PROCESSED_SQL } from './pg-transaction.js';
import { PostgresStreamStorage } from './postgres-stream-storage.js';
import { PostgresReplicationLeadership } from './replication-leadership.js';
import type { PostgresStorageConfig } from './storage-config.js';

const RECONNECT_MIN_MS = 100;
const RECONNECT_MAX_MS = 10_000;
/** Liveness check period (and query timeout) of the checkpoint LISTEN connection. */
const LISTENER_CHECK_MS = 10_000;

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
  outcome?: CheckpointOutcome;
}

const DEADLOCK_DETECTED = '40P01';
const SERIALIZATION_FAILURE = '40001';

/**
 * Run a single-statement write again when Postgres aborted it for a lock conflict: the statement rolled back whole, so
 * repeating it is safe.
 */
async function retryOnConflict<T>(write: () => Promise<T>, attempts = 3): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await write();
    } catch (error) {
      const code = (error as { code?: string }).code;
      if (attempt >= attempts || (code !== DEADLOCK_DETECTED && code !== SERIALIZATION_FAILURE)) throw error;
    }
  }
}

/** Serialises sync config deployment across processes (pg_advisory_xact_lock key). */
const DEPLOY_LOCK_KEY = 7_240_002;

/** Postgres raises numeric_value_out_of_range when a generated id would pass 2^63−1. */
const NUMERIC_VALUE_OUT_OF_RANGE = '22003';

export class PostgresBucketStorage implements BucketStorage {
  readonly db: Kysely<StorageDatabase>;
  /** Replication leadership and the fence every replication write passes (issue 12 items 1–2). */
  readonly leadership: PostgresReplicationLeadership;

  constructor(
    readonly pool: pg.Pool,
    private readonly logger?: Logger
  ) {
    this.db = new Kysely<StorageDatabase>({ dialect: new PostgresDialect({ pool }) });
    this.leadership = new PostgresReplicationLeadership(pool, logger);
  }

  async migrate(direction: MigrationDirection): Promise<MigrationReport> {
    // On a pool of its own without the query timeout: an index build on a large table may take minutes.
    const { query_timeout: _queryTimeout, ...options } = this.pool.options as pg.PoolConfig;
    const migrationPool = new pg.Pool({ ...options, max: 1 });
    migrationPool.on('error', (error) => this.logger?.warn({ err: error }, 'idle migration connection failed'));
    const migrationDb = new Kysely<StorageDatabase>({ dialect: new PostgresDialect({ pool: migrationPool }) });
    try {
      return { applied: await migrate(migrationDb, direction) };
    } finally {
      await migrationDb.destroy();
    }
  }

  async createManagedWriteCheckpoints(
    batch: ManagedWriteCheckpointRequest[]
  ): Promise<CreateManagedWriteCheckpointsResult> {
    const deduped = dedupeManagedWriteCheckpoints(batch);
    // Rows are locked in user id order by every statement that locks several of them (here and in MARK_PROCESSED_SQL),
    // so concurrent batches and replication commits cannot deadlock each other.
    const byUser = (a: ManagedWriteCheckpointRequest, b: ManagedWriteCheckpointRequest) =>
      a.user_id < b.user_id ? -1 : a.user_id > b.user_id ? 1 : 0;
    const supplied = deduped.supplied.sort(byUser);
    const generated = deduped.generated.sort(byUser);
    const writeCheckpoints = new Map<string, bigint>();
    const outcomes = new Map<string, CheckpointOutcome>();
    let shouldAdvance = false;

    if (generated.length > 0) {
      for (const row of await retryOnConflict(() => this.incrementGenerated(generated))) {
        writeCheckpoints.set(row.user_id, row.write_checkpoint);
        outcomes.set(row.user_id, 'generated');
      }
      shouldAdvance = true;
    }
    if (supplied.length > 0) {
      for (const row of await retryOnConflict(() => this.upsertSupplied(supplied))) {
        writeCheckpoints.set(row.user_id, row.write_checkpoint);
        outcomes.set(row.user_id, row.outcome ?? 'advanced');
        shouldAdvance ||= row.pending;
      }
    }
    return { writeCheckpoints, shouldAdvance, outcomes };
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
          pending = powersync.push_pending_write_checkpoint(
            CASE WHEN w.processed_at_lsn IS NULL THEN w.pending ELSE '[]' END, w.write_checkpoint, w.head_lsn, w.write_checkpoint + 1, (excluded.lsns->>'1')::pg_lsn),
          checkpoint_requested_at = NULL,
          processed_at_lsn = NULL
        RETURNING user_id, write_checkpoint, true AS pending, 'generated' AS outcome`.execute(this.db);
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
    // `previous` reads the statement's snapshot, before the upsert: it tells an advance from a duplicate (metrics).
    const { rows: upserted } = await sql<StoredCheckpointRow & { previous: bigint | null }>`
      WITH previous AS (
        SELECT user_id, write_checkpoint FROM powersync.write_checkpoints
        WHERE user_id = ANY(${entries.map((e) => e.user_id)}::text[])
      ),
      upserted AS (
      INSERT INTO powersync.write_checkpoints AS w
        (user_id, lsns, write_checkpoint, checkpoint_requested_at, processed_at_lsn)
      SELECT input.user_id, jsonb_build_object('1', input.head), input.request_id, now(), NULL
      FROM unnest(
        ${entries.map((e) => e.user_id)}::text[],
        ${entries.map((e) => checkpointRequestId.toPgInt8(e.checkpoint_request_id))}::int8[],
        ${entries.map((e) => e.heads['1'])}::text[]
      ) AS input(user_id, request_id, head)
      ON CONFLICT (user_id) DO UPDATE SET
        write_checkpoint = excluded.write_checkpoint,
        lsns = CASE WHEN excluded.write_checkpoint > w.write_checkpoint THEN excluded.lsns ELSE w.lsns END,
        pending = CASE WHEN excluded.write_checkpoint > w.write_checkpoint
          THEN powersync.push_pending_write_checkpoint(
            CASE WHEN w.processed_at_lsn IS NULL THEN w.pending ELSE '[]' END, w.write_checkpoint, w.head_lsn, excluded.write_checkpoint, (excluded.lsns->>'1')::pg_lsn)
          ELSE w.pending END,
        processed_at_lsn =
          CASE WHEN excluded.write_checkpoint > w.write_checkpoint THEN NULL ELSE w.processed_at_lsn END,
        checkpoint_requested_at = now()
      WHERE excluded.write_checkpoint >= w.write_checkpoint
      RETURNING user_id, write_checkpoint, processed_at_lsn IS NULL AS pending
      )
      SELECT u.user_id, u.write_checkpoint, u.pending, p.write_checkpoint AS previous
      FROM upserted u LEFT JOIN previous p USING (user_id)`.execute(this.db);
    for (const row of upserted) {
      row.outcome = row.previous !== null && row.previous >= row.write_checkpoint ? 'duplicate' : 'advanced';
    }

    if (upserted.length === entries.length) return upserted;
    const answered = new Set(upserted.map((row) => row.user_id));
    const stale = entries.filter((entry) => !answered.has(entry.user_id));
    const { rows: current } = await sql<StoredCheckpointRow>`
      SELECT user_id, write_checkpoint, processed_at_lsn IS NULL AS pending, 'stale' AS outcome
      FROM powersync.write_checkpoints
      WHERE user_id = ANY(${stale.map((e) => e.user_id)}::text[])`.execute(this.db);
    if (current.length === stale.length) return [...upserted, ...current];
    // A stale request's record was deleted by retention between the two statements: apply those again.
    const found = new Set(current.map((row) => row.user_id));
    return [...upserted, ...current, ...(await this.upsertSupplied(stale.filter((e) => !found.has(e.user_id))))];
  }

  async lastWriteCheckpoint(fullUserId: string, lsn: Lsn | null): Promise<bigint | null> {
    if (lsn === null) return null;
    return (await this.lastWriteCheckpoints([fullUserId], lsn)).get(fullUserId) ?? null;
  }

  async lastWriteCheckpoints(fullUserIds: string[], lsn: Lsn): Promise<Map<string, bigint>> {
    // The latest id when its head is reached, else the greatest earlier id still kept whose head is (issue 6).
    const { rows } = await sql<{ user_id: string; write_checkpoint: bigint | null }>`
      SELECT user_id, CASE WHEN head_lsn <= ${lsn}::pg_lsn THEN write_checkpoint ELSE (
        SELECT max((e->>'id')::int8) FROM jsonb_array_elements(pending) e WHERE (e->>'lsn')::pg_lsn <= ${lsn}::pg_lsn
      ) END AS write_checkpoint
      FROM powersync.write_checkpoints WHERE user_id = ANY(${fullUserIds}::text[])`.execute(this.db);
    const result = new Map<string, bigint>();
    for (const row of rows)
      if (row.write_checkpoint !== null) result.set(row.user_id, writeCheckpoint.fromPgInt8(row.write_checkpoint));
    return result;
  }

  async markWriteCheckpointsProcessed(lsn: Lsn): Promise<number> {
    const result = await inTransaction(this.pool, async (client) => {
      await this.leadership.fence(client);
      return client.query(MARK_PROCESSED_SQL, [lsn]);
    });
    return result.rowCount ?? 0;
  }

  /**
   * Managed records only: custom mode (PROTOCOL §4.11) is not implemented, so nothing writes
   * `custom_write_checkpoints` (the table stays as the schema of §4.13 lists it) and there is nothing to expire there.
   */
  async deleteExpiredCheckpointRequests(cutoff: Date): Promise<number> {
    const managed = await sql`
      DELETE FROM powersync.write_checkpoints
      WHERE checkpoint_requested_at < ${cutoff} AND processed_at_lsn IS NOT NULL`.execute(this.db);
    return Number(managed.numAffectedRows ?? 0n);
  }

  /** Leadership and the fence every replication write passes: see replication-leadership.ts. */
  get replicationLock(): ReplicationLock {
    return this.leadership;
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

  // async: an invalid stored config is a rejected promise, as callers expect, not a synchronous throw.
  // eslint-disable-next-line @typescript-eslint/require-await
  async getStreamStorage(stream: ReplicationStream): Promise<PostgresStreamStorage> {
    return new PostgresStreamStorage(this.pool, stream, syncRulesOfStream(stream), this.logger, this.leadership);
  }

  async getReplicatingStreams(): Promise<ReplicationStream[]> {
    const { rows } = await this.pool.query<ReplicationStream>(
      `SELECT id, state, content FROM powersync.sync_rules WHERE state IN ('PROCESSING', 'ACTIVE') ORDER BY id DESC`
    );
    return rows;
  }

  async setStreamState(streamId: number, state: ReplicationStreamState, error?: string): Promise<void> {
    await inTransaction(this.pool, async (client) => {
      await this.leadership.fence(client);
      await client.query(
        `UPDATE powersync.sync_rules SET state = $2, last_fatal_error = coalesce($3, last_fatal_error) WHERE id = $1`,
        [streamId, state, error ?? null]
      );
      const serving = await servingCheckpointRow(client);
      const payload = serving
        ? {
            active_checkpoint: {
              id: serving.id,
              last_checkpoint: opId.encode(serving.last_checkpoint ?? 0n),
              last_checkpoint_lsn: serving.lsn === null ? null : normalizeLsn(serving.lsn)
            }
          }
        : { active_checkpoint: null };
      await client.query(`SELECT pg_notify($1, $2)`, [CHECKPOINT_CHANNEL, JSON.stringify(payload)]);
    });
  }

  async getServingCheckpoint(): Promise<{ stream: ReplicationStream; checkpoint: ReplicationCheckpoint } | null> {
    const row = await servingCheckpointRow(this.pool);
    if (!row) return null;
    return {
      stream: { id: row.id, state: row.state, content: row.content },
      checkpoint: { checkpoint: row.last_checkpoint ?? 0n, lsn: row.lsn === null ? null : normalizeLsn(row.lsn) }
    };
  }

  /**
   * One dedicated connection (not from the pool) doing `LISTEN powersynccheckpoints`. When it fails it is replaced
   * with exponential backoff, and `onChange` is called after reconnecting (notifications may have been missed).
   */
  async listenForCheckpoints(onChange: () => void): Promise<() => Promise<void>> {
    let stopped = false;
    let current: pg.Client | null = null;
    let timer: NodeJS.Timeout | undefined;
    let delay = RECONNECT_MIN_MS;

    const connect = async (): Promise<void> => {
      // Issue 12 item 4: TCP keepalives, and a query with a timeout every LISTENER_CHECK_MS (below), so a half-open
      // connection — which would silently stop every notification — is replaced within about 20 s.
      const client = new pg.Client({
        ...(this.pool.options as pg.ClientConfig),
        keepAlive: true,
        keepAliveInitialDelayMillis: LISTENER_CHECK_MS,
        query_timeout: LISTENER_CHECK_MS
      });
      const failed = (error?: Error) => {
        if (current !== client) return;
        current = null;
        client.removeAllListeners('notification');
        client.end().catch(() => undefined);
        if (!stopped) {
          this.logger?.warn({ err: error }, 'checkpoint listener connection lost; reconnecting');
          scheduleReconnect();
        }
      };
      client.on('notification', (message) => {
        if (message.channel === CHECKPOINT_CHANNEL) onChange();
      });
      client.on('error', failed);
      client.on('end', () => failed());
      try {
        await client.connect();
        await client.query(`LISTEN ${CHECKPOINT_CHANNEL}`);
      } catch (error) {
        client.end().catch(() => undefined);
        throw error;
      }
      current = client;
    };

    const scheduleReconnect = () => {
      if (stopped || timer) return;
      // eslint-disable-next-line @typescript-eslint/no-misused-promises -- the callback catches every failure itself (logs, retries)
      timer = setTimeout(async () => {
        timer = undefined;
        if (stopped) return;
        try {
          await connect();
          delay = RECONNECT_MIN_MS;
          if (stopped) {
            await current?.end().catch(() => undefined);
            return;
          }
          onChange();
        } catch (error) {
          delay = Math.min(delay * 2, RECONNECT_MAX_MS);
          this.logger?.warn({ err: error }, 'checkpoint listener could not reconnect; retrying');
          scheduleReconnect();
        }
      }, delay);
      timer.unref?.();
    };

    await connect();
    const check = setInterval(() => {
      const client = current;
      client?.query('SELECT 1').catch((error: Error) => {
        if (current !== client) return;
        // A timeout or a broken connection: end it; its 'end' event schedules the reconnect (and a re-read).
        this.logger?.warn({ err: error }, 'checkpoint listener connection did not answer; replacing it');
        current = null;
        client.removeAllListeners('notification');
        client.end().catch(() => undefined);
        if (!stopped) scheduleReconnect();
      });
    }, LISTENER_CHECK_MS);
    check.unref();
    return async () => {
      stopped = true;
      clearInterval(check);
      if (timer) clearTimeout(timer);
      timer = undefined;
      const client = current;
      current = null;
      if (client) {
        await client.query(`UNLISTEN ${CHECKPOINT_CHANNEL}`).catch(() => undefined);
        await client.end().catch(() => undefined);
      }
    };
  }

  async getStatus(): Promise<StorageStatus> {
    const { rows: streams } = await this.pool.query<{
      id: number;
      state: ReplicationStreamState;
      slot_name: string | null;
      snapshot_done: boolean;
      last_checkpoint: string | null;
      lsn: string | null;
      last_checkpoint_ts: Date | null;
      last_keepalive_ts: Date | null;
      last_fatal_error: string | null;
    }>(
      `SELECT id, state, slot_name, snapshot_done, last_checkpoint::text AS last_checkpoint, last_checkpoint_lsn::text AS lsn,
              last_checkpoint_ts, last_keepalive_ts, last_fatal_error
       FROM powersync.sync_rules WHERE state IN ('PROCESSING', 'ACTIVE', 'ERRORED') ORDER BY id DESC`
    );
    const { rows: counts } = await this.pool.query<{ total: string; pending: string; size: string }>(
      `SELECT (SELECT count(*) FROM powersync.write_checkpoints)::text AS total,
              (SELECT count(*) FROM powersync.write_checkpoints WHERE processed_at_lsn IS NULL)::text AS pending,
              (SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c
                 JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE n.nspname = 'powersync' AND c.relkind IN ('r', 'm', 'S'))::text AS size`
    );
    const count = counts[0]!;
    return {
      streams: streams.map((row) => ({
        id: row.id,
        state: row.state,
        slotName: row.slot_name,
        snapshotDone: row.snapshot_done,
        lastCheckpoint: row.last_checkpoint === null ? null : opId.fromPgInt8(row.last_checkpoint),
        lastCheckpointLsn: row.lsn === null ? null : normalizeLsn(row.lsn),
        lastCheckpointAt: row.last_checkpoint_ts,
        lastKeepaliveAt: row.last_keepalive_ts,
        lastError: row.last_fatal_error
      })),
      checkpointRequests: { total: Number(count.total), pending: Number(count.pending) },
      sizeBytes: Number(count.size)
    };
  }

  async close(): Promise<void> {
    await this.leadership.close();
    await this.db.destroy();
  }
}

export function createPostgresStorage(config: PostgresStorageConfig, logger?: Logger): PostgresBucketStorage {
  const pool = new pg.Pool(poolConfigFromStorageConfig(config));
  // An idle connection dropped by the server (restart, failover) must not crash the process; the pool reconnects.
  pool.on('error', (error) => logger?.warn({ err: error }, 'idle storage connection failed'));
  // pg-pool removes its error listener from a client while the client is checked out: a connection that dies then
  // (storage restart, failover), between two statements of a transaction, emitted an unhandled 'error' event, which
  // crashed the process. Now the statement that uses the dead client next fails (and is retried by its caller), and
  // the pool discards the client when it is released.
  pool.on('connect', (client) => {
    client.on('error', (error) => logger?.debug({ err: error }, 'storage connection failed'));
    // A query that timed out (a silently dead path, issue 12 item 4) takes its connection out of the pool.
    destroyConnectionOnQueryTimeout(client);
  });
  return new PostgresBucketStorage(pool, logger);
}

interface ServingRow {
  id: number;
  state: ReplicationStreamState;
  content: string;
  last_checkpoint: bigint | null;
  lsn: string | null;
}

/** The newest ACTIVE or ERRORED stream with its checkpoint (PROTOCOL §8.2). */
async function servingCheckpointRow(queryable: pg.Pool | pg.PoolClient): Promise<ServingRow | null> {
  const { rows } = await queryable.query<ServingRow>(
    `SELECT id, state, content, last_checkpoint, last_checkpoint_lsn::text AS lsn
     FROM powersync.sync_rules WHERE state IN ('ACTIVE', 'ERRORED') ORDER BY id DESC LIMIT 1`
  );
  return rows[0] ?? null;
}
