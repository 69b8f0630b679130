/**
 * Recursive-descent parser for the SELECT subset used by sync rules.
 *
 * Grammar (SQLite precedence, lowest first):
 *   select     := SELECT column (',' column)* [FROM table] [WHERE expr] [';']
 *   column     := '*' | name '.' '*' | expr [[AS] name]
 *   table      := name ['.' name] [[AS] name]
 *   expr       := or;  or := and (OR and)*;  and := not (AND not)*;  not := NOT not | equality
 *   equality   := relational ((= | == | != | <> | IS [NOT] | [NOT] IN) relational | ISNULL | NOTNULL | NOT NULL)*
 *   relational := additive ((< | <= | > | >=) additive)*
 *   additive   := multiplicative ((+ | -) multiplicative)*
 *   multiplicative := concat ((* | / | %) concat)*
 *   concat     := unary ((|| | -> | ->>) unary)*
 *   unary      := (- | +) unary | primary
 *   primary    := literal | name | name '.' name | [name '.'] name '(' args ')' | CAST '(' expr AS type ')' | '(' expr ')'
 *
 * Anything outside the subset (JOIN, GROUP BY, subqueries, CASE, LIKE, ...)
 * is rejected with a {@link SqlSyntaxError} naming the construct and its position.
 */
import type { BinaryOperator, CastType, Expression, ResultColumn, SelectStatement, TableReference } from './ast.js';
import { INT64_MAX } from '../sqlite-value.js';
import { SqlSyntaxError, tokenize, type Token } from './tokenizer.js';

const RESERVED = new Set([
  'ALL',
  'AND',
  'AS',
  'ASC',
  'BETWEEN',
  'BY',
  'CASE',
  'CAST',
  'COLLATE',
  'CROSS',
  'CURRENT_DATE',
  'CURRENT_TIME',
  'CURRENT_TIMESTAMP',
  'DESC',
  'DISTINCT',
  'ELSE',
  'END',
  'ESCAPE',
  'EXCEPT',
  'EXISTS',
  'FALSE',
  'FROM',
  'FULL',
  'GLOB',
  'GROUP',
  'HAVING',
  'IN',
  'INNER',
  'INTERSECT',
  'IS',
  'ISNULL',
  'JOIN',
  'LEFT',
  'LIKE',
  'LIMIT',
  'MATCH',
  'NATURAL',
  'NOT',
  'NOTNULL',
  'NULL',
  'OFFSET',
  'ON',
  'OR',
  'ORDER',
  'OUTER',
  'REGEXP',
  'RIGHT',
  'SELECT',
  'THEN',
  'TRUE',
  'UNION',
  'USING',
  'VALUES',
  'WHEN',
  'WHERE',
  'WINDOW',
  'WITH'
]);

/** Clauses that may follow a SELECT in SQL but are outside the sync rules subset. */
const UNSUPPORTED_CLAUSES: Record<string, string> = {
  GROUP: 'GROUP BY is not supported in sync rules queries',
  ORDER: 'ORDER BY is not supported in sync rules queries',
  LIMIT: 'LIMIT is not supported in sync rules queries',
  OFFSET: 'OFFSET is not supported in sync rules queries',
  HAVING: 'HAVING is not supported in sync rules queries',
  WINDOW: 'WINDOW is not supported in sync rules queries',
  UNION: 'UNION is not supported; use one query per SELECT',
  INTERSECT: 'INTERSECT is not supported in sync rules queries',
  EXCEPT: 'EXCEPT is not supported in sync rules queries',
  JOIN: 'JOIN is not supported; sync rules queries select from a single table',
  INNER: 'JOIN is not supported; sync rules queries select from a single table',
  LEFT: 'JOIN is not supported; sync rules queries select from a single table',
  RIGHT: 'JOIN is not supported; sync rules queries select from a single table',
  FULL: 'JOIN is not supported; sync rules queries select from a single table',
  CROSS: 'JOIN is not supported; sync rules queries select from a single table',
  NATURAL: 'JOIN is not supported; sync rules queries select from a single table'
};

const UNSUPPORTED_OPERATORS: Record<string, string> = {
  LIKE: 'LIKE is not supported in sync rules queries',
  GLOB: 'GLOB is not supported in sync rules queries',
  MATCH: 'MATCH is not supported in sync rules queries',
  REGEXP: 'REGEXP is not supported in sync rules queries',
  BETWEEN: 'BETWEEN is not supported; use two comparisons combined with AND'
};

class Parser {
  private readonly tokens: Token[];
  private position = 0;

