/**
 * Data queries: `SELECT <columns> FROM <table> [WHERE <filter>]`, evaluated
 * per source row to the buckets the row belongs to and its output JSON.
 *
 * The filter is split into bucket-parameter matches (`<row expr> = bucket.p`,
 * `bucket.p IN <row JSON array>`) combined with AND/OR, and row-only
 * conditions. Evaluating it yields every assignment of bucket parameters the
 * row satisfies; each complete assignment is one bucket.
 */
import {
  bucketParameterOrUndefined,
  formatBucketId,
  sameBucketParameter,
  serializeBucketParameters,
  type BucketParameterValue
} from './bucket-id.js';
import {
  compileExpression,
  findReferences,
  isBucketReference,
  jsonArrayElements,
  type CompileScope,
  type CompiledExpression,
  type EvaluationContext
} from './expression.js';
import { stringifyRow } from './json.js';
import { compileOutputColumns } from './output-columns.js';
import { sourceTableOf, tableMatches, type SourceTable } from './source-table.js';
import type { Expression } from './sql/ast.js';
import { parseSelect } from './sql/parser.js';
import { SqlSyntaxError } from './sql/syntax-error.js';
import { castToText, EvaluationFailure, isTruthy, type InputRow, type SqliteValue } from './sqlite-value.js';

/** One row of one bucket, as replication stores it (a PUT). */
export interface EvaluatedBucketRow {
  /** Bucket id, e.g. `by_org["o1"]`. */
  bucket: string;
  /** Output table name (`object_type`). */
  table: string;
  /** The `id` output column as text (`object_id`); `""` when missing. */
  id: string;
  /** JSON text of the output row. */
  data: string;
}

type Filter =
  | { kind: 'row'; condition: CompiledExpression }
  | { kind: 'equals'; parameter: string; value: CompiledExpression; start: number; end: number }
  | { kind: 'in_array'; parameter: string; array: CompiledExpression; start: number; end: number }
  | { kind: 'and' | 'or'; parts: Filter[] };

type Assignment = ReadonlyMap<string, BucketParameterValue>;

export interface DataQuery {
  readonly sql: string;
  readonly index: number;
  readonly table: SourceTable;
  /** `FROM t AS alias` output table name. */
  readonly alias: string | undefined;
  /** Warnings about legal but suspicious queries (message, range). */
  readonly warnings: ReadonlyArray<{ reason: string; start: number; end: number }>;
  matches(schema: string, table: string): boolean;
  /** Throws {@link EvaluationFailure} for values the rules cannot represent. */
  evaluate(row: InputRow, tableName: string): EvaluatedBucketRow[];
}

export interface DataQueryDefinition {
  name: string;
  /** Bucket parameter names in declaration order. */
  parameterNames: readonly string[];
}

/** Compiles a data query; throws {@link SqlSyntaxError} for invalid or unsupported SQL. */
export function compileDataQuery(sql: string, index: number, definition: DataQueryDefinition): DataQuery {
  const statement = parseSelect(sql);
  if (!statement.from)
    throw new SqlSyntaxError('Data queries need a FROM clause naming the source table', statement.start, statement.end);
  if (statement.from.functionArgs) {
    throw new SqlSyntaxError(
      'Table-valued functions such as json_each() can only be used in parameter queries',
      statement.from.start,
      statement.from.end
    );
  }
  const table = sourceTableOf(statement.from);
  const parameterList = definition.parameterNames.length
    ? `this definition's parameters are ${definition.parameterNames.map((name) => `bucket.${name}`).join(', ')}`
    : 'this definition has no parameters';
  const scope: CompileScope = {
    table: { name: statement.from.name, alias: statement.from.alias },
    request: false,
    bucketReferenceError:
      'bucket parameters can only be used in filters of the form "<column> = bucket.<name>" or "bucket.<name> IN <array column>", combined with AND/OR'
  };
  const warnings: Array<{ reason: string; start: number; end: number }> = [...(statement.warnings ?? [])];

  const output = compileOutputColumns(statement.columns, scope, { allowStar: true, what: 'data queries' });
  if (!output.hasStar && !output.names.includes('id')) {
    warnings.push({
      reason: 'The query has no "id" output column; rows will get an empty object id',
      start: statement.start,
      end: statement.end
    });
  }

  const filter = statement.where
    ? compileFilter(statement.where, scope, definition.parameterNames, parameterList)
    : undefined;
  const covered = filter ? coveredParameters(filter) : new Set<string>();
  const missing = definition.parameterNames.filter((name) => !covered.has(name));
  if (missing.length > 0) {
    const range = statement.where ?? statement;
    throw new SqlSyntaxError(
      `The query must filter on every bucket parameter: missing ${missing.map((name) => `"<column> = bucket.${name}"`).join(', ')}` +
        ' (each alternative of an OR must filter on all of them)',
      range.start,
      range.end
    );
  }

  return {
    sql,
    index,
    table,
    alias: statement.from.alias,
    warnings,
    matches: (schema, tableName) => tableMatches(table, schema, tableName),
    evaluate(row, tableName) {
      const context: EvaluationContext = { row };
      const assignments: Assignment[] = filter ? evaluateFilter(filter, context) : [new Map()];
      if (assignments.length === 0) return [];
      const data = output.evaluate(context);
      const id = objectId(data['id'] ?? null);
      const json = stringifyRow(data);
      const outputTable = statement.from!.alias ?? tableName;
      const buckets = new Set<string>();
      for (const assignment of assignments) {
        buckets.add(
          formatBucketId(
            definition.name,
            definition.parameterNames.map((name) => assignment.get(name)!)
          )
        );
      }
      return [...buckets].map((bucket) => ({ bucket, table: outputTable, id, data: json }));
    }
  };
}

