import http from 'node:http';
import net from 'node:net';
import { gzipSync } from 'node:zlib';
import {
  createHttpApp,
  createLogger,
  parseConfig,
  ProbeState,
  SERVER_TIMEOUTS,
  startService,
  type RunningService
} from '@syncpoint/service-core';
import fc from 'fast-check';
import * as jose from 'jose';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse, stringify } from 'yaml';
import { type ErrorEnvelope } from '@syncpoint/test-fixtures';
import { DEV_AUDIENCE } from '../src/dev-token.js';
import { createModuleRegistry } from '../src/module-registry.js';
import {
  createReplicationEnv,
  TEST_DEV_KEY,
  waitForCheckpointLsn,
  type ReplicationEnv
} from './replication-harness.js';

/**
 * Hostile input (issue 7 items 2 and 3): fast-check sends generated requests to every HTTP route of ONE real service
 * (role `api`, on embedded Postgres) — bodies of any shape, bytes that are not UTF-8, wrong content types and
 * encodings, odd query strings, garbage in headers, with and without a valid token so validation past authentication
 * is reached. Properties, for every request:
 *
 * - the status is 2xx or 4xx, never 5xx (and no connection reset), and every 4xx body is the error envelope with a
 *   stable `PSYNC_Sxxxx` code;
 * - a 2xx from a client route needs a valid token, and a 2xx sync stream starts with a checkpoint line;
 * - a 4xx writes nothing: the storage tables and the source's WAL (markers) are unchanged;
 * - the process stays up: a probe answers after each request, and nothing was logged as an unexpected error.
 *
 * Setup: a replicating service builds the first checkpoint, then stops; the service under test has role `api`, so
 * sync streams evaluate the sync config against real data, while the only source markers are its own.
 */

const SOURCE_SETUP = [
  `CREATE TABLE todos (id text PRIMARY KEY, description text, owner text, list_id text)`,
  `CREATE TABLE memberships (id text PRIMARY KEY, user_id text, list_id text, role text)`,
  `INSERT INTO todos SELECT 't' || i, 'todo ' || i, 'user-' || (i % 3), 'list-' || (i % 4) FROM generate_series(1, 12) i`,
  `INSERT INTO memberships VALUES ('m1', 'user-1', 'list-1', 'admin'), ('m2', 'user-1', 'list-2', 'viewer'), ('m3', 'user-2', 'list-3', 'admin')`
];

// Client parameters reach bucket evaluation (`request.parameters()`, `user_parameters`), so fuzzed bodies do too.
const SYNC_CONFIG = `
bucket_definitions:
  global:
    data:
      - SELECT * FROM todos
  by_owner:
    parameters: SELECT request.user_id() AS owner
    data:
      - SELECT * FROM todos WHERE owner = bucket.owner
  by_requested_list:
    accept_potentially_dangerous_queries: true
    parameters: SELECT request.parameters() ->> 'list' AS list_id
    data:
      - SELECT id, upper(description) AS description FROM todos WHERE list_id = bucket.list_id
  by_membership:
    accept_potentially_dangerous_queries: true
    parameters: SELECT list_id FROM memberships WHERE user_id = request.user_id() AND role = user_parameters.role
    data:
      - SELECT * FROM todos WHERE list_id = bucket.list_id
`;

const ADMIN_TOKEN = 'fuzz-admin-token-8c1f';
const ERROR_CODE = /^PSYNC_S\d{4}$/;

let env: ReplicationEnv;
let service: RunningService;
let markers: { take(): Promise<number> };
let storageDb: pg.Pool;
let validToken: string;
/** Tokens that must be refused: expired, wrong audience, forged signature, alg none, unknown key. */
let rejectedTokens: string[];
const errorLogs: string[] = [];

const now = () => Math.floor(Date.now() / 1000);
const devSecret = () => jose.base64url.decode(TEST_DEV_KEY.k);
function sign(claims: jose.JWTPayload, options: { kid?: string; key?: Uint8Array } = {}) {
  return new jose.SignJWT({ sub: 'user-1', aud: DEV_AUDIENCE, iat: now(), exp: now() + 3600, ...claims })
    .setProtectedHeader({ alg: 'HS256', kid: options.kid ?? TEST_DEV_KEY.kid })
    .sign(options.key ?? devSecret());
}

beforeAll(async () => {
  env = await createReplicationEnv('fuzz', SOURCE_SETUP);
  const storageName = await env.createStorageDatabase('fuzz');
  const registry = createModuleRegistry();

  // The first checkpoint, built by a replicating service that then stops.
  const replicator = await env.startInProcess({ storageName, syncConfig: SYNC_CONFIG, role: 'unified' });
  const storage = env.openStorage(storageName);
  await waitForCheckpointLsn(storage, await env.sourcePosition(), 60_000);
  await replicator.stop();

  // The service under test. Errors it logs are collected: an unexpected error must never happen, even if a route
  // answered 4xx or a stream started with 200.
  const configText = stringify({
    ...parse(env.configText({ storageName, syncConfig: SYNC_CONFIG })),
    api: { tokens: [ADMIN_TOKEN] }
  });
  const config = await parseConfig(configText, { source: 'test', configDir: process.cwd(), registry });
  const logger = createLogger({ level: 'error', destination: { write: (line: string) => void errorLogs.push(line) } });
  service = await startService(config, { registry, logger, host: '127.0.0.1', role: 'api' });

  storageDb = new pg.Pool({ connectionString: env.postgres.url(storageName), max: 2 });
  storageDb.on('error', () => {});
  // A logical slot decoding the source's WAL counts markers (every checkpoint request emits one).
  const slot = `${env.slotPrefix}markers`;
  await env.sourceDb.query(`SELECT pg_create_logical_replication_slot($1, 'test_decoding')`, [slot]);
  markers = {
    async take() {
      const { rows } = await env.sourceDb.query<{ data: string }>(
        `SELECT data FROM pg_logical_slot_get_changes($1, NULL, NULL)`,
        [slot]
      );
      return rows.filter((row) => /^message: .*prefix: powersync/.test(row.data)).length;
    }
  };

  validToken = await sign({});
  rejectedTokens = [
    await sign({ iat: now() - 7200, exp: now() - 3600 }),
    await sign({ aud: 'elsewhere' }),
    await sign({}, { key: new TextEncoder().encode('another-secret-of-at-least-32-bytes') }),
    await sign({}, { kid: 'unknown-key' }),
    new jose.UnsecuredJWT({ sub: 'user-1', aud: DEV_AUDIENCE, iat: now(), exp: now() + 60 }).encode()
  ];
}, 120_000);

afterAll(async () => {
  await service?.stop();
  await storageDb?.end();
  await env?.cleanup();
}, 60_000);

// --- sending requests --------------------------------------------------------------------------------------------

interface FuzzRequest {
  method: string;
  /** Path and query string, sent as is. */
  path: string;
  headers: Record<string, string>;
  body?: Buffer;
}

interface FuzzResponse {
  status: number;
  headers: http.IncomingHttpHeaders;
  /** The whole body; for a streaming response only its beginning (up to the first sync line). */
  body: Buffer;
}

/**
 * One request with node:http (not fetch, which would refuse some methods and headers), on a new connection (a
 * kept-alive one could carry one request's trouble into the next); rejects on a reset.
 */