  constructor(sql: string) {
    this.tokens = tokenize(sql);
  }

  private get current(): Token {
    return this.tokens[this.position]!;
  }

  private peek(offset = 1): Token {
    return this.tokens[Math.min(this.position + offset, this.tokens.length - 1)]!;
  }

  private advance(): Token {
    const token = this.current;
    if (token.kind !== 'eof') this.position++;
    return token;
  }

  private fail(message: string, token: Token = this.current): never {
    throw new SqlSyntaxError(message, token.start, Math.max(token.end, token.start + 1));
  }

  private describe(token: Token): string {
    if (token.kind === 'eof') return 'end of query';
    if (token.kind === 'string') return `'${token.value}'`;
    return `"${token.value}"`;
  }

  private isKeyword(keyword: string, token: Token = this.current): boolean {
    return token.kind === 'identifier' && token.value.toUpperCase() === keyword;
  }

  private acceptKeyword(keyword: string): Token | undefined {
    return this.isKeyword(keyword) ? this.advance() : undefined;
  }

  private expectKeyword(keyword: string): Token {
    if (!this.isKeyword(keyword)) this.fail(`Expected ${keyword} but found ${this.describe(this.current)}`);
    return this.advance();
  }

  private isOperator(operator: string, token: Token = this.current): boolean {
    return token.kind === 'operator' && token.value === operator;
  }

  private acceptOperator(operator: string): Token | undefined {
    return this.isOperator(operator) ? this.advance() : undefined;
  }

  private expectOperator(operator: string): Token {
    if (!this.isOperator(operator)) this.fail(`Expected "${operator}" but found ${this.describe(this.current)}`);
    return this.advance();
  }

  private isReserved(token: Token): boolean {
    return token.kind === 'identifier' && RESERVED.has(token.value.toUpperCase());
  }

  /** A name: bare non-reserved identifier or quoted identifier. */
  private parseName(what: string): Token {
    const token = this.current;
    if (token.kind === 'quoted_identifier' || (token.kind === 'identifier' && !this.isReserved(token)))
      return this.advance();
    return this.fail(`Expected ${what} but found ${this.describe(token)}`);
  }

  parseStatement(): SelectStatement {
    const first = this.current;
    if (this.isKeyword('WITH')) this.fail('WITH (common table expressions) is not supported in sync rules queries');
    if (!this.isKeyword('SELECT')) {
      if (first.kind === 'eof') this.fail('Empty query; expected a SELECT statement');
      this.fail(`Only SELECT statements are supported, found ${this.describe(first)}`);
    }
    this.advance();
    if (this.isKeyword('DISTINCT')) this.fail('SELECT DISTINCT is not supported in sync rules queries');
    this.acceptKeyword('ALL');

    const columns: ResultColumn[] = [this.parseResultColumn()];
    while (this.acceptOperator(',')) columns.push(this.parseResultColumn());

    let from: TableReference | undefined;
    if (this.acceptKeyword('FROM')) from = this.parseTableReference();

    let where: Expression | undefined;
    if (this.acceptKeyword('WHERE')) where = this.parseExpression();

    const next = this.current;
    const clause = next.kind === 'identifier' ? UNSUPPORTED_CLAUSES[next.value.toUpperCase()] : undefined;
    if (clause) this.fail(clause);
    if (this.isOperator(',') && from)
      this.fail('Selecting from several tables is not supported; sync rules queries select from a single table');
    this.acceptOperator(';');
    if (this.current.kind !== 'eof') {
      if (this.tokens[this.position - 1]?.value === ';') this.fail('Only one statement per query is allowed');
      this.fail(`Unexpected ${this.describe(this.current)}`);
    }
    return { columns, from, where, start: first.start, end: this.tokens[this.position - 1]?.end ?? first.end };
  }

  private parseResultColumn(): ResultColumn {
    const start = this.current;
    if (this.isOperator('*')) {
      this.advance();
      return { type: 'star', start: start.start, end: start.end };
    }
    if (
      (start.kind === 'identifier' || start.kind === 'quoted_identifier') &&
      this.isOperator('.', this.peek()) &&
      this.isOperator('*', this.peek(2))
    ) {
      this.advance();
      this.advance();
      const star = this.advance();
      return { type: 'star', qualifier: start.value, start: start.start, end: star.end };
    }
    const expression = this.parseExpression();
    let alias: string | undefined;
    if (this.acceptKeyword('AS')) {
      const token = this.current;
      if (token.kind === 'string') alias = this.advance().value;
      else alias = this.parseName('a column alias after AS').value;
    } else if (
      this.current.kind === 'quoted_identifier' ||
      (this.current.kind === 'identifier' && !this.isReserved(this.current))
    ) {
      alias = this.advance().value;
    }
    return { type: 'expression', expression, alias, start: start.start, end: this.tokens[this.position - 1]!.end };
  }

