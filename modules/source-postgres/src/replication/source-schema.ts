import type { SourceTableRef } from '@syncpoint/service-core';
import type { SyncRules } from '@syncpoint/sync-rules';
import pg from 'pg';

export const PUBLICATION_NAME = 'powersync';

export interface PublishedTable extends SourceTableRef {
  /** pg_class.relreplident: d(efault, primary key), i(ndex), f(ull), n(othing). */
  replicaIdentity: 'd' | 'i' | 'f' | 'n';
}

/** One problem with the source, with what to do about it. */
export interface SourceProblem {
  message: string;
}

/**
 * Source preconditions (PROTOCOL §9): wal_level, the publication and what it publishes, replication privilege, and a
 * usable replica identity for every table the sync rules use. Returns every problem found, not just the first.
 */
export async function checkSourcePreconditions(db: pg.ClientBase | pg.Pool, syncRules: SyncRules): Promise<SourceProblem[]> {
  const problems: SourceProblem[] = [];
  const { rows: settings } = await db.query<{ wal_level: string; version: string }>(
    `SELECT current_setting('wal_level') AS wal_level, current_setting('server_version_num') AS version`
  );
  if (settings[0]!.wal_level !== 'logical') {
    problems.push({
      message: `wal_level must be set to 'logical' (it is '${settings[0]!.wal_level}'): ALTER SYSTEM SET wal_level = logical; then restart Postgres`
    });
  }
  if (Number(settings[0]!.version) < 140000) {
    problems.push({ message: `Postgres ${settings[0]!.version} is not supported: Syncpoint needs Postgres 14 or later` });
  }
  const { rows: role } = await db.query<{ rolname: string; rolreplication: boolean; rolsuper: boolean }>(
    `SELECT rolname, rolreplication, rolsuper FROM pg_roles WHERE rolname = current_user`
  );
  if (!role[0]?.rolreplication && !role[0]?.rolsuper) {
    problems.push({ message: `the role ${role[0]?.rolname} lacks REPLICATION: ALTER ROLE ${role[0]?.rolname} WITH REPLICATION` });
  }
  const { rows: publication } = await db.query<{ pubinsert: boolean; pubupdate: boolean; pubdelete: boolean; pubtruncate: boolean; pubviaroot: boolean }>(
    `SELECT pubinsert, pubupdate, pubdelete, pubtruncate, pubviaroot FROM pg_publication WHERE pubname = $1`,
    [PUBLICATION_NAME]
  );
  const pub = publication[0];
  if (!pub) {
    problems.push({ message: `publication "${PUBLICATION_NAME}" does not exist (PSYNC_S1141): CREATE PUBLICATION ${PUBLICATION_NAME} FOR ALL TABLES` });
    return problems;
  }
  if (!pub.pubinsert || !pub.pubupdate || !pub.pubdelete || !pub.pubtruncate) {
    problems.push({
      message: `publication "${PUBLICATION_NAME}" must publish insert, update, delete and truncate (PSYNC_S1142): ALTER PUBLICATION ${PUBLICATION_NAME} SET (publish = 'insert, update, delete, truncate')`
    });
  }
  if (pub.pubviaroot) {
    problems.push({ message: `publication "${PUBLICATION_NAME}" must not use publish_via_partition_root (PSYNC_S1143)` });
  }
  const tables = await publishedTables(db, syncRules);
  for (const wanted of syncRules.sourceTables()) {
    if (wanted.wildcard) continue;
    if (!tables.some((table) => table.schema === wanted.schema && table.name === wanted.name)) {
      const exists = await db.query(`SELECT 1 FROM pg_tables WHERE schemaname = $1 AND tablename = $2`, [wanted.schema, wanted.name]);
      problems.push({
        message:
          exists.rowCount === 0
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
  const { rows } = await db.query<{ oid: number; schema: string; name: string; relreplident: 'd' | 'i' | 'f' | 'n'; key_columns: string[] | null; all_columns: string[] }>(
    `SELECT c.oid::int AS oid, n.nspname AS schema, c.relname AS name, c.relreplident,
            (SELECT array_agg(a.attname ORDER BY array_position(i.indkey::int2[], a.attnum))
               FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
              WHERE i.indrelid = c.oid
                AND ((c.relreplident = 'd' AND i.indisprimary) OR (c.relreplident = 'i' AND i.indisreplident))) AS key_columns,
            (SELECT array_agg(a.attname ORDER BY a.attnum) FROM pg_attribute a
              WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped) AS all_columns
       FROM pg_publication_tables p
       JOIN pg_namespace n ON n.nspname = p.schemaname
       JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = p.tablename
      WHERE p.pubname = $1`,
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
