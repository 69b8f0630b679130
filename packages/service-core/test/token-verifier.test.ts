import type { KeyObject } from 'node:crypto';
import {
  HOSTILE_TOKEN_ERROR_CODES,
  hostileTokens,
  mintToken,
  nowSeconds,
  TEST_AUDIENCE,
  testHmacSecret,
  testJwks,
  testPublicJwk,
  testSigningKey,
  type HostileTokenKind
} from '@syncpoint/test-fixtures';
import * as jose from 'jose';
import { beforeAll, describe, expect, it, vi } from 'vitest';
import {
  createTokenVerifier,
  RemoteJwks,
  ServiceError,
  TokenVerifier,
  tokenFromAuthorizationHeader
} from '../src/index.js';

const AUDIENCE = TEST_AUDIENCE;
// The test-fixtures keys, configured under kids of this file: `hmac`, `rsa`, the EC key as a wildcard (no kid), `ed`.
const hmacSecret = testHmacSecret();
const hmacJwk = testPublicJwk('hs256', { kid: 'hmac' });
const rsaPublicJwk = testPublicJwk('rsa', { kid: 'rsa' });
const rsa = { privateKey: testSigningKey('rsa') };
const ec = { privateKey: testSigningKey('ec-p256') };
const ed = { privateKey: testSigningKey('ed25519') };
let verifier: TokenVerifier;

const now = nowSeconds;

async function sign(
  key: jose.CryptoKey | KeyObject | Uint8Array,
  header: jose.JWTHeaderParameters,
  claims: jose.JWTPayload = {}
): Promise<string> {
  return new jose.SignJWT({ sub: 'user-1', aud: AUDIENCE, iat: now(), exp: now() + 600, ...claims })
    .setProtectedHeader(header)
    .sign(key);
}

async function expectAuthError(token: string, code: string, v = verifier) {
  const error = await v.verify(token).then(
    () => undefined,
    (e: unknown) => e
  );
  expect(error).toBeInstanceOf(ServiceError);
  expect((error as ServiceError).status).toBe(401);
  expect((error as ServiceError).code).toBe(code);
}

beforeAll(async () => {
  const ecJwk = testPublicJwk('ec-p256', { kid: null }); // wildcard: no kid
  const edJwk = testPublicJwk('ed25519', { kid: 'ed' });
  verifier = await createTokenVerifier({
    audience: [AUDIENCE],
    supabase: false,
    jwks: { keys: [hmacJwk, rsaPublicJwk, ecJwk, edJwk] }
  });
});

describe('the test-fixtures hostile tokens', () => {
  // Each is wrong in one way only; this is where the fixtures learn which code the real verifier answers.
  for (const kind of Object.keys(hostileTokens) as HostileTokenKind[]) {
    it(`rejects ${kind} with ${HOSTILE_TOKEN_ERROR_CODES[kind]}`, async () => {
      const fixtureVerifier = await createTokenVerifier({ audience: [AUDIENCE], supabase: false, jwks: testJwks() });
      for (const key of kind === 'wrongKey' ? (['hs256', 'rsa'] as const) : (['hs256', 'ed25519'] as const)) {
        await expectAuthError(await hostileTokens[kind]({ key }), HOSTILE_TOKEN_ERROR_CODES[kind], fixtureVerifier);
      }
      // The same options without the one fault verify.
      expect((await fixtureVerifier.verify(await mintToken({ sub: 'fine' }))).userId).toBe('fine');
    });
  }
});

