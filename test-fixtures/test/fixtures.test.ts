import { testPostgresServer, type PostgresServer } from '@syncpoint/dev-postgres';
import { parseSyncRules } from '@syncpoint/sync-rules';
import * as jose from 'jose';
import pg from 'pg';
import { parse } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  createSourceSchema,
  createThrowAwayDatabases,
  fillServiceConfig,
  hostileTokens,
  mintToken,
  postgresServiceConfig,
  rawHmacToken,
  serviceConfigNames,
  sourceSchema,
  sourceSchemaNames,
  syncConfig,
  syncConfigNames,
  TEST_AUDIENCE,
  TEST_KEY_NAMES,
  testJwks,
  testPublicJwk,
  tokenClaims,
  type HostileTokenKind,
  type SourceSchemaName,
  type SyncConfigName
} from '../src/index.js';

describe('sync configs', () => {
  it('each parses as sync rules', () => {
    expect(syncConfigNames().length).toBeGreaterThanOrEqual(5);
    for (const name of syncConfigNames()) {
      const result = parseSyncRules(syncConfig(name as SyncConfigName));
      expect(result.errors, name).toEqual([]);
      expect(result.ok, name).toBe(true);
    }
  });

  it('refuses unknown names and names that are paths', () => {
    expect(() => syncConfig('nope' as SyncConfigName)).toThrow(
      /no fixture sync-configs\/nope.yaml; there are: demo-todos/
    );
    expect(() => syncConfig('../package' as SyncConfigName)).toThrow(/bad fixture name/);
  });
});

/** The parts of a filled service config the tests read. */
interface ConfigDocument {
  replication: { connections: Array<Record<string, unknown>> };
  sync_config?: { content: string };
  client_auth: { audience: string[]; jwks: { keys: Array<{ kid?: string }> } };
  api?: unknown;
  port: number;
}
const parseConfigText = (text: string) => parse(text) as ConfigDocument;

describe('service configs', () => {
  const values = {
    source_uri: 'postgresql://localhost/src',
    storage_uri: 'postgresql://localhost/st',
    slot_name_prefix: null,
    heartbeat_interval_seconds: 5,
    port: 0,
    sync_config: 'bucket_definitions: {}\n',
    audience: ['a'],
    jwks: testJwks(['hs256'])
  };

  it('fills every placeholder with its JSON value and drops null ones', () => {
    const config = parseConfigText(fillServiceConfig('postgres', values));
    expect(config.replication.connections[0]).toEqual({
      type: 'postgresql',
      uri: 'postgresql://localhost/src',
      sslmode: 'disable',
      heartbeat_interval_seconds: 5
    });
    expect(config.sync_config?.content).toBe('bucket_definitions: {}\n');
    expect(config.client_auth.jwks.keys[0]!.kid).toBe('test-hs256');
  });

  it('drops a section a null value leaves empty, and sets extra sections', () => {
    const config = parseConfigText(
      fillServiceConfig('postgres', { ...values, sync_config: null }, { api: { tokens: ['t'] } })
    );
    expect(config.sync_config).toBeUndefined();
    expect(config.api).toEqual({ tokens: ['t'] });
  });

  it('throws on a missing value or an unknown one', () => {
    const { port: _port, ...withoutPort } = values;
    expect(() => fillServiceConfig('postgres', withoutPort)).toThrow('no value for ${port}');
    expect(() => fillServiceConfig('postgres', { ...values, prot: 1 })).toThrow('no placeholder for prot');
  });

  it('has a template for each storage, and postgresServiceConfig defaults to the test key and audience', () => {
    expect(serviceConfigNames()).toEqual(['mongodb-storage', 'postgres']);
    const mongo = parseConfigText(
      fillServiceConfig('mongodb-storage', { ...values, storage_uri: 'mongodb://localhost/st' })
    );
    expect(mongo).toMatchObject({ storage: { type: 'mongodb', uri: 'mongodb://localhost/st' } });
    const config = parseConfigText(postgresServiceConfig({ sourceUri: 's', storageUri: 't', syncConfig: null }));
    expect(config.client_auth).toEqual({ audience: [TEST_AUDIENCE], jwks: testJwks(['hs256']) });
    expect(config.port).toBe(0);
  });
});

