/**
 * Parameter queries: each output row gives one set of bucket parameters.
 *
 * - static (no FROM): evaluated against the request alone;
 * - table lookup (FROM): replication indexes each source row under its lookup
 *   values (`(definition, query, values) → output row`); a request computes the
 *   lookup values it needs and the caller fetches the stored outputs.
 */
import type { BucketParameterValue } from './bucket-id.js';
import { bucketParameterOrUndefined, sameBucketParameter } from './bucket-id.js';
import {
  compileExpression,
  findReferences,
  jsonArrayElements,
  jsonEachRows,
  jsonExtractRaw,
  type CompileScope,
  type CompiledExpression,
  type EvaluationContext,
  type RequestValues
} from './expression.js';
import { compileOutputColumns } from './output-columns.js';
import { sourceTableOf, tableMatches, type SourceTable } from './source-table.js';
import type { Expression, SelectStatement } from './sql/ast.js';
import { parseSelect } from './sql/parser.js';
import { SqlSyntaxError } from './sql/syntax-error.js';
import { EvaluationFailure, isTruthy, type InputRow, type SqliteRow, type SqliteValue } from './sqlite-value.js';

/** Output column of a parameter query that sets the bucket priority instead of being a bucket parameter. */
export const PRIORITY_COLUMN = '_priority';

interface ParameterQueryBase {
  readonly sql: string;
  readonly index: number;
  /** Output columns that become bucket parameters, in order (without `_priority`). */
  readonly parameterNames: readonly string[];
  /** Whether the query reads client-supplied parameters (request.parameters(), user_parameters). */
  readonly usesClientParameters: boolean;
  /** Warnings about legal but suspicious syntax (reason, range in the query). */
  readonly warnings: ReadonlyArray<{ reason: string; start: number; end: number }>;
}

interface StaticParameterQuery extends ParameterQueryBase {
  readonly kind: 'static';
  /** Output rows for a request (zero or one). */
  evaluate(request: RequestValues): SqliteRow[];
}

interface LookupParameterQuery extends ParameterQueryBase {
  readonly kind: 'lookup';
  readonly table: SourceTable;
  matches(schema: string, table: string): boolean;
  /** Lookup value tuples under which a source row is indexed, and its output row; undefined when row filters exclude it. */
  evaluateRow(row: InputRow): { lookups: BucketParameterValue[][]; output: SqliteRow } | undefined;
  /** Lookup value tuples a request needs. */
  lookupValues(request: RequestValues): BucketParameterValue[][];
  /**
   * Output columns computed from request values (`request.parameters() ->> 'tab' AS tab`), joined to every
   * stored output row of the lookups; empty when all outputs are table columns.
   */
  requestOutputs(request: RequestValues): SqliteRow;
}

export type ParameterQuery = StaticParameterQuery | LookupParameterQuery;

/**
 * A request-side value that a lookup is keyed on. `key` is the expression's canonical text, so the same request
 * expression used in several conditions (`a = X OR b = X`) is one lookup value.
 */
interface LookupInput {
  key: string;
  request: CompiledExpression;
  /** `row IN <request JSON array>`: the request contributes one lookup per array element. */
  expands: boolean;
  /** A request-only condition inside OR: the lookup value is its truth (1/0), and matching rows give 1. */
  boolean: boolean;
}

/**
 * A compiled WHERE clause of a table lookup (the reference's "parameter match clause"): for a source row, every
 * assignment of lookup inputs that makes the clause true.
 */
interface LookupFilter {
  inputs: LookupInput[];
  /** Contains a `request IN <row array>` condition, which can give any number of assignments per row. */
  unbounded: boolean;
  rows(context: EvaluationContext): Array<Map<string, SqliteValue>>;
}

const NO_BUCKET_IN_PARAMETERS =
  'bucket.<name> cannot be used in parameter queries; parameter queries define the bucket parameters';

export interface ParameterQueryOptions {
  /** The definition sets `priority:`; a `_priority` column would set it a second time. */
  definitionHasPriority: boolean;
}

