import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { boundedBigintCodec, checkpointRequestId, int64, INT64_MAX, INT64_MIN } from '../src/index.js';

describe('checkpointRequestId codec', () => {
  it.each([
    ['1', 1n],
    [1, 1n],
    ['42', 42n],
    [Number.MAX_SAFE_INTEGER, 9007199254740991n],
    ['9223372036854775807', INT64_MAX]
  ] as const)('decodes %j', (input, expected) => {
    expect(checkpointRequestId.decode(input)).toEqual({ ok: true, value: expected });
  });

  it.each([
    0,
    -1,
    1.5,
    '1.5',
    '1e3',
    1e3 + 0.5,
    'abc',
    '',
    ' 42',
    '42 ',
    '+42',
    '0x10',
    '042',
    '-0',
    true,
    false,
    null,
    undefined,
    [],
    [1],
    {},
    '9223372036854775808',
    9223372036854775808,
    2 ** 53 + 1,
    Number.NaN,
    Infinity,
    '99999999999999999999999999999999999999',
    '-1',
    '0'
  ])('rejects %j with the accepted range in the message', (input) => {
    const result = checkpointRequestId.decode(input);
    expect(result.ok).toBe(false);
    if (!result.ok) expect(result.message).toContain('between 1 and 9223372036854775807');
  });

  it('explains that big JSON numbers must be strings', () => {
    const result = checkpointRequestId.decode(2 ** 53 + 2);
    expect(result.ok).toBe(false);
    if (!result.ok) expect(result.message).toMatch(/decimal strings/);
  });

  it('encodes as a decimal string and refuses out-of-range values', () => {
    expect(checkpointRequestId.encode(INT64_MAX)).toBe('9223372036854775807');
    expect(() => checkpointRequestId.encode(0n)).toThrow(RangeError);
    expect(() => checkpointRequestId.parse('0')).toThrow(/between 1 and/);
  });
});

describe('bounded codec properties', () => {
  const codecArb = fc
    .tuple(fc.bigInt({ min: INT64_MIN, max: INT64_MAX }), fc.bigInt({ min: INT64_MIN, max: INT64_MAX }))
    .map(([a, b]) => boundedBigintCodec({ min: a < b ? a : b, max: a < b ? b : a, name: 'x' }));

  it('round-trips every in-range value through its string encoding', () => {
    fc.assert(
      fc.property(codecArb, fc.bigInt({ min: 0n, max: 2n ** 64n }), (codec, offset) => {
        const span = codec.max - codec.min + 1n;
        const value = codec.min + (offset % span);
        expect(codec.decode(codec.encode(value))).toEqual({ ok: true, value });
      })
    );
  });

  it('decodes no value outside the range, from strings or numbers', () => {
    fc.assert(
      fc.property(codecArb, fc.bigInt({ min: -(2n ** 70n), max: 2n ** 70n }), (codec, value) => {
        fc.pre(value < codec.min || value > codec.max);
        expect(codec.decode(value.toString()).ok).toBe(false);
        if (value >= BigInt(Number.MIN_SAFE_INTEGER) && value <= BigInt(Number.MAX_SAFE_INTEGER)) {
          expect(codec.decode(Number(value)).ok).toBe(false);
        }
      })
    );
  });

  it('only ever decodes to a value within bounds, for any JSON input', () => {
    fc.assert(
      fc.property(fc.jsonValue(), fc.string(), (json, text) => {
        for (const input of [json, text]) {
          const result = int64.decode(input);
          if (result.ok) expect(int64.contains(result.value)).toBe(true);
          const id = checkpointRequestId.decode(input);
          if (id.ok) expect(id.value >= 1n).toBe(true);
        }
      })
    );
  });

  it('accepts exactly the canonical decimal strings of in-range values', () => {
    fc.assert(
      fc.property(fc.string({ unit: fc.constantFrom(...'0123456789-+. e x'.split('')) }), (text) => {
        const result = checkpointRequestId.decode(text);
        const canonical = /^[1-9][0-9]*$/.test(text) && BigInt(text) <= INT64_MAX;
        expect(result.ok).toBe(canonical);
      })
    );
  });
});
