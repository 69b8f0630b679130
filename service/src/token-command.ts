import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { ConfigError, type ResolvedConfig } from '@syncpoint/service-core';
import { DEV_AUDIENCE, type DevKey } from './dev-token.js';

/** The JWT lifetime the service accepts by default (PROTOCOL §13). */
const DEFAULT_MAX_TOKEN_LIFETIME_SECONDS = 86_400;

const HMAC_ALGORITHMS = new Set(['HS256', 'HS384', 'HS512']);

/**
 * The key and audience `syncpoint token` signs with: the first HMAC (`kty: oct`) key of `client_auth.jwks` and the
 * first configured audience; with no config, the embedded default's `.syncpoint/dev-key.json`.
 */
export async function devSigningKey(
  config: ResolvedConfig | null,
  root: string
): Promise<{ key: DevKey; audience: string; maxLifetime: number }> {
  if (config === null) {
    const file = path.join(root, '.syncpoint', 'dev-key.json');
    if (!existsSync(file)) {
      throw new ConfigError([
        `no config found and no embedded-default dev key at ${file}: run \`syncpoint start\` here first, or pass -c <config file>`
      ]);
    }
    let key: DevKey;
    try {
      key = JSON.parse(await readFile(file, 'utf8')) as DevKey;
    } catch (error) {
      throw new ConfigError([`${file}: not a JSON key (${(error as Error).message})`]);
    }
    if (typeof key?.k !== 'string') throw new ConfigError([`${file}: not an HMAC key (no "k")`]);
    return { key, audience: DEV_AUDIENCE, maxLifetime: DEFAULT_MAX_TOKEN_LIFETIME_SECONDS };
  }
  const keys = (config.client_auth.jwks?.keys ?? []) as Array<Record<string, unknown>>;
  const hmac = keys.find(
    (key) =>
      key.kty === 'oct' &&
      typeof key.k === 'string' &&
      (key.alg === undefined || HMAC_ALGORITHMS.has(key.alg as string))
  );
  if (!hmac) {
    throw new ConfigError([
      `client_auth.jwks.keys: no HMAC key (kty: oct with k) in ${config.source}; syncpoint token can only sign with a shared secret. ` +
        'Tokens for RSA/EC keys come from your auth provider.'
    ]);
  }
  const audience = config.client_auth.audience[0];
  if (audience === undefined)
    throw new ConfigError([
      `client_auth.audience: none configured in ${config.source}; tokens need an aud the service accepts`
    ]);
  const key: DevKey = {
    kty: 'oct',
    alg: ((hmac.alg as string | undefined) ?? 'HS256') as DevKey['alg'],
    kid: (hmac.kid as string | undefined) ?? (undefined as unknown as string),
    k: hmac.k as string
  };
  return {
    key,
    audience,
    maxLifetime: config.client_auth.max_token_lifetime_seconds ?? DEFAULT_MAX_TOKEN_LIFETIME_SECONDS
  };
}