export function compileParameterQuery(
  sql: string,
  index: number,
  options: ParameterQueryOptions = { definitionHasPriority: false }
): ParameterQuery {
  const statement = parseSelect(sql);
  const references = findReferences(statement.where ?? { type: 'literal', value: null, start: 0, end: 0 });
  for (const column of statement.columns)
    if (column.type === 'expression') findReferences(column.expression, references);
  for (const arg of statement.from?.functionArgs ?? []) findReferences(arg, references);
  const usesClientParameters = references.clientParameters;
  checkPriority(statement.columns, options);
  rejectLiteralInLists(statement);

  if (!statement.from) {
    const scope: CompileScope = { request: true, bucketReferenceError: NO_BUCKET_IN_PARAMETERS };
    const output = compileOutputColumns(statement.columns, scope, { allowStar: false, what: 'parameter queries' });
    const where = statement.where ? compileExpression(statement.where, scope) : undefined;
    return {
      kind: 'static',
      sql,
      index,
      parameterNames: parameterNames(output.names),
      usesClientParameters,
      warnings: statement.warnings ?? [],
      evaluate(request) {
        const context = { request };
        if (where && !isTruthy(where.evaluate(context))) return [];
        return [output.evaluate(context)];
      }
    };
  }

  if (statement.from.functionArgs)
    return compileJsonEachQuery(statement, statement.from.functionArgs, sql, index, usesClientParameters);

  const from = statement.from;
  if (from.alias !== undefined && from.alias !== from.name)
    throw new SqlSyntaxError(
      `Table aliases are not supported in parameter queries (as in the reference); write "FROM ${from.name}"`,
      from.start,
      from.end
    );
  const table = sourceTableOf(from);
  const rowScope: CompileScope = {
    table: { name: from.name, alias: from.alias },
    request: false,
    requestReferenceError:
      'Cannot use table values and request values in the same expression; compare request values with columns in WHERE',
    bucketReferenceError: NO_BUCKET_IN_PARAMETERS
  };
  const requestScope: CompileScope = {
    request: true,
    bucketReferenceError: NO_BUCKET_IN_PARAMETERS
  };

  // Output columns: table values are stored with the lookup entry; request values are computed per request and
  // joined to each stored row (the reference does the same); one expression cannot mix the two.
  const rowColumns: SelectStatement['columns'] = [];
  const requestColumns: SelectStatement['columns'] = [];
  for (const column of statement.columns) {
    const columnReferences = column.type === 'expression' ? findReferences(column.expression) : undefined;
    if (columnReferences?.request && !columnReferences.row) requestColumns.push(column);
    else rowColumns.push(column);
  }
  const rowOutput = compileOutputColumns(rowColumns, rowScope, { allowStar: false, what: 'parameter queries' });
  const requestOutput = compileOutputColumns(requestColumns, requestScope, {
    allowStar: false,
    what: 'parameter queries'
  });
  const names = outputNames(statement.columns, [...rowOutput.names, ...requestOutput.names]);

  const requestFilters: CompiledExpression[] = [];
  const filterParts: Expression[] = [];
  for (const conjunct of statement.where ? splitAnd(statement.where) : []) {
    const conjunctReferences = findReferences(conjunct);
    const bucket = conjunctReferences.bucket[0];
    if (bucket) throw new SqlSyntaxError(NO_BUCKET_IN_PARAMETERS, bucket.start, bucket.end);
    // A top-level request-only condition decides whether the request looks anything up at all.
    if (conjunctReferences.request && !conjunctReferences.row)
      requestFilters.push(compileExpression(conjunct, requestScope));
    else filterParts.push(conjunct);
  }
  const filter = filterParts.reduce<LookupFilter>(
    (combined, part) => andLookupFilters(combined, compileLookupFilter(part, rowScope, requestScope), part),
    { inputs: [], unbounded: false, rows: () => [new Map()] }
  );
  const expanding = filter.inputs.filter((input) => input.expands);
  if (expanding.length > 1)
    throw new SqlSyntaxError(
      'Cannot have multiple array input parameters: only one "<column> IN <request array>" per parameter query',
      statement.where!.start,
      statement.where!.end
    );
  const inputs = filter.inputs;

  return {
    kind: 'lookup',
    sql,
    index,
    table,
    parameterNames: names,
    usesClientParameters,
    warnings: statement.warnings ?? [],
    matches: (schema, tableName) => tableMatches(table, schema, tableName),
    evaluateRow(row) {
      const context = { row };
      const seen = new Set<string>();
      const lookups: BucketParameterValue[][] = [];
      for (const assignment of filter.rows(context)) {
        const values = lookupValuesOf(inputs.map((input) => assignment.get(input.key) ?? null));
        if (values.length !== inputs.length) continue; // a NULL (or blob) never equals a request value
        const key = JSON.stringify(values, (_key, value: unknown) => (typeof value === 'bigint' ? `${value}n` : value));
        if (seen.has(key)) continue;
        seen.add(key);
        lookups.push(values);
      }
      if (lookups.length === 0) return undefined;
      return { lookups, output: rowOutput.evaluate(context) };
    },
    lookupValues(request) {
      const context = { request };
      if (!requestFilters.every((requestFilter) => isTruthy(requestFilter.evaluate(context)))) return [];
      const valueLists = inputs.map((input) => {
        const value = input.request.evaluate(context);
        if (input.boolean) return [isTruthy(value) ? 1n : 0n];
        return input.expands ? lookupValuesOf(jsonArrayElements(value) ?? []) : lookupValuesOf([value]);
      });
      return crossProduct(valueLists);
    },
    requestOutputs(request) {
      return requestOutput.evaluate({ request });
    }
  };
}

