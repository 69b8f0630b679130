/**
 * Parses sync-rules SQL with `pgsql-ast-parser`, the parser the reference service uses, and translates its
 * tree into the internal AST of `ast.ts`. Using the same parser makes syntax acceptance match the reference
 * by construction (see the package README); this module only maps node kinds and rejects, with the node's
 * position, the constructs sync rules do not support.
 *
 * Unquoted identifiers come out lower-cased (Postgres rules, as in the reference); quoted ones keep their case.
 */
import {
  parse,
  type DataTypeDef,
  type Expr,
  type From,
  type NodeLocation,
  type SelectFromStatement,
  type SelectedColumn,
  type Statement
} from 'pgsql-ast-parser';
import {
  childExpressions,
  type BinaryOperator,
  type CastType,
  type Expression,
  type Range,
  type ResultColumn,
  type SelectStatement,
  type TableReference
} from './ast.js';
import { INT64_MAX, INT64_MIN } from '../sqlite-value.js';
import { SqlSyntaxError } from './syntax-error.js';

/** Deeper expressions are rejected so that evaluation (which recurses) stays far from the stack limit. */
const MAX_EXPRESSION_DEPTH = 200;

/**
 * Longer query texts are rejected before parsing: the parser's time grows quickly with size (a 16 KiB
 * expression takes about 2 s here), and no real sync-rules query comes near this.
 */
export const MAX_QUERY_LENGTH = 16 * 1024;

/** `CAST(x AS <name>)` / `x::<name>` targets the reference accepts (SQLite storage classes, lower-cased). */
const CAST_TYPES: Record<string, CastType> = {
  text: 'TEXT',
  integer: 'INTEGER',
  real: 'REAL',
  numeric: 'NUMERIC',
  blob: 'BLOB'
};

const BINARY_OPERATORS: Partial<Record<string, BinaryOperator>> = {
  OR: 'OR',
  AND: 'AND',
  '=': '=',
  '!=': '!=',
  '<': '<',
  '<=': '<=',
  '>': '>',
  '>=': '>=',
  '+': '+',
  '-': '-',
  '*': '*',
  '/': '/',
  '%': '%',
  '||': '||'
};

const UNSUPPORTED_OPERATORS: Partial<Record<string, string>> = {
  LIKE: 'LIKE is not supported in sync rules queries',
  'NOT LIKE': 'LIKE is not supported in sync rules queries',
  ILIKE: 'ILIKE is not supported in sync rules queries',
  'NOT ILIKE': 'ILIKE is not supported in sync rules queries'
};

type Located = { _location?: NodeLocation };

export class Translator {
  readonly warnings: Array<{ reason: string } & Range> = [];

  constructor(private readonly sql: string) {}

  /**
   * The reference's warning for unquoted identifiers written with capitals: Postgres rules lower-case them, so
   * `userId` reads column `userid`, which is rarely what was meant.
   */
  private checkCase(range: Range): void {
    const source = this.sql.slice(range.start, range.end);
    if (source.startsWith('"') || source.toLowerCase() === source) return;
    this.warnings.push({
      reason: `Unquoted identifiers are converted to lower-case. Use "${source}" instead.`,
      ...range
    });
  }

  private range(node: Located, fallback: Range = { start: 0, end: this.sql.length }): Range {
    const location = node._location;
    return location ? { start: location.start, end: location.end } : { start: fallback.start, end: fallback.end };
  }

  /** The range of a keyword (e.g. `GROUP BY`) that the parser gives no location for, searched near `near`. */
  private keyword(pattern: RegExp, near: number, backwards: boolean): Range | undefined {
    const flags = 'gi';
    const regex = new RegExp(pattern.source, flags);
    let found: Range | undefined;
    for (const match of this.sql.matchAll(regex)) {
      const range = { start: match.index, end: match.index + match[0].length };
      if (backwards ? range.end <= near : range.start >= near) {
        found = range;
        if (!backwards) break;
      }
    }
    return found;
  }

  private failAt(message: string, range: Range | undefined, node: Located): never {
    if (range) throw new SqlSyntaxError(message, range.start, range.end);
    return this.fail(message, node);
  }

