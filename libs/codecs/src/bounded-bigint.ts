/**
 * Bounded bigint codecs: decode untrusted JSON values (numbers or decimal strings) into a
 * `bigint` within an inclusive range, and encode back to a canonical decimal string.
 *
 * JSON numbers are accepted only while they are safe integers: a larger number has
 * already been rounded by JSON.parse, so accepting it would silently store a different id.
 */

export type DecodeResult = { ok: true; value: bigint } | { ok: false; message: string };

export interface BoundedBigintCodec {
  readonly min: bigint;
  readonly max: bigint;
  /** Decode an untrusted value; never throws. */
  decode(input: unknown): DecodeResult;
  /** Decode or throw a `RangeError` with the codec's message. */
  parse(input: unknown): bigint;
  /** Canonical decimal string. Throws a `RangeError` for a value outside the range. */
  encode(value: bigint): string;
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
      if (input.length > maxDigits || !CANONICAL_DECIMAL.test(input)) {
        return { ok: false, message: `${rangeMessage}, as a decimal string or a safe JSON integer` };
      }
      return inRange(BigInt(input));
    }
    return { ok: false, message: rangeMessage };
  }

  return {
    min,
    max,
    decode,
    parse(input) {
      const result = decode(input);
      if (!result.ok) throw new RangeError(result.message);
      return result.value;
    },
    encode(value) {
      if (value < min || value > max) throw new RangeError(rangeMessage);
      return value.toString();
    },
    contains(value): value is bigint {
      return typeof value === 'bigint' && value >= min && value <= max;
    }
  };
}

export const INT64_MIN = -(2n ** 63n);
export const INT64_MAX = 2n ** 63n - 1n;

/** Any signed 64-bit integer (op ids on the wire, storage int8 values). */
export const int64 = boundedBigintCodec({ min: INT64_MIN, max: INT64_MAX, name: 'an int64' });

/** Op ids: non-negative int64. */
export const opId = boundedBigintCodec({ min: 0n, max: INT64_MAX, name: 'op_id' });

/** Client-supplied checkpoint request ids: positive int64 (PROTOCOL §4.3). */
export const checkpointRequestId = boundedBigintCodec({
  min: 1n,
  max: INT64_MAX,
  name: 'checkpoint_request_id'
});
