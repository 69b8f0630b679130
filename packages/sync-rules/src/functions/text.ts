/**
 * Text and blob functions with SQLite semantics: lengths and positions count characters (Unicode
 * code points) in text and bytes in blobs; numbers are used in their text form.
 */
import { referenceDeviation } from '../reference-deviations.js';
import {
  castToBlob,
  castToInteger,
  castToText,
  EvaluationFailure,
  INT64_MAX,
  type SqliteValue
} from '../sqlite-value.js';
import type { FunctionDefinition } from './types.js';

/** SQLite's upper()/lower() touch only ASCII letters; the reference uses full Unicode case mapping. */
function changeCase(value: SqliteValue, upper: boolean): SqliteValue {
  const text = castToText(value);
  if (text === null) return null;
  if (referenceDeviation('unicode-case')) return upper ? text.toUpperCase() : text.toLowerCase();
  return text.replace(upper ? /[a-z]+/g : /[A-Z]+/g, (letters) =>
    upper ? letters.toUpperCase() : letters.toLowerCase()
  );
}

/** Code points of text, so that characters outside the BMP count once, as in SQLite. */
const characters = (text: string): string[] => Array.from(text);

const bigMin = (a: bigint, b: bigint): bigint => (a < b ? a : b);

/**
 * SQLite's substr(X, Y, Z) (func.c substrFunc): positions are 1-based, a negative start counts from
 * the end, start 0 is one before the first character, a negative length takes the characters before
 * the start. Characters for text, bytes for blobs.
 */
function substr(args: readonly SqliteValue[]): SqliteValue {
  const [value, startValue, lengthValue] = args;
  if (value === null || startValue === null || lengthValue === null) return null;
  // SQLite reads an empty blob as a NULL pointer and returns NULL.
  if (value instanceof Uint8Array && value.length === 0) return null;
  const units: ArrayLike<number> | string[] =
    value instanceof Uint8Array ? value : characters(castToText(value ?? null) ?? '');
  const length = BigInt(units.length);
  let start = castToInteger(startValue!)!;
  let count = lengthValue === undefined ? INT64_MAX : castToInteger(lengthValue)!;
  let takeBefore = false;
  if (count < 0n) {
    count = -count;
    takeBefore = true;
  }
  if (start < 0n) {
    start += length;
    if (start < 0n) {
      count += start;
      if (count < 0n) count = 0n;
      start = 0n;
    }
  } else if (start > 0n) {
    start -= 1n;
  } else if (count > 0n) {
    count -= 1n;
  }
  if (takeBefore) {
    start -= count;
    if (start < 0n) {
      count += start;
      start = 0n;
    }
  }
  const from = Number(bigMin(start, length));
  const to = Number(bigMin(start + count, length));
  if (value instanceof Uint8Array) return value.slice(from, Math.max(from, to));
  return (units as string[]).slice(from, Math.max(from, to)).join('');
}

function toHex(bytes: Uint8Array): string {
  let hex = '';
  for (const byte of bytes) hex += byte.toString(16).padStart(2, '0');
  return hex.toUpperCase();
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** Index of `needle` in `haystack` (bytes), or -1. */
function indexOfBytes(haystack: Uint8Array, needle: Uint8Array): number {
  outer: for (let i = 0; i + needle.length <= haystack.length; i++) {
    for (let j = 0; j < needle.length; j++) if (haystack[i + j] !== needle[j]) continue outer;
    return i;
  }
  return -1;
}

export const TEXT_FUNCTIONS: Record<string, FunctionDefinition> = {
  upper: { minArgs: 1, maxArgs: 1, call: ([value]) => changeCase(value!, true) },
  lower: { minArgs: 1, maxArgs: 1, call: ([value]) => changeCase(value!, false) },
  length: {
    minArgs: 1,
    maxArgs: 1,
    call: ([value]) => {
      if (value === null || value === undefined) return null;
      if (value instanceof Uint8Array) return BigInt(value.length);
      const text = castToText(value)!;
      // SQLite counts text characters up to the first NUL.
      const nul = text.indexOf('\u0000');
      return BigInt(characters(nul < 0 ? text : text.slice(0, nul)).length);
    }
  },
  substr: { minArgs: 2, maxArgs: 3, call: substr },
  substring: { minArgs: 2, maxArgs: 3, call: substr },
  instr: {
    minArgs: 2,
    maxArgs: 2,
    call: ([haystack, needle]) => {
      if (haystack === null || needle === null) return null;
      if (haystack instanceof Uint8Array && needle instanceof Uint8Array) {
        return BigInt(indexOfBytes(haystack, needle) + 1);
      }
      const text = castToText(haystack!)!;
      const index = text.indexOf(castToText(needle!)!);
      return index < 0 ? 0n : BigInt(characters(text.slice(0, index)).length + 1);
    }
  },
  /** hex(NULL) is '' in SQLite too. */
  hex: { minArgs: 1, maxArgs: 1, call: ([value]) => toHex(castToBlob(value!) ?? new Uint8Array()) },
  /** Not in SQLite; the reference encodes the bytes (text as UTF-8) in standard base64, and NULL as ''. */
  base64: {
    minArgs: 1,
    maxArgs: 1,
    call: ([value]) => Buffer.from(castToBlob(value!) ?? new Uint8Array()).toString('base64')
  },
  /**
   * Not in core SQLite; as its uuid extension and the reference: the 16 bytes of a UUID in its
   * canonical text form (any version, either case). Other text cannot be converted, which is an error
   * for the row; a blob is returned as it is.
   */
  uuid_blob: {
    minArgs: 1,
    maxArgs: 1,
    call: ([value]) => {
      if (value === null || value === undefined) return null;
      if (value instanceof Uint8Array) return value;
      const text = castToText(value)!;
      if (!UUID.test(text)) throw new EvaluationFailure(`uuid_blob(): ${JSON.stringify(text)} is not a UUID`);
      return Uint8Array.from(Buffer.from(text.replaceAll('-', ''), 'hex'));
    }
  }
};