  private fail(message: string, node: Located, fallback?: Range): never {
    const { start, end } = this.range(node, fallback);
    throw new SqlSyntaxError(message, start, Math.max(end, start + 1));
  }

  statement(statements: Statement[]): SelectStatement {
    const [first, second] = statements;
    if (!first) throw new SqlSyntaxError('Empty query; expected a SELECT statement', 0, this.sql.length);
    if (second) this.fail('Only one statement per query is allowed', second);
    switch (first.type) {
      case 'select':
        return this.select(first);
      case 'with':
      case 'with recursive':
        return this.fail('WITH (common table expressions) is not supported in sync rules queries', first);
      case 'union':
      case 'union all':
        return this.fail('UNION is not supported; use one query per SELECT', first);
      default:
        return this.fail(`Only SELECT statements are supported, found ${first.type.toUpperCase()}`, first);
    }
  }

  private select(statement: SelectFromStatement): SelectStatement {
    const whole = this.range(statement);
    if (statement.distinct)
      this.failAt(
        'SELECT DISTINCT is not supported in sync rules queries',
        this.keyword(/\bdistinct\b/, whole.start, false),
        statement
      );
    const group = statement.groupBy?.[0];
    if (group)
      this.failAt(
        'GROUP BY is not supported in sync rules queries',
        this.keyword(/\bgroup\b/, this.range(group).start, true),
        group
      );
    if (statement.having)
      this.failAt(
        'HAVING is not supported in sync rules queries',
        this.keyword(/\bhaving\b/, this.range(statement.having).start, true),
        statement.having
      );
    const order = statement.orderBy?.[0];
    if (order)
      this.failAt(
        'ORDER BY is not supported in sync rules queries',
        this.keyword(/\border\b/, this.range(order).start, true),
        order
      );
    if (statement.limit) {
      const limit = statement.limit.limit ? 'LIMIT' : 'OFFSET';
      const near = statement.limit.limit ?? statement.limit.offset;
      this.failAt(
        `${limit} is not supported in sync rules queries`,
        near ? this.keyword(new RegExp(`\\b${limit}\\b`), this.range(near).start, true) : undefined,
        statement.limit
      );
    }
    if (statement.for) this.fail('SELECT ... FOR is not supported in sync rules queries', statement.for, whole);
    if (statement.skip) this.fail('SKIP LOCKED/NOWAIT is not supported in sync rules queries', statement.skip, whole);

    const columns = (statement.columns ?? []).map((column) => this.resultColumn(column));
    let from: TableReference | undefined;
    const [table, ...others] = statement.from ?? [];
    if (table) {
      const joined = others.find((other) => other.join);
      if (joined)
        this.failAt(
          'JOIN is not supported; sync rules queries select from a single table',
          this.keyword(/\b(join|inner|left|right|full|cross|natural)\b/, this.range(table).end, false),
          joined
        );
      if (others[0])
        this.fail(
          'Selecting from several tables is not supported; sync rules queries select from a single table',
          others[0]
        );
      from = this.tableReference(table);
    }
    const where = statement.where ? this.expression(statement.where) : undefined;
    return { columns, from, where, ...whole };
  }

  private resultColumn(column: SelectedColumn): ResultColumn {
    const range = this.range(column, this.range(column.expr));
    const expr = column.expr;
    if (expr.type === 'ref' && expr.name === '*') {
      if (expr.table?.schema) this.fail('Schema is not supported in column references', expr);
      return { type: 'star', qualifier: expr.table?.name, ...range };
    }
    return { type: 'expression', expression: this.expression(expr), alias: column.alias?.name, ...range };
  }

