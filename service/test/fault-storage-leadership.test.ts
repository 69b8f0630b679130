import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { freePort, startEmbeddedPostgres, type PostgresServer } from '@syncpoint/dev-postgres';
import { parseConfig, startService, type RunningService } from '@syncpoint/service-core';
import { createPostgresStorage, type PostgresBucketStorage } from '@syncpoint/storage-postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { DEV_AUDIENCE } from '../src/dev-token.js';
import { createModuleRegistry } from '../src/module-registry.js';
import {
  captureLogs,
  clientToken,
  expectMatchesFreshSnapshot,
  expectRequestAcknowledged,
  postCheckpointRequest,
  type LogCapture
} from './fault-invariants.js';
import {
  createReplicationEnv,
  ITEMS_SYNC_CONFIG,
  sleep,
  TEST_DEV_KEY,
  waitFor,
  waitForCheckpointLsn,
  type ReplicationEnv
} from './replication-harness.js';

/**
 * Issue 12, "bad input and faults": a storage restart while two processes compete for leadership. Two unified
 * processes share one storage Postgres (a dedicated server, stopped and started on the same data folder and port)
 * while the source keeps changing. Afterwards exactly one process holds leadership, storage holds what a fresh
 * service builds (nothing lost, nothing written twice), and every stored checkpoint request is acknowledged.
 */

const SEED_ROWS = 500;
const READINESS_CHECK_MS = 500;

describe('storage restart while two processes compete for leadership', () => {
  let env: ReplicationEnv;
  let storageServer: PostgresServer;
  let dataDir: string;
  let port: number;
  let storage: PostgresBucketStorage;
  let logs: LogCapture;
  const storageName = 'syncpoint_fault_leadership';
  const services: RunningService[] = [];
  let writing = true;

  const startUnified = async (name: string) => {
    const registry = createModuleRegistry();
    const config = await parseConfig(
      stringify({
        replication: {
          connections: [
            {
              type: 'postgresql',
              uri: env.postgres.url(env.sourceName),
              sslmode: 'disable',
              slot_name_prefix: env.slotPrefix
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
      logger: logs.logger.child({ process: name }),
      host: '127.0.0.1',
      role: 'unified',
      readinessCheckMs: READINESS_CHECK_MS
    });
    services.push(service);
    return service;
  };
  const ready = async (service: RunningService) =>
    (await fetch(`${service.url}/probes/readiness`, { signal: AbortSignal.timeout(5_000) })).status === 200;
  /** Leadership lock sessions (their application_name, see docs/operations.md) holding an advisory lock right now. */
  const leaders = async () => {
    const { rows } = await storage.pool.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
        WHERE l.locktype = 'advisory' AND l.granted AND a.application_name = 'syncpoint-replication-lock'`
    );
    return rows[0]!.n;
  };
  const epoch = async () => {
    const { rows } = await storage.pool.query<{ epoch: string }>(
      `SELECT epoch::text AS epoch FROM powersync.replication_lock`
    );
    return BigInt(rows[0]!.epoch);
  };

  beforeAll(async () => {
    env = await createReplicationEnv('storageleader', [
      `CREATE TABLE items (id int8 PRIMARY KEY, owner text NOT NULL, val int8 NOT NULL)`,
      `INSERT INTO items SELECT i, 'u' || (i % 10), i FROM generate_series(1, ${SEED_ROWS}) i`
    ]);
    dataDir = await mkdtemp(path.join(tmpdir(), 'syncpoint-leadership-pg-'));
    port = await freePort();
    storageServer = await startEmbeddedPostgres({ dataDir, persistent: true, port });
    await storageServer.ensureDatabase(storageName);
    logs = captureLogs();
  }, 120_000);
  afterAll(async () => {
    writing = false;
    for (const service of services) await service.stop().catch(() => {});
    await storage?.close().catch(() => {});
    await env?.cleanup();
    await storageServer?.stop().catch(() => {});
    if (dataDir) await rm(dataDir, { recursive: true, force: true });
  }, 150_000);

  it('one leader afterwards; nothing lost or written twice; every stored request acknowledged', async () => {
    const first = await startUnified('first');
    const second = await startUnified('second');
    storage = createPostgresStorage({
      type: 'postgresql',
      uri: storageServer.url(storageName),
      sslmode: 'disable',
      max_pool_size: 2
    });
    await waitForCheckpointLsn(storage, await env.sourcePosition(), 120_000);
    expect(await leaders()).toBe(1);
    const epochBefore = await epoch();

    // Source changes keep coming before, during and after the outage.
    let updates = 0;
    const writer = (async () => {
      while (writing) {
        updates++;
        await env.sourceDb.query(`UPDATE items SET val = $1 WHERE id = $2`, [-updates, 1 + (updates % SEED_ROWS)]);
        await sleep(20);
      }
    })();
    const alice = await clientToken('alice');
    await postCheckpointRequest(first.url, alice, 'phone', 1n);

    await storageServer.stop();
    // Both processes noticed (readiness false) before storage comes back.
    await waitFor('both processes not ready', async () => !(await ready(first)) && !(await ready(second)), 60_000, 100);
    storageServer = await startEmbeddedPostgres({ dataDir, persistent: true, port });

    // Requests through either process are stored and acknowledged on streams of either process.
    const bob = await clientToken('bob');
    await postCheckpointRequest(second.url, bob, 'laptop', 1n);
    await postCheckpointRequest(first.url, alice, 'phone', 2n);
    await expectRequestAcknowledged(first.url, bob, 'laptop', 1n, 90_000);
    await expectRequestAcknowledged(second.url, alice, 'phone', 2n, 90_000);
    await waitFor('both processes ready', async () => (await ready(first)) && (await ready(second)), 60_000, 100);
    // Exactly one leader, now and a little later (a second one would show up as a second granted lock).
    await waitFor('exactly one leader', async () => (await leaders()) === 1, 30_000, 100);
    const epochAfter = await epoch();
    expect(epochAfter).toBeGreaterThanOrEqual(epochBefore);

    writing = false;
    await writer;
    const figures = await expectMatchesFreshSnapshot({
      faulted: storage,
      sourcePosition: () => env.sourcePosition(),
      startFresh: async () => {
        const freshName = await env.createStorageDatabase('fresh');
        await env.startInProcess({ storageName: freshName, syncConfig: ITEMS_SYNC_CONFIG, role: 'replication' });
        return env.openStorage(freshName);
      }
    });
    expect(figures.rows).toBe(2 * SEED_ROWS);
    expect(await leaders()).toBe(1);
    const { rows: pending } = await storage.pool.query<{ n: string }>(
      `SELECT count(*)::text AS n FROM powersync.write_checkpoints WHERE processed_at_lsn IS NULL`
    );
    expect(pending[0]!.n).toBe('0');
    console.log(
      `storage restart with two competing processes: ${updates} source updates, epoch ${epochBefore} → ${epochAfter}, ` +
        `${figures.rows} rows match a fresh service`
    );
  }, 300_000);
});
