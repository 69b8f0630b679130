import { normalizeLsn, type Lsn } from '@syncpoint/codecs';
import type { Logger, ReplicationHeadCallbackResult, ReplicationSource, SlotStatus } from '@syncpoint/service-core';
import pg from 'pg';
import { sourceClientConfig, withRetries } from './source-connection.js';
import type { PostgresSourceConfig } from './source-config.js';

/** Prefix and content of the marker message (PROTOCOL §5.1, §13). */
export const MARKER_PREFIX = 'powersync';
export const MARKER_CONTENT = 'ping';

/**
 * The SQL that emits a marker and makes it visible to the WAL sender at once.
 *
 * The reference emits a non-transactional message, which sits in WAL buffers until the WAL writer flushes
 * them (wal_writer_delay, 200 ms by default) because logical decoding only reads flushed WAL. Instead:
 * - Postgres ≥ 17: the non-transactional message with its `flush` argument set, which flushes immediately.
 * - Postgres 14–16 (no `flush` argument): a transactional message in its own autocommit transaction; the
 *   commit of a transaction with an xid flushes WAL (synchronous_commit) and the decoder sees a committed
 *   transaction containing the marker.
 */
export function markerSql(serverVersionNum: number): string {
  return serverVersionNum >= 170000
    ? `SELECT pg_logical_emit_message(false, '${MARKER_PREFIX}', '${MARKER_CONTENT}', true)`
    : `SELECT pg_logical_emit_message(true, '${MARKER_PREFIX}', '${MARKER_CONTENT}')`;
}

const HEAD_QUERY_TIMEOUT_MS = 15_000;

export class PostgresReplicationSource implements ReplicationSource {
  private serverVersion: Promise<number> | undefined;

  constructor(
    readonly pool: pg.Pool,
    private readonly logger?: Logger
  ) {}

  async currentHead(): Promise<Lsn> {
    const { rows } = await withRetries(() => this.pool.query<{ lsn: string }>('SELECT pg_current_wal_lsn() AS lsn'));
    return normalizeLsn(rows[0]!.lsn);
  }

  async createReplicationHead<T>(callback: (head: Lsn) => Promise<ReplicationHeadCallbackResult<T>>): Promise<T> {
    // pg_current_wal_lsn() rather than the LSN the message function returns, which is wrong on some
    // managed Postgres variants (PROTOCOL §5.1).
    const head = await this.currentHead();
    const { response, shouldAdvance } = await callback(head);
    // The marker must follow the stored mapping, or replication could pass it before the mapping exists.
    if (shouldAdvance) await this.emitMarker();
    return response;
  }

  async slotStatus(slotName: string): Promise<SlotStatus | null> {
    const { rows } = await withRetries(() =>
      this.pool.query<{
        active: boolean;
        confirmed_flush_lsn: string | null;
        retained: string | null;
        wal_status?: string | null;
      }>(
        `SELECT *, pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::int8::text AS retained
         FROM pg_replication_slots WHERE slot_name = $1`,
        [slotName]
      )
    );
    const row = rows[0];
    if (!row) return null;
    return {
      name: slotName,
      active: row.active,
      confirmedFlushLsn: row.confirmed_flush_lsn === null ? null : normalizeLsn(row.confirmed_flush_lsn),
      retainedWalBytes: row.retained === null ? null : Number(row.retained),
      walStatus: row.wal_status ?? null
    };
  }

  /** Emit the `powersync`/`ping` marker, flushed so the WAL sender sees it without waiting for the WAL writer. */
  async emitMarker(): Promise<void> {
    const sqlText = markerSql(await this.serverVersionNum());
    await withRetries(() => this.pool.query(sqlText));
  }

  serverVersionNum(): Promise<number> {
    this.serverVersion ??= withRetries(() => this.pool.query<{ server_version_num: string }>('SHOW server_version_num'))
      .then(({ rows }) => Number(rows[0]!.server_version_num))
      .catch((error) => {
        this.serverVersion = undefined;
        throw error;
      });
    return this.serverVersion;
  }

  async close(): Promise<void> {
    await this.pool.end();
  }
}

export function createPostgresSource(config: PostgresSourceConfig, logger?: Logger): PostgresReplicationSource {
  // Head reads and markers are tiny: a much shorter limit than SOURCE_QUERY_TIMEOUT_MS, so that a checkpoint request on
  // a connection whose peer vanished fails over (withRetries, on a new connection) instead of hanging.
  const pool = new pg.Pool({
    ...sourceClientConfig(config),
    max: config.max_pool_size,
    query_timeout: HEAD_QUERY_TIMEOUT_MS
  });
  pool.on('error', (error) => logger?.warn({ err: error }, 'idle source connection failed'));
  return new PostgresReplicationSource(pool, logger);
}
