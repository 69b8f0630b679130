import { createPublicKey, type KeyObject } from 'node:crypto';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import * as jose from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  dataOps,
  firstLinePart,
  writeCheckpointOf,
  type SyncLine,
  nowSeconds as now,
  rawHmacToken,
  rawToken,
  TEST_AUDIENCE,
  testHmacSecret,
  testJwks,
  testPublicJwk,
  testSigningKey,
  tokenClaims
} from '@syncpoint/test-fixtures';
import { startServiceHarness, watchMarkers, type ServiceHarness } from './service-harness.js';
import { openSyncStream } from './sync-stream-client.js';

/**
 * Client auth through real HTTP against the real service on embedded Postgres (PROTOCOL §3, §4.2): every kind of
 * rejected token gets 401 with its stable code on each client route and writes nothing; one user never receives
 * another's buckets nor touches another's checkpoint requests; a `jwks_uri` that changes or fails gives clear errors.
 */

// The harness's key (the test-fixtures `hs256` key), configured here next to the fixtures' RSA key.
const DEV_SECRET = testHmacSecret();
const DEV_KID = testPublicJwk('hs256').kid!;
const RSA_KID = testPublicJwk('rsa').kid!;

type SigningKey = jose.CryptoKey | KeyObject | Uint8Array;

/** A token of `alice` signed with any key material under any header: the attacks below need both free. */
function signToken(
  claims: Record<string, unknown> = {},
  header: Record<string, unknown> = { alg: 'HS256', kid: DEV_KID },
  key: SigningKey = DEV_SECRET
) {
  return new jose.SignJWT(tokenClaims({ sub: 'alice', claims }))
    .setProtectedHeader(header as jose.JWTHeaderParameters)
    .sign(key);
}

/** A loopback server recording every request; serves `jwks` at /jwks.json unless told to fail. */
async function startRecorder() {
  const state = {
    url: '',
    requests: [] as string[],
    jwks: { keys: [] as jose.JWK[] },
    failing: false,
    close: () => new Promise<void>((resolve) => (server.closeAllConnections(), server.close(() => resolve())))
  };
  const server = createServer((req, res) => {
    state.requests.push(`${req.method} ${req.url}`);
    if (req.url !== '/jwks.json') return res.writeHead(404).end();
    if (state.failing) return res.writeHead(503).end('identity provider down');
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(state.jwks));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  state.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return state;
}

type Recorder = Awaited<ReturnType<typeof startRecorder>>;

/** Hash of every row of every storage table: equal before and after ⇔ nothing was written. */
async function storageFingerprint(harness: ServiceHarness): Promise<Record<string, string>> {
  const { rows: tables } = await harness.storageDb.query<{ name: string }>(
    `SELECT quote_ident(table_name) AS name FROM information_schema.tables WHERE table_schema = 'powersync' ORDER BY 1`
  );
  const fingerprint: Record<string, string> = {};
  for (const { name } of tables) {
    const { rows } = await harness.storageDb.query<{ n: number; h: string }>(
      `SELECT count(*)::int AS n, md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) AS h FROM powersync.${name} t`
    );
    fingerprint[name] = `${rows[0]!.n}:${rows[0]!.h}`;
  }
  return fingerprint;
}

type ClientRoute = (harness: ServiceHarness, authorization: string | undefined) => Promise<Response>;

const authHeaders = (authorization: string | undefined): Record<string, string> =>
  authorization === undefined ? {} : { Authorization: authorization };

/** The three client routes, each with a request that is valid apart from its token. */
const CLIENT_ROUTES: Array<[string, ClientRoute]> = [
  [
    'POST /sync/stream',
    (harness, authorization) =>
      fetch(`${harness.service.url}/sync/stream`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', Accept: 'application/x-ndjson', ...authHeaders(authorization) },
        body: JSON.stringify({ client_id: 'device-1', raw_data: true, buckets: [] })
      })
  ],
  [
    'POST /sync/checkpoint-request',
    (harness, authorization) =>
      fetch(`${harness.service.url}/sync/checkpoint-request`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', ...authHeaders(authorization) },
        body: JSON.stringify({ client_id: 'device-1', checkpoint_request_id: '1' })
      })
  ],
  [
    'GET /write-checkpoint2.json',
    (harness, authorization) =>
      fetch(`${harness.service.url}/write-checkpoint2.json?client_id=device-1`, { headers: authHeaders(authorization) })
  ]
];

