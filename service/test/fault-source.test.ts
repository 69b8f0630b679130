import { randomBytes } from 'node:crypto';
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { compareLsn, normalizeLsn } from '@syncpoint/codecs';
import { freePort, startEmbeddedPostgres, testPostgresServer, type PostgresServer } from '@syncpoint/dev-postgres';
import { parseConfig, silentLogger, startService, type Logger, type RunningService } from '@syncpoint/service-core';
import { createPostgresStorage, type PostgresBucketStorage } from '@syncpoint/storage-postgres';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { postgresServiceConfig, testJwks } from '@syncpoint/test-fixtures';
import { DEV_AUDIENCE } from '../src/dev-token.js';
import { createModuleRegistry } from '../src/module-registry.js';
import {
  captureLogs,
  clientToken,
  expectLogged,
  expectMatchesFreshSnapshot,
  expectRequestAcknowledged,
  observeServedCheckpoints,
  postCheckpointRequest,
  type LogCapture
} from './fault-invariants.js';
import type { BucketContents } from './replication-harness.js';
import { ITEMS_SYNC_CONFIG, sleep, waitFor, waitForCheckpointLsn } from './replication-harness.js';
import { startTcpProxy, type TcpProxy } from './tcp-proxy.js';

/**
 * Issue 7 item 1 (source side): real processes, no mocks. One service (API + replication, in-process) replicates a
 * dedicated embedded Postgres through a loopback TCP proxy while a writer keeps committing; then, one after the other:
 * (a) the source Postgres restarts, (b1) every proxied connection is dropped, (b2) every proxied connection stalls
 * (open, silent, forever), (c) the replication slot is dropped under the running service. After each: the service
 * recovered by itself (and said so in its log), a checkpoint request stored around the fault is acknowledged, and the
 * buckets equal those of a fresh service snapshotting the same source.
 */

/** Seed rows are never deleted; pairs (2k, 2k+1) always change together in one transaction. */
const SEED_ROWS = 4_000;
const OWNERS = 5;
const EXTRA_FIRST_ID = 1_000_000;
const HEARTBEAT_SECONDS = 5;
/** replicationTimeoutMs(5): the replication connection counts as dead after 15 s of silence. */
const REPLICATION_TIMEOUT_MS = 15_000;

let sourceDir: string;
let sourcePort: number;
let source: PostgresServer;
let storageServer: PostgresServer;
let proxy: TcpProxy;
let writerPool: pg.Pool;
let service: RunningService;
let storage: PostgresBucketStorage;
let logs: LogCapture;
const runId = `${process.pid}_${randomBytes(2).toString('hex')}`;
const slotPrefix = `fault_${runId}_`;
const storageDatabases: string[] = [];
const extraServices: RunningService[] = [];
const extraStorages: PostgresBucketStorage[] = [];
const figures: Record<string, unknown> = {};

async function startSource(): Promise<PostgresServer> {
  return startEmbeddedPostgres({ dataDir: sourceDir, persistent: true, port: sourcePort });
}

function configText(storageName: string, sourceUrl: string): string {
  return postgresServiceConfig({
    sourceUri: sourceUrl,
    storageUri: storageServer.url(storageName),
    syncConfig: ITEMS_SYNC_CONFIG,
    slotPrefix,
    heartbeatSeconds: HEARTBEAT_SECONDS,
    audience: [DEV_AUDIENCE],
    jwks: testJwks(['hs256'])
  });
}

async function newStorageDatabase(label: string): Promise<string> {
  const name = `sp_fault_${label}_${runId}`;
  await storageServer.ensureDatabase(name);
  storageDatabases.push(name);
  return name;
}

async function startSyncpoint(storageName: string, sourceUrl: string, logger: Logger, role: 'unified' | 'replication') {
  const registry = createModuleRegistry();
  const config = await parseConfig(configText(storageName, sourceUrl), {
    source: 'test',
    configDir: process.cwd(),
    registry
  });
  return startService(config, { registry, logger, host: '127.0.0.1', role });
}