function send(request: FuzzRequest, timeoutMs = 30_000): Promise<FuzzResponse> {
  const url = new URL(service.url);
  // node:http frames a body of POST/PUT/PATCH as chunked; a body of any other method needs a length, or the server
  // would read it as the next request.
  const headers = { ...request.headers };
  if (request.body !== undefined && !['POST', 'PUT', 'PATCH'].includes(request.method))
    headers['content-length'] = String(request.body.length);
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: url.hostname, port: url.port, method: request.method, path: request.path, headers, agent: false },
      (res) => {
        const chunks: Buffer[] = [];
        const streaming = /x-ndjson|bson-stream/.test(res.headers['content-type'] ?? '');
        res.on('data', (chunk: Buffer) => {
          chunks.push(chunk);
          // A sync stream never ends by itself: its first line is enough.
          if (streaming && firstSyncLine(Buffer.concat(chunks), res.headers['content-type']!) !== undefined) {
            clearTimeout(timer);
            resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(chunks) });
            req.destroy();
          }
        });
        res.on('end', () => {
          clearTimeout(timer);
          resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(chunks) });
        });
        res.on('error', reject);
      }
    );
    const timer = setTimeout(() => {
      req.destroy();
      reject(new Error(`no complete answer within ${timeoutMs} ms: ${request.method} ${request.path}`));
    }, timeoutMs);
    req.on('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    req.end(request.body);
  });
}

/** The first NDJSON line or BSON document, parsed; undefined while incomplete. */
function firstSyncLine(data: Buffer, contentType: string): Record<string, unknown> | undefined {
  if (contentType.startsWith('application/vnd.powersync.bson-stream')) {
    if (data.length < 4 || data.length < data.readInt32LE(0)) return undefined;
    return { bson: true, length: data.readInt32LE(0) };
  }
  const newline = data.indexOf(10);
  return newline < 0 ? undefined : (JSON.parse(data.subarray(0, newline).toString('utf8')) as Record<string, unknown>);
}

async function storageSnapshot(): Promise<unknown> {
  const { rows } = await storageDb.query(`
    SELECT (SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) FROM powersync.write_checkpoints t) AS write_checkpoints,
           (SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) FROM powersync.custom_write_checkpoints t) AS custom,
           (SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) FROM powersync.sync_rules t) AS sync_rules,
           (SELECT count(*) FROM powersync.bucket_data) AS bucket_data`);
  return rows[0];
}

/** The properties every response must have; returns the parsed JSON body (null when there is none). */
function expectWellFormed(request: FuzzRequest, response: FuzzResponse): ResponseJson {
  const context = `${request.method} ${request.path} -> ${response.status} ${response.body.toString('utf8').slice(0, 300)}`;
  const is2xx = response.status >= 200 && response.status < 300;
  const is4xx = response.status >= 400 && response.status < 500;
  expect(is2xx || is4xx, context).toBe(true);
  if (is4xx) {
    if (request.method === 'HEAD') return null; // a HEAD response has no body
    const json = parseJson(response.body, context);
    expect(Object.keys(json ?? {}), context).toEqual(['error']);
    expect(json?.error, context).toMatchObject({
      code: expect.stringMatching(ERROR_CODE) as unknown,
      status: response.status
    });
    expect(typeof json?.error?.description, context).toBe('string');
    return json;
  }
  const contentType = response.headers['content-type'] ?? '';
  if (request.method === 'HEAD' || response.status === 204 || !contentType.includes('json')) return null;
  return parseJson(response.body, context);
}

/** A response body as these tests read it: an error envelope, `{ data }`, or null when there is no JSON body. */
type ResponseJson = (Partial<ErrorEnvelope> & { data?: unknown }) | null;

function parseJson(body: Buffer, context: string): ResponseJson {
  try {
    return JSON.parse(body.toString('utf8')) as ResponseJson;
  } catch {
    expect.fail(`not a JSON body: ${context}`);
  }
}

/** Sends a request that may write; a 4xx must leave storage and the source WAL untouched. */
async function sendChecked(request: FuzzRequest): Promise<{ response: FuzzResponse; json: ResponseJson }> {
  const before = await storageSnapshot();
  await markers.take();
  const response = await send(request);
  const json = expectWellFormed(request, response);
  if (response.status >= 400) {
    expect(await storageSnapshot(), `${request.method} ${request.path} -> ${response.status} wrote to storage`).toEqual(
      before
    );
    expect(await markers.take(), `${request.method} ${request.path} -> ${response.status} emitted a marker`).toBe(0);
  }
  return { response, json };
}

async function expectAlive() {
  const response = await send({ method: 'GET', path: '/probes/liveness', headers: {} }, 10_000);
  expect(response.status).toBe(200);
}

/** A property over read-only routes: nothing at all may be written while it runs. */
async function expectNothingWritten(run: () => Promise<void>) {
  const before = await storageSnapshot();
  await markers.take();
  await run();
  expect(await storageSnapshot()).toEqual(before);
  expect(await markers.take()).toBe(0);
}

function expectNoUnexpectedErrors() {
  expect(
    errorLogs.filter((line) => !line.includes('"level":30')),
    errorLogs.join('\n')
  ).toEqual([]);
}

// --- generators -------------------------------------------------------------------------------------------------

/** Strings meant to hurt: control characters, separators, unicode, lone surrogates, very long ones. */
const nastyString = fc.oneof(
  fc.string({ maxLength: 20 }),
  fc.string({ unit: 'binary', maxLength: 20 }),
  fc.constantFrom(
    '',
    ' ',
    '/',
    'a/b',
    '\u0000',
    '\n',
    '\ud800',
    '\u202e',
    '%00',
    '..',
    '__proto__',
    'constructor',
    'x'.repeat(300),
    '💥'.repeat(200)
  ),
  fc.integer().map(String)
);

/** Numbers at the edges of every range the routes check. */
const edgyNumber = fc.oneof(
  fc.integer(),
  fc.double(),
  fc.constantFrom(0, -0, 1, -1, 2 ** 53 - 1, 2 ** 53, 2 ** 53 + 2, 2 ** 63, -(2 ** 63), 1e308, 5e-324, Number.MAX_VALUE)
);

const { value: jsonValue } = fc.letrec((tie) => ({
  value: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    nastyString,
    edgyNumber,
    fc.boolean(),
    fc.constant(null),
    tie('array'),
    tie('object')
  ),
  array: fc.array(tie('value'), { maxLength: 4 }),
  object: fc.dictionary(nastyString, tie('value'), { maxKeys: 4 })
}));

/** Decimal strings around the id / op id ranges, written as JSON text so big numbers reach the server unrounded. */
const idText = fc.oneof(
  fc.constantFrom(
    '0',
    '-1',
    '1',
    '9007199254740991',
    '9007199254740993',
    '9223372036854775807',
    '9223372036854775808',
    '1e3',
    '1.0',
    '-0',
    '00042'
  ),
  fc.bigInt({ min: -(2n ** 70n), max: 2n ** 70n }).map(String)
);
/** A field value: arbitrary JSON, or a raw JSON number/string around the id ranges. */
const fieldText = fc.oneof(
  jsonValue.map((value) => JSON.stringify(value) ?? 'null'),
  idText,
  idText.map((id) => JSON.stringify(id))
);

function objectText(fields: Record<string, string | undefined>): string {
  return `{${Object.entries(fields)
    .filter(([, value]) => value !== undefined)
    .map(([key, value]) => `${JSON.stringify(key)}:${value}`)
    .join(',')}}`;
}

