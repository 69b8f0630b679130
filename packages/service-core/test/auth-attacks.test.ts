import { createHmac, createPublicKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import * as jose from 'jose';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { createTokenVerifier, RemoteJwks, ServiceError, TokenVerifier } from '../src/index.js';

/**
 * Attacks on client token verification (PROTOCOL §3), beyond the basic cases of token-verifier.test.ts: algorithm
 * confusion, hostile `kid`/`jku`/`x5u`/`jwk` headers (with a loopback server that records every request, to prove
 * nothing is fetched), claim edge cases at the clock-skew boundaries, and a `jwks_uri` that changes or fails.
 */

const AUDIENCE = 'syncpoint-test';
const hmacSecret = new TextEncoder().encode('a-development-secret-of-32-bytes!');
const hmacJwk = { kty: 'oct' as const, alg: 'HS256', kid: 'hmac', k: jose.base64url.encode(hmacSecret) };
const now = () => Math.floor(Date.now() / 1000);
const utf8 = (text: string) => new TextEncoder().encode(text);

let rsa: jose.GenerateKeyPairResult;
/** The RSA public key as configured: with `kid` and `alg`. */
let rsaJwk: jose.JWK;
/** A second RSA key configured as a wildcard: no `kid`, no `alg` (family matching, PROTOCOL §3.2). Node key objects, so
 * one private key can sign with every RS* algorithm. */
let wildcardRsa: { publicKey: KeyObject; privateKey: KeyObject };
let wildcardRsaJwk: jose.JWK;
let hmacVerifier: TokenVerifier;
let rsaVerifier: TokenVerifier;

async function sign(
  key: jose.CryptoKey | KeyObject | Uint8Array,
  header: Record<string, unknown>,
  claims: Record<string, unknown> = {}
): Promise<string> {
  return new jose.SignJWT({ sub: 'user-1', aud: AUDIENCE, iat: now(), exp: now() + 600, ...claims })
    .setProtectedHeader(header as jose.JWTHeaderParameters)
    .sign(key);
}

const hmacToken = (
  claims: Record<string, unknown> = {},
  header: Record<string, unknown> = { alg: 'HS256', kid: 'hmac' }
) => sign(hmacSecret, header, claims);

/** A compact JWS assembled by hand, for headers jose refuses to produce. */
function rawToken(header: object, payload: object, signature = ''): string {
  const part = (value: object) => jose.base64url.encode(JSON.stringify(value));
  return `${part(header)}.${part(payload)}.${signature}`;
}

/** `rawToken` with a valid HS256 signature by `secret`, whatever the header says. */
function rawHmacToken(header: object, payload: object, secret = hmacSecret): string {
  const unsigned = rawToken(header, payload).slice(0, -1);
  return `${unsigned}.${createHmac('sha256', secret).update(unsigned).digest('base64url')}`;
}

async function rejection(verifier: TokenVerifier, token: string): Promise<ServiceError> {
  const error = await verifier.verify(token).then(
    (payload) => new Error(`accepted, user ${payload.userId}`),
    (e: unknown) => e
  );
  expect(error).toBeInstanceOf(ServiceError);
  return error as ServiceError;
}

async function expectRejected(verifier: TokenVerifier, token: string, code: string): Promise<ServiceError> {
  const error = await rejection(verifier, token);
  expect({ status: error.status, code: error.code }).toEqual({ status: 401, code });
  return error;
}

/** A loopback HTTP server that records every request and serves a JWKS at /jwks.json (or fails, as told). */
interface RecordingServer {
  url: string;
  requests: string[];
  jwks: { keys: jose.JWK[] };
  mode: 'ok' | 'error' | 'garbage' | 'hang';
  close(): Promise<void>;
}

async function startRecordingServer(): Promise<RecordingServer> {
  const hanging: Array<() => void> = [];
  const state: RecordingServer = {
    url: '',
    requests: [],
    jwks: { keys: [] },
    mode: 'ok',
    close: async () => {
      for (const release of hanging) release();
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
  };
  const server: Server = createServer((req, res) => {
    state.requests.push(`${req.method} ${req.url}`);
    if (req.url !== '/jwks.json') return res.writeHead(404).end();
    if (state.mode === 'hang') return void hanging.push(() => res.destroy());
    if (state.mode === 'error') return res.writeHead(503).end('down');
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(state.mode === 'garbage' ? '<html>not json' : JSON.stringify(state.jwks));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  state.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return state;
}

let recorder: RecordingServer;

beforeAll(async () => {
  rsa = await jose.generateKeyPair('RS256', { extractable: true });
  rsaJwk = { ...(await jose.exportJWK(rsa.publicKey)), kid: 'rsa', alg: 'RS256' };
  wildcardRsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
  wildcardRsaJwk = wildcardRsa.publicKey.export({ format: 'jwk' });
  hmacVerifier = await createTokenVerifier({ audience: [AUDIENCE], supabase: false, jwks: { keys: [hmacJwk] } });
  rsaVerifier = await createTokenVerifier({
    audience: [AUDIENCE],
    supabase: false,
    jwks: { keys: [rsaJwk as never, wildcardRsaJwk as never] }
  });
  recorder = await startRecordingServer();
});
afterAll(async () => recorder?.close());
afterEach(() => {
  recorder.mode = 'ok';
});

describe('alg none and unsupported algorithms', () => {
  const claims = () => ({ sub: 'user-1', aud: AUDIENCE, iat: now(), exp: now() + 600 });

  it.each(['none', 'None', 'NONE', 'nOnE'])(
    'rejects alg %j, with or without a kid and a signature part',
    async (alg) => {
      await expectRejected(hmacVerifier, rawToken({ alg }, claims()), 'PSYNC_S2101');
      await expectRejected(hmacVerifier, rawToken({ alg, kid: 'hmac' }, claims()), 'PSYNC_S2101');
      // A "none" token carrying a real HS256 signature of its own content must not slip through either.
      await expectRejected(hmacVerifier, rawHmacToken({ alg, kid: 'hmac' }, claims()), 'PSYNC_S2101');
    }
  );

  it.each([undefined, '', 'PS256', 'HS256 ', 'hs256', 'RSA-OAEP', 'dir', 42])('rejects alg %j', async (alg) => {
    await expectRejected(hmacVerifier, rawToken({ alg, kid: 'hmac' }, claims()), 'PSYNC_S2101');
  });

  it('rejects an algorithm other than the key fixes (HS384 against an HS256 key)', async () => {
    await expectRejected(hmacVerifier, await sign(hmacSecret, { alg: 'HS384', kid: 'hmac' }), 'PSYNC_S2101');
    await expectRejected(hmacVerifier, await sign(hmacSecret, { alg: 'HS512' }), 'PSYNC_S2101');
  });

  it('rejects critical header extensions it does not understand and unencoded payloads', async () => {
    // Correctly signed, so only the header can be the reason for the rejection.
    expect((await hmacVerifier.verify(rawHmacToken({ alg: 'HS256', kid: 'hmac' }, claims()))).userId).toBe('user-1');
    await expectRejected(
      hmacVerifier,
      rawHmacToken({ alg: 'HS256', kid: 'hmac', crit: ['x-bypass'], 'x-bypass': true }, claims()),
      'PSYNC_S2101'
    );
    await expectRejected(
      hmacVerifier,
      rawHmacToken({ alg: 'HS256', kid: 'hmac', crit: ['exp'] }, claims()),
      'PSYNC_S2101'
    );
    // RFC 7797 unencoded payload (signing input = header + "." + raw payload), correctly signed.
    const header = jose.base64url.encode(JSON.stringify({ alg: 'HS256', kid: 'hmac', b64: false, crit: ['b64'] }));
    const payload = JSON.stringify(claims());
    const mac = createHmac('sha256', hmacSecret).update(`${header}.${payload}`).digest('base64url');
    await expectRejected(hmacVerifier, `${header}.${payload}.${mac}`, 'PSYNC_S2101');
  });
});

describe('RS256/HS256 confusion: HMAC tokens keyed with the RSA public key', () => {
  /** Every byte form of the public key an attacker could use as an HMAC secret. */
  function publicKeyForms(jwk: jose.JWK): Array<[string, Uint8Array]> {
    const keyObject = createPublicKey({ key: jwk as never, format: 'jwk' });
    const spkiPem = keyObject.export({ type: 'spki', format: 'pem' }) as string;
    const pkcs1Pem = keyObject.export({ type: 'pkcs1', format: 'pem' }) as string;
    return [
      ['SPKI PEM', utf8(spkiPem)],
      ['SPKI PEM without final newline', utf8(spkiPem.trimEnd())],
      ['PKCS#1 PEM', utf8(pkcs1Pem)],
      ['SPKI DER', new Uint8Array(keyObject.export({ type: 'spki', format: 'der' }))],
      ['JWK n (base64url text)', utf8(jwk.n!)],
      ['JWK n (decoded modulus)', jose.base64url.decode(jwk.n!)],
      ['JWK JSON', utf8(JSON.stringify(jwk))]
    ];
  }

  it("rejects them against inline keys, with the key's kid, without kid, and against a wildcard key without alg", async () => {
    const attempts: Array<[jose.JWK, Array<string | undefined>]> = [
      [rsaJwk, ['rsa', undefined, 'unknown']],
      [wildcardRsaJwk, [undefined]]
    ];
    let tried = 0;
    for (const [jwk, kids] of attempts) {
      for (const [form, secret] of publicKeyForms(jwk)) {
        for (const kid of kids) {
          for (const alg of ['HS256', 'HS384', 'HS512']) {
            const token = await sign(secret, kid === undefined ? { alg } : { alg, kid });
            const error = await expectRejected(rsaVerifier, token, 'PSYNC_S2101');
            expect(error.details, `${form}, kid ${kid}, ${alg}`).toBeDefined();
            tried++;
          }
        }
      }
    }
    expect(tried).toBe(7 * 4 * 3);
  });

  it('rejects them against keys from a jwks_uri', async () => {
    recorder.jwks = { keys: [rsaJwk, wildcardRsaJwk] };
    const remote = await createTokenVerifier({
      audience: [AUDIENCE],
      supabase: false,
      jwks_uri: `${recorder.url}/jwks.json`
    });
    // The real keys verify, so a rejection below is the confusion being refused, not a broken key set.
    expect((await remote.verify(await sign(rsa.privateKey, { alg: 'RS256', kid: 'rsa' }))).userId).toBe('user-1');
    for (const [, secret] of publicKeyForms(rsaJwk)) {
      await expectRejected(remote, await sign(secret, { alg: 'HS256', kid: 'rsa' }), 'PSYNC_S2101');
      await expectRejected(remote, await sign(secret, { alg: 'HS256' }), 'PSYNC_S2101');
    }
  });

  it('a wildcard RSA key without alg verifies every RS* algorithm of its family (and only those)', async () => {
    for (const alg of ['RS256', 'RS384', 'RS512']) {
      expect((await rsaVerifier.verify(await sign(wildcardRsa.privateKey, { alg }))).userId).toBe('user-1');
    }
    await expectRejected(rsaVerifier, await sign(wildcardRsa.privateKey, { alg: 'PS256' }), 'PSYNC_S2101');
  });
});

describe('hostile kid values', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'syncpoint-kid-'));
  });
  afterAll(async () => rm(dir, { recursive: true, force: true }));

  it('rejects kids naming no key, path tricks, URLs, very long kids and NUL bytes, without fetching anything', async () => {
    recorder.jwks = { keys: [rsaJwk] };
    recorder.requests.length = 0;
    // A remote key set is configured, so an unknown kid may refresh it — but only from the configured URL.
    const remote = new RemoteJwks(`${recorder.url}/jwks.json`, { minRefreshIntervalMs: 0 });
    const verifier = new TokenVerifier({ staticKeys: [], remote: [remote], audience: [AUDIENCE] });
    const kids = [
      'no-such-key',
      '../../etc/passwd',
      '/etc/passwd',
      '..\\..\\windows\\win.ini',
      'file:///etc/passwd',
      `${recorder.url}/kid-as-url`,
      `${recorder.url.replace('http', 'https')}/kid-as-url`,
      '//127.0.0.1/kid-as-url',
      'k'.repeat(100_000),
      'rsa\u0000',
      '\u0000rsa',
      'rsa\u0000../../etc/passwd',
      '__proto__',
      'constructor',
      "rsa' OR '1'='1",
      ''
    ];
    for (const kid of kids) {
      // Signed by a key the server does not have: no kid trick may make it verify.
      await expectRejected(verifier, await sign(wildcardRsa.privateKey, { alg: 'RS256', kid }), 'PSYNC_S2101');
    }
    for (const kid of [42, null, { $ne: 'x' }, ['rsa']]) {
      await expectRejected(
        verifier,
        rawToken({ alg: 'RS256', kid }, { sub: 'x', aud: AUDIENCE, iat: now(), exp: now() + 60 }, 'AAAA'),
        'PSYNC_S2101'
      );
    }
    expect(recorder.requests.length).toBeGreaterThan(0);
    expect(new Set(recorder.requests)).toEqual(new Set(['GET /jwks.json']));
  });

  it('does not read a key from a file a kid names', async () => {
    // If a kid were ever resolved as a path, this file's bytes would be the HMAC key the attacker signed with.
    const file = path.join(dir, 'attacker-key');
    const attackerSecret = utf8('attacker-controlled-secret-32-bytes');
    await writeFile(file, attackerSecret);
    for (const kid of [file, `file://${file}`, path.relative(process.cwd(), file)]) {
      await expectRejected(hmacVerifier, await sign(attackerSecret, { alg: 'HS256', kid }), 'PSYNC_S2101');
    }
  });
});

