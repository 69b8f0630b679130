/**
 * JSON encoding of parameter lookup output rows for storage: bigint stays
 * exact (printed as a JSON integer, read back as bigint).
 */
import { parseJsonWithBigints } from '@syncpoint/codecs';
import { stringifyJson, type JsonValue } from './json.js';
import type { SqliteRow } from './sqlite-value.js';

/** Serialises lookup output rows (text, integer, real or NULL values) as a JSON array. */
export function serializeParameterRows(rows: readonly SqliteRow[]): string {
  return stringifyJson(
    rows.map((row) =>
      Object.fromEntries(Object.entries(row).filter(([, value]) => !(value instanceof Uint8Array)))
    ) as JsonValue
  );
}

/**
 * Reads rows written by {@link serializeParameterRows}; integers come back as bigint (exact to 2^63−1, as SQLite's
 * INTEGER), through the shared JSON-with-bigint codec. Throws on malformed text.
 */
export function parseParameterRows(text: string): SqliteRow[] {
  const parsed = parseJsonWithBigints(text, { integers: 'int64' });
  if (!Array.isArray(parsed)) throw new Error('parameter rows must be a JSON array');
  return parsed.map((row) => {
    if (row === null || typeof row !== 'object' || Array.isArray(row))
      throw new Error('parameter rows must be JSON objects');
    const result: SqliteRow = {};
    for (const [key, value] of Object.entries(row)) {
      if (value !== null && typeof value === 'object') throw new Error(`parameter row column "${key}" is not a scalar`);
      const sqliteValue = typeof value === 'boolean' ? (value ? 1n : 0n) : value;
      Object.defineProperty(result, key, { value: sqliteValue, enumerable: true, writable: true, configurable: true });
    }
    return result;
  });
}
