/**
 * Converts Postgres text output to SQLite-compatible values (PROTOCOL §9 "Values").
 *
 * Used for both paths, so snapshot and streaming produce identical values: streaming (pgoutput 't' values
 * are the type's text output) and snapshots (read with `col::text`). Assumes the session runs with
 * `TimeZone=UTC` and `DateStyle=ISO` (other offsets in timestamptz output are still converted to UTC;
 * non-ISO date styles pass through as text).
 *
 * | Postgres type                                   | SQLite value                                           |
 * |-------------------------------------------------|--------------------------------------------------------|
 * | int2, int4, int8, oid (and domains over them)   | bigint (exact)                                          |
 * | float4, float8                                  | number; NaN / Infinity / -Infinity → text 'NaN', ...   |
 * | bool                                            | 1n / 0n                                                 |
 * | numeric                                         | text, exact as printed (incl. 'NaN', 'Infinity')        |
 * | json, jsonb                                     | the JSON text as Postgres prints it (never re-parsed)  |
 * | arrays                                          | JSON array text, elements converted recursively        |
 * | date                                            | text `YYYY-MM-DD` as printed                            |
 * | timestamp                                       | text `YYYY-MM-DD HH:MM:SS[.ffffff]` as printed          |
 * | timestamptz                                     | text `YYYY-MM-DD HH:MM:SS[.ffffff]Z` (UTC)              |
 * | bytea                                           | Uint8Array                                              |
 * | pg_lsn                                          | normalised `XXXXXXXX/XXXXXXXX`                          |
 * | everything else (text, varchar, bpchar, name,   | text as printed                                         |
 * |  uuid, enums, citext, time, timetz, interval,   |                                                         |
 * |  bit, xml, inet, ... unknown types)             |                                                         |
 *
 * BC dates, `infinity` / `-infinity` and out-of-pattern date/time text pass through unchanged.
 */
import { int64, normalizeLsn } from '@syncpoint/codecs';
import { UNCHANGED_TOAST, type TupleValue } from './pgoutput-decoder.js';
import type { TypeCatalog } from './type-catalog.js';

/**
 * Same as `SqliteValue` / `SqliteRow` of `@syncpoint/sync-rules` (structurally identical; declared here to
 * avoid a package dependency for two type aliases).
 */
export type SqliteValue = string | bigint | number | null | Uint8Array;
export type SqliteRow = Record<string, SqliteValue>;

export function convertValue(text: string | null, typeOid: number, catalog: TypeCatalog): SqliteValue {
  if (text === null) return null;
  const type = catalog.get(typeOid);
  switch (type.category) {
    case 'text':
    case 'numeric':
    case 'json':
    case 'date':
    case 'timestamp':
      return text;
    case 'integer':
      // int2/int4/int8/oid text, exact and bounded to int64 (what SQLite's INTEGER holds).
      return int64.fromPgInt8(text);
    case 'float':
      return convertFloat(text);
    case 'bool':
      return text === 't' || text === 'true' ? 1n : 0n;
    case 'timestamptz':
      return convertTimestamptz(text);
    case 'bytea':
      return decodeBytea(text);
    case 'pg_lsn':
      return normalizeLsn(text);
    case 'array':
      return convertArray(text, type.elementOid!, type.delimiter ?? ',', catalog);
  }
}

export interface TupleColumn {
  name: string;
  typeOid: number;
}

/**
 * Converts a decoded tuple. Columns whose value is {@link UNCHANGED_TOAST} (an unchanged TOASTed value the
 * update did not send) are left out of `row` and listed in `unchangedToast`.
 */
export function convertTuple(
  columns: readonly TupleColumn[],
  values: readonly TupleValue[],
  catalog: TypeCatalog
): { row: SqliteRow; unchangedToast: string[] } {
  if (columns.length !== values.length) {
    throw new Error(`tuple has ${values.length} value(s) but the relation has ${columns.length} column(s)`);
  }
  const row: SqliteRow = {};
  const unchangedToast: string[] = [];
  columns.forEach((column, i) => {
    const value = values[i]!;
    if (value === UNCHANGED_TOAST) unchangedToast.push(column.name);
    else row[column.name] = convertValue(value, column.typeOid, catalog);
  });
  return { row, unchangedToast };
}

function convertFloat(text: string): number | string {
  const value = Number(text);
  // Postgres prints 'NaN', 'Infinity', '-Infinity'; non-finite REALs are not representable downstream
  // (sync-rules rejects them and JSON cannot hold them), so they stay text.
  return Number.isFinite(value) ? value : text;
}

const TIMESTAMPTZ_PATTERN = /^(\d{4,})-(\d\d)-(\d\d) (\d\d):(\d\d):(\d\d)(\.\d+)?([+-])(\d\d)(?::(\d\d)(?::(\d\d))?)?$/;

/** `2024-01-02 03:04:05.123456+00` → `2024-01-02 03:04:05.123456Z`; other offsets are shifted to UTC. */
function convertTimestamptz(text: string): string {
  const match = TIMESTAMPTZ_PATTERN.exec(text);
  if (!match) return text; // infinity, BC, non-ISO DateStyle
  const [
    ,
    year,
    month,
    day,
    hour,
    minute,
    second,
    fraction = '',
    sign,
    offsetHours,
    offsetMinutes = '00',
    offsetSeconds = '00'
  ] = match as unknown as string[];
  const offset =
    (Number(offsetHours) * 3600 + Number(offsetMinutes) * 60 + Number(offsetSeconds)) * (sign === '-' ? -1 : 1);
  if (offset === 0) return `${year}-${month}-${day} ${hour}:${minute}:${second}${fraction}Z`;
  const date = new Date(0);
  date.setUTCFullYear(Number(year), Number(month) - 1, Number(day));
  date.setUTCHours(Number(hour), Number(minute), Number(second) - offset, 0);
  const utcYear = date.getUTCFullYear();
  if (utcYear < 1) return text; // would become a BC date
  const pad = (value: number) => String(value).padStart(2, '0');
  return (
    `${String(utcYear).padStart(4, '0')}-${pad(date.getUTCMonth() + 1)}-${pad(date.getUTCDate())} ` +
    `${pad(date.getUTCHours())}:${pad(date.getUTCMinutes())}:${pad(date.getUTCSeconds())}${fraction}Z`
  );
}

