import { normalizeLsn, type Lsn } from '@syncpoint/codecs';
import type { BucketStorageBatch, Logger, ReplicationStreamStorage, SnapshotTableState } from '@syncpoint/service-core';
import type { SqliteRow } from '@syncpoint/sync-rules';
import pg from 'pg';
import type { PublishedTable } from './source-schema.js';
import type { TypeCatalog } from './type-catalog.js';
import { convertValue } from './value-conversion.js';

const SNAPSHOT_CHUNK_ROWS = 10_000;

export interface SnapshotProgress {
  table: string;
  rowsDone: number;
  estimatedTotal: number;
  rowsPerSecond: number;
  etaSeconds: number | null;
}

/** A row read through the text pool: every column as Postgres prints it. */
type TextRow = Record<string, string | null>;

async function rowsFrom(
  client: pg.ClientBase,
  result: pg.QueryResult<TextRow>,
  catalog: TypeCatalog
): Promise<SqliteRow[]> {
  await catalog.load(
    client,
    result.fields.map((field) => field.dataTypeID)
  );
  return result.rows.map((raw) => {
    const row: SqliteRow = {};
    for (const field of result.fields)
      row[field.name] = convertValue(raw[field.name] ?? null, field.dataTypeID, catalog);
    return row;
  });
}

/**
 * Copy one table into the batch in chunks of 10,000 rows (PROTOCOL §9). With a single-column key the copy is ordered by
 * it and resumes after the last copied key; otherwise it is one cursor scan that restarts from the beginning after a
 * crash (PUTs are idempotent for the client). Progress is saved after each flushed chunk. Returns the source position
 * after the copy: no checkpoint may be created before streaming has passed it.
 */
export async function snapshotTable(options: {
  db: pg.Pool;
  table: PublishedTable;
  batch: BucketStorageBatch;
  storage: ReplicationStreamStorage;
  catalog: TypeCatalog;
  progress: SnapshotTableState | undefined;
  logger: Logger;
  onProgress?: (progress: SnapshotProgress) => void;
  signal?: AbortSignal;
}): Promise<Lsn> {
  const { db, table, batch, storage, catalog, logger } = options;
  const qualified = `${pg.escapeIdentifier(table.schema)}.${pg.escapeIdentifier(table.name)}`;
  const client = await db.connect();
  try {
    const { rows: estimate } = await client.query<{ n: string }>(
      `SELECT greatest(reltuples, 0)::int8::text AS n FROM pg_class WHERE oid = $1`,
      [table.id]
    );
    const estimatedTotal = Number(estimate[0]?.n ?? 0);
    const started = Date.now();
    let rowsDone = options.progress?.rowsDone ?? 0;
    let lastKey = options.progress?.lastKey ?? null;
    const report = () => {
      const rate = rowsDone / Math.max(0.001, (Date.now() - started) / 1000);
      const progress: SnapshotProgress = {
        table: `${table.schema}.${table.name}`,
        rowsDone,
        estimatedTotal: Math.max(estimatedTotal, rowsDone),
        rowsPerSecond: Math.round(rate),
        etaSeconds: rate > 0 ? Math.max(0, Math.round((estimatedTotal - rowsDone) / rate)) : null
      };
      // A receiver of onProgress shows it (e.g. an updating line on a terminal); the log line is then only for debugging.
      if (options.onProgress) {
        logger.debug(progress, 'snapshot progress');
        options.onProgress(progress);
      } else logger.info(progress, 'snapshot progress');
    };
    const saveChunk = async (rows: SqliteRow[]) => {
      for (const row of rows) await batch.save({ kind: 'insert', table, after: row });
      await batch.flush();
      rowsDone += rows.length;
      await storage.saveSnapshotProgress({ table, done: false, rowsDone, lastKey });
      report();
    };

    const [keyColumn] = table.replicaIdColumns;
    if (table.replicaIdColumns.length === 1 && table.replicaIdentity !== 'f') {
      const key = pg.escapeIdentifier(keyColumn!);
      for (;;) {
        options.signal?.throwIfAborted();
        const result =
          lastKey === null
            ? await client.query<TextRow>(`SELECT * FROM ${qualified} ORDER BY ${key} LIMIT ${SNAPSHOT_CHUNK_ROWS}`)
            : await client.query<TextRow>(
                `SELECT * FROM ${qualified} WHERE ${key} > $1 ORDER BY ${key} LIMIT ${SNAPSHOT_CHUNK_ROWS}`,
                [JSON.parse(lastKey) as string]
              );
        if (result.rows.length === 0) break;
        // The key's text form goes back as a parameter; Postgres casts it to the column's type.
        lastKey = JSON.stringify(result.rows.at(-1)![keyColumn!]);
        await saveChunk(await rowsFrom(client, result, catalog));
        if (result.rows.length < SNAPSHOT_CHUNK_ROWS) break;
      }
    } else {
      rowsDone = 0;
      await client.query('BEGIN READ ONLY');
      try {
        await client.query(`DECLARE syncpoint_snapshot NO SCROLL CURSOR FOR SELECT * FROM ${qualified}`);
        for (;;) {
          options.signal?.throwIfAborted();
          const result = await client.query<TextRow>(`FETCH ${SNAPSHOT_CHUNK_ROWS} FROM syncpoint_snapshot`);
          if (result.rows.length === 0) break;
          await saveChunk(await rowsFrom(client, result, catalog));
        }
      } finally {
        await client.query('ROLLBACK').catch(() => {});
      }
    }
    const { rows } = await client.query<{ lsn: string }>('SELECT pg_current_wal_lsn() AS lsn');
    await storage.saveSnapshotProgress({ table, done: true, rowsDone, lastKey });
    logger.info(
      { table: `${table.schema}.${table.name}`, rows: rowsDone, seconds: (Date.now() - started) / 1000 },
      'table snapshot done'
    );
    return normalizeLsn(rows[0]!.lsn);
  } finally {
    client.release();
  }
}
