/**
 * Postgres WAL positions (LSNs) in the normalised text form `XXXXXXXX/XXXXXXXX` (two zero-padded upper-case hex
 * halves), which sorts correctly as plain text and is valid `pg_lsn` input.
 *
 * | boundary                       | decode                                   | encode                  |
 * |--------------------------------|------------------------------------------|-------------------------|
 * | `pg_lsn` text (source/storage) | `normalizeLsn` (typed error)             | `encodeLsn` (the `Lsn`) |
 * | HTTP JSON (admin, untrusted)   | `decodeLsn` (a result)                   | `encodeLsn`             |
 * | pgoutput / replication wire    | `lsnFromBigint` (uint64)                 | `lsnToBigint`           |
 */
import { CorruptStoredValueError, describeValue, type DecodeResult } from './errors.js';

export type Lsn = string & { readonly __lsn: unique symbol };

export const ZERO_LSN = '00000000/00000000' as Lsn;
export const MAX_LSN_VALUE = 0xffff_ffff_ffff_ffffn;

const LSN_PATTERN = /^([0-9A-Fa-f]{1,8})\/([0-9A-Fa-f]{1,8})$/;

function tryNormalize(text: unknown): Lsn | null {
  if (typeof text !== 'string') return null;
  const match = LSN_PATTERN.exec(text);
  if (!match) return null;
  return `${match[1]!.toUpperCase().padStart(8, '0')}/${match[2]!.toUpperCase().padStart(8, '0')}` as Lsn;
}

/**
 * `pg_lsn` text as Postgres prints it (`16/B374D848`) into the normalised form. Throws `CorruptStoredValueError`:
 * the text comes from a server or from storage, never from a client.
 */
export function normalizeLsn(text: string): Lsn {
  const lsn = tryNormalize(text);
  if (lsn === null) throw new CorruptStoredValueError('LSN', 'pg_lsn text', `Invalid LSN: ${describeValue(text)}`);
  return lsn;
}

/** An untrusted LSN (e.g. from a JSON body); never throws. */
export function decodeLsn(input: unknown): DecodeResult<Lsn> {
  const lsn = tryNormalize(input);
  return lsn === null
    ? { ok: false, message: 'Expected an LSN as text: two hex numbers of up to 8 digits, like "16/B374D848"' }
    : { ok: true, value: lsn };
}

/** The normalised text of an LSN, for JSON and as a `pg_lsn` parameter. Throws `RangeError` on malformed input. */
export function encodeLsn(lsn: string): string {
  const normalised = tryNormalize(lsn);
  if (normalised === null) throw new RangeError(`Invalid LSN: ${describeValue(lsn)}`);
  return normalised;
}

export function lsnToBigint(lsn: string): bigint {
  const normalized = normalizeLsn(lsn);
  return BigInt('0x' + normalized.replace('/', ''));
}

/** The LSN of a uint64 WAL position (pgoutput and the replication protocol carry LSNs as uint64). */
export function lsnFromBigint(value: bigint): Lsn {
  if (value < 0n || value > MAX_LSN_VALUE) throw new RangeError(`LSN out of range: ${value}`);
  const hex = value.toString(16).toUpperCase().padStart(16, '0');
  return `${hex.slice(0, 8)}/${hex.slice(8)}` as Lsn;
}

export function compareLsn(a: string, b: string): number {
  const x = lsnToBigint(a);
  const y = lsnToBigint(b);
  return x < y ? -1 : x > y ? 1 : 0;
}

/** Bytes of WAL from `from` to `to` (0 when `to` is not after `from`), e.g. replication lag. */
export function lsnDistance(from: string, to: string): bigint {
  const diff = lsnToBigint(to) - lsnToBigint(from);
  return diff > 0n ? diff : 0n;
}