  private tableReference(from: From): TableReference {
    const range = this.range(from);
    switch (from.type) {
      case 'statement':
        return this.fail('Subqueries are not supported in sync rules queries', from);
      case 'call': {
        if (from.function.schema !== undefined || from.function.name !== 'json_each')
          this.fail(
            `Table-valued function ${from.function.name} is not defined; the only one is json_each(<JSON>)`,
            from
          );
        if (from.alias?.columns) this.fail('Column aliases for json_each() are not supported', from);
        return {
          name: 'json_each',
          alias: from.alias?.name,
          functionArgs: from.args.map((arg) => this.expression(arg)),
          ...range
        };
      }
      case 'table':
        if (from.name.columnNames) this.fail('Column aliases for tables are not supported', from);
        if (!from.name.schema && !from.name.alias && from.name._location) this.checkCase(from.name._location);
        return { schema: from.name.schema, name: from.name.name, alias: from.name.alias, ...range };
    }
  }

  /** Iterative over the operand chains the parser builds deep (AND/OR lists), recursive elsewhere. */
  expression(expr: Expr): Expression {
    const range = this.range(expr);
    switch (expr.type) {
      case 'integer':
        return { type: 'literal', value: this.integerValue(expr.value, range), ...range };
      case 'numeric':
        return { type: 'literal', value: expr.value, ...range };
      case 'string':
        return { type: 'literal', value: expr.value, ...range };
      case 'boolean':
        return { type: 'literal', value: expr.value ? 1n : 0n, ...range };
      case 'null':
        return { type: 'literal', value: null, ...range };
      case 'ref': {
        if (expr.name === '*') return this.fail('"*" is only allowed as a result column', expr);
        if (expr.table?.schema) this.fail('Schema is not supported in column references', expr);
        const qualifierRange = expr.table?._location;
        if (qualifierRange) this.checkCase(qualifierRange);
        this.checkCase({ start: qualifierRange ? qualifierRange.end + 1 : range.start, end: range.end });
        return { type: 'column', qualifier: expr.table?.name, name: expr.name, ...range };
      }
      case 'parameter':
        return this.fail(
          `Query parameters such as "${expr.name}" are not supported; use request.parameters() or bucket.<name>`,
          expr
        );
      case 'call': {
        if (expr.over || expr.filter || expr.withinGroup || expr.orderBy || expr.distinct)
          this.fail('Aggregate and window functions are not supported in sync rules queries', expr);
        const star = expr.args.find((arg) => arg.type === 'ref' && arg.name === '*');
        if (star) this.fail('Aggregate functions such as count(*) are not supported in sync rules queries', star);
        return {
          type: 'call',
          namespace: expr.function.schema,
          name: expr.function.name,
          args: expr.args.map((arg) => this.expression(arg)),
          ...range
        };
      }
      case 'unary': {
        const operand = this.expression(expr.operand);
        switch (expr.op) {
          case 'NOT':
          case '-':
          case '+':
            return { type: 'unary', operator: expr.op, operand, ...range };
          case 'IS NULL':
          case 'IS NOT NULL': {
            const nullLiteral: Expression = { type: 'literal', value: null, start: operand.end, end: range.end };
            return {
              type: 'binary',
              operator: expr.op === 'IS NULL' ? 'IS' : 'IS NOT',
              left: operand,
              right: nullLiteral,
              ...range
            };
          }
          default:
            return this.fail(`Operator ${expr.op} is not supported; compare with = 1 / = 0 instead`, expr);
        }
      }
      case 'binary': {
        if (expr.op === 'IN' || expr.op === 'NOT IN') {
          const left = this.expression(expr.left);
          const negated = expr.op === 'NOT IN';
          if (expr.right.type === 'list')
            return {
              type: 'in_list',
              left,
              items: expr.right.expressions.map((item) => this.expression(item)),
              negated,
              ...range
            };
          if (expr.right.type === 'select' || expr.right.type === 'union' || expr.right.type === 'with')
            this.fail('Subqueries are not supported in sync rules queries', expr.right);
          return { type: 'in_array', left, right: this.expression(expr.right), negated, ...range };
        }
        const operator = BINARY_OPERATORS[expr.op];
        if (!operator) {
          // Point at the operator itself: it sits between the operands.
          const between = { start: this.range(expr.left).end, end: this.range(expr.right).start };
          const text = this.sql.slice(between.start, between.end);
          const offset = text.length - text.trimStart().length;
          this.failAt(
            UNSUPPORTED_OPERATORS[expr.op] ?? `Operator ${expr.op} is not supported`,
            { start: between.start + offset, end: between.start + text.trimEnd().length },
            expr
          );
        }
        return {
          type: 'binary',
          operator,
          left: this.expression(expr.left),
          right: this.expression(expr.right),
          ...range
        };
      }
      case 'member': {
        const left = this.expression(expr.operand);
        if (typeof expr.member !== 'string')
          this.fail(
            `${expr.op} with an array index is not supported (as in the reference); use ${expr.op} '$[${expr.member}]'`,
            expr
          );
        const right: Expression = { type: 'literal', value: expr.member, start: left.end, end: range.end };
        return { type: 'binary', operator: expr.op, left, right, ...range };
      }
      case 'cast': {
        const targetType = this.castType(expr.to, expr);
        return { type: 'cast', operand: this.expression(expr.operand), targetType, ...range };
      }
      case 'keyword':
        return this.fail(`${expr.keyword.toUpperCase()} is not supported: sync rules must be deterministic`, expr);
      case 'case':
        return this.fail('CASE expressions are not supported in sync rules queries; use iif()', expr);
      case 'ternary':
        return this.fail('BETWEEN is not supported; use two comparisons combined with AND', expr);
      case 'list':
      case 'array':
        return this.fail('Row values and arrays are not supported here; use a JSON array text', expr);
      case 'select':
      case 'union':
      case 'union all':
      case 'with':
      case 'with recursive':
      case 'values':
      case 'array select':
        return this.fail('Subqueries are not supported in sync rules queries', expr);
      case 'substring':
        return this.fail('SUBSTRING(x FROM a FOR b) is not supported; use substring(x, a, b)', expr);
      default:
        return this.fail(`${expr.type} expressions are not supported in sync rules queries`, expr);
    }
  }