/** Deep nesting (arrays, objects, or both) at depths around what recursive code survives. */
const deepJson = fc
  .record({ depth: fc.constantFrom(100, 1_000, 5_000, 20_000), kind: fc.constantFrom('array', 'object', 'parameters') })
  .map(({ depth, kind }) => {
    if (kind === 'array') return '['.repeat(depth) + ']'.repeat(depth);
    const nested = '{"a":'.repeat(depth) + '1' + '}'.repeat(depth);
    return kind === 'object'
      ? nested
      : `{"client_id":"deep","checkpoint_request_id":"1","parameters":${nested},"buckets":[]}`;
  });

/** A body: structured, JSON-ish text, deep, or bytes that are not UTF-8 (or not text at all). */
function bodyText(structured: fc.Arbitrary<string>): fc.Arbitrary<Buffer> {
  return fc.oneof(
    { weight: 12, arbitrary: structured.map((text) => Buffer.from(text)) },
    { weight: 2, arbitrary: jsonValue.map((value) => Buffer.from(JSON.stringify(value) ?? '')) },
    {
      weight: 2,
      arbitrary: fc
        .array(
          fc.constantFrom(
            '{',
            '}',
            '[',
            ']',
            '"',
            ':',
            ',',
            'null',
            'true',
            '1e999',
            '-',
            '\\u',
            '\\',
            ' ',
            'client_id',
            '"a"'
          ),
          { maxLength: 20 }
        )
        .map((parts) => Buffer.from(parts.join('')))
    },
    { weight: 1, arbitrary: fc.uint8Array({ maxLength: 64 }).map((bytes) => Buffer.from(bytes)) },
    // Invalid UTF-8 inside JSON strings (lone continuation bytes, truncated sequences, overlong encodings).
    {
      weight: 1,
      arbitrary: fc
        .constantFrom([0x80], [0xc0, 0xaf], [0xed, 0xa0, 0x80], [0xf8, 0x88, 0x80, 0x80, 0x80], [0xe2, 0x82], [0xff])
        .map((bytes) =>
          Buffer.concat([
            Buffer.from('{"client_id":"'),
            Buffer.from(bytes),
            Buffer.from('","checkpoint_request_id":"1"}')
          ])
        )
    },
    { weight: 1, arbitrary: deepJson.map((text) => Buffer.from(text)) },
    { weight: 1, arbitrary: fc.constant(Buffer.alloc(0)) }
  );
}

const contentType = fc.option(
  fc.oneof(
    fc.constantFrom(
      'application/json',
      'application/json; charset=utf-8',
      'application/json; charset=UTF-16',
      'application/json; charset=latin1',
      'application/json; charset=nonsense',
      'application/json;;;',
      'application/vnd.api+json',
      'text/plain',
      'text/json',
      'application/x-www-form-urlencoded',
      'multipart/form-data; boundary=x',
      'application/octet-stream',
      '*/*',
      ''
    ),
    fc.stringMatching(/^[\x20-\x7e]{0,40}$/)
  ),
  { nil: undefined }
);

const contentEncoding = fc.option(fc.constantFrom('identity', 'gzip', 'deflate', 'br', 'x-unknown', 'gzip, gzip'), {
  freq: 4,
  nil: undefined
});

/** Authorization: none, garbage, refused tokens, or the valid token (sometimes with a wrong scheme or junk around it). */
const authorization = fc.oneof(
  { weight: 2, arbitrary: fc.constant(undefined) },
  { weight: 2, arbitrary: fc.stringMatching(/^[\x20-\x7e]{0,80}$/) },
  {
    weight: 1,
    arbitrary: fc.constantFrom(
      'Token',
      'Bearer',
      'Token ',
      'Bearer  ',
      'Basic dXNlcjpwYXNz',
      'Token a.b.c',
      'Token ....',
      'Token eyJ.eyJ.',
      'Token x'.padEnd(4000, 'x')
    )
  },
  { weight: 2, arbitrary: fc.nat().map((i) => ({ rejected: i })) },
  { weight: 4, arbitrary: fc.constantFrom('Token', 'Bearer').map((scheme) => ({ valid: scheme })) },
  // The valid token in a header that must still be refused (the scheme is case-sensitive, PROTOCOL §3.1).
  {
    weight: 1,
    arbitrary: fc
      .constantFrom(
        'Token {}x',
        'Token x{}',
        'Token {} {}',
        'Token\t{}',
        'token {}',
        'BEARER {}',
        'Token  {}',
        'Basic {}',
        '{}'
      )
      .map((pattern) => ({ validPattern: pattern }))
  }
);
type AuthChoice = string | undefined | { rejected: number } | { valid: string } | { validPattern: string };

function authorizationHeader(choice: AuthChoice): { header: string | undefined; valid: boolean } {
  if (choice === undefined || typeof choice === 'string') return { header: choice, valid: false };
  if ('rejected' in choice)
    return { header: `Token ${rejectedTokens[choice.rejected % rejectedTokens.length]}`, valid: false };
  if ('valid' in choice) return { header: `${choice.valid} ${validToken}`, valid: true };
  return { header: choice.validPattern.replace('{}', validToken), valid: false };
}

/** Query strings: repeated keys, empty values, bad percent-encoding, brackets, unicode. */
const queryString = fc
  .array(
    fc.tuple(
      fc.oneof(
        fc.constantFrom(
          'client_id',
          'checkpoint_request_id',
          'a[b]',
          '__proto__',
          'constructor',
          '',
          '%',
          '%ZZ',
          '=',
          '&'
        ),
        fc.string({ maxLength: 5 })
      ),
      fc.oneof(nastyString, idText)
    ),
    { maxLength: 4 }
  )
  .chain((pairs) =>
    fc
      .boolean()
      .map((encode) =>
        pairs.length === 0
          ? ''
          : '?' +
            pairs
              .map(([key, value]) =>
                encode ? `${encodeURIComponent(key)}=${safeEncode(value)}` : `${rawQuery(key)}=${rawQuery(value)}`
              )
              .join('&')
      )
  );

/** encodeURIComponent throws on lone surrogates; send those percent-encoded byte by byte (invalid UTF-8). */
function safeEncode(value: string): string {
  try {
    return encodeURIComponent(value);
  } catch {
    return [...Buffer.from(value, 'latin1')].map((byte) => `%${byte.toString(16).padStart(2, '0')}`).join('');
  }
}

/** Unencoded, but without the bytes node:http refuses in a path (controls, space, non-ASCII): those go %-encoded. */
function rawQuery(value: string): string {
  return value.replace(/[^\x21-\x7e]/gu, (char) => safeEncode(char));
}

/** Extra headers that routes might look at. */
const extraHeaders = fc.record(
  {
    accept: fc.oneof(
      fc.constantFrom(
        'application/vnd.powersync.bson-stream;q=0.9,application/x-ndjson;q=0.8',
        'application/x-ndjson',
        'application/vnd.powersync.bson-stream',
        'text/html',
        '*/*;q=abc',
        ';;;,,,',
        'application/x-ndjson;q=2, application/vnd.powersync.bson-stream;q=-1'
      ),
      fc.stringMatching(/^[\x20-\x7e]{0,60}$/)
    ),
    'accept-encoding': fc.constantFrom(
      'zstd',
      'gzip',
      'br',
      'identity;q=0',
      '*;q=0',
      'gzip;q=abc',
      'zstd, gzip, deflate'
    ),
    'user-agent': fc.stringMatching(/^[\x20-\x7e]{0,60}$/),
    'x-user-agent': fc.stringMatching(/^[\x20-\x7e]{0,60}$/),
    origin: fc.constantFrom('https://evil.example', 'null'),
    'x-forwarded-for': fc.constantFrom('1.2.3.4', 'garbage', '::1, ,,')
  },
  { requiredKeys: [] }
);