describe('client token verification (PROTOCOL §3)', () => {
  it('accepts HS256, RS256, ES256 (wildcard key) and EdDSA tokens', async () => {
    for (const [key, header] of [
      [hmacSecret, { alg: 'HS256', kid: 'hmac' }],
      [rsa.privateKey, { alg: 'RS256', kid: 'rsa' }],
      [ec.privateKey, { alg: 'ES256' }],
      [ed.privateKey, { alg: 'EdDSA', kid: 'ed' }]
    ] as const) {
      const payload = await verifier.verify(await sign(key, header));
      expect(payload.userId).toBe('user-1');
    }
  });

  it('turns a numeric sub into a string user id and returns token parameters', async () => {
    const payload = await verifier.verify(
      await sign(hmacSecret, { alg: 'HS256', kid: 'hmac' }, { sub: 123 as never, parameters: { team: 't1' } })
    );
    expect(payload).toMatchObject({ userId: '123', parameters: { team: 't1' } });
  });

  it('rejects alg none', async () => {
    const unsigned = new jose.UnsecuredJWT({ sub: 'u', aud: AUDIENCE, iat: now(), exp: now() + 60 }).encode();
    await expectAuthError(unsigned, 'PSYNC_S2101');
  });

  it('rejects a wrong signature', async () => {
    await expectAuthError(
      await sign(new TextEncoder().encode('another-secret-of-32-bytes-long!!'), { alg: 'HS256', kid: 'hmac' }),
      'PSYNC_S2101'
    );
  });

  it('rejects RS256/HS256 confusion: an HMAC token "signed" with the RSA public key', async () => {
    const publicKeyBytes = new TextEncoder().encode(JSON.stringify(rsaPublicJwk));
    await expectAuthError(await sign(publicKeyBytes, { alg: 'HS256', kid: 'rsa' }), 'PSYNC_S2101');
    await expectAuthError(await sign(publicKeyBytes, { alg: 'HS256' }), 'PSYNC_S2101');
  });

  it('rejects an unknown kid and path tricks in kid', async () => {
    await expectAuthError(await sign(hmacSecret, { alg: 'HS256', kid: 'nope' }), 'PSYNC_S2101');
    await expectAuthError(await sign(hmacSecret, { alg: 'HS256', kid: '../../etc/passwd' }), 'PSYNC_S2101');
  });

  it('ignores jku/x5u/jwk headers: an embedded attacker key does not verify', async () => {
    const attacker = await jose.generateKeyPair('RS256');
    const token = await sign(attacker.privateKey, {
      alg: 'RS256',
      jwk: await jose.exportJWK(attacker.publicKey),
      jku: 'http://127.0.0.1:1/jwks.json',
      x5u: 'http://127.0.0.1:1/cert.pem'
    });
    await expectAuthError(token, 'PSYNC_S2101');
  });

  it('rejects an expired token with its own code', async () => {
    await expectAuthError(
      await sign(hmacSecret, { alg: 'HS256', kid: 'hmac' }, { iat: now() - 1000, exp: now() - 200 }),
      'PSYNC_S2103'
    );
  });

  it('rejects a wrong or missing aud', async () => {
    await expectAuthError(await sign(hmacSecret, { alg: 'HS256', kid: 'hmac' }, { aud: 'other' }), 'PSYNC_S2105');
    await expectAuthError(await sign(hmacSecret, { alg: 'HS256', kid: 'hmac' }, { aud: undefined }), 'PSYNC_S2105');
  });

  it('rejects a lifetime over the maximum (1 day)', async () => {
    await expectAuthError(
      await sign(hmacSecret, { alg: 'HS256', kid: 'hmac' }, { exp: now() + 86_401 }),
      'PSYNC_S2104'
    );
  });

  it('rejects missing sub/iat/exp, a future iat or nbf, and non-object parameters', async () => {
    const header = { alg: 'HS256', kid: 'hmac' };
    await expectAuthError(await sign(hmacSecret, header, { sub: undefined }), 'PSYNC_S2101');
    await expectAuthError(await sign(hmacSecret, header, { iat: undefined }), 'PSYNC_S2101');
    await expectAuthError(await sign(hmacSecret, header, { exp: undefined }), 'PSYNC_S2101');
    await expectAuthError(await sign(hmacSecret, header, { iat: now() + 600, exp: now() + 900 }), 'PSYNC_S2101');
    await expectAuthError(await sign(hmacSecret, header, { nbf: now() + 600 }), 'PSYNC_S2101');
    await expectAuthError(await sign(hmacSecret, header, { parameters: ['x'] }), 'PSYNC_S2101');
  });

  it('rejects malformed tokens', async () => {
    for (const token of ['', 'abc', 'a.b.c', 'eyJhbGciOiJIUzI1NiJ9..', '....'])
      await expectAuthError(token, 'PSYNC_S2101');
  });

  describe('the verified-token cache', () => {
    async function hmacVerifier(options: { cacheSize?: number } = {}) {
      const { createSecretKey } = await import('node:crypto');
      // Held by reference: a test removes the key to see which tokens are answered from the cache.
      const staticKeys = [{ kty: 'oct' as const, alg: 'HS256', kid: 'hmac', key: createSecretKey(hmacSecret) }];
      const strict = new TokenVerifier({
        staticKeys,
        remote: [],
        audience: [AUDIENCE],
        clockToleranceSeconds: 0,
        ...options
      });
      return { strict, removeKey: () => staticKeys.splice(0) };
    }
    const hmacToken = (claims: jose.JWTPayload = {}) => sign(hmacSecret, { alg: 'HS256', kid: 'hmac' }, claims);

    it('answers a verified token from the cache, but never past its exp', async () => {
      const { strict } = await hmacVerifier();
      const token = await hmacToken({ exp: now() + 1 });
      expect((await strict.verify(token)).userId).toBe('user-1');
      expect((await strict.verify(token)).userId).toBe('user-1');
      vi.useFakeTimers({ toFake: ['Date'] });
      try {
        vi.setSystemTime(Date.now() + 2100);
        await expectAuthError(token, 'PSYNC_S2103', strict);
      } finally {
        vi.useRealTimers();
      }
    });

    it('holds at most cacheSize tokens, dropping the oldest', async () => {
      const { strict, removeKey } = await hmacVerifier({ cacheSize: 2 });
      const tokens = [await hmacToken({ sub: 'a' }), await hmacToken({ sub: 'b' }), await hmacToken({ sub: 'c' })];
      for (const token of tokens) await strict.verify(token);
      removeKey();
      await expectAuthError(tokens[0]!, 'PSYNC_S2101', strict); // evicted: verified again, and the key is gone
      expect((await strict.verify(tokens[1]!)).userId).toBe('b');
      expect((await strict.verify(tokens[2]!)).userId).toBe('c');
    });

    it('never answers a hostile token from the cache', async () => {
      const { strict } = await hmacVerifier();
      const token = await hmacToken();
      await strict.verify(token);
      const [header, payload, signature] = token.split('.') as [string, string, string];
      const otherPayload = Buffer.from(JSON.stringify({ ...jose.decodeJwt(token), sub: 'admin' })).toString(
        'base64url'
      );
      const flipped = signature.slice(0, 10) + (signature[10] === 'A' ? 'B' : 'A') + signature.slice(11);
      for (const hostile of [
        `${header}.${otherPayload}.${signature}`,
        `${header}.${payload}.${flipped}`,
        token.slice(0, -2)
      ]) {
        // Twice: a rejected token is not remembered either.
        await expectAuthError(hostile, 'PSYNC_S2101', strict);
        await expectAuthError(hostile, 'PSYNC_S2101', strict);
      }
      const expired = await hmacToken({ iat: now() - 120, exp: now() - 60 });
      await expectAuthError(expired, 'PSYNC_S2103', strict);
      await expectAuthError(expired, 'PSYNC_S2103', strict);
    });

    it('stops answering tokens of a key that left the JWKS, though every request is a cache hit', async () => {
      const keyPair = await jose.generateKeyPair('RS256');
      const other = await jose.generateKeyPair('RS256');
      let served = [{ ...(await jose.exportJWK(keyPair.publicKey)), kid: 'k1', alg: 'RS256' }];
      const fakeFetch = (() =>
        Promise.resolve(
          new Response(JSON.stringify({ keys: served }), { headers: { 'content-type': 'application/json' } })
        )) as typeof fetch;
      const remote = new RemoteJwks('https://idp.example/jwks.json', {
        fetch: fakeFetch,
        freshForMs: 0, // stale at once: every verification may refresh
        minRefreshIntervalMs: 0,
        onKeysRemoved: () => v.forgetVerifiedTokens()
      });
      const v = new TokenVerifier({ staticKeys: [], remote: [remote], audience: [AUDIENCE] });
      const token = await sign(keyPair.privateKey, { alg: 'RS256', kid: 'k1' });
      expect((await v.verify(token)).userId).toBe('user-1');
      served = [{ ...(await jose.exportJWK(other.publicKey)), kid: 'k2', alg: 'RS256' }];
      await vi.waitFor(() => expectAuthError(token, 'PSYNC_S2101', v), { timeout: 5000, interval: 20 });
    });
  });

  it('reads only "Token <jwt>" or "Bearer <jwt>" headers', () => {
    expect(tokenFromAuthorizationHeader('Token abc')).toBe('abc');
    expect(tokenFromAuthorizationHeader('Bearer abc')).toBe('abc');
    for (const header of [undefined, '', 'abc', 'Basic abc', 'Token', 'Token a b', ['Token a']]) {
      expect(() => tokenFromAuthorizationHeader(header)).toThrow(
        expect.objectContaining({ code: 'PSYNC_S2106', status: 401 })
      );
    }
  });
});

