/**
 * The MongoDB `Long` boundary without a dependency on the driver: a stored Int64 is read through its structural
 * shape (`toBigInt()`, or `{ high, low, unsigned }` as the `bson` package's `Long` has it), and written through the
 * `Long` class the caller passes in. The driver stays a dependency of `storage-mongo` alone (DESIGN.md).
 */

/** What a `Long` read back from the driver looks like; `toBigInt` is preferred when present. */
export type LongLike = { toBigInt(): bigint } | { high: number; low: number; unsigned?: boolean };

/** The part of the driver's `Long` class the encoders use (`Long` from `mongodb` or `bson`). */
export interface LongClass<L> {
  fromBigInt(value: bigint, unsigned?: boolean): L;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null;
}

/**
 * The exact integer of a stored MongoDB integer: a `Long` (by shape), a `bigint` (driver option `useBigInt64`), or
 * a JS number from an Int32 or whole Double (older data, or values the driver promoted). Null when the value is no
 * integer at all, so the caller can raise its typed error naming the field.
 */
export function integerFromMongo(value: unknown): bigint | null {
  if (typeof value === 'bigint') return value;
  if (typeof value === 'number') return Number.isSafeInteger(value) ? BigInt(value) : null;
  if (!isObject(value)) return null;
  if (typeof value.toBigInt === 'function') {
    const result: unknown = (value as { toBigInt(): unknown }).toBigInt();
    return typeof result === 'bigint' ? result : null;
  }
  const { high, low, unsigned } = value;
  if (typeof high !== 'number' || typeof low !== 'number' || !Number.isInteger(high) || !Number.isInteger(low)) {
    return null;
  }
  // `bson` keeps both halves as signed int32s; `>>> 0` reads them as the unsigned 32-bit words they are.
  const bits = (BigInt(high >>> 0) << 32n) | BigInt(low >>> 0);
  return unsigned === true ? BigInt.asUintN(64, bits) : BigInt.asIntN(64, bits);
}
