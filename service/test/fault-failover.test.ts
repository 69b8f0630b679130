import { sourceSchema } from '@syncpoint/test-fixtures';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  clientToken,
  expectMatchesFreshSnapshot,
  expectRequestAcknowledged,
  postCheckpointRequest
} from './fault-invariants.js';
import {
  createReplicationEnv,
  ITEMS_SYNC_CONFIG,
  sleep,
  waitFor,
  waitForCheckpointLsn,
  type ChildService,
  type ReplicationEnv
} from './replication-harness.js';
import { openSyncStream } from './sync-stream-client.js';

/**
 * Issue 12 items 1–2 against real `syncpoint start` processes:
 * - SIGKILL of the only process and an immediate restart: the new process replicates at once (its predecessor's
 *   leadership died with its lock connection), so a checkpoint request is acknowledged, and a row written before the
 *   restart reaches a client, within seconds of the new process listening (target 3 s; was 30 s, the lease).
 * - SIGSTOP of the leader until a standby has taken over and written, then SIGCONT: the resumed process writes nothing,
 *   logs that it lost leadership and stands by; afterwards the fault invariants hold.
 */

type SyncLine = { checkpoint?: { write_checkpoint?: string }; checkpoint_diff?: { write_checkpoint?: string } };

/** The target for restart-to-acknowledgement. */
const FAILOVER_TARGET_MS = 3_000;
/** What the assertion allows on a loaded 2-core CI machine (the figure is printed beside the target). */
const FAILOVER_LIMIT_MS = 8_000;

function listeningUrl(child: ChildService): string | null {
  for (const line of child.output().split('\n')) {
    if (!line.includes('Syncpoint is listening')) continue;
    try {
      return (JSON.parse(line) as { url: string }).url;
    } catch {
      return null;
    }
  }
  return null;
}

async function waitListening(child: ChildService, timeoutMs = 90_000): Promise<{ url: string; at: number }> {
  const url = await waitFor('the service to listen', () => Promise.resolve(listeningUrl(child)), timeoutMs, 10).catch(
    (error) => {
      throw new Error(`${(error as Error).message}\nchild output:\n${child.output().slice(-5_000)}`);
    }
  );
  return { url, at: Date.now() };
}

