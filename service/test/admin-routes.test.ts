import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseErrorEnvelope, syncConfig } from '@syncpoint/test-fixtures';
import { startServiceHarness, type ServiceHarness } from './service-harness.js';

const DEMO_SYNC_CONFIG = syncConfig('demo-todos');

const ADMIN_TOKEN = 'an-admin-token-for-tests';
const ROUTES: Array<[method: string, path: string, body?: unknown]> = [
  ['POST', '/api/admin/v1/diagnostics', {}],
  ['POST', '/api/sync-rules/v1/validate', { content: DEMO_SYNC_CONFIG }],
  ['GET', '/api/sync-rules/v1/current']
];

let harness: ServiceHarness;

async function call(
  base: string,
  method: string,
  path: string,
  options: { authorization?: string; body?: unknown } = {}
) {
  const response = await fetch(`${base}${path}`, {
    method,
    headers: {
      ...(options.authorization ? { Authorization: options.authorization } : {}),
      ...(options.body === undefined ? {} : { 'Content-Type': 'application/json' })
    },
    body: options.body === undefined ? undefined : JSON.stringify(options.body)
  });
  return response;
}

/** The `data` of a successful admin API response, in the shape the test declares for that route. */
async function dataOf<T>(response: Response): Promise<T> {
  return ((await response.json()) as { data: T }).data;
}

/** The admin API responses as these tests read them. */
interface Diagnostics {
  role: string;
  connections: unknown;
  source: { head: string };
  storage: { size_bytes: number };
  checkpoint_requests: unknown;
  streams: Array<{ slot: unknown; last_checkpoint: { op_id: string }; lag_bytes: unknown }>;
  errors: unknown[];
}
interface ValidationResult {
  valid: boolean;
  errors: unknown[];
  warnings: unknown[];
}
interface SyncConfigVersion {
  id: number;
  state: string;
  content: string;
}
interface CurrentSyncConfigs {
  current: SyncConfigVersion | null;
  next: SyncConfigVersion | null;
}

