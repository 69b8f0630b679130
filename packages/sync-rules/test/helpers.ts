import { parseSyncRules, type SyncRules } from '../src/index.js';

/** Loads rules that must be valid; fails the test with all messages otherwise. */
export function loadRules(yaml: string): SyncRules {
  const result = parseSyncRules(yaml);
  if (!result.ok)
    throw new Error(`expected valid sync rules, got:\n${result.errors.map((error) => error.message).join('\n')}`);
  return result.rules;
}

/** Rules with one definition. */
export function definition(
  name: string,
  body: { parameters?: string | string[]; data: string[]; priority?: number }
): string {
  const lines = ['bucket_definitions:', `  ${name}:`];
  if (body.priority !== undefined) lines.push(`    priority: ${body.priority}`);
  if (body.parameters !== undefined) {
    const parameters = Array.isArray(body.parameters) ? body.parameters : [body.parameters];
    lines.push('    parameters:', ...parameters.map((query) => `      - ${JSON.stringify(query)}`));
  }
  lines.push('    data:', ...body.data.map((query) => `      - ${JSON.stringify(query)}`));
  return `${lines.join('\n')}\n`;
}