  private castType(to: DataTypeDef, node: Located): CastType {
    const name = to.kind === 'array' ? undefined : to.name.toLowerCase();
    const targetType = name === undefined || to.kind === 'array' || to.schema ? undefined : CAST_TYPES[name];
    if (!targetType || (to.kind !== 'array' && to.config))
      this.fail(`CAST to ${name ?? 'an array type'} is not supported; use TEXT, INTEGER, REAL, NUMERIC or BLOB`, node);
    return targetType;
  }

  /**
   * The parser gives integers as JS numbers, which loses precision past 2^53: read the literal's text instead.
   * Beyond the int64 range SQLite reads the literal as REAL, and so do we.
   */
  private integerValue(parsed: number, range: Range): bigint | number {
    // The parser folds a leading minus into the literal (`-9223372036854775807`), possibly with spaces after it.
    const text = this.sql.slice(range.start, range.end).replace(/^-\s+/, '-');
    if (!/^-?\d+$/.test(text)) return Number.isSafeInteger(parsed) ? BigInt(parsed) : parsed;
    const value = BigInt(text);
    return value > INT64_MAX || value < INT64_MIN ? Number(text) : value;
  }
}

/** Pre-parse checks whose inputs would make the parser itself slow or the text unusable. */
function checkText(sql: string): void {
  if (sql.length > MAX_QUERY_LENGTH)
    throw new SqlSyntaxError(
      `Query is too long (${sql.length} characters; at most ${MAX_QUERY_LENGTH})`,
      MAX_QUERY_LENGTH,
      sql.length
    );
  // A lone surrogate is text that was not valid UTF-16 (and so was never valid UTF-8); U+FFFD is what a
  // decoder puts in place of invalid UTF-8 bytes; NUL cannot be stored in Postgres text.
  // eslint-disable-next-line no-control-regex
  const invalid = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]|\uFFFD|\u0000/.exec(sql);
  if (invalid)
    throw new SqlSyntaxError(
      invalid[0] === '\u0000'
        ? 'Query contains a NUL character'
        : 'Query contains invalid text (the file is probably not valid UTF-8)',
      invalid.index,
      invalid.index + 1
    );
  // Parenthesis depth outside quotes and comments: deeper nesting is rejected anyway (MAX_EXPRESSION_DEPTH),
  // and rejecting it before parsing avoids the parser's slow path (40 KB of parentheses take 7 s).
  let depth = 0;
  for (let index = 0; index < sql.length; index++) {
    const char = sql[index];
    if (char === "'" || char === '"') {
      // A doubled quote inside a literal is two adjacent literals to this scan, which is the same for depth.
      const close = sql.indexOf(char, index + 1);
      if (close < 0)
        throw new SqlSyntaxError(
          char === "'" ? 'Unterminated string literal' : 'Unterminated quoted identifier',
          index,
          sql.length
        );
      index = close;
    } else if (char === '-' && sql[index + 1] === '-') {
      const close = sql.indexOf('\n', index);
      index = close < 0 ? sql.length : close;
    } else if (char === '/' && sql[index + 1] === '*') {
      const close = sql.indexOf('*/', index + 2);
      index = close < 0 ? sql.length : close + 1;
    } else if (char === '(') {
      if (++depth > MAX_EXPRESSION_DEPTH)
        throw new SqlSyntaxError(
          `Expression is nested too deeply (more than ${MAX_EXPRESSION_DEPTH} levels)`,
          index,
          index + 1
        );
    } else if (char === ')') depth = Math.max(0, depth - 1);
  }
}

