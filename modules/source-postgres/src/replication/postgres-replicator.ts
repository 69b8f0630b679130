import { randomBytes } from 'node:crypto';
import { compareLsn, normalizeLsn, ZERO_LSN, type Lsn } from '@syncpoint/codecs';
import type {
  BucketStorage,
  BucketStorageBatch,
  Logger,
  Replicator,
  ReplicationStream,
  ReplicationStreamStorage,
  SnapshotTableState,
  SourceTableRef
} from '@syncpoint/service-core';
import type { SqliteRow } from '@syncpoint/sync-rules';
import pg from 'pg';
import { MARKER_CONTENT, MARKER_PREFIX, markerSql } from '../replication-head.js';
import { sourceClientConfig } from '../source-connection.js';
import type { PostgresSourceConfig } from '../source-config.js';
import { snapshotTable, type SnapshotProgress } from './initial-snapshot.js';
import { decodePgoutput, type PgoutputMessage, type TupleValue } from './pgoutput-decoder.js';
import { ReplicationConnection } from './replication-connection.js';
import {
  checkSourcePreconditions,
  PUBLICATION_NAME,
  publishedTables,
  tableIsReplicated,
  type PublishedTable
} from './source-schema.js';
import { createTextPool } from './text-pool.js';
import { TypeCatalog } from './type-catalog.js';
import { convertTuple } from './value-conversion.js';

