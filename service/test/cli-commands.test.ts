import { mkdir, mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import * as jose from 'jose';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { stringify } from 'yaml';
import { TEST_AUDIENCE } from '@syncpoint/test-fixtures';
import { DEV_AUDIENCE, type DevKey } from '../src/dev-token.js';
import { runCli } from './run-cli.js';

/** `syncpoint fetch-checkpoint --json` output as this test reads it. */
interface FetchedCheckpoint {
  write_checkpoint?: string;
  buckets: unknown[];
}
import { startServiceHarness, type ServiceHarness } from './service-harness.js';

// Every case spawns the CLI (tsx compiles it on start): slow on a busy 2-core machine.
vi.setConfig({ testTimeout: 180_000 });

let harness: ServiceHarness;
let dir: string;
let configFile: string;

const connectionString = (pool: { options: { connectionString?: string } }) => pool.options.connectionString!;

async function waitForCheckpoint() {
  for (let attempt = 0; attempt < 300; attempt++) {
    if (await harness.service.storage.getServingCheckpoint()) return;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error('replication never checkpointed');
}

beforeAll(async () => {
  // A running service that replicates, so status has a slot and a checkpoint and fetch gets one.
  harness = await startServiceHarness({ role: 'unified' });
  await harness.sourceDb.query(`INSERT INTO todos (id, description) VALUES ('t1', 'one'), ('t2', 'two')`);
  dir = await mkdtemp(path.join(tmpdir(), 'syncpoint-cli-commands-'));
  configFile = path.join(dir, 'powersync.yaml');
  await writeFile(
    configFile,
    stringify({
      replication: {
        connections: [{ type: 'postgresql', uri: connectionString(harness.sourceDb), sslmode: 'disable' }]
      },
      storage: { type: 'postgresql', uri: connectionString(harness.storageDb), sslmode: 'disable' },
      client_auth: {
        audience: [TEST_AUDIENCE, 'other'],
        jwks: { keys: [{ kty: 'RSA', kid: 'rsa', n: 'x', e: 'AQAB' }, harness.devKey] }
      }
    })
  );
  await waitForCheckpoint();
}, 120_000);
afterAll(async () => harness?.stop());

describe('syncpoint status, token, fetch', () => {
  it('prints help for each command and exits 0', async () => {
    for (const command of ['status', 'token', 'fetch']) {
      const { code, stdout } = await runCli([command, '--help']);
      expect(code).toBe(0);
      expect(stdout).toContain(`Usage: syncpoint ${command}`);
    }
  });

  it('exits 2 with a message on wrong usage', async () => {
    const noSub = await runCli(['token', '-c', configFile]);
    expect(noSub.code).toBe(2);
    expect(noSub.stderr).toContain("required option '--sub <user>'");
    const badExpiry = await runCli(['token', '--sub', 'u', '-c', configFile, '--expires-in', 'soon']);
    expect(badExpiry.code).toBe(2);
    expect(badExpiry.stderr).toContain('--expires-in: expected a positive integer');
    const tooLong = await runCli(['token', '--sub', 'u', '-c', configFile, '--expires-in', '100000']);
    expect(tooLong.code).toBe(2);
    expect(tooLong.stderr).toContain('at most 86400');
    expect((await runCli(['status', '--frobnicate'])).code).toBe(2);
    expect((await runCli(['fetch'])).code).toBe(2);
    const badUrl = await runCli(['fetch', '--token', 't', '--url', 'not a url']);
    expect(badUrl.code).toBe(2);
    expect(badUrl.stderr).toContain('--url');
  });

  it('exits 3 on a missing config file or bad config', async () => {
    const missing = await runCli(['status', '-c', path.join(dir, 'nope.yaml')]);
    expect(missing.code).toBe(3);
    expect(missing.stderr).toContain('cannot read config file');
    const bad = path.join(dir, 'bad.yaml');
    await writeFile(bad, stringify({ storage: { type: 'postgresql' }, port: 'eighty' }));
    expect((await runCli(['status', '-c', bad])).code).toBe(3);
    expect((await runCli(['token', '--sub', 'u', '-c', bad])).code).toBe(3);
    const empty = await mkdtemp(path.join(tmpdir(), 'syncpoint-empty-'));
    const noConfig = await runCli(['status'], { cwd: empty, env: { INIT_CWD: empty } });
    expect(noConfig.code).toBe(3);
    expect(noConfig.stderr).toContain('no config found');
  });

  it('token: signs with the first HMAC key and the first audience', async () => {
    const { code, stdout } = await runCli(['token', '--sub', 'alice', '-c', configFile, '--expires-in', '600']);
    expect(code).toBe(0);
    const token = stdout.trim();
    const { payload, protectedHeader } = await jose.jwtVerify(token, jose.base64url.decode(harness.devKey.k), {
      audience: TEST_AUDIENCE
    });
    expect(payload.sub).toBe('alice');
    expect(payload.exp! - payload.iat!).toBe(600);
    expect(protectedHeader.kid).toBe(harness.devKey.kid);
    // The service accepts it.
    const response = await fetch(`${harness.service.url}/sync/checkpoint-request`, {
      method: 'POST',
      headers: { Authorization: `Token ${token}`, 'Content-Type': 'application/json' },
      body: JSON.stringify({ client_id: 'cli', checkpoint_request_id: '1' })
    });
    expect(response.status).toBe(200);
  });

  it('token: a clear error when the config has no HMAC key', async () => {
    const rsaOnly = path.join(dir, 'rsa-only.yaml');
    await writeFile(
      rsaOnly,
      stringify({
        storage: { type: 'postgresql', uri: 'postgresql://x@127.0.0.1:1/x' },
        client_auth: { audience: ['a'], jwks: { keys: [{ kty: 'RSA', n: 'x', e: 'AQAB' }] } }
      })
    );
    const { code, stderr } = await runCli(['token', '--sub', 'u', '-c', rsaOnly]);
    expect(code).toBe(3);
    expect(stderr).toContain('no HMAC key');
  });

  it('token: with no config, uses the embedded default key in ./.syncpoint/', async () => {
    const root = await mkdtemp(path.join(tmpdir(), 'syncpoint-token-'));
    const none = await runCli(['token', '--sub', 'u'], { cwd: root, env: { INIT_CWD: root } });
    expect(none.code).toBe(3);
    expect(none.stderr).toContain('dev-key.json');
    const key: DevKey = {
      kty: 'oct',
      alg: 'HS256',
      kid: 'syncpoint-dev',
      k: jose.base64url.encode('an-embedded-default-secret-of-32-bytes')
    };
    await mkdir(path.join(root, '.syncpoint'));
    await writeFile(path.join(root, '.syncpoint', 'dev-key.json'), JSON.stringify(key));
    const { code, stdout } = await runCli(['token', '--sub', 'u'], { cwd: root, env: { INIT_CWD: root } });
    expect(code).toBe(0);
    const { payload } = await jose.jwtVerify(stdout.trim(), jose.base64url.decode(key.k), { audience: DEV_AUDIENCE });
    expect(payload.sub).toBe('u');
    expect(payload.exp! - payload.iat!).toBe(3600);
  });

  it('status: slot, lag, last checkpoint, pending checkpoint requests and storage size', async () => {
    const { code, stdout, stderr } = await runCli(['status', '-c', configFile]);
    expect(stderr).toBe('');
    expect(code).toBe(0);
    expect(stdout).toMatch(/storage:\s+postgresql, [\d.]+ [kM]?B/);
    expect(stdout).toMatch(/source head:\s+[0-9A-F]{8}\/[0-9A-F]{8}/);
    expect(stdout).toMatch(/checkpoint requests:\s+\d+ pending, \d+ stored/);
    expect(stdout).toMatch(/stream \d+ \(ACTIVE\)/);
    expect(stdout).toMatch(/replication slot:\s+powersync_\d+_[0-9a-f]{4}, (active|inactive), confirmed_flush_lsn /);
    expect(stdout).toMatch(/last checkpoint:\s+op \d+, lsn [0-9A-F]{8}\/[0-9A-F]{8}/);
    expect(stdout).toMatch(/lag:\s+\d+ bytes/);

    const json = await runCli(['status', '-c', configFile, '--json']);
    expect(json.code).toBe(0);
    const report = JSON.parse(json.stdout) as {
      storage: { size_bytes: number };
      streams: Array<{ slot: { exists: boolean }; lag_bytes: unknown }>;
      checkpoint_requests: unknown;
    };
    expect(report.storage.size_bytes).toBeGreaterThan(0);
    expect(report.streams[0]!.slot.exists).toBe(true);
    expect(typeof report.streams[0]!.lag_bytes).toBe('number');
    expect(report.checkpoint_requests).toEqual({
      total: expect.any(Number) as unknown,
      pending: expect.any(Number) as unknown
    });
  });

  it('status: exits 1 with a message when storage is unreachable', async () => {
    const unreachable = path.join(dir, 'unreachable.yaml');
    await writeFile(
      unreachable,
      stringify({ storage: { type: 'postgresql', uri: 'postgresql://x:y@127.0.0.1:1/x', sslmode: 'disable' } })
    );
    const { code, stderr } = await runCli(['status', '-c', unreachable]);
    expect(code).toBe(1);
    expect(stderr).toMatch(/^error: .*ECONNREFUSED/m);
  });

  it('fetch: prints the first checkpoint with bucket checksums, then exits', async () => {
    const token = await harness.token('fetch-user');
    const request = await fetch(`${harness.service.url}/sync/checkpoint-request`, {
      method: 'POST',
      headers: { Authorization: `Token ${token}`, 'Content-Type': 'application/json' },
      body: JSON.stringify({ client_id: 'dev1', checkpoint_request_id: '7' })
    });
    expect(request.status).toBe(200);
    // Wait until replication acknowledges the request (a checkpoint past its head).
    let output = '';
    for (let attempt = 0; attempt < 20; attempt++) {
      const { code, stdout } = await runCli([
        'fetch',
        '--token',
        token,
        '--url',
        harness.service.url,
        '--client-id',
        'dev1',
        '--json'
      ]);
      expect(code).toBe(0);
      output = stdout;
      if ((JSON.parse(stdout) as FetchedCheckpoint).write_checkpoint === '7') break;
    }
    const checkpoint = JSON.parse(output) as FetchedCheckpoint;
    expect(checkpoint.write_checkpoint).toBe('7');
    expect(checkpoint.buckets).toEqual([
      expect.objectContaining({ bucket: 'global[]', count: 2, checksum: expect.any(Number) as unknown })
    ]);

    const text = await runCli(['fetch', '--token', token, '--url', harness.service.url]);
    expect(text.code).toBe(0);
    expect(text.stdout).toMatch(/^last_op_id:\s+\d+$/m);
    expect(text.stdout).toMatch(/^\s+global\[\]\s+checksum\s+-?\d+\s+count 2/m);
  });

  it('fetch: exits 1 with the error for a bad token or an unreachable service', async () => {
    const bad = await runCli(['fetch', '--token', 'not-a-jwt', '--url', harness.service.url]);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toContain('HTTP 401');
    expect(bad.stderr).toContain('PSYNC_S21');
    const down = await runCli(['fetch', '--token', 'x', '--url', 'http://127.0.0.1:1']);
    expect(down.code).toBe(1);
    expect(down.stderr).toContain('cannot reach http://127.0.0.1:1');
  });
});
