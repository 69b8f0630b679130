/**
 * SQLite-compatible values and the few SQLite semantics the sync rules need:
 * type ordering in comparisons, truthiness, casts and text conversion.
 *
 * INTEGER is always a `bigint` (never a lossy JS number), REAL is a `number`,
 * TEXT a `string`, BLOB a `Uint8Array`, NULL `null`.
 */

import { sqliteRealToText } from './real-text.js';
import { referenceDeviation } from './reference-deviations.js';

export type SqliteValue = string | bigint | number | null | Uint8Array;

/** A row as evaluated by the sync rules: column name → SQLite value. */
export type SqliteRow = Record<string, SqliteValue>;

/** A source row as handed in by replication. Values should be {@link SqliteValue}s; anything else is reported when used. */
export type InputRow = Readonly<Record<string, unknown>>;

export type SqliteType = 'null' | 'integer' | 'real' | 'text' | 'blob';

export const INT64_MIN = -(2n ** 63n);
export const INT64_MAX = 2n ** 63n - 1n;

/** Thrown inside evaluation for values the rules cannot handle; always caught at the public API boundary. */
export class EvaluationFailure extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'EvaluationFailure';
  }
}

export function sqliteTypeOf(value: SqliteValue): SqliteType {
  if (value === null) return 'null';
  if (typeof value === 'bigint') return 'integer';
  if (typeof value === 'number') return 'real';
  if (typeof value === 'string') return 'text';
  return 'blob';
}

/** Describes a JS value for error messages ("array", "object", "boolean", ...). */
function describeJsValue(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'array';
  if (value instanceof Uint8Array) return 'blob';
  if (value instanceof Date) return 'Date';
  return typeof value;
}

/**
 * Converts one input column value to a SQLite value. Booleans become 1/0,
 * `undefined` becomes NULL; arrays, objects, non-finite numbers and other
 * JS values cannot be represented and fail with a message naming the column.
 */
export function toSqliteValue(value: unknown, column: string): SqliteValue {
  switch (typeof value) {
    case 'string':
    case 'bigint':
      return value;
    case 'number':
      if (Number.isFinite(value)) return value;
      throw new EvaluationFailure(
        `column "${column}" has a non-finite number (${String(value)}) that cannot be represented`
      );
    case 'boolean':
      return value ? 1n : 0n;
    case 'undefined':
      return null;
    default:
      if (value === null || value instanceof Uint8Array) return value;
      throw new EvaluationFailure(
        `column "${column}" has a value of type ${describeJsValue(value)} that cannot be represented (expected text, integer, real, blob or null)`
      );
  }
}

const textEncoder = new TextEncoder();
const textDecoder = new TextDecoder();

/** Formats a REAL as SQLite does, digit for digit (see real-text.ts): `2.0`, `0.1`, `1.0e+21`. */
function realToText(value: number): string {
  return sqliteRealToText(value);
}

/**
 * Text form of a REAL as the reference service prints it (JavaScript's shortest round-trip form: `2`,
 * `0.1`, `3e+60`), or SQLite's `%!.15g` form when the 'real-to-text' deviation is off.
 */
function realText(value: number): string {
  return referenceDeviation('real-to-text') ? String(value) : realToText(value);
}

/** `CAST(value AS TEXT)`. Blobs are decoded as UTF-8; invalid sequences become U+FFFD rather than failing. */
export function castToText(value: SqliteValue): string | null {
  if (value === null) return null;
  if (typeof value === 'string') return value;
  if (typeof value === 'bigint') return value.toString();
  if (typeof value === 'number') return realText(value);
  return textDecoder.decode(value);
}

/** `CAST(value AS BLOB)`: text and numbers as the UTF-8 bytes of their text form. */
export function castToBlob(value: SqliteValue): Uint8Array | null {
  if (value === null) return null;
  if (value instanceof Uint8Array) return value;
  return textEncoder.encode(castToText(value)!);
}

function clampInt64(value: bigint): bigint {
  if (value > INT64_MAX) return INT64_MAX;
  if (value < INT64_MIN) return INT64_MIN;
  return value;
}

function realToInteger(value: number): bigint {
  if (Number.isNaN(value)) return 0n;
  // 2^63 is the first double above INT64_MAX.
  if (value >= 2 ** 63) return INT64_MAX;
  if (value <= -9223372036854775808) return INT64_MIN;
  return BigInt(Math.trunc(value));
}

