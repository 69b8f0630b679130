/**
 * Compiles expressions of the SQL subset into evaluators over a source row
 * and/or the request (token and client parameters), with SQLite semantics.
 */
import type { Expression } from './sql/ast.js';
import { SqlSyntaxError } from './sql/syntax-error.js';
import { DATETIME_FUNCTIONS } from './functions/datetime.js';
import { GEOMETRY_FUNCTIONS } from './functions/geometry.js';
import { TEXT_FUNCTIONS } from './functions/text.js';
import type { FunctionDefinition } from './functions/types.js';
import { referenceDeviation } from './reference-deviations.js';
import {
  applyNumericAffinity,
  castToBlob,
  castToInteger,
  castToNumeric,
  castToReal,
  castToText,
  compareValues,
  EvaluationFailure,
  INT64_MAX,
  INT64_MIN,
  isTruthy,
  sqliteTypeOf,
  toNumeric,
  toSqliteValue,
  type InputRow,
  type SqliteValue
} from './sqlite-value.js';
import {
  followJsonPath,
  fromJsValue,
  jsonToSqlite,
  parseJson,
  parseJsonPath,
  stringifyJson,
  type JsonValue
} from './json.js';

/** Everything a request contributes to parameter queries. */
export interface RequestValues {
  /** `request.user_id()` / `token_parameters.user_id`: the JWT `sub` (a number when the token's `sub` is one). */
  userId: SqliteValue;
  /** `request.jwt()`: the JWT payload as JSON text. */
  jwtText: string;
  /** `request.parameters()`: the client parameters as JSON text. */
  parametersText: string;
  /** `token_parameters.<x>`: the JWT `parameters` claim. */
  tokenParameters: Readonly<Record<string, JsonValue>>;
  /** `user_parameters.<x>`: the client parameters. */
  clientParameters: Readonly<Record<string, JsonValue>>;
}

/** Connection data of a Sync Streams subscription (STREAMS §3.3). */
export interface StreamConnectionValues {
  /** `auth.user_id()`: the JWT `sub`, as text. */
  userId: string;
  auth: Readonly<Record<string, JsonValue>>;
  connection: Readonly<Record<string, JsonValue>>;
  /** NULL for the default subscription of edition 3 (§3.3). */
  subscription: Readonly<Record<string, JsonValue>> | null;
}

export interface EvaluationContext {
  row?: InputRow;
  request?: RequestValues;
  stream?: StreamConnectionValues;
}

export interface CompiledExpression {
  evaluate(context: EvaluationContext): SqliteValue;
}

/** What an expression may refer to where it appears. */
export interface CompileScope {
  /** The FROM table (column references resolve against it); absent for parameter queries without FROM. */
  table?: { name: string; alias?: string };
  /** Whether request values are available (parameter queries). */
  request: boolean;
  /** Explains why request values are not allowed here (when `request` is false). */
  requestReferenceError?: string;
  /** Explains why `bucket.x` is not allowed here. */
  bucketReferenceError: string;
  /** Sync Streams: `auth.*`, `connection.*`, `subscription.*` read {@link EvaluationContext.stream}. */
  streamConnection?: boolean;
}

/** Syntactic classification of what an expression refers to. */
export interface References {
  row: boolean;
  request: boolean;
  clientParameters: boolean;
  /** `bucket.x` references. */
  bucket: Array<Extract<Expression, { type: 'column' }>>;
}

const BUCKET_QUALIFIER = 'bucket';
const TOKEN_PARAMETERS = 'token_parameters';
const USER_PARAMETERS = 'user_parameters';
const REQUEST_NAMESPACE = 'request';

export function isBucketReference(expression: Expression): expression is Extract<Expression, { type: 'column' }> {
  return expression.type === 'column' && expression.qualifier?.toLowerCase() === BUCKET_QUALIFIER;
}

