import { sql, type Kysely } from 'kysely';

/** Migrations run against every past shape of the schema, so they cannot be typed with today's tables. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- Kysely's documented idiom for migrations (see above)
type AnySchemaDb = Kysely<any>;

export interface Migration {
  /** `<timestamp>-<what>`; applied in name order. */
  name: string;
  up(db: AnySchemaDb): Promise<void>;
  down(db: AnySchemaDb): Promise<void>;
}

/**
 * Versioned storage migrations (PROTOCOL §4.13), all in schema `powersync`. Applied ones are recorded in
 * `powersync.migrations`. Never edit a released migration; add a new one.
 */
export const MIGRATIONS: Migration[] = [
  {
    name: '1700000000000-initial',
    async up(db) {
      await sql`
        CREATE TABLE powersync.write_checkpoints (
          user_id text PRIMARY KEY,
          lsns jsonb NOT NULL,
          write_checkpoint int8 NOT NULL
        );
        CREATE TABLE powersync.custom_write_checkpoints (
          user_id text NOT NULL,
          write_checkpoint int8 NOT NULL,
          sync_rules_id integer NOT NULL,
          CONSTRAINT unique_user_sync PRIMARY KEY (user_id, sync_rules_id)
        );
        CREATE TABLE powersync.sync_rules (
          id serial PRIMARY KEY,
          state text NOT NULL,
          content text NOT NULL,
          created_at timestamptz NOT NULL DEFAULT now()
        );
      `.execute(db);
    },
    async down(db) {
      await sql`
        DROP TABLE powersync.sync_rules;
        DROP TABLE powersync.custom_write_checkpoints;
        DROP TABLE powersync.write_checkpoints;
      `.execute(db);
    }
  },
  {
    name: '1782950400000-checkpoint-requested-at',
    async up(db) {
      await sql`
        ALTER TABLE powersync.write_checkpoints ADD COLUMN checkpoint_requested_at timestamptz;
        ALTER TABLE powersync.custom_write_checkpoints ADD COLUMN checkpoint_requested_at timestamptz;
        CREATE INDEX write_checkpoints_checkpoint_requested_at ON powersync.write_checkpoints (checkpoint_requested_at)
          WHERE checkpoint_requested_at IS NOT NULL;
        CREATE INDEX custom_write_checkpoints_checkpoint_requested_at
          ON powersync.custom_write_checkpoints (checkpoint_requested_at) WHERE checkpoint_requested_at IS NOT NULL;
      `.execute(db);
    },
    async down(db) {
      await sql`
        ALTER TABLE powersync.write_checkpoints DROP COLUMN checkpoint_requested_at;
        ALTER TABLE powersync.custom_write_checkpoints DROP COLUMN checkpoint_requested_at;
      `.execute(db);
    }
  },
  {
    // Tracks "processed" per record, which the reference's Postgres storage cannot: a duplicate request for an
    // already-acknowledged id then needs no source marker. `head_lsn` is the head as pg_lsn, so comparisons
    // are numeric and independent of the database collation.
    name: '1782950400001-write-checkpoint-processed',
    async up(db) {
      await sql`
        ALTER TABLE powersync.write_checkpoints
          ADD COLUMN head_lsn pg_lsn GENERATED ALWAYS AS ((lsns->>'1')::pg_lsn) STORED,
          ADD COLUMN processed_at_lsn pg_lsn;
        CREATE INDEX write_checkpoints_pending_head ON powersync.write_checkpoints (head_lsn)
          WHERE processed_at_lsn IS NULL;
      `.execute(db);
    },
    async down(db) {
      await sql`
        ALTER TABLE powersync.write_checkpoints DROP COLUMN processed_at_lsn, DROP COLUMN head_lsn;
      `.execute(db);
    }
  },
  {
    // Bucket data (PROTOCOL §8): one op id sequence shared by ops and parameter lookups; replication state per
    // stream; ops per bucket; each source row's current membership; parameter lookups by op id; per-bucket running
    // checksum sums (so checksums at a checkpoint cost an index range scan, not a full scan); snapshot progress.
    name: '1783000000000-bucket-data',
    async up(db) {
      await sql`
        CREATE SEQUENCE powersync.op_id_sequence AS int8 START WITH 1;
        ALTER TABLE powersync.sync_rules
          ADD COLUMN slot_name text,
          ADD COLUMN snapshot_done boolean NOT NULL DEFAULT false,
          ADD COLUMN last_checkpoint int8,
          ADD COLUMN last_checkpoint_lsn pg_lsn,
          ADD COLUMN no_checkpoint_before pg_lsn,
          ADD COLUMN keepalive_op int8,
          ADD COLUMN snapshot_lsn pg_lsn,
          ADD COLUMN last_checkpoint_ts timestamptz,
          ADD COLUMN last_keepalive_ts timestamptz,
          ADD COLUMN last_fatal_error text;
        CREATE TABLE powersync.bucket_data (
          group_id integer NOT NULL,
          bucket_name text NOT NULL,
          op_id int8 NOT NULL,
          op text NOT NULL,
          source_table text,
          source_key text,
          table_name text,
          row_id text,
          checksum int8 NOT NULL,
          data text,
          target_op int8,
          PRIMARY KEY (group_id, bucket_name, op_id)
        );
        CREATE TABLE powersync.current_data (
          group_id integer NOT NULL,
          source_table text NOT NULL,
          source_key text NOT NULL,
          buckets jsonb NOT NULL,
          lookups jsonb NOT NULL,
          PRIMARY KEY (group_id, source_table, source_key)
        );
        CREATE TABLE powersync.bucket_parameters (
          id int8 NOT NULL,
          group_id integer NOT NULL,
          source_table text NOT NULL,
          source_key text NOT NULL,
          lookup text NOT NULL,
          bucket_parameters text NOT NULL
        );
        CREATE INDEX bucket_parameters_lookup
          ON powersync.bucket_parameters (group_id, lookup, source_table, source_key, id);
        CREATE TABLE powersync.bucket_state (
          group_id integer NOT NULL,
          bucket_name text NOT NULL,
          last_op int8 NOT NULL,
          checksum_sum int8 NOT NULL,
          op_count int8 NOT NULL,
          PRIMARY KEY (group_id, bucket_name)
        );
        CREATE TABLE powersync.snapshot_progress (
          group_id integer NOT NULL,
          table_id text NOT NULL,
          schema_name text NOT NULL,
          table_name text NOT NULL,
          replica_id_columns jsonb NOT NULL,
          done boolean NOT NULL,
          rows_done int8 NOT NULL,
          last_key text,
          PRIMARY KEY (group_id, table_id)
        );
      `.execute(db);
    },
    async down(db) {
      await sql`
        DROP TABLE powersync.snapshot_progress;
        DROP TABLE powersync.bucket_state;
        DROP TABLE powersync.bucket_parameters;
        DROP TABLE powersync.current_data;
        DROP TABLE powersync.bucket_data;
        ALTER TABLE powersync.sync_rules
          DROP COLUMN slot_name, DROP COLUMN snapshot_done, DROP COLUMN last_checkpoint, DROP COLUMN last_checkpoint_lsn,
          DROP COLUMN no_checkpoint_before, DROP COLUMN keepalive_op, DROP COLUMN snapshot_lsn,
          DROP COLUMN last_checkpoint_ts, DROP COLUMN last_keepalive_ts, DROP COLUMN last_fatal_error;
        DROP SEQUENCE powersync.op_id_sequence;
      `.execute(db);
    }
  },
  {
    // Issue 6: an earlier checkpoint request is never delayed by a later one. Besides the latest (id, head), each
    // record keeps up to 16 earlier (id, head) pairs not yet reached by replication (`pending`, oldest first), so a
    // checkpoint at L acknowledges the greatest id whose head is ≤ L. `push_pending_write_checkpoint` adds the
    // superseded latest pair and drops pairs dominated by a later one (greater id, head not after theirs: no LSN
    // can need them), then keeps the 16 greatest ids. Dropping beyond 16 only delays that id's acknowledgement to
    // the next kept pair's head (a client treats any write_checkpoint ≥ its id as applied); it never acknowledges
    // early. Once the latest pair is processed, every later checkpoint reaches it, so the pairs before it are
    // forgotten when the next request supersedes it (the writers pass an empty list then).
    // The replication lock (issue 6 item 5): one lease row per lock name; the holder renews `expires_at`.
    name: '1783100000000-pending-write-checkpoints-and-replication-lock',
    async up(db) {
      await sql`
        ALTER TABLE powersync.write_checkpoints ADD COLUMN pending jsonb NOT NULL DEFAULT '[]';
        CREATE FUNCTION powersync.push_pending_write_checkpoint(
          pending jsonb, previous_id int8, previous_lsn pg_lsn, next_id int8, next_lsn pg_lsn
        ) RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
          WITH entries AS (
            SELECT (e->>'id')::int8 AS id, (e->>'lsn')::pg_lsn AS lsn FROM jsonb_array_elements(pending) e
            UNION ALL SELECT previous_id, previous_lsn
          ),
          everything AS (SELECT id, lsn FROM entries UNION ALL SELECT next_id, next_lsn),
          kept AS (
            SELECT id, lsn FROM entries e
            WHERE NOT EXISTS (SELECT 1 FROM everything o WHERE o.id > e.id AND o.lsn <= e.lsn)
            ORDER BY id DESC LIMIT 16
          )
          SELECT coalesce(jsonb_agg(jsonb_build_object('id', id::text, 'lsn', lsn::text) ORDER BY id), '[]'::jsonb) FROM kept
        $$;
        CREATE TABLE powersync.replication_lock (
          name text PRIMARY KEY,
          holder text NOT NULL,
          acquired_at timestamptz NOT NULL DEFAULT now(),
          expires_at timestamptz NOT NULL
        );
      `.execute(db);
    },
    async down(db) {
      await sql`
        DROP TABLE powersync.replication_lock;
        DROP FUNCTION powersync.push_pending_write_checkpoint(jsonb, int8, pg_lsn, int8, pg_lsn);
        ALTER TABLE powersync.write_checkpoints DROP COLUMN pending;
      `.execute(db);
    }
  },
  {
    // Issue 12: leadership is a session advisory lock; this row keeps the fencing epoch (incremented on each
    // takeover, checked by every replication write), the holder's lock session (`backend_pid`, terminated by a
    // standby once the lease `expires_at` has passed without renewal) and the lease itself.
    name: '1783200000000-replication-lock-epoch',
    async up(db) {
      await sql`
        ALTER TABLE powersync.replication_lock ADD COLUMN epoch int8 NOT NULL DEFAULT 0;
        ALTER TABLE powersync.replication_lock ADD COLUMN backend_pid int4;
      `.execute(db);
    },
    async down(db) {
      await sql`
        ALTER TABLE powersync.replication_lock DROP COLUMN backend_pid;
        ALTER TABLE powersync.replication_lock DROP COLUMN epoch;
      `.execute(db);
    }
  }
];

