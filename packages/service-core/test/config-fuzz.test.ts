import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import fc from 'fast-check';
import { beforeAll, describe, expect, it, vi } from 'vitest';
import { stringify } from 'yaml';
import { z } from 'zod';
import { ConfigError, loadConfig, parseConfig } from '../src/index.js';
import { standInRegistry } from './stand-in-modules.js';

/**
 * Hostile config input (issue 7 item 2): whatever an operator (or a broken deployment) feeds the config loader —
 * arbitrary text, arbitrary YAML/JSON documents, mutations of a valid config, `!env` tags with odd names, types and
 * values, YAML bombs — the loader returns a config or rejects with a `ConfigError` listing its problems as readable
 * messages. Never another exception type, never a hang, never a polluted prototype.
 */

// Stand-in modules shaped like the real Postgres ones (coercion, refinements, defaults), so this test stays inside
// service-core.
const registry = standInRegistry({
  storage: z
    .object({
      type: z.literal('postgresql'),
      uri: z.string().min(1).optional(),
      hostname: z.string().min(1).optional(),
      port: z.coerce.number().int().min(1).max(65535).optional(),
      sslmode: z.enum(['disable', 'verify-ca', 'verify-full']).optional(),
      max_pool_size: z.coerce.number().int().min(1).max(1000).default(8)
    })
    .refine((config) => config.uri !== undefined || config.hostname !== undefined, {
      message: 'storage needs either uri or hostname',
      path: ['uri']
    }),
  source: z.object({
    type: z.literal('postgresql'),
    uri: z.string().min(1),
    slot_name_prefix: z
      .string()
      .regex(/^[a-z0-9_]+$/)
      .max(40)
      .default('powersync_'),
    heartbeat_interval_seconds: z.coerce.number().int().min(5).max(60).default(60),
    reject_ip_ranges: z.array(z.string()).optional()
  })
});

const VALID_CONFIG = {
  replication: {
    connections: [
      {
        type: 'postgresql',
        uri: 'postgresql://repl:secret@db:5432/app',
        slot_name_prefix: 'powersync_',
        heartbeat_interval_seconds: 30
      }
    ]
  },
  storage: { type: 'postgresql', uri: 'postgresql://ps@storage:5432/powersync', sslmode: 'disable', max_pool_size: 8 },
  port: 8080,
  sync_config: { content: 'bucket_definitions:\n  global:\n    data: [SELECT * FROM todos]\n', exit_on_error: true },
  client_auth: {
    jwks_uri: ['https://auth.example.com/.well-known/jwks.json'],
    audience: ['powersync'],
    jwks: { keys: [{ kty: 'oct', alg: 'HS256', kid: 'dev-key', k: 'c2VjcmV0' }] },
    max_token_lifetime_seconds: 3600
  },
  api: { tokens: ['admin-token'], parameters: { max_concurrent_connections: 200, max_buckets_per_connection: 1000 } },
  migrations: { disable_auto_migration: false },
  healthcheck: { probes: { use_http: true, use_filesystem: false, use_legacy: false } },
  system: { logging: { level: 'info', format: 'json' } },
  telemetry: { prometheus_port: 9090, disable_telemetry_sharing: true },
  metadata: { region: 'eu' },
  parameters: { answer: 42 }
};

let configDir: string;
beforeAll(async () => {
  configDir = await mkdtemp(path.join(tmpdir(), 'syncpoint-config-fuzz-'));
  await writeFile(path.join(configDir, 'rules.yaml'), 'bucket_definitions: {}\n');
});

/** Each document must load within this time (the loader is synchronous but for file reads; a hang is a failure). */
const MAX_MS = 5_000;

/** Load `text`; a success or a ConfigError with readable problems is fine, anything else fails the property. */
async function expectConfigOrConfigError(text: string, env: NodeJS.ProcessEnv = {}) {
  const started = Date.now();
  let outcome: unknown;
  try {
    outcome = await parseConfig(text, { source: 'fuzz.yaml', configDir, registry, env });
  } catch (error) {
    outcome = error;
  }
  expect(Date.now() - started, 'loading took too long').toBeLessThan(MAX_MS);
  expect(Object.prototype, 'the prototype was polluted').not.toHaveProperty('polluted');
  if (outcome instanceof Error) {
    if (!(outcome instanceof ConfigError))
      throw new Error(`not a ConfigError for ${JSON.stringify(text.slice(0, 500))}`, { cause: outcome });
    expect(outcome.problems.length).toBeGreaterThan(0);
    for (const problem of outcome.problems) {
      expect(typeof problem).toBe('string');
      expect(problem.trim().length).toBeGreaterThan(0);
    }
    expect(outcome.message).toContain('Invalid configuration');
    return { ok: false as const, error: outcome };
  }
  const config = outcome as Awaited<ReturnType<typeof parseConfig>>;
  // A config that loads has what the service relies on.
  expect(typeof config.storage.type).toBe('string');
  expect(Number.isInteger(config.port)).toBe(true);
  expect(config.replication.connections.length).toBeLessThanOrEqual(1);
  return { ok: true as const, config };
}