export function findReferences(
  expression: Expression,
  into: References = { row: false, request: false, clientParameters: false, bucket: [] }
): References {
  switch (expression.type) {
    case 'literal':
      break;
    case 'column': {
      const qualifier = expression.qualifier?.toLowerCase();
      if (qualifier === BUCKET_QUALIFIER) into.bucket.push(expression);
      else if (qualifier === TOKEN_PARAMETERS) into.request = true;
      else if (qualifier === USER_PARAMETERS) into.request = into.clientParameters = true;
      else into.row = true;
      break;
    }
    case 'call':
      if (expression.namespace?.toLowerCase() === REQUEST_NAMESPACE) {
        into.request = true;
        const requestFunction = expression.name.toLowerCase();
        if (requestFunction === 'parameters' || requestFunction === 'parameter') into.clientParameters = true;
      }
      expression.args.forEach((arg) => findReferences(arg, into));
      break;
    case 'unary':
    case 'cast':
      findReferences(expression.operand, into);
      break;
    case 'binary':
      findReferences(expression.left, into);
      findReferences(expression.right, into);
      break;
    case 'in_list':
      findReferences(expression.left, into);
      expression.items.forEach((item) => findReferences(item, into));
      break;
    case 'in_array':
      findReferences(expression.left, into);
      findReferences(expression.right, into);
      break;
  }
  return into;
}

function fail(message: string, node: { start: number; end: number }): never {
  throw new SqlSyntaxError(message, node.start, node.end);
}

const TRUE = 1n;
const FALSE = 0n;
const bool = (value: boolean): bigint => (value ? TRUE : FALSE);

/** Parses JSON text held in an SQL value (numbers are JSON too); NULL stays NULL. */
export function jsonOf(value: SqliteValue): JsonValue | undefined {
  if (value === null) return undefined;
  if (value instanceof Uint8Array) throw new EvaluationFailure('a blob is not valid JSON');
  return parseJson(castToText(value)!);
}

function jsonPathSteps(path: SqliteValue, shorthand: boolean): ReturnType<typeof parseJsonPath> | undefined {
  if (path === null) return undefined;
  // `json -> 2` is `$[2]`, `json -> -1` is `$[#-1]` (SQLite).
  if (shorthand && typeof path === 'bigint') {
    return [path < 0n ? { index: Number(-path), fromEnd: true } : { index: Number(path), fromEnd: false }];
  }
  const text = castToText(path)!;
  if (shorthand && !text.startsWith('$')) return [{ key: text }];
  return parseJsonPath(text);
}

/** Elements of a JSON array held in an SQL value, as SQL values; undefined for NULL or non-arrays. */
export function jsonArrayElements(value: SqliteValue): SqliteValue[] | undefined {
  const json = jsonOf(value);
  if (!Array.isArray(json)) return undefined;
  return json.map((item) => {
    if (item !== null && typeof item === 'object') {
      throw new EvaluationFailure(`the array element ${stringifyJson(item)} is not a scalar value`);
    }
    return jsonToSqlite(item);
  });
}

/** The JSON value at `path` inside an SQL value holding JSON text; undefined for NULL or a missing path. */
export function jsonExtractRaw(document: SqliteValue, path: SqliteValue): JsonValue | undefined {
  const json = jsonOf(document);
  const steps = jsonPathSteps(path, false);
  return json === undefined || steps === undefined ? undefined : followJsonPath(json, steps);
}

function jsonTypeOf(value: JsonValue): string {
  if (value === null) return 'null';
  if (value === true) return 'true';
  if (value === false) return 'false';
  if (typeof value === 'bigint') return 'integer';
  if (typeof value === 'number') return 'real';
  if (typeof value === 'string') return 'text';
  return Array.isArray(value) ? 'array' : 'object';
}

/**
 * A JSON value as SQL value where the reference reads JSON null as the text 'null' (json_extract,
 * `->>`, json_each: see 'json-null-extract' in reference-deviations.ts).
 */
function extractedJsonValue(
  value: JsonValue | undefined,
  deviation: 'json-null-extract' | 'json-each-null'
): SqliteValue {
  if (value === null && referenceDeviation(deviation)) return 'null';
  return jsonToSqlite(value);
}

/**
 * Rows of SQLite's `json_each` (columns `key`, `value`, `type`) for a JSON value: one per array element
 * (key = index) or object member (key = name), or one row with key NULL for a scalar. Containers in
 * `value` are JSON text. JSON null elements give a row too (value 'null', see 'json-each-null').
 */