function headersFor(options: {
  contentType?: string;
  contentEncoding?: string;
  authorization?: string;
  extra?: Record<string, string>;
}) {
  const headers: Record<string, string> = { ...options.extra };
  if (options.contentType !== undefined) headers['content-type'] = options.contentType;
  if (options.contentEncoding !== undefined) headers['content-encoding'] = options.contentEncoding;
  if (options.authorization !== undefined) headers.authorization = options.authorization;
  return headers;
}

/** A body, compressed when the request says so (and sometimes not, though it says so). */
function encodeBody(body: Buffer, encoding: string | undefined, honest: boolean): Buffer {
  return encoding === 'gzip' && honest ? gzipSync(body) : body;
}

/**
 * Usually `usual`, sometimes `hostile`: each part of a request is broken on its own, so most requests have only one
 * or two problems and validation after the first check (and authentication, and the handler) is reached too.
 */
function mostly<T, U>(usual: fc.Arbitrary<T>, hostile: fc.Arbitrary<U>): fc.Arbitrary<T | U> {
  return fc.oneof({ weight: 3, arbitrary: usual }, { weight: 1, arbitrary: hostile });
}

const validAuthorization = fc.constantFrom('Token', 'Bearer').map((scheme): AuthChoice => ({ valid: scheme }));
const jsonContentType = fc.constantFrom('application/json', 'application/json; charset=utf-8');
const validClientId = fc.integer({ min: 0, max: 9 }).map((n) => JSON.stringify(`client-${n}`));

/**
 * A JSON POST to `path` as a client could send it: the body (sometimes compressed, sometimes with a wrong declared
 * length), content type, token, query string and extra headers, each mostly valid so that checks past the first are
 * reached. `valid` tells whether the token is a valid one.
 */
function jsonPost(path: string, structured: fc.Arbitrary<string>) {
  return fc
    .record({
      body: bodyText(structured),
      type: mostly(jsonContentType, contentType),
      encoding: mostly(fc.constant(undefined), contentEncoding),
      honest: fc.boolean(),
      auth: mostly(validAuthorization, authorization),
      query: mostly(fc.constant(''), queryString),
      extra: extraHeaders
    })
    .map(({ body, type, encoding, honest, auth, query, extra }) => {
      const { header, valid } = authorizationHeader(auth);
      const request = {
        method: 'POST',
        path: `${path}${query}`,
        headers: headersFor({ contentType: type, contentEncoding: encoding, authorization: header, extra }),
        body: encodeBody(body, encoding, honest)
      };
      return { request, valid };
    });
}

// 100 runs per property keep the file well under a minute on a busy machine; FUZZ_RUNS=2000 for a deeper search.
const RUNS = Number(process.env.FUZZ_RUNS ?? 100);
const fuzzOptions = { numRuns: RUNS, endOnFailure: true };

// --- properties --------------------------------------------------------------------------------------------------