// --- generators -------------------------------------------------------------------------------------------------

const KEYS = [
  ...Object.keys(VALID_CONFIG),
  'connections',
  'type',
  'uri',
  'hostname',
  'port',
  'content',
  'path',
  'exit_on_error',
  'jwks_uri',
  'audience',
  'jwks',
  'keys',
  'kty',
  'alg',
  'kid',
  'tokens',
  'parameters',
  'max_concurrent_connections',
  'probes',
  'use_http',
  'logging',
  'level',
  'format',
  '__proto__',
  'constructor',
  'prototype',
  'toString',
  '<<',
  '',
  ' ',
  'sync_rules'
];

const scalar = fc.oneof(
  fc.string({ maxLength: 12 }),
  fc.string({ unit: 'binary', maxLength: 12 }),
  fc.integer(),
  fc.double(),
  fc.bigInt({ min: -(2n ** 80n), max: 2n ** 80n }).map((n) => Number(n)),
  fc.boolean(),
  fc.constant(null),
  fc.constantFrom(
    'postgresql',
    'mongodb',
    'disable',
    'info',
    'json',
    '8080',
    '-1',
    '65536',
    '0x1F',
    '1e3',
    'NaN',
    'Infinity',
    'true',
    'yes',
    '~',
    '',
    'https://x',
    'not a url'
  )
);

const { value: anyValue } = fc.letrec((tie) => ({
  value: fc.oneof({ depthSize: 'small', withCrossShrink: true }, scalar, tie('list'), tie('map')),
  list: fc.array(tie('value'), { maxLength: 4 }),
  map: fc.dictionary(fc.oneof(fc.constantFrom(...KEYS), fc.string({ maxLength: 6 })), tie('value'), { maxKeys: 5 })
}));

/** Every path into VALID_CONFIG (objects and arrays), for targeted mutations. */
function pathsOf(value: unknown, prefix: Array<string | number> = []): Array<Array<string | number>> {
  if (typeof value !== 'object' || value === null) return [prefix];
  const entries = Array.isArray(value) ? value.map((item, index) => [index, item] as const) : Object.entries(value);
  return [prefix, ...entries.flatMap(([key, item]) => pathsOf(item, [...prefix, key]))];
}
const PATHS = pathsOf(VALID_CONFIG).filter((p) => p.length > 0);

type Mutation = { path: Array<string | number>; kind: 'replace' | 'delete' | 'add'; value: unknown; key: string };
const mutation: fc.Arbitrary<Mutation> = fc.record({
  path: fc.constantFrom(...PATHS),
  kind: fc.constantFrom('replace', 'replace', 'delete', 'add'),
  value: anyValue,
  key: fc.oneof(fc.constantFrom(...KEYS), fc.string({ maxLength: 6 }))
});

function mutate(config: unknown, mutations: Mutation[]): unknown {
  const copy = structuredClone(config) as Record<string | number, unknown>;
  for (const { path: where, kind, value, key } of mutations) {
    let node: unknown = copy;
    for (const step of where.slice(0, -1)) {
      if (typeof node !== 'object' || node === null) break;
      node = (node as Record<string | number, unknown>)[step];
    }
    if (typeof node !== 'object' || node === null) continue;
    const parent = node as Record<string | number, unknown>;
    const last = where[where.length - 1]!;
    // defineProperty: a `__proto__` key must become an own key of the document, as in YAML, not a prototype change.
    if (kind === 'replace')
      Object.defineProperty(parent, last, { value, enumerable: true, configurable: true, writable: true });
    else if (kind === 'delete') delete parent[last];
    else if (typeof parent[last] === 'object' && parent[last] !== null && !Array.isArray(parent[last])) {
      Object.defineProperty(parent[last], key, { value, enumerable: true, configurable: true, writable: true });
    }
  }
  return copy;
}