export function jsonEachRows(value: JsonValue | undefined): Array<Record<string, SqliteValue>> {
  if (value === undefined) return [];
  const row = (key: SqliteValue, item: JsonValue) => ({
    key,
    value: extractedJsonValue(item, 'json-each-null'),
    type: jsonTypeOf(item)
  });
  if (Array.isArray(value)) return value.map((item, index) => row(BigInt(index), item));
  if (value !== null && typeof value === 'object') return Object.entries(value).map(([key, item]) => row(key, item));
  return [row(null, value)];
}

function arithmetic(
  operator: '+' | '-' | '*' | '/' | '%',
  leftValue: SqliteValue,
  rightValue: SqliteValue
): SqliteValue {
  const left = toNumeric(leftValue);
  const right = toNumeric(rightValue);
  if (left === null || right === null) return null;
  if (typeof left === 'bigint' && typeof right === 'bigint') {
    let result: bigint;
    switch (operator) {
      case '+':
        result = left + right;
        break;
      case '-':
        result = left - right;
        break;
      case '*':
        result = left * right;
        break;
      case '/':
        if (right === 0n) return null;
        result = left / right;
        break;
      case '%':
        if (right === 0n) return null;
        result = left % right;
        break;
    }
    if (result >= INT64_MIN && result <= INT64_MAX) return result;
    // On integer overflow SQLite redoes the operation in floating point (each operand rounded to a
    // double first, which can differ from rounding the exact result).
    return floatArithmetic(operator, Number(left), Number(right), leftValue, rightValue);
  }
  return floatArithmetic(operator, Number(left), Number(right), leftValue, rightValue);
}

function floatArithmetic(
  operator: '+' | '-' | '*' | '/' | '%',
  a: number,
  b: number,
  leftValue: SqliteValue,
  rightValue: SqliteValue
): SqliteValue {
  switch (operator) {
    case '+':
      return a + b;
    case '-':
      return a - b;
    case '*':
      return a * b;
    case '/':
      return b === 0 ? null : a / b;
    case '%': {
      // SQLite takes the integer value of each original operand here (so text '1e5' counts as 1),
      // and the result is REAL because an operand was not an INTEGER.
      const divisor = castToInteger(rightValue)!;
      return divisor === 0n ? null : Number(castToInteger(leftValue)! % divisor);
    }
  }
}

function compare(operator: '=' | '!=' | '<' | '<=' | '>' | '>=', left: SqliteValue, right: SqliteValue): SqliteValue {
  if (left === null || right === null) return null;
  const order = compareValues(left, right);
  switch (operator) {
    case '=':
      return bool(order === 0);
    case '!=':
      return bool(order !== 0);
    case '<':
      return bool(order < 0);
    case '<=':
      return bool(order <= 0);
    case '>':
      return bool(order > 0);
    case '>=':
      return bool(order >= 0);
  }
}

/** `x IN (values)` with SQL NULL semantics. */
function inValues(needle: SqliteValue, haystack: readonly SqliteValue[]): SqliteValue {
  if (needle === null) return null;
  let sawNull = false;
  for (const candidate of haystack) {
    if (candidate === null) sawNull = true;
    else if (compareValues(needle, candidate) === 0) return TRUE;
  }
  return sawNull ? null : FALSE;
}

function not(value: SqliteValue): SqliteValue {
  return value === null ? null : bool(!isTruthy(value));
}

/** SQLite's affinity of an expression as a comparison operand: only CAST gives one here (columns of replicated rows have no declared type). */
type Affinity = 'numeric' | 'text' | 'none';

function affinityOf(expression: Expression): Affinity {
  if (expression.type !== 'cast') return 'none';
  if (expression.targetType === 'TEXT') return 'text';
  return expression.targetType === 'BLOB' ? 'none' : 'numeric';
}

/**
 * Converts the operand values of a comparison as SQLite does before comparing: when one side has
 * INTEGER/REAL/NUMERIC affinity and the other not, the other gets NUMERIC affinity (well-formed numeric
 * text becomes a number); when one side has TEXT affinity and the other none, numbers on the other side
 * become text. So `CAST(x AS INTEGER) = '5'` compares 5 with 5, and `CAST(5 AS TEXT) = 5` is true.
 */
