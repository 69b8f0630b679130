/** Shared helpers of the Sync Streams compile / resolve tests: load a config that must be valid, replicate rows. */
import { expect } from 'vitest';
import {
  parseSyncRules,
  serializeParameterLookup,
  type ConnectionRequest,
  type ParameterLookup,
  type SqliteValue,
  type SyncRules
} from '../src/index.js';

export function loadStreams(yaml: string, deploymentId?: number): SyncRules {
  const result = parseSyncRules(yaml, deploymentId === undefined ? {} : { deploymentId });
  if (!result.ok)
    throw new Error(`expected a valid config:\n${result.errors.map((error) => error.message).join('\n')}`);
  return result.rules;
}

/** A one-stream edition-3 config. */
export function stream(query: string | string[], options: Record<string, unknown> = {}, name = 's'): string {
  const lines = ['config:', '  edition: 3', 'streams:', `  ${name}:`];
  for (const [key, value] of Object.entries(options)) lines.push(`    ${key}: ${JSON.stringify(value)}`);
  if (Array.isArray(query)) lines.push('    queries:', ...query.map((q) => `      - ${JSON.stringify(q)}`));
  else lines.push(`    query: ${JSON.stringify(query)}`);
  return `${lines.join('\n')}\n`;
}

export function request(overrides: Partial<ConnectionRequest> = {}): ConnectionRequest {
  return { userId: 'u1', tokenParameters: { sub: 'u1' }, includeDefaults: true, subscriptions: [], ...overrides };
}

export function subscribe(
  name: string,
  parameters: Record<string, unknown> | null = {},
  overridePriority: number | null = null
) {
  return { stream: name, parameters, overridePriority };
}

/** Bucket ids of a row, asserting no evaluation error. */
export function bucketsOf(rules: SyncRules, table: string, row: Record<string, unknown>): string[] {
  const result = rules.evaluateRow({ table, row: row });
  expect(result.errors).toEqual([]);
  return result.buckets.map((bucket) => bucket.bucket);
}

/** An in-memory parameter index filled through `evaluateParameterRow`, and a `fetchLookups` reading it. */
export function parameterIndex(rules: SyncRules, rows: Record<string, Array<Record<string, unknown>>>) {
  const index = new Map<string, Array<Record<string, SqliteValue>>>();
  for (const [table, list] of Object.entries(rows))
    for (const row of list) {
      const result = rules.evaluateParameterRow({ table, row: row });
      expect(result.errors).toEqual([]);
      for (const entry of result.lookups)
        index.set(entry.serializedLookup, [...(index.get(entry.serializedLookup) ?? []), ...entry.outputs]);
    }
  const calls: ParameterLookup[][] = [];
  const fetchLookups = (lookups: ParameterLookup[]) => {
    calls.push(lookups);
    return Promise.resolve(lookups.map((lookup) => index.get(serializeParameterLookup(lookup)) ?? []));
  };
  return { fetchLookups, calls };
}

export const noLookups = (lookups: ParameterLookup[]) => Promise.resolve(lookups.map(() => []));