describe('jku, x5u and embedded jwk headers', () => {
  it('ignores them: never fetched, and an embedded attacker key does not verify', async () => {
    recorder.requests.length = 0;
    recorder.jwks = { keys: [] };
    const attacker = await jose.generateKeyPair('RS256', { extractable: true });
    const attackerJwk = await jose.exportJWK(attacker.publicKey);
    // The attacker also serves its key at the URLs it names.
    const headers: Array<Record<string, unknown>> = [
      { jku: `${recorder.url}/jku.json` },
      { x5u: `${recorder.url}/x5u.pem` },
      { jwk: attackerJwk },
      { jwk: { ...attackerJwk, kid: 'rsa' }, kid: 'rsa' },
      { jku: `${recorder.url}/jku.json`, kid: 'attacker' },
      {
        jku: `${recorder.url}/jku.json`,
        x5u: `${recorder.url}/x5u.pem`,
        jwk: attackerJwk,
        x5c: ['MIIBIjAN'],
        kid: 'rsa'
      }
    ];
    for (const verifier of [rsaVerifier, hmacVerifier]) {
      for (const header of headers) {
        await expectRejected(verifier, await sign(attacker.privateKey, { alg: 'RS256', ...header }), 'PSYNC_S2101');
      }
    }
    expect(recorder.requests).toEqual([]);
  });

  it('ignores them on otherwise valid tokens too (they are not a reason to fetch)', async () => {
    recorder.requests.length = 0;
    const token = await sign(rsa.privateKey, {
      alg: 'RS256',
      kid: 'rsa',
      jku: `${recorder.url}/jku.json`,
      x5u: `${recorder.url}/x5u.pem`
    });
    expect((await rsaVerifier.verify(token)).userId).toBe('user-1');
    expect(recorder.requests).toEqual([]);
  });
});