function applyComparisonAffinity(
  leftAffinity: Affinity,
  rightAffinity: Affinity,
  left: SqliteValue,
  right: SqliteValue
): [SqliteValue, SqliteValue] {
  if (leftAffinity === 'numeric' && rightAffinity !== 'numeric') return [left, applyNumericAffinity(right)];
  if (rightAffinity === 'numeric' && leftAffinity !== 'numeric') return [applyNumericAffinity(left), right];
  if (leftAffinity === 'text' && rightAffinity === 'none') return [left, applyTextAffinity(right)];
  if (rightAffinity === 'text' && leftAffinity === 'none') return [applyTextAffinity(left), right];
  return [left, right];
}

function applyTextAffinity(value: SqliteValue): SqliteValue {
  return typeof value === 'bigint' || typeof value === 'number' ? castToText(value) : value;
}

const CORE_FUNCTIONS: Record<string, FunctionDefinition> = {
  typeof: { minArgs: 1, maxArgs: 1, call: ([value]) => sqliteTypeOf(value!) },
  // ifnull, coalesce and iif evaluate arguments only as far as needed, as SQLite does: an argument
  // that is never reached cannot fail the row.
  ifnull: {
    minArgs: 2,
    maxArgs: 2,
    call: ([a, b]) => (a !== null ? a! : b!),
    lazy: ([a, b]) => {
      const first = a!();
      return first !== null ? first : b!();
    }
  },
  coalesce: {
    minArgs: 2,
    maxArgs: Infinity,
    call: (args) => args.find((value) => value !== null) ?? null,
    lazy: (args) => {
      for (const arg of args) {
        const value = arg();
        if (value !== null) return value;
      }
      return null;
    }
  },
  nullif: {
    minArgs: 2,
    maxArgs: 2,
    call: ([a, b]) => (a !== null && b !== null && compareValues(a!, b!) === 0 ? null : a!)
  },
  iif: {
    minArgs: 3,
    maxArgs: 3,
    call: ([condition, a, b]) => (isTruthy(condition!) ? a! : b!),
    lazy: ([condition, a, b]) => (isTruthy(condition!()) ? a!() : b!())
  },
  abs: {
    minArgs: 1,
    maxArgs: 1,
    call: ([value]) => {
      if (value === null || value === undefined) return null;
      // SQLite: INTEGER stays INTEGER; anything else (REAL, text, blob) is read as a REAL.
      if (typeof value !== 'bigint') return Math.abs(castToReal(value)!);
      if (value === INT64_MIN) throw new EvaluationFailure('integer overflow in abs()');
      return value < 0n ? -value : value;
    }
  },
  json_extract: {
    minArgs: 2,
    maxArgs: Infinity,
    call: ([document, ...paths]) => {
      const json = jsonOf(document!);
      if (json === undefined) return null;
      const results = paths.map((path) => {
        const steps = jsonPathSteps(path, false);
        return steps === undefined ? undefined : followJsonPath(json, steps);
      });
      if (paths.length === 1) return extractedJsonValue(results[0], 'json-null-extract');
      return stringifyJson(results.map((result) => result ?? null));
    }
  },
  json_array_length: {
    minArgs: 1,
    maxArgs: 2,
    call: ([document, path]) => {
      const json = jsonOf(document!);
      if (json === undefined) return null;
      const steps = path === undefined ? [] : jsonPathSteps(path, false);
      if (steps === undefined) return null;
      const target = followJsonPath(json, steps);
      if (target === undefined) return null;
      return Array.isArray(target) ? BigInt(target.length) : 0n;
    }
  },
  json_valid: {
    minArgs: 1,
    maxArgs: 1,
    call: ([value]) => {
      if (value === null || value === undefined) return referenceDeviation('json-valid-null') ? FALSE : null;
      // A blob is checked as the UTF-8 text it holds (SQLite and the reference both do).
      try {
        parseJson(castToText(value)!);
        return TRUE;
      } catch {
        return FALSE;
      }
    }
  },
  /** Not in SQLite; as the reference: the JSON array of an object's keys, an error for other JSON. */
  json_keys: {
    minArgs: 1,
    maxArgs: 1,
    call: ([value]) => {
      const json = jsonOf(value!);
      if (json === undefined) return null;
      if (json === null || typeof json !== 'object' || Array.isArray(json)) {
        throw new EvaluationFailure(
          `json_keys() needs a JSON object, got ${Array.isArray(json) ? 'an array' : 'a scalar'}`
        );
      }
      return stringifyJson(Object.keys(json));
    }
  }
};

