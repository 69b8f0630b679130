import fc from 'fast-check';
import { parse } from 'pgsql-ast-parser';
import { describe, expect, test } from 'vitest';
import { sqlExpression } from './support/sql-expression-generator.js';

// The differential test must only use syntax the reference's parser (pgsql-ast-parser) accepts,
// so that it keeps testing the evaluator, not parser gaps, once this package parses with it too.
describe('the SQL expression generator of the differential test', () => {
  test('generates only expressions pgsql-ast-parser accepts', () => {
    fc.assert(
      fc.property(sqlExpression, (expression) => {
        const statements = parse(`SELECT ${expression} AS v FROM t`);
        expect(statements).toHaveLength(1);
        const statement = statements[0]!;
        expect(statement.type).toBe('select');
        // One result column: a literal-looking `1e5` would have become `1 AS e5` plus a stray alias.
        expect(statement.type === 'select' ? statement.columns?.length : 0).toBe(1);
      }),
      { numRuns: 1000 }
    );
  });
});
