import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import * as jose from 'jose';

export const DEV_AUDIENCE = 'syncpoint-dev';

export interface DevKey {
  kty: 'oct';
  alg: 'HS256';
  kid: string;
  k: string;
}

/** The development HS256 key in `file`, created (random, 256 bits) on first use. */
export async function loadOrCreateDevKey(file: string): Promise<DevKey> {
  if (existsSync(file)) return JSON.parse(await readFile(file, 'utf8')) as DevKey;
  const key: DevKey = { kty: 'oct', alg: 'HS256', kid: 'syncpoint-dev', k: jose.base64url.encode(randomBytes(32)) };
  await mkdir(path.dirname(file), { recursive: true });
  await writeFile(file, JSON.stringify(key, null, 2) + '\n', { mode: 0o600 });
  return key;
}

/** A client token signed with a dev key (the SDK would get this from the app's backend). */
export async function signDevToken(
  key: DevKey,
  options: { sub: string; audience?: string; expiresInSeconds?: number }
): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  return new jose.SignJWT({})
    .setProtectedHeader({ alg: key.alg, kid: key.kid })
    .setSubject(options.sub)
    .setAudience(options.audience ?? DEV_AUDIENCE)
    .setIssuedAt(now)
    .setExpirationTime(now + (options.expiresInSeconds ?? 12 * 3600))
    .sign(jose.base64url.decode(key.k));
}