/** Every scalar function by lower-case name; families live in src/functions/. */
const FUNCTIONS: Record<string, FunctionDefinition> = {
  ...CORE_FUNCTIONS,
  ...TEXT_FUNCTIONS,
  ...DATETIME_FUNCTIONS,
  ...GEOMETRY_FUNCTIONS
};

export const SUPPORTED_FUNCTIONS = Object.keys(FUNCTIONS);

const CASTS: Record<Extract<Expression, { type: 'cast' }>['targetType'], (value: SqliteValue) => SqliteValue> = {
  TEXT: castToText,
  INTEGER: castToInteger,
  REAL: castToReal,
  NUMERIC: castToNumeric,
  BLOB: castToBlob
};

const REQUEST_FUNCTIONS: Record<string, (request: RequestValues) => SqliteValue> = {
  user_id: (request) => request.userId,
  jwt: (request) => request.jwtText,
  parameters: (request) => request.parametersText
};

function constant(value: SqliteValue): CompiledExpression {
  return { evaluate: () => value };
}

/** Compiles an expression for the given scope; throws {@link SqlSyntaxError} with the offending range. */
export function compileExpression(expression: Expression, scope: CompileScope): CompiledExpression {
  switch (expression.type) {
    case 'literal':
      return constant(expression.value);
    case 'column':
      return compileReference(expression, scope);
    case 'call':
      return compileCall(expression, scope);
    case 'cast': {
      const operand = compileExpression(expression.operand, scope);
      const cast = CASTS[expression.targetType];
      return { evaluate: (context) => cast(operand.evaluate(context)) };
    }
    case 'unary':
      return compileUnary(expression, scope);
    case 'binary':
      return compileBinary(expression, scope);
    case 'in_list': {
      const left = compileExpression(expression.left, scope);
      const items = expression.items.map((item) => compileExpression(item, scope));
      const negated = expression.negated;
      // `a IN (x, y)` is `a = +x OR a = +y`: the list values have no affinity, the left side's applies.
      const leftAffinity = affinityOf(expression.left);
      return {
        evaluate: (context) => {
          const needle = left.evaluate(context);
          const result = inValues(
            needle,
            items.map((item) => applyComparisonAffinity(leftAffinity, 'none', needle, item.evaluate(context))[1])
          );
          return negated ? not(result) : result;
        }
      };
    }
    case 'in_array': {
      const left = compileExpression(expression.left, scope);
      const right = compileExpression(expression.right, scope);
      const negated = expression.negated;
      return {
        evaluate: (context) => {
          const needle = left.evaluate(context);
          const elements = jsonArrayElements(right.evaluate(context));
          const result = elements === undefined ? (needle === null ? null : FALSE) : inValues(needle, elements);
          return negated ? not(result) : result;
        }
      };
    }
  }
}

function compileUnary(expression: Extract<Expression, { type: 'unary' }>, scope: CompileScope): CompiledExpression {
  const operand = compileExpression(expression.operand, scope);
  switch (expression.operator) {
    case 'NOT': {
      const missingColumn = rowColumnName(expression.operand);
      if (missingColumn !== undefined) {
        // The reference reads a column the row does not have as false, so `NOT archived` keeps such rows
        // ('not-missing-column' in reference-deviations.ts).
        return {
          evaluate: (context) =>
            context.row && !Object.hasOwn(context.row, missingColumn) && referenceDeviation('not-missing-column')
              ? TRUE
              : not(operand.evaluate(context))
        };
      }
      return { evaluate: (context) => not(operand.evaluate(context)) };
    }
    case '-':
      return { evaluate: (context) => arithmetic('-', 0n, operand.evaluate(context)) };
    case '+':
      return operand;
  }
}

/** The column name when the expression is a reference to a row column (not a request or bucket value). */
function rowColumnName(expression: Expression): string | undefined {
  if (expression.type !== 'column') return undefined;
  const qualifier = expression.qualifier?.toLowerCase();
  if (qualifier === BUCKET_QUALIFIER || qualifier === TOKEN_PARAMETERS || qualifier === USER_PARAMETERS)
    return undefined;
  return expression.name;
}