/** Output names in the order the query declares them. */
function outputNames(columns: SelectStatement['columns'], names: readonly string[]): string[] {
  const ordered: string[] = [];
  for (const column of columns) {
    const name =
      column.type === 'expression'
        ? (column.alias ?? (column.expression.type === 'column' ? column.expression.name : undefined))
        : undefined;
    if (name !== undefined && names.includes(name) && name !== PRIORITY_COLUMN) ordered.push(name);
  }
  return ordered;
}

/** The reference's rules for `_priority`: an integer literal from 0 to 3, and only where the definition sets none. */
function checkPriority(columns: SelectStatement['columns'], options: ParameterQueryOptions): void {
  for (const column of columns) {
    if (column.type !== 'expression' || column.alias !== PRIORITY_COLUMN) continue;
    if (options.definitionHasPriority)
      throw new SqlSyntaxError(
        `Cannot set priority multiple times: the definition sets "priority" and this query outputs "${PRIORITY_COLUMN}"`,
        column.start,
        column.end
      );
    const value = column.expression.type === 'literal' ? column.expression.value : undefined;
    if (typeof value !== 'bigint')
      throw new SqlSyntaxError(
        `"${PRIORITY_COLUMN}" must be a constant: an integer literal from 0 to 3`,
        column.expression.start,
        column.expression.end
      );
    if (value < 0n || value > 3n)
      throw new SqlSyntaxError(
        `"${PRIORITY_COLUMN}" must be an integer from 0 to 3`,
        column.expression.start,
        column.expression.end
      );
  }
}

/** `x IN (a, b)` is rejected in parameter queries, as the reference does; a JSON array text works instead. */
function rejectLiteralInLists(statement: SelectStatement): void {
  const roots: Expression[] = [...(statement.from?.functionArgs ?? [])];
  if (statement.where) roots.push(statement.where);
  for (const column of statement.columns) if (column.type === 'expression') roots.push(column.expression);
  const stack = [...roots];
  while (stack.length > 0) {
    const node = stack.pop()!;
    switch (node.type) {
      case 'in_list':
        throw new SqlSyntaxError(
          `IN with a literal list is not supported in parameter queries; use a JSON array, e.g. x IN '["a","b"]'`,
          node.start,
          node.end
        );
      case 'call':
        stack.push(...node.args);
        break;
      case 'unary':
      case 'cast':
        stack.push(node.operand);
        break;
      case 'binary':
      case 'in_array':
        stack.push(node.left, node.right);
        break;
      default:
        break;
    }
  }
}

/**
 * `SELECT value AS org FROM json_each(request.jwt() -> 'orgs') [WHERE ...]`: a static query with one
 * output row per element of a request JSON array (or member of an object). Columns: `key`, `value`, `type`.
 */
