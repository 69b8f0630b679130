import { stringify } from 'yaml';
import { parseJson, parseSyncRules, type JsonValue, type SqliteValue } from '../../src/index.js';

export type Evaluated = { type: string; value: SqliteValue } | { error: string };

/**
 * Evaluates one SQL expression through the public path (parseSyncRules + evaluateRow) against a row of
 * table `t`, with the reference semantics. Blobs come back as bytes (read through hex()).
 */
export function evaluate(expression: string, row: Record<string, unknown> = {}): Evaluated {
  const yaml = stringify({
    bucket_definitions: {
      all: {
        data: [`SELECT 'x' AS id, typeof(${expression}) AS t, hex(${expression}) AS h, ${expression} AS v FROM t`]
      }
    }
  });
  const parsed = parseSyncRules(yaml);
  if (!parsed.ok) throw new Error(parsed.errors.map((error) => error.message).join('; '));
  const result = parsed.rules.evaluateRow({ table: 't', row });
  if (result.errors.length > 0) return { error: result.errors.map((error) => error.message).join('; ') };
  const data = parseJson(result.buckets[0]!.data) as Record<string, JsonValue>;
  const type = data['t'] as string;
  if (type === 'blob') return { type, value: new Uint8Array(Buffer.from(data['h'] as string, 'hex')) };
  return { type, value: (data['v'] ?? null) as SqliteValue };
}

/** The value of an expression that must evaluate without error. */
export function valueOf(expression: string, row: Record<string, unknown> = {}): SqliteValue {
  const result = evaluate(expression, row);
  if ('error' in result) throw new Error(result.error);
  return result.value;
}

/** The message of the expression's evaluation error ('' if it evaluated). */
export function errorOf(expression: string, row: Record<string, unknown> = {}): string {
  const result = evaluate(expression, row);
  return 'error' in result ? result.error : '';
}

/** Load-time errors of rules whose one data query selects the expression. */
export function loadErrors(expression: string): string[] {
  const parsed = parseSyncRules(
    stringify({ bucket_definitions: { all: { data: [`SELECT id, ${expression} AS v FROM t`] } } })
  );
  return parsed.errors.map((error) => error.message);
}

export const bytes = (...values: number[]): Uint8Array => new Uint8Array(values);