/** YAML text: block style, flow style, or JSON (YAML is a superset). */
const serialised = (value: unknown) =>
  fc
    .constantFrom('block', 'flow', 'json')
    .map((style) =>
      style === 'json'
        ? (JSON.stringify(value) ?? 'null')
        : style === 'flow'
          ? stringify(value, { collectionStyle: 'flow' })
          : stringify(value)
    );

const RUNS = Number(process.env.FUZZ_RUNS ?? 300);

describe('config loader on hostile input', () => {
  it('arbitrary text', async () => {
    const yamlish = fc
      .array(
        fc.oneof(
          fc.constantFrom(
            ':',
            '- ',
            '  ',
            '\n',
            '\t',
            '{',
            '}',
            '[',
            ']',
            ',',
            '"',
            "'",
            '&a ',
            '*a',
            '!env ',
            '!!str ',
            '!!binary ',
            '!!js/function ',
            '? ',
            '|',
            '>',
            '#',
            '%YAML 1.2\n',
            '---\n',
            '...\n',
            '<<: ',
            'storage:',
            'type: postgresql',
            'port: ',
            'sync_config:',
            '\ufeff',
            '\u0000'
          ),
          fc.constantFrom(...KEYS),
          fc.string({ maxLength: 4 })
        ),
        { maxLength: 30 }
      )
      .map((parts) => parts.join(''));
    await fc.assert(
      fc.asyncProperty(fc.oneof(fc.string({ unit: 'binary', maxLength: 200 }), yamlish), async (text) => {
        await expectConfigOrConfigError(text);
      }),
      { numRuns: RUNS }
    );
  });

  it('arbitrary YAML/JSON documents', async () => {
    await fc.assert(
      fc.asyncProperty(anyValue.chain(serialised), async (text) => {
        await expectConfigOrConfigError(text);
      }),
      { numRuns: RUNS }
    );
  });

  it('mutations of a valid config', async () => {
    expect((await expectConfigOrConfigError(stringify(VALID_CONFIG))).ok).toBe(true);
    let loaded = 0;
    await fc.assert(
      fc.asyncProperty(
        fc
          .array(mutation, { minLength: 1, maxLength: 3 })
          .chain((mutations) => serialised(mutate(VALID_CONFIG, mutations))),
        async (text) => {
          if ((await expectConfigOrConfigError(text)).ok) loaded++;
        }
      ),
      { numRuns: RUNS }
    );
    // Some mutations are harmless (an unknown key, a value of the right type): the property must see both outcomes.
    expect(loaded).toBeGreaterThan(0);
  });

  it('text mutations of a valid config', async () => {
    const valid = stringify(VALID_CONFIG);
    await fc.assert(
      fc.asyncProperty(
        fc.array(
          fc.tuple(
            fc.nat(valid.length),
            fc.nat(10),
            fc.oneof(fc.string({ maxLength: 4 }), fc.constantFrom('\n', ': ', '- ', '!env PS_X', '&x', '*x', '"', '  '))
          ),
          {
            minLength: 1,
            maxLength: 3
          }
        ),
        async (edits) => {
          let text = valid;
          for (const [at, remove, insert] of edits) text = text.slice(0, at) + insert + text.slice(at + remove);
          await expectConfigOrConfigError(text);
        }
      ),
      { numRuns: RUNS }
    );
  });

  it('!env tags with odd names, types and values', async () => {
    const name = fc.oneof(
      fc.constantFrom(
        'PS_PORT',
        'PS_URI',
        'PS_EMPTY',
        'PS_MISSING',
        'PS_',
        'HOME',
        'PATH',
        'ps_port',
        '',
        ' ',
        'PS_PORT ',
        ' PS_PORT',
        '__proto__',
        'PS_PORT::number::boolean'
      ),
      fc.string({ maxLength: 8 })
    );
    const type = fc.constantFrom(
      '',
      '::number',
      '::boolean',
      '::string',
      '::',
      '::NUMBER',
      '::object',
      ':number',
      '::number '
    );
    const envValue = fc.oneof(
      fc.string({ maxLength: 10 }),
      fc.constantFrom(
        '',
        ' ',
        '8080',
        '-1',
        '1e3',
        '0x10',
        'NaN',
        'Infinity',
        'true',
        'false',
        '1',
        '0',
        'yes',
        '99999999999999999999',
        '\u0000',
        'postgresql://x/y'
      )
    );
    // `!env` where a scalar is expected, and where it is not (a map or a list carrying the tag).
    const placement = fc.constantFrom(
      'port',
      'storage.uri',
      'api.parameters.max_concurrent_connections',
      'migrations.disable_auto_migration',
      'metadata.tag',
      'top-level key'
    );
    await fc.assert(
      fc.asyncProperty(
        name,
        type,
        placement,
        fc.dictionary(fc.constantFrom('PS_PORT', 'PS_URI', 'PS_EMPTY', 'PS_X', 'HOME'), envValue),
        fc.constantFrom('scalar', 'quoted', 'map', 'list', 'empty'),
        async (variable, suffix, where, env, form) => {
          const reference = `${variable}${suffix}`;
          const tagged =
            form === 'scalar'
              ? `!env ${reference}`
              : form === 'quoted'
                ? `!env ${JSON.stringify(reference)}`
                : form === 'map'
                  ? `!env {a: ${JSON.stringify(reference)}}`
                  : form === 'list'
                    ? `!env [${JSON.stringify(reference)}]`
                    : '!env';
          const lines = [
            'replication:',
            '  connections:',
            '    - type: postgresql',
            '      uri: postgresql://source/db',
            'storage:',
            '  type: postgresql',
            `  uri: ${where === 'storage.uri' ? tagged : 'postgresql://storage/db'}`,
            `port: ${where === 'port' ? tagged : 8080}`,
            'api:',
            '  parameters:',
            `    max_concurrent_connections: ${where === 'api.parameters.max_concurrent_connections' ? tagged : 10}`,
            'migrations:',
            `  disable_auto_migration: ${where === 'migrations.disable_auto_migration' ? tagged : false}`,
            'metadata:',
            `  tag: ${where === 'metadata.tag' ? tagged : 'x'}`,
            ...(where === 'top-level key' ? [`? ${tagged}`, '  : 1'] : [])
          ];
          await expectConfigOrConfigError(lines.join('\n'), env);
        }
      ),
      { numRuns: RUNS }
    );
  });

  it('!env only substitutes PS_ variables, and says why when it does not', async () => {
    const base = 'storage:\n  type: postgresql\n  uri: postgresql://storage/db\n';
    const cases: Array<[string, NodeJS.ProcessEnv, RegExp]> = [
      ['port: !env HOME', { HOME: '/root' }, /only variables starting with PS_/],
      ['port: !env PS_PORT', {}, /PS_PORT is not set/],
      ['port: !env PS_PORT::number', { PS_PORT: 'eighty' }, /not a number/],
      ['port: !env PS_PORT::number', { PS_PORT: '' }, /not a number/],
      ['migrations: {disable_auto_migration: !env PS_B::boolean}', { PS_B: 'yes' }, /not a boolean/],
      ['port: !env PS_PORT::float', { PS_PORT: '1' }, /unknown type/],
      ['port: !env PS_PORT::number', { PS_PORT: '70000' }, /port/]
    ];
    for (const [line, env, message] of cases) {
      const outcome = await expectConfigOrConfigError(`${base}${line}\n`, env);
      expect(outcome.ok, line).toBe(false);
      if (!outcome.ok) expect(outcome.error.problems.join('\n'), line).toMatch(message);
    }
    const ok = await expectConfigOrConfigError(`${base}port: !env PS_PORT::number\n`, { PS_PORT: '9000' });
    expect(ok.ok && ok.config.port).toBe(9000);
  });

  it('YAML bombs, deep nesting, odd tags and prototype keys', async () => {
    const laughs = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]'];
    for (let i = 1; i < 12; i++)
      laughs.push(
        `${String.fromCharCode(97 + i)}: &${String.fromCharCode(97 + i)} [${Array(9)
          .fill(`*${String.fromCharCode(96 + i)}`)
          .join(',')}]`
      );
    const documents = [
      laughs.join('\n'),
      `storage: &s {type: postgresql, uri: x, self: *s}`,
      '['.repeat(50_000) + ']'.repeat(50_000),
      '{a: '.repeat(20_000) + '1' + '}'.repeat(20_000),
      '- '.repeat(5_000) + 'x',
      Array.from({ length: 2_000 }, (_, i) => `${' '.repeat(i)}k${i}:`).join('\n'),
      'storage: {type: postgresql, uri: x}\n---\nport: 1\n',
      'storage: !!js/function "function(){}"',
      'storage: !!binary aGVsbG8=',
      'storage: !!set {a, b}',
      'storage: !!omap [{type: postgresql}]',
      'storage: !!timestamp 2001-12-14',
      'storage: !custom {type: postgresql, uri: x}',
      'storage: {type: postgresql, uri: x}\nport: !!float 8080.5',
      'storage: {type: postgresql, uri: x}\nport: 0o17',
      'storage: {type: postgresql, uri: x}\nport: 1_000',
      '__proto__: {polluted: true}\nstorage: {type: postgresql, uri: x}',
      'storage: {type: postgresql, uri: x, __proto__: {polluted: true}}',
      'storage: {type: postgresql, uri: x}\nmetadata: {__proto__: {polluted: true}}\nparameters: {constructor: {prototype: {polluted: true}}}',
      'base: &b {type: postgresql, uri: x}\nstorage: {<<: *b}',
      'storage: {type: postgresql, uri: x}\nstorage: {type: mongodb}',
      'storage:\n  type: postgresql\n  uri: x\nsync_config: {path: "rules.yaml"}\n',
      'storage:\n  type: postgresql\n  uri: x\nsync_config: {path: "."}\n',
      'storage:\n  type: postgresql\n  uri: x\nsync_config: {path: "no/such/file"}\n',
      'storage:\n  type: postgresql\n  uri: x\nsync_config: {path: "a\\0b"}\n',
      'storage:\n  type: postgresql\n  uri: x\nsync_config: {path: rules.yaml, content: x}\nsync_rules: {content: y}\n',
      'storage: {type: postgresql, uri: x}\nclient_auth: {jwks_uri: "javascript:alert(1)", jwks: {keys: [{kty: oct}, {kty: nope}]}}',
      '\ufeffstorage: {type: postgresql, uri: x}',
      'x'.repeat(1_000_000)
    ];
    for (const text of documents) await expectConfigOrConfigError(text);
  });

  it('loadConfig: odd locations and environment', async () => {
    const cases: Array<Parameters<typeof loadConfig>[0]> = [
      { registry, cwd: configDir, configPath: 'no-such.yaml', env: {} },
      { registry, cwd: configDir, configPath: '.', env: {} },
      { registry, cwd: configDir, configPath: 'a\u0000b', env: {} },
      { registry, cwd: configDir, env: { POWERSYNC_CONFIG_B64: '!!!not base64!!!' } },
      {
        registry,
        cwd: configDir,
        env: {
          POWERSYNC_CONFIG_B64: Buffer.from('storage: {type: postgresql, uri: x}').toString('base64'),
          POWERSYNC_SYNC_CONFIG_B64: '%%%'
        }
      },
      { registry, cwd: configDir, env: { POWERSYNC_CONFIG_PATH: configDir } }
    ];
    for (const location of cases) {
      const outcome = await loadConfig(location).then(
        (config) => config,
        (error: unknown) => error
      );
      if (outcome instanceof Error) expect(outcome, JSON.stringify(location.env)).toBeInstanceOf(ConfigError);
    }
  });
});