function compileBinary(expression: Extract<Expression, { type: 'binary' }>, scope: CompileScope): CompiledExpression {
  const left = compileExpression(expression.left, scope);
  const right = compileExpression(expression.right, scope);
  const operator = expression.operator;
  const leftAffinity = affinityOf(expression.left);
  const rightAffinity = affinityOf(expression.right);
  const withAffinity = (context: EvaluationContext): [SqliteValue, SqliteValue] =>
    applyComparisonAffinity(leftAffinity, rightAffinity, left.evaluate(context), right.evaluate(context));
  switch (operator) {
    // Both sides are always evaluated, as SQLite does for result columns and as the reference does
    // everywhere: an error on either side fails the row even when the other side decides the result.
    case 'AND':
      return {
        evaluate: (context) => {
          const a = left.evaluate(context);
          const b = right.evaluate(context);
          if ((a !== null && !isTruthy(a)) || (b !== null && !isTruthy(b))) return FALSE;
          return a === null || b === null ? null : TRUE;
        }
      };
    case 'OR':
      return {
        evaluate: (context) => {
          const a = left.evaluate(context);
          const b = right.evaluate(context);
          if (isTruthy(a) || isTruthy(b)) return TRUE;
          return a === null || b === null ? null : FALSE;
        }
      };
    case 'IS':
    case 'IS NOT':
      return {
        evaluate: (context) => {
          const same = compareValues(...withAffinity(context)) === 0;
          return bool(operator === 'IS' ? same : !same);
        }
      };
    case '=':
    case '!=':
    case '<':
    case '<=':
    case '>':
    case '>=':
      return { evaluate: (context) => compare(operator, ...withAffinity(context)) };
    case '+':
    case '-':
    case '*':
    case '/':
    case '%':
      return { evaluate: (context) => arithmetic(operator, left.evaluate(context), right.evaluate(context)) };
    case '||':
      return {
        evaluate: (context) => {
          const a = castToText(left.evaluate(context));
          const b = castToText(right.evaluate(context));
          return a === null || b === null ? null : a + b;
        }
      };
    case '->':
    case '->>':
      return {
        evaluate: (context) => {
          const json = jsonOf(left.evaluate(context));
          const steps = jsonPathSteps(right.evaluate(context), true);
          if (json === undefined || steps === undefined) return null;
          const result = followJsonPath(json, steps);
          if (result === undefined) return null;
          return operator === '->' ? stringifyJson(result) : extractedJsonValue(result, 'json-null-extract');
        }
      };
  }
}

function compileReference(
  expression: Extract<Expression, { type: 'column' }>,
  scope: CompileScope
): CompiledExpression {
  const qualifier = expression.qualifier;
  const lower = qualifier?.toLowerCase();
  const name = expression.name;
  if (lower === BUCKET_QUALIFIER) fail(scope.bucketReferenceError, expression);
  if (lower === TOKEN_PARAMETERS || lower === USER_PARAMETERS) {
    if (!scope.request)
      fail(
        scope.requestReferenceError ??
          `${qualifier}.${name} is a request value, which is only available in parameter queries`,
        expression
      );
    if (lower === TOKEN_PARAMETERS) {
      if (name === 'user_id') return { evaluate: (context) => requireRequest(context).userId };
      return { evaluate: (context) => jsonValueAt(requireRequest(context).tokenParameters, name) };
    }
    return { evaluate: (context) => jsonValueAt(requireRequest(context).clientParameters, name) };
  }
  const table = scope.table;
  if (!table) {
    const what = qualifier ? `${qualifier}.${name}` : name;
    fail(
      `Unknown value "${what}": a query without FROM can only use request values (request.user_id(), request.jwt(), request.parameters(), token_parameters.<name>, user_parameters.<name>)`,
      expression
    );
  }
  if (qualifier !== undefined && qualifier !== table.name && qualifier !== table.alias) {
    fail(
      `Unknown table "${qualifier}" in "${qualifier}.${name}"; the query selects from "${table.alias ?? table.name}"`,
      expression
    );
  }
  return {
    evaluate: (context) => {
      const row = context.row;
      if (!row) throw new EvaluationFailure('no row to evaluate against');
      return Object.hasOwn(row, name) ? toSqliteValue(row[name], name) : null;
    }
  };
}