  private parseTableReference(): TableReference {
    const start = this.current;
    if (this.isOperator('(')) {
      if (this.isKeyword('SELECT', this.peek())) this.fail('Subqueries are not supported in sync rules queries');
      this.fail('Expected a table name after FROM');
    }
    let name = this.parseName('a table name after FROM').value;
    let schema: string | undefined;
    if (this.acceptOperator('.')) {
      schema = name;
      name = this.parseName('a table name after the schema').value;
    }
    let functionArgs: Expression[] | undefined;
    if (this.isOperator('(')) {
      if (schema !== undefined || name.toLowerCase() !== 'json_each')
        this.fail('The only table-valued function supported in FROM is json_each(<JSON array>)');
      this.advance();
      functionArgs = [];
      if (!this.isOperator(')')) {
        functionArgs.push(this.parseExpression());
        while (this.acceptOperator(',')) functionArgs.push(this.parseExpression());
      }
      this.expectOperator(')');
      name = 'json_each';
    }
    let alias: string | undefined;
    if (this.acceptKeyword('AS')) alias = this.parseName('a table alias after AS').value;
    else if (
      this.current.kind === 'quoted_identifier' ||
      (this.current.kind === 'identifier' && !this.isReserved(this.current))
    ) {
      alias = this.advance().value;
    }
    if (this.isKeyword('ON') || this.isKeyword('USING'))
      this.fail('JOIN is not supported; sync rules queries select from a single table');
    return { schema, name, alias, functionArgs, start: start.start, end: this.tokens[this.position - 1]!.end };
  }

  parseExpression(): Expression {
    return this.parseOr();
  }

  private binary(operator: BinaryOperator, left: Expression, right: Expression): Expression {
    return { type: 'binary', operator, left, right, start: left.start, end: right.end };
  }

  private parseOr(): Expression {
    let left = this.parseAnd();
    while (this.acceptKeyword('OR')) left = this.binary('OR', left, this.parseAnd());
    return left;
  }

  private parseAnd(): Expression {
    let left = this.parseNot();
    while (this.acceptKeyword('AND')) left = this.binary('AND', left, this.parseNot());
    return left;
  }

  private parseNot(): Expression {
    const token = this.current;
    if (this.isKeyword('NOT')) {
      this.advance();
      if (this.isKeyword('EXISTS')) this.fail('EXISTS subqueries are not supported in sync rules queries');
      const operand = this.parseNot();
      return { type: 'unary', operator: 'NOT', operand, start: token.start, end: operand.end };
    }
    return this.parseEquality();
  }

  private parseEquality(): Expression {
    let left = this.parseRelational();
    for (;;) {
      const token = this.current;
      const upper = token.kind === 'identifier' ? token.value.toUpperCase() : '';
      if (UNSUPPORTED_OPERATORS[upper]) this.fail(UNSUPPORTED_OPERATORS[upper]);
      if (token.kind === 'operator' && ['=', '==', '!=', '<>'].includes(token.value)) {
        this.advance();
        left = this.binary(token.value === '=' || token.value === '==' ? '=' : '!=', left, this.parseRelational());
      } else if (upper === 'IS') {
        this.advance();
        const negated = this.acceptKeyword('NOT') !== undefined;
        if (this.isKeyword('DISTINCT')) this.fail('IS [NOT] DISTINCT FROM is not supported; use IS / IS NOT');
        left = this.binary(negated ? 'IS NOT' : 'IS', left, this.parseRelational());
      } else if (upper === 'ISNULL' || upper === 'NOTNULL') {
        this.advance();
        left = this.binary(upper === 'ISNULL' ? 'IS' : 'IS NOT', left, {
          type: 'literal',
          value: null,
          start: token.start,
          end: token.end
        });
      } else if (upper === 'NOT' && this.isKeyword('NULL', this.peek())) {
        this.advance();
        const nullToken = this.advance();
        left = this.binary('IS NOT', left, {
          type: 'literal',
          value: null,
          start: nullToken.start,
          end: nullToken.end
        });
      } else if (upper === 'IN' || (upper === 'NOT' && this.isKeyword('IN', this.peek()))) {
        const negated = upper === 'NOT';
        if (negated) this.advance();
        this.advance();
        left = this.parseInRight(left, negated);
      } else if (upper === 'NOT') {
        const next = this.peek();
        const nextUpper = next.kind === 'identifier' ? next.value.toUpperCase() : '';
        if (UNSUPPORTED_OPERATORS[nextUpper]) this.fail(UNSUPPORTED_OPERATORS[nextUpper], next);
        this.fail(`Unexpected NOT`);
      } else {
        return left;
      }
    }
  }