describe('claims', () => {
  it.each([
    ['no sub', { sub: undefined }],
    ['empty sub', { sub: '' }],
    ['null sub', { sub: null }],
    ['boolean sub', { sub: true }],
    ['array sub', { sub: ['user-1'] }],
    ['object sub', { sub: { id: 'user-1' } }],
    ['sub with a NUL byte (storage could not hold it)', { sub: 'user-1\u0000admin' }],
    ['sub with an unpaired surrogate (it would share storage keys with others)', { sub: 'user-\ud800' }],
    ['no exp', { exp: undefined }],
    ['null exp', { exp: null }],
    ['string exp', { exp: String(now() + 600) }],
    ['no iat', { iat: undefined }],
    ['string iat', { iat: String(now()) }],
    ['iat beyond the allowed skew (now + 120 s)', { iat: now() + 120, exp: now() + 600 }],
    ['nbf in the future (now + 120 s)', { nbf: now() + 120 }],
    ['exp before iat', { iat: now() - 10, exp: now() - 20 }]
  ])('rejects %s with PSYNC_S2101', async (_, claims) => {
    await expectRejected(hmacVerifier, await hmacToken(claims), 'PSYNC_S2101');
  });

  it('accepts any other non-empty text or numeric sub, including non-ASCII and slashes', async () => {
    for (const sub of ['ユーザー', 'user-😀', 'auth0|1234', 'org/user', ' ', 0]) {
      expect((await hmacVerifier.verify(await hmacToken({ sub }))).userId).toBe(String(sub));
    }
  });

  it('rejects a token expired beyond the skew with PSYNC_S2103, and accepts one within it', async () => {
    await expectRejected(hmacVerifier, await hmacToken({ iat: now() - 600, exp: now() - 120 }), 'PSYNC_S2103');
    expect((await hmacVerifier.verify(await hmacToken({ iat: now() - 600, exp: now() - 20 }))).userId).toBe('user-1');
  });

  it('accepts iat and nbf within the skew (clocks of issuer and service differ a little)', async () => {
    expect((await hmacVerifier.verify(await hmacToken({ iat: now() + 20, exp: now() + 600 }))).userId).toBe('user-1');
    expect((await hmacVerifier.verify(await hmacToken({ nbf: now() + 20 }))).userId).toBe('user-1');
  });

  it('rejects a lifetime beyond the configured maximum with PSYNC_S2104, the maximum itself passes', async () => {
    const strict = await createTokenVerifier({
      audience: [AUDIENCE],
      supabase: false,
      jwks: { keys: [hmacJwk] },
      max_token_lifetime_seconds: 3600
    });
    const iat = now();
    expect((await strict.verify(await hmacToken({ iat, exp: iat + 3600 }))).userId).toBe('user-1');
    await expectRejected(strict, await hmacToken({ iat, exp: iat + 3601 }), 'PSYNC_S2104');
    // An old iat cannot stretch a token's life either.
    await expectRejected(strict, await hmacToken({ iat: iat - 7200, exp: iat + 600 }), 'PSYNC_S2104');
    // Default maximum: one day.
    await expectRejected(hmacVerifier, await hmacToken({ iat, exp: iat + 86_401 }), 'PSYNC_S2104');
    expect((await hmacVerifier.verify(await hmacToken({ iat, exp: iat + 86_400 }))).userId).toBe('user-1');
  });

  it.each([
    ['other audience', 'other'],
    ['several other audiences', ['other', 'another']],
    ['empty list', []],
    ['empty string', ''],
    ['case variant', AUDIENCE.toUpperCase()],
    ['padded', ` ${AUDIENCE}`],
    ['number', 42],
    ['object', { 0: AUDIENCE }]
  ])('rejects a wrong audience (%s) with PSYNC_S2105', async (_, aud) => {
    await expectRejected(hmacVerifier, await hmacToken({ aud }), 'PSYNC_S2105');
  });

  it('accepts an audience list containing a configured audience', async () => {
    expect((await hmacVerifier.verify(await hmacToken({ aud: ['other', AUDIENCE] }))).userId).toBe('user-1');
  });

  it('rejects every token when no audience is configured', async () => {
    const noAudience = await createTokenVerifier({ audience: [], supabase: false, jwks: { keys: [hmacJwk] } });
    await expectRejected(noAudience, await hmacToken(), 'PSYNC_S2105');
    await expectRejected(noAudience, await hmacToken({ aud: '' }), 'PSYNC_S2105');
  });
});