function requireRequest(context: EvaluationContext): RequestValues {
  if (!context.request) throw new EvaluationFailure('no request to evaluate against');
  return context.request;
}

function jsonValueAt(object: Readonly<Record<string, JsonValue>>, key: string): SqliteValue {
  return Object.hasOwn(object, key) ? jsonToSqlite(object[key]) : null;
}

const STREAM_NAMESPACES = new Set(['auth', 'connection', 'subscription']);
/** Internal function of compiled streams: `a && b` between two JSON arrays of one source (STREAMS §3.7). */
export const OVERLAP_FUNCTION = '$overlap';
/** Internal function of compiled streams: a filter's NOT, where (reference quirk, STREAMS §3.4) NOT NULL is true. */
export const STREAM_NOT_FUNCTION = '$not';

function requireStream(context: EvaluationContext): StreamConnectionValues {
  if (!context.stream) throw new EvaluationFailure('no connection data to evaluate against');
  return context.stream;
}

/** `auth.*`, `connection.*`, `subscription.*` (STREAMS §3.3); `.parameter(k)` is `.parameters() ->> k`. */
function compileStreamCall(namespace: string, expression: Extract<Expression, { type: 'call' }>): CompiledExpression {
  const name = expression.name.toLowerCase();
  const objectOf = (context: EvaluationContext): Readonly<Record<string, JsonValue>> | null => {
    const values = requireStream(context);
    return namespace === 'auth' ? values.auth : namespace === 'connection' ? values.connection : values.subscription;
  };
  if (name === 'user_id' && namespace === 'auth') return { evaluate: (context) => requireStream(context).userId };
  if (name === 'parameters')
    return {
      evaluate: (context) => {
        const object = objectOf(context);
        return object === null ? null : stringifyJson(object);
      }
    };
  if (name === 'parameter' && expression.args.length === 1) {
    const key = compileExpression(expression.args[0]!, {
      request: false,
      bucketReferenceError: '',
      streamConnection: true
    });
    return {
      evaluate: (context) => {
        const object = objectOf(context);
        const steps = jsonPathSteps(key.evaluate(context), true);
        if (object === null || steps === undefined) return null;
        return jsonToSqlite(followJsonPath(object, steps));
      }
    };
  }
  return fail(`${namespace}.${expression.name}() is not a stream function`, expression);
}