  private parseInRight(left: Expression, negated: boolean): Expression {
    if (this.isOperator('(')) {
      if (this.isKeyword('SELECT', this.peek()))
        this.fail('Subqueries are not supported in sync rules queries', this.peek());
      this.advance();
      const items: Expression[] = [];
      if (!this.isOperator(')')) {
        items.push(this.parseExpression());
        while (this.acceptOperator(',')) items.push(this.parseExpression());
      }
      const close = this.expectOperator(')');
      return { type: 'in_list', left, items, negated, start: left.start, end: close.end };
    }
    const right = this.parseRelational();
    return { type: 'in_array', left, right, negated, start: left.start, end: right.end };
  }

  private parseRelational(): Expression {
    let left = this.parseAdditive();
    for (;;) {
      const token = this.current;
      if (token.kind === 'operator' && ['<', '<=', '>', '>='].includes(token.value)) {
        this.advance();
        left = this.binary(token.value as BinaryOperator, left, this.parseAdditive());
      } else if (token.kind === 'operator' && ['&', '|', '<<', '>>'].includes(token.value)) {
        this.fail(`Bitwise operator "${token.value}" is not supported in sync rules queries`);
      } else {
        return left;
      }
    }
  }

  private parseAdditive(): Expression {
    let left = this.parseMultiplicative();
    while (this.isOperator('+') || this.isOperator('-')) {
      const operator = this.advance().value as BinaryOperator;
      left = this.binary(operator, left, this.parseMultiplicative());
    }
    return left;
  }

  private parseMultiplicative(): Expression {
    let left = this.parseConcat();
    while (this.isOperator('*') || this.isOperator('/') || this.isOperator('%')) {
      const operator = this.advance().value as BinaryOperator;
      left = this.binary(operator, left, this.parseConcat());
    }
    return left;
  }

  private parseConcat(): Expression {
    let left = this.parseUnary();
    while (this.isOperator('||') || this.isOperator('->') || this.isOperator('->>')) {
      const operator = this.advance().value as BinaryOperator;
      left = this.binary(operator, left, this.parseUnary());
    }
    return left;
  }

  private parseUnary(): Expression {
    const token = this.current;
    if (this.isOperator('-') || this.isOperator('+')) {
      this.advance();
      const operand = this.parseUnary();
      return { type: 'unary', operator: token.value as '-' | '+', operand, start: token.start, end: operand.end };
    }
    if (this.isOperator('~')) this.fail('Bitwise operator "~" is not supported in sync rules queries');
    const expression = this.parsePrimary();
    if (this.isKeyword('COLLATE')) this.fail('COLLATE is not supported in sync rules queries');
    return expression;
  }

  private parsePrimary(): Expression {
    const token = this.current;
    switch (token.kind) {
      case 'string':
        this.advance();
        return { type: 'literal', value: token.value, start: token.start, end: token.end };
      case 'integer':
        this.advance();
        return { type: 'literal', value: this.integerValue(token), start: token.start, end: token.end };
      case 'real':
        this.advance();
        return { type: 'literal', value: Number(token.value), start: token.start, end: token.end };
      case 'parameter':
        return this.fail(
          `Query parameters such as "${token.value}" are not supported; use request.parameters() or bucket.<name>`
        );
      case 'eof':
        return this.fail('Unexpected end of query; expected an expression');
      case 'operator':
        if (token.value === '(') return this.parseParenthesized();
        return this.fail(`Unexpected ${this.describe(token)}; expected an expression`);
      case 'quoted_identifier':
        return this.parseReference();
      case 'identifier':
        break;
    }
    const keyword = token.value.toUpperCase();
    switch (keyword) {
      case 'NULL':
        this.advance();
        return { type: 'literal', value: null, start: token.start, end: token.end };
      case 'TRUE':
      case 'FALSE':
        this.advance();
        return { type: 'literal', value: keyword === 'TRUE' ? 1n : 0n, start: token.start, end: token.end };
      case 'CAST':
        return this.parseCast();
      case 'CASE':
        return this.fail('CASE expressions are not supported in sync rules queries');
      case 'EXISTS':
      case 'SELECT':
        return this.fail('Subqueries are not supported in sync rules queries');
      case 'CURRENT_DATE':
      case 'CURRENT_TIME':
      case 'CURRENT_TIMESTAMP':
        return this.fail(`${keyword} is not supported: sync rules must be deterministic`);
    }
    if (this.isReserved(token)) return this.fail(`Unexpected keyword ${token.value}; expected an expression`);
    return this.parseReference();
  }