beforeAll(async () => {
  harness = await startServiceHarness({ role: 'unified', config: { api: { tokens: ['another-token', ADMIN_TOKEN] } } });
  await harness.sourceDb.query(`INSERT INTO todos (id, description) VALUES ('a1', 'x')`);
  for (let attempt = 0; attempt < 300 && !(await harness.service.storage.getServingCheckpoint()); attempt++) {
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}, 120_000);
afterAll(async () => harness?.stop());

describe('admin API authorisation', () => {
  it('answers 401 without a token, with a wrong token, or a malformed header, and leaks nothing', async () => {
    const bodies = new Set<string>();
    for (const [method, path, body] of ROUTES) {
      for (const authorization of [
        undefined,
        'Bearer wrong',
        `Token ${ADMIN_TOKEN}x`,
        `Token ${ADMIN_TOKEN.slice(0, -1)}`,
        ADMIN_TOKEN,
        `Basic ${ADMIN_TOKEN}`
      ]) {
        const response = await call(harness.service.url, method, path, { authorization, body });
        expect(response.status, `${method} ${path} with ${authorization}`).toBe(401);
        bodies.add(await response.text());
      }
    }
    // One and the same answer whatever was wrong: no hint about tokens, routes or the reason.
    expect([...bodies]).toEqual([
      JSON.stringify({
        error: { name: 'AuthorizationError', code: 'PSYNC_S2106', status: 401, description: 'Authentication required' }
      })
    ]);
  });

  it('accepts any configured token as Bearer or Token', async () => {
    for (const authorization of [`Bearer ${ADMIN_TOKEN}`, `Token ${ADMIN_TOKEN}`, 'Token another-token']) {
      const response = await call(harness.service.url, 'GET', '/api/sync-rules/v1/current', { authorization });
      expect(response.status).toBe(200);
    }
  });

  it('with no api.tokens configured, every admin route answers 401', async () => {
    const open = await startServiceHarness({ role: 'api' });
    try {
      for (const [method, path, body] of ROUTES) {
        for (const authorization of [undefined, 'Token ', 'Token anything', `Bearer ${ADMIN_TOKEN}`]) {
          const response = await call(open.service.url, method, path, { authorization, body });
          expect(response.status).toBe(401);
        }
      }
    } finally {
      await open.stop();
    }
  });
});

describe('admin API routes', () => {
  const authorization = `Bearer ${ADMIN_TOKEN}`;

  it('POST /api/admin/v1/diagnostics: connections, replication state per stream, errors', async () => {
    const response = await call(harness.service.url, 'POST', '/api/admin/v1/diagnostics', { authorization, body: {} });
    expect(response.status).toBe(200);
    const data = await dataOf<Diagnostics>(response);
    expect(data.role).toBe('unified');
    expect(data.connections).toEqual({ sync_streams: 0, max_sync_streams: 200 });
    expect(data.source.head).toMatch(/^[0-9A-F]{8}\/[0-9A-F]{8}$/);
    expect(data.storage.size_bytes).toBeGreaterThan(0);
    expect(data.checkpoint_requests).toEqual({
      total: expect.any(Number) as unknown,
      pending: expect.any(Number) as unknown
    });
    expect(data.streams).toHaveLength(1);
    const stream = data.streams[0]!;
    expect(stream).toMatchObject({ state: 'ACTIVE', snapshot_done: true, last_error: null });
    expect(stream.slot).toMatchObject({
      name: expect.stringMatching(/^powersync_\d+_[0-9a-f]{4}$/) as unknown,
      exists: true
    });
    expect(stream.last_checkpoint.op_id).toMatch(/^\d+$/);
    expect(typeof stream.lag_bytes).toBe('number');
    expect(data.errors).toEqual([]);
  });

  it('diagnostics reports a stream error and a missing slot', async () => {
    const [stream] = (await harness.service.storage.getStatus!()).streams;
    await harness.storageDb.query(`UPDATE powersync.sync_rules SET last_fatal_error = 'boom' WHERE id = $1`, [
      stream!.id
    ]);
    try {
      const data = await dataOf<Diagnostics>(
        await call(harness.service.url, 'POST', '/api/admin/v1/diagnostics', { authorization })
      );
      expect(data.errors).toEqual([{ stream_id: stream!.id, message: 'boom' }]);
    } finally {
      await harness.storageDb.query(`UPDATE powersync.sync_rules SET last_fatal_error = NULL WHERE id = $1`, [
        stream!.id
      ]);
    }
  });

  it('POST /api/sync-rules/v1/validate: errors and warnings of the given sync config', async () => {
    const valid = await call(harness.service.url, 'POST', '/api/sync-rules/v1/validate', {
      authorization,
      body: { content: DEMO_SYNC_CONFIG }
    });
    expect(valid.status).toBe(200);
    expect(await dataOf<ValidationResult>(valid)).toEqual({ valid: true, errors: [], warnings: [] });

    const invalid = await call(harness.service.url, 'POST', '/api/sync-rules/v1/validate', {
      authorization,
      body: { content: 'bucket_definitions:\n  broken:\n    data:\n      - SELECT FROM\n' }
    });
    expect(invalid.status).toBe(200);
    const data = await dataOf<ValidationResult>(invalid);
    expect(data.valid).toBe(false);
    expect(data.errors.length).toBeGreaterThan(0);
    expect(data.errors[0]).toMatchObject({
      level: 'fatal',
      message: expect.stringContaining('broken') as unknown,
      bucket_definition: 'broken'
    });

    const yamlError = await call(harness.service.url, 'POST', '/api/sync-rules/v1/validate', {
      authorization,
      body: { content: 'a: [' }
    });
    expect((await dataOf<ValidationResult>(yamlError)).valid).toBe(false);
  });

  it('validate: 400 when content is missing or not a string', async () => {
    for (const body of [{}, { content: 42 }, []]) {
      const response = await call(harness.service.url, 'POST', '/api/sync-rules/v1/validate', { authorization, body });
      expect(response.status).toBe(400);
      expect(parseErrorEnvelope(await response.text()).error.code).toBe('PSYNC_S2001');
    }
  });

  it('GET /api/sync-rules/v1/current: the active and the processing sync config', async () => {
    const response = await call(harness.service.url, 'GET', '/api/sync-rules/v1/current', { authorization });
    expect(response.status).toBe(200);
    const data = await dataOf<CurrentSyncConfigs>(response);
    expect(data.current).toEqual({ id: expect.any(Number) as unknown, state: 'ACTIVE', content: DEMO_SYNC_CONFIG });
    expect(data.next).toBeNull();

    const next = `${DEMO_SYNC_CONFIG}  # redeployed\n`;
    const deployed = await harness.service.storage.deploySyncConfig(next);
    const after = await dataOf<CurrentSyncConfigs>(
      await call(harness.service.url, 'GET', '/api/sync-rules/v1/current', { authorization })
    );
    expect(after.next).toEqual({ id: deployed.id, state: 'PROCESSING', content: next });
    expect(after.current?.id).toBe(data.current?.id);
  });
});