describe('keys from a jwks_uri over HTTP', () => {
  it('follows a changing key set: a new key verifies, a removed key stops verifying new tokens', async () => {
    const first = await jose.generateKeyPair('RS256', { extractable: true });
    const second = await jose.generateKeyPair('ES256', { extractable: true });
    recorder.jwks = { keys: [{ ...(await jose.exportJWK(first.publicKey)), kid: 'k1', alg: 'RS256' }] };
    const remote = new RemoteJwks(`${recorder.url}/jwks.json`, { minRefreshIntervalMs: 0 });
    const verifier = new TokenVerifier({ staticKeys: [], remote: [remote], audience: [AUDIENCE] });

    expect((await verifier.verify(await sign(first.privateKey, { alg: 'RS256', kid: 'k1' }))).userId).toBe('user-1');
    recorder.jwks = { keys: [{ ...(await jose.exportJWK(second.publicKey)), kid: 'k2', alg: 'ES256' }] };
    expect((await verifier.verify(await sign(second.privateKey, { alg: 'ES256', kid: 'k2' }))).userId).toBe('user-1');
    await expectRejected(
      verifier,
      await sign(first.privateKey, { alg: 'RS256', kid: 'k1', sub: 'user-2' }),
      'PSYNC_S2101'
    );

    // The identity provider goes down: the keys already known keep working, unknown kids are still just unknown.
    recorder.mode = 'error';
    expect(
      (await verifier.verify(await sign(second.privateKey, { alg: 'ES256', kid: 'k2' }, { sub: 'user-3' }))).userId
    ).toBe('user-3');
    await expectRejected(verifier, await sign(first.privateKey, { alg: 'RS256', kid: 'k3' }), 'PSYNC_S2101');
  });

  it.each([
    ['answers 503', 'error' as const],
    ['answers with something that is not JSON', 'garbage' as const]
  ])('reports a jwks_uri that %s as PSYNC_S2204 naming the URL', async (_, mode) => {
    recorder.mode = mode;
    const verifier = await createTokenVerifier({
      audience: [AUDIENCE],
      supabase: false,
      jwks_uri: `${recorder.url}/jwks.json`
    });
    const error = await expectRejected(
      verifier,
      await sign(rsa.privateKey, { alg: 'RS256', kid: 'rsa' }),
      'PSYNC_S2204'
    );
    expect(error.details).toContain(recorder.url);
  });

  it('reports an unreachable jwks_uri as PSYNC_S2204', async () => {
    const closed = await startRecordingServer();
    await closed.close();
    const verifier = await createTokenVerifier({
      audience: [AUDIENCE],
      supabase: false,
      jwks_uri: `${closed.url}/jwks.json`
    });
    const error = await expectRejected(
      verifier,
      await sign(rsa.privateKey, { alg: 'RS256', kid: 'rsa' }),
      'PSYNC_S2204'
    );
    expect(error.details).toBeTruthy();
  });

  it('does not keep a request waiting on a jwks_uri that never answers: PSYNC_S2204 within the wait limit', async () => {
    recorder.mode = 'hang';
    const maxWaitMs = 2_000;
    const verifier = new TokenVerifier({
      staticKeys: [],
      remote: [new RemoteJwks(`${recorder.url}/jwks.json`, { maxWaitMs, minRefreshIntervalMs: 0 })],
      audience: [AUDIENCE]
    });
    const started = Date.now();
    const error = await expectRejected(
      verifier,
      await sign(rsa.privateKey, { alg: 'RS256', kid: 'rsa' }),
      'PSYNC_S2204'
    );
    const elapsed = Date.now() - started;
    expect(error.details).toContain(recorder.url);
    expect(elapsed).toBeGreaterThanOrEqual(maxWaitMs - 100);
    // One wait, not one per lookup (generous margin for a loaded machine).
    expect(elapsed).toBeLessThan(2 * maxWaitMs);
    // While the fetch is still hanging, further requests fail at once instead of waiting again.
    const again = Date.now();
    await expectRejected(verifier, await sign(rsa.privateKey, { alg: 'RS256', kid: 'rsa' }), 'PSYNC_S2204');
    expect(Date.now() - again).toBeLessThan(maxWaitMs);
  });
});

