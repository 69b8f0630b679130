import type pg from 'pg';
import { listFixtures, readFixture } from './files.js';

/**
 * Source schemas in `schemas/<name>.sql` (DDL) with seed rows in `schemas/<name>.seed.sql`. Each file is one
 * multi-statement SQL text (pg runs it in one simple query).
 */
export type SourceSchemaName = 'demo-todos' | 'todos' | 'items' | 'all-types';

export interface SourceSchema {
  name: SourceSchemaName;
  /** CREATE statements. */
  ddl: string;
  /** INSERT statements (run after `ddl`). */
  seed: string;
}

export function sourceSchema(name: SourceSchemaName): SourceSchema {
  return { name, ddl: readFixture('schemas', name, '.sql'), seed: readFixture('schemas', name, '.seed.sql') };
}

export function sourceSchemaNames(): string[] {
  return listFixtures('schemas', '.sql');
}

/** Create the schema's tables in `db`, and fill them unless `seed` is false. */
export async function createSourceSchema(
  db: Pick<pg.Pool | pg.Client, 'query'>,
  name: SourceSchemaName,
  options: { seed?: boolean } = {}
): Promise<void> {
  const schema = sourceSchema(name);
  await db.query(schema.ddl);
  if (options.seed ?? true) await db.query(schema.seed);
}
