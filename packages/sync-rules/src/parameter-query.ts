/**
 * Parameter queries: each output row gives one set of bucket parameters.
 *
 * - static (no FROM): evaluated against the request alone;
 * - table lookup (FROM): replication indexes each source row under its lookup
 *   values (`(definition, query, values) → output row`); a request computes the
 *   lookup values it needs and the caller fetches the stored outputs.
 */
import type { BucketParameterValue } from './bucket-id.js';
import { bucketParameterOrUndefined } from './bucket-id.js';
import {
  compileExpression,
  findReferences,
  jsonArrayElements,
  jsonEachRows,
  jsonExtractRaw,
  type CompileScope,
  type CompiledExpression,
  type RequestValues
} from './expression.js';
import { compileOutputColumns, type OutputColumns } from './output-columns.js';
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
}

export interface StaticParameterQuery extends ParameterQueryBase {
  readonly kind: 'static';
  /** Output rows for a request (zero or one). */
  evaluate(request: RequestValues): SqliteRow[];
}

export interface LookupParameterQuery extends ParameterQueryBase {
  readonly kind: 'lookup';
  readonly table: SourceTable;
  matches(schema: string, table: string): boolean;
  /** Lookup value tuples under which a source row is indexed, and its output row; undefined when row filters exclude it. */
  evaluateRow(row: InputRow): { lookups: BucketParameterValue[][]; output: SqliteRow } | undefined;
  /** Lookup value tuples a request needs. */
  lookupValues(request: RequestValues): BucketParameterValue[][];
}

export type ParameterQuery = StaticParameterQuery | LookupParameterQuery;

type LookupCondition = {
  /** `row = request`, `row IN request_array`, `request IN row_array`. */
  kind: 'equals' | 'row_in_request_array' | 'request_in_row_array';
  row: CompiledExpression;
  request: CompiledExpression;
};

const NO_BUCKET_IN_PARAMETERS =
  'bucket.<name> cannot be used in parameter queries; parameter queries define the bucket parameters';

export function compileParameterQuery(sql: string, index: number): ParameterQuery {
  const statement = parseSelect(sql);
  const references = findReferences(statement.where ?? { type: 'literal', value: null, start: 0, end: 0 });
  for (const column of statement.columns)
    if (column.type === 'expression') findReferences(column.expression, references);
  for (const arg of statement.from?.functionArgs ?? []) findReferences(arg, references);
  const usesClientParameters = references.clientParameters;
  checkLiteralPriority(statement.columns);

  if (!statement.from) {
    const scope: CompileScope = { request: true, bucketReferenceError: NO_BUCKET_IN_PARAMETERS };
    const output = compileOutputColumns(statement.columns, scope, { allowStar: false, what: 'parameter queries' });
    const where = statement.where ? compileExpression(statement.where, scope) : undefined;
    return {
      kind: 'static',
      sql,
      index,
      parameterNames: parameterNames(output),
      usesClientParameters,
      evaluate(request) {
        const context = { request };
        if (where && !isTruthy(where.evaluate(context))) return [];
        return [output.evaluate(context)];
      }
    };
  }

  if (statement.from.functionArgs)
    return compileJsonEachQuery(statement, statement.from.functionArgs, sql, index, usesClientParameters);

  const table = sourceTableOf(statement.from);
  const rowScope: CompileScope = {
    table: { name: statement.from.name, alias: statement.from.alias },
    request: false,
    requestReferenceError:
      'Output columns and row conditions of a table lookup can only use table columns; compare request values with columns in WHERE',
    bucketReferenceError: NO_BUCKET_IN_PARAMETERS
  };
  const requestScope: CompileScope = {
    request: true,
    bucketReferenceError: NO_BUCKET_IN_PARAMETERS
  };
  const output = compileOutputColumns(statement.columns, rowScope, { allowStar: false, what: 'parameter queries' });

  const rowFilters: CompiledExpression[] = [];
  const requestFilters: CompiledExpression[] = [];
  const conditions: LookupCondition[] = [];
  for (const conjunct of statement.where ? splitAnd(statement.where) : []) {
    const conjunctReferences = findReferences(conjunct);
    const bucket = conjunctReferences.bucket[0];
    if (bucket) throw new SqlSyntaxError(NO_BUCKET_IN_PARAMETERS, bucket.start, bucket.end);
    if (!conjunctReferences.request) {
      rowFilters.push(compileExpression(conjunct, rowScope));
    } else if (!conjunctReferences.row) {
      requestFilters.push(compileExpression(conjunct, requestScope));
    } else {
      conditions.push(compileLookupCondition(conjunct, rowScope, requestScope));
    }
  }

  return {
    kind: 'lookup',
    sql,
    index,
    table,
    parameterNames: parameterNames(output),
    usesClientParameters,
    matches: (schema, tableName) => tableMatches(table, schema, tableName),
    evaluateRow(row) {
      const context = { row };
      if (!rowFilters.every((filter) => isTruthy(filter.evaluate(context)))) return undefined;
      const valueLists = conditions.map((condition) => {
        const value = condition.row.evaluate(context);
        return condition.kind === 'request_in_row_array'
          ? lookupValuesOf(jsonArrayElements(value) ?? [])
          : lookupValuesOf([value]);
      });
      const lookups = crossProduct(valueLists);
      if (lookups.length === 0) return undefined;
      return { lookups, output: output.evaluate(context) };
    },
    lookupValues(request) {
      const context = { request };
      if (!requestFilters.every((filter) => isTruthy(filter.evaluate(context)))) return [];
      const valueLists = conditions.map((condition) => {
        const value = condition.request.evaluate(context);
        return condition.kind === 'row_in_request_array'
          ? lookupValuesOf(jsonArrayElements(value) ?? [])
          : lookupValuesOf([value]);
      });
      return crossProduct(valueLists);
    }
  };
}

