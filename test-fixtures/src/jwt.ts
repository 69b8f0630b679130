import { createHmac, createPrivateKey, createSecretKey, type JsonWebKey, type KeyObject } from 'node:crypto';
import * as jose from 'jose';
import { readFixture } from './files.js';

/**
 * JWT material for tests. The key pairs in `keys/*.jwk.json` were generated once and committed: they are TEST ONLY,
 * public to anyone who reads this repository, and must never be configured on a real service.
 */

/** The audience the test keys' tokens carry and throw-away services accept. */
export const TEST_AUDIENCE = 'syncpoint-test';

/** Keys a test service is configured with: `hs256` (a shared secret), `rsa` (RS256), `ec-p256` (ES256), `ed25519`. */
export type TestKeyName = 'hs256' | 'rsa' | 'ec-p256' | 'ed25519';
/**
 * Keys no service is configured with. `attacker-hs256` and `attacker-rsa` carry the same `kid` and `alg` as `hs256` and
 * `rsa`, so their tokens look right and only the signature is wrong.
 */
export type AttackerKeyName = 'attacker-hs256' | 'attacker-rsa';
export type AnyTestKeyName = TestKeyName | AttackerKeyName;

export const TEST_KEY_NAMES: readonly TestKeyName[] = ['hs256', 'rsa', 'ec-p256', 'ed25519'];

/** A key as a JWK with its private parts (for `oct`, the secret). */
export type TestJwk = jose.JWK & { kty: 'EC' | 'RSA' | 'OKP' | 'oct'; kid: string; alg: string };

/** A JWK as a service's `client_auth.jwks.keys[]` takes it. */
export type PublicTestJwk = jose.JWK & { kty: TestJwk['kty'] };

/** The full private JWK of a test key (a fresh copy). */
export function testPrivateJwk(name: AnyTestKeyName): TestJwk {
  return JSON.parse(readFixture('keys', name, '.jwk.json')) as TestJwk;
}

const PRIVATE_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth'];

/**
 * The JWK a service is configured with: the public key (an `oct` key is symmetric, so its secret is the key).
 * `kid: null` / `alg: null` drop that member, for wildcard keys (PROTOCOL §3.2).
 */
export function testPublicJwk(
  name: AnyTestKeyName,
  overrides: { kid?: string | null; alg?: string | null } = {}
): PublicTestJwk {
  const jwk: PublicTestJwk = testPrivateJwk(name);
  if (jwk.kty !== 'oct') for (const member of PRIVATE_MEMBERS) delete (jwk as Record<string, unknown>)[member];
  for (const member of ['kid', 'alg'] as const) {
    const value = overrides[member];
    if (value === null) delete jwk[member];
    else if (value !== undefined) jwk[member] = value;
  }
  return jwk;
}

/** A JWKS document of the public JWKs of `names` (default: every configured test key). */
export function testJwks(names: readonly AnyTestKeyName[] = TEST_KEY_NAMES): { keys: PublicTestJwk[] } {
  return { keys: names.map((name) => testPublicJwk(name)) };
}

/** The secret bytes of an `oct` key. */
export function testHmacSecret(name: 'hs256' | 'attacker-hs256' = 'hs256'): Uint8Array {
  return jose.base64url.decode(testPrivateJwk(name).k!);
}

/**
 * The private key as a Node KeyObject (a secret KeyObject for `oct`). One RSA KeyObject signs with every RS and PS
 * algorithm, which algorithm-confusion tests need.
 */
export function testSigningKey(name: AnyTestKeyName): KeyObject {
  const jwk = testPrivateJwk(name);
  if (jwk.kty === 'oct') return createSecretKey(jose.base64url.decode(jwk.k!));
  return createPrivateKey({ key: jwk as JsonWebKey, format: 'jwk' });
}

export const nowSeconds = () => Math.floor(Date.now() / 1000);

export interface MintOptions {
  /** Signing key (default `hs256`); the header names its `alg` and `kid` unless `header` says otherwise. */
  key?: AnyTestKeyName;
  /** Subject (default `user-1`); null leaves it out. */
  sub?: string | number | null;
  /** Audience (default TEST_AUDIENCE); null leaves it out. */
  audience?: string | string[] | null;
  /** Issued-at, seconds since the epoch (default now); null leaves it out. */
  iat?: number | null;
  /** Expiry, seconds since the epoch (default iat + lifetimeSeconds); null leaves it out. */
  exp?: number | null;
  /** Lifetime when `exp` is not given (default 600 s). */
  lifetimeSeconds?: number;
  /** Not-before, seconds since the epoch (default: none). */
  nbf?: number;
  /** Further claims (e.g. `parameters`), set after the ones above, so they may override them. */
  claims?: Record<string, unknown>;
  /** Header members set over `{ alg, kid }` of the key; a member given as undefined is left out (e.g. `kid`). */
  header?: Record<string, unknown>;
}

