/**
 * Bounded bigint codecs: one decoder and one encoder per boundary an id crosses, each keeping the value within an
 * inclusive range.
 *
 * | boundary                         | decode                          | encode              |
 * |----------------------------------|---------------------------------|---------------------|
 * | HTTP JSON, NDJSON sync lines     | `decode` (untrusted: a result)  | `encode` → string   |
 * | BSON sync lines                  | `decodeBson` (untrusted)        | `encodeBson`        |
 * | Postgres `int8` (text / parsed)  | `fromPgInt8` (typed error)      | `toPgInt8` → text   |
 * | MongoDB `Long`                   | `fromLong` (typed error)        | `toLong(v, Long)`   |
 *
 * Untrusted input gets a `DecodeResult` with a message fit for a 400 response. A stored value outside the range
 * throws `CorruptStoredValueError`: storage only ever holds what the encoders wrote, so that is corruption, not bad
 * input. Encoding a value outside the range throws `RangeError`: the caller has a bug, and writing it would either
 * fail later or (for `Long.fromBigInt`) silently wrap around.
 *
 * JSON numbers are accepted only while they are safe integers: a larger number has already been rounded by
 * JSON.parse, so accepting it would silently store a different id.
 */
import { CorruptStoredValueError, describeValue, type DecodeResult } from './errors.js';
import { integerFromMongo, type LongClass } from './mongo-long.js';

export interface BoundedBigintCodec {
  readonly min: bigint;
  readonly max: bigint;
  /** What the values are, for messages (`op_id`, `int64`, ...). */
  readonly name: string;

  /** HTTP JSON / NDJSON: decode an untrusted value (a decimal string or a safe JSON integer); never throws. */
  decode(input: unknown): DecodeResult;
  /** Decode or throw a `RangeError` with the codec's message. */
  parse(input: unknown): bigint;
  /** HTTP JSON / NDJSON: canonical decimal string. Throws a `RangeError` for a value outside the range. */
  encode(value: bigint): string;

  /**
   * BSON sync lines: decode an untrusted value as a BSON document carries it: the decimal string the lines hold,
   * an Int32 / whole Double (a JS number, safe integers only), or an Int64 (`Long` or bigint); never throws.
   */
  decodeBson(input: unknown): DecodeResult;
  /** BSON sync lines carry ids as decimal strings, like NDJSON lines (PROTOCOL §7.3). */
  encodeBson(value: bigint): string;

  /**
   * Postgres `int8`: the text node-postgres hands over (or the bigint its type parser already made of it), checked
   * against the range. Throws `CorruptStoredValueError`.
   */
  fromPgInt8(value: string | bigint): bigint;
  /** Postgres `int8` parameter text (node-postgres sends parameters as text). Throws `RangeError` out of range. */
  toPgInt8(value: bigint): string;

  /** MongoDB `Long` (or the number/bigint the driver may promote it to). Throws `CorruptStoredValueError`. */
  fromLong(value: unknown): bigint;
  /** A MongoDB `Long` built with the driver's class, without the silent wrap-around of `Long.fromBigInt`. */
  toLong<L>(value: bigint, Long: LongClass<L>): L;

  /** True when the value is a bigint within the range. */
  contains(value: unknown): value is bigint;
}

/** Canonical decimal: optional minus, no leading zeros (except "0"), no "-0". */
const CANONICAL_DECIMAL = /^(0|-?[1-9][0-9]*)$/;

