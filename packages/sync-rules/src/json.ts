/**
 * JSON with exact integers: parsing keeps integer literals as `bigint` (so
 * int8 values inside JSON columns keep their precision), and serialisation
 * prints `bigint` as a plain JSON integer.
 */
import { EvaluationFailure, type SqliteRow, type SqliteValue } from './sqlite-value.js';

export type JsonValue = null | boolean | number | bigint | string | JsonValue[] | { [key: string]: JsonValue };

class JsonParser {
  private index = 0;
  constructor(private readonly text: string) {}

  parseDocument(): JsonValue {
    const value = this.parseValue();
    this.skipWhitespace();
    if (this.index !== this.text.length) this.fail('unexpected trailing characters');
    return value;
  }

  private fail(reason: string): never {
    throw new EvaluationFailure(`malformed JSON (${reason} at offset ${this.index})`);
  }

  private skipWhitespace(): void {
    while (this.index < this.text.length && ' \t\n\r'.includes(this.text[this.index]!)) this.index++;
  }

  private parseValue(): JsonValue {
    this.skipWhitespace();
    const char = this.text[this.index];
    if (char === '{') return this.parseObject();
    if (char === '[') return this.parseArray();
    if (char === '"') return this.parseString();
    if (char === '-' || (char !== undefined && char >= '0' && char <= '9')) return this.parseNumber();
    for (const [word, value] of [
      ['true', true],
      ['false', false],
      ['null', null]
    ] as const) {
      if (this.text.startsWith(word, this.index)) {
        this.index += word.length;
        return value;
      }
    }
    return this.fail(char === undefined ? 'unexpected end' : `unexpected character ${JSON.stringify(char)}`);
  }

  private parseObject(): JsonValue {
    const result: { [key: string]: JsonValue } = {};
    this.index++; // {
    this.skipWhitespace();
    if (this.text[this.index] === '}') {
      this.index++;
      return result;
    }
    for (;;) {
      this.skipWhitespace();
      if (this.text[this.index] !== '"') this.fail('expected a string key');
      const key = this.parseString();
      this.skipWhitespace();
      if (this.text[this.index] !== ':') this.fail('expected ":"');
      this.index++;
      Object.defineProperty(result, key, {
        value: this.parseValue(),
        enumerable: true,
        writable: true,
        configurable: true
      });
      this.skipWhitespace();
      const next = this.text[this.index++];
      if (next === '}') return result;
      if (next !== ',') this.fail('expected "," or "}"');
    }
  }

  private parseArray(): JsonValue {
    const result: JsonValue[] = [];
    this.index++; // [
    this.skipWhitespace();
    if (this.text[this.index] === ']') {
      this.index++;
      return result;
    }
    for (;;) {
      result.push(this.parseValue());
      this.skipWhitespace();
      const next = this.text[this.index++];
      if (next === ']') return result;
      if (next !== ',') this.fail('expected "," or "]"');
    }
  }

  private parseString(): string {
    // eslint-disable-next-line no-control-regex -- JSON forbids raw control characters in strings; the class excludes them.
    const match = /^"(?:[^"\\\u0000-\u001f]|\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4}))*"/.exec(this.text.slice(this.index));
    if (!match) this.fail('invalid string');
    this.index += match[0].length;
    return JSON.parse(match[0]) as string;
  }

  private parseNumber(): number | bigint {
    const match = /^-?(?:0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?/.exec(this.text.slice(this.index));
    if (!match) this.fail('invalid number');
    this.index += match[0].length;
    if (match[1] === undefined && match[2] === undefined) {
      const integer = BigInt(match[0]);
      // Like SQLite, integers outside int64 are read as REAL.
      return integer >= -(2n ** 63n) && integer < 2n ** 63n ? integer : Number(match[0]);
    }
    return Number(match[0]);
  }
}

/** Parses JSON text, keeping integer literals as bigint. Throws {@link EvaluationFailure} on malformed input. */
export function parseJson(text: string): JsonValue {
  return new JsonParser(text).parseDocument();
}

/**
 * A REAL in JSON text, as the reference prints it: JavaScript's shortest form, with `.0` added to
 * integral values (`42.0`, `1.5`, `1e+21`) so that a REAL stays a REAL when the JSON is read again
 * (see the 'json-reprinted' entry of reference-deviations.ts).
 */
function stringifyNumber(value: number): string {
  if (!Number.isFinite(value)) throw new EvaluationFailure(`the number ${String(value)} cannot be written as JSON`);
  const text = String(value);
  return /^-?\d+$/.test(text) ? `${text}.0` : text;
}