describe('failover (issue 12)', () => {
  let env: ReplicationEnv;

  beforeAll(async () => {
    env = await createReplicationEnv('failover', [
      sourceSchema('items').ddl,
      `INSERT INTO items SELECT i, 'u' || (i % 5), i, 'seed' FROM generate_series(1, 200) i`
    ]);
  }, 120_000);
  afterAll(async () => env?.cleanup(), 60_000);

  it('SIGKILL and an immediate restart: acknowledged and caught up within seconds of listening', async () => {
    const storageName = await env.createStorageDatabase('restart');
    const storage = env.openStorage(storageName);
    const first = await env.startChild({ storageName, syncConfig: ITEMS_SYNC_CONFIG, role: 'unified' });
    await waitListening(first);
    await waitForCheckpointLsn(storage, await env.sourcePosition(), 90_000);

    // A row written just before the crash, which the killed process may or may not have replicated.
    await env.sourceDb.query(`INSERT INTO items VALUES (100001, 'u1', 1, 'before-kill')`);
    await first.kill();
    const restarted = await env.startChild({ storageName, syncConfig: ITEMS_SYNC_CONFIG, role: 'unified' });
    const { url, at: listeningAt } = await waitListening(restarted);

    const token = await clientToken('u1');
    const stream = await openSyncStream(url, token, { client_id: 'failover-device', raw_data: true });
    try {
      await postCheckpointRequest(url, token, 'failover-device', 1n, 30_000);
      let sawRow = false;
      let acknowledged = false;
      await stream.until((line: SyncLine) => {
        if (JSON.stringify(line).includes('before-kill')) sawRow = true;
        const ack = (line.checkpoint ?? line.checkpoint_diff)?.write_checkpoint;
        if (ack !== undefined && BigInt(ack) >= 1n) acknowledged = true;
        return sawRow && acknowledged && 'checkpoint_complete' in line;
      }, 30_000);
    } finally {
      await stream.close();
    }
    const restartToAckMs = Date.now() - listeningAt;
    console.log(
      `failover: restart-to-acknowledgement ${restartToAckMs} ms (target ${FAILOVER_TARGET_MS} ms) after SIGKILL`
    );
    expect(restartToAckMs).toBeLessThan(FAILOVER_LIMIT_MS);
    expect(restarted.output()).not.toMatch(/standing by/);
    await restarted.stop();
  }, 180_000);

  it('SIGSTOP of the leader: the standby takes over; the resumed leader writes nothing and stands by', async () => {
    // The first leader's lease is short, so the standby deposes it quickly. The standby's is long: frozen in its turn
    // below, it keeps its lease however slow a loaded machine is, so whatever the resumed process writes is refused.
    const LOCK_TTL_MS = 3_000;
    const STANDBY_LOCK_TTL_MS = 30_000;
    const storageName = await env.createStorageDatabase('pause');
    const storage = env.openStorage(storageName);
    const ttl = { SYNCPOINT_REPLICATION_LOCK_TTL_MS: String(LOCK_TTL_MS) };
    const standbyTtl = { SYNCPOINT_REPLICATION_LOCK_TTL_MS: String(STANDBY_LOCK_TTL_MS) };
    const leader = await env.startChild({ storageName, syncConfig: ITEMS_SYNC_CONFIG, role: 'unified', env: ttl });
    const { url: leaderUrl } = await waitListening(leader);
    await waitFor(
      'the leader to replicate',
      () => Promise.resolve(/replication lock acquired/.test(leader.output())),
      60_000
    );
    const standby = await env.startChild({
      storageName,
      syncConfig: ITEMS_SYNC_CONFIG,
      role: 'unified',
      env: standbyTtl
    });
    const { url: standbyUrl } = await waitListening(standby);
    await waitFor('the standby to stand by', () => Promise.resolve(/standing by/.test(standby.output())), 60_000);
    await waitForCheckpointLsn(storage, await env.sourcePosition(), 90_000);

    // A request stored through the leader's API before the pause: it must be acknowledged in the end.
    const token = await clientToken('u2');
    await postCheckpointRequest(leaderUrl, token, 'pause-device', 1n);

    leader.child.kill('SIGSTOP');
    try {
      // Changes while the leader is frozen: its walsender pushes them into its socket, so on SIGCONT it has data to
      // write right away (and must be refused).
      await env.sourceDb.query(`INSERT INTO items SELECT i, 'u2', i, 'while-paused' FROM generate_series(300, 340) i`);
      await waitFor(
        'the standby to take over',
        () => Promise.resolve(/replication lock acquired/.test(standby.output())),
        LOCK_TTL_MS + 30_000
      ).catch((error) => {
        throw new Error(`${(error as Error).message}\nstandby output:\n${standby.output().slice(-5_000)}`);
      });
      await env.sourceDb.query(`UPDATE items SET val = -val WHERE batch = 'while-paused'`);
      await waitForCheckpointLsn(storage, await env.sourcePosition(), 60_000);

      // Freeze the new leader too (for less than its lease, so the resumed one cannot legitimately take over again):
      // whatever changes in storage now comes from the resumed process.
      standby.child.kill('SIGSTOP');
      const storageState = async (): Promise<unknown> =>
        (
          await storage.pool.query<Record<string, unknown>>(
            `SELECT (SELECT count(*) FROM powersync.bucket_data)::int AS ops,
                    (SELECT max(op_id) FROM powersync.bucket_data)::text AS max_op,
                    (SELECT json_agg(json_build_object('id', id, 'cp', last_checkpoint::text, 'lsn', last_checkpoint_lsn::text,
                       'keepalive', keepalive_op::text, 'slot', slot_name) ORDER BY id) FROM powersync.sync_rules) AS streams,
                    (SELECT json_agg(json_build_object('user', user_id, 'processed', processed_at_lsn::text) ORDER BY user_id)
                       FROM powersync.write_checkpoints) AS requests,
                    (SELECT holder FROM powersync.replication_lock) AS holder`
          )
        ).rows[0];
      const before = await storageState();
      const logLengthBefore = leader.output().length;
      leader.child.kill('SIGCONT');
      await waitFor(
        'the resumed leader to notice it lost leadership',
        () => Promise.resolve(/replication (leadership|lock) lost/.test(leader.output().slice(logLengthBefore))),
        10_000
      ).catch((error) => {
        throw new Error(`${(error as Error).message}\nleader output:\n${leader.output().slice(-5_000)}`);
      });
      await sleep(500);
      expect(await storageState()).toEqual(before);
    } finally {
      if (leader.child.exitCode === null) leader.child.kill('SIGCONT');
      if (standby.child.exitCode === null) standby.child.kill('SIGCONT');
    }
    // It stands by (retrying the lock), and the new leader is unaffected.
    await waitFor('the resumed one to stand by', () => Promise.resolve(/standing by/.test(leader.output())), 30_000);

    // Fault invariants: the request stored before the pause is acknowledged (through either API), and clients end with
    // exactly what a fresh snapshot of the source gives.
    await expectRequestAcknowledged(standbyUrl, token, 'pause-device', 1n, 60_000);
    await expectRequestAcknowledged(leaderUrl, token, 'pause-device', 1n, 60_000);
    await expectMatchesFreshSnapshot({
      faulted: storage,
      sourcePosition: () => env.sourcePosition(),
      startFresh: async () => {
        const freshName = await env.createStorageDatabase('pausefresh');
        await env.startInProcess({ storageName: freshName, syncConfig: ITEMS_SYNC_CONFIG, role: 'replication' });
        return env.openStorage(freshName);
      }
    });
    await standby.stop();
    await leader.stop();
  }, 300_000);
});