/** A problem replication cannot get past by retrying soon (missing publication, wal_level …). */
export class SourceNotReadyError extends Error {
  constructor(readonly problems: string[]) {
    super(`The source is not ready for replication:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
    this.name = 'SourceNotReadyError';
  }
}

interface RelationInfo {
  table: SourceTableRef;
  columns: Array<{ name: string; typeOid: number; isKey: boolean }>;
  replicated: boolean;
}

const STATUS_INTERVAL_MS = 10_000;
const MAX_BACKOFF_MS = 30_000;
/** Streaming this long counts as recovered: the next failure waits the shortest backoff again. */
const HEALTHY_STREAMING_MS = 10_000;

/**
 * `no_checkpoint_before` while a re-snapshot over served data is unfinished (see `replicate()`): the highest LSN, so no
 * checkpoint can be created, and a restart recognises the unfinished re-snapshot and does it again.
 */
const RESNAPSHOT_PENDING = normalizeLsn('FFFFFFFF/FFFFFFFF');

/**
 * How long the replication connection may stay silent before it counts as dead: twice the heartbeat interval (our
 * heartbeat marker makes the source send something at least that often, and silence also makes us ask for a reply),
 * within 15–60 s (60 s is Postgres' default wal_sender_timeout, the same judgement from the server's side).
 */
function replicationTimeoutMs(heartbeatIntervalSeconds: number): number {
  return Math.min(60_000, Math.max(15_000, 2 * heartbeatIntervalSeconds * 1000));
}

export interface PostgresReplicatorOptions {
  config: PostgresSourceConfig;
  storage: BucketStorage;
  logger: Logger;
  onAlive?: () => void;
  onSnapshotProgress?: (progress: SnapshotProgress) => void;
  /** How often the set of streams to replicate is re-read (new deployments, stopped streams). */
  pollIntervalMs?: number;
}

/**
 * The replication process for a Postgres source (PROTOCOL §5.2, §9): one job per PROCESSING/ACTIVE replication
 * stream, each with its own slot: snapshot, then pgoutput streaming into storage batches, acknowledging the slot only
 * after storage has committed. Jobs retry with backoff on errors and log why.
 */
export class PostgresReplicator implements Replicator {
  private readonly jobs = new Map<number, StreamReplicationJob>();
  private readonly abort = new AbortController();
  private supervisor: Promise<void> | undefined;

  constructor(private readonly options: PostgresReplicatorOptions) {}

  start(): void {
    this.supervisor ??= this.supervise();
  }

  private async supervise(): Promise<void> {
    const { storage, logger } = this.options;
    while (!this.abort.signal.aborted) {
      try {
        const streams = await storage.getReplicatingStreams();
        const wanted = new Set(streams.map((stream) => stream.id));
        for (const stream of streams) {
          if (!this.jobs.has(stream.id)) {
            const job = new StreamReplicationJob(stream, this.options);
            this.jobs.set(stream.id, job);
            job.start();
          }
        }
        for (const [id, job] of this.jobs) {
          if (!wanted.has(id)) {
            this.jobs.delete(id);
            await job.stop({ dropSlot: true });
          }
        }
        this.options.onAlive?.();
      } catch (error) {
        logger.warn({ err: error }, 'could not read the replication streams; retrying');
      }
      await sleep(this.options.pollIntervalMs ?? 5_000, this.abort.signal);
    }
  }

  async stop(): Promise<void> {
    this.abort.abort();
    await this.supervisor;
    await Promise.all([...this.jobs.values()].map((job) => job.stop({ dropSlot: false })));
    this.jobs.clear();
  }
}

class StreamReplicationJob {
  private readonly abort = new AbortController();
  private running: Promise<void> | undefined;
  private connection: ReplicationConnection | undefined;
  /** When the current attempt received its first replication message; null before. */
  private streamingSince: number | null = null;
  /** Replaced after a failed attempt: its connections may be stuck on a network path that died silently. */
  private db: pg.Pool;
  private readonly logger: Logger;
  private readonly catalog = new TypeCatalog();

  constructor(
    private readonly stream: ReplicationStream,
    private readonly options: PostgresReplicatorOptions
  ) {
    this.db = createTextPool(sourceClientConfig(options.config), 3);
    this.logger = options.logger.child({ stream_id: stream.id });
  }

  start() {
    this.running = this.runWithRetries();
  }

  async stop({ dropSlot }: { dropSlot: boolean }) {
    this.abort.abort();
    await this.connection?.close();
    await this.running;
    if (dropSlot) {
      const state = await (
        await this.options.storage.getStreamStorage(this.stream)
      )
        .getReplicationState()
        .catch(() => null);
      if (state?.slotName) {
        await this.db
          .query('SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1', [
            state.slotName
          ])
          .then(() => this.logger.info({ slot: state.slotName }, 'dropped the slot of a stopped stream'))
          .catch((error) =>
            this.logger.warn({ err: error, slot: state.slotName }, 'could not drop the slot of a stopped stream')
          );
      }
    }
    await this.db.end().catch(() => {});
  }

  private async runWithRetries() {
    let backoff = 1_000;
    while (!this.abort.signal.aborted) {
      const started = Date.now();
      this.streamingSince = null;
      try {
        await this.replicate();
      } catch (error) {
        if (this.abort.signal.aborted) break;
        // It streamed fine for a while before this failure: a new fault, so start over with a short wait (otherwise a
        // few faults an hour apart, each recovered in seconds, would grow the wait to its maximum).
        if (this.streamingSince !== null && Date.now() - this.streamingSince > HEALTHY_STREAMING_MS) backoff = 1_000;
        const message = error instanceof Error ? error.message : String(error);
        this.logger.error({ err: error, retry_in_ms: backoff }, `replication stopped: ${message}`);
        if (error instanceof SourceNotReadyError) {
          // Record the error under the stream's CURRENT state: `this.stream` is as it was when the job started
          // (PROCESSING for a new deployment), and writing that back demoted an ACTIVE stream, so clients lost it.
          const streams = await this.options.storage.getReplicatingStreams().catch(() => []);
          const state = streams.find((stream) => stream.id === this.stream.id)?.state ?? this.stream.state;
          await this.options.storage.setStreamState(this.stream.id, state, message).catch(() => {});
        }
        // A fresh pool for the next attempt; the old one ends in the background (a query stuck on a silently dead
        // connection only ends at its query timeout, and must not hold up the retry).
        const stale = this.db;
        this.db = createTextPool(sourceClientConfig(this.options.config), 3);
        void stale.end().catch(() => {});
      } finally {
        await this.connection?.close();
        this.connection = undefined;
      }
      if (Date.now() - started > 60_000) backoff = 1_000; // it ran fine for a while: start over
      await sleep(backoff, this.abort.signal);
      backoff = Math.min(backoff * 2, MAX_BACKOFF_MS);
    }
  }

  private async replicate() {
    const storage = await this.options.storage.getStreamStorage(this.stream);
    const problems = await checkSourcePreconditions(this.db, storage.syncRules);
    if (problems.length > 0) throw new SourceNotReadyError(problems.map((problem) => problem.message));

    let state = await storage.getReplicationState();
    const slot = state.slotName ? await this.slotStatus(state.slotName) : null;
    if (!state.slotName || !slot || slot.walStatus === 'lost') {
      if (state.snapshotDone) {
        // PSYNC_S1146: changes since the slot's last confirmed position are gone, so the tables are copied again. Clients
        // are being served this stream's last checkpoint: clearing its data would serve them empty or half-copied
        // buckets until the copy ends. Instead, first block new checkpoints (durably, so a restart resumes the
        // re-snapshot), then write the copy on top of the existing data; see `resnapshot()`.
        this.logger.warn(
          { slot: state.slotName, wal_status: slot?.walStatus ?? 'missing' },
          'the replication slot is gone or lost its WAL (PSYNC_S1146): re-snapshotting into a new slot; ' +
            'clients keep the last checkpoint until the copy is complete'
        );
        await storage.markSnapshotDone(RESNAPSHOT_PENDING);
        if (slot && state.slotName) await this.dropSlot(state.slotName);
      } else {
        // No checkpoint was ever served from an unfinished snapshot: start it over.
        await storage.clear();
      }
      // The slot comes first: every change after its start is streamed, so the snapshot may read a moving table.
      const slotName = `${this.options.config.slot_name_prefix}${this.stream.id}_${randomBytes(2).toString('hex')}`;
      await this.db.query(`SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, [slotName]);
      await storage.setSlotName(slotName);
      this.logger.info({ slot: slotName }, 'created replication slot');
      state = await storage.getReplicationState();
    }
    if (!state.snapshotDone) await this.snapshot(storage);
    else if (state.noCheckpointBefore === RESNAPSHOT_PENDING) await this.resnapshot(storage);
    else await this.holdCheckpointsUntilCaughtUp(storage, state.noCheckpointBefore);
    const slotName = state.slotName ?? (await storage.getReplicationState()).slotName!;
    await this.releaseAbandonedSlot(slotName);
    await this.streamChanges(storage, slotName);
  }

  /**
   * Another walsender may still hold the slot: our previous connection that died silently (a stalled network path:
   * the server only notices at its wal_sender_timeout, 60 s by default, or never when 0), or the connection of a
   * deposed leader that is paused (issue 12: SIGSTOP, a frozen VM). Meanwhile every START_REPLICATION fails with
   * "replication slot … is active". This process holds replication leadership, and storage refuses every write of a
   * deposed leader (epoch fencing), so whoever holds the slot now is not the leader: terminate it at once and wait for
   * the slot to be free.
   */
  private async releaseAbandonedSlot(slotName: string) {
    const { rows } = await this.db.query<{ pid: number; silent_seconds: string }>(
      `SELECT r.pid, extract(epoch FROM now() - coalesce(r.reply_time, r.backend_start))::int8::text AS silent_seconds
       FROM pg_replication_slots s JOIN pg_stat_replication r ON r.pid = s.active_pid
       WHERE s.slot_name = $1`,
      [slotName]
    );
    if (rows.length === 0) return;
    const holder = rows[0]!;
    this.logger.warn(
      { slot: slotName, pid: holder.pid, silent_seconds: Number(holder.silent_seconds) },
      'the slot is held by another walsender (a silently dead connection or a deposed leader); terminating it'
    );
    await this.db.query('SELECT pg_terminate_backend($1)', [holder.pid]);
    const deadline = Date.now() + 10_000;
    while (Date.now() < deadline && !this.abort.signal.aborted) {
      const { rows: active } = await this.db.query(
        'SELECT 1 FROM pg_replication_slots WHERE slot_name = $1 AND active',
        [slotName]
      );
      if (active.length === 0) return;
      await sleep(100, this.abort.signal);
    }
  }

  /** Best effort: a lost slot holds no useful WAL but still counts against max_replication_slots. */
  private async dropSlot(slotName: string) {
    await this.db
      .query(
        'SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1 AND NOT active',
        [slotName]
      )
      .catch((error) => this.logger.warn({ err: error, slot: slotName }, 'could not drop the lost slot'));
  }

  private async slotStatus(slotName: string): Promise<{ walStatus: string | null } | null> {
    const { rows } = await this.db.query<{ wal_status: string | null }>(
      'SELECT wal_status FROM pg_replication_slots WHERE slot_name = $1',
      [slotName]
    );
    return rows[0] ? { walStatus: rows[0].wal_status } : null;
  }

  private async snapshot(storage: ReplicationStreamStorage) {
    const state = await storage.getReplicationState();
    const tables = await publishedTables(this.db, storage.syncRules);
    this.logger.info({ tables: tables.map((t) => `${t.schema}.${t.name}`) }, 'initial snapshot starting');
    await storage.startBatch(async (batch) => {
      const copyEnd = await this.copyTables(storage, batch, tables, (table) =>
        state.tables.find((entry) => entry.table.id === table.id)
      );
      await this.markCopyDone(storage, copyEnd);
      // Blocked until streaming passes the snapshot's end; it only flushes the snapshot's ops.
      await batch.commit(ZERO_LSN);
    });
    await this.emitMarker();
    this.logger.info('initial snapshot done; streaming');
  }

  /** Copy `tables` (each resumed from its saved progress; finished ones skipped); returns the greatest end LSN. */
  private async copyTables(
    storage: ReplicationStreamStorage,
    batch: BucketStorageBatch,
    tables: PublishedTable[],
    progressOf: (table: PublishedTable) => SnapshotTableState | undefined
  ): Promise<Lsn> {
    let copyEnd: Lsn = ZERO_LSN;
    for (const table of tables) {
      const progress = progressOf(table);
      if (progress?.done) continue;
      const end = await snapshotTable({
        db: this.db,
        table,
        batch,
        storage,
        catalog: this.catalog,
        progress,
        logger: this.logger,
        onProgress: this.options.onSnapshotProgress,
        signal: this.abort.signal
      });
      if (compareLsn(end, copyEnd) > 0) copyEnd = end;
      this.options.onAlive?.();
    }
    return copyEnd;
  }

  /** No checkpoint until streaming has passed both the copy's end and the source position now. */
  private async markCopyDone(storage: ReplicationStreamStorage, copyEnd: Lsn) {
    const { rows } = await this.db.query<{ lsn: string }>('SELECT pg_current_wal_lsn() AS lsn');
    const now = normalizeLsn(rows[0]!.lsn);
    await storage.markSnapshotDone(compareLsn(now, copyEnd) > 0 ? now : copyEnd);
  }

  /**
   * A full copy on top of data that clients are being served (after PSYNC_S1146). Every row stored so far leaves its
   * buckets (REMOVE ops) and every table is copied again (PUT ops). All these ops lie above the served checkpoint, which
   * stays valid (its checksums and data only count ops up to it), and no checkpoint is created before streaming has
   * passed the end of the copy: clients go from the old state straight to a complete new one. Interrupted, it starts
   * over: `no_checkpoint_before` stays RESNAPSHOT_PENDING until the copy is complete.
   */
  private async resnapshot(storage: ReplicationStreamStorage) {
    const state = await storage.getReplicationState();
    const tables = await publishedTables(this.db, storage.syncRules);
    // Tables copied before (also ones unpublished or dropped since) and the ones published now.
    const stored = new Map<string, SourceTableRef>(state.tables.map((entry) => [entry.table.id, entry.table]));
    for (const table of tables) stored.set(table.id, table);
    this.logger.info({ tables: tables.map((t) => `${t.schema}.${t.name}`) }, 're-snapshot starting');
    await storage.startBatch(async (batch) => {
      await batch.truncate([...stored.values()]);
      const copyEnd = await this.copyTables(storage, batch, tables, () => undefined); // a copy from scratch
      await batch.flush();
      await this.markCopyDone(storage, copyEnd);
    });
    await this.emitMarker();
    this.logger.info('re-snapshot done; streaming');
  }

  /**
   * A predecessor that died mid-transaction may have flushed part of that transaction's ops; storage includes every
   * flushed op (keepalive_op) in the next checkpoint. Replay restarts at the slot's confirmed position, which can be
   * before commits that precede that transaction, and a checkpoint at one of them would show the unfinished
   * transaction half. So, as after a snapshot, no checkpoint before the source position of this restart: by then every
   * transaction committed before the crash has been replayed whole. The marker moves an idle source past it.
   */
  private async holdCheckpointsUntilCaughtUp(storage: ReplicationStreamStorage, noCheckpointBefore: Lsn | null) {
    const { rows } = await this.db.query<{ lsn: string }>('SELECT pg_current_wal_lsn() AS lsn');
    const position = normalizeLsn(rows[0]!.lsn);
    if (noCheckpointBefore === null || compareLsn(position, noCheckpointBefore) > 0)
      await storage.markSnapshotDone(position);
    await this.emitMarker();
  }

  async emitMarker() {
    const { rows } = await this.db.query<{ server_version_num: string }>('SHOW server_version_num');
    await this.db.query(markerSql(Number(rows[0]!.server_version_num)));
  }

  private async streamChanges(storage: ReplicationStreamStorage, slotName: string) {
    const timeoutMs = replicationTimeoutMs(this.options.config.heartbeat_interval_seconds);
    const connection = new ReplicationConnection(sourceClientConfig(this.options.config), {
      timeoutMs,
      probeAfterMs: timeoutMs / 3
    });
    this.connection = connection;
    // stop() closes the connection it finds; one made after it (stop came during the snapshot) must not stream on.
    if (this.abort.signal.aborted) return connection.close();
    await connection.connect();
    connection.startReplication(slotName, ZERO_LSN, {
      proto_version: '1',
      publication_names: PUBLICATION_NAME,
      messages: 'true'
    });
    this.logger.info({ slot: slotName }, 'streaming changes');

    let committed: Lsn | null = null;
    let heartbeatInFlight = false;
    const heartbeat = setInterval(() => {
      // One at a time: markers stuck on a dead connection must not pile up and take the whole pool.
      if (heartbeatInFlight) return;
      heartbeatInFlight = true;
      this.emitMarker()
        .catch((error) => this.logger.warn({ err: error }, 'heartbeat marker failed'))
        .finally(() => (heartbeatInFlight = false));
    }, this.options.config.heartbeat_interval_seconds * 1000);
    const status = setInterval(() => {
      if (committed) connection.acknowledge(committed);
    }, STATUS_INTERVAL_MS);
    try {
      await storage.startBatch((batch) =>
        this.consume(connection, storage, batch, (lsn) => {
          committed = lsn;
          connection.acknowledge(lsn);
          this.options.onAlive?.();
        })
      );
    } finally {
      clearInterval(heartbeat);
      clearInterval(status);
    }
  }

  /**
   * Apply the stream to the batch. Storage commits once per burst: at the last transaction commit (or marker) when no
   * further message is already waiting, so many small transactions share one storage commit (PROTOCOL §5.2).
   */
  private async consume(
    connection: ReplicationConnection,
    storage: ReplicationStreamStorage,
    batch: BucketStorageBatch,
    onCommitted: (lsn: Lsn) => void
  ) {
    const relations = new Map<number, RelationInfo>();
    let inTransaction = false;
    let transactionHasMarker = false;
    let pending = null as { lsn: Lsn; forceCheckpoint: boolean } | null;
    let lastCommitted = null as Lsn | null;

    for (;;) {
      const event = await connection.next();
      this.streamingSince ??= Date.now();
      if (event === null) return;
      if (event.kind === 'keepalive') {
        this.options.onAlive?.();
        // Idle and nothing buffered: everything before the server's WAL end is processed.
        if (!inTransaction && pending === null && event.walEnd > (lastCommitted ?? ZERO_LSN)) {
          lastCommitted = event.walEnd;
          onCommitted(event.walEnd);
        } else if (event.replyRequested && lastCommitted) {
          connection.acknowledge(lastCommitted);
        }
      } else {
        const message = decodePgoutput(event.data);
        switch (message.tag) {
          case 'begin':
            inTransaction = true;
            transactionHasMarker = false;
            break;
          case 'relation':
            relations.set(
              message.relationId,
              await this.relationInfo(message, storage, relations.get(message.relationId), batch)
            );
            break;
          case 'insert':
          case 'update':
          case 'delete':
            await this.applyRowChange(message, relations, batch);
            break;
          case 'truncate': {
            const tables = message.relationIds
              .map((id) => relations.get(id))
              .filter((r): r is RelationInfo => r?.replicated === true);
            if (tables.length > 0) await batch.truncate(tables.map((r) => r.table));
            break;
          }
          case 'message':
            if (message.prefix === MARKER_PREFIX && Buffer.from(message.content).toString() === MARKER_CONTENT) {
              if (message.transactional) transactionHasMarker = true;
              else pending = { lsn: maxLsn(pending?.lsn, message.lsn), forceCheckpoint: true };
            }
            break;
          case 'commit':
            inTransaction = false;
            pending = {
              lsn: maxLsn(pending?.lsn, message.endLsn),
              forceCheckpoint: (pending?.forceCheckpoint ?? false) || transactionHasMarker
            };
            break;
          default:
            break;
        }
      }
      if (!inTransaction && pending !== null && connection.queued === 0) {
        if (pending.forceCheckpoint) await batch.keepalive(pending.lsn);
        else await batch.commit(pending.lsn);
        lastCommitted = pending.lsn;
        onCommitted(pending.lsn);
        pending = null;
      }
    }
  }

  private async relationInfo(
    message: Extract<PgoutputMessage, { tag: 'relation' }>,
    storage: ReplicationStreamStorage,
    previous: RelationInfo | undefined,
    batch: BucketStorageBatch
  ): Promise<RelationInfo> {
    await this.catalog.load(
      this.db,
      message.columns.map((column) => column.typeOid)
    );
    const replicated = tableIsReplicated(storage.syncRules, { schema: message.schema, name: message.name });
    const table: PublishedTable = {
      id: String(message.relationId),
      schema: message.schema,
      name: message.name,
      replicaIdentity: ({ default: 'd', index: 'i', full: 'f', nothing: 'n' } as const)[message.replicaIdentity],
      replicaIdColumns: message.columns.filter((column) => column.isKey).map((column) => column.name)
    };
    // Renamed out of the sync rules: its rows leave every bucket. Without an earlier relation message in this session,
    // the snapshot record tells whether the table was replicated (its rows came from the snapshot).
    const renamedOut =
      !replicated &&
      (previous !== undefined
        ? previous.replicated
        : (await storage.getReplicationState()).tables.some((entry) => entry.table.id === table.id && entry.done));
    if (renamedOut) {
      this.logger.warn(
        { table: `${message.schema}.${message.name}` },
        'table no longer matches the sync rules; removing its rows'
      );
      await batch.truncate([table]);
      // Not "done" any more: renamed back in (even after a restart), it is copied again.
      await storage.saveSnapshotProgress({ table, done: false, rowsDone: 0, lastKey: null });
    }
    if (replicated && !previous?.replicated) {
      const state = await storage.getReplicationState();
      const known = state.tables.find((entry) => entry.table.id === table.id && entry.done);
      // Renamed back in: its rows were removed when it left the sync rules, so it is copied again even if known.
      if (!known || previous !== undefined) {
        // A table renamed into the sync rules or newly published (its rows from before it was published are not in
        // the stream): copy its current rows, then keep streaming.
        this.logger.info({ table: `${table.schema}.${table.name}` }, 'new table for the sync rules; snapshotting it');
        await snapshotTable({
          db: this.db,
          table,
          batch,
          storage,
          catalog: this.catalog,
          progress: undefined,
          logger: this.logger,
          signal: this.abort.signal
        });
      }
    }
    if (replicated && table.replicaIdColumns.length === 0) {
      throw new SourceNotReadyError([
        `table ${table.schema}.${table.name} has no replica identity: ALTER TABLE ${table.schema}.${table.name} REPLICA IDENTITY FULL, or add a primary key`
      ]);
    }
    return {
      table,
      replicated,
      columns: message.columns.map((column) => ({ name: column.name, typeOid: column.typeOid, isKey: column.isKey }))
    };
  }

  private async applyRowChange(
    message: Extract<PgoutputMessage, { tag: 'insert' | 'update' | 'delete' }>,
    relations: Map<number, RelationInfo>,
    batch: BucketStorageBatch
  ) {
    const relation = relations.get(message.relationId);
    if (!relation) throw new Error(`pgoutput sent a row for unknown relation ${message.relationId}`);
    if (!relation.replicated) return;
    const toRow = async (values: TupleValue[]): Promise<SqliteRow> => {
      const { row, unchangedToast } = convertTuple(relation.columns, values, this.catalog);
      if (unchangedToast.length > 0) Object.assign(row, await this.readToastedColumns(relation, row, unchangedToast));
      return row;
    };
    const keyOf = (values: TupleValue[]): SqliteRow => {
      const { row } = convertTuple(relation.columns, values, this.catalog);
      return Object.fromEntries(relation.table.replicaIdColumns.map((column) => [column, row[column] ?? null]));
    };
    if (message.tag === 'insert') {
      await batch.save({ kind: 'insert', table: relation.table, after: await toRow(message.new) });
    } else if (message.tag === 'update') {
      const after = await toRow(message.new);
      const oldValues = message.key ?? message.old;
      const beforeKey = oldValues ? keyOf(oldValues) : undefined;
      const keyChanged =
        beforeKey !== undefined &&
        relation.table.replicaIdColumns.some((column) => !sameValue(beforeKey[column], after[column]));
      await batch.save({ kind: 'update', table: relation.table, after, ...(keyChanged ? { beforeKey } : {}) });
    } else {
      const oldValues = message.key ?? message.old;
      if (!oldValues) throw new Error(`delete on ${relation.table.schema}.${relation.table.name} without a key`);
      await batch.save({ kind: 'delete', table: relation.table, beforeKey: keyOf(oldValues) });
    }
  }

  /**
   * pgoutput does not resend unchanged TOASTed values. Read them from the source by key: the value is then the current
   * one rather than the one at this commit, and any later change to it streams in after this one.
   */
  private async readToastedColumns(relation: RelationInfo, row: SqliteRow, columns: string[]): Promise<SqliteRow> {
    const keys = relation.table.replicaIdColumns;
    const { rows, fields } = await this.db.query<Record<string, string | null>>(
      `SELECT ${columns.map((c) => pg.escapeIdentifier(c)).join(', ')} FROM ${pg.escapeIdentifier(relation.table.schema)}.${pg.escapeIdentifier(relation.table.name)}
        WHERE ${keys.map((k, i) => `${pg.escapeIdentifier(k)}::text = $${i + 1}`).join(' AND ')}`,
      keys.map((k) => textOf(row[k] ?? null))
    );
    if (!rows[0]) return {};
    const byName = new Map(relation.columns.map((column) => [column.name, column.typeOid]));
    const { row: values } = convertTuple(
      fields.map((field) => ({ name: field.name, typeOid: byName.get(field.name) ?? field.dataTypeID, isKey: false })),
      fields.map((field) => rows[0]![field.name] ?? null),
      this.catalog
    );
    return values;
  }
}

function textOf(value: SqliteRow[string]): string | null {
  if (value === null) return null;
  if (value instanceof Uint8Array) return '\\x' + Buffer.from(value).toString('hex');
  return String(value);
}

function sameValue(a: SqliteRow[string] | undefined, b: SqliteRow[string] | undefined): boolean {
  if (a instanceof Uint8Array && b instanceof Uint8Array) return Buffer.from(a).equals(Buffer.from(b));
  return a === b;
}

function maxLsn(a: Lsn | undefined, b: Lsn): Lsn {
  return a !== undefined && compareLsn(a, b) > 0 ? a : b;
}

/** Wait `ms`, or less when `signal` aborts; the abort listener is removed either way (no listener leak per poll). */
function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const onAbort = () => {
      clearTimeout(timer);
      resolve();
    };
    const timer = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal.addEventListener('abort', onAbort, { once: true });
  });
}
