/** docs/sync-rules.md lists every function the evaluator supports, so nothing supported is left undocumented. */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, test } from 'vitest';
import { SUPPORTED_FUNCTIONS } from '../src/index.js';

const doc = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../docs/sync-rules.md');

describe('docs/sync-rules.md', () => {
  test('names every supported function', async () => {
    const text = (await readFile(doc, 'utf8')).toLowerCase();
    expect(SUPPORTED_FUNCTIONS.length).toBeGreaterThan(10);
    const undocumented = SUPPORTED_FUNCTIONS.filter((name) => !text.includes(`\`${name.toLowerCase()}(`));
    expect(undocumented).toEqual([]);
  });
});
