import { createLogger } from '@syncpoint/service-core';
import type { PostgresServer } from '@syncpoint/dev-postgres';
import { testPostgresServer } from '@syncpoint/dev-postgres';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startServiceHarness, type ServiceHarness } from './service-harness.js';
import { openSyncStream } from './sync-stream-client.js';

/**
 * Issue 6 item 6: no token or secret is ever logged. The service runs with every log level on (trace), writing
 * JSON lines to memory, with a config holding a storage password and API tokens; requests carry JWTs in headers
 * and query strings, valid and invalid. None of the secrets may appear anywhere in the log.
 */
const STORAGE_PASSWORD = 'storage-pw-Zq7xK2mVt9';
const STORAGE_USER = 'syncpoint_secret_owner';
const API_TOKEN = 'api-token-Hs83kLq0Pz';
const HMAC_SECRET = 'a-test-secret-of-at-least-32-bytes';

let server: PostgresServer;
let harness: ServiceHarness;
const lines: string[] = [];

beforeAll(async () => {
  server = await testPostgresServer();
  const admin = new pg.Client({ connectionString: server.url('postgres') });
  await admin.connect();
  await admin.query(`DROP ROLE IF EXISTS ${STORAGE_USER}`).catch(() => {});
  await admin.query(`CREATE ROLE ${STORAGE_USER} LOGIN SUPERUSER PASSWORD '${STORAGE_PASSWORD}'`).catch(() => {});
  await admin.end();
  // Bucket storage reached as a user with a distinctive password, through the config's storage URI.
  const withSecretUser: PostgresServer = {
    port: server.port,
    url: (database?: string) => {
      const url = new URL(server.url(database));
      url.username = STORAGE_USER;
      url.password = STORAGE_PASSWORD;
      return url.toString();
    },
    ensureDatabase: (name) => server.ensureDatabase(name),
    stop: async () => {}
  };
  const logger = createLogger({ level: 'trace', destination: { write: (line: string) => void lines.push(line) } });
  harness = await startServiceHarness({
    role: 'unified',
    logger,
    storagePostgres: withSecretUser,
    config: { api: { tokens: [API_TOKEN] } }
  });
}, 60_000);
afterAll(async () => {
  await harness?.stop();
  await server?.stop();
});

describe('logs carry no secrets (issue 6 item 6)', () => {
  it('never logs the JWT, the HMAC key, the storage password or an API token', async () => {
    const token = await harness.token('log-user');
    const expired = await harness.token('log-user', { expiresInSeconds: -3600 });
    const url = harness.service.url;
    const post = (
      path: string,
      headers: Record<string, string>,
      body: unknown = { client_id: 'c', checkpoint_request_id: '1' }
    ) =>
      fetch(`${url}${path}`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', ...headers },
        body: JSON.stringify(body)
      });

    expect((await post('/sync/checkpoint-request', { Authorization: `Token ${token}` })).status).toBe(200);
    expect((await post('/sync/checkpoint-request', { Authorization: `Bearer ${expired}` })).status).toBe(401);
    expect((await post('/sync/checkpoint-request', { Authorization: `Token ${token}x` })).status).toBe(401);
    await post(`/sync/checkpoint-request?token=${token}`, {}, { client_id: 'c', checkpoint_request_id: '2', token });
    await fetch(`${url}/write-checkpoint2.json?client_id=c`, { headers: { Authorization: `Token ${token}` } });
    await fetch(`${url}/no-such-route?access_token=${token}`, { headers: { Authorization: `Token ${token}` } });
    await post('/api/admin/v1/diagnostics', { Authorization: `Bearer ${API_TOKEN}` }, {});
    await post('/api/admin/v1/diagnostics', { Authorization: `Bearer wrong-${API_TOKEN}` }, {});
    const stream = await openSyncStream(url, token, { client_id: 'c', raw_data: true });
    await stream.next(15_000);
    await stream.close();
    await new Promise((resolve) => setTimeout(resolve, 200));

    const log = lines.join('');
    expect(lines.length).toBeGreaterThan(5);
    expect(log).toContain('log-user'); // the requests were logged (with their user), just not their secrets
    const signature = token.split('.')[2]!;
    for (const secret of [
      token,
      signature,
      expired.split('.')[2]!,
      HMAC_SECRET,
      Buffer.from(HMAC_SECRET).toString('base64url'),
      STORAGE_PASSWORD,
      API_TOKEN
    ]) {
      expect(log).not.toContain(secret);
    }
  }, 60_000);
});