function objectId(value: SqliteValue): string {
  if (value === null) return '';
  if (value instanceof Uint8Array)
    throw new EvaluationFailure('the "id" output column is a blob, which cannot be an object id');
  return castToText(value)!;
}

function compileFilter(
  expression: Expression,
  scope: CompileScope,
  parameters: readonly string[],
  parameterList: string
): Filter {
  const references = findReferences(expression);
  for (const reference of references.bucket) {
    if (!parameters.includes(reference.name)) {
      throw new SqlSyntaxError(
        `Unknown bucket parameter "bucket.${reference.name}"; ${parameterList}`,
        reference.start,
        reference.end
      );
    }
  }
  if (references.bucket.length === 0) return { kind: 'row', condition: compileExpression(expression, scope) };

  // A bare `bucket.p` condition is `bucket.p = 1` (the reference's boolean bucket parameter): the row goes to the
  // bucket whose parameter is true.
  if (isBucketReference(expression)) {
    const TRUE = 1n;
    return {
      kind: 'equals',
      parameter: expression.name,
      value: { evaluate: () => TRUE },
      start: expression.start,
      end: expression.end
    };
  }

  if (expression.type === 'binary' && (expression.operator === 'AND' || expression.operator === 'OR')) {
    const kind = expression.operator === 'AND' ? 'and' : 'or';
    return {
      kind,
      parts: [
        compileFilter(expression.left, scope, parameters, parameterList),
        compileFilter(expression.right, scope, parameters, parameterList)
      ]
    };
  }
  if (expression.type === 'binary' && expression.operator === '=') {
    const [parameter, other] = isBucketReference(expression.left)
      ? [expression.left, expression.right]
      : isBucketReference(expression.right)
        ? [expression.right, expression.left]
        : [undefined, undefined];
    if (parameter && other && findReferences(other).bucket.length === 0) {
      return {
        kind: 'equals',
        parameter: parameter.name,
        value: compileExpression(other, scope),
        start: expression.start,
        end: expression.end
      };
    }
  }
  if (
    expression.type === 'in_array' &&
    !expression.negated &&
    isBucketReference(expression.left) &&
    findReferences(expression.right).bucket.length === 0
  ) {
    return {
      kind: 'in_array',
      parameter: expression.left.name,
      array: compileExpression(expression.right, scope),
      start: expression.start,
      end: expression.end
    };
  }
  if (expression.type === 'unary' && expression.operator === 'NOT') {
    throw new SqlSyntaxError('NOT cannot be applied to a bucket parameter filter', expression.start, expression.end);
  }
  throw new SqlSyntaxError(scope.bucketReferenceError, expression.start, expression.end);
}

/** Parameters every satisfying assignment binds. */
function coveredParameters(filter: Filter): Set<string> {
  switch (filter.kind) {
    case 'row':
      return new Set();
    case 'equals':
    case 'in_array':
      return new Set([filter.parameter]);
    case 'and':
      return new Set(filter.parts.flatMap((part) => [...coveredParameters(part)]));
    case 'or': {
      const [first, ...rest] = filter.parts.map(coveredParameters);
      return new Set([...first!].filter((name) => rest.every((set) => set.has(name))));
    }
  }
}

function assignmentKey(assignment: Assignment): string {
  const names = [...assignment.keys()].sort();
  return `${JSON.stringify(names)}${serializeBucketParameters(names.map((name) => assignment.get(name)!))}`;
}

function distinct(assignments: Assignment[]): Assignment[] {
  const seen = new Map<string, Assignment>();
  for (const assignment of assignments) seen.set(assignmentKey(assignment), assignment);
  return [...seen.values()];
}

function evaluateFilter(filter: Filter, context: EvaluationContext): Assignment[] {
  switch (filter.kind) {
    case 'row':
      return isTruthy(filter.condition.evaluate(context)) ? [new Map()] : [];
    case 'equals': {
      const value = bucketParameterOrUndefined(
        filter.value.evaluate(context),
        `the value compared with bucket.${filter.parameter}`
      );
      return value === undefined ? [] : [new Map([[filter.parameter, value]])];
    }
    case 'in_array': {
      const elements = jsonArrayElements(filter.array.evaluate(context)) ?? [];
      const assignments: Assignment[] = [];
      for (const element of elements) {
        const value = bucketParameterOrUndefined(
          element,
          `an element of the array matched with bucket.${filter.parameter}`
        );
        if (value !== undefined) assignments.push(new Map([[filter.parameter, value]]));
      }
      return distinct(assignments);
    }
    case 'or':
      return distinct(filter.parts.flatMap((part) => evaluateFilter(part, context)));
    case 'and': {
      let result: Assignment[] = [new Map()];
      for (const part of filter.parts) {
        if (result.length === 0) return [];
        const next: Assignment[] = [];
        const partAssignments = evaluateFilter(part, context);
        for (const left of result) {
          for (const right of partAssignments) {
            const merged = merge(left, right);
            if (merged) next.push(merged);
          }
        }
        result = distinct(next);
      }
      return result;
    }
  }
}

function merge(left: Assignment, right: Assignment): Assignment | undefined {
  const merged = new Map(left);
  for (const [name, value] of right) {
    const existing = merged.get(name);
    if (existing !== undefined && !sameBucketParameter(existing, value)) return undefined;
    merged.set(name, value);
  }
  return merged;
}
