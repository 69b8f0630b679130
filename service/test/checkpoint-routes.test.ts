import { HOSTILE_TOKEN_ERROR_CODES, hostileTokens, type HostileTokenKind } from '@syncpoint/test-fixtures';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startServiceHarness, watchMarkers, type ServiceHarness } from './service-harness.js';

let harness: ServiceHarness;
let markers: Awaited<ReturnType<typeof watchMarkers>>;
let token: string;

beforeAll(async () => {
  harness = await startServiceHarness();
  markers = await watchMarkers(harness.sourceDb, 'routes_test');
  token = await harness.token('user-1');
});
afterAll(async () => {
  await markers?.drop();
  await harness?.stop();
});

function post(body: string | object, headers: Record<string, string> = {}) {
  return fetch(`${harness.service.url}/sync/checkpoint-request`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', Authorization: `Token ${token}`, ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body)
  });
}

// `expect.any` is typed `any`; held as `unknown` it can sit in an expected object without an unsafe assignment.
const anyString: unknown = expect.any(String);

async function storedRecords() {
  const { rows } = await harness.storageDb.query<{ user_id: string; id: string; head: string | null }>(
    `SELECT user_id, write_checkpoint::text AS id, lsns->>'1' AS head FROM powersync.write_checkpoints ORDER BY user_id`
  );
  return rows;
}

/** Expect the response to be a 4xx error envelope with `code`, and storage and the source WAL untouched. */
async function expectRejected(send: () => Promise<Response>, status: number, code: string) {
  const before = await storedRecords();
  await markers.take();
  const response = await send();
  expect(response.status).toBe(status);
  const body = (await response.json()) as { error: Record<string, unknown> };
  expect(body.error).toMatchObject({ code, status });
  expect(typeof body.error.description).toBe('string');
  expect(await storedRecords()).toEqual(before);
  expect(await markers.take()).toBe(0);
  return body.error;
}