describe('hostile input to the HTTP routes', () => {
  it('POST /sync/checkpoint-request: 2xx only with a valid token and body, else 4xx that writes nothing', async () => {
    const validId = fc
      .oneof(fc.bigInt({ min: 1n, max: 2n ** 63n - 1n }).map(String), fc.integer({ min: 1 }).map(String))
      .map((id) => JSON.stringify(id));
    const structured = fc
      .record({
        client_id: mostly(validClientId, fc.option(fc.oneof(fieldText, fc.constant('"device-ä"')), { nil: undefined })),
        checkpoint_request_id: mostly(validId, fc.option(fieldText, { nil: undefined })),
        extra: fc.option(fieldText, { nil: undefined })
      })
      .map(objectText);
    let accepted = 0;
    await fc.assert(
      fc.asyncProperty(jsonPost('/sync/checkpoint-request', structured), async ({ request, valid }) => {
        const { response, json } = await sendChecked(request);
        if (response.status < 300) {
          accepted++;
          expect(valid, 'accepted without a valid token').toBe(true);
          expect(json).toEqual({ data: { checkpoint_request_id: expect.stringMatching(/^[1-9][0-9]*$/) as unknown } });
        }
        await expectAlive();
      }),
      fuzzOptions
    );
    await expectAlive();
    expectNoUnexpectedErrors();
    // The generators must reach the handler's success path, or the property says little about validation.
    expect(accepted).toBeGreaterThan(0);
  }, 120_000);

  it('GET /write-checkpoint2.json: 2xx only with a valid token, else 4xx that writes nothing', async () => {
    let accepted = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom('GET', 'GET', 'GET', 'HEAD', 'POST', 'PUT'),
        mostly(
          fc.integer({ min: 0, max: 9 }).map((n) => `?client_id=client-${n}`),
          queryString
        ),
        mostly(validAuthorization, authorization),
        fc.option(bodyText(fc.constant('{"client_id":"from-body"}')), { nil: undefined }),
        contentType,
        extraHeaders,
        async (method, query, auth, body, type, extra) => {
          const { header, valid } = authorizationHeader(auth);
          const request = {
            method,
            path: `/write-checkpoint2.json${query}`,
            headers: headersFor({ contentType: type, authorization: header, extra }),
            body
          };
          const { response, json } = await sendChecked(request);
          if (response.status < 300) {
            accepted++;
            expect(valid, 'accepted without a valid token').toBe(true);
            if (method === 'GET')
              expect(json).toEqual({ data: { write_checkpoint: expect.stringMatching(/^[1-9][0-9]*$/) as unknown } });
          }
          await expectAlive();
        }
      ),
      fuzzOptions
    );
    await expectAlive();
    expectNoUnexpectedErrors();
    expect(accepted).toBeGreaterThan(0);
  }, 120_000);

  it('POST /sync/stream: a stream that starts with a checkpoint, or 4xx; nothing written', async () => {
    const bucketEntry = fc.oneof(
      fc
        .record(
          {
            name: fc.oneof(fc.constantFrom('"global[]"', '"by_owner[\\"user-1\\"]"', '"nope[]"'), fieldText),
            after: fc.oneof(
              idText.map((id) => JSON.stringify(id)),
              fieldText
            )
          },
          { requiredKeys: [] }
        )
        .map(objectText),
      fieldText
    );
    // Client parameters are untrusted input to bucket evaluation: mostly the right shape, with fuzzed values.
    const parameters = mostly(
      fc
        .record(
          {
            list: mostly(fc.constantFrom('"list-1"', '"list-2"'), fieldText),
            role: mostly(fc.constant('"admin"'), fieldText)
          },
          { requiredKeys: [] }
        )
        .map(objectText),
      fieldText
    );
    const optional = (arbitrary: fc.Arbitrary<string>) => fc.option(arbitrary, { nil: undefined });
    // The `streams` field (STREAMS §5.1): subscriptions naming bucket definitions or unknown streams, with parameter
    // objects, nulls, hostile values, deep nesting and priorities in and out of range; sometimes more than the cap.
    const subscription = mostly(
      fc
        .record(
          {
            stream: mostly(fc.constantFrom('"global"', '"by_requested_list"', '"unknown"', '"GLOBAL"'), fieldText),
            parameters: mostly(fc.oneof(parameters, fc.constant('null')), fc.oneof(fieldText, deepJson)),
            override_priority: mostly(fc.constantFrom('null', '0', '1', '3', '-1', '4', '1.5', '1e308'), fieldText),
            extra: fieldText
          },
          { requiredKeys: [] }
        )
        .map(objectText),
      fieldText
    );
    const subscriptions = fc.oneof(
      { weight: 8, arbitrary: fc.array(subscription, { maxLength: 5 }).map((entries) => `[${entries.join(',')}]`) },
      {
        weight: 1,
        arbitrary: fc
          .constantFrom(1000, 1001)
          .map((count) => `[${Array(count).fill('{"stream":"global","parameters":null}').join(',')}]`)
      },
      { weight: 1, arbitrary: fieldText }
    );
    const streamsField = fc
      .record(
        { include_defaults: mostly(fc.constantFrom('true', 'false'), fieldText), subscriptions },
        { requiredKeys: [] }
      )
      .map(objectText);
    const structured = fc
      .record({
        buckets: optional(
          mostly(
            fc.array(bucketEntry, { maxLength: 4 }).map((entries) => `[${entries.join(',')}]`),
            fieldText
          )
        ),
        include_checksum: optional(mostly(fc.constant('true'), fieldText)),
        raw_data: optional(mostly(fc.constantFrom('true', 'false'), fieldText)),
        binary_data: optional(fieldText),
        client_id: optional(mostly(validClientId, fieldText)),
        parameters: optional(parameters),
        app_metadata: optional(fieldText),
        only: optional(fieldText),
        streams: optional(mostly(streamsField, fieldText))
      })
      .map(objectText);
    let streams = 0;
    await expectNothingWritten(async () => {
      await fc.assert(
        fc.asyncProperty(jsonPost('/sync/stream', structured), async ({ request, valid }) => {
          const response = await send(request);
          if (response.status === 200) {
            streams++;
            expect(valid, 'a stream without a valid token').toBe(true);
            const line = firstSyncLine(response.body, response.headers['content-type'] ?? '');
            // NDJSON: the first line is the full checkpoint (a validation problem would have been a 400 instead).
            if (line && !('bson' in line))
              expect(Object.keys(line), JSON.stringify(line).slice(0, 300)).toEqual(['checkpoint']);
            expect(line).toBeDefined();
          } else {
            expectWellFormed(request, response);
          }
          await expectAlive();
        }),
        fuzzOptions
      );
    });
    await expectAlive();
    expectNoUnexpectedErrors();
    expect(streams).toBeGreaterThan(0);
    // Every stream the fuzzer opened is closed again.
    await waitForOpenStreams(0);
  }, 120_000);

  it('admin routes: 2xx only with the API token, 4xx otherwise; nothing written', async () => {
    const adminAuth = fc.oneof(
      fc.constant(`Bearer ${ADMIN_TOKEN}`),
      fc.constant(`Token ${ADMIN_TOKEN}`),
      fc.constantFrom(
        `Bearer ${ADMIN_TOKEN} `,
        `Bearer ${ADMIN_TOKEN}x`,
        `Bearer ${ADMIN_TOKEN.slice(0, -1)}`,
        ADMIN_TOKEN,
        'Bearer',
        ''
      ),
      authorization.map((choice) => authorizationHeader(choice as AuthChoice).header)
    );
    const syncConfigText = fc.oneof(
      fc.constant(SYNC_CONFIG),
      fc
        .tuple(fc.nat(SYNC_CONFIG.length), fc.nat(20), fc.string({ maxLength: 8 }))
        .map(([at, remove, insert]) => SYNC_CONFIG.slice(0, at) + insert + SYNC_CONFIG.slice(at + remove)),
      jsonValue.map((value) => stringify(value)),
      fc.constantFrom(
        'a: *b',
        '&a [*a]',
        '!!binary x',
        '{',
        'bucket_definitions: {x: {data: [SELECT 1 FROM t WHERE (((((((((((1))))))))))]}}'
      )
    );
    const structured = fc.oneof(
      syncConfigText.map((content) => JSON.stringify({ content })),
      fc.record({ content: fieldText }, { requiredKeys: [] }).map(objectText)
    );
    await expectNothingWritten(async () => {
      await fc.assert(
        fc.asyncProperty(
          fc.constantFrom(
            ['POST', '/api/admin/v1/diagnostics'],
            ['POST', '/api/sync-rules/v1/validate'],
            ['POST', '/api/sync-rules/v1/validate'],
            ['GET', '/api/sync-rules/v1/current'],
            ['GET', '/api/admin/v1/diagnostics'],
            ['POST', '/api/admin/v1/execute-sql'],
            ['POST', '/api/sync-rules/v1/deploy'],
            ['DELETE', '/api/sync-rules/v1/current']
          ),
          bodyText(structured),
          contentType.map((type) => type ?? 'application/json'),
          adminAuth,
          queryString,
          async ([method, path], body, type, auth, query) => {
            // Node trims spaces around header values.
            const authorized = [`Bearer ${ADMIN_TOKEN}`, `Token ${ADMIN_TOKEN}`].includes(auth?.trim() ?? '');
            const request = {
              method,
              path: `${path}${query}`,
              headers: headersFor({ contentType: type, authorization: auth }),
              body
            };
            const response = await send(request);
            const json = expectWellFormed(request, response);
            if (response.status < 300) {
              expect(authorized, `${method} ${path} answered without the API token`).toBe(true);
              if (path.endsWith('/validate'))
                expect(json?.data).toEqual({
                  valid: expect.any(Boolean) as unknown,
                  errors: expect.any(Array) as unknown,
                  warnings: expect.any(Array) as unknown
                });
            }
            await expectAlive();
          }
        ),
        fuzzOptions
      );
    });
    await expectAlive();
    expectNoUnexpectedErrors();
  }, 120_000);

  it('probes, metrics, unknown paths and wrong methods: 2xx or a 4xx envelope; nothing written', async () => {
    const knownPath = fc.constantFrom(
      '/probes/startup',
      '/probes/liveness',
      '/probes/readiness',
      '/metrics',
      '/sync/stream',
      '/sync/checkpoint-request',
      '/write-checkpoint2.json',
      '/write-checkpoint.json',
      '/api/admin/v1/diagnostics',
      '/api/sync-rules/v1/current'
    );
    const pathSegment = fc.oneof(
      fc.constantFrom(
        'sync',
        'api',
        'probes',
        '..',
        '.',
        '%',
        '%ZZ',
        '%00',
        '%2F',
        '%C0%AF',
        '%ED%A0%80',
        ';',
        ':',
        '*',
        '~',
        '',
        'a'.repeat(2000)
      ),
      fc.stringMatching(/^[A-Za-z0-9._~!$&'()*+,;=:@-]{0,12}$/)
    );
    const path = fc.oneof(
      knownPath,
      knownPath.chain((known) =>
        fc.constantFrom(`${known}/`, `${known}/x`, known.toUpperCase(), `${known}%20`, `//${known}`, `${known};x`)
      ),
      fc.array(pathSegment, { minLength: 1, maxLength: 5 }).map((segments) => `/${segments.join('/')}`)
    );
    const method = fc.oneof(
      fc.constantFrom(
        'GET',
        'HEAD',
        'POST',
        'PUT',
        'PATCH',
        'DELETE',
        'OPTIONS',
        'PROPFIND',
        'SEARCH',
        'MKCOL',
        'PURGE'
      ),
      fc.stringMatching(/^[A-Z]{1,8}$/)
    );
    await expectNothingWritten(async () => {
      await fc.assert(
        fc.asyncProperty(
          method,
          path,
          queryString,
          fc.option(bodyText(fc.constant('{}')), { nil: undefined }),
          contentType,
          authorization,
          extraHeaders,
          async (verb, target, query, body, type, auth, extra) => {
            // A valid client token could make these write (e.g. GET /write-checkpoint2.json); that is the first property's business.
            const { header } = authorizationHeader(typeof auth === 'object' && 'valid' in auth ? undefined : auth);
            const request = {
              method: verb,
              path: `${target}${query}`,
              headers: headersFor({ contentType: type, authorization: header, extra }),
              body
            };
            let response: FuzzResponse;
            try {
              response = await send(request);
            } catch (error) {
              // node:http refuses some methods on the client side (it knows only the ones its parser knows); nothing was sent.
              if (
                (error as NodeJS.ErrnoException).code === 'ERR_INVALID_HTTP_TOKEN' ||
                /Unknown HTTP method|Invalid method/i.test(String(error))
              )
                return;
              throw error;
            }
            expectWellFormed(request, response);
            await expectAlive();
          }
        ),
        fuzzOptions
      );
    });
    await expectAlive();
    expectNoUnexpectedErrors();
  }, 120_000);
});

