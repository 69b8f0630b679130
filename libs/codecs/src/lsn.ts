/**
 * Postgres WAL positions (LSNs) in the normalised text form `XXXXXXXX/XXXXXXXX`
 * (two zero-padded upper-case hex halves), which sorts correctly as plain text.
 */

export type Lsn = string & { readonly __lsn: unique symbol };

export const ZERO_LSN = '00000000/00000000' as Lsn;

const LSN_PATTERN = /^([0-9A-Fa-f]{1,8})\/([0-9A-Fa-f]{1,8})$/;

/** Parse any Postgres LSN text (`16/B374D848`) into its normalised form. Throws on bad input. */
export function normalizeLsn(text: string): Lsn {
  const match = LSN_PATTERN.exec(text);
  if (!match) throw new RangeError(`Invalid LSN: ${JSON.stringify(text)}`);
  return `${match[1]!.toUpperCase().padStart(8, '0')}/${match[2]!.toUpperCase().padStart(8, '0')}` as Lsn;
}

export function lsnToBigint(lsn: string): bigint {
  const normalized = normalizeLsn(lsn);
  return BigInt('0x' + normalized.replace('/', ''));
}

export function lsnFromBigint(value: bigint): Lsn {
  if (value < 0n || value > 0xffff_ffff_ffff_ffffn) throw new RangeError(`LSN out of range: ${value}`);
  const hex = value.toString(16).toUpperCase().padStart(16, '0');
  return `${hex.slice(0, 8)}/${hex.slice(8)}` as Lsn;
}

export function compareLsn(a: string, b: string): number {
  const x = lsnToBigint(a);
  const y = lsnToBigint(b);
  return x < y ? -1 : x > y ? 1 : 0;
}