async function expectAuthRejection(response: Response, code: string) {
  const body = (await response.json()) as {
    error: { name: string; code: string; status: number; description: string };
  };
  expect(response.status).toBe(401);
  expect(body.error).toMatchObject({ name: 'AuthorizationError', code, status: 401 });
  expect(typeof body.error.description).toBe('string');
}

describe('rejected tokens over HTTP', () => {
  let harness: ServiceHarness;
  let markers: Awaited<ReturnType<typeof watchMarkers>>;
  let recorder: Recorder;
  const rsaPrivateKey = testSigningKey('rsa');
  const rsaJwk = testPublicJwk('rsa');

  beforeAll(async () => {
    recorder = await startRecorder();
    // API role: no replication, so storage and the source WAL change only if a request writes.
    harness = await startServiceHarness({
      role: 'api',
      config: { client_auth: { audience: [TEST_AUDIENCE], jwks: testJwks(['hs256', 'rsa']) } }
    });
    markers = await watchMarkers(harness.sourceDb, `auth_isolation_${process.pid}`);
  }, 60_000);
  afterAll(async () => {
    await markers?.drop();
    await harness?.stop();
    await recorder?.close();
  });

  /** [name, Authorization header (undefined = none), expected code] */
  async function attacks(): Promise<Array<[string, string | undefined, string]>> {
    const attacker = { privateKey: testSigningKey('attacker-rsa') };
    const attackerJwk = testPublicJwk('attacker-rsa', { kid: null, alg: null });
    const rsaPem = utf8(createPublicKey(rsaPrivateKey).export({ type: 'spki', format: 'pem' }) as string);
    const valid = () => tokenClaims({ sub: 'alice' });
    const token = async (claims: Record<string, unknown>, header?: Record<string, unknown>, key?: SigningKey) =>
      `Token ${await signToken(claims, header, key)}`;
    return [
      ['no Authorization header', undefined, 'PSYNC_S2106'],
      ['Basic credentials', 'Basic YWxpY2U6cGFzcw==', 'PSYNC_S2106'],
      ['alg none', `Token ${rawToken({ alg: 'none' }, valid())}`, 'PSYNC_S2101'],
      ['alg none naming the key', `Token ${rawToken({ alg: 'none', kid: DEV_KID }, valid())}`, 'PSYNC_S2101'],
      [
        'alg NONE with an HMAC signature',
        `Bearer ${rawHmacToken({ alg: 'NONE', kid: DEV_KID }, valid(), DEV_SECRET)}`,
        'PSYNC_S2101'
      ],
      ['wrong signature', await token({}, undefined, utf8('not-the-secret-but-32-bytes-long!')), 'PSYNC_S2101'],
      [
        'HS256 keyed with the RSA public key PEM, kid of the RSA key',
        await token({}, { alg: 'HS256', kid: RSA_KID }, rsaPem),
        'PSYNC_S2101'
      ],
      ['HS256 keyed with the RSA public key PEM, no kid', await token({}, { alg: 'HS256' }, rsaPem), 'PSYNC_S2101'],
      [
        'HS256 keyed with the RSA modulus n',
        await token({}, { alg: 'HS256', kid: RSA_KID }, utf8(rsaJwk.n!)),
        'PSYNC_S2101'
      ],
      [
        'HS256 keyed with the decoded RSA modulus',
        await token({}, { alg: 'HS256' }, jose.base64url.decode(rsaJwk.n!)),
        'PSYNC_S2101'
      ],
      ['kid naming no key', await token({}, { alg: 'HS256', kid: 'no-such-key' }), 'PSYNC_S2101'],
      [
        'kid with a path',
        await token({}, { alg: 'HS256', kid: '../../etc/passwd' }, utf8('root:x:0:0:root:/root:/bin/bash')),
        'PSYNC_S2101'
      ],
      [
        'kid as a URL',
        await token({}, { alg: 'RS256', kid: `${recorder.url}/key.pem` }, attacker.privateKey),
        'PSYNC_S2101'
      ],
      ['very long kid', await token({}, { alg: 'HS256', kid: 'k'.repeat(6_000) }), 'PSYNC_S2101'],
      ['kid with a NUL byte', await token({}, { alg: 'HS256', kid: `${DEV_KID}\u0000` }), 'PSYNC_S2101'],
      [
        'jku, x5u and an embedded jwk of the attacker',
        await token(
          {},
          { alg: 'RS256', jku: `${recorder.url}/jwks.json`, x5u: `${recorder.url}/cert.pem`, jwk: attackerJwk },
          attacker.privateKey
        ),
        'PSYNC_S2101'
      ],
      [
        'embedded jwk claiming the configured kid',
        await token({}, { alg: 'RS256', kid: RSA_KID, jwk: { ...attackerJwk, kid: RSA_KID } }, attacker.privateKey),
        'PSYNC_S2101'
      ],
      ['no sub', await token({ sub: undefined }), 'PSYNC_S2101'],
      ['empty sub', await token({ sub: '' }), 'PSYNC_S2101'],
      // Validly signed, but Postgres text cannot hold NUL: was a 500 on the checkpoint routes and a cut-off stream.
      ['sub with a NUL byte', await token({ sub: 'alice\u0000' }), 'PSYNC_S2101'],
      ['iat in the future beyond the skew', await token({ iat: now() + 300, exp: now() + 900 }), 'PSYNC_S2101'],
      ['nbf in the future', await token({ nbf: now() + 300 }), 'PSYNC_S2101'],
      ['no exp', await token({ exp: undefined }), 'PSYNC_S2101'],
      ['parameters claim not an object', await token({ parameters: 'admin' }), 'PSYNC_S2101'],
      ['expired beyond the skew', await token({ iat: now() - 3600, exp: now() - 300 }), 'PSYNC_S2103'],
      ['lifetime beyond the maximum', await token({ exp: now() + 86_400 + 600 }), 'PSYNC_S2104'],
      ['wrong audience', await token({ aud: 'some-other-service' }), 'PSYNC_S2105'],
      ['no audience', await token({ aud: undefined }), 'PSYNC_S2105']
    ];
  }

  it('answers each attack with 401 and its code on every client route, writing nothing and fetching nothing', async () => {
    const before = await storageFingerprint(harness);
    await markers.take();
    const cases = await attacks();
    for (const [name, authorization, code] of cases) {
      for (const [route, send] of CLIENT_ROUTES) {
        const response = await send(harness, authorization);
        await expect(expectAuthRejection(response, code), `${name} on ${route}`).resolves.toBeUndefined();
      }
    }
    expect(await storageFingerprint(harness)).toEqual(before);
    expect(await markers.take()).toBe(0);
    expect(recorder.requests).toEqual([]);
  });

  it('accepts the same requests with valid HS256 and RS256 tokens (the setup can say yes)', async () => {
    for (const authorization of [
      `Token ${await signToken()}`,
      `Bearer ${await signToken({}, { alg: 'RS256', kid: RSA_KID }, rsaPrivateKey)}`
    ]) {
      for (const [route, send] of CLIENT_ROUTES) {
        const response = await send(harness, authorization);
        expect(response.status, route).toBe(200);
        await response.body?.cancel();
      }
    }
    const { rows } = await harness.storageDb.query(`SELECT user_id FROM powersync.write_checkpoints`);
    expect(rows).toEqual([{ user_id: 'alice/device-1' }]);
  });

  describe('full user ids of users whose sub contains a slash', () => {
    // full_user_id = user_id + "/" + client_id (PROTOCOL §4.2) alone is not one-to-one when a sub contains "/": user
    // "alice/phone" without client_id and user "alice" with client_id "phone" would share one record (fullUserId).
    it('a user whose sub is "<B>/<B\'s client_id>" cannot advance B\'s checkpoint request', async () => {
      const headersFor = async (sub: string) => ({
        'Content-Type': 'application/json',
        Authorization: `Token ${await signToken({ sub })}`
      });
      const victim = await fetch(`${harness.service.url}/sync/checkpoint-request`, {
        method: 'POST',
        headers: await headersFor('alice'),
        body: JSON.stringify({ client_id: 'phone', checkpoint_request_id: '5' })
      });
      expect(await victim.json()).toEqual({ data: { checkpoint_request_id: '5' } });
      const attacker = await fetch(`${harness.service.url}/write-checkpoint2.json`, {
        headers: await headersFor('alice/phone')
      });
      expect(attacker.status).toBeLessThan(500);
      const { rows } = await harness.storageDb.query(
        `SELECT write_checkpoint::text AS id FROM powersync.write_checkpoints WHERE user_id = 'alice/phone'`
      );
      expect(rows).toEqual([{ id: '5' }]);
      // The attacker got a record of its own.
      const { rows: own } = await harness.storageDb.query(
        `SELECT write_checkpoint::text AS id FROM powersync.write_checkpoints WHERE user_id = 'alice/phone/'`
      );
      expect(own).toEqual([{ id: '1' }]);
    });
  });
});

