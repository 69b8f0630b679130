import * as jose from 'jose';
import { authError, ErrorCode, ServiceError } from '../errors.js';
import { keyAcceptsAlgorithm, type RemoteJwks, SUPPORTED_ALGORITHMS, type VerificationKey } from './key-store.js';

export interface TokenPayload {
  /** The JWT `sub` as a string: the user id. */
  userId: string;
  /** Legacy `token_parameters` (the `parameters` claim). */
  parameters: Record<string, unknown>;
  /** Expiry, seconds since the epoch. */
  exp: number;
  claims: jose.JWTPayload;
}

export interface TokenVerifierOptions {
  staticKeys: VerificationKey[];
  remote: RemoteJwks[];
  audience: string[];
  /** Default 86 400 s (PROTOCOL §3.2). */
  maxLifetimeSeconds?: number;
  clockToleranceSeconds?: number;
  /** Verified tokens remembered until they expire (a client sends the same token with every request). */
  cacheSize?: number;
}

const AUTHORIZATION_PATTERN = /^(Token|Bearer) (\S+)$/;
// eslint-disable-next-line no-control-regex
const UNSTORABLE_TEXT = /\u0000|\p{Cs}/u;

/** Extract the JWT from an `Authorization: Token|Bearer <jwt>` header (PROTOCOL §3.1). */
export function tokenFromAuthorizationHeader(header: unknown): string {
  const match = typeof header === 'string' ? AUTHORIZATION_PATTERN.exec(header) : null;
  if (!match) throw authError(ErrorCode.AUTH_REQUIRED, 'Authentication required');
  return match[2]!;
}

/** Verifies client JWTs per PROTOCOL §3.2. */
export class TokenVerifier {
  private readonly maxLifetimeSeconds: number;
  private readonly clockTolerance: number;
  /** Insertion-ordered, so the oldest entry is evicted first. */
  private readonly verified = new Map<string, TokenPayload>();
  private readonly cacheSize: number;

  constructor(private readonly options: TokenVerifierOptions) {
    this.maxLifetimeSeconds = options.maxLifetimeSeconds ?? 86_400;
    this.clockTolerance = options.clockToleranceSeconds ?? 60;
    this.cacheSize = options.cacheSize ?? 10_000;
  }

  /** Forget every verified token: after a key left a JWKS, tokens signed with it must be checked again. */
  forgetVerifiedTokens(): void {
    this.verified.clear();
  }

  /**
   * Verify a client token. Signature checks dominate the cost of a checkpoint request, so a token that verified once
   * is remembered, keyed by the whole token string (a token differing in any byte is verified on its own), until its
   * `exp` (with the clock tolerance, as jose applies it); an expired one is verified again, which reports the expiry.
   * At most `cacheSize` tokens are remembered, the oldest dropped first. Only tokens that passed every check are
   * stored. A cache hit still lets stale remote keys refresh in the background, and a refresh that drops a key
   * empties the cache (`forgetVerifiedTokens`), so a removed key stops verifying as it does without the cache.
   */
  async verify(token: string): Promise<TokenPayload> {
    const cached = this.verified.get(token);
    if (cached) {
      if (Date.now() / 1000 <= cached.exp + this.clockTolerance) {
        for (const remote of this.options.remote) remote.refreshIfStale();
        return cached;
      }
      this.verified.delete(token);
    }
    const payload = await this.verifyUncached(token);
    if (this.verified.size >= this.cacheSize) this.verified.delete(this.verified.keys().next().value!);
    this.verified.set(token, payload);
    return payload;
  }

  private async verifyUncached(token: string): Promise<TokenPayload> {
    let header: jose.ProtectedHeaderParameters;
    try {
      header = jose.decodeProtectedHeader(token);
    } catch {
      throw invalidToken('Malformed token');
    }
    const alg = header.alg ?? '';
    if (!(SUPPORTED_ALGORITHMS as readonly string[]).includes(alg)) {
      throw invalidToken(`Unsupported algorithm ${JSON.stringify(alg)}`);
    }

    let candidates = await this.candidateKeys(header.kid, alg);
    if (candidates.length === 0) {
      // An unknown kid may be a key the identity provider rotated in: refresh (rate-limited) and retry once.
      await Promise.all(this.options.remote.map((remote) => remote.refresh({ wait: true }).catch(() => {})));
      candidates = await this.candidateKeys(header.kid, alg);
    }
    if (candidates.length === 0) {
      const unavailable = this.options.remote.find((remote) => remote.unavailableReason !== undefined);
      if (unavailable) throw authError(ErrorCode.JWKS_FETCH, 'Could not fetch the JWKS', unavailable.unavailableReason);
      throw invalidToken(
        'Could not find an appropriate key in the keystore. The key is missing or no key matched the token KID'
      );
    }

    let lastError: unknown;
    for (const key of candidates) {
      try {
        const { payload } = await jose.jwtVerify(token, key.key, {
          algorithms: [alg],
          clockTolerance: this.clockTolerance,
          requiredClaims: ['sub', 'iat', 'exp']
        });
        return this.checkClaims(payload, key);
      } catch (error) {
        if (error instanceof ServiceError) throw error;
        if (error instanceof jose.errors.JWSSignatureVerificationFailed) {
          lastError = error;
          continue; // a wildcard key that did not sign this token; try the next
        }
        throw mapJoseError(error);
      }
    }
    throw mapJoseError(lastError);
  }

