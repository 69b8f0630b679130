/**
 * fast-check generator of SQL expressions for the differential test against SQLite.
 *
 * Only syntax that SQLite, pgsql-ast-parser (the reference's parser, and this package's) and sync
 * rules all accept is generated: every compound expression is parenthesised (SQLite and Postgres rank
 * `||`, `NOT` and comparisons differently), reals are written as plain decimals (pgsql-ast-parser reads
 * `1e5` as `1 AS e5`), INT64_MIN is written as `(-9223372036854775807 - 1)`, and blobs are made with
 * `CAST(… AS BLOB)` instead of `x'…'` literals. JSON documents, JSON paths, time values and date
 * modifiers come from pools: SQLite accepts JSON5 and keeps number literals and string escapes as
 * written, which sync rules (like the reference) do not ('json-reprinted' in reference-deviations.ts),
 * so the pool holds JSON written the way both print it.
 */
import fc from 'fast-check';

const INT64_MIN = -(2n ** 63n);
const INT64_MAX = 2n ** 63n - 1n;

function integerLiteral(value: bigint): string {
  if (value === INT64_MIN) return '(-9223372036854775807 - 1)';
  return value < 0n ? `(-${-value})` : `${value}`;
}

function realLiteral(value: number): string {
  const text = String(Math.abs(value));
  const decimal = /^\d+$/.test(text) ? `${text}.0` : text;
  return value < 0 ? `(-${decimal})` : decimal;
}

function textLiteral(value: string): string {
  return `'${value.replaceAll("'", "''")}'`;
}

const integer = fc.oneof(
  fc.constantFrom(
    0n,
    1n,
    -1n,
    2n,
    7n,
    10n,
    INT64_MAX,
    INT64_MIN,
    INT64_MAX - 1n,
    INT64_MIN + 1n,
    2n ** 31n,
    2n ** 53n + 1n
  ),
  fc.bigInt({ min: -1000n, max: 1000n }),
  fc.bigInt({ min: INT64_MIN, max: INT64_MAX })
);

const real = fc.oneof(
  fc.constantFrom(0.5, 1.5, 2.0, 0.1, 0.2, 100.0, 1e15, 123456.789, 3.0e20),
  // Magnitudes where String() has no exponent, so the literal is a plain decimal.
  fc.double({ min: -1e15, max: 1e15, noNaN: true, noDefaultInfinity: true }).filter((x) => !String(x).includes('e'))
);

/** Text that looks like numbers, JSON, dates or nothing, and arbitrary Unicode (never NUL). */
const text = fc.oneof(
  fc.constantFrom(
    '',
    ' ',
    'abc',
    'ABC',
    'Hello, World',
    '12',
    ' 12 ',
    '12abc',
    '-7',
    '+3',
    '1.5',
    '1.0',
    '.5',
    '5.',
    '1e5',
    '1.5e3',
    '0x10',
    '9223372036854775807',
    '9223372036854775808',
    '-9223372036854775809',
    'ß',
    'Ärger',
    'é',
    '😀x',
    'null',
    '[1,2]',
    '{"a":1}'
  ),
  // Without NUL and U+FFFD: the parser refuses both in a query (NUL cannot be stored in Postgres text; U+FFFD marks a
  // file that was not valid UTF-8), so they are tested in query-forms.test.ts rather than compared with SQLite.
  fc
    .string({ unit: 'grapheme', maxLength: 8 })
    .filter((value) => !value.includes('\u0000') && !value.includes('\uFFFD'))
);

const JSON_DOCUMENTS = [
  '{"a":1,"b":[1,2.5,"x",null,true,false],"c":{"d":"e","n":null},"s":"text"}',
  '[1,2,3]',
  '[[1,2],[3]]',
  '[]',
  '{}',
  '"str"',
  '42',
  '1.5',
  'null',
  'true',
  '{"n":null}',
  '[42.0,-1,0.5]',
  '{"big":9223372036854775807,"neg":-9223372036854775808}',
  '{"u":"ä😀","e":"","q":"a\\"b"}',
  ' { "a" : [ 1 , 2 ] } '
];
/**
 * Malformed JSON only goes to json_valid(). Elsewhere it is an error, and SQLite may skip evaluating
 * an AND/OR operand whose value cannot matter (it orders operands by estimated cost), so an error
 * there would test SQLite's optimiser rather than semantics; the functions-json tests cover those errors.
 */
const NOT_JSON = ['not json', '{"a":', '', '[1,]', "{'a':1}"];

const JSON_PATHS = ['$', '$.a', '$.b', '$.b[1]', '$.b[#-1]', '$.c.d', '$.c', '$.missing', '$[0]', '$[1][0]', '$.n'];
const JSON_KEYS = ['a', 'b', 'c', 's', 'n', 'missing', 'big'];

const TIME_VALUES = [
  "'2023-01-31'",
  "'2023-01-31 10:20:30'",
  "'2023-01-31T10:20:30.123'",
  "'2023-01-31 10:20:30.123456Z'",
  "'2023-01-31 10:20+02:00'",
  "'2023-01-31 10:20:30 -05:30'",
  "'2024-02-29 23:59:59'",
  // Not '2023-02-31': SQLite prints such a day as given or rolled over depending on the modifiers.
  "'2023-13-01'",
  "'2023-1-01'",
  "'10:20'",
  "'10:20:30.5'",
  "'2460000.5'",
  "'1700000000'",
  '2460000.5',
  '1700000000',
  '1700000000.25',
  '0',
  '(-1)',
  "'abc'",
  "''",
  'NULL'
];

