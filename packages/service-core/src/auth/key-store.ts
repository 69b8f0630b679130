import { createPublicKey, createSecretKey, type KeyObject } from 'node:crypto';
import * as jose from 'jose';
import { authError, ErrorCode } from '../errors.js';
import type { Logger } from '../logger.js';
import type { JwksAddressGuard } from './jwks-address-guard.js';

/** Algorithms a client token may use (PROTOCOL §3.2); `none` is never accepted. */
export const SUPPORTED_ALGORITHMS = [
  'HS256',
  'HS384',
  'HS512',
  'RS256',
  'RS384',
  'RS512',
  'ES256',
  'ES384',
  'ES512',
  'EdDSA'
] as const;

const FAMILY_BY_KTY: Record<string, RegExp> = {
  RSA: /^RS(256|384|512)$/,
  oct: /^HS(256|384|512)$/,
  EC: /^ES(256|384|512)$/,
  OKP: /^EdDSA$/
};

export interface VerificationKey {
  kid?: string;
  /** Fixed algorithm of the key, when the JWK names one. */
  alg?: string;
  kty: string;
  key: jose.CryptoKey | KeyObject;
  /** Audiences this key accepts instead of the configured ones (Supabase keys). */
  audience?: string[];
  /** Maximum token lifetime for this key, seconds. */
  maxLifetimeSeconds?: number;
}

export function keyAcceptsAlgorithm(key: VerificationKey, alg: string): boolean {
  if (key.alg) return key.alg === alg;
  return FAMILY_BY_KTY[key.kty]?.test(alg) ?? false;
}

/** Import one JWK from config or a JWKS document. `remote` keys must be asymmetric verification keys. */
export async function importVerificationKey(
  jwk: jose.JWK,
  options: { remote: boolean }
): Promise<VerificationKey | null> {
  if (options.remote) {
    if (!['RSA', 'EC', 'OKP'].includes(jwk.kty ?? '')) return null; // never accept symmetric keys from a URL
    if (jwk.use !== undefined && jwk.use !== 'sig') return null;
    if (jwk.key_ops !== undefined && !jwk.key_ops.includes('verify')) return null;
  }
  if (jwk.kty === 'oct') {
    if (typeof jwk.k !== 'string' || jwk.k.length === 0) throw new Error(`HMAC key ${jwk.kid ?? ''} has no "k"`);
    const secret = jose.base64url.decode(jwk.k);
    if (secret.length < 16) throw new Error(`HMAC key ${jwk.kid ?? ''} is shorter than 16 bytes`);
    // A KeyObject is imported once; a raw Uint8Array would be re-imported by jose on every verification.
    return { kid: jwk.kid, alg: jwk.alg, kty: 'oct', key: createSecretKey(secret) };
  }
  const alg = jwk.alg ?? defaultAlgorithmFor(jwk);
  if (!alg) throw new Error(`key ${jwk.kid ?? ''} of type ${jwk.kty} needs "alg"`);
  // Import only the public part: a private JWK in config must never become a signing key here.
  const { d: _d, p: _p, q: _q, dp: _dp, dq: _dq, qi: _qi, ...publicJwk } = jwk;
  if (!jwk.alg && jwk.kty === 'RSA') {
    // Without "alg" an RSA key verifies its whole family (PROTOCOL §3.2), but a CryptoKey is bound to one hash
    // (RS256 only); a KeyObject serves RS256, RS384 and RS512 alike.
    return { kid: jwk.kid, kty: 'RSA', key: createPublicKey({ key: publicJwk as never, format: 'jwk' }) };
  }
  const key = await jose.importJWK(publicJwk, alg);
  if (key instanceof Uint8Array) throw new Error(`key ${jwk.kid ?? ''} is not an asymmetric key`);
  return { kid: jwk.kid, alg: jwk.alg, kty: jwk.kty!, key };
}

function defaultAlgorithmFor(jwk: jose.JWK): string | undefined {
  if (jwk.kty === 'RSA') return 'RS256';
  if (jwk.kty === 'OKP') return 'EdDSA';
  if (jwk.kty === 'EC') return { 'P-256': 'ES256', 'P-384': 'ES384', 'P-521': 'ES512' }[jwk.crv ?? ''];
  return undefined;
}

export interface RemoteJwksOptions {
  fetch?: typeof fetch;
  /** Keys are fresh this long; afterwards they are refreshed in the background. */
  freshForMs?: number;
  /** At most one refresh per this many ms (on unknown `kid`). */
  minRefreshIntervalMs?: number;
  /** How long a request may wait for a refresh. */
  maxWaitMs?: number;
  /** Refuses a URL whose host resolves into `jwks_reject_ip_ranges`, before anything is sent to it. */
  checkAddress?: JwksAddressGuard;
  /** Called when a refresh dropped a key: tokens verified with it must not stay trusted from a cache. */
  onKeysRemoved?: () => void;
  logger?: Logger;
}

/**
 * Keys from a `jwks_uri`: cached, refreshed when stale or when a token names an unknown `kid`, with refreshes
 * rate-limited so a stream of forged `kid`s cannot hammer the identity provider.
 */
