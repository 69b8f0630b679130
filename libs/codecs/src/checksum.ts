/**
 * Checksums (PROTOCOL §7.5): every op checksum is an unsigned 32-bit integer, and every sum of them wraps modulo
 * 2^32. In TypeScript a checksum is a `number` in 0 … 2^32−1; this module is the one place its arithmetic and its
 * encodings live.
 *
 * | boundary                     | decode                                  | encode                                 |
 * |------------------------------|-----------------------------------------|----------------------------------------|
 * | HTTP JSON / NDJSON / BSON    | `checksum.decode` (untrusted: a result) | `encodeOp` (u32), `encodeBucket` (i32) |
 * | Postgres `int8` (op / sum)   | `fromPgInt8` / `checksumFromSum`        | `toPgInt8`                             |
 * | MongoDB `Long` (op / sum)    | `fromLong` / `checksumFromSum`          | `toLong(v, Long)`                      |
 */
import { CorruptStoredValueError, describeValue, type DecodeResult } from './errors.js';
import { integerFromMongo, type LongClass } from './mongo-long.js';

/** 2^32: the modulus of checksum sums. */
export const CHECKSUM_MODULUS = 4294967296n;
export const MAX_CHECKSUM = 0xffffffff;

/** Wrapping (mod 2^32) sum of unsigned checksums. */
export function addChecksums(a: number, b: number): number {
  return (a + b) >>> 0;
}

/** Wrapping (mod 2^32) difference `a − b` of unsigned checksums. */
export function subtractChecksums(a: number, b: number): number {
  return (a - b) >>> 0;
}

/** Any integer sum of checksums (a stored int8 / Int64 total, possibly negative after a subtraction), mod 2^32. */
export function checksumFromSum(sum: bigint): number {
  return Number(BigInt.asUintN(32, sum));
}

/** Signed 32-bit form of an unsigned checksum (how bucket checksums are sent, PROTOCOL §7.5). */
export function toSignedChecksum(checksum: number): number {
  return checksum | 0;
}

/** Unsigned form of a signed or unsigned 32-bit checksum. */
export function toUnsignedChecksum(checksum: number): number {
  return checksum >>> 0;
}

function isUnsignedChecksum(value: unknown): value is number {
  return typeof value === 'number' && Number.isInteger(value) && value >= 0 && value <= MAX_CHECKSUM;
}

const DECODE_MESSAGE = 'Expected a checksum: an integer between -2147483648 and 4294967295';

export const checksum = {
  /**
   * Untrusted input from a JSON or BSON line: what clients accept (PROTOCOL §7.5), a signed or unsigned 32-bit
   * integer or a whole-number float, normalised to u32. An Int64 (`Long`/bigint) within the same range also counts.
   */
  decode(input: unknown): DecodeResult<number> {
    let value: number | null = null;
    if (typeof input === 'number' && Number.isInteger(input)) value = input;
    else if (typeof input === 'bigint' || (typeof input === 'object' && input !== null)) {
      const integer = integerFromMongo(input);
      if (integer !== null && integer >= -(2n ** 31n) && integer <= BigInt(MAX_CHECKSUM)) value = Number(integer);
    }
    if (value === null || value < -(2 ** 31) || value > MAX_CHECKSUM) return { ok: false, message: DECODE_MESSAGE };
    return { ok: true, value: value >>> 0 };
  },
  /** An op checksum in a JSON or BSON line: the unsigned value (what the reference emits). */
  encodeOp(value: number): number {
    checkEncodable(value);
    return value;
  },
  /** A bucket checksum in a `checkpoint` / `checkpoint_diff` line: the signed int32 interpretation. */
  encodeBucket(value: number): number {
    checkEncodable(value);
    return toSignedChecksum(value);
  },
  /** A stored op checksum (Postgres `int8`, text or parsed): must be u32. Throws `CorruptStoredValueError`. */
  fromPgInt8(value: string | bigint): number {
    return storedChecksum('postgres int8', typeof value === 'bigint' ? value : decimalOrNull(value), value);
  },
  toPgInt8(value: number): string {
    checkEncodable(value);
    return value.toString();
  },
  /** A stored op checksum (MongoDB `Long`, or a promoted number): must be u32. Throws `CorruptStoredValueError`. */
  fromLong(value: unknown): number {
    return storedChecksum('mongodb Long', integerFromMongo(value), value);
  },
  /** As Int64 holding the unsigned value, so server-side `$add`/`$mod` sums never overflow an Int32. */
  toLong<L>(value: number, Long: LongClass<L>): L {
    checkEncodable(value);
    return Long.fromBigInt(BigInt(value));
  }
};

function checkEncodable(value: number): void {
  if (!isUnsignedChecksum(value))
    throw new RangeError(`Expected an unsigned 32-bit checksum, got ${describeValue(value)}`);
}

function decimalOrNull(text: unknown): bigint | null {
  return typeof text === 'string' && /^-?[0-9]{1,20}$/.test(text) ? BigInt(text) : null;
}

function storedChecksum(boundary: string, value: bigint | null, raw: unknown): number {
  if (value === null || value < 0n || value > BigInt(MAX_CHECKSUM)) {
    throw new CorruptStoredValueError('checksum', boundary, `not an unsigned 32-bit integer: ${describeValue(raw)}`);
  }
  return Number(value);
}