describe('POST /sync/checkpoint-request', () => {
  it('stores the request and answers with the stored id (PROTOCOL §4.3 table)', async () => {
    const ask = async (id: unknown) =>
      ((await (await post({ client_id: 'c1', checkpoint_request_id: id })).json()) as { data: unknown }).data;
    expect(await ask('42')).toEqual({ checkpoint_request_id: '42' });
    expect(await ask(43)).toEqual({ checkpoint_request_id: '43' });
    expect(await ask('43')).toEqual({ checkpoint_request_id: '43' });
    expect(await ask('7')).toEqual({ checkpoint_request_id: '43' });
    expect(await ask('9223372036854775807')).toEqual({ checkpoint_request_id: '9223372036854775807' });
    expect(await storedRecords()).toContainEqual({
      user_id: 'user-1/c1',
      id: '9223372036854775807',
      head: anyString
    });
  });

  it('ignores extra fields and takes query parameters, the body winning', async () => {
    const response = await fetch(
      `${harness.service.url}/sync/checkpoint-request?client_id=from-query&checkpoint_request_id=1`,
      {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${token}` },
        body: JSON.stringify({ checkpoint_request_id: '5', extra: { nested: true } })
      }
    );
    expect(await response.json()).toEqual({ data: { checkpoint_request_id: '5' } });
    expect(await storedRecords()).toContainEqual({ user_id: 'user-1/from-query', id: '5', head: anyString });
  });

  it.each([
    0,
    -1,
    1.5,
    '1.5',
    '1e3',
    'abc',
    '',
    ' 42',
    '+42',
    '0x10',
    true,
    null,
    [1],
    { id: 1 },
    '9223372036854775808',
    9223372036854775808,
    2 ** 53 + 1
  ])('rejects checkpoint_request_id %j with 400 and writes nothing', async (id) => {
    const error = await expectRejected(
      () => post({ client_id: 'c-bad', checkpoint_request_id: id }),
      400,
      'PSYNC_S2001'
    );
    expect(error.details).toContain('between 1 and 9223372036854775807');
  });

  it('rejects 2^53+1 written as a raw JSON number (it would round)', async () => {
    await expectRejected(
      () => post('{"client_id":"c-bad","checkpoint_request_id":9007199254740993}'),
      400,
      'PSYNC_S2001'
    );
  });

  it('rejects a missing checkpoint_request_id', async () => {
    const error = await expectRejected(() => post({ client_id: 'c-bad' }), 400, 'PSYNC_S2001');
    expect(error.details).toContain('checkpoint_request_id is required');
  });

  it.each([
    [undefined, 'client_id is required'],
    ['', 'client_id must not be empty'],
    [17, 'client_id must be a string'],
    [{ a: 1 }, 'client_id must be a string'],
    ['x'.repeat(257), 'at most 256 characters'],
    ['a/b', 'must not contain a slash'],
    ['a\nb', 'control characters']
  ])('rejects client_id %j', async (clientId, message) => {
    const error = await expectRejected(
      () => post({ client_id: clientId, checkpoint_request_id: '1' }),
      400,
      'PSYNC_S2001'
    );
    expect(error.details).toContain(message);
  });

  it.each(['not json', '{"client_id": ', '[1,2]', '"a string"', '42', 'null'])('rejects the body %j', async (body) => {
    await expectRejected(() => post(body), 400, 'PSYNC_S2001');
  });

  it('rejects a body that is not declared as JSON', async () => {
    const error = await expectRejected(
      () => post(JSON.stringify({ client_id: 'c', checkpoint_request_id: '1' }), { 'Content-Type': 'text/plain' }),
      400,
      'PSYNC_S2001'
    );
    expect(error.details).toContain('Content-Type: application/json');
  });

  it('rejects a body over the limit with 413', async () => {
    await expectRejected(
      () => post({ client_id: 'c', checkpoint_request_id: '1', padding: 'x'.repeat(100_000) }),
      413,
      'PSYNC_S2005'
    );
  });

  it('validates the body before authentication', async () => {
    await expectRejected(() => post({ client_id: 'c' }, { Authorization: '' }), 400, 'PSYNC_S2001');
  });

  describe('authentication', () => {
    const body = { client_id: 'c-auth', checkpoint_request_id: '1' };
    const rejectsToken = (token: string, code: string) =>
      expectRejected(() => post(body, { Authorization: `Token ${token}` }), 401, code);

    it('no token: 401 PSYNC_S2106', async () => {
      await expectRejected(() => post(body, { Authorization: '' }), 401, 'PSYNC_S2106');
      await expectRejected(() => post(body, { Authorization: 'Basic dXNlcjpwYXNz' }), 401, 'PSYNC_S2106');
    });
    it('malformed token: 401 PSYNC_S2101', async () => {
      await rejectsToken('not.a.jwt', 'PSYNC_S2101');
    });
    // Every hostile token of the fixtures: wrong key, alg none, expired, wrong aud, unknown kid, lifetime over the
    // maximum, missing sub/exp, not yet valid, tampered signature.
    for (const kind of Object.keys(hostileTokens) as HostileTokenKind[]) {
      it(`${kind}: 401 ${HOSTILE_TOKEN_ERROR_CODES[kind]}`, async () => {
        await rejectsToken(await hostileTokens[kind](), HOSTILE_TOKEN_ERROR_CODES[kind]);
      });
    }
  });
});

/**
 * `POST /sync/checkpoint-request` in its usual shape takes a fast path before Express's generic chain (issue 14). The
 * same request to `/sync/checkpoint-request/` (Express routes it to the same handler, the fast path only takes the
 * exact path) goes through the generic chain: both must answer alike — status, body and headers — for every input.
 */
describe('fast path and generic chain answer alike', () => {
  const IGNORED_HEADERS = new Set(['date', 'x-request-id', 'connection', 'keep-alive']);
  async function answer(path: string, body: string, headers: Record<string, string>) {
    const response = await fetch(`${harness.service.url}${path}`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', Authorization: `Token ${token}`, ...headers },
      body
    });
    expect(response.headers.get('x-request-id')).toMatch(/^[0-9a-f]{8}-[0-9a-z]+$/);
    const kept = [...response.headers].filter(([name]) => !IGNORED_HEADERS.has(name));
    return { status: response.status, headers: Object.fromEntries(kept), body: await response.text() };
  }
  async function expectAlike(body: (path: string) => string, headers: Record<string, string> = {}) {
    const fast = await answer('/sync/checkpoint-request', body('fast'), headers);
    const generic = await answer('/sync/checkpoint-request/', body('generic'), headers);
    expect(fast).toEqual(generic);
    return fast;
  }
  const valid = (clientId: string) => JSON.stringify({ client_id: `alike-${clientId}`, checkpoint_request_id: '3' });

  it('a stored request', async () => {
    const fast = await expectAlike(valid);
    expect(fast.status).toBe(200);
    expect(JSON.parse(fast.body)).toEqual({ data: { checkpoint_request_id: '3' } });
    expect(await storedRecords()).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ user_id: 'user-1/alike-fast', id: '3' }),
        expect.objectContaining({ user_id: 'user-1/alike-generic', id: '3' })
      ])
    );
  });

  it.each([
    ['invalid JSON', 'not json'],
    ['truncated JSON', '{"client_id": '],
    ['empty body (read as {})', ''],
    ['an array', '[1,2]'],
    ['null', 'null'],
    ['a number', '42'],
    ['a missing id', '{"client_id":"c"}'],
    ['a bad id', '{"client_id":"c","checkpoint_request_id":"0"}'],
    ['a bad client_id', '{"client_id":"a/b","checkpoint_request_id":"1"}'],
    ['a body over the limit', JSON.stringify({ client_id: 'c', checkpoint_request_id: '1', pad: 'x'.repeat(100_000) })]
  ])('%s', async (_name, body) => {
    const fast = await expectAlike(() => body);
    expect(fast.status).toBeGreaterThanOrEqual(400);
    expect(fast.status).toBeLessThan(500);
  });

  it('a body with a byte-order mark', async () => {
    expect((await expectAlike((path) => `\ufeff${valid(`bom-${path}`)}`)).status).toBe(200);
  });

  it('the content type with a charset, or a charset it cannot read', async () => {
    const utf8 = await expectAlike((path) => valid(`cs-${path}`), {
      'Content-Type': 'application/json; charset=UTF-8'
    });
    expect(utf8.status).toBe(200);
    const latin1 = await expectAlike(valid, { 'Content-Type': 'application/json; charset=ascii' });
    expect(latin1.status).toBe(415);
  });

  it('no token, a malformed one and every hostile one', async () => {
    expect((await expectAlike(valid, { Authorization: '' })).status).toBe(401);
    expect((await expectAlike(valid, { Authorization: 'Token not.a.jwt' })).status).toBe(401);
    for (const kind of Object.keys(hostileTokens) as HostileTokenKind[]) {
      const hostile = await hostileTokens[kind]();
      const answered = await expectAlike(valid, { Authorization: `Token ${hostile}` });
      expect(JSON.parse(answered.body)).toMatchObject({ error: { code: HOSTILE_TOKEN_ERROR_CODES[kind] } });
    }
  });

  it('a body that arrives in pieces', async () => {
    const { request } = await import('node:http');
    const body = valid('pieces');
    const url = new URL(`${harness.service.url}/sync/checkpoint-request`);
    const answered = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = request(
        url,
        {
          method: 'POST',
          headers: {
            'Content-Type': 'application/json',
            'Content-Length': String(body.length),
            Authorization: `Token ${token}`
          }
        },
        (res) => {
          let text = '';
          res.on('data', (chunk: Buffer) => (text += chunk.toString()));
          res.on('end', () => resolve({ status: res.statusCode!, body: text }));
        }
      );
      req.on('error', reject);
      req.write(body.slice(0, 10));
      setImmediate(() => req.end(body.slice(10)));
    });
    expect(answered).toEqual({ status: 200, body: JSON.stringify({ data: { checkpoint_request_id: '3' } }) });
  });
});

describe('GET /write-checkpoint2.json', () => {
  const get = (query: string, headers: Record<string, string> = { Authorization: `Token ${token}` }) =>
    fetch(`${harness.service.url}/write-checkpoint2.json${query}`, { headers });

  it('generates increasing ids per full user id, continuing from supplied ones', async () => {
    expect(await (await get('?client_id=legacy')).json()).toEqual({ data: { write_checkpoint: '1' } });
    expect(await (await get('?client_id=legacy')).json()).toEqual({ data: { write_checkpoint: '2' } });
    expect(await (await get('')).json()).toEqual({ data: { write_checkpoint: '1' } });
    await post({ client_id: 'legacy', checkpoint_request_id: '10' });
    expect(await (await get('?client_id=legacy')).json()).toEqual({ data: { write_checkpoint: '11' } });
  });

  it('always emits a marker', async () => {
    await markers.take();
    await get('?client_id=legacy');
    expect(await markers.take()).toBe(1);
  });

  it('rejects a bad client_id and a missing token without writing', async () => {
    await expectRejected(() => get('?client_id=a/b'), 400, 'PSYNC_S2001');
    await expectRejected(() => get(`?client_id=${'x'.repeat(300)}`), 400, 'PSYNC_S2001');
    await expectRejected(() => get('?client_id=ok', {}), 401, 'PSYNC_S2106');
  });
});

describe('other routes', () => {
  it('answers unknown routes with 404 PSYNC_S2002', async () => {
    const response = await fetch(`${harness.service.url}/sync/nope`);
    expect(response.status).toBe(404);
    expect(((await response.json()) as { error: { code: string } }).error.code).toBe('PSYNC_S2002');
  });

  it('answers CORS preflight', async () => {
    const response = await fetch(`${harness.service.url}/sync/checkpoint-request`, { method: 'OPTIONS' });
    expect(response.status).toBe(204);
    expect(response.headers.get('access-control-allow-origin')).toBe('*');
    expect(response.headers.get('access-control-allow-headers')).toContain('Authorization');
    expect(response.headers.get('access-control-max-age')).toBe('3600');
  });

  it('serves the probes', async () => {
    for (const probe of ['startup', 'readiness', 'liveness']) {
      const response = await fetch(`${harness.service.url}/probes/${probe}`);
      expect(response.status).toBe(200);
      expect(await response.json()).toMatchObject({ ready: true, started: true });
    }
  });
});

describe('without a sync config', () => {
  it('answers checkpoint requests with 500 PSYNC_S2302 and stores nothing', async () => {
    const bare = await startServiceHarness({ syncConfig: null });
    try {
      const response = await fetch(`${bare.service.url}/sync/checkpoint-request`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', Authorization: `Token ${await bare.token('u')}` },
        body: JSON.stringify({ client_id: 'c', checkpoint_request_id: '1' })
      });
      expect(response.status).toBe(500);
      expect(((await response.json()) as { error: { code: string } }).error.code).toBe('PSYNC_S2302');
      const { rows } = await bare.storageDb.query<{ n: number }>(
        'SELECT count(*)::int AS n FROM powersync.write_checkpoints'
      );
      expect(rows[0]!.n).toBe(0);
    } finally {
      await bare.stop();
    }
  });
});
