import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  parseJsonWithBigints,
  stringifyJsonWithBigints,
  stringifyWithBigints,
  type JsonWithBigints
} from '../src/index.js';

const unsafeBigint = fc.oneof(
  fc.bigInt({ min: -(2n ** 80n), max: -(2n ** 53n) }),
  fc.bigInt({ min: 2n ** 53n, max: 2n ** 80n }),
  fc.constantFrom(-(2n ** 63n), 2n ** 63n - 1n, 2n ** 53n, -(2n ** 53n))
);
/** JSON values with exact bigints; doubles stay below 2^53 (a whole double beyond it is printed as an integer). */
const { value: jsonWithBigints } = fc.letrec<{ value: JsonWithBigints }>((tie) => ({
  value: fc.oneof(
    { depthSize: 'small' },
    fc.constant(null),
    fc.boolean(),
    fc.string(),
    fc.integer(),
    fc.double({ min: -1e15, max: 1e15, noNaN: true }).map((x) => (Object.is(x, -0) ? 0 : x)),
    unsafeBigint,
    fc.array(tie('value'), { maxLength: 4 }),
    fc.dictionary(fc.string(), tie('value'), { maxKeys: 4 })
  )
}));

describe('parseJsonWithBigints', () => {
  it('keeps integers beyond 2^53 exact, 2^63−1 included', () => {
    expect(parseJsonWithBigints('{"id":9223372036854775807,"n":42,"neg":-9223372036854775808}')).toEqual({
      id: 9223372036854775807n,
      n: 42,
      neg: -9223372036854775808n
    });
    expect(parseJsonWithBigints('[9007199254740991, 9007199254740992, 1.5, 1e400]')).toEqual([
      9007199254740991,
      9007199254740992n,
      1.5,
      Infinity
    ]);
    expect(parseJsonWithBigints('"12345678901234567890"')).toBe('12345678901234567890');
  });

  it('round-trips any value with bigints through stringifyJsonWithBigints', () => {
    fc.assert(
      fc.property(jsonWithBigints, (value) => {
        expect(parseJsonWithBigints(stringifyJsonWithBigints(value))).toEqual(value);
      })
    );
  });

  it('equals JSON.parse on plain JSON, and rejects exactly what JSON.parse rejects', () => {
    fc.assert(
      fc.property(fc.jsonValue(), (value) => {
        const text = JSON.stringify(value);
        const unsafe = /[0-9]{16}/.test(text); // only there may the two differ (bigint vs rounded number)
        if (!unsafe) expect(parseJsonWithBigints(text)).toEqual(JSON.parse(text));
      })
    );
    const fragments = fc.constantFrom(...'{}[]",:0123456789-+.eE tfnrulase\\u\n'.split(''), '12345678901234567');
    fc.assert(
      fc.property(fc.array(fragments, { maxLength: 30 }), (parts) => {
        const text = parts.join('');
        let plain: 'ok' | 'error' = 'ok';
        try {
          JSON.parse(text);
        } catch {
          plain = 'error';
        }
        let exact: 'ok' | 'error' = 'ok';
        try {
          parseJsonWithBigints(text);
          parseJsonWithBigints(text, { integers: 'int64' });
        } catch (error) {
          expect(error).toBeInstanceOf(SyntaxError);
          exact = 'error';
        }
        expect(exact).toBe(plain);
      })
    );
  });

  it("integers: 'int64' reads every int64 literal as bigint, larger ones as numbers (SQLite's reading)", () => {
    expect(
      parseJsonWithBigints('[1, -0, 1.0, 9223372036854775807, 9223372036854775808]', { integers: 'int64' })
    ).toEqual([1n, 0n, 1, 9223372036854775807n, 9223372036854775808]);
  });

  it('keeps "__proto__" as an own key, as JSON.parse does', () => {
    const parsed = parseJsonWithBigints('{"__proto__": 12345678901234567890}') as Record<string, unknown>;
    expect(Object.keys(parsed)).toEqual(['__proto__']);
    expect(Object.getPrototypeOf(parsed)).toBe(Object.prototype);
  });
});

describe('stringify helpers', () => {
  it('stringifyJsonWithBigints matches JSON.stringify where there is no bigint', () => {
    const date = new Date(0);
    const value = { a: undefined, b: [undefined, () => 1], c: date, d: Number.NaN, e: 'x' };
    expect(stringifyJsonWithBigints(value)).toBe(JSON.stringify(value));
    expect(stringifyJsonWithBigints({ ...value, big: 2n ** 64n })).toBe(
      JSON.stringify(value).slice(0, -1) + ',"big":18446744073709551616}'
    );
  });
  it('stringifyWithBigints writes bigints as decimal strings (ids in API responses)', () => {
    expect(stringifyWithBigints({ op_id: 9223372036854775807n })).toBe('{"op_id":"9223372036854775807"}');
  });
});
