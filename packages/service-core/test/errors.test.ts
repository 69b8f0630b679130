import { describe, expect, it } from 'vitest';
import { databaseUnavailableError, isDatabaseUnavailable } from '../src/errors.js';

const withCode = (code: string, message = 'failed') => Object.assign(new Error(message), { code });

describe('isDatabaseUnavailable', () => {
  it.each([
    ['a refused connection', withCode('ECONNREFUSED')],
    ['a reset connection', withCode('ECONNRESET')],
    ['SQLSTATE 57P01 (administrator shutdown)', withCode('57P01')],
    ['SQLSTATE 57P03 (cannot connect now, starting up)', withCode('57P03')],
    ['SQLSTATE 08006 (connection failure)', withCode('08006')],
    ['SQLSTATE 53300 (too many connections)', withCode('53300')],
    ['node-postgres losing its connection', new Error('Connection terminated unexpectedly')],
    ['a pool connect timeout', new Error('timeout exceeded when trying to connect')],
    [
      'every address refused (happy eyeballs)',
      new AggregateError([withCode('ECONNREFUSED'), withCode('ECONNREFUSED')], 'connect failed')
    ]
  ])('is true for %s', (_, error) => {
    expect(isDatabaseUnavailable(error)).toBe(true);
  });

  it.each([
    ['a syntax error', withCode('42601')],
    ['a unique violation', withCode('23505')],
    ['a plain bug', new TypeError("Cannot read properties of undefined (reading 'id')")],
    ['a non-error', 'ECONNREFUSED']
  ])('is false for %s', (_, error) => {
    expect(isDatabaseUnavailable(error)).toBe(false);
  });

  it('maps to a 503 envelope that names no internals', () => {
    const error = databaseUnavailableError(withCode('ECONNREFUSED', 'connect ECONNREFUSED 10.0.0.5:5432'));
    expect(error.status).toBe(503);
    expect(JSON.stringify(error.toJSON())).not.toContain('10.0.0.5');
    expect(error.toJSON().error.code).toBe('PSYNC_S2008');
  });
});
