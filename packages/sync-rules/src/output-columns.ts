/** Result columns of a SELECT: `*`, `t.*`, `column`, `expression AS name`. */
import { compileExpression, type CompileScope, type CompiledExpression, type EvaluationContext } from './expression.js';
import type { ResultColumn } from './sql/ast.js';
import { SqlSyntaxError } from './sql/syntax-error.js';
import { EvaluationFailure, toSqliteValue, type SqliteRow } from './sqlite-value.js';

type OutputPart = { kind: 'star' } | { kind: 'column'; name: string; expression: CompiledExpression };

export interface OutputColumns {
  /** Explicit output names in order (without `*` columns). */
  readonly names: readonly string[];
  readonly hasStar: boolean;
  evaluate(context: EvaluationContext): SqliteRow;
}

export function compileOutputColumns(
  columns: readonly ResultColumn[],
  scope: CompileScope,
  options: { allowStar: boolean; what: string }
): OutputColumns {
  const parts: OutputPart[] = [];
  const names: string[] = [];
  for (const column of columns) {
    if (column.type === 'star') {
      if (!options.allowStar)
        throw new SqlSyntaxError(
          `SELECT * is not allowed in ${options.what}; list the output columns`,
          column.start,
          column.end
        );
      if (!scope.table) throw new SqlSyntaxError('SELECT * needs a FROM table', column.start, column.end);
      if (
        column.qualifier !== undefined &&
        column.qualifier !== scope.table.name &&
        column.qualifier !== scope.table.alias
      ) {
        throw new SqlSyntaxError(
          `Unknown table "${column.qualifier}" in "${column.qualifier}.*"`,
          column.start,
          column.end
        );
      }
      parts.push({ kind: 'star' });
      continue;
    }
    const expression = column.expression;
    let name = column.alias;
    if (name === undefined) {
      if (expression.type === 'column') name = expression.name;
      else throw new SqlSyntaxError('This output column needs a name: add "AS <name>"', column.start, column.end);
    }
    if (names.includes(name)) throw new SqlSyntaxError(`Duplicate output column "${name}"`, column.start, column.end);
    names.push(name);
    parts.push({ kind: 'column', name, expression: compileExpression(expression, scope) });
  }
  return {
    names,
    hasStar: parts.some((part) => part.kind === 'star'),
    evaluate(context) {
      const output: SqliteRow = {};
      for (const part of parts) {
        if (part.kind === 'star') {
          const row = context.row;
          if (!row) throw new EvaluationFailure('no row to evaluate against');
          for (const [key, value] of Object.entries(row)) defineColumn(output, key, toSqliteValue(value, key));
        } else {
          defineColumn(output, part.name, part.expression.evaluate(context));
        }
      }
      return output;
    }
  };
}

/** Sets a column without tripping over names such as `__proto__`. */
function defineColumn(row: SqliteRow, name: string, value: SqliteRow[string]): void {
  Object.defineProperty(row, name, { value, enumerable: true, writable: true, configurable: true });
}
