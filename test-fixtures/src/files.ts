import { readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** The package root: the YAML, SQL and JWK files live beside `src/`, so tests read them from source. */
export const FIXTURES_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

const cache = new Map<string, string>();

/**
 * The text of `<folder>/<name><extension>`. Names are plain (letters, digits, dashes): a fixture name is never a path.
 * An unknown name throws and lists the names there are.
 */
export function readFixture(folder: string, name: string, extension: string): string {
  if (!/^[a-z0-9][a-z0-9-]*$/.test(name)) throw new Error(`bad fixture name ${JSON.stringify(name)} in ${folder}/`);
  const file = path.join(FIXTURES_ROOT, folder, name + extension);
  let text = cache.get(file);
  if (text === undefined) {
    try {
      text = readFileSync(file, 'utf8');
    } catch {
      throw new Error(
        `no fixture ${folder}/${name}${extension}; there are: ${listFixtures(folder, extension).join(', ')}`
      );
    }
    cache.set(file, text);
  }
  return text;
}

/** Names of the fixtures in `folder` with `extension` (without it), sorted. */
export function listFixtures(folder: string, extension: string): string[] {
  return readdirSync(path.join(FIXTURES_ROOT, folder))
    .filter((file) => file.endsWith(extension) && !file.slice(0, -extension.length).includes('.'))
    .map((file) => file.slice(0, -extension.length))
    .sort();
}
