import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { freePort, startEmbeddedPostgres, type PostgresServer } from '@syncpoint/dev-postgres';
import { parseConfig, startService, type RunningService, type ServiceRole } from '@syncpoint/service-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createModuleRegistry } from '../src/module-registry.js';
import { captureLogs, clientToken, type LogCapture } from './fault-invariants.js';
import { createReplicationEnv, ITEMS_SYNC_CONFIG, waitFor, type ReplicationEnv } from './replication-harness.js';

/**
 * Issue 12 item 6: the `replication` role serves the probes and `/metrics` only; readiness follows storage (and, in the
 * replicating process, replication) and comes back after recovery; liveness stays up for a healthy standby and for an
 * API process. Three in-process services on one storage Postgres of their own, which the test stops and starts.
 */

const READINESS_CHECK_MS = 500;

describe('roles and probes', () => {
  let env: ReplicationEnv;
  let storageServer: PostgresServer;
  let dataDir: string;
  let port: number;
  const storageName = 'syncpoint_roles';
  const services: RunningService[] = [];
  let logs: LogCapture;

  const start = async (role: ServiceRole) => {
    const registry = createModuleRegistry();
    const config = await parseConfig(
      env.configText({ storageName, storageUri: storageServer.url(storageName), syncConfig: ITEMS_SYNC_CONFIG }),
      { source: 'test', configDir: process.cwd(), registry }
    );
    const service = await startService(config, {
      registry,
      logger: logs.logger.child({ role }),
      host: '127.0.0.1',
      role,
      readinessCheckMs: READINESS_CHECK_MS
    });
    services.push(service);
    return service;
  };
  const probe = async (service: RunningService, name: 'readiness' | 'liveness') =>
    (await fetch(`${service.url}/probes/${name}`, { signal: AbortSignal.timeout(5_000) })).status;
  const waitProbe = async (service: RunningService, name: 'readiness' | 'liveness', status: number, what: string) => {
    const started = Date.now();
    try {
      await waitFor(`${what}: ${name} ${status}`, async () => (await probe(service, name)) === status, 30_000, 100);
    } catch (error) {
      const tail = logs
        .entries()
        .slice(-20)
        .map((entry) => String(entry.msg))
        .join('\n');
      throw new Error(`${String(error)}\nlog tail:\n${tail}`, { cause: error });
    }
    return Date.now() - started;
  };

  beforeAll(async () => {
    env = await createReplicationEnv('roles', [
      `CREATE TABLE items (id int8 PRIMARY KEY, owner text NOT NULL, val int8 NOT NULL)`,
      `INSERT INTO items VALUES (1, 'u1', 1)`
    ]);
    dataDir = await mkdtemp(path.join(tmpdir(), 'syncpoint-roles-pg-'));
    port = await freePort();
    storageServer = await startEmbeddedPostgres({ dataDir, persistent: true, port });
    await storageServer.ensureDatabase(storageName);
    logs = captureLogs();
  }, 120_000);
  afterAll(async () => {
    for (const service of services) {
      const started = Date.now();
      await service.stop().catch(() => {});
      console.log(`stop ${Date.now() - started} ms`);
    }
    const cleanupStarted = Date.now();
    await env?.cleanup();
    console.log(`cleanup ${Date.now() - cleanupStarted} ms`);
    await storageServer?.stop().catch(() => {});
    if (dataDir) await rm(dataDir, { recursive: true, force: true });
  }, 150_000);

  it('the replication role serves probes and /metrics only', async () => {
    const leader = await start('replication');
    await waitProbe(leader, 'readiness', 200, 'replication leader');
    const token = await clientToken('u1');
    for (const [method, route] of [
      ['POST', '/sync/checkpoint-request'],
      ['POST', '/sync/stream'],
      ['GET', '/write-checkpoint2.json'],
      ['POST', '/api/admin/v1/diagnostics']
    ] as const) {
      const response = await fetch(`${leader.url}${route}`, {
        method,
        headers: { 'Content-Type': 'application/json', Authorization: `Token ${token}` },
        body: method === 'POST' ? JSON.stringify({ client_id: 'c', checkpoint_request_id: '1' }) : undefined
      });
      const body = (await response.json()) as { error?: { code?: string } };
      expect({ route, status: response.status, code: body.error?.code }).toEqual({
        route,
        status: 404,
        code: 'PSYNC_S2002'
      });
    }
    expect((await fetch(`${leader.url}/metrics`)).status).toBe(200);
    // Alive once replication reports progress (the startup probe covers the time before).
    await waitProbe(leader, 'liveness', 200, 'replication leader');
    expect((await fetch(`${leader.url}/probes/startup`)).status).toBe(200);
  }, 120_000);

  it('readiness follows storage; liveness stays up for a standby and an API process', async () => {
    const [leader] = services;
    const standby = await start('replication');
    const api = await start('api');
    await waitProbe(standby, 'readiness', 200, 'standby');
    await waitProbe(api, 'readiness', 200, 'api');
    // A healthy standby is alive (it keeps checking the lock), for longer than the 10 s liveness window.
    await new Promise((resolve) => setTimeout(resolve, 11_000));
    expect(await probe(standby, 'liveness')).toBe(200);
    expect(await probe(standby, 'readiness')).toBe(200);
    expect(await probe(leader!, 'readiness')).toBe(200);

    await storageServer.stop();
    const down = await Promise.all([
      waitProbe(leader!, 'readiness', 400, 'leader, storage down'),
      waitProbe(standby, 'readiness', 400, 'standby, storage down'),
      waitProbe(api, 'readiness', 400, 'api, storage down')
    ]);
    // The API process does not replicate: it stays alive while storage is away.
    expect(await probe(api, 'liveness')).toBe(200);

    storageServer = await startEmbeddedPostgres({ dataDir, persistent: true, port });
    const up = await Promise.all([
      waitProbe(leader!, 'readiness', 200, 'leader, storage back'),
      waitProbe(standby, 'readiness', 200, 'standby, storage back'),
      waitProbe(api, 'readiness', 200, 'api, storage back')
    ]);
    console.log(
      `readiness: not ready ${down.join('/')} ms after storage stopped (leader/standby/api), ready again ` +
        `${up.join('/')} ms after it started; check period ${READINESS_CHECK_MS} ms`
    );
    for (const ms of [...down, ...up]) expect(ms).toBeLessThan(20_000);
  }, 180_000);
});
