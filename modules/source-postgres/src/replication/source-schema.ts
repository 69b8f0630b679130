import type { SourceTableRef } from '@syncpoint/service-core';
import type { SyncRules } from '@syncpoint/sync-rules';
import type pg from 'pg';

export const PUBLICATION_NAME = 'powersync';

export interface PublishedTable extends SourceTableRef {
  /** pg_class.relreplident: d(efault, primary key), i(ndex), f(ull), n(othing). */
  replicaIdentity: 'd' | 'i' | 'f' | 'n';
}

/**
 * Catalog queries return one JSON document, so they read the same whatever type parsers the pool uses (the replicator's
 * pool hands back raw text for every type).
 */
async function queryJson<T>(db: pg.ClientBase | pg.Pool, sql: string, params: unknown[] = []): Promise<T> {
  const { rows } = await db.query<{ doc: string | object }>(`SELECT (${sql})::text AS doc`, params);
  const doc = rows[0]!.doc;
  return (typeof doc === 'string' ? JSON.parse(doc) : doc) as T;
}

/** One problem with the source, with what to do about it. */
export interface SourceProblem {
  message: string;
}

/**
 * Source preconditions (PROTOCOL §9): wal_level, the publication and what it publishes, replication privilege, and a
 * usable replica identity for every table the sync rules use. Returns every problem found, not just the first.
 */
export async function checkSourcePreconditions(
  db: pg.ClientBase | pg.Pool,
  syncRules: SyncRules
): Promise<SourceProblem[]> {
  const problems: SourceProblem[] = [];
  const settings = await queryJson<{ wal_level: string; version: string; role: string; replication: boolean }>(
    db,
    `SELECT json_build_object('wal_level', current_setting('wal_level'), 'version', current_setting('server_version_num'),
       'role', current_user, 'replication', (SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user))`
  );
  if (settings.wal_level !== 'logical') {
    problems.push({
      message: `wal_level must be set to 'logical' (it is '${settings.wal_level}'): ALTER SYSTEM SET wal_level = logical; then restart Postgres`
    });
  }
  if (Number(settings.version) < 140000) {
    problems.push({ message: `Postgres ${settings.version} is not supported: Syncpoint needs Postgres 14 or later` });
  }
  if (!settings.replication) {
    problems.push({
      message: `the role ${settings.role} lacks REPLICATION: ALTER ROLE ${settings.role} WITH REPLICATION`
    });
  }
  const pub = await queryJson<{
    pubinsert: boolean;
    pubupdate: boolean;
    pubdelete: boolean;
    pubtruncate: boolean;
    pubviaroot: boolean;
  } | null>(
    db,
    `SELECT row_to_json(p) FROM (SELECT pubinsert, pubupdate, pubdelete, pubtruncate, pubviaroot FROM pg_publication WHERE pubname = $1) p`,
    [PUBLICATION_NAME]
  );
  if (!pub) {
    problems.push({
      message: `publication "${PUBLICATION_NAME}" does not exist (PSYNC_S1141): CREATE PUBLICATION ${PUBLICATION_NAME} FOR ALL TABLES`
    });
    return problems;
  }
  if (!pub.pubinsert || !pub.pubupdate || !pub.pubdelete || !pub.pubtruncate) {
    problems.push({
      message: `publication "${PUBLICATION_NAME}" must publish insert, update, delete and truncate (PSYNC_S1142): ALTER PUBLICATION ${PUBLICATION_NAME} SET (publish = 'insert, update, delete, truncate')`
    });
  }
  if (pub.pubviaroot) {
    problems.push({
      message: `publication "${PUBLICATION_NAME}" must not use publish_via_partition_root (PSYNC_S1143)`
    });
  }
  const tables = await publishedTables(db, syncRules);
  for (const wanted of syncRules.sourceTables()) {
    if (wanted.wildcard) continue;
    if (!tables.some((table) => table.schema === wanted.schema && table.name === wanted.name)) {
      const exists = await queryJson<boolean>(
        db,
        `SELECT EXISTS (SELECT 1 FROM pg_tables WHERE schemaname = $1 AND tablename = $2)`,
        [wanted.schema, wanted.name]
      );
      problems.push({
        message: !exists
          ? `table ${wanted.schema}.${wanted.name} used by the sync rules does not exist`
          : `table ${wanted.schema}.${wanted.name} is not in publication "${PUBLICATION_NAME}": ALTER PUBLICATION ${PUBLICATION_NAME} ADD TABLE ${wanted.schema}.${wanted.name}`
      });
    }
  }
  for (const table of tables) {
    if (table.replicaIdentity === 'n' || table.replicaIdColumns.length === 0) {
      problems.push({
        message: `table ${table.schema}.${table.name} has no primary key or usable replica identity: ALTER TABLE ${table.schema}.${table.name} ADD PRIMARY KEY (...), or ALTER TABLE ${table.schema}.${table.name} REPLICA IDENTITY FULL`
      });
    }
  }
  return problems;
}

/** Whether rows of this table can land in buckets or parameter lookups. */
export function tableIsReplicated(syncRules: SyncRules, table: { schema: string; name: string }): boolean {
  const ref = { schema: table.schema, table: table.name };
  return syncRules.tableSyncsData(ref) || syncRules.tableSyncsParameters(ref);
}

/** Tables in the publication that the sync rules use, with their replica identity columns. */
export async function publishedTables(db: pg.ClientBase | pg.Pool, syncRules: SyncRules): Promise<PublishedTable[]> {
  const rows = await queryJson<
    Array<{
      oid: number;
      schema: string;
      name: string;
      relreplident: 'd' | 'i' | 'f' | 'n';
      key_columns: string[] | null;
      all_columns: string[];
    }>
  >(
    db,
    `SELECT coalesce(json_agg(t), '[]') FROM (SELECT c.oid::int AS oid, n.nspname AS schema, c.relname AS name, c.relreplident,
            (SELECT array_agg(a.attname ORDER BY array_position(i.indkey::int2[], a.attnum))
               FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
              WHERE i.indrelid = c.oid
                AND ((c.relreplident = 'd' AND i.indisprimary) OR (c.relreplident = 'i' AND i.indisreplident))) AS key_columns,
            (SELECT array_agg(a.attname ORDER BY a.attnum) FROM pg_attribute a
              WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped) AS all_columns
       FROM pg_publication_tables p
       JOIN pg_namespace n ON n.nspname = p.schemaname
       JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = p.tablename
      WHERE p.pubname = $1) t`,
    [PUBLICATION_NAME]
  );
  return rows
    .filter((row) => tableIsReplicated(syncRules, row))
    .map((row) => ({
      id: String(row.oid),
      schema: row.schema,
      name: row.name,
      replicaIdentity: row.relreplident,
      replicaIdColumns: row.relreplident === 'f' ? row.all_columns : (row.key_columns ?? [])
    }));
}