/** Serialises migrators across processes (an arbitrary constant key for pg_advisory_xact_lock). */
const MIGRATION_LOCK_KEY = 7_240_001;

export async function migrate(db: AnySchemaDb, direction: 'up' | 'down'): Promise<string[]> {
  return db.transaction().execute(async (trx) => {
    await sql`SELECT pg_advisory_xact_lock(${MIGRATION_LOCK_KEY})`.execute(trx);
    await sql`CREATE SCHEMA IF NOT EXISTS powersync`.execute(trx);
    await sql`
      CREATE TABLE IF NOT EXISTS powersync.migrations (
        name text PRIMARY KEY,
        applied_at timestamptz NOT NULL DEFAULT now()
      )`.execute(trx);
    const appliedRows = await trx.selectFrom('powersync.migrations').select('name').orderBy('name').execute();
    const applied = new Set(appliedRows.map((row: { name: string }) => row.name));
    const done: string[] = [];
    if (direction === 'up') {
      for (const migration of MIGRATIONS) {
        if (applied.has(migration.name)) continue;
        await migration.up(trx);
        await trx.insertInto('powersync.migrations').values({ name: migration.name }).execute();
        done.push(migration.name);
      }
    } else {
      const last = [...MIGRATIONS].reverse().find((migration) => applied.has(migration.name));
      if (last) {
        await last.down(trx);
        await trx.deleteFrom('powersync.migrations').where('name', '=', last.name).execute();
        done.push(last.name);
      }
    }
    return done;
  });
}
