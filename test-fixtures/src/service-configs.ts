import { parse, stringify } from 'yaml';
import { listFixtures, readFixture } from './files.js';
import { TEST_AUDIENCE, testJwks } from './jwt.js';

/** Service config templates in `service-configs/<name>.yaml` (PowerSync format, `${placeholder}` values). */
export type ServiceConfigName = 'postgres' | 'mongodb-storage';

export function serviceConfigTemplate(name: ServiceConfigName): string {
  return readFixture('service-configs', name, '.yaml');
}

export function serviceConfigNames(): string[] {
  return listFixtures('service-configs', '.yaml');
}

/**
 * Fill a template: each `${key}` becomes `values[key]` as a JSON value (JSON is YAML, so strings, numbers, arrays and
 * objects all land as they are). A value of `null` removes its key, and any mapping that leaves empty, so optional
 * settings stay optional. A placeholder without a value, or a value without a placeholder, throws: a typo must not
 * silently start a service with a default. `sections` are then set as top-level sections, replacing the template's.
 */
export function fillServiceConfig(
  name: ServiceConfigName,
  values: Record<string, unknown>,
  sections: Record<string, unknown> = {}
): string {
  const used = new Set<string>();
  const fill = (line: string) =>
    line.replace(/\$\{(\w+)\}/g, (_, key: string) => {
      if (!Object.hasOwn(values, key) || values[key] === undefined) {
        throw new Error(`service config ${name}: no value for \${${key}}`);
      }
      used.add(key);
      return JSON.stringify(values[key]);
    });
  // Comment lines may name placeholders; only the YAML lines are filled.
  const filled = serviceConfigTemplate(name)
    .split('\n')
    .map((line) => (line.trimStart().startsWith('#') ? line : fill(line)))
    .join('\n');
  const unused = Object.keys(values).filter((key) => !used.has(key));
  if (unused.length > 0) throw new Error(`service config ${name} has no placeholder for ${unused.join(', ')}`);
  const document = withoutNulls(parse(filled)) as Record<string, unknown>;
  return stringify({ ...document, ...sections });
}

function withoutNulls(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(withoutNulls);
  if (value === null || typeof value !== 'object') return value;
  const entries = Object.entries(value)
    .filter(([, v]) => v !== null)
    .map(([k, v]) => [k, withoutNulls(v)] as const)
    .filter(([, v]) => !(isPlainObject(v) && Object.keys(v).length === 0));
  return Object.fromEntries(entries);
}

const isPlainObject = (value: unknown): value is Record<string, unknown> =>
  value !== null && typeof value === 'object' && !Array.isArray(value);

export interface PostgresServiceConfigOptions {
  sourceUri: string;
  storageUri: string;
  /** Sync config text; null leaves `sync_config` out (the service then has no rules until one is deployed). */
  syncConfig: string | null;
  /** Keys the service accepts tokens from (default: the test HS256 key). */
  jwks?: { keys: object[] };
  /** Accepted audiences (default: [TEST_AUDIENCE]). */
  audience?: string[];
  /** Replication slot prefix; needed when several services share one Postgres server (slot names are cluster-wide). */
  slotPrefix?: string;
  heartbeatSeconds?: number;
  port?: number;
  /** Top-level sections to set as well (e.g. `{ api: { parameters: { max_concurrent_connections: 2 } } }`). */
  sections?: Record<string, unknown>;
}

/** The `postgres` template filled in: what most throw-away services run with. */
export function postgresServiceConfig(options: PostgresServiceConfigOptions): string {
  return fillServiceConfig(
    'postgres',
    {
      source_uri: options.sourceUri,
      storage_uri: options.storageUri,
      slot_name_prefix: options.slotPrefix ?? null,
      heartbeat_interval_seconds: options.heartbeatSeconds ?? null,
      port: options.port ?? 0,
      sync_config: options.syncConfig,
      audience: options.audience ?? [TEST_AUDIENCE],
      jwks: options.jwks ?? testJwks(['hs256'])
    },
    options.sections
  );
}