/** bytea text output: hex (`\x0102`, the default) or the legacy escape format. */
function decodeBytea(text: string): Uint8Array {
  if (text.startsWith('\\x')) {
    const hex = text.slice(2);
    if (hex.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(hex))
      throw new Error(`invalid bytea hex text: ${text.slice(0, 40)}`);
    return Uint8Array.from(Buffer.from(hex, 'hex'));
  }
  const bytes: number[] = [];
  for (let i = 0; i < text.length;) {
    if (text[i] === '\\') {
      if (text[i + 1] === '\\') {
        bytes.push(0x5c);
        i += 2;
      } else {
        bytes.push(parseInt(text.slice(i + 1, i + 4), 8));
        i += 4;
      }
    } else {
      bytes.push(text.charCodeAt(i));
      i += 1;
    }
  }
  return Uint8Array.from(bytes);
}

/**
 * Postgres array text (`{1,2}`, `{{1,2},{3,4}}`, `[0:1]={1,2}`, `{"a\"b",NULL}`) → JSON array text.
 * Elements are converted with {@link convertValue}: bigint → JSON integer (exact), number → JSON number,
 * text → JSON string, SQL NULL → null; json/jsonb (and nested array) elements are embedded as JSON;
 * bytea elements (no JSON form) are kept as their `\x…` text in a JSON string.
 */
function convertArray(text: string, elementOid: number, delimiter: string, catalog: TypeCatalog): string {
  const elementType = catalog.get(elementOid);
  const embedRaw = elementType.category === 'json' || elementType.category === 'array';
  const toJson = (element: string | null): string => {
    if (element === null) return 'null';
    if (elementType.category === 'bytea') return JSON.stringify(element);
    const value = convertValue(element, elementOid, catalog);
    if (value === null) return 'null';
    if (typeof value === 'bigint') return value.toString();
    if (typeof value === 'number') return JSON.stringify(value);
    if (typeof value === 'string') return embedRaw ? value : JSON.stringify(value);
    return JSON.stringify(element);
  };
  return new ArrayTextParser(text, delimiter, toJson).parse();
}

class ArrayTextParser {
  private i = 0;

  constructor(
    private readonly text: string,
    private readonly delimiter: string,
    private readonly element: (text: string | null) => string
  ) {}

  parse(): string {
    const text = this.text;
    // Optional dimension decoration, e.g. `[0:1][1:2]=`.
    if (text[0] === '[') {
      const equals = text.indexOf('=');
      if (equals < 0) this.fail('unterminated dimension decoration');
      this.i = equals + 1;
    }
    const json = this.parseArray();
    this.skipSpace();
    if (this.i !== text.length) this.fail('unexpected text after the array');
    return json;
  }

  private parseArray(): string {
    this.skipSpace();
    if (this.text[this.i] !== '{') this.fail("expected '{'");
    this.i++;
    const items: string[] = [];
    this.skipSpace();
    if (this.text[this.i] === '}') {
      this.i++;
      return '[]';
    }
    for (;;) {
      this.skipSpace();
      const c = this.text[this.i];
      if (c === '{') items.push(this.parseArray());
      else if (c === '"') items.push(this.element(this.parseQuoted()));
      else items.push(this.element(this.parseUnquoted()));
      this.skipSpace();
      const next = this.text[this.i];
      this.i++;
      if (next === '}') return `[${items.join(',')}]`;
      if (next !== this.delimiter) this.fail(`expected '${this.delimiter}' or '}'`, this.i - 1);
    }
  }

  private parseQuoted(): string {
    let value = '';
    this.i++; // opening quote
    for (;;) {
      const c = this.text[this.i++];
      if (c === undefined) this.fail('unterminated quoted element');
      if (c === '"') return value;
      if (c === '\\') {
        const escaped = this.text[this.i++];
        if (escaped === undefined) this.fail('unterminated escape');
        value += escaped;
      } else {
        value += c;
      }
    }
  }

  /** An unquoted element; `NULL` (any case) is SQL NULL. Surrounding whitespace is not part of it. */
  private parseUnquoted(): string | null {
    let value = '';
    let escaped = false;
    for (;;) {
      const c = this.text[this.i];
      if (c === undefined) this.fail('unterminated array');
      if (c === this.delimiter || c === '}') break;
      if (c === '{' || c === '"') this.fail(`unexpected '${c}'`);
      this.i++;
      if (c === '\\') {
        const next = this.text[this.i++];
        if (next === undefined) this.fail('unterminated escape');
        value += next;
        escaped = true;
      } else {
        value += c;
      }
    }
    const trimmed = value.trim();
    if (trimmed === '') this.fail('empty unquoted element');
    return !escaped && trimmed.toUpperCase() === 'NULL' ? null : trimmed;
  }

  private skipSpace(): void {
    while (this.i < this.text.length && /\s/.test(this.text[this.i]!)) this.i++;
  }

  private fail(problem: string, at = this.i): never {
    throw new Error(`invalid Postgres array text at offset ${at} (${problem}): ${this.text.slice(0, 80)}`);
  }
}