// SQLite's own whitespace set (sqlite3Isspace): space, \t, \n, \v, \f, \r.
const INTEGER_PREFIX = /^[ \t\n\v\f\r]*([+-]?\d+)/;
const NUMBER_PREFIX = /^[ \t\n\v\f\r]*([+-]?)(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?/;
const WHOLE_NUMBER = /^[ \t\n\v\f\r]*[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?[ \t\n\v\f\r]*$/;

function asText(value: string | Uint8Array): string {
  return typeof value === 'string' ? value : textDecoder.decode(value);
}

/** `CAST(value AS INTEGER)`: the longest integer prefix of text (`'12abc'` → 12, `'1e5'` → 1), truncation of reals, clamped to int64. */
export function castToInteger(value: SqliteValue): bigint | null {
  if (value === null) return null;
  if (typeof value === 'bigint') return value;
  if (typeof value === 'number') return realToInteger(value);
  const match = INTEGER_PREFIX.exec(asText(value));
  return match ? clampInt64(BigInt(match[1]!)) : 0n;
}

/** `CAST(value AS REAL)`: the longest real prefix of text, or 0.0. */
export function castToReal(value: SqliteValue): number | null {
  if (value === null) return null;
  if (typeof value === 'number') return value;
  if (typeof value === 'bigint') return Number(value);
  const match = NUMBER_PREFIX.exec(asText(value));
  return match ? Number(match[0].trim()) : 0;
}

/**
 * The number at the start of text, as SQLite's arithmetic reads it: INTEGER when the prefix has no
 * decimal point or exponent and fits int64 (`'12abc'` → 12), otherwise REAL (`'1.5e'` → 1.5), 0 when
 * there is no number.
 */
function numericPrefix(text: string): bigint | number {
  const match = NUMBER_PREFIX.exec(text);
  if (!match) return 0n;
  if (match[2]!.includes('.') || match[3] !== undefined) return Number(match[0].trim());
  const integer = BigInt(match[1]! + match[2]!);
  return integer >= INT64_MIN && integer <= INT64_MAX ? integer : Number(integer);
}

/** Operand of arithmetic: numbers stay, text and blobs become the number at their start. */
export function toNumeric(value: SqliteValue): bigint | number | null {
  if (value === null || typeof value === 'bigint' || typeof value === 'number') return value;
  return numericPrefix(asText(value));
}

/**
 * `CAST(value AS NUMERIC)`: numbers stay as they are; text becomes INTEGER when its numeric prefix is
 * an integral value that fits int64 (`'1.0'` → 1, `'1e2'` → 100), else REAL.
 */
export function castToNumeric(value: SqliteValue): bigint | number | null {
  if (value === null || typeof value === 'bigint' || typeof value === 'number') return value;
  const text = asText(value);
  const numeric = numericPrefix(text);
  if (typeof numeric === 'bigint') return numeric;
  // An integer literal too big for int64 stays REAL; a real literal with an integral value becomes INTEGER.
  const match = NUMBER_PREFIX.exec(text);
  const integerSyntax = match !== null && !match[2]!.includes('.') && match[3] === undefined;
  return integerSyntax ? numeric : integralRealToInteger(numeric);
}

function integralRealToInteger(value: number): bigint | number {
  // SQLite (sqlite3RealSameAsInt) only turns integral reals in [-2^51, 2^51) into INTEGER.
  if (Number.isInteger(value) && value >= -2251799813685248 && value < 2251799813685248) return BigInt(value);
  return value;
}

/**
 * NUMERIC affinity as applied to a comparison operand: text that is a well-formed number in full
 * (surrounding spaces allowed) becomes that number; anything else is left as it is.
 */
export function applyNumericAffinity(value: SqliteValue): SqliteValue {
  if (typeof value !== 'string' || !WHOLE_NUMBER.test(value)) return value;
  return castToNumeric(value);
}

/** SQLite truthiness in WHERE: NULL is false, otherwise the numeric value is non-zero. */
export function isTruthy(value: SqliteValue): boolean {
  if (value === null) return false;
  const numeric = typeof value === 'bigint' || typeof value === 'number' ? value : castToReal(value);
  return typeof numeric === 'bigint' ? numeric !== 0n : numeric !== 0 && !Number.isNaN(numeric);
}

function typeRank(value: SqliteValue): number {
  if (value === null) return 0;
  if (typeof value === 'bigint' || typeof value === 'number') return 1;
  if (typeof value === 'string') return 2;
  return 3;
}

function compareNumbers(a: bigint | number, b: bigint | number): number {
  if (typeof a === 'bigint' && typeof b === 'bigint') return a < b ? -1 : a > b ? 1 : 0;
  if (typeof a === 'number' && typeof b === 'number') return a < b ? -1 : a > b ? 1 : 0;
  if (typeof a === 'number') return -compareNumbers(b, a);
  // a is bigint, b is number
  const real = b as number;
  if (Number.isNaN(real)) return 1;
  if (real === Infinity) return -1;
  if (real === -Infinity) return 1;
  const floor = BigInt(Math.floor(real));
  if (a < floor) return -1;
  if (a > floor) return 1;
  return Number.isInteger(real) ? 0 : -1;
}

function compareBytes(a: Uint8Array, b: Uint8Array): number {
  const length = Math.min(a.length, b.length);
  for (let i = 0; i < length; i++) {
    if (a[i] !== b[i]) return a[i]! < b[i]! ? -1 : 1;
  }
  return a.length - b.length === 0 ? 0 : a.length < b.length ? -1 : 1;
}

/** Total order of SQLite values (BINARY collation): NULL < numbers < text < blob. */
export function compareValues(a: SqliteValue, b: SqliteValue): number {
  const rankA = typeRank(a);
  const rankB = typeRank(b);
  if (rankA !== rankB) return rankA < rankB ? -1 : 1;
  if (a === null || b === null) return 0;
  if (typeof a === 'string' && typeof b === 'string') {
    if (a === b) return 0;
    return compareBytes(textEncoder.encode(a), textEncoder.encode(b));
  }
  if (a instanceof Uint8Array && b instanceof Uint8Array) return compareBytes(a, b);
  return compareNumbers(a as bigint | number, b as bigint | number);
}