// --- WebSocket (RSocket) transport ------------------------------------------------------------------------------

/** One client→server WebSocket frame (masked, as clients must), or an unmasked one when `masked` is false. */
function webSocketFrame(payload: Buffer, options: { opcode?: number; fin?: boolean; masked?: boolean } = {}): Buffer {
  const { opcode = 0x2, fin = true, masked = true } = options;
  const length = payload.length;
  const header = [((fin ? 0x80 : 0) | opcode) & 0xff];
  const maskBit = masked ? 0x80 : 0;
  if (length < 126) header.push(maskBit | length);
  else if (length < 65536) header.push(maskBit | 126, length >> 8, length & 0xff);
  else
    header.push(
      maskBit | 127,
      0,
      0,
      0,
      0,
      (length >>> 24) & 0xff,
      (length >> 16) & 0xff,
      (length >> 8) & 0xff,
      length & 0xff
    );
  if (!masked) return Buffer.concat([Buffer.from(header), payload]);
  const mask = Buffer.from([0x12, 0x34, 0x56, 0x78]);
  const body = Buffer.from(payload.map((byte, i) => byte ^ mask[i % 4]!));
  return Buffer.concat([Buffer.from(header), mask, body]);
}

const uint32 = (value: number) => {
  const buffer = Buffer.alloc(4);
  buffer.writeUInt32BE(value >>> 0);
  return buffer;
};
const uint24 = (value: number) => Buffer.from([(value >> 16) & 0xff, (value >> 8) & 0xff, value & 0xff]);
const typeAndFlags = (type: number, flags: number) => Buffer.from([((type << 2) | (flags >> 8)) & 0xff, flags & 0xff]);

/** RSocket SETUP (stream 0, metadata flag) with the given metadata and MIME types. */
function setupFrame(metadata: Buffer, mime: string): Buffer {
  const mimeBytes = Buffer.from(mime);
  return Buffer.concat([
    uint32(0),
    typeAndFlags(0x01, 0x100),
    Buffer.from([0, 1, 0, 0]), // version 1.0
    uint32(20_000),
    uint32(60_000),
    Buffer.from([mimeBytes.length]),
    mimeBytes,
    Buffer.from([mimeBytes.length]),
    mimeBytes,
    uint24(metadata.length),
    metadata
  ]);
}

/** RSocket REQUEST_STREAM on `streamId` with metadata and data. */
function requestStreamFrame(streamId: number, requestN: number, metadata: Buffer, data: Buffer): Buffer {
  return Buffer.concat([
    uint32(streamId),
    typeAndFlags(0x06, 0x100),
    uint32(requestN),
    uint24(metadata.length),
    metadata,
    data
  ]);
}

/** Upgrades a raw socket to WebSocket, sends `frames`, and collects what comes back until close or `lingerMs` of quiet. */
function webSocketExchange(
  frames: Buffer[],
  handshake: Record<string, string>,
  lingerMs = 150
): Promise<{ upgraded: boolean; response: Buffer }> {
  const { hostname, port } = new URL(service.url);
  return new Promise((resolve) => {
    const socket = net.connect(Number(port), hostname);
    const received: Buffer[] = [];
    let upgraded = false;
    let quiet: NodeJS.Timeout | undefined;
    const finish = () => {
      clearTimeout(quiet);
      socket.destroy();
      resolve({ upgraded, response: Buffer.concat(received) });
    };
    const hardStop = setTimeout(finish, 10_000);
    socket.on('error', () => {});
    socket.on('close', () => {
      clearTimeout(hardStop);
      finish();
    });
    socket.on('data', (chunk) => {
      received.push(chunk);
      clearTimeout(quiet);
      quiet = setTimeout(finish, lingerMs);
      if (!upgraded && Buffer.concat(received).includes('\r\n\r\n')) {
        upgraded = Buffer.concat(received).toString('latin1').startsWith('HTTP/1.1 101');
        // Not upgraded: an ordinary HTTP answer (the request was not a valid upgrade); the frames are not sent.
        if (upgraded) for (const frame of frames) socket.write(frame);
      }
    });
    const headers = Object.entries(handshake)
      .map(([name, value]) => `${name}: ${value}\r\n`)
      .join('');
    socket.write(`GET /sync/stream HTTP/1.1\r\nHost: x\r\n${headers}\r\n`);
  });
}

/** Opcodes of the (unmasked) frames a server sent. */
function serverOpcodes(data: Buffer): number[] {
  const opcodes: number[] = [];
  let offset = 0;
  while (offset + 2 <= data.length) {
    opcodes.push(data[offset]! & 0x0f);
    let length = data[offset + 1]! & 0x7f;
    let header = 2;
    if (length === 126) [length, header] = [data.readUInt16BE(offset + 2), 4];
    else if (length === 127) [length, header] = [Number(data.readBigUInt64BE(offset + 2)), 10];
    offset += header + length;
  }
  return opcodes;
}

const VALID_HANDSHAKE = {
  Upgrade: 'websocket',
  Connection: 'Upgrade',
  'Sec-WebSocket-Key': 'dGhlIHNhbXBsZSBub25jZQ==',
  'Sec-WebSocket-Version': '13'
};