  private async candidateKeys(kid: string | undefined, alg: string): Promise<VerificationKey[]> {
    const remoteKeys = (
      await Promise.all(this.options.remote.map((remote) => remote.getKeys().catch(() => [] as VerificationKey[])))
    ).flat();
    const all = [...this.options.staticKeys, ...remoteKeys];
    if (kid !== undefined) {
      const exact = all.find((key) => key.kid === kid);
      if (exact) {
        if (!keyAcceptsAlgorithm(exact, alg)) {
          throw invalidToken(`Token algorithm ${alg} does not match key ${kid}`);
        }
        return [exact];
      }
    }
    return all.filter((key) => key.kid === undefined && keyAcceptsAlgorithm(key, alg));
  }

  private checkClaims(payload: jose.JWTPayload, key: VerificationKey): TokenPayload {
    const now = Math.floor(Date.now() / 1000);
    const { sub, iat, exp } = payload;
    if ((typeof sub !== 'string' && typeof sub !== 'number') || sub === '')
      throw invalidToken('Token has no valid sub');
    // Storage keys cannot hold NUL (Postgres text), and lone surrogates all become U+FFFD there, so two different such
    // subs would share one user's records: refuse them here rather than fail or collide later.
    if (typeof sub === 'string' && UNSTORABLE_TEXT.test(sub))
      throw invalidToken('Token sub contains NUL or an unpaired surrogate');
    if (typeof iat !== 'number' || typeof exp !== 'number') throw invalidToken('Token needs numeric iat and exp');
    if (iat > now + this.clockTolerance) throw invalidToken('Token iat is in the future');
    if (exp < iat) throw invalidToken('Token exp is before iat');

    const allowedAudience = key.audience ?? this.options.audience;
    const tokenAudience = payload.aud === undefined ? [] : Array.isArray(payload.aud) ? payload.aud : [payload.aud];
    if (!tokenAudience.some((aud) => allowedAudience.includes(aud))) {
      throw authError(
        ErrorCode.TOKEN_AUDIENCE,
        'Unexpected "aud" claim value',
        tokenAudience.length === 0 ? 'Token has no aud' : `Expected one of ${JSON.stringify(allowedAudience)}`
      );
    }
    const maxLifetime = key.maxLifetimeSeconds ?? this.maxLifetimeSeconds;
    if (exp - iat > maxLifetime) {
      throw authError(
        ErrorCode.TOKEN_LIFETIME,
        `Token must expire in a maximum of ${maxLifetime} seconds, got ${exp - iat}`
      );
    }
    const parameters = payload.parameters;
    if (
      parameters !== undefined &&
      (typeof parameters !== 'object' || parameters === null || Array.isArray(parameters))
    ) {
      throw invalidToken('parameters claim must be a JSON object');
    }
    return { userId: String(sub), parameters: (parameters ?? {}) as Record<string, unknown>, exp, claims: payload };
  }
}

function invalidToken(details: string): ServiceError {
  return authError(ErrorCode.INVALID_TOKEN, 'Invalid token', details);
}

function mapJoseError(error: unknown): ServiceError {
  if (error instanceof jose.errors.JWTExpired) return authError(ErrorCode.TOKEN_EXPIRED, 'Token has expired');
  if (error instanceof jose.errors.JWTClaimValidationFailed) return invalidToken(error.message);
  if (error instanceof jose.errors.JWSSignatureVerificationFailed) return invalidToken('Signature verification failed');
  if (error instanceof jose.errors.JOSEError) return invalidToken(error.message);
  return invalidToken('Token could not be verified');
}
