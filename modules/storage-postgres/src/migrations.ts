import { sql, type Kysely } from 'kysely';

export interface Migration {
  /** `<timestamp>-<what>`; applied in name order. */
  name: string;
  up(db: Kysely<any>): Promise<void>;
  down(db: Kysely<any>): Promise<void>;
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
  }
];

/** Serialises migrators across processes (an arbitrary constant key for pg_advisory_xact_lock). */
const MIGRATION_LOCK_KEY = 7_240_001;

export async function migrate(db: Kysely<any>, direction: 'up' | 'down'): Promise<string[]> {
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
