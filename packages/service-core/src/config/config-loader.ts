import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { parseDocument, type ScalarTag } from 'yaml';
import type { z } from 'zod';
import type { ModuleRegistry } from '../modules.js';
import { KNOWN_TOP_LEVEL_KEYS, serviceConfigSchema, type CoreServiceConfig } from './config-schema.js';

export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`Invalid configuration:\n${problems.map((problem) => `  - ${problem}`).join('\n')}`);
    this.name = 'ConfigError';
  }
}

export interface ResolvedConfig extends CoreServiceConfig {
  /** The `storage:` section as validated by the storage module. */
  storage: { type: string } & Record<string, unknown>;
  replication: { connections: Array<{ type: string } & Record<string, unknown>> };
  /** Sync config YAML, from `sync_config`/`sync_rules` or the environment; null when none is given. */
  syncConfigContent: string | null;
  /** Where the config came from, for messages. */
  source: string;
  /** Directory relative paths in the config resolve against. */
  configDir: string;
  /** Unknown top-level keys (reported as warnings). */
  warnings: string[];
}

export interface ConfigLocation {
  /** `-c/--config-path`. */
  configPath?: string;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
}

/**
 * Find the config text: `POWERSYNC_CONFIG_B64`, then `-c` / `POWERSYNC_CONFIG_PATH`, then `./powersync.yaml`.
 * Null when none exists (the embedded default).
 */
export async function readConfigText(
  location: ConfigLocation
): Promise<{ text: string; source: string; configDir: string } | null> {
  const env = location.env ?? process.env;
  const cwd = location.cwd ?? process.cwd();
  if (env.POWERSYNC_CONFIG_B64) {
    return {
      text: Buffer.from(env.POWERSYNC_CONFIG_B64, 'base64').toString('utf8'),
      source: 'POWERSYNC_CONFIG_B64',
      configDir: cwd
    };
  }
  const explicit = location.configPath ?? env.POWERSYNC_CONFIG_PATH;
  const file = explicit ? path.resolve(cwd, explicit) : path.resolve(cwd, 'powersync.yaml');
  if (!explicit && !existsSync(file)) return null;
  try {
    return { text: await readFile(file, 'utf8'), source: file, configDir: path.dirname(file) };
  } catch (error) {
    throw new ConfigError([
      `cannot read config file ${file}: ${(error as NodeJS.ErrnoException).code ?? String(error)}`
    ]);
  }
}

/** `!env PS_NAME`, `!env PS_NAME::number`, `!env PS_NAME::boolean` (only `PS_` variables, PROTOCOL §10). */
function envTag(env: NodeJS.ProcessEnv, problems: string[]): ScalarTag {
  return {
    tag: '!env',
    resolve(reference: string) {
      const [name = '', type] = reference.trim().split('::');
      if (!name.startsWith('PS_')) {
        problems.push(`!env ${reference}: only variables starting with PS_ may be used`);
        return null;
      }
      const value = env[name];
      if (value === undefined) {
        problems.push(`!env ${reference}: environment variable ${name} is not set`);
        return null;
      }
      if (type === undefined || type === 'string') return value;
      if (type === 'number') {
        const number = Number(value);
        if (value.trim() === '' || !Number.isFinite(number))
          problems.push(`!env ${reference}: ${name} is not a number`);
        return number;
      }
      if (type === 'boolean') {
        if (!['true', 'false', '1', '0'].includes(value)) problems.push(`!env ${reference}: ${name} is not a boolean`);
        return value === 'true' || value === '1';
      }
      problems.push(`!env ${reference}: unknown type ${type} (use ::number or ::boolean)`);
      return null;
    }
  };
}

function formatIssues(prefix: string, error: z.ZodError): string[] {
  return error.issues.map((issue) => {
    const key = [prefix, ...issue.path.map(String)].filter(Boolean).join('.');
    return key ? `${key}: ${issue.message}` : issue.message;
  });
}

