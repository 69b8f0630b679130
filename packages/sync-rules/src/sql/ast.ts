/** Syntax tree of the SQL subset. Every node carries its character range in the query. */
import type { SqliteValue } from '../sqlite-value.js';

export interface Range {
  start: number;
  end: number;
}

export type BinaryOperator =
  | 'OR'
  | 'AND'
  | '='
  | '!='
  | '<'
  | '<='
  | '>'
  | '>='
  | 'IS'
  | 'IS NOT'
  | '+'
  | '-'
  | '*'
  | '/'
  | '%'
  | '||'
  | '->'
  | '->>';

/** SQLite's storage classes as cast targets (`CAST(x AS NUMERIC)`, `x::blob`); added NUMERIC and BLOB for the function work. */
export type CastType = 'TEXT' | 'INTEGER' | 'REAL' | 'NUMERIC' | 'BLOB';

export type Expression =
  | ({ type: 'literal'; value: SqliteValue } & Range)
  /** `name`, `qualifier.name` (also `bucket.x`, `token_parameters.x`, `user_parameters.x`). */
  | ({ type: 'column'; qualifier?: string; name: string } & Range)
  /** `fn(args)` or `namespace.fn(args)` (e.g. `request.user_id()`). */
  | ({ type: 'call'; namespace?: string; name: string; args: Expression[] } & Range)
  | ({ type: 'unary'; operator: 'NOT' | '-' | '+'; operand: Expression } & Range)
  | ({ type: 'binary'; operator: BinaryOperator; left: Expression; right: Expression } & Range)
  /** `left [NOT] IN (a, b, ...)`. */
  | ({ type: 'in_list'; left: Expression; items: Expression[]; negated: boolean } & Range)
  /** `left [NOT] IN right` where right is a JSON array value (`bucket.p IN tags`). */
  | ({ type: 'in_array'; left: Expression; right: Expression; negated: boolean } & Range)
  | ({ type: 'cast'; operand: Expression; targetType: CastType } & Range);

export type ResultColumn =
  | ({ type: 'star'; qualifier?: string } & Range)
  | ({ type: 'expression'; expression: Expression; alias?: string } & Range);

export interface TableReference extends Range {
  schema?: string;
  name: string;
  alias?: string;
  /** Set for a table-valued function such as `json_each(<expr>)`; `name` is then the function name. */
  functionArgs?: Expression[];
}

export interface SelectStatement extends Range {
  columns: ResultColumn[];
  from?: TableReference;
  where?: Expression;
  /** Legal but suspicious syntax found while parsing (e.g. unquoted mixed-case identifiers). */
  warnings?: Array<{ reason: string } & Range>;
}

/** The direct operands of an expression node, for walks over the tree. */
export function childExpressions(expression: Expression): Expression[] {
  switch (expression.type) {
    case 'literal':
    case 'column':
      return [];
    case 'call':
      return expression.args;
    case 'unary':
    case 'cast':
      return [expression.operand];
    case 'binary':
    case 'in_array':
      return [expression.left, expression.right];
    case 'in_list':
      return [expression.left, ...expression.items];
  }
}
