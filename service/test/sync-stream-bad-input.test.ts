import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  dataOps,
  dataParts,
  linePart,
  parseErrorEnvelope,
  TEST_AUDIENCE,
  testJwks,
  type ErrorEnvelope,
  type SyncLine
} from '@syncpoint/test-fixtures';
import { startServiceHarness, type ServiceHarness } from './service-harness.js';
import { openSyncStream } from './sync-stream-client.js';

/**
 * `/sync/stream` with bad input (issue 5, "Bad input"): every case gets a clear error (an HTTP error before anything
 * streams, or an error line and a clean end), and afterwards the process still serves a normal stream.
 */

const SYNC_CONFIG = `
bucket_definitions:
  global:
    data:
      - SELECT * FROM todos
  by_list:
    parameters: SELECT list_id FROM memberships WHERE user_id = request.user_id()
    data:
      - SELECT * FROM items WHERE list_id = bucket.list_id
`;

const MAX_CONNECTIONS = 3;
const MAX_BUCKETS = 5;

async function waitFor(condition: () => boolean | Promise<boolean>, what: string, timeoutMs = 10_000) {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

describe('sync stream bad input', () => {
  let harness: ServiceHarness;
  let token: string;

  /** POST /sync/stream with a raw body; the status and the parsed JSON error envelope. */
  async function post(
    body: string,
    headers: Record<string, string> = {}
  ): Promise<{ status: number; json: ErrorEnvelope; contentType: string | null }> {
    const response = await fetch(`${harness.service.url}/sync/stream`, {
      method: 'POST',
      headers: {
        'Content-Type': 'application/json',
        Authorization: `Token ${token}`,
        Accept: 'application/x-ndjson',
        ...headers
      },
      body
    });
    const json = parseErrorEnvelope(await response.text());
    return { status: response.status, json, contentType: response.headers.get('content-type') };
  }

  /** A normal stream still works: full checkpoint, the global bucket's data, checkpoint_complete. */
  async function expectHealthy() {
    const stream = await openSyncStream(harness.service.url, token, { client_id: 'healthy', raw_data: true });
    try {
      expect(stream.response.status).toBe(200);
      const lines = await stream.until((line) => 'checkpoint_complete' in line);
      expect(linePart(lines[0], 'checkpoint').buckets.map((bucket) => bucket.bucket)).toContain('global[]');
      expect(dataOps(lines.filter((line) => line.data?.bucket === 'global[]'))).toHaveLength(20);
    } finally {
      await stream.close();
    }
    await waitFor(() => harness.service.syncConnections!.count === 0, 'the healthy stream to close');
  }

  beforeAll(async () => {
    harness = await startServiceHarness({
      role: 'unified',
      syncConfig: SYNC_CONFIG,
      config: {
        api: { parameters: { max_concurrent_connections: MAX_CONNECTIONS, max_buckets_per_connection: MAX_BUCKETS } },
        // The harness's key and audience, with a lifetime limit that allows 30-day tokens.
        client_auth: {
          audience: [TEST_AUDIENCE],
          jwks: testJwks(['hs256']),
          max_token_lifetime_seconds: 31 * 86_400
        }
      },
      keepaliveMs: () => 300,
      sourceSetup: [
        `INSERT INTO todos SELECT 't' || i, 'todo ' || i FROM generate_series(1, 20) i`,
        `CREATE TABLE memberships (id text PRIMARY KEY, user_id text, list_id text)`,
        `CREATE TABLE items (id text PRIMARY KEY, list_id text, v text)`,
        // 'crowded' is a member of 10 lists: with global[] that is 11 buckets, over the limit of 5.
        `INSERT INTO memberships SELECT 'm' || i, 'crowded', 'list' || i FROM generate_series(1, 10) i`,
        `INSERT INTO memberships VALUES ('single', 'user-1', 'list1')`,
        `INSERT INTO items SELECT 'i' || i, 'list' || (i % 10 + 1), 'item ' || i FROM generate_series(1, 30) i`
      ]
    });
    token = await harness.token('user-1');
    await waitFor(
      async () => (await harness.service.storage.getServingCheckpoint()) !== null,
      'a first checkpoint',
      30_000
    );
    await expectHealthy();
  }, 60_000);
  afterAll(async () => harness?.stop());

  it.each([
    ['an array', '[1, 2]'],
    ['a number', '42'],
    ['a string', '"buckets"'],
    ['null', 'null']
  ])('rejects a body that is %s with 400 PSYNC_S2001', async (_what, body) => {
    const { status, json } = await post(body);
    expect(status).toBe(400);
    expect(json.error).toMatchObject({ code: 'PSYNC_S2001', status: 400 });
    expect(json.error.details).toContain('body must be a JSON object');
    await expectHealthy();
  });

  it('rejects a body that is not JSON with 400', async () => {
    const { status, json } = await post('{"buckets": [');
    expect(status).toBe(400);
    expect(json.error.code).toBe('PSYNC_S2001');
    await expectHealthy();
  });

  it.each([
    ['a bucket name that is not a string', { buckets: [{ name: 42, after: '0' }] }, 'buckets[0].name'],
    ['an empty bucket name', { buckets: [{ name: '', after: '0' }] }, 'buckets[0].name'],
    ['buckets that is not an array', { buckets: { 'global[]': '0' } }, 'buckets must be an array'],
    ['an after that is a number', { buckets: [{ name: 'global[]', after: 5 }] }, 'buckets[0].after'],
    ['an after that is not decimal', { buckets: [{ name: 'global[]', after: '0x10' }] }, 'buckets[0].after'],
    ['a negative after', { buckets: [{ name: 'global[]', after: '-1' }] }, 'buckets[0].after'],
    ['an after beyond int64', { buckets: [{ name: 'global[]', after: '9223372036854775808' }] }, 'buckets[0].after'],
    ['an after that is missing', { buckets: [{ name: 'global[]' }] }, 'buckets[0].after'],
    [
      'more bucket entries than the per-connection limit',
      { buckets: Array.from({ length: MAX_BUCKETS + 1 }, (_, i) => ({ name: `b${i}[]`, after: '0' })) },
      'more than'
    ],
    ['a client_id that is a number', { client_id: 7 }, 'client_id must be a string'],
    ['a client_id with a slash', { client_id: 'a/b' }, 'client_id must not contain a slash'],
    ['an empty client_id', { client_id: '' }, 'client_id must not be empty'],
    ['a client_id with control characters', { client_id: 'a\u0000b' }, 'control characters'],
    ['parameters that are an array', { parameters: ['team'] }, 'parameters must be a JSON object'],
    ['parameters that are a string', { parameters: 'team=1' }, 'parameters must be a JSON object'],
    ['streams that is not an object', { streams: [] }, 'streams must be an object'],
    ['streams.include_defaults that is not a boolean', { streams: { include_defaults: 'yes' } }, 'include_defaults'],
    ['subscriptions that is not an array', { streams: { subscriptions: 'global' } }, 'subscriptions must be an array'],
    ['a subscription that is not an object', { streams: { subscriptions: [7] } }, 'subscriptions[0] must be an object'],
    ['a subscription without a stream name', { streams: { subscriptions: [{}] } }, 'subscriptions[0].stream'],
    [
      'subscription parameters that are an array',
      { streams: { subscriptions: [{ stream: 'global', parameters: [] }] } },
      'subscriptions[0].parameters must be a JSON object'
    ],
    [
      'an override_priority that is not a number',
      { streams: { subscriptions: [{ stream: 'global', parameters: null, override_priority: 'high' }] } },
      'subscriptions[0].override_priority'
    ],
    [
      'subscription parameters nested too deeply',
      {
        streams: {
          subscriptions: [
            { stream: 'global', parameters: JSON.parse('{"a":'.repeat(40) + '1' + '}'.repeat(40)) as object }
          ]
        }
      },
      'nested more than'
    ],
    [
      'subscription parameters that are too large',
      { streams: { subscriptions: [{ stream: 'global', parameters: { text: 'x'.repeat(100_000) } }] } },
      'larger than'
    ],
    [
      'more subscriptions than the limit (1000)',
      { streams: { subscriptions: Array(1001).fill({ stream: 'global', parameters: null, override_priority: null }) } },
      'more than 1000 entries'
    ]
  ])('rejects %s with 400 PSYNC_S2001 before streaming', async (_what, body, message) => {
    const { status, json, contentType } = await post(JSON.stringify(body));
    expect(status).toBe(400);
    expect(contentType).toContain('application/json');
    expect(json.error).toMatchObject({ code: 'PSYNC_S2001', status: 400, name: 'ValidationError' });
    expect(json.error.details).toContain(message);
    await expectHealthy();
  });

  it('reports every problem of a body at once', async () => {
    const { status, json } = await post(
      JSON.stringify({
        buckets: [
          { name: 1, after: '0' },
          { name: 'x', after: 'y' }
        ],
        client_id: 3,
        parameters: []
      })
    );
    expect(status).toBe(400);
    const problems = JSON.parse(json.error.details!) as string[];
    expect(problems).toHaveLength(4);
  });

  it('ignores unknown fields and unknown bucket names (not in the checkpoint line; the client drops them)', async () => {
    const stream = await openSyncStream(harness.service.url, token, {
      client_id: 'unknown-buckets',
      buckets: [
        { name: 'no_such_definition[]', after: '5' },
        { name: 'by_list["not-my-list"]', after: '3' }
      ],
      something_new: { nested: true },
      only: ['legacy']
    });
    try {
      expect(stream.response.status).toBe(200);
      const lines = await stream.until((line) => 'checkpoint_complete' in line);
      const buckets = linePart(lines[0], 'checkpoint')
        .buckets.map((bucket) => bucket.bucket)
        .sort();
      expect(buckets).toEqual(['by_list["list1"]', 'global[]']);
      const dataBuckets = new Set(dataParts(lines).map((data) => data.bucket));
      expect([...dataBuckets].sort()).toEqual(['by_list["list1"]', 'global[]']);
    } finally {
      await stream.close();
    }
    await expectHealthy();
  });

  it('resends a bucket from 0 when the client claims a position ahead of the checkpoint', async () => {
    const first = await openSyncStream(harness.service.url, token, { client_id: 'ahead' });
    const full = await first.until((line) => 'checkpoint_complete' in line);
    await first.close();
    const checkpoint = BigInt(linePart(full[0], 'checkpoint').last_op_id);
    const ahead = (checkpoint + 1_000_000n).toString();

    const stream = await openSyncStream(harness.service.url, token, {
      client_id: 'ahead',
      buckets: [{ name: 'global[]', after: ahead }]
    });
    try {
      const lines = await stream.until((line) => 'checkpoint_complete' in line);
      const first = linePart(lines[0], 'checkpoint');
      expect(BigInt(first.last_op_id)).toBeLessThan(BigInt(ahead));
      const globalData = dataParts(lines).filter((data) => data.bucket === 'global[]');
      expect(globalData[0]!.after).toBe('0');
      const ops = globalData.flatMap((data) => data.data);
      expect(ops).toHaveLength(20);
      // The client's checksum check then replaces its copy: the resent ops add up to the checkpoint's checksum.
      const sum = ops.reduce((total, op) => (total + op.checksum) >>> 0, 0);
      const bucket = first.buckets.find((entry) => entry.bucket === 'global[]');
      expect(sum | 0).toBe(bucket!.checksum);
    } finally {
      await stream.close();
    }
    await expectHealthy();
  });

  it('ends the stream with a PSYNC_S2305 error line when a user has too many buckets', async () => {
    const crowded = await harness.token('crowded');
    const stream = await openSyncStream(harness.service.url, crowded, { client_id: 'crowded' });
    expect(stream.response.status).toBe(200);
    const lines: SyncLine[] = [];
    for (;;) {
      const line = await stream.next();
      if (line === null) break; // ended cleanly (a reset connection would make the read throw)
      lines.push(line);
    }
    const errors = lines.filter((line) => 'error' in line);
    expect(errors).toMatchObject([{ error: { code: 'PSYNC_S2305', status: 400 } }]);
    expect(linePart(errors[0], 'error').description).toMatch(/Too many buckets: 11 \(limit 5\)/);
    // Nothing about the buckets leaks before the error.
    expect(lines.some((line) => 'checkpoint' in line || 'data' in line)).toBe(false);
    await waitFor(() => harness.service.syncConnections!.count === 0, 'the connection to be released');
    await expectHealthy();
  });

  it('answers 401 without a token, with a bad token and with an expired one, before anything streams', async () => {
    const body = JSON.stringify({ client_id: 'anon' });
    for (const [headers, code] of [
      [{ Authorization: '' }, 'PSYNC_S2106'],
      [{ Authorization: 'Basic dXNlcjpwYXNz' }, 'PSYNC_S2106'],
      [{ Authorization: 'Token not.a.jwt' }, 'PSYNC_S2101'],
      [{ Authorization: `Token ${await harness.token('user-1', { expiresInSeconds: -3600 })}` }, 'PSYNC_S2103']
    ] as const) {
      const { status, json, contentType } = await post(body, headers);
      expect(status).toBe(401);
      expect(contentType).toContain('application/json');
      expect(json.error.code).toBe(code);
    }
    expect(harness.service.syncConnections!.count).toBe(0);
    await expectHealthy();
  });

  it('sends token_expires_in keepalives and ends with {"token_expires_in":0} when the token expires mid-stream', async () => {
    const shortLived = await harness.token('user-1', { expiresInSeconds: 3 });
    const stream = await openSyncStream(harness.service.url, shortLived, { client_id: 'expiring' });
    const opened = Date.now();
    const lines: SyncLine[] = [];
    for (;;) {
      const line = await stream.next(10_000);
      if (line === null) break;
      lines.push(line);
    }
    const elapsed = Date.now() - opened;
    expect(elapsed).toBeGreaterThan(1_000);
    expect(elapsed).toBeLessThan(5_000);
    expect(lines.some((line) => 'checkpoint_complete' in line)).toBe(true);
    const notices = lines.flatMap((line) => (line.token_expires_in === undefined ? [] : [line.token_expires_in]));
    expect(notices.length).toBeGreaterThanOrEqual(3); // the 20 s-before-expiry notice, keepalives (300 ms), the final 0
    for (const seconds of notices) expect(Number.isInteger(seconds) && seconds >= 0 && seconds <= 3).toBe(true);
    expect(notices.slice(0, -1).every((seconds) => seconds > 0)).toBe(true);
    expect(lines.at(-1)).toEqual({ token_expires_in: 0 });
    await waitFor(() => harness.service.syncConnections!.count === 0, 'the connection to be released');
    await expectHealthy();
  });

  it('keeps a stream open for a token that lives longer than one Node timer can wait (24.8 days)', async () => {
    const longLived = await harness.token('user-1', { expiresInSeconds: 30 * 86_400 });
    const stream = await openSyncStream(harness.service.url, longLived, { client_id: 'long-lived' });
    try {
      expect(stream.response.status).toBe(200);
      const lines = await stream.until((line) => 'token_expires_in' in line, 3_000);
      expect(lines.some((line) => 'checkpoint_complete' in line)).toBe(true);
      expect(linePart(lines.at(-1), 'token_expires_in')).toBeGreaterThan(29 * 86_400);
      await new Promise((resolve) => setTimeout(resolve, 700));
      expect(harness.service.syncConnections!.count).toBe(1);
      const more = await stream.until((line) => 'token_expires_in' in line, 3_000);
      expect(linePart(more.at(-1), 'token_expires_in')).toBeGreaterThan(29 * 86_400);
    } finally {
      await stream.close();
    }
    await expectHealthy();
  });

  it(`limits open streams per process: the next stream gets 429 PSYNC_S2304`, async () => {
    const open = [];
    for (let i = 0; i < MAX_CONNECTIONS; i++) {
      const stream = await openSyncStream(harness.service.url, token, { client_id: `limit-${i}` });
      expect(stream.response.status).toBe(200);
      await stream.until((line) => 'checkpoint_complete' in line);
      open.push(stream);
    }
    expect(harness.service.syncConnections!.count).toBe(MAX_CONNECTIONS);
    const { status, json } = await post(JSON.stringify({ client_id: 'one-too-many' }));
    expect(status).toBe(429);
    expect(json.error).toMatchObject({ code: 'PSYNC_S2304', status: 429 });
    // The open streams are unaffected and still get keepalives.
    for (const stream of open) await stream.until((line) => 'token_expires_in' in line, 3_000);
    // Closing one frees its slot at once.
    await open.pop()!.close();
    await waitFor(
      () => harness.service.syncConnections!.count === MAX_CONNECTIONS - 1,
      'the slot to be released',
      2_000
    );
    const again = await openSyncStream(harness.service.url, token, { client_id: 'after-limit' });
    expect(again.response.status).toBe(200);
    await again.until((line) => 'checkpoint_complete' in line);
    open.push(again);
    for (const stream of open) await stream.close();
    await waitFor(() => harness.service.syncConnections!.count === 0, 'every slot to be released');
    await expectHealthy();
  });

  it('while shutting down: open streams end cleanly and new ones get 503 PSYNC_S2003', async () => {
    const stream = await openSyncStream(harness.service.url, token, { client_id: 'shutdown' });
    await stream.until((line) => 'checkpoint_complete' in line);
    harness.service.syncConnections!.closeAll(); // what stop() does first
    for (;;) {
      const line = await stream.next(5_000);
      if (line === null) break;
    }
    const { status, json } = await post(JSON.stringify({ client_id: 'late' }));
    expect(status).toBe(503);
    expect(json.error.code).toBe('PSYNC_S2003');
  });
});