describe('cross-user isolation', () => {
  let harness: ServiceHarness;
  const tokenFor = (sub: string, claims: Record<string, unknown> = {}) => signToken({ sub, ...claims });

  beforeAll(async () => {
    harness = await startServiceHarness({
      role: 'unified',
      sourceSetup: [
        `ALTER TABLE todos ADD COLUMN list_id text`,
        `CREATE TABLE notes (id text PRIMARY KEY, owner text, body text)`,
        `CREATE TABLE lists (id text PRIMARY KEY, owner_id text)`,
        `INSERT INTO notes VALUES ('n-alice-1', 'alice', 'a1'), ('n-alice-2', 'alice', 'a2'), ('n-bob-1', 'bob', 'b1'), ('n-bob-2', 'bob', 'b2')`,
        `INSERT INTO lists VALUES ('l-alice', 'alice'), ('l-bob', 'bob')`,
        `INSERT INTO todos VALUES ('t-alice', 'alice todo', 'l-alice'), ('t-bob', 'bob todo', 'l-bob')`
      ],
      syncConfig: `
bucket_definitions:
  by_user:
    parameters: SELECT request.user_id() AS user_id
    data:
      - SELECT id, owner, body FROM notes WHERE owner = bucket.user_id
  by_token:
    parameters: SELECT token_parameters.user_id AS user_id
    data:
      - SELECT id, owner_id FROM lists WHERE owner_id = bucket.user_id
  by_list:
    parameters: SELECT id AS list_id FROM lists WHERE owner_id = request.user_id()
    data:
      - SELECT id, description, list_id FROM todos WHERE list_id = bucket.list_id
`
    });
    const deadline = Date.now() + 60_000;
    while (!(await harness.service.storage.getServingCheckpoint())) {
      if (Date.now() > deadline) throw new Error('replication did not reach a first checkpoint');
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }, 90_000);
  afterAll(async () => harness?.stop());

  const bucketsOf = (lines: SyncLine[]) =>
    firstLinePart(lines, 'checkpoint')
      .buckets.map((bucket) => bucket.bucket)
      .sort();
  const objectIds = (lines: SyncLine[]) => dataOps(lines).map((op) => op.object_id);

  it("never sends user B's buckets to user A, whatever A puts in its request or token parameters", async () => {
    const bob = await openSyncStream(harness.service.url, await tokenFor('bob'), {
      client_id: 'bob-phone',
      raw_data: true
    });
    // Alice asks for Bob's buckets every way a client can: client parameters, claimed bucket positions, and a token
    // whose `parameters` claim says user_id bob (token_parameters.user_id is the sub, not that claim).
    const alice = await openSyncStream(
      harness.service.url,
      await tokenFor('alice', { parameters: { user_id: 'bob', owner: 'bob' } }),
      {
        client_id: 'alice-phone',
        raw_data: true,
        parameters: { user_id: 'bob', owner: 'bob', list_id: 'l-bob' },
        buckets: [
          { name: 'by_user["bob"]', after: '0' },
          { name: 'by_list["l-bob"]', after: '0' },
          { name: 'by_token["bob"]', after: '0' }
        ]
      }
    );
    try {
      expect([alice.response.status, bob.response.status]).toEqual([200, 200]);
      const aliceLines = await alice.until((line) => 'checkpoint_complete' in line, 30_000);
      const bobLines = await bob.until((line) => 'checkpoint_complete' in line, 30_000);
      expect(bucketsOf(aliceLines)).toEqual(['by_list["l-alice"]', 'by_token["alice"]', 'by_user["alice"]']);
      expect(objectIds(aliceLines).sort()).toEqual(['l-alice', 'n-alice-1', 'n-alice-2', 't-alice']);
      // Bob's data is there to be leaked: his own stream gets it.
      expect(bucketsOf(bobLines)).toEqual(['by_list["l-bob"]', 'by_token["bob"]', 'by_user["bob"]']);
      expect(objectIds(bobLines).sort()).toEqual(['l-bob', 'n-bob-1', 'n-bob-2', 't-bob']);

      // Live changes: Bob's note first, then Alice's; once Alice sees hers, Bob's change has passed her by.
      await harness.sourceDb.query(`INSERT INTO notes VALUES ('n-bob-3', 'bob', 'b3')`);
      await harness.sourceDb.query(`INSERT INTO notes VALUES ('n-alice-3', 'alice', 'a3')`);
      const aliceLive = await alice.until((line) => objectIds([line]).includes('n-alice-3'), 30_000);
      aliceLive.push(...(await alice.until((line) => 'checkpoint_complete' in line, 30_000)));
      await bob.until((line) => objectIds([line]).includes('n-bob-3'), 30_000);
      const everything = JSON.stringify([...aliceLines, ...aliceLive]);
      expect(everything).not.toMatch(/bob/);
      expect(objectIds(aliceLive)).toEqual(['n-alice-3']);
    } finally {
      await alice.close();
      await bob.close();
    }
  });

  it("cannot acknowledge or read user B's checkpoint requests with B's client_id", async () => {
    const storedIds = async () => {
      const { rows } = await harness.storageDb.query<{ user_id: string; id: string }>(
        `SELECT user_id, write_checkpoint::text AS id FROM powersync.write_checkpoints WHERE user_id LIKE '%/shared-device' ORDER BY user_id`
      );
      return Object.fromEntries(rows.map((row) => [row.user_id, row.id]));
    };
    const requestCheckpoint = async (sub: string, id: string) => {
      const response = await fetch(`${harness.service.url}/sync/checkpoint-request`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', Authorization: `Token ${await tokenFor(sub)}` },
        body: JSON.stringify({ client_id: 'shared-device', checkpoint_request_id: id })
      });
      expect(response.status).toBe(200);
      return ((await response.json()) as { data: { checkpoint_request_id: string } }).data.checkpoint_request_id;
    };
    const writeCheckpoints = (lines: SyncLine[]) =>
      lines.map((line) => writeCheckpointOf(line)).filter((id) => id !== undefined);

    const bob = await openSyncStream(harness.service.url, await tokenFor('bob'), {
      client_id: 'shared-device',
      raw_data: true
    });
    const alice = await openSyncStream(harness.service.url, await tokenFor('alice'), {
      client_id: 'shared-device',
      raw_data: true
    });
    try {
      const bobLines = await bob.until((line) => 'checkpoint_complete' in line, 30_000);
      const aliceLines = await alice.until((line) => 'checkpoint_complete' in line, 30_000);

      expect(await requestCheckpoint('bob', '5')).toBe('5');
      bobLines.push(...(await bob.until((line) => writeCheckpoints([line]).includes('5'), 30_000)));

      // A stale id would be answered with the stored one (§4.3): Alice's answer shows she does not see Bob's 5.
      expect(await requestCheckpoint('alice', '1')).toBe('1');
      expect(await requestCheckpoint('alice', '1000')).toBe('1000');
      const legacy = await fetch(`${harness.service.url}/write-checkpoint2.json?client_id=shared-device`, {
        headers: { Authorization: `Token ${await tokenFor('alice')}` }
      });
      expect(await legacy.json()).toEqual({ data: { write_checkpoint: '1001' } });
      expect(await storedIds()).toEqual({ 'alice/shared-device': '1001', 'bob/shared-device': '5' });

      // Bob's next request still advances from his own 5: had Alice's 1000 reached his record, he would get 1000.
      expect(await requestCheckpoint('bob', '6')).toBe('6');
      bobLines.push(...(await bob.until((line) => writeCheckpoints([line]).includes('6'), 30_000)));
      aliceLines.push(...(await alice.until((line) => writeCheckpoints([line]).includes('1001'), 30_000)));
      expect(new Set(writeCheckpoints(bobLines))).toEqual(new Set(['5', '6']));
      expect(writeCheckpoints(aliceLines)).not.toContain('5');
      expect(writeCheckpoints(aliceLines)).not.toContain('6');
      expect(await storedIds()).toEqual({ 'alice/shared-device': '1001', 'bob/shared-device': '6' });
    } finally {
      await alice.close();
      await bob.close();
    }
  });
});