function openStorage(storageName: string): PostgresBucketStorage {
  const opened = createPostgresStorage({
    type: 'postgresql',
    uri: storageServer.url(storageName),
    sslmode: 'disable',
    max_pool_size: 4
  });
  extraStorages.push(opened);
  return opened;
}

/** The source's WAL position after everything committed so far; a marker moves an idle source on. */
async function sourcePosition(): Promise<string> {
  return waitFor(
    'the source position',
    async () => {
      const { rows } = await writerPool.query<{ lsn: string }>('SELECT pg_current_wal_lsn()::text AS lsn');
      await writerPool.query(`SELECT pg_logical_emit_message(false, 'powersync', 'ping')`);
      return normalizeLsn(rows[0]!.lsn);
    },
    60_000,
    200
  );
}

/**
 * Small transactions until stopped, straight to the source (not through the proxy): pair updates (sometimes moving
 * the pair to another owner's bucket), and inserts/deletes of extra pairs. Errors while the source is down are
 * expected; the writer waits and goes on.
 */
function startWriter() {
  let stopped = false;
  let committed = 0;
  let failed = 0;
  const done = (async () => {
    for (let n = 1; !stopped; n++) {
      const pair = Math.floor(Math.random() * (SEED_ROWS / 2)) * 2;
      const extra = EXTRA_FIRST_ID + (n % 200) * 2;
      try {
        if (n % 7 === 0) {
          await writerPool.query(
            `WITH gone AS (DELETE FROM items WHERE id IN ($1, $2) RETURNING id)
             INSERT INTO items SELECT i, 'u' || ($3::int % ${OWNERS}), $3, 'extra' FROM unnest(ARRAY[$1, $2]::int8[]) i
             WHERE (SELECT count(*) FROM gone) = 0`,
            [extra, extra + 1, n]
          );
        } else if (n % 5 === 0) {
          await writerPool.query(`UPDATE items SET val = $1, owner = $2 WHERE id IN ($3, $4)`, [
            n,
            `u${n % OWNERS}`,
            pair,
            pair + 1
          ]);
        } else {
          await writerPool.query(`UPDATE items SET val = $1 WHERE id IN ($2, $3)`, [n, pair, pair + 1]);
        }
        committed++;
        await sleep(5);
      } catch {
        failed++;
        await sleep(200);
      }
    }
  })();
  return {
    get committed() {
      return committed;
    },
    get failed() {
      return failed;
    },
    async stop() {
      stopped = true;
      await done;
    }
  };
}

/**
 * What a client may see at any checkpoint: a consistent source state. Every seed row is there (none is ever deleted,
 * so a missing one means partial data), no pair is torn (both rows of a pair always change in one transaction), and
 * each row of `global[]` is in exactly its owner's bucket.
 */
function consistencyProblem(buckets: Map<string, BucketContents>): string | null {
  const global = buckets.get('global[]')?.rows ?? new Map<string, unknown>();
  let seeds = 0;
  for (let id = 0; id < SEED_ROWS; id++) if (global.has(`items/${id}`)) seeds++;
  if (seeds !== SEED_ROWS) return `${SEED_ROWS - seeds} seed rows missing`;
  for (const [key, value] of global) {
    const row = value as { id: number; owner: string; val: number };
    const partnerKey = `items/${row.id % 2 === 0 ? row.id + 1 : row.id - 1}`;
    const partner = global.get(partnerKey) as typeof row | undefined;
    if (!partner || partner.val !== row.val || partner.owner !== row.owner) return `torn pair at ${key}`;
    const ownerRow = buckets.get(`by_owner[${JSON.stringify(row.owner)}]`)?.rows.get(key);
    if (JSON.stringify(ownerRow) !== JSON.stringify(row)) return `${key} not in its owner's bucket`;
  }
  let owned = 0;
  for (const [name, contents] of buckets) if (name.startsWith('by_owner[')) owned += contents.rows.size;
  if (owned !== global.size) return `${owned} rows in owner buckets, ${global.size} in global`;
  return null;
}