const MODIFIERS = [
  "'unixepoch'",
  "'auto'",
  "'subsec'",
  "'subsecond'",
  "'+1 day'",
  "'-3 hours'",
  "'+2 months'",
  "'-1 years'",
  "'+1.5 days'",
  "'+90 minutes'",
  "'30 seconds'",
  "'-13 months'",
  "'start of day'",
  "'start of month'",
  "'start of year'",
  "'weekday 0'",
  "'weekday 3'",
  "'bogus'",
  "'+1 fortnight'",
  "' +1 day'",
  'NULL'
];

const COMPARISONS = ['=', '!=', '<>', '<', '<=', '>', '>='];
const ARITHMETIC = ['+', '-', '*', '/', '%'];
const CAST_TYPES = ['TEXT', 'INTEGER', 'REAL', 'NUMERIC', 'BLOB'];

const leaf: fc.Arbitrary<string> = fc.oneof(
  { weight: 3, arbitrary: integer.map(integerLiteral) },
  { weight: 2, arbitrary: real.map(realLiteral) },
  { weight: 3, arbitrary: text.map(textLiteral) },
  { weight: 1, arbitrary: fc.constantFrom('NULL', 'TRUE', 'FALSE') }
);

const call = (name: string, ...args: string[]): string => `${name}(${args.join(', ')})`;

/** Expressions up to a nesting depth; the size stays small so SQLite and the evaluator see many shapes. */
export const sqlExpression: fc.Arbitrary<string> = fc.letrec<{ expression: string }>((tie) => {
  const e = tie('expression');
  const jsonDocument = fc.constantFrom(...JSON_DOCUMENTS).map(textLiteral);
  const jsonPath = fc.constantFrom(...JSON_PATHS).map(textLiteral);
  // Only keys and paths after -> and ->>: the reference (and pgsql-ast-parser) refuse a bare integer index.
  const arrowRight = fc.oneof(jsonPath, fc.constantFrom(...JSON_KEYS).map(textLiteral));
  const timeValue = fc.oneof({ weight: 4, arbitrary: fc.constantFrom(...TIME_VALUES) }, { weight: 1, arbitrary: e });
  const modifier = fc.constantFrom(...MODIFIERS);
  return {
    expression: fc.oneof(
      { depthSize: 'small', withCrossShrink: true },
      { weight: 6, arbitrary: leaf },
      fc.tuple(fc.constantFrom('-', 'NOT '), e).map(([op, operand]) => `(${op}${operand})`),
      fc
        .tuple(e, fc.constantFrom(...COMPARISONS, ...ARITHMETIC, '||', 'AND', 'OR'), e)
        .map(([left, op, right]) => `(${left} ${op} ${right})`),
      fc.tuple(e, fc.constantFrom('IS NULL', 'IS NOT NULL')).map(([operand, test]) => `(${operand} ${test})`),
      fc
        .tuple(e, fc.constantFrom('IN', 'NOT IN'), fc.array(e, { minLength: 2, maxLength: 3 }))
        .map(([left, op, items]) => `(${left} ${op} (${items.join(', ')}))`),
      fc.tuple(e, fc.constantFrom(...CAST_TYPES)).map(([operand, type]) => `CAST(${operand} AS ${type})`),
      fc
        .tuple(fc.constantFrom('upper', 'lower', 'length', 'hex', 'typeof', 'abs'), e)
        .map(([name, arg]) => call(name, arg)),
      fc.tuple(fc.constantFrom('instr', 'ifnull', 'nullif'), e, e).map(([name, a, b]) => call(name, a, b)),
      fc.tuple(e, e, e).map(([a, b, c]) => call('iif', a, b, c)),
      fc.array(e, { minLength: 2, maxLength: 3 }).map((args) => call('coalesce', ...args)),
      fc.tuple(e, e, e).map(([value, start, length]) => call('substring', value, start, length)),
      // Without a length SQLite takes up to its length limit (a build setting), so a start far below
      // the beginning would test that setting; small starts only here.
      fc
        .tuple(e, fc.integer({ min: -12, max: 12 }))
        .map(([value, start]) => call('substring', value, integerLiteral(BigInt(start)))),
      fc
        .tuple(jsonDocument, jsonPath, fc.option(jsonPath))
        .map(([doc, path, second]) =>
          second === null ? call('json_extract', doc, path) : call('json_extract', doc, path, second)
        ),
      fc
        .tuple(jsonDocument, fc.option(jsonPath))
        .map(([doc, path]) => (path === null ? call('json_array_length', doc) : call('json_array_length', doc, path))),
      fc
        .oneof(jsonDocument, fc.constantFrom(...NOT_JSON).map(textLiteral), e)
        .map((value) => call('json_valid', value)),
      fc
        .tuple(jsonDocument, fc.constantFrom('->', '->>'), arrowRight)
        .map(([doc, op, path]) => `(${doc} ${op} ${path})`),
      fc
        .tuple(fc.constantFrom('datetime', 'unixepoch'), timeValue, fc.array(modifier, { maxLength: 3 }))
        .map(([name, value, modifiers]) => call(name, value, ...modifiers))
    )
  };
}).expression;