export class RemoteJwks {
  private keys: VerificationKey[] = [];
  private fingerprints = new Set<string>();
  private fetchedAt = 0;
  private lastAttemptAt = 0;
  private inflight: Promise<void> | undefined;
  private lastError: Error | undefined;
  private readonly fetchImpl: typeof fetch;
  private readonly freshForMs: number;
  private readonly minRefreshIntervalMs: number;
  private readonly maxWaitMs: number;

  constructor(
    readonly uri: string,
    private readonly options: RemoteJwksOptions = {}
  ) {
    const protocol = new URL(uri).protocol;
    if (protocol !== 'http:' && protocol !== 'https:') throw new Error(`jwks_uri must be http or https: ${uri}`);
    this.fetchImpl = options.fetch ?? fetch;
    this.freshForMs = options.freshForMs ?? 3_600_000;
    this.minRefreshIntervalMs = options.minRefreshIntervalMs ?? 6_000;
    this.maxWaitMs = options.maxWaitMs ?? 3_000;
  }

  /** Why no keys could ever be loaded from this URL, if so (including a first fetch that has not answered yet). */
  get unavailableReason(): string | undefined {
    if (this.fetchedAt !== 0) return undefined;
    if (this.lastError) return this.lastError.message;
    return this.inflight ? `${this.uri} did not answer within ${this.maxWaitMs} ms` : undefined;
  }

  /** Current keys; fetches on first use and refreshes stale ones in the background. */
  async getKeys(): Promise<VerificationKey[]> {
    if (this.fetchedAt === 0) await this.refresh({ wait: true });
    else if (Date.now() - this.fetchedAt > this.freshForMs) void this.refresh({ wait: false });
    return this.keys;
  }

  /**
   * Start a background refresh when the keys are stale, as `getKeys` does: a verifier answering from its cache of
   * verified tokens calls this, so a key removed from the JWKS is still noticed (`onKeysRemoved`) within `freshForMs`.
   */
  refreshIfStale(): void {
    if (this.fetchedAt !== 0 && Date.now() - this.fetchedAt > this.freshForMs) {
      this.refresh({ wait: false }).catch(() => {}); // a failed refresh keeps the current keys, as in getKeys
    }
  }

  /**
   * Ask for a refresh (rate-limited). With `wait`, waits for it until `maxWaitMs` after the fetch *started*: a request
   * that looks keys up several times, and requests arriving while a fetch hangs, do not each wait the full time again.
   */
  async refresh({ wait }: { wait: boolean }): Promise<void> {
    const now = Date.now();
    if (!this.inflight && now - this.lastAttemptAt >= this.minRefreshIntervalMs) {
      this.lastAttemptAt = now;
      this.inflight = this.load().finally(() => (this.inflight = undefined));
    }
    const waitMs = this.lastAttemptAt + this.maxWaitMs - now;
    if (wait && this.inflight && waitMs > 0) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([this.inflight, new Promise((resolve) => (timer = setTimeout(resolve, waitMs)))]);
      clearTimeout(timer);
    }
    const unavailable = this.unavailableReason;
    if (unavailable !== undefined) throw authError(ErrorCode.JWKS_FETCH, 'Could not fetch the JWKS', unavailable);
  }

  private async load(): Promise<void> {
    try {
      await this.options.checkAddress?.(this.uri);
      const response = await this.fetchImpl(this.uri, {
        headers: { Accept: 'application/json' },
        signal: AbortSignal.timeout(30_000),
        redirect: 'error'
      });
      if (!response.ok) throw new Error(`${this.uri} answered HTTP ${response.status}`);
      const body = (await response.json()) as { keys?: unknown };
      if (!body || !Array.isArray(body.keys)) throw new Error(`${this.uri} did not return a JWKS ({"keys": [...]})`);
      const keys: VerificationKey[] = [];
      for (const jwk of body.keys as jose.JWK[]) {
        try {
          const key = await importVerificationKey(jwk, { remote: true });
          if (key) keys.push(key);
        } catch (error) {
          this.options.logger?.warn({ kid: jwk?.kid, err: error }, 'skipping unusable key from JWKS');
        }
      }
      // Keys are compared by their public parameters: a kid reused for new key material counts as a removal too.
      const fingerprints = new Set((body.keys as jose.JWK[]).map(publicKeyFingerprint));
      const removed = [...this.fingerprints].some((fingerprint) => !fingerprints.has(fingerprint));
      this.fingerprints = fingerprints;
      this.keys = keys;
      this.fetchedAt = Date.now();
      if (removed) this.options.onKeysRemoved?.();
      this.lastError = undefined;
    } catch (error) {
      // Name the URL: "Unexpected token '<'" alone does not tell an operator which key set is broken.
      const message = (error as Error).message ?? String(error);
      this.lastError = message.includes(this.uri)
        ? (error as Error)
        : new Error(`${this.uri}: ${message}`, { cause: error });
      this.options.logger?.warn({ jwks_uri: this.uri, err: error }, 'JWKS fetch failed');
    }
  }
}

function publicKeyFingerprint(jwk: jose.JWK): string {
  const { kid, kty, alg, crv, n, e, x, y } = jwk ?? {};
  return JSON.stringify([kid, kty, alg, crv, n, e, x, y]);
}
