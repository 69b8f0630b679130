import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { serviceConfigSchema } from '@syncpoint/service-core';
import { postgresSourceConfigSchema } from '@syncpoint/source-postgres';
import { mongoStorageConfigSchema } from '@syncpoint/storage-mongo';
import { postgresStorageConfigSchema } from '@syncpoint/storage-postgres';
import { describe, expect, it } from 'vitest';

const docsDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../docs');

/** A zod schema (service has no direct zod dependency; the shape of `def` is all this test needs). */
type ZodSchema = object;

/** Zod internals we walk: every wrapper has a `def` with its `type` and the wrapped schema(s). */
interface SchemaDef {
  type: string;
  innerType?: ZodSchema;
  element?: ZodSchema;
  options?: ZodSchema[];
  in?: ZodSchema;
  out?: ZodSchema;
  schema?: ZodSchema;
  shape?: Record<string, ZodSchema>;
}

const defOf = (schema: ZodSchema) => (schema as unknown as { def: SchemaDef }).def;

/**
 * Every key path a zod schema accepts: `api.parameters.max_concurrent_connections`; array elements add `[]`
 * (`replication.connections[].uri`). Wrappers (optional, default, prefault, nullable, pipe, refinements) are unwrapped;
 * unions contribute the keys of each object member.
 */
function configKeyPaths(schema: ZodSchema, prefix = ''): string[] {
  const def = defOf(schema);
  switch (def.type) {
    case 'object': {
      const shape = def.shape ?? (schema as unknown as { shape: Record<string, ZodSchema> }).shape;
      return Object.entries(shape).flatMap(([key, value]) => {
        const keyPath = prefix ? `${prefix}.${key}` : key;
        return [keyPath, ...configKeyPaths(value, keyPath)];
      });
    }
    case 'optional':
    case 'default':
    case 'prefault':
    case 'nullable':
    case 'readonly':
    case 'catch':
    case 'nonoptional':
      return configKeyPaths(def.innerType!, prefix);
    case 'pipe':
      return [...configKeyPaths(def.in!, prefix), ...configKeyPaths(def.out!, prefix)];
    case 'array':
      return configKeyPaths(def.element!, `${prefix}[]`);
    case 'union':
      return def.options!.flatMap((option) => configKeyPaths(option, prefix));
    default:
      return [];
  }
}

const unique = (paths: string[]) => [...new Set(paths)].sort();

describe('docs/configuration.md', () => {
  it('walks zod schemas into key paths', () => {
    expect(configKeyPaths(serviceConfigSchema)).toEqual(
      expect.arrayContaining([
        'api.parameters.max_concurrent_connections',
        'replication.connections[].type',
        'client_auth.jwks.keys[].kty',
        'healthcheck.probes.use_http'
      ])
    );
    expect(configKeyPaths(postgresSourceConfigSchema, 'replication.connections[]')).toContain(
      'replication.connections[].slot_name_prefix'
    );
  });

  it('mentions every key of the service config schema and of each module section', async () => {
    const doc = await readFile(path.join(docsDir, 'configuration.md'), 'utf8');
    const paths = unique([
      ...configKeyPaths(serviceConfigSchema),
      ...configKeyPaths(postgresStorageConfigSchema, 'storage'),
      ...configKeyPaths(mongoStorageConfigSchema, 'storage'),
      ...configKeyPaths(postgresSourceConfigSchema, 'replication.connections[]')
    ]);
    expect(paths.length).toBeGreaterThan(60);
    // Each key path appears in backticks, e.g. `storage.max_pool_size`.
    const undocumented = paths.filter((keyPath) => !doc.includes(`\`${keyPath}\``));
    expect(undocumented, `undocumented config keys in docs/configuration.md`).toEqual([]);
  });

  it('has the other guides, and they link only to files that exist', async () => {
    for (const name of [
      'getting-started.md',
      'configuration.md',
      'protocol-compatibility.md',
      'operations.md',
      'migrating-from-powersync.md',
      'reliability.md',
      'sync-rules.md'
    ]) {
      const text = await readFile(path.join(docsDir, name), 'utf8');
      expect(text).toMatch(/^# /);
      for (const [, target] of text.matchAll(/\]\(((?:\.\.?\/|[\w-]+\.md)[^)#\s]*)/g)) {
        await expect(
          readFile(path.resolve(docsDir, target!), 'utf8').then(() => true),
          `${name} links to ${target}`
        ).resolves.toBe(true);
      }
    }
  });
});