interface ParserError {
  message?: unknown;
  token?: { offset?: number; text?: string };
  offset?: number;
}

/** Turns the parser's multi-line message (with its own excerpt and token list) into one line with a range. */
export function syntaxError(sql: string, error: unknown): SqlSyntaxError {
  const details = (error ?? {}) as ParserError;
  const message = typeof details.message === 'string' ? details.message : String(error);
  const offset = details.token?.offset ?? details.offset;
  if (typeof offset === 'number' && offset < sql.length) {
    const text = details.token?.text ?? sql[offset];
    const length = details.token?.text?.length ?? 1;
    if (text === '?' || (text !== undefined && /^[:@$][a-z_0-9]/i.test(sql.slice(offset, offset + 2))))
      return new SqlSyntaxError(
        `Query parameters such as "${text}" are not supported; use request.parameters() or bucket.<name>`,
        offset,
        offset + length
      );
    return new SqlSyntaxError(`Syntax error: unexpected ${JSON.stringify(text)}`, offset, offset + length);
  }
  if (/end of input/i.test(message))
    return new SqlSyntaxError('Syntax error: Unexpected end of query', sql.length, sql.length + 1);
  return new SqlSyntaxError(`Syntax error: ${message.split('\n')[0]}`, 0, sql.length);
}

function checkDepth(expression: Expression): void {
  const stack: Array<[Expression, number]> = [[expression, 1]];
  while (stack.length > 0) {
    const [node, depth] = stack.pop()!;
    if (depth > MAX_EXPRESSION_DEPTH)
      throw new SqlSyntaxError(
        `Expression is nested too deeply (more than ${MAX_EXPRESSION_DEPTH} levels)`,
        node.start,
        node.end
      );
    for (const child of childExpressions(node)) stack.push([child, depth + 1]);
  }
}

/** Parses one SELECT statement. Throws {@link SqlSyntaxError} for invalid or unsupported SQL. */
export function parseSelect(sql: string): SelectStatement {
  checkText(sql);
  let statements: Statement[];
  try {
    statements = parse(sql, { locationTracking: true });
  } catch (error) {
    if (error instanceof RangeError) throw new SqlSyntaxError('Query is nested too deeply', 0, sql.length);
    throw syntaxError(sql, error);
  }
  let statement: SelectStatement;
  const translator = new Translator(sql);
  try {
    statement = translator.statement(statements);
  } catch (error) {
    if (error instanceof RangeError) throw new SqlSyntaxError('Query is nested too deeply', 0, sql.length);
    throw error;
  }
  if (statement.where) checkDepth(statement.where);
  for (const arg of statement.from?.functionArgs ?? []) checkDepth(arg);
  for (const column of statement.columns) if (column.type === 'expression') checkDepth(column.expression);
  return { ...statement, warnings: translator.warnings };
}
