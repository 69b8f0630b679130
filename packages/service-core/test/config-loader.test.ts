import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { ConfigError, loadConfig, parseConfig } from '../src/index.js';
import { standInRegistry } from './stand-in-modules.js';

/** Stand-in modules owning their sections, so this test stays inside service-core. */
const registry = standInRegistry({
  storage: z.strictObject({
    type: z.literal('postgresql'),
    uri: z.string(),
    max_pool_size: z.number().int().default(8)
  }),
  source: z.strictObject({ type: z.literal('postgresql'), uri: z.string(), sslmode: z.string().optional() })
});

const base = `
replication:
  connections:
    - type: postgresql
      uri: postgresql://source/db
storage:
  type: postgresql
  uri: postgresql://storage/db
sync_config:
  content: "bucket_definitions: {}"
client_auth:
  audience: [app]
`;

const parse = (text: string, env: NodeJS.ProcessEnv = {}) =>
  parseConfig(text, { source: 'test.yaml', configDir: '/tmp', registry, env });

async function problemsOf(text: string, env: NodeJS.ProcessEnv = {}): Promise<string[]> {
  const error = await parse(text, env).then(
    () => undefined,
    (e: unknown) => e
  );
  expect(error).toBeInstanceOf(ConfigError);
  return (error as ConfigError).problems;
}

describe('config loading (PROTOCOL §10)', () => {
  it('reads a reference-style config with defaults filled in', async () => {
    const config = await parse(base);
    expect(config.port).toBe(8080);
    expect(config.storage).toEqual({ type: 'postgresql', uri: 'postgresql://storage/db', max_pool_size: 8 });
    expect(config.api.parameters.checkpoint_request_retention_minutes).toBe(60);
    expect(config.api.parameters.max_concurrent_connections).toBe(200);
    expect(config.syncConfigContent).toBe('bucket_definitions: {}');
    expect(config.warnings).toEqual([]);
  });

  it('substitutes !env PS_ variables, with ::number and ::boolean', async () => {
    const config = await parse(
      base.replace('uri: postgresql://storage/db', 'uri: !env PS_STORAGE_URI') +
        'port: !env PS_PORT::number\nmigrations:\n  disable_auto_migration: !env PS_NO_MIGRATE::boolean\n',
      { PS_STORAGE_URI: 'postgresql://secret@storage/db', PS_PORT: '9000', PS_NO_MIGRATE: 'true' }
    );
    expect(config.storage.uri).toBe('postgresql://secret@storage/db');
    expect(config.port).toBe(9000);
    expect(config.migrations.disable_auto_migration).toBe(true);
  });

  it('refuses !env for variables without the PS_ prefix, unset variables and bad numbers', async () => {
    expect(await problemsOf(base + 'port: !env HOME\n', { HOME: '/root' })).toEqual([
      expect.stringContaining('only variables starting with PS_')
    ]);
    expect(await problemsOf(base + 'port: !env PS_MISSING\n')).toEqual([
      expect.stringContaining('PS_MISSING is not set')
    ]);
    expect(await problemsOf(base + 'port: !env PS_PORT::number\n', { PS_PORT: 'eighty' })).toEqual([
      expect.stringContaining('PS_PORT is not a number')
    ]);
  });

  it('names the bad key in module-owned sections', async () => {
    expect(await problemsOf(base.replace('uri: postgresql://storage/db', 'uri: 42'))).toEqual([
      expect.stringMatching(/^storage\.uri: /)
    ]);
    expect(await problemsOf(base.replace('      uri: postgresql://source/db', '      uri: x\n      bogus: 1'))).toEqual(
      [expect.stringMatching(/^replication\.connections\.0: .*bogus/)]
    );
  });

  it('rejects unknown module types, listing the known ones', async () => {
    expect(
      await problemsOf(
        base.replace('type: postgresql\n  uri: postgresql://storage', 'type: cassandra\n  uri: postgresql://storage')
      )
    ).toEqual(['storage.type: unknown storage type "cassandra" (known: postgresql)']);
  });

  it('rejects more than one replication connection, and sync_config with sync_rules', async () => {
    const two = base.replace(
      '      uri: postgresql://source/db',
      '      uri: postgresql://source/db\n    - type: postgresql\n      uri: postgresql://other/db'
    );
    expect(await problemsOf(two)).toEqual([expect.stringContaining('only one replication connection is supported')]);
    expect(await problemsOf(base + 'sync_rules:\n  content: x\n')).toEqual([expect.stringContaining('use only one')]);
  });

  it('requires the retention to be a positive integer', async () => {
    for (const value of ['0', '-5', '1.5', 'soon']) {
      expect(
        await problemsOf(base + `api:\n  parameters:\n    checkpoint_request_retention_minutes: ${value}\n`)
      ).toEqual(['api.parameters.checkpoint_request_retention_minutes: must be a positive integer']);
    }
  });

  it('reports invalid YAML, duplicate keys and a non-mapping document', async () => {
    expect((await problemsOf('storage: [unclosed'))[0]).toMatch(/not valid YAML/);
    expect((await problemsOf(base + 'port: 1\nport: 2\n'))[0]).toMatch(
      /not valid YAML.*[Dd]uplicate|Map keys must be unique/
    );
    expect(await problemsOf('- a\n- b\n')).toEqual(['test.yaml must contain a YAML mapping']);
  });

  it('warns about unknown top-level keys instead of failing', async () => {
    const config = await parse(base + 'stroage: {}\n');
    expect(config.warnings).toEqual(['unknown top-level config key "stroage" is ignored']);
  });

  it('finds the config from POWERSYNC_CONFIG_B64, -c, and reads sync_config.path relative to the file', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'syncpoint-config-'));
    await writeFile(path.join(dir, 'rules.yaml'), 'bucket_definitions: {from: file}\n');
    await writeFile(
      path.join(dir, 'service.yaml'),
      base.replace('content: "bucket_definitions: {}"', 'path: rules.yaml')
    );
    const fromFile = await loadConfig({ configPath: 'service.yaml', cwd: dir, env: {}, registry });
    expect(fromFile?.syncConfigContent).toBe('bucket_definitions: {from: file}\n');
    const fromB64 = await loadConfig({
      env: { POWERSYNC_CONFIG_B64: Buffer.from(base).toString('base64') },
      cwd: dir,
      registry
    });
    expect(fromB64?.source).toBe('POWERSYNC_CONFIG_B64');
    expect(await loadConfig({ env: {}, cwd: dir, registry })).toBeNull(); // no ./powersync.yaml: embedded default
    await expect(loadConfig({ configPath: 'missing.yaml', cwd: dir, env: {}, registry })).rejects.toThrow(
      /cannot read config file .*ENOENT/
    );
    await writeFile(
      path.join(dir, 'broken.yaml'),
      base.replace('content: "bucket_definitions: {}"', 'path: nope.yaml')
    );
    await expect(loadConfig({ configPath: 'broken.yaml', cwd: dir, env: {}, registry })).rejects.toThrow(
      /sync_config.path: cannot read/
    );
  });
});