function compileJsonEachQuery(
  statement: SelectStatement,
  args: Expression[],
  sql: string,
  index: number,
  usesClientParameters: boolean
): StaticParameterQuery {
  const from = statement.from!;
  if (args.length < 1 || args.length > 2)
    throw new SqlSyntaxError('json_each() takes 1 or 2 arguments (JSON, optional path)', from.start, from.end);
  const argumentScope: CompileScope = { request: true, bucketReferenceError: NO_BUCKET_IN_PARAMETERS };
  const [document, path] = args.map((arg) => compileExpression(arg, argumentScope));
  const scope: CompileScope = {
    table: { name: from.name, alias: from.alias },
    request: true,
    bucketReferenceError: NO_BUCKET_IN_PARAMETERS
  };
  const output = compileOutputColumns(statement.columns, scope, { allowStar: false, what: 'parameter queries' });
  const where = statement.where ? compileExpression(statement.where, scope) : undefined;
  return {
    kind: 'static',
    sql,
    index,
    parameterNames: parameterNames(output.names),
    usesClientParameters,
    warnings: statement.warnings ?? [],
    evaluate(request) {
      const documentValue = document!.evaluate({ request });
      const pathValue = path?.evaluate({ request });
      const source = path ? jsonExtractRaw(documentValue, pathValue ?? null) : jsonExtractRaw(documentValue, '$');
      const rows: SqliteRow[] = [];
      for (const row of jsonEachRows(source)) {
        const context = { row, request };
        if (where && !isTruthy(where.evaluate(context))) continue;
        rows.push(output.evaluate(context));
      }
      return rows;
    }
  };
}

function parameterNames(names: readonly string[]): string[] {
  return names.filter((name) => name !== PRIORITY_COLUMN);
}

function splitAnd(expression: Expression): Expression[] {
  if (expression.type === 'binary' && expression.operator === 'AND')
    return [...splitAnd(expression.left), ...splitAnd(expression.right)];
  return [expression];
}

function isRowOnly(expression: Expression): boolean {
  const references = findReferences(expression);
  return !references.request && references.bucket.length === 0;
}

function isRequestOnly(expression: Expression): boolean {
  const references = findReferences(expression);
  return !references.row && references.bucket.length === 0;
}

/** Canonical text of an expression, without positions: equal texts are the same request value. */
function expressionKey(expression: Expression): string {
  return JSON.stringify(expression, (key, value: unknown) => {
    if (key === 'start' || key === 'end') return undefined;
    if (typeof value === 'bigint') return `${value}n`;
    if ((key === 'qualifier' || key === 'namespace') && typeof value === 'string') return value.toLowerCase();
    return value;
  });
}

function inputMap(inputs: readonly LookupInput[]): Map<string, LookupInput> {
  return new Map(inputs.map((input) => [input.key, input]));
}

function andLookupFilters(left: LookupFilter, right: LookupFilter, at: { start: number; end: number }): LookupFilter {
  if (left.unbounded && right.unbounded)
    throw new SqlSyntaxError(
      'Cannot have multiple IN expressions on bucket parameters: only one "<request value> IN <array column>" per parameter query',
      at.start,
      at.end
    );
  const inputs = [...inputMap([...left.inputs, ...right.inputs]).values()];
  return {
    inputs,
    unbounded: left.unbounded || right.unbounded,
    rows(context) {
      const leftRows = left.rows(context);
      if (leftRows.length === 0) return [];
      const rightRows = right.rows(context);
      const result: Array<Map<string, SqliteValue>> = [];
      for (const a of leftRows) {
        for (const b of rightRows) {
          const merged = new Map(a);
          let consistent = true;
          for (const [key, value] of b) {
            // Two conditions on the same request value need the same row value; otherwise nothing matches.
            if (merged.has(key) && !sameLookupValue(merged.get(key)!, value)) consistent = false;
            merged.set(key, value);
          }
          if (consistent) result.push(merged);
        }
      }
      return result;
    }
  };
}

function sameLookupValue(a: SqliteValue, b: SqliteValue): boolean {
  const [x] = lookupValuesOf([a]);
  const [y] = lookupValuesOf([b]);
  return x !== undefined && y !== undefined && sameBucketParameter(x, y);
}

