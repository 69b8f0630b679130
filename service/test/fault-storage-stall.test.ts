import { parseConfig, startService, type RunningService } from '@syncpoint/service-core';
import { sourceSchema } from '@syncpoint/test-fixtures';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createModuleRegistry } from '../src/module-registry.js';
import {
  captureLogs,
  clientToken,
  expectLogged,
  expectRequestAcknowledged,
  postCheckpointRequest,
  type LogCapture
} from './fault-invariants.js';
import {
  createReplicationEnv,
  ITEMS_SYNC_CONFIG,
  waitForCheckpointLsn,
  type ReplicationEnv
} from './replication-harness.js';
import { openSyncStream } from './sync-stream-client.js';
import { startTcpProxy, type TcpProxy } from './tcp-proxy.js';

/**
 * Issue 12 item 4: every connection between the service and its bucket storage — the pool, the checkpoint LISTEN
 * connection, the replication lock connection — goes through a loopback TCP proxy, which then stalls them all silently
 * (bytes stop, no FIN, no RST: the peer still acknowledges at the TCP level, so only the application can notice). The
 * service runs with the production defaults for the pool and the listener; only the replication lock's lease is
 * shortened (env), since its takeover after a stall waits for the lease and is not what this test measures.
 * Within 30 s the listener and the pool must be replaced (new connections through the proxy), a checkpoint request is
 * stored and acknowledged, and a row written after the stall reaches a client that stayed connected throughout.
 */

const DETECTION_BOUND_MS = 30_000;
const LOCK_TTL_MS = 6_000;
const STALLED_ROW_ID = 900_001;

/** The parts of a sync line this test reads. */
interface SyncLine {
  checkpoint_complete?: unknown;
  data?: { data?: Array<{ object_id?: unknown }> };
}

describe('storage connections stalled silently', () => {
  let env: ReplicationEnv;
  let proxy: TcpProxy;
  let service: RunningService | undefined;
  let logs: LogCapture;
  let previousTtl: string | undefined;

  beforeAll(async () => {
    previousTtl = process.env.SYNCPOINT_REPLICATION_LOCK_TTL_MS;
    process.env.SYNCPOINT_REPLICATION_LOCK_TTL_MS = String(LOCK_TTL_MS);
    env = await createReplicationEnv('storagestall', [
      sourceSchema('items').ddl,
      `INSERT INTO items SELECT i, 'u' || (i % 3), i, 'seed' FROM generate_series(1, 300) i`
    ]);
    proxy = await startTcpProxy(env.postgres.port);
  }, 120_000);
  afterAll(async () => {
    if (previousTtl === undefined) delete process.env.SYNCPOINT_REPLICATION_LOCK_TTL_MS;
    else process.env.SYNCPOINT_REPLICATION_LOCK_TTL_MS = previousTtl;
    await service?.stop().catch(() => {});
    await proxy?.close();
    await env?.cleanup();
  }, 60_000);

  it('replaces the stalled listener and pool connections within 30 s; streams catch up', async () => {
    const storageName = await env.createStorageDatabase('stall');
    const directUrl = new URL(env.postgres.url(storageName));
    const proxiedUrl = new URL(directUrl);
    proxiedUrl.port = String(proxy.port);
    const storage = env.openStorage(storageName); // direct, for the test's own checks
    logs = captureLogs();
    const registry = createModuleRegistry();
    const config = await parseConfig(
      env.configText({
        storageName,
        storageUri: proxiedUrl.toString(),
        syncConfig: ITEMS_SYNC_CONFIG,
        heartbeatSeconds: 5
      }),
      { source: 'test', configDir: process.cwd(), registry }
    );
    service = await startService(config, { registry, logger: logs.logger, host: '127.0.0.1', role: 'unified' });
    await waitForCheckpointLsn(storage, await env.sourcePosition(), 60_000);

    const token = await clientToken('u1');
    // A client connected before the stall, reading throughout.
    const stream = await openSyncStream(service.url, token, { client_id: 'steady', raw_data: true });
    expect(stream.response.status).toBe(200);
    await stream.until((line: SyncLine) => line.checkpoint_complete !== undefined, 20_000);
    await postCheckpointRequest(service.url, token, 'stall', 1n);

    const since = logs.entries().length;
    const acceptedBefore = proxy.acceptedConnections;
    const stalledAt = Date.now();
    const stalled = proxy.stallExisting();
    expect(stalled).toBeGreaterThanOrEqual(3); // pool, listener, lock connection at least
    const failureContext = () =>
      `\nlog tail:\n${logs
        .entries()
        .slice(since)
        .slice(-30)
        .map((entry) => `${String(entry.msg)} ${entry.err ? JSON.stringify(entry.err).slice(0, 200) : ''}`)
        .join('\n')}`;

    try {
      // The pool: a checkpoint request made right after the stall (retried as the SDK does) is stored.
      await env.sourceDb.query(`INSERT INTO items VALUES ($1, 'u1', 42, 'stalled')`, [STALLED_ROW_ID]);
      const stored = await postCheckpointRequest(service.url, token, 'stall', 2n, 45_000);
      const storedMs = Date.now() - stalledAt;
      const rowLines = await stream.until(
        (line: SyncLine) => line.data?.data?.some((op) => String(op.object_id) === String(STALLED_ROW_ID)) === true,
        50_000
      );
      const rowMs = Date.now() - stalledAt;
      // The listener: replaced after its liveness query timed out.
      const listenerReplaced = logs
        .entries()
        .slice(since)
        .find((entry) => /checkpoint listener connection did not answer/.test(String(entry.msg)));
      const listenerMs = listenerReplaced ? Number(listenerReplaced.time) - stalledAt : NaN;
      const ackMs = (await expectRequestAcknowledged(service.url, token, 'stall', 2n, 30_000)) + rowMs;
      console.log(
        `storage stall: ${stalled} connections stalled; request stored after ${storedMs} ms (${stored.attempts} attempts, ` +
          `target < ${DETECTION_BOUND_MS} ms); listener replaced after ${listenerMs} ms (target < ${DETECTION_BOUND_MS} ms); ` +
          `row reached the connected client after ${rowMs} ms (${rowLines.length} lines); request acknowledged by ${ackMs} ms; ` +
          `${proxy.acceptedConnections - acceptedBefore} new storage connections`
      );
      expect(storedMs, `checkpoint request stored${failureContext()}`).toBeLessThan(DETECTION_BOUND_MS);
      expect(listenerMs, `listener replaced${failureContext()}`).toBeLessThan(DETECTION_BOUND_MS);
      expect(proxy.acceptedConnections).toBeGreaterThan(acceptedBefore);
      expectLogged(logs, [/checkpoint listener connection did not answer/], since);
    } catch (error) {
      if (error instanceof Error) error.message += failureContext();
      throw error;
    } finally {
      await stream.close();
    }
  }, 120_000);
});
