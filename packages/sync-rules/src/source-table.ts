/** Source tables referenced by sync rules: `[schema.]table`, default schema `public`, optional trailing `%` wildcard. */
import type { TableReference } from './sql/ast.js';
import { SqlSyntaxError } from './sql/syntax-error.js';

export const DEFAULT_SCHEMA = 'public';

export interface SourceTable {
  schema: string;
  /** Table name; for wildcards the pattern including the trailing `%` (e.g. `todos_%`). */
  name: string;
  /** True when `name` ends with `%` and matches every table with that prefix. */
  wildcard: boolean;
}

export function sourceTableOf(reference: TableReference): SourceTable {
  const percent = reference.name.indexOf('%');
  if (percent >= 0 && percent !== reference.name.length - 1) {
    throw new SqlSyntaxError(
      `Only a single trailing "%" wildcard is supported in table names, got "${reference.name}"`,
      reference.start,
      reference.end
    );
  }
  return { schema: reference.schema ?? DEFAULT_SCHEMA, name: reference.name, wildcard: percent >= 0 };
}

export function tableMatches(pattern: SourceTable, schema: string, name: string): boolean {
  if (pattern.schema !== schema) return false;
  if (!pattern.wildcard) return pattern.name === name;
  return name.startsWith(pattern.name.slice(0, -1));
}

export function sameSourceTable(a: SourceTable, b: SourceTable): boolean {
  return a.schema === b.schema && a.name === b.name && a.wildcard === b.wildcard;
}