/** Serialises JSON, printing bigint values as plain JSON integers. */
export function stringifyJson(value: JsonValue | undefined): string {
  if (value === null || value === undefined) return 'null';
  switch (typeof value) {
    case 'bigint':
      return value.toString();
    case 'number':
      return stringifyNumber(value);
    case 'boolean':
      return value ? 'true' : 'false';
    case 'string':
      return JSON.stringify(value);
    default:
      if (Array.isArray(value)) return `[${value.map((item) => stringifyJson(item)).join(',')}]`;
      return `{${Object.entries(value)
        .map(([key, item]) => `${JSON.stringify(key)}:${stringifyJson(item)}`)
        .join(',')}}`;
  }
}

/**
 * Serialises an output row as the `data` JSON of a PUT: bigint as JSON
 * integers, numbers as JSON numbers, text as strings. Blob values are left out
 * (JSON cannot carry them), as the reference implementation does.
 */
export function stringifyRow(row: SqliteRow): string {
  const parts: string[] = [];
  for (const [key, value] of Object.entries(row)) {
    if (value instanceof Uint8Array) continue;
    parts.push(`${JSON.stringify(key)}:${stringifyJson(value)}`);
  }
  return `{${parts.join(',')}}`;
}

/**
 * Converts a plain JS value (e.g. from a JWT payload or client parameters) to
 * the JSON model used here: integral numbers become bigint, like SQLite reads them.
 */
export function fromJsValue(value: unknown): JsonValue {
  if (value === null || value === undefined) return null;
  switch (typeof value) {
    case 'string':
    case 'boolean':
    case 'bigint':
      return value;
    case 'number':
      return Number.isInteger(value) ? BigInt(value) : Number.isFinite(value) ? value : null;
    case 'object': {
      if (Array.isArray(value)) return value.map((item) => fromJsValue(item));
      const result: { [key: string]: JsonValue } = {};
      for (const [key, item] of Object.entries(value)) {
        Object.defineProperty(result, key, {
          value: fromJsValue(item),
          enumerable: true,
          writable: true,
          configurable: true
        });
      }
      return result;
    }
    default:
      return null;
  }
}

/** SQLite's mapping of a JSON value to an SQL value (as `->>` and `json_extract` return it). */
export function jsonToSqlite(value: JsonValue | undefined): SqliteValue {
  if (value === null || value === undefined) return null;
  switch (typeof value) {
    case 'boolean':
      return value ? 1n : 0n;
    case 'string':
    case 'number':
    case 'bigint':
      return value;
    default:
      return stringifyJson(value);
  }
}

type PathStep = { key: string } | { index: number; fromEnd: boolean };

/** Parses a SQLite JSON path such as `$.a.b[0]`, `$."key with space"` or `$[#-1]`. */
export function parseJsonPath(path: string): PathStep[] {
  if (!path.startsWith('$')) throw new EvaluationFailure(`bad JSON path ${JSON.stringify(path)}`);
  const steps: PathStep[] = [];
  let index = 1;
  while (index < path.length) {
    const char = path[index];
    if (char === '.') {
      index++;
      if (path[index] === '"') {
        const end = path.indexOf('"', index + 1);
        if (end < 0) throw new EvaluationFailure(`bad JSON path ${JSON.stringify(path)}`);
        steps.push({ key: path.slice(index + 1, end) });
        index = end + 1;
      } else {
        const match = /^[^.[]+/.exec(path.slice(index));
        if (!match) throw new EvaluationFailure(`bad JSON path ${JSON.stringify(path)}`);
        steps.push({ key: match[0] });
        index += match[0].length;
      }
    } else if (char === '[') {
      const match = /^\[(#-)?(\d+)\]/.exec(path.slice(index));
      if (!match) throw new EvaluationFailure(`bad JSON path ${JSON.stringify(path)}`);
      steps.push({ index: Number(match[2]), fromEnd: match[1] !== undefined });
      index += match[0].length;
    } else {
      throw new EvaluationFailure(`bad JSON path ${JSON.stringify(path)}`);
    }
  }
  return steps;
}

/** Follows a path into a JSON value; `undefined` when the path does not exist. */
export function followJsonPath(value: JsonValue, steps: readonly PathStep[]): JsonValue | undefined {
  let current: JsonValue | undefined = value;
  for (const step of steps) {
    if (current === undefined || current === null || typeof current !== 'object') return undefined;
    if ('key' in step) {
      if (Array.isArray(current) || !Object.hasOwn(current, step.key)) return undefined;
      current = current[step.key];
    } else {
      if (!Array.isArray(current)) return undefined;
      const position = step.fromEnd ? current.length - step.index : step.index;
      current = position >= 0 && position < current.length ? current[position] : undefined;
    }
  }
  return current;
}
