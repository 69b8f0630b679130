/**
 * Bucket ids (PROTOCOL §11): `<definition name>` + JSON array of the bucket
 * parameter values in declaration order, without spaces — `global[]`,
 * `by_org["o1"]`, `by_pair["a",1]`. An integral REAL and the same INTEGER give
 * the same id.
 */
import { EvaluationFailure, type SqliteValue } from './sqlite-value.js';

/** Values allowed as bucket parameters and lookup values: text, integer, real. */
export type BucketParameterValue = string | bigint | number;

function isBucketParameterValue(value: SqliteValue): value is BucketParameterValue {
  return (
    typeof value === 'string' || typeof value === 'bigint' || (typeof value === 'number' && Number.isFinite(value))
  );
}

/** JSON text of one bucket parameter value; integral numbers are written without decimals. */
export function serializeBucketParameterValue(value: BucketParameterValue): string {
  if (typeof value === 'bigint') return value.toString();
  if (typeof value === 'number') return Number.isInteger(value) ? BigInt(value).toString() : JSON.stringify(value);
  return JSON.stringify(value);
}

/** The JSON array of bucket parameter values, without spaces. */
export function serializeBucketParameters(values: readonly BucketParameterValue[]): string {
  return `[${values.map(serializeBucketParameterValue).join(',')}]`;
}

/** Formats a bucket id, e.g. `formatBucketId('by_pair', ['a', 1n])` → `by_pair["a",1]`. */
export function formatBucketId(definition: string, values: readonly BucketParameterValue[]): string {
  return `${definition}${serializeBucketParameters(values)}`;
}

/** Checks a value used as a bucket parameter; NULL yields `undefined` (no bucket), blobs are an error. */
export function bucketParameterOrUndefined(value: SqliteValue, what: string): BucketParameterValue | undefined {
  if (value === null) return undefined;
  if (isBucketParameterValue(value)) return value;
  throw new EvaluationFailure(`${what} is a blob, which cannot be a bucket parameter value`);
}

/** Two values are the same bucket parameter if they serialise identically (1 and 1.0 are the same). */
export function sameBucketParameter(a: BucketParameterValue, b: BucketParameterValue): boolean {
  return serializeBucketParameterValue(a) === serializeBucketParameterValue(b);
}
