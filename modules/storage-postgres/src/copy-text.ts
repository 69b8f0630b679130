import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type pg from 'pg';
import { from as copyFrom } from 'pg-copy-streams';

/**
 * `COPY … FROM STDIN` in Postgres' text format: bulk writes without node-postgres escaping every value into an
 * array literal and Postgres parsing it back (the `unnest` path), which the storage bench showed as the largest
 * statement of a flush.
 *
 * Text format (Postgres docs, COPY "Text Format"): one line per row, columns separated by a tab, `\N` for null, and
 * backslash, tab, newline and carriage return escaped with a backslash. Everything else, unicode included, is sent
 * as-is (the client encoding is UTF-8).
 */

/** A value Postgres text cannot hold (the flush fails, as the `unnest` path's did on the same value). */
export class CopyEncodingError extends Error {
  readonly code = 'COPY_NUL_CHARACTER';
}

const NEEDS_ESCAPE = /[\\\t\n\r\0]/;
const ESCAPED = /[\\\t\n\r\0]/g;
const ESCAPES: Record<string, string> = { '\\': '\\\\', '\t': '\\t', '\n': '\\n', '\r': '\\r' };

/** One text column value of a COPY line. */
export function copyTextField(value: string | null): string {
  if (value === null) return '\\N';
  // Most values (ids, bucket names, JSON without control characters) need no escaping: skip the replace.
  if (!NEEDS_ESCAPE.test(value)) return value;
  return value.replace(ESCAPED, (char) => {
    // Postgres text never holds NUL; the unnest path refused it too, so refuse it here with a clear message.
    if (char === '\0')
      throw new CopyEncodingError('a text value contains a NUL character, which Postgres cannot store');
    return ESCAPES[char]!;
  });
}

/** Lines are sent in chunks of about this many characters (fewer, larger writes to the socket). */
const CHUNK_CHARS = 256 * 1024;

/**
 * Runs `COPY <target> FROM STDIN` on `client` (inside the caller's transaction) with one line per row from
 * `lines` (each already encoded, ending in `\n`). Resolves once Postgres has accepted every row.
 */
export async function copyLinesIn(client: pg.PoolClient, copySql: string, lines: Iterable<string>): Promise<void> {
  function* chunks(): Generator<string> {
    let chunk = '';
    for (const line of lines) {
      chunk += line;
      if (chunk.length >= CHUNK_CHARS) {
        yield chunk;
        chunk = '';
      }
    }
    if (chunk.length > 0) yield chunk;
  }
  await pipeline(Readable.from(chunks(), { objectMode: false }), client.query(copyFrom(copySql)));
}
