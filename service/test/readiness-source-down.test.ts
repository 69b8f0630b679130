import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { freePort, startEmbeddedPostgres, testPostgresServer, type PostgresServer } from '@syncpoint/dev-postgres';
import { parseConfig, startService, type RunningService, type ServiceRole } from '@syncpoint/service-core';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { DEV_AUDIENCE } from '../src/dev-token.js';
import { createModuleRegistry } from '../src/module-registry.js';
import { captureLogs, clientToken, type LogCapture } from './fault-invariants.js';
import { ITEMS_SYNC_CONFIG, TEST_DEV_KEY, waitFor } from './replication-harness.js';

/**
 * Issue 12 item 6, the source side: while the *source* database is down, readiness reflects what each process
 * needs. The replicating process is not ready; a standby and an API process only need storage, so they stay ready and
 * alive. The replicating process is ready again after the source returns. The source runs on a Postgres server of
 * its own, which the test stops and starts; storage stays up on the shared test server.
 */

const READINESS_CHECK_MS = 500;

describe('readiness while the source database is down', () => {
  let sourceServer: PostgresServer;
  let storageServer: PostgresServer;
  let dataDir: string;
  let port: number;
  const id = `${process.pid}_${randomBytes(2).toString('hex')}`;
  const storageName = `sp_st_srcdown_${id}`;
  const slotPrefix = `rt_srcdown_${id}_`;
  const services: RunningService[] = [];
  let logs: LogCapture;

  const start = async (role: ServiceRole) => {
    const registry = createModuleRegistry();
    const config = await parseConfig(
      stringify({
        replication: {
          connections: [
            {
              type: 'postgresql',
              uri: sourceServer.url('source'),
              sslmode: 'disable',
              slot_name_prefix: slotPrefix
            }
          ]
        },
        storage: { type: 'postgresql', uri: storageServer.url(storageName), sslmode: 'disable' },
        port: 0,
        sync_config: { content: ITEMS_SYNC_CONFIG },
        client_auth: { audience: [DEV_AUDIENCE], jwks: { keys: [TEST_DEV_KEY] } }
      }),
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
    await waitFor(`${what}: ${name} ${status}`, async () => (await probe(service, name)) === status, 60_000, 100);
    return Date.now() - started;
  };
  const checkpointRequest = async (service: RunningService, requestId: string) => {
    const response = await fetch(`${service.url}/sync/checkpoint-request`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', Authorization: `Token ${await clientToken('u1')}` },
      body: JSON.stringify({ client_id: 'c1', checkpoint_request_id: requestId }),
      signal: AbortSignal.timeout(30_000)
    });
    return { status: response.status, body: (await response.json()) as { error?: { code?: string } } };
  };

  beforeAll(async () => {
    dataDir = await mkdtemp(path.join(tmpdir(), 'syncpoint-srcdown-pg-'));
    port = await freePort();
    sourceServer = await startEmbeddedPostgres({ dataDir, persistent: true, port });
    await sourceServer.ensureDatabase('source');
    const source = new pg.Client({ connectionString: sourceServer.url('source') });
    await source.connect();
    await source.query(`CREATE TABLE items (id int8 PRIMARY KEY, owner text NOT NULL, val int8 NOT NULL)`);
    await source.query(`INSERT INTO items VALUES (1, 'u1', 1)`);
    await source.query('CREATE PUBLICATION powersync FOR ALL TABLES');
    await source.end();
    storageServer = await testPostgresServer();
    await storageServer.ensureDatabase(storageName);
    logs = captureLogs();
  }, 120_000);
  afterAll(async () => {
    for (const service of services) await service.stop().catch(() => {});
    await sourceServer?.stop().catch(() => {});
    if (dataDir) await rm(dataDir, { recursive: true, force: true });
    if (storageServer) {
      const admin = new pg.Client({ connectionString: storageServer.url('postgres') });
      await admin.connect();
      await admin.query(`DROP DATABASE IF EXISTS ${pg.escapeIdentifier(storageName)} WITH (FORCE)`).catch(() => {});
      await admin.end();
      await storageServer.stop();
    }
  }, 150_000);

  it('the replicating process is not ready; a standby and an API process stay ready and alive', async () => {
    const leader = await start('replication');
    await waitProbe(leader, 'readiness', 200, 'leader');
    await waitProbe(leader, 'liveness', 200, 'leader');
    const standby = await start('replication');
    const api = await start('api');
    await waitProbe(standby, 'readiness', 200, 'standby');
    await waitProbe(api, 'readiness', 200, 'api');
    expect((await checkpointRequest(api, '1')).status).toBe(200);

    await sourceServer.stop();
    const notReadyAfter = await waitProbe(leader, 'readiness', 400, 'leader, source down');
    // The leader's check has seen the source down; the others have had several checks of their own since.
    await new Promise((resolve) => setTimeout(resolve, 4 * READINESS_CHECK_MS));
    expect({
      standby: await probe(standby, 'readiness'),
      standbyLive: await probe(standby, 'liveness'),
      api: await probe(api, 'readiness'),
      apiLive: await probe(api, 'liveness')
    }).toEqual({ standby: 200, standbyLive: 200, api: 200, apiLive: 200 });
    // A checkpoint request needs the source's head: a clear 503 to retry, not a hang or a 500.
    const refused = await checkpointRequest(api, '2');
    expect({ status: refused.status, code: refused.body.error?.code }).toEqual({ status: 503, code: 'PSYNC_S2008' });

    sourceServer = await startEmbeddedPostgres({ dataDir, persistent: true, port });
    const readyAfter = await waitProbe(leader, 'readiness', 200, 'leader, source back');
    expect(await probe(standby, 'readiness')).toBe(200);
    expect(await probe(api, 'readiness')).toBe(200);
    expect((await checkpointRequest(api, '3')).status).toBe(200);
    console.log(
      `readiness of the replicating process: 400 ${notReadyAfter} ms after the source stopped, 200 again ` +
        `${readyAfter} ms after it started; check period ${READINESS_CHECK_MS} ms`
    );
  }, 240_000);
});