/**
 * The invariants after a fault, once the writer has stopped: the faulted service matches a fresh snapshot, and the
 * checkpoint request `requestId` (stored around the fault) is acknowledged on a sync stream.
 */
async function checkAfterFault(label: string, requestId: bigint, clientId: string) {
  const token = await clientToken('u1');
  const ackMs = await expectRequestAcknowledged(service.url, token, clientId, requestId, 60_000);
  const freshName = await newStorageDatabase(`fresh_${label}`);
  let fresh: RunningService | undefined;
  try {
    const result = await expectMatchesFreshSnapshot({
      faulted: storage,
      startFresh: async () => {
        fresh = await startSyncpoint(freshName, source.url('app'), silentLogger, 'replication');
        extraServices.push(fresh);
        return openStorage(freshName);
      },
      sourcePosition,
      timeoutMs: 90_000
    });
    return { ackMs, ...result };
  } finally {
    await fresh?.stop();
    // The fresh service's slot would retain WAL on the source for the rest of the file.
    const admin = new pg.Client({ connectionString: source.url('app') });
    await admin.connect();
    await admin
      .query(
        `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
         WHERE starts_with(slot_name, $1) AND NOT active AND slot_name <> $2`,
        [slotPrefix, await faultedSlotName()]
      )
      .catch(() => {});
    await admin.end();
  }
}

async function faultedSlotName(): Promise<string> {
  const serving = await storage.getServingStream();
  const state = await (await storage.getStreamStorage(serving!)).getReplicationState();
  return state.slotName!;
}

/** The served checkpoint reaches the source position (everything written so far is visible); returns ms it took. */
async function waitCaughtUp(timeoutMs: number): Promise<number> {
  const started = Date.now();
  const position = await sourcePosition();
  await waitForCheckpointLsn(storage, position, timeoutMs);
  return Date.now() - started;
}

beforeAll(async () => {
  const parent = await mkdtemp(path.join(tmpdir(), 'syncpoint-fault-source-'));
  // As root the server runs as the `postgres` OS user, which must be able to reach the data folder.
  await chmod(parent, 0o755);
  sourceDir = path.join(parent, 'data');
  sourcePort = await freePort();
  source = await startSource();
  await source.ensureDatabase('app');
  writerPool = new pg.Pool({ connectionString: source.url('app'), max: 2 });
  writerPool.on('error', () => {});
  await writerPool.query(
    `CREATE TABLE items (id int8 PRIMARY KEY, owner text NOT NULL, val int8 NOT NULL, kind text NOT NULL)`
  );
  await writerPool.query(
    `INSERT INTO items SELECT i, 'u' || ((i / 2) % ${OWNERS}), 0, 'seed' FROM generate_series(0, ${SEED_ROWS - 1}) i`
  );
  await writerPool.query(`CREATE PUBLICATION powersync FOR ALL TABLES`);
  storageServer = await testPostgresServer();
  proxy = await startTcpProxy(sourcePort);

  logs = captureLogs();
  const storageName = await newStorageDatabase('faulted');
  const proxiedUrl = new URL(source.url('app'));
  proxiedUrl.port = String(proxy.port);
  service = await startSyncpoint(storageName, proxiedUrl.toString(), logs.logger, 'unified');
  storage = openStorage(storageName);
  await waitFor('the first checkpoint', async () => (await storage.getServingCheckpoint())?.checkpoint.lsn, 90_000);
}, 180_000);