describe('keys from a jwks_uri', () => {
  it('fetches keys, refreshes on an unknown kid at most once per interval, and never takes symmetric keys', async () => {
    const first = await jose.generateKeyPair('RS256');
    const rotated = await jose.generateKeyPair('RS256');
    let served = [{ ...(await jose.exportJWK(first.publicKey)), kid: 'k1', alg: 'RS256' }, hmacJwk];
    let fetches = 0;
    const fakeFetch = (() => {
      fetches++;
      return Promise.resolve(
        new Response(JSON.stringify({ keys: served }), { headers: { 'content-type': 'application/json' } })
      );
    }) as typeof fetch;
    const remote = new RemoteJwks('https://idp.example/jwks.json', { fetch: fakeFetch, minRefreshIntervalMs: 60_000 });
    const v = new TokenVerifier({ staticKeys: [], remote: [remote], audience: [AUDIENCE] });

    expect((await v.verify(await sign(first.privateKey, { alg: 'RS256', kid: 'k1' }))).userId).toBe('user-1');
    expect(fetches).toBe(1);
    // The symmetric key in the remote JWKS is not trusted.
    await expectAuthError(await sign(hmacSecret, { alg: 'HS256', kid: 'hmac' }), 'PSYNC_S2101', v);

    served = [{ ...(await jose.exportJWK(rotated.publicKey)), kid: 'k2', alg: 'RS256' }];
    // Rate-limited: the refresh for the unknown kid does not happen within the interval.
    await expectAuthError(await sign(rotated.privateKey, { alg: 'RS256', kid: 'k2' }), 'PSYNC_S2101', v);
    expect(fetches).toBe(1);

    const eager = new RemoteJwks('https://idp.example/jwks.json', { fetch: fakeFetch, minRefreshIntervalMs: 0 });
    const v2 = new TokenVerifier({ staticKeys: [], remote: [eager], audience: [AUDIENCE] });
    expect((await v2.verify(await sign(rotated.privateKey, { alg: 'RS256', kid: 'k2' }))).userId).toBe('user-1');
  });

  it('reports a JWKS that cannot be fetched as PSYNC_S2204', async () => {
    const failing = (() => Promise.resolve(new Response('nope', { status: 500 }))) as typeof fetch;
    const v = new TokenVerifier({
      staticKeys: [],
      remote: [new RemoteJwks('https://idp.example/jwks.json', { fetch: failing })],
      audience: [AUDIENCE]
    });
    const key = await jose.generateKeyPair('RS256');
    await expectAuthError(await sign(key.privateKey, { alg: 'RS256', kid: 'x' }), 'PSYNC_S2204', v);
  });

  it('refuses non-http(s) JWKS URLs', () => {
    expect(() => new RemoteJwks('file:///etc/passwd')).toThrow(/http or https/);
  });
});