describe('keys from a jwks_uri', () => {
  let harness: ServiceHarness;
  let recorder: Recorder;
  const first = { privateKey: testSigningKey('rsa') };
  const second = { privateKey: testSigningKey('ec-p256') };
  const publicJwk = (name: 'rsa' | 'ec-p256', kid: string) => testPublicJwk(name, { kid });

  beforeAll(async () => {
    recorder = await startRecorder();
    recorder.failing = true;
    harness = await startServiceHarness({
      role: 'api',
      config: { client_auth: { audience: [TEST_AUDIENCE], jwks_uri: `${recorder.url}/jwks.json` } }
    });
  }, 60_000);
  afterAll(async () => {
    await harness?.stop();
    await recorder?.close();
  });

  const checkpointRequest = (authorization: string) =>
    fetch(`${harness.service.url}/sync/checkpoint-request`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', Authorization: authorization },
      body: JSON.stringify({ client_id: 'jwks-device', checkpoint_request_id: '1' })
    });
  const rsaToken = async (sub: string, kid = 'k1') =>
    `Token ${await signToken({ sub }, { alg: 'RS256', kid }, first.privateKey)}`;
  const ecToken = async (sub: string) =>
    `Token ${await signToken({ sub }, { alg: 'ES256', kid: 'k2' }, second.privateKey)}`;
  const probe = async () => (await fetch(`${harness.service.url}/probes/liveness`)).status;
  /** Retries while the key set refresh is rate-limited (one refresh per ~6 s on unknown kids). */
  async function eventually(what: string, attempt: () => Promise<boolean>) {
    const deadline = Date.now() + 40_000;
    while (!(await attempt())) {
      if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
      await new Promise((resolve) => setTimeout(resolve, 500));
    }
  }

  it('an unreachable, then changing key set: clear 401s, keys follow the set, the service stays up', async () => {
    // The identity provider is down before the first fetch: 401 PSYNC_S2204 naming the URL; nothing stored.
    const down = await checkpointRequest(await rsaToken('alice'));
    const downBody = (await down.clone().json()) as { error: { details?: string } };
    await expectAuthRejection(down, 'PSYNC_S2204');
    expect(downBody.error.details).toContain(recorder.url);
    expect(await probe()).toBe(200);

    // It comes back with k1: tokens of k1 verify once the (rate-limited) refetch happened.
    recorder.jwks = { keys: [publicJwk('rsa', 'k1')] };
    recorder.failing = false;
    await eventually(
      'a k1 token is accepted',
      async () => (await checkpointRequest(await rsaToken('alice'))).status === 200
    );

    // Rotation: k1 is replaced by k2. k2 tokens verify after the refresh an unknown kid triggers; new k1 tokens fail.
    recorder.jwks = { keys: [publicJwk('ec-p256', 'k2')] };
    await eventually(
      'a k2 token is accepted',
      async () => (await checkpointRequest(await ecToken('bob'))).status === 200
    );
    await expectAuthRejection(await checkpointRequest(await rsaToken('carol')), 'PSYNC_S2101');

    // Down again: the known k2 keeps working, an unknown kid is a plain 401, the service keeps serving.
    recorder.failing = true;
    expect((await checkpointRequest(await ecToken('dave'))).status).toBe(200);
    await expectAuthRejection(await checkpointRequest(await rsaToken('erin', 'k9')), 'PSYNC_S2101');
    expect(await probe()).toBe(200);

    const { rows } = await harness.storageDb.query<{ user_id: string }>(
      `SELECT user_id FROM powersync.write_checkpoints ORDER BY user_id`
    );
    expect(rows.map((row) => row.user_id)).toEqual(['alice/jwks-device', 'bob/jwks-device', 'dave/jwks-device']);
    // Only the configured URL was ever requested.
    expect(new Set(recorder.requests)).toEqual(new Set(['GET /jwks.json']));
  });
});

function utf8(text: string): Uint8Array {
  return new TextEncoder().encode(text);
}