/** The claims `mintToken` signs, for tests that assemble a token by hand. */
export function tokenClaims(options: MintOptions = {}): Record<string, unknown> {
  const iat = options.iat === undefined ? nowSeconds() : options.iat;
  const exp = options.exp === undefined ? (iat ?? nowSeconds()) + (options.lifetimeSeconds ?? 600) : options.exp;
  const claims: Record<string, unknown> = {
    sub: options.sub === undefined ? 'user-1' : options.sub,
    aud: options.audience === undefined ? TEST_AUDIENCE : options.audience,
    iat,
    exp,
    nbf: options.nbf,
    ...options.claims
  };
  return Object.fromEntries(Object.entries(claims).filter(([, value]) => value !== null && value !== undefined));
}

/** A signed JWT by a test key: valid for a service configured with `testJwks()` unless the options say otherwise. */
export async function mintToken(options: MintOptions = {}): Promise<string> {
  const name = options.key ?? 'hs256';
  const jwk = testPrivateJwk(name);
  const header = Object.fromEntries(
    Object.entries({ alg: jwk.alg, kid: jwk.kid, ...options.header }).filter(([, value]) => value !== undefined)
  ) as jose.JWTHeaderParameters;
  return new jose.SignJWT(tokenClaims(options)).setProtectedHeader(header).sign(testSigningKey(name));
}

/** A compact JWS assembled by hand (for headers jose refuses to produce); the signature is given as is. */
export function rawToken(header: object, payload: object, signature = ''): string {
  const part = (value: object) => jose.base64url.encode(JSON.stringify(value));
  return `${part(header)}.${part(payload)}.${signature}`;
}

/** `rawToken` with a valid HS256 signature by `secret` (default: the `hs256` key's), whatever the header says. */
export function rawHmacToken(header: object, payload: object, secret: Uint8Array = testHmacSecret()): string {
  const unsigned = rawToken(header, payload).slice(0, -1);
  return `${unsigned}.${createHmac('sha256', secret).update(unsigned).digest('base64url')}`;
}

/**
 * Tokens a service must refuse, each wrong in one way only (all else as `mintToken` would make it). Each takes the
 * same options as `mintToken`, to aim it at another key or subject.
 */
export const hostileTokens = {
  /** Expired an hour ago (well past any clock skew). */
  expired: (options: MintOptions = {}) => mintToken({ iat: nowSeconds() - 7200, exp: nowSeconds() - 3600, ...options }),
  /** Not valid for another hour (`nbf`). */
  notYetValid: (options: MintOptions = {}) => mintToken({ nbf: nowSeconds() + 3600, ...options }),
  /** For another audience. */
  wrongAudience: (options: MintOptions = {}) => mintToken({ audience: 'someone-else', ...options }),
  /** Signed by a key the service does not have, under the configured key's `kid` and `alg`. */
  wrongKey: (options: MintOptions = {}) =>
    mintToken({ ...options, key: options.key === 'rsa' ? 'attacker-rsa' : 'attacker-hs256' }),
  /** `alg: none`, unsigned, naming the configured key. */
  algNone: (options: MintOptions = {}) =>
    Promise.resolve(rawToken({ alg: 'none', kid: testPrivateJwk(options.key ?? 'hs256').kid }, tokenClaims(options))),
  /** Lives two days: longer than the default maximum lifetime (one day). */
  tooLongLifetime: (options: MintOptions = {}) => mintToken({ lifetimeSeconds: 2 * 86_400, ...options }),
  /** Without `sub`. */
  missingSub: (options: MintOptions = {}) => mintToken({ ...options, sub: null }),
  /** Without `exp`. */
  missingExp: (options: MintOptions = {}) => mintToken({ ...options, exp: null }),
  /** Naming a `kid` no configured key has. */
  unknownKid: (options: MintOptions = {}) =>
    mintToken({ ...options, header: { kid: 'no-such-key', ...options.header } }),
  /** A valid token whose signature has one character changed. */
  tamperedSignature: async (options: MintOptions = {}) => {
    const token = await mintToken(options);
    const last = token.at(-2) === 'A' ? 'B' : 'A';
    return `${token.slice(0, -2)}${last}${token.at(-1)}`;
  }
} satisfies Record<string, (options?: MintOptions) => Promise<string>>;

export type HostileTokenKind = keyof typeof hostileTokens;

/** The error code (PROTOCOL §3, HTTP 401) a service answers each hostile token with. */
export const HOSTILE_TOKEN_ERROR_CODES: Record<HostileTokenKind, string> = {
  expired: 'PSYNC_S2103',
  notYetValid: 'PSYNC_S2101',
  wrongAudience: 'PSYNC_S2105',
  wrongKey: 'PSYNC_S2101',
  algNone: 'PSYNC_S2101',
  tooLongLifetime: 'PSYNC_S2104',
  missingSub: 'PSYNC_S2101',
  missingExp: 'PSYNC_S2101',
  unknownKid: 'PSYNC_S2101',
  tamperedSignature: 'PSYNC_S2101'
};