/** Parse and validate config text. Every problem is collected, each naming its key. */
export async function parseConfig(
  text: string,
  options: { source: string; configDir: string; registry: ModuleRegistry; env?: NodeJS.ProcessEnv }
): Promise<ResolvedConfig> {
  const env = options.env ?? process.env;
  const problems: string[] = [];
  let raw: unknown;
  try {
    // logLevel 'silent': the YAML library would print its warnings to stderr; they are problems of the config instead.
    const document = parseDocument(text, { customTags: [envTag(env, problems)], uniqueKeys: true, logLevel: 'silent' });
    if (document.errors.length > 0) {
      throw new ConfigError(document.errors.map((error) => `${options.source} is not valid YAML: ${error.message}`));
    }
    // An unknown tag (a typo like `!evn PS_URI`) or `!env` on a map or list would otherwise leave the untagged value
    // in place, silently.
    for (const warning of document.warnings) {
      problems.push(
        warning.code === 'TAG_RESOLVE_FAILED'
          ? `${options.source}: ${warning.message} (the only custom tag is !env on a scalar, e.g. !env PS_NAME)`
          : `${options.source}: ${warning.message}`
      );
    }
    raw = document.toJS();
  } catch (error) {
    if (error instanceof ConfigError) throw error;
    throw new ConfigError([`${options.source} is not valid YAML: ${(error as Error).message}`]);
  }
  if (problems.length > 0) throw new ConfigError(problems);
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    throw new ConfigError([`${options.source} must contain a YAML mapping`]);
  }

  const parsed = serviceConfigSchema.safeParse(raw);
  if (!parsed.success) throw new ConfigError(formatIssues('', parsed.error));
  const core = parsed.data;

  const storageModule = options.registry.storage.get(core.storage.type);
  let storage = core.storage;
  if (!storageModule) {
    problems.push(
      `storage.type: unknown storage type ${JSON.stringify(core.storage.type)} (known: ${[...options.registry.storage.keys()].join(', ')})`
    );
  } else {
    const result = storageModule.configSchema.safeParse(core.storage);
    if (result.success) storage = result.data;
    else problems.push(...formatIssues('storage', result.error));
  }

  const connections = core.replication.connections.map((connection, index) => {
    const sourceModule = options.registry.sources.get(connection.type);
    if (!sourceModule) {
      problems.push(
        `replication.connections.${index}.type: unknown source type ${JSON.stringify(connection.type)} (known: ${[...options.registry.sources.keys()].join(', ')})`
      );
      return connection;
    }
    const result = sourceModule.configSchema.safeParse(connection);
    if (result.success) return result.data;
    problems.push(...formatIssues(`replication.connections.${index}`, result.error));
    return connection;
  });

  if (core.sync_config && core.sync_rules)
    problems.push('sync_config and sync_rules: use only one (sync_rules is the deprecated name)');
  let syncConfigContent: string | null = null;
  const section = core.sync_config ?? core.sync_rules;
  const sectionName = core.sync_config ? 'sync_config' : 'sync_rules';
  if (section?.content) syncConfigContent = section.content;
  else if (section?.path) {
    const file = path.resolve(options.configDir, section.path);
    try {
      syncConfigContent = await readFile(file, 'utf8');
    } catch (error) {
      problems.push(
        `${sectionName}.path: cannot read ${file}: ${(error as NodeJS.ErrnoException).code ?? String(error)}`
      );
    }
  }
  const fromEnv = env.POWERSYNC_SYNC_CONFIG_B64 ?? env.POWERSYNC_SYNC_RULES_B64;
  if (fromEnv) syncConfigContent = Buffer.from(fromEnv, 'base64').toString('utf8');

  if (problems.length > 0) throw new ConfigError(problems);

  const warnings = Object.keys(raw)
    .filter((key) => !KNOWN_TOP_LEVEL_KEYS.has(key))
    .map((key) => `unknown top-level config key "${key}" is ignored`);

  return {
    ...core,
    storage,
    replication: { connections },
    syncConfigContent,
    source: options.source,
    configDir: options.configDir,
    warnings
  };
}

/** Locate, read and validate the config. Null when there is none (the caller boots the embedded default). */
export async function loadConfig(
  location: ConfigLocation & { registry: ModuleRegistry }
): Promise<ResolvedConfig | null> {
  const found = await readConfigText(location);
  if (!found) return null;
  return parseConfig(found.text, { ...found, registry: location.registry, env: location.env });
}