describe('hostile input to the WebSocket transport', () => {
  it('an RSocket frame of unknown type closes the connection (it used to crash the process)', async () => {
    const setup = setupFrame(Buffer.from(JSON.stringify({ token: `Token ${validToken}` })), 'application/json');
    for (const type of [0x00, 0x10, 0x3f]) {
      const unknown = Buffer.concat([uint32(0), typeAndFlags(type, 0), Buffer.alloc(8)]);
      for (const frames of [[unknown], [setup, unknown]]) {
        const { upgraded, response } = await webSocketExchange(
          frames.map((frame) => webSocketFrame(frame)),
          VALID_HANDSHAKE,
          500
        );
        expect(upgraded).toBe(true);
        // The server closes the WebSocket (a close frame, opcode 0x8, after the 101 answer).
        expect(serverOpcodes(response.subarray(response.indexOf('\r\n\r\n') + 4)), `type ${type}`).toContain(0x8);
        await expectAlive();
      }
    }
    expectNoUnexpectedErrors();
  });

  it('handshakes, frames and RSocket frames of any shape: the process stays up and logs no unexpected error', async () => {
    const metadataJson = fc.oneof(
      fc.constant(JSON.stringify({ token: 'Token {valid}', user_agent: 'fuzz' })),
      jsonValue.map((value) => JSON.stringify(value) ?? ''),
      fc
        .record(
          { token: fc.oneof(fc.constant('Token {valid}'), nastyString, edgyNumber), user_agent: nastyString },
          { requiredKeys: [] }
        )
        .map((value) => JSON.stringify(value))
    );
    const requestMetadata = fc.oneof(
      fc.constant('{"path":"/sync/stream"}'),
      jsonValue.map((value) => JSON.stringify(value) ?? ''),
      fc.constant('{"path":"/elsewhere"}')
    );
    const requestData = fc.oneof(
      fc.constant('{"buckets":[],"raw_data":true}'),
      jsonValue.map((value) => JSON.stringify(value) ?? ''),
      fc.string({ maxLength: 20 })
    );
    const rsocketFrame = fc.oneof(
      {
        weight: 3,
        arbitrary: fc
          .tuple(metadataJson, fc.constantFrom('application/json', 'application/bson', 'text/plain', ''))
          .map(([metadata, mime]) => setupFrame(Buffer.from(metadata.replace('{valid}', validToken)), mime))
      },
      {
        weight: 3,
        arbitrary: fc
          .tuple(
            fc.constantFrom(1, 2, 3, 0, 0x7fffffff),
            fc.constantFrom(0, 1, 10, 0x7fffffff, 0xffffffff),
            requestMetadata,
            requestData
          )
          .map(([streamId, requestN, metadata, data]) =>
            requestStreamFrame(streamId, requestN, Buffer.from(metadata), Buffer.from(data))
          )
      },
      // Any frame type (REQUEST_N, CANCEL, ERROR, KEEPALIVE, LEASE, METADATA_PUSH, EXT, unknown) with random flags and payload.
      {
        weight: 3,
        arbitrary: fc
          .tuple(
            fc.constantFrom(0, 1, 3, 0x7fffffff),
            fc.integer({ min: 0, max: 0x3f }),
            fc.integer({ min: 0, max: 0x3ff }),
            fc.uint8Array({ maxLength: 24 })
          )
          .map(([streamId, type, flags, rest]) =>
            Buffer.concat([uint32(streamId), typeAndFlags(type, flags), Buffer.from(rest)])
          )
      },
      { weight: 1, arbitrary: fc.uint8Array({ maxLength: 16 }).map((bytes) => Buffer.from(bytes)) }
    );
    // Mostly well-framed binary WebSocket messages; sometimes text, control, continuation or unmasked frames.
    const webSocketMessage = fc.oneof(
      { weight: 8, arbitrary: rsocketFrame.map((frame) => webSocketFrame(frame)) },
      {
        weight: 1,
        arbitrary: fc
          .tuple(rsocketFrame, fc.constantFrom(0x0, 0x1, 0x3, 0x8, 0x9, 0xa, 0xf), fc.boolean(), fc.boolean())
          .map(([frame, opcode, fin, masked]) => webSocketFrame(frame, { opcode, fin, masked }))
      },
      { weight: 1, arbitrary: fc.uint8Array({ minLength: 1, maxLength: 16 }).map((bytes) => Buffer.from(bytes)) }
    );
    const handshake = mostly(
      fc.constant(VALID_HANDSHAKE),
      fc.record(
        {
          ...Object.fromEntries(
            Object.keys(VALID_HANDSHAKE).map((key) => [
              key,
              mostly(
                fc.constant(VALID_HANDSHAKE[key as keyof typeof VALID_HANDSHAKE]),
                fc.stringMatching(/^[\x21-\x7e]{0,30}$/)
              )
            ])
          )
        },
        { requiredKeys: [] }
      )
    );
    let upgrades = 0;
    await expectNothingWritten(async () => {
      await fc.assert(
        fc.asyncProperty(
          handshake,
          fc.array(webSocketMessage, { minLength: 1, maxLength: 4 }),
          async (headers, messages) => {
            const { upgraded } = await webSocketExchange(messages, headers as Record<string, string>);
            if (upgraded) upgrades++;
            await expectAlive();
          }
        ),
        { ...fuzzOptions, numRuns: Math.ceil(RUNS / 2) }
      );
    });
    expectNoUnexpectedErrors();
    expect(upgrades).toBeGreaterThan(0);
    await waitForOpenStreams(0);
  }, 120_000);
});