  private integerValue(token: Token): bigint | number {
    if (/^0[xX]/.test(token.value)) {
      const value = BigInt(token.value);
      if (value > 2n ** 64n - 1n) this.fail(`Hex literal ${token.value} is too big`, token);
      return BigInt.asIntN(64, value);
    }
    const value = BigInt(token.value);
    return value > INT64_MAX ? Number(token.value) : value;
  }

  private parseParenthesized(): Expression {
    const open = this.advance();
    if (this.isKeyword('SELECT')) this.fail('Subqueries are not supported in sync rules queries');
    const expression = this.parseExpression();
    if (this.isOperator(',')) this.fail('Row values such as (a, b) are not supported');
    const close = this.expectOperator(')');
    return { ...expression, start: open.start, end: close.end };
  }

  private parseCast(): Expression {
    const start = this.advance();
    this.expectOperator('(');
    const operand = this.parseExpression();
    this.expectKeyword('AS');
    const typeToken = this.current;
    if (typeToken.kind !== 'identifier') this.fail('Expected a type name (TEXT, INTEGER or REAL) in CAST');
    const type = typeToken.value.toUpperCase();
    const targetType = (
      {
        TEXT: 'TEXT',
        INTEGER: 'INTEGER',
        INT: 'INTEGER',
        REAL: 'REAL',
        NUMERIC: 'NUMERIC',
        BLOB: 'BLOB'
      } as Record<string, CastType>
    )[type];
    if (!targetType) this.fail(`CAST to ${typeToken.value} is not supported; use TEXT, INTEGER, REAL, NUMERIC or BLOB`);
    this.advance();
    const close = this.expectOperator(')');
    return { type: 'cast', operand, targetType, start: start.start, end: close.end };
  }

  /** `name`, `qualifier.name`, `fn(...)` or `namespace.fn(...)`. */
  private parseReference(): Expression {
    const first = this.advance();
    let qualifier: string | undefined;
    let nameToken = first;
    if (this.isOperator('.')) {
      this.advance();
      if (this.isOperator('*')) this.fail('"table.*" is only allowed as a result column');
      qualifier = first.value;
      nameToken = this.current;
      if (nameToken.kind !== 'identifier' && nameToken.kind !== 'quoted_identifier') {
        this.fail(`Expected a name after "${first.value}." but found ${this.describe(nameToken)}`);
      }
      this.advance();
      if (this.isOperator('.')) this.fail('Names with more than two parts (schema.table.column) are not supported');
    }
    if (this.isOperator('(') && nameToken.kind === 'identifier') {
      this.advance();
      if (this.isOperator('*')) this.fail('Aggregate functions such as count(*) are not supported');
      if (this.isKeyword('DISTINCT')) this.fail('Aggregate functions are not supported');
      const args: Expression[] = [];
      if (!this.isOperator(')')) {
        args.push(this.parseExpression());
        while (this.acceptOperator(',')) args.push(this.parseExpression());
      }
      const close = this.expectOperator(')');
      if (this.isKeyword('FILTER') || this.isKeyword('OVER'))
        this.fail('Window and aggregate functions are not supported');
      return { type: 'call', namespace: qualifier, name: nameToken.value, args, start: first.start, end: close.end };
    }
    return { type: 'column', qualifier, name: nameToken.value, start: first.start, end: nameToken.end };
  }
}

/** Deeper expressions are rejected so that evaluation (which recurses) stays far from the stack limit. */
export const MAX_EXPRESSION_DEPTH = 200;

function children(expression: Expression): Expression[] {
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
    for (const child of children(node)) stack.push([child, depth + 1]);
  }
}

/** Parses one SELECT statement. Throws {@link SqlSyntaxError} for invalid or unsupported SQL. */
export function parseSelect(sql: string): SelectStatement {
  let statement: SelectStatement;
  try {
    statement = new Parser(sql).parseStatement();
  } catch (error) {
    if (error instanceof RangeError) throw new SqlSyntaxError('Query is nested too deeply', 0, sql.length);
    throw error;
  }
  if (statement.where) checkDepth(statement.where);
  for (const arg of statement.from?.functionArgs ?? []) checkDepth(arg);
  for (const column of statement.columns) if (column.type === 'expression') checkDepth(column.expression);
  return statement;
}