afterAll(async () => {
  console.log(`fault-source figures: ${JSON.stringify(figures)}`);
  await service?.stop().catch(() => {});
  for (const extra of extraServices) await extra.stop().catch(() => {});
  for (const opened of extraStorages) await opened.close().catch(() => {});
  await proxy?.close();
  await writerPool?.end().catch(() => {});
  await source?.stop().catch(() => {});
  if (sourceDir) await rm(path.dirname(sourceDir), { recursive: true, force: true });
  if (storageServer) {
    const admin = new pg.Client({ connectionString: storageServer.url('postgres') });
    await admin.connect();
    for (const name of storageDatabases)
      await admin.query(`DROP DATABASE IF EXISTS ${pg.escapeIdentifier(name)} WITH (FORCE)`).catch(() => {});
    await admin.end();
    await storageServer.stop();
  }
}, 120_000);

describe('source-side faults: the service recovers by itself and loses nothing', () => {
  it('(a) survives a restart of the source Postgres while streaming', async () => {
    const token = await clientToken('u1');
    const since = logs.entries().length;
    const writer = startWriter();
    try {
      await sleep(1_000);
      await postCheckpointRequest(service.url, token, 'restart', 1n);
      await source.stop();
      const downAt = Date.now();
      await sleep(3_000);
      // While the source is down, a request cannot read the head: it is stored once the source is back.
      const during = postCheckpointRequest(service.url, token, 'restart', 2n, 90_000);
      source = await startSource();
      const stored = await during;
      figures.restart_down_ms = Date.now() - downAt;
      figures.restart_request_attempts = stored.attempts;
      await sleep(2_000);
    } finally {
      await writer.stop();
    }
    expect(writer.committed).toBeGreaterThan(0);
    figures.restart_catch_up_ms = await waitCaughtUp(90_000);
    expectLogged(logs, [/replication stopped/, /streaming changes/], since);
    figures.restart = await checkAfterFault('restart', 2n, 'restart');
  }, 240_000);

  it('(b1) survives every source connection being dropped abruptly', async () => {
    const token = await clientToken('u1');
    const since = logs.entries().length;
    const writer = startWriter();
    try {
      await sleep(1_000);
      await postCheckpointRequest(service.url, token, 'drop', 1n);
      const dropped = proxy.dropAll();
      expect(dropped).toBeGreaterThan(0); // at least the replication connection
      await postCheckpointRequest(service.url, token, 'drop', 2n, 60_000);
      await sleep(1_000);
      proxy.dropAll();
      await sleep(2_000);
    } finally {
      await writer.stop();
    }
    figures.drop_catch_up_ms = await waitCaughtUp(90_000);
    expectLogged(logs, [/replication stopped/, /streaming changes/], since);
    figures.drop = await checkAfterFault('drop', 2n, 'drop');
  }, 240_000);

  it('(b2) notices a stalled replication connection (open but silent) and reconnects', async () => {
    const token = await clientToken('u1');
    const since = logs.entries().length;
    const writer = startWriter();
    let stalledAt: number;
    try {
      await sleep(1_000);
      await postCheckpointRequest(service.url, token, 'stall', 1n);
      const acceptedBefore = proxy.acceptedConnections;
      stalledAt = Date.now();
      expect(proxy.stallExisting()).toBeGreaterThan(0);
      // Stored while the old connections hang: a head read on one of them times out and is retried on a new one.
      const stored = await postCheckpointRequest(service.url, token, 'stall', 2n, 60_000);
      figures.stall_request_store_ms = Date.now() - stalledAt;
      figures.stall_request_attempts = stored.attempts;
      // Replication reconnects on its own, on a new connection, after its silence limit (it never sees an error): writes
      // made after the stall become visible.
      await waitForCheckpointLsn(storage, await sourcePosition(), REPLICATION_TIMEOUT_MS + 60_000);
      figures.stall_recovered_ms = Date.now() - stalledAt;
      expect(proxy.acceptedConnections).toBeGreaterThan(acceptedBefore);
      await sleep(1_000);
    } finally {
      await writer.stop();
    }
    figures.stall_catch_up_ms = await waitCaughtUp(90_000);
    expectLogged(
      logs,
      [
        /replication stopped: the source sent nothing on the replication connection/,
        // The server still held the slot for the dead connection: taken over rather than waiting for wal_sender_timeout.
        /held by another walsender/,
        /streaming changes/
      ],
      since
    );
    // Not before the silence limit: it is the watchdog that noticed, not an error from the network.
    expect(figures.stall_recovered_ms as number).toBeGreaterThanOrEqual(REPLICATION_TIMEOUT_MS);
    figures.stall = await checkAfterFault('stall', 2n, 'stall');
  }, 240_000);

  it('(c) re-snapshots after its slot is dropped, serving only complete states meanwhile', async () => {
    const token = await clientToken('u1');
    const since = logs.entries().length;
    const before = await storage.getServingCheckpoint();
    // Every poll downloads again, also under an unchanged checkpoint: the re-snapshot must not alter what it serves.
    const observer = observeServedCheckpoints(storage, (_checkpoint, buckets) => consistencyProblem(buckets), {
      intervalMs: 20,
      recheck: true
    });
    const writer = startWriter();
    const admin = new pg.Client({ connectionString: source.url('app') });
    await admin.connect();
    try {
      await sleep(1_000);
      await postCheckpointRequest(service.url, token, 'slot', 1n);
      const slot = await faultedSlotName();
      // The walsender holds the slot: terminate it, then drop the slot before the replicator's retry takes it again.
      await waitFor(
        'the slot to be dropped',
        async () => {
          await admin.query(
            `SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = $1 AND active_pid IS NOT NULL`,
            [slot]
          );
          const { rows } = await admin.query(
            `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1 AND NOT active`,
            [slot]
          );
          return rows.length === 1;
        },
        30_000,
        20
      );
      await postCheckpointRequest(service.url, token, 'slot', 2n, 60_000);
      // Writes made after the drop become visible: the re-snapshot is done and streaming goes on from the new slot.
      await waitForCheckpointLsn(storage, await sourcePosition(), 90_000);
      await sleep(1_000);
    } finally {
      await writer.stop();
      await admin.end();
    }
    figures.slot_catch_up_ms = await waitCaughtUp(90_000);
    const { observations, errors } = await observer.stop();
    expect(errors, 'downloads of served checkpoints that failed').toEqual([]);
    // Checkpoints before and after the re-snapshot were observed, each a consistent, complete state.
    expect(observations.length).toBeGreaterThan(1);
    expect(
      observations.filter((o) => o.problem !== null).map((o) => `checkpoint ${o.checkpoint}: ${o.problem}`)
    ).toEqual([]);
    expectLogged(logs, [/PSYNC_S1146/, /re-snapshot starting/, /re-snapshot done/, /streaming changes/], since);
    // Some of them while the copy was running.
    const copyStarted = Number(logs.matching(/re-snapshot starting/).at(-1)!.time);
    const copyDone = Number(logs.matching(/re-snapshot done/).at(-1)!.time);
    const duringCopy = observations.filter((o) => o.at > copyStarted && o.at < copyDone).length;
    figures.slot_copy_ms = copyDone - copyStarted;
    figures.slot_observations_during_copy = duringCopy;
    expect(duringCopy).toBeGreaterThan(0);
    expect(observations.at(-1)!.checkpoint).toBeGreaterThan(before!.checkpoint.checkpoint);
    expect(
      compareLsn((await storage.getServingCheckpoint())!.checkpoint.lsn!, before!.checkpoint.lsn!)
    ).toBeGreaterThan(0);
    figures.slot_observations = observations.length;
    figures.slot_distinct_checkpoints = new Set(observations.map((o) => o.checkpoint)).size;
    figures.slot = await checkAfterFault('slot', 2n, 'slot');
  }, 240_000);
});
