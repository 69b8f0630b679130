import { spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { PostgresBucketStorage } from '@syncpoint/storage-postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sourceSchema } from '@syncpoint/test-fixtures';
import { signDevToken } from '../src/dev-token.js';
import { expectMatchesFreshSnapshot } from './fault-invariants.js';
import {
  createReplicationEnv,
  ITEMS_SYNC_CONFIG,
  sleep,
  TEST_DEV_KEY,
  waitFor,
  waitForCheckpointLsn,
  type ChildService,
  type ReplicationEnv
} from './replication-harness.js';
import { watchMarkers } from './service-harness.js';
import { openSyncStream } from './sync-stream-client.js';

/**
 * Issue 7 item 1 (process faults): a real `syncpoint start` child process is SIGKILLed at a chosen moment — during the
 * initial snapshot, in the middle of a storage flush, between storing a checkpoint request and emitting its marker —
 * and restarted. Afterwards a client must end with exactly the rows a fresh service ends with, and every stored
 * checkpoint request must be acknowledged. (SIGKILL between flushes of a large transaction, with small transactions
 * committing around it, is replication-crash.test.ts.)
 */

const serviceDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

/** fault-invariants' fresh-service comparison, with a fresh replicating service of this env. */
function expectMatchesFreshService(env: ReplicationEnv, storage: PostgresBucketStorage, syncConfig: string) {
  return expectMatchesFreshSnapshot({
    faulted: storage,
    sourcePosition: () => env.sourcePosition(),
    startFresh: async () => {
      const freshName = await env.createStorageDatabase(`fresh${Date.now() % 100_000}`);
      await env.startInProcess({ storageName: freshName, syncConfig, role: 'replication' });
      return env.openStorage(freshName);
    }
  });
}

/** The JSON log lines a child printed (pino), parsed; other output is skipped. */
function logLines(output: string): Array<Record<string, any>> {
  return output
    .split('\n')
    .filter((line) => line.startsWith('{'))
    .flatMap((line) => {
      try {
        return [JSON.parse(line)];
      } catch {
        return [];
      }
    });
}

async function withOutput<T>(child: ChildService, what: Promise<T>): Promise<T> {
  return what.catch((error) => {
    throw new Error(`${error.message}\nchild output:\n${child.output().slice(-5_000)}`);
  });
}

describe('SIGKILL during the initial snapshot', () => {
  const SYNC_CONFIG = `bucket_definitions:
  global:
    data:
      - SELECT * FROM accounts
  by_owner:
    parameters: SELECT request.user_id() AS user_id
    data:
      - SELECT * FROM events WHERE owner = bucket.user_id
`;
  const ACCOUNTS = 5_000;
  const EVENTS = 40_000; // seconds of snapshot (~12k rows/s on an idle machine)
  const CHUNK = 10_000; // SNAPSHOT_CHUNK_ROWS of source-postgres
  let env: ReplicationEnv;

  beforeAll(async () => {
    env = await createReplicationEnv(
      'snapkill',
      [
        `CREATE TABLE accounts (id int8 PRIMARY KEY, name text NOT NULL)`,
        `CREATE TABLE events (id int8 PRIMARY KEY, owner text NOT NULL, val int8 NOT NULL)`,
        `INSERT INTO accounts SELECT i, 'account ' || i FROM generate_series(1, ${ACCOUNTS}) i`,
        `INSERT INTO events SELECT i, 'u' || (i % 20), i FROM generate_series(1, ${EVENTS}) i`
      ],
      // accounts is copied first: the kill finds it done and events half copied.
      { publication: 'FOR TABLE accounts, events' }
    );
  }, 120_000);
  afterAll(async () => env?.cleanup(), 60_000);

  it('resumes after the restart: finished tables are not copied again, the big one continues after its last saved key', async () => {
    const storageName = await env.createStorageDatabase('snap');
    let child = await env.startChild({ storageName, syncConfig: SYNC_CONFIG });
    const storage = env.openStorage(storageName);
    const progress = async () => {
      const { rows } = await storage.pool.query<{
        table_name: string;
        done: boolean;
        rows_done: string;
        last_key: string | null;
      }>(`SELECT table_name, done, rows_done::text, last_key FROM powersync.snapshot_progress`);
      return new Map(
        rows.map((row) => [row.table_name, { done: row.done, rowsDone: Number(row.rows_done), lastKey: row.last_key }])
      );
    };
    // Kill once accounts is done and events is 2+ chunks in, but far from done.
    const atKill = await withOutput(
      child,
      waitFor(
        'accounts copied and events partly copied',
        async () => {
          const state = await progress();
          const events = state.get('events');
          if (events?.done) throw new Error('the snapshot finished before the kill: make the events table bigger');
          return state.get('accounts')?.done && events && events.rowsDone >= 2 * CHUNK ? state : null;
        },
        120_000,
        10
      )
    );
    await child.kill();
    const killedEvents = atKill.get('events')!;
    const saved = (await progress()).get('events')!;
    expect(saved.done).toBe(false);
    expect(saved.rowsDone).toBeLessThan(EVENTS);
    // No checkpoint exists before the snapshot is done: a client sees nothing of the half copy.
    expect(await storage.getServingCheckpoint()).toBeNull();
    const opsOf = async (table: string) => {
      const { rows } = await storage.pool.query<{ n: string }>(
        `SELECT count(*)::text AS n FROM powersync.bucket_data b JOIN powersync.snapshot_progress p
           ON p.group_id = b.group_id AND p.table_id = b.source_table WHERE p.table_name = $1`,
        [table]
      );
      return Number(rows[0]!.n);
    };
    expect(await opsOf('accounts')).toBe(ACCOUNTS);

    // The source moves on while the service is down, on both sides of the saved key, and on the finished table.
    const lastKey = Number(JSON.parse(saved.lastKey!));
    await env.sourceDb.query(`UPDATE events SET val = -val WHERE id % 997 = 0`); // ~200 rows, below and above lastKey
    await env.sourceDb.query(`UPDATE events SET owner = 'moved' WHERE id BETWEEN $1 AND $2`, [
      lastKey - 50,
      lastKey + 50
    ]);
    await env.sourceDb.query(`DELETE FROM events WHERE id % 1009 = 0`);
    await env.sourceDb.query(
      `INSERT INTO events SELECT i, 'u3', i FROM generate_series(${EVENTS + 1}, ${EVENTS + 100}) i`
    );
    await env.sourceDb.query(`UPDATE accounts SET name = name || ' (renamed)' WHERE id <= 10`);

    child = await env.startChild({ storageName, syncConfig: SYNC_CONFIG });
    const served = await withOutput(child, waitForCheckpointLsn(storage, await env.sourcePosition(), 120_000));
    expect(served.checkpoint.checkpoint).toBeGreaterThan(0n);

    // The log of the restarted process: events finished, accounts not copied again, events resumed past the saved key.
    const lines = logLines(child.output());
    const tablesDone = lines.filter((line) => line.msg === 'table snapshot done').map((line) => line.table);
    expect(tablesDone).toEqual(['public.events']);
    const firstProgress = lines.find((line) => line.msg === 'snapshot progress' && line.table === 'public.events');
    expect(firstProgress?.rowsDone).toBe(saved.rowsDone + CHUNK);
    // Storage: one PUT per accounts row from the snapshot plus the 10 renames; events copied once, except at most one
    // chunk flushed but not yet recorded as progress, plus the changes streamed after the restart.
    expect(await opsOf('accounts')).toBe(ACCOUNTS + 10);
    const eventOps = await opsOf('events');
    expect(eventOps).toBeGreaterThanOrEqual(EVENTS);
    expect(eventOps).toBeLessThan(EVENTS + CHUNK + 2_000);
    console.log(
      `snapshot kill: events ${killedEvents.rowsDone} rows saved at the kill (${saved.rowsDone} after), ` +
        `${eventOps} event ops in storage after the resumed snapshot (${EVENTS} rows copied)`
    );

    const figures = await expectMatchesFreshService(env, storage, SYNC_CONFIG);
    const { rows: sourceCount } = await env.sourceDb.query<{ n: string }>(
      `SELECT ((SELECT count(*) FROM accounts) + (SELECT count(*) FROM events))::text AS n`
    );
    expect(figures.rows).toBe(Number(sourceCount[0]!.n));
    await child.stop();
  }, 300_000);
});

describe('SIGKILL in the middle of a storage flush', () => {
  const SYNC_CONFIG = ITEMS_SYNC_CONFIG;
  const ROWS = 15_000;
  const MOVED = 12_000; // ids [0, MOVED) change owner (a REMOVE and two PUTs each)
  const DELETED = 1_500; // ids [MOVED, MOVED + DELETED) are deleted
  let env: ReplicationEnv;

  beforeAll(async () => {
    env = await createReplicationEnv('flushkill', [
      sourceSchema('items').ddl,
      `INSERT INTO items SELECT i, 'u' || (i % 10), i, 'seed' FROM generate_series(0, ${ROWS - 1}) i`
    ]);
  }, 120_000);
  afterAll(async () => env?.cleanup(), 60_000);

  it('rolls back the interrupted flush, keeps the committed ones, and shows the transaction whole or not at all', async () => {
    const storageName = await env.createStorageDatabase('flush');
    let child = await env.startChild({ storageName, syncConfig: SYNC_CONFIG, heartbeatSeconds: 5 });
    const storage = env.openStorage(storageName);
    const first = await withOutput(child, waitForCheckpointLsn(storage, await env.sourcePosition(), 120_000));
    const streamId = first.stream.id;

    // One source transaction: 40,000 rows move to other owners' buckets, 5,000 rows are deleted.
    await env.sourceDb.query(
      `BEGIN;
       UPDATE items SET owner = 'm' || (id % 7), val = -val, batch = 'moved' WHERE id < ${MOVED};
       DELETE FROM items WHERE id >= ${MOVED} AND id < ${MOVED + DELETED};
       COMMIT;`
    );
    // Kill while a flush transaction is writing bucket_data, after at least one earlier flush of this transaction was
    // committed (keepalive_op above the checkpoint).
    const inFlight = await withOutput(
      child,
      waitFor(
        'a flush in flight after a committed one',
        async () => {
          const { rows } = await storage.pool.query<{ xid: string; ahead: string }>(
            `SELECT a.backend_xid::text AS xid,
                    (SELECT coalesce(keepalive_op, 0) - coalesce(last_checkpoint, 0) FROM powersync.sync_rules WHERE id = $1)::text AS ahead
             FROM pg_stat_activity a
             WHERE a.datname = current_database() AND a.application_name = 'syncpoint-storage' AND a.state = 'active'
               AND a.backend_xid IS NOT NULL AND a.query LIKE '%INSERT INTO powersync.bucket_data%'`,
            [streamId]
          );
          const row = rows[0];
          return row && Number(row.ahead) > 0 ? row : null;
        },
        60_000,
        0
      )
    );
    await child.kill();
    // The storage transaction of the interrupted flush rolled back (Postgres notices the dead client).
    await waitFor(
      'the interrupted flush to roll back',
      async () => {
        const { rows } = await storage.pool.query<{ status: string }>(`SELECT pg_xact_status($1::xid8) AS status`, [
          inFlight.xid
        ]);
        if (rows[0]!.status === 'committed') throw new Error('the flush committed before the kill');
        return rows[0]!.status === 'aborted';
      },
      30_000
    );

    /** At checkpoint `c`, in the global bucket: moved rows visible, and deleted-range rows still visible. */
    const observe = async (checkpoint: bigint) => {
      const { rows } = await storage.pool.query<{ moved: string; kept: string }>(
        `WITH latest AS (
           SELECT DISTINCT ON (source_key) op, data::jsonb AS d
           FROM powersync.bucket_data
           WHERE group_id = $1 AND bucket_name = 'global[]' AND op_id <= $2::int8
           ORDER BY source_key, op_id DESC
         )
         SELECT count(*) FILTER (WHERE op = 'PUT' AND d->>'batch' = 'moved')::text AS moved,
                count(*) FILTER (WHERE op = 'PUT' AND (d->>'id')::int8 >= ${MOVED} AND (d->>'id')::int8 < ${MOVED + DELETED})::text AS kept
         FROM latest`,
        [streamId, checkpoint.toString()]
      );
      return { moved: Number(rows[0]!.moved), kept: Number(rows[0]!.kept) };
    };
    const before = { moved: 0, kept: DELETED };
    const after = { moved: MOVED, kept: 0 };
    expect(await observe((await storage.getServingCheckpoint())!.checkpoint.checkpoint)).toEqual(before);

    child = await env.startChild({ storageName, syncConfig: SYNC_CONFIG, heartbeatSeconds: 5 });
    const seen: Array<{ moved: number; kept: number }> = [];
    let last = -1n;
    await withOutput(
      child,
      waitFor(
        'the transaction to become visible',
        async () => {
          const checkpoint = (await storage.getServingCheckpoint())!.checkpoint.checkpoint;
          if (checkpoint === last) return null;
          last = checkpoint;
          seen.push(await observe(checkpoint));
          return seen.at(-1)!.moved === MOVED;
        },
        120_000,
        20
      )
    );
    // Every checkpoint the restarted replicator served showed the transaction whole or not at all.
    for (const observation of seen) expect([before, after]).toContainEqual(observation);

    await expectMatchesFreshService(env, storage, SYNC_CONFIG);
    await child.stop();
  }, 300_000);
});

/**
 * A loopback TCP proxy in front of the source Postgres that, while `holdMarkers` is on, never forwards a frontend
 * message calling `pg_logical_emit_message`: a process using it stores a checkpoint request and then waits forever for
 * its marker, which is the moment to SIGKILL it. Everything else passes through unchanged.
 */
async function startMarkerHoldingProxy(targetPort: number) {
  const sockets = new Set<net.Socket>();
  const state = { holdMarkers: false, held: 0 };
  const server = net.createServer((client) => {
    const upstream = net.connect(targetPort, '127.0.0.1');
    sockets.add(client).add(upstream);
    const close = () => {
      client.destroy();
      upstream.destroy();
    };
    client.on('error', close).on('close', close);
    upstream.on('error', close).on('close', close);
    upstream.pipe(client);
    let buffer = Buffer.alloc(0);
    let startup = true; // the startup message has no type byte
    let holding = false;
    client.on('data', (chunk: Buffer) => {
      buffer = Buffer.concat([buffer, chunk]);
      while (!holding) {
        const header = startup ? 4 : 5;
        if (buffer.length < header) return;
        const length = (startup ? 0 : 1) + buffer.readInt32BE(startup ? 0 : 1);
        if (buffer.length < length) return;
        const message = buffer.subarray(0, length);
        if (!startup && state.holdMarkers && message.includes('pg_logical_emit_message')) {
          holding = true; // this connection is stuck from here on, like a source that stopped answering
          state.held++;
          return;
        }
        upstream.write(message);
        buffer = buffer.subarray(length);
        startup = false;
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    state,
    port: (server.address() as net.AddressInfo).port,
    async close() {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  };
}

/** A `syncpoint start` child process with its own config text (replication-harness `startChild` writes its own). */
function spawnServiceChild(configText: string, role: 'api' | 'replication' | 'unified') {
  const ready = (async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'syncpoint-fault-'));
    const file = path.join(dir, 'config.yaml');
    await writeFile(file, configText);
    return { dir, file };
  })();
  let output = '';
  const started = ready.then(({ file }) => {
    // node with tsx's loader (not the tsx CLI, whose grandchild a SIGKILL would leave running).
    const child = spawn(
      process.execPath,
      [
        '--max-old-space-size=1024', // our own heap limit: no supervised child that SIGKILL would miss
        '--import',
        'tsx',
        '--conditions=@syncpoint/source',
        path.join(serviceDir, 'src/cli.ts'),
        'start',
        '-c',
        file,
        '--role',
        role,
        '--port',
        '0'
      ],
      { cwd: serviceDir, env: { ...process.env, SYNCPOINT_LOG_LEVEL: process.env.SYNCPOINT_TEST_LOG ?? 'info' } }
    );
    child.stdout.on('data', (chunk) => (output = (output + chunk).slice(-200_000)));
    child.stderr.on('data', (chunk) => (output = (output + chunk).slice(-200_000)));
    const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()));
    return { child, exited };
  });
  return {
    output: () => output,
    /** The base URL, once the process logs that it is listening. */
    url: () =>
      waitFor(
        'the child to listen',
        async () => logLines(output).find((line) => line.msg === 'Syncpoint is listening')?.url as string | undefined,
        60_000
      ).catch((error) => {
        throw new Error(`${error.message}\nchild output:\n${output.slice(-5_000)}`);
      }),
    async kill() {
      const { child, exited } = await started;
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await exited;
      await rm((await ready).dir, { recursive: true, force: true });
    }
  };
}

describe('SIGKILL between storing a checkpoint request and emitting its marker', () => {
  const SYNC_CONFIG = `bucket_definitions:
  mine:
    parameters: SELECT request.user_id() AS user_id
    data:
      - SELECT * FROM todos WHERE owner = bucket.user_id
`;
  let env: ReplicationEnv;
  let proxy: Awaited<ReturnType<typeof startMarkerHoldingProxy>>;
  const children: Array<ReturnType<typeof spawnServiceChild>> = [];
  const spawnChild = (configText: string, role: 'api' | 'replication') => {
    const child = spawnServiceChild(configText, role);
    children.push(child);
    return child;
  };

  beforeAll(async () => {
    env = await createReplicationEnv('markerkill', [
      `CREATE TABLE todos (id text PRIMARY KEY, owner text NOT NULL, title text NOT NULL)`,
      `INSERT INTO todos VALUES ('t1', 'alice', 'milk'), ('t2', 'bob', 'bread')`
    ]);
    proxy = await startMarkerHoldingProxy(env.postgres.port);
  }, 120_000);
  afterAll(async () => {
    for (const child of children) await child.kill().catch(() => {});
    await proxy?.close();
    await env?.cleanup();
  }, 60_000);

  it('the request is acknowledged after the kill: when the client retries on another process, and when nobody retries', async () => {
    const storageName = await env.createStorageDatabase('marker');
    const directConfig = env.configText({ storageName, syncConfig: SYNC_CONFIG }); // heartbeat: 60 s
    const sourceAddress = `127.0.0.1:${env.postgres.port}/${env.sourceName}`;
    expect(directConfig).toContain(sourceAddress);
    const proxiedConfig = directConfig.replace(sourceAddress, `127.0.0.1:${proxy.port}/${env.sourceName}`);

    // The replicator and a second API process reach the source directly; the API process to be killed goes through the proxy.
    spawnChild(directConfig, 'replication');
    const otherApi = spawnChild(directConfig, 'api');
    let killedApi = spawnChild(proxiedConfig, 'api');
    const storage = env.openStorage(storageName);
    await waitForCheckpointLsn(storage, await env.sourcePosition(), 120_000);
    const otherUrl = await otherApi.url();
    let killedUrl = await killedApi.url();
    const markers = await watchMarkers(env.sourceDb, `${env.slotPrefix}markers`);

    const request = (url: string, sub: string, clientId: string, id: number) =>
      signDevToken(TEST_DEV_KEY, { sub }).then((token) =>
        fetch(`${url}/sync/checkpoint-request`, {
          method: 'POST',
          headers: { 'Content-Type': 'application/json', Authorization: `Token ${token}` },
          body: JSON.stringify({ client_id: clientId, checkpoint_request_id: String(id) })
        })
      );
    /** Store request `id` through the proxied process, and SIGKILL it while its marker is held back. */
    const storeThenKill = async (sub: string, clientId: string, id: number) => {
      proxy.state.holdMarkers = true;
      const held = proxy.state.held;
      const response = request(killedUrl, sub, clientId, id).then(
        (res) => res.status,
        () => 'connection lost'
      );
      await waitFor(
        'the request stored and its marker held',
        async () => {
          const { rows } = await storage.pool.query(
            `SELECT 1 FROM powersync.write_checkpoints WHERE user_id = $1 AND write_checkpoint = $2`,
            [`${sub}/${clientId}`, id]
          );
          return rows.length === 1 && proxy.state.held > held;
        },
        30_000
      );
      await killedApi.kill();
      expect(await response).toBe('connection lost');
    };
    /** The stored request stays unacknowledged: no marker reaches the source WAL and the idle source stays put. */
    const expectStuck = async (fullUserId: string) => {
      await markers.take();
      await sleep(3_000);
      expect(await markers.take()).toBe(0);
      const served = (await storage.getServingCheckpoint())!.checkpoint;
      const { rows } = await storage.pool.query<{ pending: boolean; ahead: boolean }>(
        `SELECT processed_at_lsn IS NULL AS pending, head_lsn > $2::pg_lsn AS ahead FROM powersync.write_checkpoints WHERE user_id = $1`,
        [fullUserId, served.lsn]
      );
      expect(rows[0]).toEqual({ pending: true, ahead: true });
      expect(await storage.lastWriteCheckpoint(fullUserId, served.lsn)).toBeNull();
    };
    /** The client's sync stream reports `id` as its write checkpoint; returns how long that took. */
    const acknowledged = async (url: string, sub: string, clientId: string, id: number) => {
      const started = Date.now();
      const stream = await openSyncStream(url, await signDevToken(TEST_DEV_KEY, { sub }), { client_id: clientId });
      try {
        await stream.until(
          (line) => (line.checkpoint ?? line.checkpoint_diff)?.write_checkpoint === String(id),
          20_000
        );
      } finally {
        await stream.close();
      }
      return Date.now() - started;
    };

    // 1. The client's request failed (connection lost), so it posts the same id again; a load balancer sends it to the
    //    other API process. The duplicate of a pending request emits a marker (PROTOCOL §4.7).
    await storeThenKill('alice', 'phone', 7);
    await expectStuck('alice/phone');
    const retried = await request(otherUrl, 'alice', 'phone', 7);
    expect(retried.status).toBe(200);
    expect(await retried.json()).toEqual({ data: { checkpoint_request_id: '7' } });
    const afterRetryMs = await acknowledged(otherUrl, 'alice', 'phone', 7);

    // 2. Nobody retries: the killed process is restarted, and the request is acknowledged well before the
    //    replicator's next heartbeat marker (60 s).
    killedApi = spawnChild(proxiedConfig, 'api');
    killedUrl = await killedApi.url();
    await storeThenKill('bob', 'laptop', 8);
    await expectStuck('bob/laptop');
    proxy.state.holdMarkers = false;
    const restartedAt = Date.now();
    killedApi = spawnChild(proxiedConfig, 'api');
    const restartedUrl = await killedApi.url();
    await acknowledged(restartedUrl, 'bob', 'laptop', 8);
    const afterRestartMs = Date.now() - restartedAt;
    expect(afterRestartMs).toBeLessThan(30_000);
    expect(logLines(killedApi.output()).some((line) => /pending checkpoint request/.test(line.msg))).toBe(true);

    // Every stored request is processed.
    const { rows } = await storage.pool.query<{ pending: string }>(
      `SELECT count(*)::text AS pending FROM powersync.write_checkpoints WHERE processed_at_lsn IS NULL`
    );
    expect(rows[0]!.pending).toBe('0');
    console.log(
      `marker kill: acknowledged ${afterRetryMs} ms after the retry; ${afterRestartMs} ms after the restart (start included)`
    );
  }, 240_000);
});