export function boundedBigintCodec(options: { min: bigint; max: bigint; name: string }): BoundedBigintCodec {
  const { min, max, name } = options;
  if (min > max) throw new RangeError(`min ${min} is greater than max ${max}`);
  const rangeMessage = `Expected ${name} between ${min} and ${max}`;
  // Longest canonical string that could be in range; longer strings are rejected before BigInt() parses them.
  const maxDigits = Math.max(min.toString().length, max.toString().length);

  const inRange = (value: bigint): DecodeResult =>
    value >= min && value <= max ? { ok: true, value } : { ok: false, message: rangeMessage };

  /** A canonical decimal string within the length bound, as a bigint; null otherwise. */
  const fromDecimal = (text: string): bigint | null =>
    text.length <= maxDigits && CANONICAL_DECIMAL.test(text) ? BigInt(text) : null;

  function decode(input: unknown): DecodeResult {
    if (typeof input === 'number') {
      if (!Number.isSafeInteger(input)) {
        return {
          ok: false,
          message: Number.isInteger(input)
            ? `${rangeMessage}; integers beyond 2^53-1 must be sent as decimal strings`
            : rangeMessage
        };
      }
      return inRange(BigInt(input));
    }
    if (typeof input === 'bigint') return inRange(input);
    if (typeof input === 'string') {
      const value = fromDecimal(input);
      if (value === null) return { ok: false, message: `${rangeMessage}, as a decimal string or a safe JSON integer` };
      return inRange(value);
    }
    return { ok: false, message: rangeMessage };
  }

  function checkEncodable(value: bigint): void {
    if (typeof value !== 'bigint' || value < min || value > max) {
      throw new RangeError(`${rangeMessage}, got ${describeValue(value)}`);
    }
  }

  function stored(boundary: string, value: bigint | null, raw: unknown): bigint {
    if (value === null) throw new CorruptStoredValueError(name, boundary, `not an integer: ${describeValue(raw)}`);
    if (value < min || value > max) {
      throw new CorruptStoredValueError(name, boundary, `${value} is not between ${min} and ${max}`);
    }
    return value;
  }

  return {
    min,
    max,
    name,
    decode,
    parse(input) {
      const result = decode(input);
      if (!result.ok) throw new RangeError(result.message);
      return result.value;
    },
    encode(value) {
      checkEncodable(value);
      return value.toString();
    },
    decodeBson(input) {
      // The bson package hands back Int64 as a Long (or a bigint with useBigInt64); Int32 and Double as numbers.
      if (typeof input === 'object' && input !== null) {
        const value = integerFromMongo(input);
        return value === null ? { ok: false, message: rangeMessage } : inRange(value);
      }
      return decode(input);
    },
    encodeBson(value) {
      checkEncodable(value);
      return value.toString();
    },
    fromPgInt8(value) {
      if (typeof value === 'bigint') return stored('postgres int8', value, value);
      return stored('postgres int8', typeof value === 'string' ? fromDecimal(value) : null, value);
    },
    toPgInt8(value) {
      checkEncodable(value);
      return value.toString();
    },
    fromLong(value) {
      return stored('mongodb Long', integerFromMongo(value), value);
    },
    toLong(value, Long) {
      checkEncodable(value);
      return Long.fromBigInt(value);
    },
    contains(value): value is bigint {
      return typeof value === 'bigint' && value >= min && value <= max;
    }
  };
}

export const INT64_MIN = -(2n ** 63n);
export const INT64_MAX = 2n ** 63n - 1n;

/** Any signed 64-bit integer (storage int8 / Int64 values whose meaning is not narrower). */
export const int64 = boundedBigintCodec({ min: INT64_MIN, max: INT64_MAX, name: 'int64' });

/** Op ids: non-negative int64 (0 = "nothing yet", PROTOCOL §7.2 `after`). */
export const opId = boundedBigintCodec({ min: 0n, max: INT64_MAX, name: 'op_id' });

/** Client-supplied checkpoint request ids: positive int64 (PROTOCOL §4.3). */
export const checkpointRequestId = boundedBigintCodec({
  min: 1n,
  max: INT64_MAX,
  name: 'checkpoint_request_id'
});

/**
 * Write checkpoints as resolved and sent in sync lines and `/write-checkpoint2.json`: request ids (client-supplied
 * or generated). 0 stands for "none" in sync lines (PROTOCOL §7.3), so it is in range; negatives are not.
 */
export const writeCheckpoint = boundedBigintCodec({ min: 0n, max: INT64_MAX, name: 'write_checkpoint' });
