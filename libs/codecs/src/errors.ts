/**
 * The typed error of the storage boundaries: a value read back from storage (a Postgres `int8` or `pg_lsn`, a
 * MongoDB `Long`) that no writer of ours could have produced. Decoders of untrusted input (HTTP bodies) never throw
 * it; they return a `DecodeResult` so the caller can answer 400 with every problem at once.
 *
 * It extends `RangeError` so code that already treats decode failures as range errors keeps working.
 */
export class CorruptStoredValueError extends RangeError {
  /** Stable code for logs and for callers that map errors to responses. */
  readonly code = 'CORRUPT_STORED_VALUE';
  override readonly name = 'CorruptStoredValueError';

  constructor(
    /** What the value was meant to be: `op_id`, `int64`, `checksum`, `LSN`, ... */
    readonly kind: string,
    /** Which boundary it was read from: `postgres int8`, `pg_lsn`, `mongodb Long`. */
    readonly boundary: string,
    reason: string
  ) {
    super(`Corrupt ${kind} read from ${boundary}: ${reason}`);
  }
}

/** Result of decoding untrusted input: the value, or a message fit for a 400 response. Never thrown. */
export type DecodeResult<T = bigint> = { ok: true; value: T } | { ok: false; message: string };

/** Shortened, printable form of a bad value for error messages (never the whole of a huge input). */
export function describeValue(value: unknown): string {
  let text: string;
  if (typeof value === 'string') text = JSON.stringify(value);
  else if (typeof value === 'bigint') text = `${value}n`;
  else if (value === null || typeof value !== 'object') text = String(value);
  else text = Object.prototype.toString.call(value);
  return text.length > 60 ? `${text.slice(0, 57)}...` : text;
}