describe('SSRF protection and key removal for a jwks_uri', () => {
  it.each([
    ['block_local_jwks: true', { block_local_jwks: true }],
    ['jwks_reject_ip_ranges: [local]', { jwks_reject_ip_ranges: ['local'] }],
    ['jwks_reject_ip_ranges: [127.0.0.0/8]', { jwks_reject_ip_ranges: ['127.0.0.0/8'] }]
  ])('%s: a jwks_uri on a loopback address is never fetched (PSYNC_S2204 naming the rule)', async (_, option) => {
    recorder.jwks = { keys: [rsaJwk] };
    const requestsBefore = recorder.requests.length;
    for (const host of ['127.0.0.1', 'localhost', '[::ffff:127.0.0.1]']) {
      const uri = `${recorder.url.replace('127.0.0.1', host)}/jwks.json`;
      const verifier = await createTokenVerifier({ audience: [AUDIENCE], supabase: false, jwks_uri: uri, ...option });
      const error = await expectRejected(
        verifier,
        await sign(rsa.privateKey, { alg: 'RS256', kid: 'rsa' }),
        'PSYNC_S2204'
      );
      expect(error.details).toContain('jwks_reject_ip_ranges');
    }
    expect(recorder.requests.length).toBe(requestsBefore);
  });

  it('a range that does not cover the address lets the fetch through', async () => {
    recorder.jwks = { keys: [rsaJwk] };
    const verifier = await createTokenVerifier({
      audience: [AUDIENCE],
      supabase: false,
      jwks_uri: `${recorder.url}/jwks.json`,
      jwks_reject_ip_ranges: ['10.0.0.0/8', 'fc00::/7']
    });
    const requestsBefore = recorder.requests.length;
    expect((await verifier.verify(await sign(rsa.privateKey, { alg: 'RS256', kid: 'rsa' }))).userId).toBe('user-1');
    expect(recorder.requests.slice(requestsBefore)).toEqual(['GET /jwks.json']);
  });

  it('a token verified with a key that then leaves the key set is not trusted from the cache', async () => {
    const first = await jose.generateKeyPair('RS256', { extractable: true });
    const second = await jose.generateKeyPair('RS256', { extractable: true });
    recorder.jwks = { keys: [{ ...(await jose.exportJWK(first.publicKey)), kid: 'k1', alg: 'RS256' }] };
    const verifier = await createTokenVerifier({
      audience: [AUDIENCE],
      supabase: false,
      jwks_uri: `${recorder.url}/jwks.json`
    });
    const oldToken = await sign(first.privateKey, { alg: 'RS256', kid: 'k1' });
    expect((await verifier.verify(oldToken)).userId).toBe('user-1');

    // The provider rotates k1 out; a token with the new kid makes the service refresh its keys (past the refresh
    // rate limit: only the clock moves, timers stay real).
    recorder.jwks = { keys: [{ ...(await jose.exportJWK(second.publicKey)), kid: 'k2', alg: 'RS256' }] };
    vi.useFakeTimers({ toFake: ['Date'] });
    try {
      vi.setSystemTime(Date.now() + 10_000);
      expect((await verifier.verify(await sign(second.privateKey, { alg: 'RS256', kid: 'k2' }))).userId).toBe('user-1');
      await expectRejected(verifier, oldToken, 'PSYNC_S2101');
    } finally {
      vi.useRealTimers();
    }
  });
});