/** A literal `_priority` is checked at load time; computed ones when evaluated. */
function checkLiteralPriority(columns: SelectStatement['columns']): void {
  for (const column of columns) {
    if (column.type !== 'expression' || column.alias !== PRIORITY_COLUMN || column.expression.type !== 'literal')
      continue;
    const value = column.expression.value;
    const valid = value === null || (typeof value === 'bigint' && value >= 0n && value <= 3n);
    if (!valid)
      throw new SqlSyntaxError(`"${PRIORITY_COLUMN}" must be an integer from 0 to 3`, column.start, column.end);
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
    parameterNames: parameterNames(output),
    usesClientParameters,
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

function parameterNames(output: OutputColumns): string[] {
  return output.names.filter((name) => name !== PRIORITY_COLUMN);
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

function compileLookupCondition(
  expression: Expression,
  rowScope: CompileScope,
  requestScope: CompileScope
): LookupCondition {
  if (expression.type === 'binary' && expression.operator === '=') {
    if (isRowOnly(expression.left) && isRequestOnly(expression.right)) {
      return {
        kind: 'equals',
        row: compileExpression(expression.left, rowScope),
        request: compileExpression(expression.right, requestScope)
      };
    }
    if (isRequestOnly(expression.left) && isRowOnly(expression.right)) {
      return {
        kind: 'equals',
        row: compileExpression(expression.right, rowScope),
        request: compileExpression(expression.left, requestScope)
      };
    }
  }
  if (expression.type === 'in_array' && !expression.negated) {
    if (isRowOnly(expression.left) && isRequestOnly(expression.right)) {
      return {
        kind: 'row_in_request_array',
        row: compileExpression(expression.left, rowScope),
        request: compileExpression(expression.right, requestScope)
      };
    }
    if (isRequestOnly(expression.left) && isRowOnly(expression.right)) {
      return {
        kind: 'request_in_row_array',
        row: compileExpression(expression.right, rowScope),
        request: compileExpression(expression.left, requestScope)
      };
    }
  }
  if (expression.type === 'binary' && expression.operator === 'OR') {
    throw new SqlSyntaxError(
      'OR between table columns and request values is not supported in parameter queries; use one parameter query per alternative',
      expression.start,
      expression.end
    );
  }
  throw new SqlSyntaxError(
    'Conditions combining table columns and request values must be "<column> = <request value>", "<column> IN <request JSON array>" or "<request value> IN <JSON array column>", combined with AND',
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
