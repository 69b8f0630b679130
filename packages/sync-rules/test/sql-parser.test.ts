/**
 * The translation from pgsql-ast-parser's tree to the internal AST (`src/sql/ast.ts`), which the evaluator relies on:
 * node kinds, values (exact int64 literals), identifier case and character ranges.
 */
import { describe, expect, test } from 'vitest';
import type { Expression } from '../src/sql/ast.js';
import { parseSelect } from '../src/sql/parser.js';
import { SqlSyntaxError } from '../src/sql/syntax-error.js';

/** The first result column's expression, with the text of each range, for readable expectations. */
function firstExpression(sql: string): Expression {
  const column = parseSelect(sql).columns[0]!;
  if (column.type !== 'expression') throw new Error('expected an expression column');
  return column.expression;
}

const textOf = (sql: string, node: { start: number; end: number }) => sql.slice(node.start, node.end);

describe('parseSelect translates pgsql-ast-parser nodes', () => {
  test.each([
    ['SELECT 9223372036854775807', 9223372036854775807n],
    ['SELECT 9007199254740993', 9007199254740993n],
    ['SELECT 9223372036854775808', 9223372036854775808],
    ['SELECT 1.5', 1.5],
    ["SELECT 'it''s'", "it's"],
    ['SELECT TRUE', 1n],
    ['SELECT FALSE', 0n],
    ['SELECT NULL', null]
  ])('literal %s', (sql, value) => {
    expect(firstExpression(sql)).toMatchObject({ type: 'literal', value });
  });

  test.each([
    ['CAST(x AS text)', 'TEXT'],
    ['CAST(x AS INTEGER)', 'INTEGER'],
    ['CAST(x AS real)', 'REAL'],
    ['CAST(x AS numeric)', 'NUMERIC'],
    ['CAST(x AS blob)', 'BLOB'],
    ['x::text', 'TEXT'],
    ['x::numeric', 'NUMERIC']
  ])('cast %s', (expression, targetType) => {
    expect(firstExpression(`SELECT ${expression} AS v FROM t`)).toMatchObject({ type: 'cast', targetType });
  });

  test('IS NULL / IS NOT NULL become IS / IS NOT with a NULL literal', () => {
    expect(firstExpression('SELECT a IS NULL AS v FROM t')).toMatchObject({
      type: 'binary',
      operator: 'IS',
      left: { type: 'column', name: 'a' },
      right: { type: 'literal', value: null }
    });
    expect(firstExpression('SELECT a IS NOT NULL AS v FROM t')).toMatchObject({ operator: 'IS NOT' });
  });

  test('->> keeps the ranges of both operands', () => {
    const sql = "SELECT request.jwt() ->> 'org' AS v";
    const expression = firstExpression(sql);
    expect(expression).toMatchObject({ type: 'binary', operator: '->>', right: { type: 'literal', value: 'org' } });
    if (expression.type !== 'binary') throw new Error('binary expected');
    expect(textOf(sql, expression)).toBe("request.jwt() ->> 'org'");
    expect(textOf(sql, expression.left)).toBe('request.jwt()');
    expect(expression.left).toMatchObject({ type: 'call', namespace: 'request', name: 'jwt', args: [] });
  });

  test('IN (list) and IN <value> give in_list and in_array', () => {
    expect(firstExpression("SELECT a NOT IN (1, 'x') AS v FROM t")).toMatchObject({
      type: 'in_list',
      negated: true,
      items: [{ value: 1n }, { value: 'x' }]
    });
    expect(firstExpression('SELECT bucket.p IN tags AS v FROM t')).toMatchObject({
      type: 'in_array',
      negated: false,
      left: { type: 'column', qualifier: 'bucket', name: 'p' },
      right: { type: 'column', name: 'tags' }
    });
  });

  test('unquoted identifiers are lower-cased, quoted ones keep their case', () => {
    const statement = parseSelect('SELECT Users.User_Id, "Title" FROM App.Users WHERE "Owner" = Request.User_Id()');
    expect(statement.columns).toMatchObject([
      { expression: { type: 'column', qualifier: 'users', name: 'user_id' } },
      { expression: { type: 'column', name: 'Title' } }
    ]);
    expect(statement.from).toMatchObject({ schema: 'app', name: 'users' });
    expect(statement.where).toMatchObject({
      left: { name: 'Owner' },
      right: { type: 'call', namespace: 'request', name: 'user_id' }
    });
  });

  test('empty select lists, stars, aliases, json_each and table patterns', () => {
    expect(parseSelect('SELECT').columns).toEqual([]);
    expect(parseSelect('SELECT WHERE token_parameters.is_admin').where).toMatchObject({
      type: 'column',
      qualifier: 'token_parameters',
      name: 'is_admin'
    });
    expect(parseSelect('SELECT t.*, * FROM t').columns).toMatchObject([
      { type: 'star', qualifier: 't' },
      { type: 'star', qualifier: undefined }
    ]);
    expect(parseSelect('SELECT id FROM todos AS items').from).toMatchObject({ name: 'todos', alias: 'items' });
    expect(parseSelect("SELECT value FROM json_each(request.jwt() -> 'orgs') AS e").from).toMatchObject({
      name: 'json_each',
      alias: 'e',
      functionArgs: [{ type: 'binary', operator: '->' }]
    });
    expect(parseSelect('SELECT * FROM "todos_%"').from).toMatchObject({ name: 'todos_%' });
  });
});

describe('parseSelect rejects with a range', () => {
  test.each([
    ['SELECT a FROM t WHERE a == 1', /Syntax error: unexpected "="/, '='],
    ["SELECT a FROM t WHERE a LIKE 'x%'", /LIKE is not supported/, 'LIKE'],
    ["SELECT a FROM t WHERE a = 'x", /Unterminated string literal/, "'x"],
    ['SELECT a FROM t WHERE a = $1', /Query parameters such as "\$1" are not supported/, '$1'],
    ['SELECT CASE WHEN a THEN 1 END AS v FROM t', /CASE expressions are not supported/, 'CASE WHEN a THEN 1 END'],
    ['SELECT a ->> 1 AS v FROM t', /with an array index is not supported/, 'a ->> 1'],
    ['SELECT a IS TRUE AS v FROM t', /Operator IS TRUE is not supported/, 'a IS TRUE'],
    ['SELECT a FROM t; SELECT b FROM u', /Only one statement per query/, 'SELECT b FROM u'],
    ['UPDATE t SET a = 1', /Only SELECT statements are supported, found UPDATE/, 'UPDATE t SET'],
    ['SELECT CURRENT_TIMESTAMP AS v', /CURRENT_TIMESTAMP is not supported/, 'CURRENT_TIMESTAMP'],
    ['SELECT CAST(a AS int) AS v FROM t', /CAST to int is not supported/, 'CAST(a AS int)'],
    ["SELECT a FROM t WHERE a = 'x\u0000'", /NUL character/, '\u0000']
  ])('%s', (sql, message, at) => {
    let error: unknown;
    try {
      parseSelect(sql);
    } catch (caught) {
      error = caught;
    }
    expect(error).toBeInstanceOf(SqlSyntaxError);
    const syntaxError = error as SqlSyntaxError;
    expect(syntaxError.message).toMatch(message);
    expect(sql.slice(syntaxError.start)).toMatch(new RegExp(`^${at.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`));
  });
});
