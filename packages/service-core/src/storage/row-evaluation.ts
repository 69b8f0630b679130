import { createHash } from 'node:crypto';
import {
  stringifyJson,
  type EvaluationError,
  type JsonValue,
  type ParameterLookupEntry,
  type SqliteRow,
  type SyncRules
} from '@syncpoint/sync-rules';
import type { RowChange, SourceTableRef } from './bucket-data.js';

/** Rows whose JSON is larger than this are skipped (PROTOCOL §8.1). */
export const MAX_ROW_BYTES = 15 * 1024 * 1024;

/** Where a source row currently is: what storage keeps per row ("current data") to compute REMOVEs later. */
export interface CurrentRowState {
  buckets: Array<{ bucket: string; table: string; id: string }>;
  /** Serialized parameter lookups the row currently contributes to. */
  lookups: string[];
}

export interface PutOp {
  bucket: string;
  table: string;
  id: string;
  subkey: string;
  data: string;
  checksum: number;
}

export interface RemoveOp {
  bucket: string;
  table: string;
  id: string;
  subkey: string;
  checksum: number;
}

export interface RowChangeOps {
  puts: PutOp[];
  removes: RemoveOp[];
  /** Lookup entries to store for this row (replacing all earlier ones of the row). */
  lookups: ParameterLookupEntry[];
  /** Serialized lookups the row no longer contributes to (store an empty entry so readers see it leave). */
  removedLookups: string[];
  /** The row's new state; null when the row is gone (delete, or in no bucket and no lookup). */
  state: CurrentRowState | null;
  errors: Array<EvaluationError | { message: string }>;
}

/** First 4 bytes of SHA-256, little-endian, as an unsigned 32-bit integer (PROTOCOL §7.5). */
function hash32(text: string): number {
  return createHash('sha256').update(text).digest().readUInt32LE(0);
}

export function putChecksum(objectType: string, objectId: string, data: string): number {
  return hash32(`put.${objectType}.${objectId}.${data}`);
}

export function removeChecksum(subkey: string): number {
  return hash32(`delete.${subkey}`);
}

/** The replica identity of a row as stable text: the key columns' values, in order. */
export function replicaKeyOf(table: SourceTableRef, row: SqliteRow): string {
  return stringifyJson(table.replicaIdColumns.map((column) => (row[column] ?? null) as JsonValue));
}

/**
 * A stable opaque id of a source row (PROTOCOL §8.1 subkey): never changes for a given source row, distinct across
 * tables, and independent of which bucket the row lands in.
 */
export function subkeyOf(table: SourceTableRef, replicaKey: string): string {
  return `${table.id}/${createHash('sha256').update(replicaKey).digest('hex').slice(0, 32)}`;
}

/**
 * Turn one source row change into bucket operations, given where the row was before (PROTOCOL §8.3): a PUT in
 * every bucket the row is in now, a REMOVE in every bucket it left, and its parameter lookups. Pure; shared by
 * every storage module so they produce identical ops.
 */
export function evaluateRowChange(
  syncRules: SyncRules,
  change: RowChange,
  previous: CurrentRowState | null,
  subkey: string
): RowChangeOps {
  const errors: RowChangeOps['errors'] = [];
  const puts: PutOp[] = [];
  let lookups: ParameterLookupEntry[] = [];

  if (change.kind !== 'delete') {
    const input = { schema: change.table.schema, table: change.table.name, row: change.after };
    if (syncRules.tableSyncsData({ schema: change.table.schema, table: change.table.name })) {
      const evaluated = syncRules.evaluateRow(input);
      errors.push(...evaluated.errors);
      const seen = new Map<string, PutOp>();
      for (const row of evaluated.buckets) {
        if (Buffer.byteLength(row.data) > MAX_ROW_BYTES) {
          errors.push({ message: `row ${row.table}/${row.id} is larger than 15 MiB and is skipped` });
          continue;
        }
        // Two data queries may emit the same (table, id) into one bucket: the last one wins.
        seen.set(`${row.bucket}\u0000${row.table}\u0000${row.id}`, {
          ...row,
          subkey,
          checksum: putChecksum(row.table, row.id, row.data)
        });
      }
      puts.push(...seen.values());
    }
    if (syncRules.tableSyncsParameters({ schema: change.table.schema, table: change.table.name })) {
      const evaluated = syncRules.evaluateParameterRow(input);
      errors.push(...evaluated.errors);
      lookups = evaluated.lookups;
    }
  }

  const now = new Set(puts.map((put) => `${put.bucket}\u0000${put.table}\u0000${put.id}`));
  const removes: RemoveOp[] = (previous?.buckets ?? [])
    .filter((entry) => !now.has(`${entry.bucket}\u0000${entry.table}\u0000${entry.id}`))
    .map((entry) => ({ ...entry, subkey, checksum: removeChecksum(subkey) }));

  const currentLookups = new Set(lookups.map((entry) => entry.serializedLookup));
  const removedLookups = (previous?.lookups ?? []).filter((lookup) => !currentLookups.has(lookup));

  const state =
    puts.length === 0 && lookups.length === 0
      ? null
      : {
          buckets: puts.map(({ bucket, table, id }) => ({ bucket, table, id })),
          lookups: [...currentLookups]
        };
  return { puts, removes, lookups, removedLookups, state, errors };
}
