/**
 * SQLite's text form of a REAL (`CAST(r AS TEXT)`, `r || ''`), digit for digit.
 *
 * SQLite (3.47+) renders a REAL with `%!.17g`: it derives 18 significant digits with 64-bit integer
 * arithmetic (sqlite3Fp2Convert10), rounds them half-up to 17, and uses fewer digits only when the
 * 17 end in `99…` or `000…` and the shorter form reads back as the same double (sqlite3FpDecode).
 * So 0.1 prints as `0.1` and 1/3 as `0.33333333333333331`, while JavaScript would print
 * `0.3333333333333333`. This follows sqlite3.c step by step with BigInt.
 */

const pwr10to2 = (p: number): number => (p * 108853) >> 15;
const pwr2to10 = (p: number): number => (p * 78913) >> 18;

/** The most significant 64 bits of 10^p (SQLite's powerOfTen; exact for 0 ≤ p ≤ 26, where most values fall). */
function powerOfTen(p: number): bigint {
  const shift = 63 - pwr10to2(p);
  if (p >= 0) {
    const value = 10n ** BigInt(p);
    return shift >= 0 ? value << BigInt(shift) : value >> BigInt(-shift);
  }
  return (1n << BigInt(shift)) / 10n ** BigInt(-p);
}

/** r = m·2^e (m with its top bit set) → about 18 significant decimal digits d and exponent x, r ≈ d·10^x. */
function convertToDecimal(m: bigint, e: number): { digits: bigint; exponent: number } {
  const n = 18;
  const p = n - 1 - pwr2to10(e + 63);
  let h = (m * powerOfTen(p)) >> 64n;
  h >>= BigInt(-(e + pwr10to2(p) + 2));
  return { digits: (h + ((h << 1n) & 2n)) >> 1n, exponent: -p };
}

function decompose(value: number): { m: bigint; e: number } {
  const view = new DataView(new ArrayBuffer(8));
  view.setFloat64(0, value);
  const bits = view.getBigUint64(0);
  const biased = Number((bits >> 52n) & 0x7ffn);
  let m = bits & 0x000fffffffffffffn;
  if (biased === 0) {
    const leadingZeros = 64 - m.toString(2).length;
    return { m: m << BigInt(leadingZeros), e: -1074 - leadingZeros };
  }
  m = (m << 11n) | (1n << 63n);
  return { m, e: biased - 1086 };
}

/** Significant digits (no trailing zeros) and decimal point position of a positive finite value, as sqlite3FpDecode(r, 17, 20). */
function decode(value: number): { digits: string; point: number } {
  const { m, e } = decompose(value);
  const converted = convertToDecimal(m, e);
  const z = converted.digits.toString().split('');
  let n = z.length;
  let point = n + converted.exponent;
  let round = 17;
  if (round < n) {
    const digitsValue = (count: number): bigint => BigInt(z.slice(0, count).join('') || '0');
    const readsBack = (candidate: bigint, count: number): boolean =>
      Number(`${candidate}e${converted.exponent + n - count}`) === value;
    if (z[15] === '9' && z[14] === '9') {
      // 17 digits ending in 99: try the shorter number rounded up.
      let jj = 14;
      while (jj > 0 && z[jj - 1] === '9') jj--;
      const candidate = jj === 0 ? 1n : digitsValue(jj) + 1n;
      if (readsBack(candidate, jj)) round = jj + 1;
    } else if (point >= n || (z[15] === '0' && z[14] === '0' && z[13] === '0')) {
      let jj = 13;
      while (z[jj - 1] === '0') jj--;
      if (readsBack(digitsValue(jj), jj)) round = jj + 1;
    }
    n = round;
    if (z[round]! >= '5') {
      let j = round - 1;
      for (;;) {
        const digit = Number(z[j]) + 1;
        z[j] = String(digit % 10);
        if (digit <= 9) break;
        z[j] = '0';
        if (j === 0) {
          z.unshift('1');
          n++;
          point++;
          break;
        }
        j--;
      }
    }
  }
  let digits = z.slice(0, n).join('');
  digits = digits.replace(/0+$/, '') || '0';
  return { digits, point };
}

/** Formats a REAL exactly as SQLite's `%!.17g` (CAST(r AS TEXT)): `2.0`, `0.1`, `1.0e+21`, `1.0e-05`; zero (also -0) is `0.0`. */
export function sqliteRealToText(value: number): string {
  if (Number.isNaN(value)) return 'NaN';
  if (!Number.isFinite(value)) return value > 0 ? 'Inf' : '-Inf';
  if (value === 0) return '0.0';
  const sign = value < 0 ? '-' : '';
  const { digits, point } = decode(Math.abs(value));
  const exponent = point - 1;
  if (exponent < -4 || exponent > 16) {
    const exponentSign = exponent < 0 ? '-' : '+';
    return `${sign}${digits[0]}.${digits.slice(1) || '0'}e${exponentSign}${String(Math.abs(exponent)).padStart(2, '0')}`;
  }
  if (point > 0) return `${sign}${digits.slice(0, point).padEnd(point, '0')}.${digits.slice(point) || '0'}`;
  return `${sign}0.${'0'.repeat(-point)}${digits}`;
}
