import type { SqliteValue } from '../sqlite-value.js';

/**
 * A scalar SQL function. The argument count is checked when the rules load, so `call` always gets
 * between `minArgs` and `maxArgs` values. `call` may throw {@link EvaluationFailure} for a value it
 * cannot take; the row is then skipped for that query and the error reported.
 */
export interface FunctionDefinition {
  minArgs: number;
  maxArgs: number;
  call(args: SqliteValue[]): SqliteValue;
  /** For functions that, like SQLite's, evaluate only the arguments they need (iif, ifnull, coalesce). */
  lazy?: (args: Array<() => SqliteValue>) => SqliteValue;
}