function compileCall(expression: Extract<Expression, { type: 'call' }>, scope: CompileScope): CompiledExpression {
  const namespace = expression.namespace?.toLowerCase();
  const name = expression.name.toLowerCase();
  if (scope.streamConnection && namespace !== undefined && STREAM_NAMESPACES.has(namespace))
    return compileStreamCall(namespace, expression);
  if (
    scope.streamConnection &&
    namespace === undefined &&
    name === STREAM_NOT_FUNCTION &&
    expression.args.length === 1
  ) {
    const operand = compileExpression(expression.args[0]!, scope);
    return {
      evaluate: (context) => {
        const value = operand.evaluate(context);
        return value === null ? TRUE : not(value);
      }
    };
  }
  if (scope.streamConnection && namespace === undefined && name === OVERLAP_FUNCTION && expression.args.length === 2) {
    const [left, right] = expression.args.map((arg) => compileExpression(arg, scope)) as [
      CompiledExpression,
      CompiledExpression
    ];
    return {
      evaluate: (context) => {
        const a = jsonArrayElements(left.evaluate(context));
        const b = jsonArrayElements(right.evaluate(context));
        if (a === undefined || b === undefined) return null;
        return bool(a.some((x) => x !== null && b.some((y) => y !== null && compareValues(x, y) === 0)));
      }
    };
  }
  if (namespace === REQUEST_NAMESPACE && name === 'parameter') return compileRequestParameter(expression, scope);
  if (namespace === REQUEST_NAMESPACE) {
    const get = REQUEST_FUNCTIONS[name];
    if (!get)
      fail(
        `Unknown request function request.${expression.name}(); supported: request.user_id(), request.jwt(), request.parameters()`,
        expression
      );
    if (!scope.request)
      fail(
        scope.requestReferenceError ??
          `request.${name}() is only available in parameter queries; data queries filter on bucket.<parameter>`,
        expression
      );
    if (expression.args.length > 0) fail(`request.${name}() takes no arguments`, expression);
    return { evaluate: (context) => get(requireRequest(context)) };
  }
  if (namespace !== undefined) fail(`Unknown function ${expression.namespace}.${expression.name}()`, expression);
  const definition = Object.hasOwn(FUNCTIONS, name) ? FUNCTIONS[name] : undefined;
  if (!definition)
    fail(
      `Unknown or unsupported function ${expression.name}(); supported: ${SUPPORTED_FUNCTIONS.join(', ')}`,
      expression
    );
  const count = expression.args.length;
  if (count < definition.minArgs || count > definition.maxArgs) {
    const expected =
      definition.maxArgs === Infinity
        ? `at least ${definition.minArgs}`
        : definition.minArgs === definition.maxArgs
          ? `${definition.minArgs}`
          : `${definition.minArgs} to ${definition.maxArgs}`;
    const plural = definition.maxArgs === 1 || (definition.maxArgs === Infinity && definition.minArgs === 1) ? '' : 's';
    fail(`${name}() takes ${expected} argument${plural}, got ${count}`, expression);
  }
  const args = expression.args.map((arg) => compileExpression(arg, scope));
  const lazy = definition.lazy;
  if (lazy) return { evaluate: (context) => lazy(args.map((arg) => () => arg.evaluate(context))) };
  return { evaluate: (context) => definition.call(args.map((arg) => arg.evaluate(context))) };
}

/**
 * `request.parameter('key')` (reference): one client parameter, like `request.parameters() ->> 'key'` — a
 * plain key unless it starts with `$`, then a JSON path.
 */
function compileRequestParameter(
  expression: Extract<Expression, { type: 'call' }>,
  scope: CompileScope
): CompiledExpression {
  if (!scope.request)
    fail(
      scope.requestReferenceError ??
        'request.parameter() is only available in parameter queries; data queries filter on bucket.<parameter>',
      expression
    );
  if (expression.args.length !== 1)
    fail(`request.parameter() takes 1 argument (the key), got ${expression.args.length}`, expression);
  const argument = expression.args[0]!;
  const argumentReferences = findReferences(argument);
  if (argumentReferences.row || argumentReferences.bucket.length > 0)
    fail('The argument of request.parameter() must only depend on request values', argument);
  const path = compileExpression(argument, scope);
  return {
    evaluate: (context) => {
      const steps = jsonPathSteps(path.evaluate(context), true);
      if (steps === undefined) return null;
      return jsonToSqlite(followJsonPath(requireRequest(context).clientParameters, steps));
    }
  };
}

/** Builds the request values from a token payload and client parameters. */
export function requestValues(input: {
  userId: string;
  tokenParameters?: Readonly<Record<string, unknown>>;
  clientParameters?: Readonly<Record<string, unknown>>;
}): RequestValues {
  const payload = fromJsValue(input.tokenParameters ?? {});
  const client = fromJsValue(input.clientParameters ?? {});
  const payloadObject = isJsonObject(payload) ? payload : {};
  const clientObject = isJsonObject(client) ? client : {};
  const claim = payloadObject['parameters'];
  // A numeric `sub` keeps its JSON type, as in the reference: its buckets are `b[123]`, not `b["123"]`.
  const sub = payloadObject['sub'];
  const numericSub =
    (typeof sub === 'number' || typeof sub === 'bigint') && String(sub) === input.userId
      ? jsonToSqlite(sub)
      : undefined;
  return {
    userId: numericSub ?? input.userId,
    jwtText: stringifyJson(payloadObject),
    parametersText: stringifyJson(clientObject),
    tokenParameters: isJsonObject(claim) && Object.hasOwn(payloadObject, 'parameters') ? claim : {},
    clientParameters: clientObject
  };
}

function isJsonObject(value: JsonValue | undefined): value is { [key: string]: JsonValue } {
  return value !== null && value !== undefined && typeof value === 'object' && !Array.isArray(value);
}
