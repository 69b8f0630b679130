/**
 * JSON with exact 64-bit integers (DESIGN.md "JSON-with-bigint helpers"). `JSON.parse` rounds every integer beyond
 * 2^53 to the nearest double, so stored JSON holding int8 values (row data, parameter rows) is read with
 * {@link parseJsonWithBigints} instead, and written back with {@link stringifyJsonWithBigints}.
 */

/** A parsed JSON value whose integers may be bigint. */
export type JsonWithBigints =
  null | boolean | number | bigint | string | JsonWithBigints[] | { [key: string]: JsonWithBigints };

export interface ParseJsonWithBigintsOptions {
  /**
   * Which integer literals (no fraction, no exponent) become bigint:
   * - `'unsafe'` (default): those beyond ±(2^53−1), the ones a number would round; the rest stay numbers, so the
   *   result equals `JSON.parse`'s wherever that one is exact.
   * - `'int64'`: every one within the signed 64-bit range, as SQLite reads JSON integers (INTEGER); literals
   *   beyond it become numbers, as SQLite reads them as REAL.
   */
  integers?: 'unsafe' | 'int64';
}

const INT64_MIN = -(2n ** 63n);
const INT64_MAX = 2n ** 63n - 1n;
const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);

/** A run of 16 digits or more: the only way an integer literal can be beyond 2^53−1 (which has 16 digits). */
const LONG_DIGIT_RUN = /[0-9]{16}/;
// eslint-disable-next-line no-control-regex -- JSON forbids raw U+0000–U+001F in strings; the token must name them
const STRING_TOKEN = /"(?:[^"\\\u0000-\u001f]|\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4}))*"/y;
const NUMBER_TOKEN = /-?(?:0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?/y;

class JsonWithBigintsParser {
  private index = 0;

  constructor(
    private readonly text: string,
    private readonly integers: 'unsafe' | 'int64'
  ) {}

  parseDocument(): JsonWithBigints {
    const value = this.parseValue();
    this.skipWhitespace();
    if (this.index !== this.text.length) this.fail('unexpected trailing characters');
    return value;
  }

  private fail(reason: string): never {
    throw new SyntaxError(`Malformed JSON: ${reason} at offset ${this.index}`);
  }

  private skipWhitespace(): void {
    const { text } = this;
    for (;;) {
      const char = text.charCodeAt(this.index);
      // space, \t, \n, \r: the only whitespace JSON allows
      if (char === 0x20 || char === 0x09 || char === 0x0a || char === 0x0d) this.index++;
      else return;
    }
  }

  private parseValue(): JsonWithBigints {
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

  private parseObject(): JsonWithBigints {
    const result: { [key: string]: JsonWithBigints } = {};
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
      // defineProperty, not assignment: a "__proto__" key is an own property, as with JSON.parse.
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

  private parseArray(): JsonWithBigints {
    const result: JsonWithBigints[] = [];
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
    STRING_TOKEN.lastIndex = this.index;
    const match = STRING_TOKEN.exec(this.text);
    if (!match) this.fail('invalid string');
    this.index += match[0].length;
    const token = match[0];
    return token.includes('\\') ? (JSON.parse(token) as string) : token.slice(1, -1);
  }

  private parseNumber(): number | bigint {
    NUMBER_TOKEN.lastIndex = this.index;
    const match = NUMBER_TOKEN.exec(this.text);
    if (!match) this.fail('invalid number');
    this.index += match[0].length;
    const token = match[0];
    if (match[1] !== undefined || match[2] !== undefined) return Number(token);
    if (this.integers === 'int64') {
      const integer = BigInt(token);
      return integer >= INT64_MIN && integer <= INT64_MAX ? integer : Number(token);
    }
    // Up to 15 digits is always a safe integer; "-0" stays the number -0, as with JSON.parse.
    if (token.length <= 15) return Number(token);
    const integer = BigInt(token);
    return integer >= -MAX_SAFE && integer <= MAX_SAFE ? Number(token) : integer;
  }
}

/**
 * Parses JSON text like `JSON.parse`, but keeps integer literals exact as bigint (see
 * {@link ParseJsonWithBigintsOptions.integers}). Throws `SyntaxError` on malformed text.
 */
export function parseJsonWithBigints(text: string, options: ParseJsonWithBigintsOptions = {}): JsonWithBigints {
  const integers = options.integers ?? 'unsafe';
  // Fast path: without a 16-digit run no integer can be unsafe, and JSON.parse gives the same result, faster.
  if (integers === 'unsafe' && !LONG_DIGIT_RUN.test(text)) return JSON.parse(text) as JsonWithBigints;
  return new JsonWithBigintsParser(text, integers).parseDocument();
}

function isBigintTypeError(error: unknown): boolean {
  return error instanceof TypeError && /BigInt/i.test(error.message);
}

/**
 * `JSON.stringify` that prints bigint values as plain JSON integers (exact, as {@link parseJsonWithBigints} reads
 * them back). Everything else is serialised exactly as `JSON.stringify` does.
 */
export function stringifyJsonWithBigints(value: unknown): string {
  try {
    return JSON.stringify(value);
  } catch (error) {
    // Only a bigint somewhere in the value makes JSON.stringify throw this; other errors (cycles) are real.
    if (!isBigintTypeError(error)) throw error;
    return stringifySlow(value, '') ?? 'null';
  }
}

/** JSON.stringify's algorithm (toJSON, skipped undefined/functions/symbols, null in arrays) plus bigint literals. */
function stringifySlow(value: unknown, key: string): string | undefined {
  if (typeof value === 'object' && value !== null && typeof (value as { toJSON?: unknown }).toJSON === 'function') {
    value = (value as { toJSON(key: string): unknown }).toJSON(key);
  }
  if (typeof value === 'bigint') return value.toString();
  if (value === null || typeof value !== 'object') return JSON.stringify(value);
  if (Array.isArray(value)) {
    return `[${value.map((item, index) => stringifySlow(item, String(index)) ?? 'null').join(',')}]`;
  }
  const parts: string[] = [];
  for (const [entryKey, entry] of Object.entries(value)) {
    const text = stringifySlow(entry, entryKey);
    if (text !== undefined) parts.push(`${JSON.stringify(entryKey)}:${text}`);
  }
  return `{${parts.join(',')}}`;
}

/** JSON for API responses: bigints cross JSON as decimal strings (ids, DESIGN.md). */
export function stringifyWithBigints(value: unknown): string {
  return JSON.stringify(value, (_key, v: unknown) => (typeof v === 'bigint' ? v.toString() : v));
}