describe('JWT material', () => {
  // The real verifier's answer to each token is checked in service-core (test/token-verifier.test.ts); here jose
  // checks what each token is made of.
  // jose's local JWKS sets leave out symmetric keys, so the kid is looked up here.
  const keyFor: jose.JWTVerifyGetKey = async (header) => {
    const jwk = testJwks().keys.find((key) => key.kid === header.kid);
    if (!jwk || jwk.alg !== header.alg) throw new Error(`no key ${header.kid} for ${header.alg}`);
    return jose.importJWK(jwk, header.alg);
  };
  const verify = (token: string) =>
    jose.jwtVerify(token, keyFor, { audience: TEST_AUDIENCE, requiredClaims: ['sub', 'iat', 'exp'] });

  it('public JWKs carry no private members', () => {
    for (const name of ['rsa', 'ec-p256', 'ed25519'] as const) {
      const jwk = testPublicJwk(name);
      expect(
        Object.keys(jwk).filter((k) => ['d', 'p', 'q', 'dp', 'dq', 'qi'].includes(k)),
        name
      ).toEqual([]);
    }
    expect(testPublicJwk('rsa', { kid: null, alg: null })).not.toHaveProperty('kid');
  });

  it('mints valid tokens with every key', async () => {
    for (const key of TEST_KEY_NAMES) {
      const { payload } = await verify(await mintToken({ key, sub: `user-${key}` }));
      expect(payload.sub, key).toBe(`user-${key}`);
    }
    const { protectedHeader } = await jose.jwtVerify(await mintToken({ key: 'ec-p256' }), testPublicJwk('ec-p256'));
    expect(protectedHeader).toEqual({ alg: 'ES256', kid: 'test-ec' });
  });

  it('rawHmacToken signs any header with the hs256 secret', async () => {
    const token = rawHmacToken({ alg: 'HS256', kid: 'test-hs256' }, tokenClaims({ sub: 'raw' }));
    expect((await verify(token)).payload.sub).toBe('raw');
  });

  it('a too-long-lifetime token is otherwise valid and lives two days', async () => {
    const { payload } = await verify(await hostileTokens.tooLongLifetime());
    expect(payload.exp! - payload.iat!).toBe(2 * 86_400);
  });

  for (const kind of Object.keys(hostileTokens) as HostileTokenKind[]) {
    if (kind === 'tooLongLifetime') continue;
    it(`a ${kind} token does not verify`, async () => {
      for (const key of kind === 'wrongKey' ? (['hs256', 'rsa'] as const) : (['hs256'] as const)) {
        await expect(verify(await hostileTokens[kind]({ key })), `${kind} by ${key}`).rejects.toThrow();
      }
    });
  }
});

describe('source schemas on real Postgres', () => {
  let postgres: PostgresServer;
  beforeAll(async () => {
    postgres = await testPostgresServer();
  });
  afterAll(async () => {
    await postgres?.stop();
  });

  it('each schema and its seed rows load into an empty database', async () => {
    expect(sourceSchemaNames()).toEqual(['all-types', 'demo-todos', 'items', 'todos']);
    for (const name of sourceSchemaNames() as SourceSchemaName[]) {
      const database = `fixtures_schema_${name.replace(/-/g, '_')}_${process.pid}`;
      await postgres.ensureDatabase(database);
      const client = new pg.Client({ connectionString: postgres.url(database) });
      await client.connect();
      try {
        await createSourceSchema(client, name);
        const table = /CREATE TABLE (?:IF NOT EXISTS )?(\w+)/.exec(sourceSchema(name).ddl)![1]!;
        const { rows } = await client.query<{ n: string }>(`SELECT count(*)::text AS n FROM ${table}`);
        expect(Number(rows[0]!.n), name).toBeGreaterThan(0);
      } finally {
        await client.end();
      }
    }
  });

  it('all-types has row 1 with every column set and row 2 with none', async () => {
    const { sourceDb } = await createThrowAwayDatabases(postgres, {
      tag: 'fixtures_all_types',
      schemas: ['all-types'],
      seed: true
    });
    try {
      const { rows } = await sourceDb.query<Record<string, unknown>>('SELECT * FROM all_types ORDER BY id');
      const columns = Object.keys(rows[0]!).filter((c) => c !== 'id');
      expect(columns.length).toBeGreaterThan(60);
      // c_null is the NULL case of the decoder; every other column of row 1 holds a value.
      expect(columns.filter((c) => rows[0]![c] === null)).toEqual(['c_null']);
      expect(columns.filter((c) => rows[1]![c] !== null)).toEqual([]);
      const { rows: publications } = await sourceDb.query(`SELECT pubname FROM pg_publication`);
      expect(publications).toEqual([{ pubname: 'powersync' }]);
    } finally {
      await sourceDb.end();
    }
  });
});
