import { createSecretKey } from 'node:crypto';
import type { CoreServiceConfig } from '../config/config-schema.js';
import type { Logger } from '../logger.js';
import { createJwksAddressGuard } from './jwks-address-guard.js';
import { importVerificationKey, RemoteJwks, type VerificationKey } from './key-store.js';
import { TokenVerifier } from './token-verifier.js';

const SUPABASE_MAX_LIFETIME_SECONDS = 7 * 86_400 + 20 * 60;

/** Build the client token verifier from the `client_auth:` section (PROTOCOL §3.3). */
export async function createTokenVerifier(
  clientAuth: CoreServiceConfig['client_auth'],
  options: { logger?: Logger; fetch?: typeof fetch } = {}
): Promise<TokenVerifier> {
  const staticKeys: VerificationKey[] = [];
  for (const [index, jwk] of (clientAuth.jwks?.keys ?? []).entries()) {
    try {
      const key = await importVerificationKey(jwk, { remote: false });
      if (key) staticKeys.push(key);
    } catch (error) {
      throw new Error(`client_auth.jwks.keys.${index}: ${(error as Error).message}`, { cause: error });
    }
  }
  if (clientAuth.supabase && clientAuth.supabase_jwt_secret) {
    staticKeys.push({
      kty: 'oct',
      alg: 'HS256',
      key: createSecretKey(Buffer.from(clientAuth.supabase_jwt_secret, 'utf8')),
      audience: ['authenticated'],
      maxLifetimeSeconds: SUPABASE_MAX_LIFETIME_SECONDS
    });
  }
  const uris = clientAuth.jwks_uri === undefined ? [] : [clientAuth.jwks_uri].flat();
  // The schema has already checked the ranges (a typo fails `syncpoint validate` and the start).
  const checkAddress = createJwksAddressGuard(
    clientAuth.jwks_reject_ip_ranges ?? (clientAuth.block_local_jwks ? ['local'] : [])
  );
  // The key sets call this only from a refresh, which runs after `verifier` below is assigned.
  const onKeysRemoved = () => verifier.forgetVerifiedTokens();
  const remote = uris.map(
    (uri) => new RemoteJwks(uri, { logger: options.logger, fetch: options.fetch, checkAddress, onKeysRemoved })
  );
  const verifier = new TokenVerifier({
    staticKeys,
    remote,
    audience: clientAuth.audience,
    maxLifetimeSeconds: clientAuth.max_token_lifetime_seconds
  });
  return verifier;
}