function compileLookupFilter(expression: Expression, rowScope: CompileScope, requestScope: CompileScope): LookupFilter {
  if (isRowOnly(expression)) {
    const condition = compileExpression(expression, rowScope);
    return {
      inputs: [],
      unbounded: false,
      rows: (context) => (isTruthy(condition.evaluate(context)) ? [new Map()] : [])
    };
  }
  if (isRequestOnly(expression)) {
    const input: LookupInput = {
      key: `bool:${expressionKey(expression)}`,
      request: compileExpression(expression, requestScope),
      expands: false,
      boolean: true
    };
    return { inputs: [input], unbounded: false, rows: () => [new Map([[input.key, 1n]])] };
  }
  if (expression.type === 'binary' && expression.operator === 'AND') {
    return andLookupFilters(
      compileLookupFilter(expression.left, rowScope, requestScope),
      compileLookupFilter(expression.right, rowScope, requestScope),
      expression
    );
  }
  if (expression.type === 'binary' && expression.operator === 'OR') {
    const left = compileLookupFilter(expression.left, rowScope, requestScope);
    const right = compileLookupFilter(expression.right, rowScope, requestScope);
    const leftKeys = left.inputs.map((input) => input.key).sort();
    const rightKeys = right.inputs.map((input) => input.key).sort();
    if (JSON.stringify(leftKeys) !== JSON.stringify(rightKeys))
      throw new SqlSyntaxError(
        'Left and right sides of OR must use the same request values; otherwise split them into separate parameter queries',
        expression.start,
        expression.end
      );
    return {
      inputs: left.inputs,
      unbounded: left.unbounded || right.unbounded,
      rows: (context) => [...left.rows(context), ...right.rows(context)]
    };
  }
  if (expression.type === 'binary' && expression.operator === '=') {
    const [rowSide, requestSide] =
      isRowOnly(expression.left) && isRequestOnly(expression.right)
        ? [expression.left, expression.right]
        : isRequestOnly(expression.left) && isRowOnly(expression.right)
          ? [expression.right, expression.left]
          : [undefined, undefined];
    if (rowSide && requestSide) {
      const row = compileExpression(rowSide, rowScope);
      const input: LookupInput = {
        key: expressionKey(requestSide),
        request: compileExpression(requestSide, requestScope),
        expands: false,
        boolean: false
      };
      return { inputs: [input], unbounded: false, rows: (context) => [new Map([[input.key, row.evaluate(context)]])] };
    }
  }
  if (expression.type === 'in_array' && !expression.negated) {
    if (isRowOnly(expression.left) && isRequestOnly(expression.right)) {
      const row = compileExpression(expression.left, rowScope);
      const input: LookupInput = {
        key: `${expressionKey(expression.right)}[*]`,
        request: compileExpression(expression.right, requestScope),
        expands: true,
        boolean: false
      };
      return { inputs: [input], unbounded: false, rows: (context) => [new Map([[input.key, row.evaluate(context)]])] };
    }
    if (isRequestOnly(expression.left) && isRowOnly(expression.right)) {
      const array = compileExpression(expression.right, rowScope);
      const input: LookupInput = {
        key: expressionKey(expression.left),
        request: compileExpression(expression.left, requestScope),
        expands: false,
        boolean: false
      };
      return {
        inputs: [input],
        unbounded: true,
        rows: (context) =>
          (jsonArrayElements(array.evaluate(context)) ?? []).map((element) => new Map([[input.key, element]]))
      };
    }
  }
  throw new SqlSyntaxError(
    'Conditions combining table columns and request values must be "<column> = <request value>", "<column> IN <request JSON array>" or "<request value> IN <JSON array column>", combined with AND or OR',
    expression.start,
    expression.end
  );
}

/** Keeps the values that can be lookup keys; NULL never matches anything, and no request value is ever a blob. */
function lookupValuesOf(values: readonly SqliteValue[]): BucketParameterValue[] {
  const result: BucketParameterValue[] = [];
  for (const value of values) {
    if (value === null || value instanceof Uint8Array) continue;
    const checked = bucketParameterOrUndefined(value, 'lookup value');
    if (checked !== undefined) result.push(checked);
  }
  return result;
}

function crossProduct(lists: readonly BucketParameterValue[][]): BucketParameterValue[][] {
  let result: BucketParameterValue[][] = [[]];
  for (const list of lists) {
    const next: BucketParameterValue[][] = [];
    for (const prefix of result) for (const value of list) next.push([...prefix, value]);
    result = next;
  }
  return result;
}

/** Validates one output row of a parameter query as bucket parameters; undefined when a parameter is NULL. */
export function bucketParametersOf(
  row: Readonly<Record<string, SqliteValue>>,
  names: readonly string[]
): BucketParameterValue[] | undefined {
  const values: BucketParameterValue[] = [];
  for (const name of names) {
    const value = Object.hasOwn(row, name) ? row[name]! : null;
    if (value !== null && typeof value === 'object' && !(value instanceof Uint8Array)) {
      throw new EvaluationFailure(`parameter output column "${name}" is not an SQLite value`);
    }
    const checked = bucketParameterOrUndefined(value, `parameter output column "${name}"`);
    if (checked === undefined) return undefined;
    values.push(checked);
  }
  return values;
}