describe('tags the loader does not know', () => {
  it('are problems (not silently ignored, not printed to stderr)', async () => {
    const warnings = vi.spyOn(process, 'emitWarning');
    try {
      const base = 'storage: {type: postgresql, uri: postgresql://storage/db}\n';
      const cases: Array<[string, NodeJS.ProcessEnv]> = [
        ['sync_config: {content: !evn PS_RULES}', { PS_RULES: 'bucket_definitions: {}' }],
        ['port: !env {a: PS_PORT}', { PS_PORT: '1' }],
        ['api: {tokens: !env [PS_TOKEN]}', { PS_TOKEN: 'x' }],
        ['metadata: !custom {a: b}', {}]
      ];
      for (const [line, env] of cases) {
        const outcome = await expectConfigOrConfigError(base + line, env);
        expect(outcome.ok, line).toBe(false);
        if (!outcome.ok)
          expect(outcome.error.problems.join('\n'), line).toMatch(/Unresolved tag[\s\S]*only custom tag is !env/);
      }
      // A collection as a key is stringified by the YAML library (with a warning on stderr); here it is just an unknown key.
      await expectConfigOrConfigError(`${base}? [a, b]\n: 1\n`);
      expect(warnings).not.toHaveBeenCalled();
    } finally {
      warnings.mockRestore();
    }
  });
});
