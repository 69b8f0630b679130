/** JSON helpers for values that may contain bigints: bigints cross JSON as decimal strings. */

export function stringifyWithBigints(value: unknown): string {
  return JSON.stringify(value, (_key, v: unknown) => (typeof v === 'bigint' ? v.toString() : v));
}
