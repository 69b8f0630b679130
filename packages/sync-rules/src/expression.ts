/**
 * Compiles expressions of the SQL subset into evaluators over a source row
 * and/or the request (token and client parameters), with SQLite semantics.
 */
import type { Expression } from './sql/ast.js';
import { SqlSyntaxError } from './sql/syntax-error.js';
import {
  castToInteger,
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

export interface EvaluationContext {
  row?: InputRow;
  request?: RequestValues;
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
}

/** Syntactic classification of what an expression refers to. */
export interface References {
  row: boolean;
  request: boolean;
  clientParameters: boolean;
  /** `bucket.x` references. */
  bucket: Array<Extract<Expression, { type: 'column' }>>;
}

export const BUCKET_QUALIFIER = 'bucket';
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
function jsonOf(value: SqliteValue): JsonValue | undefined {
  if (value === null) return undefined;
  if (value instanceof Uint8Array) throw new EvaluationFailure('a blob is not valid JSON');
  return parseJson(castToText(value)!);
}

function jsonPathSteps(path: SqliteValue, shorthand: boolean): ReturnType<typeof parseJsonPath> | undefined {
  if (path === null) return undefined;
  if (shorthand && typeof path === 'bigint') return [{ index: Number(path), fromEnd: false }];
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

/** Rows of SQLite's `json_each` (columns `key`, `value`, `type`) for a JSON value. */
export function jsonEachRows(value: JsonValue | undefined): Array<Record<string, SqliteValue>> {
  if (value === undefined) return [];
  const row = (key: SqliteValue, item: JsonValue) => ({ key, value: jsonToSqlite(item), type: jsonTypeOf(item) });
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
    // SQLite switches to REAL on integer overflow.
    return result >= INT64_MIN && result <= INT64_MAX ? result : Number(result);
  }
  const a = Number(left);
  const b = Number(right);
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
      const divisor = castToInteger(b)!;
      return divisor === 0n ? null : Number(castToInteger(a)! % divisor);
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

interface FunctionDefinition {
  minArgs: number;
  maxArgs: number;
  call(args: SqliteValue[]): SqliteValue;
}

const FUNCTIONS: Record<string, FunctionDefinition> = {
  upper: { minArgs: 1, maxArgs: 1, call: ([value]) => castToText(value!)?.toUpperCase() ?? null },
  lower: { minArgs: 1, maxArgs: 1, call: ([value]) => castToText(value!)?.toLowerCase() ?? null },
  length: {
    minArgs: 1,
    maxArgs: 1,
    call: ([value]) => {
      if (value === null || value === undefined) return null;
      if (value instanceof Uint8Array) return BigInt(value.length);
      return BigInt([...castToText(value)!].length);
    }
  },
  typeof: { minArgs: 1, maxArgs: 1, call: ([value]) => sqliteTypeOf(value!) },
  ifnull: { minArgs: 2, maxArgs: 2, call: ([a, b]) => (a !== null ? a! : b!) },
  coalesce: { minArgs: 2, maxArgs: Infinity, call: (args) => args.find((value) => value !== null) ?? null },
  nullif: {
    minArgs: 2,
    maxArgs: 2,
    call: ([a, b]) => (a !== null && b !== null && compareValues(a!, b!) === 0 ? null : a!)
  },
  iif: { minArgs: 3, maxArgs: 3, call: ([condition, a, b]) => (isTruthy(condition!) ? a! : b!) },
  abs: {
    minArgs: 1,
    maxArgs: 1,
    call: ([value]) => {
      const numeric = toNumeric(value!);
      if (numeric === null) return null;
      if (typeof numeric === 'number') return Math.abs(numeric);
      if (numeric === INT64_MIN) throw new EvaluationFailure('integer overflow in abs()');
      return numeric < 0n ? -numeric : numeric;
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
      if (paths.length === 1) return jsonToSqlite(results[0]);
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
      if (value === null || value === undefined) return null;
      try {
        jsonOf(value);
        return TRUE;
      } catch {
        return FALSE;
      }
    }
  }
};

export const SUPPORTED_FUNCTIONS = Object.keys(FUNCTIONS);

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
      // The parser maps CAST(x AS NUMERIC|BLOB) too; until their evaluators exist they are load errors, never REAL.
      if (expression.targetType === 'NUMERIC' || expression.targetType === 'BLOB')
        fail(`CAST to ${expression.targetType} is not implemented yet`, expression);
      const operand = compileExpression(expression.operand, scope);
      const cast =
        expression.targetType === 'TEXT'
          ? castToText
          : expression.targetType === 'INTEGER'
            ? castToInteger
            : castToReal;
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
      return {
        evaluate: (context) => {
          const result = inValues(
            left.evaluate(context),
            items.map((item) => item.evaluate(context))
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
    case 'NOT':
      return { evaluate: (context) => not(operand.evaluate(context)) };
    case '-':
      return { evaluate: (context) => arithmetic('-', 0n, operand.evaluate(context)) };
    case '+':
      return operand;
  }
}

function compileBinary(expression: Extract<Expression, { type: 'binary' }>, scope: CompileScope): CompiledExpression {
  const left = compileExpression(expression.left, scope);
  const right = compileExpression(expression.right, scope);
  const operator = expression.operator;
  switch (operator) {
    case 'AND':
      return {
        evaluate: (context) => {
          const a = left.evaluate(context);
          if (a !== null && !isTruthy(a)) return FALSE;
          const b = right.evaluate(context);
          if (b !== null && !isTruthy(b)) return FALSE;
          return a === null || b === null ? null : TRUE;
        }
      };
    case 'OR':
      return {
        evaluate: (context) => {
          const a = left.evaluate(context);
          if (isTruthy(a)) return TRUE;
          const b = right.evaluate(context);
          if (isTruthy(b)) return TRUE;
          return a === null || b === null ? null : FALSE;
        }
      };
    case 'IS':
    case 'IS NOT':
      return {
        evaluate: (context) => {
          const same = compareValues(left.evaluate(context), right.evaluate(context)) === 0;
          return bool(operator === 'IS' ? same : !same);
        }
      };
    case '=':
    case '!=':
    case '<':
    case '<=':
    case '>':
    case '>=':
      return { evaluate: (context) => compare(operator, left.evaluate(context), right.evaluate(context)) };
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
          return operator === '->' ? stringifyJson(result) : jsonToSqlite(result);
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

function compileCall(expression: Extract<Expression, { type: 'call' }>, scope: CompileScope): CompiledExpression {
  const namespace = expression.namespace?.toLowerCase();
  const name = expression.name.toLowerCase();
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
    fail(`${name}() takes ${expected} argument${expected === '1' ? '' : 's'}, got ${count}`, expression);
  }
  const args = expression.args.map((arg) => compileExpression(arg, scope));
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