async function waitForOpenStreams(count: number) {
  const deadline = Date.now() + 30_000;
  while (service.syncConnections!.count !== count) {
    if (Date.now() > deadline) throw new Error(`${service.syncConnections!.count} sync streams still open`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

// --- oversized and slow input (issue 7 item 3) -------------------------------------------------------------------

/**
 * A raw TCP exchange: writes `chunks` (a number = pause in ms), collects everything until the server closes (or, with
 * `untilAnswered`, until a complete response arrived).
 */
function rawExchange(
  url: string,
  chunks: Array<string | Buffer | number>,
  timeoutMs = 60_000,
  options: { untilAnswered?: boolean } = {}
): Promise<{ response: string; closedAfterMs: number }> {
  const { hostname, port } = new URL(url);
  const started = Date.now();
  return new Promise((resolve, reject) => {
    const socket = net.connect(Number(port), hostname);
    const received: Buffer[] = [];
    let closed = false;
    const timer = setTimeout(() => {
      socket.destroy();
      reject(
        new Error(
          `the server did not close the connection within ${timeoutMs} ms; got ${Buffer.concat(received).toString('latin1').slice(0, 300)}`
        )
      );
    }, timeoutMs);
    socket.on('data', (chunk) => {
      received.push(chunk);
      if (options.untilAnswered && completeResponse(Buffer.concat(received).toString('latin1'))) socket.destroy();
    });
    socket.on('error', () => {}); // a reset after the answer is fine: what matters is what was received
    socket.on('close', () => {
      closed = true;
      clearTimeout(timer);
      resolve({ response: Buffer.concat(received).toString('latin1'), closedAfterMs: Date.now() - started });
    });
    void (async () => {
      for (const chunk of chunks) {
        if (closed) return;
        if (typeof chunk === 'number') await new Promise((wake) => setTimeout(wake, chunk));
        else socket.write(chunk);
      }
    })();
  });
}

function completeResponse(response: string): boolean {
  const headerEnd = response.indexOf('\r\n\r\n');
  const length = /\r\ncontent-length: (\d+)/i.exec(response.slice(0, headerEnd));
  return headerEnd >= 0 && length !== null && response.length >= headerEnd + 4 + Number(length[1]);
}

/** Status and JSON body of a raw HTTP/1.1 response. */
function parseRawResponse(response: string): { status: number; json: ResponseJson } {
  const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(response)?.[1]);
  const body = response.slice(response.indexOf('\r\n\r\n') + 4);
  return { status, json: body ? (JSON.parse(body) as ResponseJson) : null };
}

describe('oversized input', () => {
  const cases: Array<[string, string, number]> = [
    ['POST', '/sync/checkpoint-request', 64 * 1024],
    ['POST', '/sync/stream', 2 * 1024 * 1024],
    ['POST', '/api/sync-rules/v1/validate', 1024 * 1024],
    ['POST', '/no/such/route', 64 * 1024]
  ];

  it.each(cases)(
    '%s %s: a body over %i bytes is refused with 413 PSYNC_S2005, nothing written',
    async (method, path, limit) => {
      const padding = 'x'.repeat(limit + 1);
      const body = Buffer.from(
        JSON.stringify({ client_id: 'big', checkpoint_request_id: '1', content: padding, parameters: { padding } })
      );
      for (const chunked of [false, true]) {
        const headers: Record<string, string> = {
          'content-type': 'application/json',
          authorization: `Token ${validToken}`
        };
        if (chunked) headers['transfer-encoding'] = 'chunked';
        else headers['content-length'] = String(body.length);
        const { response, json } = await sendChecked({ method, path, headers, body });
        expect(response.status).toBe(413);
        expect(json?.error).toMatchObject({ code: 'PSYNC_S2005', status: 413 });
      }
      await expectAlive();
    },
    60_000
  );

  it('a declared Content-Length over the limit: 413 at once, connection closed without reading the body', async () => {
    // Headers only: the server must not wait for 10 GB (body-parser alone would read them all before answering).
    const { response, closedAfterMs } = await rawExchange(
      service.url,
      [
        `POST /sync/checkpoint-request HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 10000000000\r\n\r\n`
      ],
      20_000
    );
    const { status, json } = parseRawResponse(response);
    expect(status).toBe(413);
    expect(json?.error).toMatchObject({ code: 'PSYNC_S2005', status: 413 });
    expect(closedAfterMs).toBeLessThan(10_000);
    await expectAlive();
  });

  it('a chunked body that grows past the limit and never ends: 413 at once, connection closed', async () => {
    const chunk = (data: string) => `${Buffer.byteLength(data).toString(16)}\r\n${data}\r\n`;
    const chunks: Array<string | number> = [
      `POST /sync/stream HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n`,
      chunk('{"padding":"')
    ];
    // 3 MiB over the 2 MiB limit, then 20 s more of trickle: the answer must come long before.
    for (let i = 0; i < 48; i++) chunks.push(chunk('x'.repeat(64 * 1024)));
    for (let i = 0; i < 200; i++) chunks.push(chunk('x'), 100);
    const { response, closedAfterMs } = await rawExchange(service.url, chunks, 30_000);
    const { status, json } = parseRawResponse(response);
    expect(status).toBe(413);
    expect(json?.error?.code).toBe('PSYNC_S2005');
    expect(closedAfterMs).toBeLessThan(15_000);
    await expectAlive();
  }, 40_000);

  it('a 64 KB Authorization header: 431 PSYNC_S2009, and the server stays up', async () => {
    for (const [name, value] of [
      ['authorization', `Token ${'x'.repeat(64 * 1024)}`],
      ['x-padding', 'y'.repeat(64 * 1024)]
    ]) {
      const { response } = await rawExchange(
        service.url,
        [`GET /write-checkpoint2.json HTTP/1.1\r\nHost: x\r\n${name}: ${value}\r\n\r\n`],
        30_000
      );
      const { status, json } = parseRawResponse(response);
      expect(status).toBe(431);
      expect(json?.error).toMatchObject({ code: 'PSYNC_S2009', status: 431 });
    }
    // A URL over the limit counts as headers too.
    const longUrl = await rawExchange(
      service.url,
      [`GET /write-checkpoint2.json?client_id=${'z'.repeat(64 * 1024)} HTTP/1.1\r\nHost: x\r\n\r\n`],
      30_000
    );
    expect(parseRawResponse(longUrl.response).status).toBe(431);
    await expectAlive();
  });

  it('malformed HTTP (bad request line, unknown method, bad header): 400 with the envelope, the server stays up', async () => {
    for (const request of [
      'GARBAGE\r\n\r\n',
      'FOO /probes/liveness HTTP/1.1\r\nHost: x\r\n\r\n',
      'GET /probes/liveness HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n',
      'GET /probes/liveness HTTP/9.9\r\nHost: x\r\n\r\n',
      'POST /sync/stream HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n',
      'POST /sync/stream HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nZZZ\r\n'
    ]) {
      const { response } = await rawExchange(service.url, [request], 30_000);
      const { status, json } = parseRawResponse(response);
      expect(status, request).toBe(400);
      expect(json?.error, request).toMatchObject({
        code: 'PSYNC_S2001',
        status: 400,
        description: 'Malformed HTTP request'
      });
    }
    await expectAlive();
  });
});

describe('slow clients are cut off by the server timeouts', () => {
  it('the service applies SERVER_TIMEOUTS (shorter than Node defaults)', () => {
    const server = minimalApp({}).listen(0, '127.0.0.1');
    try {
      expect(server.headersTimeout).toBe(SERVER_TIMEOUTS.headersTimeoutMs);
      expect(server.requestTimeout).toBe(SERVER_TIMEOUTS.requestTimeoutMs);
      expect(SERVER_TIMEOUTS.headersTimeoutMs).toBeLessThanOrEqual(15_000);
      expect(SERVER_TIMEOUTS.requestTimeoutMs).toBeLessThanOrEqual(60_000);
    } finally {
      server.close();
    }
  });

  // The same code path with the timeouts shortened, so the test does not wait a minute.
  const timeouts = { headersTimeoutMs: 1_000, requestTimeoutMs: 2_000, checkIntervalMs: 200 };
  let server: http.Server;
  let url: string;
  beforeAll(async () => {
    server = minimalApp(timeouts).listen(0, '127.0.0.1');
    await new Promise((resolve) => server.once('listening', resolve));
    url = `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`;
  });
  afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

  it('headers sent a byte at a time (slowloris): 408 PSYNC_S2010 and closed', async () => {
    const trickle = [...'GET /probes/liveness HTTP/1.1\r\nHost: x\r\nX-Slow: '].map((char) => char);
    const chunks: Array<string | number> = [];
    for (const char of trickle) chunks.push(char, 50);
    for (let i = 0; i < 200; i++) chunks.push('a', 100); // never ends (20 s) unless the server cuts it off
    const { response, closedAfterMs } = await rawExchange(url, chunks, 20_000);
    const { status, json } = parseRawResponse(response);
    expect(status).toBe(408);
    expect(json?.error).toMatchObject({ code: 'PSYNC_S2010', status: 408 });
    expect(closedAfterMs).toBeGreaterThanOrEqual(timeouts.headersTimeoutMs - 100);
    expect(closedAfterMs).toBeLessThan(10_000);
  });

  it('a body that never ends: 408 and closed', async () => {
    const chunks: Array<string | number> = [
      'POST /sync/checkpoint-request HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"client_id":'
    ];
    for (let i = 0; i < 200; i++) chunks.push(' ', 100);
    const { response, closedAfterMs } = await rawExchange(url, chunks, 20_000);
    const { status, json } = parseRawResponse(response);
    expect(status).toBe(408);
    expect(json?.error?.code).toBe('PSYNC_S2010');
    expect(closedAfterMs).toBeGreaterThanOrEqual(timeouts.requestTimeoutMs - 100);
    expect(closedAfterMs).toBeLessThan(10_000);
    // The server still answers.
    const probe = await rawExchange(
      url,
      ['GET /probes/liveness HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'],
      10_000
    );
    expect(parseRawResponse(probe.response).status).toBe(200);
  });
});

/** The HTTP app with probes only (no storage behind it): routes that would need more are never called. */
function minimalApp(serverTimeouts: Partial<typeof SERVER_TIMEOUTS>) {
  const probes = new ProbeState(false);
  probes.started = probes.ready = true;
  const unused = new Proxy({}, { get: () => () => Promise.reject(new Error('not used in this test')) });
  return createHttpApp({
    logger: createLogger({ level: 'silent' }),
    probes,
    verifier: unused as never,
    batcher: unused as never,
    serverTimeouts
  });
}
