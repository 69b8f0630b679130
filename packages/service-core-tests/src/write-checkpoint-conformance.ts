import { INT64_MAX, normalizeLsn, type Lsn } from '@syncpoint/codecs';
import type {
  BucketStorage,
  CreateManagedWriteCheckpointsResult,
  ManagedWriteCheckpointRequest
} from '@syncpoint/service-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

/** Creates a migrated, empty storage for one test file; `close` is called once at the end. */
export type StorageFactory = () => Promise<BucketStorage>;

const lsn = (text: string): Lsn => normalizeLsn(text);
const heads = (text: string) => ({ '1': lsn(text) });

let userCounter = 0;
/** A full user id no other test uses, so tests in one storage don't see each other's records. */
export const freshUser = (label = 'user') => `${label}-${process.pid}-${++userCounter}/client-${userCounter}`;

function supplied(user_id: string, id: bigint, head = '0/100'): ManagedWriteCheckpointRequest {
  return { user_id, heads: heads(head), checkpoint_request_id: id };
}

/** The required part of a result (`outcomes` is optional and checked separately). */
function core(result: CreateManagedWriteCheckpointsResult) {
  return { writeCheckpoints: result.writeCheckpoints, shouldAdvance: result.shouldAdvance };
}

/**
 * Conformance suite for the checkpoint-request storage contract (PROTOCOL §4.3, §4.7–§4.10).
 * Every storage module registers it with its own factory.
 */
export function registerWriteCheckpointConformance(factory: StorageFactory) {
  let storage: BucketStorage;
  beforeAll(async () => {
    storage = await factory();
  });
  afterAll(async () => {
    await storage?.close();
  });

  async function request(entries: ManagedWriteCheckpointRequest[]) {
    return storage.createManagedWriteCheckpoints(entries);
  }

  describe('supplied checkpoint request ids (PROTOCOL §4.3)', () => {
    it('creates a record when none is stored and asks for a marker', async () => {
      const user = freshUser();
      const result = await request([supplied(user, 42n)]);
      expect(result.writeCheckpoints.get(user)).toBe(42n);
      expect(result.shouldAdvance).toBe(true);
      expect(await storage.lastWriteCheckpoint(user, lsn('0/100'))).toBe(42n);
    });

    it('advances to a greater id with the new head and makes the record pending again', async () => {
      const user = freshUser();
      await request([supplied(user, 5n, '0/100')]);
      await storage.markWriteCheckpointsProcessed(lsn('0/100'));
      const result = await request([supplied(user, 6n, '0/200')]);
      expect(result.writeCheckpoints.get(user)).toBe(6n);
      expect(result.shouldAdvance).toBe(true);
      // The earlier, already reached id stays acknowledged until the new head is reached (issue 6).
      expect(await storage.lastWriteCheckpoint(user, lsn('0/1FF'))).toBe(5n);
      expect(await storage.lastWriteCheckpoint(user, lsn('0/200'))).toBe(6n);
    });

    it('an equal id keeps the original head', async () => {
      const user = freshUser();
      await request([supplied(user, 7n, '0/100')]);
      const again = await request([supplied(user, 7n, '0/900')]);
      expect(again.writeCheckpoints.get(user)).toBe(7n);
      expect(await storage.lastWriteCheckpoint(user, lsn('0/100'))).toBe(7n);
    });

    it('an equal id for a pending record still asks for a marker (lost-marker retry)', async () => {
      const user = freshUser();
      await request([supplied(user, 7n, '0/100')]);
      const retry = await request([supplied(user, 7n, '0/100')]);
      expect(retry.shouldAdvance).toBe(true);
    });

    it('an equal id for a processed record asks for no marker', async () => {
      const user = freshUser();
      await request([supplied(user, 8n, '0/100')]);
      await storage.markWriteCheckpointsProcessed(lsn('0/100'));
      const duplicate = await request([supplied(user, 8n, '0/500')]);
      expect(core(duplicate)).toEqual({ writeCheckpoints: new Map([[user, 8n]]), shouldAdvance: false });
    });

    it('a lower id changes nothing and returns the stored id', async () => {
      const user = freshUser();
      await request([supplied(user, 10n, '0/100')]);
      const stale = await request([supplied(user, 3n, '0/900')]);
      expect(stale.writeCheckpoints.get(user)).toBe(10n);
      expect(await storage.lastWriteCheckpoint(user, lsn('0/100'))).toBe(10n);
    });

    it('a lower id asks for a marker only while the stored record is pending', async () => {
      const user = freshUser();
      await request([supplied(user, 10n, '0/100')]);
      expect((await request([supplied(user, 3n)])).shouldAdvance).toBe(true);
      await storage.markWriteCheckpointsProcessed(lsn('0/100'));
      expect((await request([supplied(user, 3n)])).shouldAdvance).toBe(false);
    });

    it('keeps ids per full user id: clients of one user are independent', async () => {
      const base = freshUser('shared');
      const a = `${base}/a`;
      const b = `${base}/b`;
      const result = await request([supplied(a, 3n), supplied(b, 9n)]);
      expect(result.writeCheckpoints).toEqual(
        new Map([
          [a, 3n],
          [b, 9n]
        ])
      );
      expect(await storage.lastWriteCheckpoint(a, lsn('1/0'))).toBe(3n);
    });

    it('round-trips 2^63-1 exactly', async () => {
      const user = freshUser();
      const result = await request([supplied(user, INT64_MAX)]);
      expect(result.writeCheckpoints.get(user)).toBe(INT64_MAX);
      expect(await storage.lastWriteCheckpoint(user, lsn('0/100'))).toBe(INT64_MAX);
      expect((await request([supplied(user, INT64_MAX - 1n)])).writeCheckpoints.get(user)).toBe(INT64_MAX);
    });

    it('collapses a batch to the greatest id per user, answering every entry', async () => {
      const user = freshUser();
      const other = freshUser();
      const result = await request([supplied(user, 5n), supplied(user, 7n), supplied(other, 1n), supplied(user, 6n)]);
      expect(result.writeCheckpoints).toEqual(
        new Map([
          [user, 7n],
          [other, 1n]
        ])
      );
      expect(await storage.lastWriteCheckpoint(user, lsn('0/100'))).toBe(7n);
    });

    it("reports each entry's outcome when the storage tracks it", async () => {
      const user = freshUser();
      const legacy = freshUser();
      const outcomes = async (entries: ManagedWriteCheckpointRequest[]) => (await request(entries)).outcomes;
      const first = await outcomes([supplied(user, 5n), { user_id: legacy, heads: heads('0/100') }]);
      if (first === undefined) return; // optional in the contract
      expect(first).toEqual(
        new Map([
          [user, 'advanced'],
          [legacy, 'generated']
        ])
      );
      expect(await outcomes([supplied(user, 5n)])).toEqual(new Map([[user, 'duplicate']]));
      expect(await outcomes([supplied(user, 4n)])).toEqual(new Map([[user, 'stale']]));
      expect(await outcomes([supplied(user, 6n)])).toEqual(new Map([[user, 'advanced']]));
    });

    it('an empty batch does nothing', async () => {
      expect(core(await request([]))).toEqual({ writeCheckpoints: new Map(), shouldAdvance: false });
    });

    it('100 concurrent requests with shuffled ids leave the maximum, every answer ≥ its own id', async () => {
      const user = freshUser();
      const ids = Array.from({ length: 100 }, (_, i) => BigInt(i + 1));
      for (let i = ids.length - 1; i > 0; i--) {
        const j = Math.floor(Math.random() * (i + 1));
        [ids[i], ids[j]] = [ids[j]!, ids[i]!];
      }
      const results = await Promise.all(ids.map((id) => request([supplied(user, id)])));
      results.forEach((result, i) => expect(result.writeCheckpoints.get(user)! >= ids[i]!).toBe(true));
      expect(await storage.lastWriteCheckpoint(user, lsn('0/100'))).toBe(100n);
    });
  });

  describe('generated ids (legacy /write-checkpoint2.json, PROTOCOL §4.4)', () => {
    it('starts at 1 and increments with the latest head', async () => {
      const user = freshUser();
      const first = await request([{ user_id: user, heads: heads('0/100') }]);
      expect(core(first)).toEqual({ writeCheckpoints: new Map([[user, 1n]]), shouldAdvance: true });
      const second = await request([{ user_id: user, heads: heads('0/300') }]);
      expect(second.writeCheckpoints.get(user)).toBe(2n);
      expect(await storage.lastWriteCheckpoint(user, lsn('0/FF'))).toBeNull();
      expect(await storage.lastWriteCheckpoint(user, lsn('0/200'))).toBe(1n);
      expect(await storage.lastWriteCheckpoint(user, lsn('0/300'))).toBe(2n);
    });

    it('continues from a supplied id, and a supplied id continues from a generated one', async () => {
      const user = freshUser();
      await request([supplied(user, 41n)]);
      expect((await request([{ user_id: user, heads: heads('0/100') }])).writeCheckpoints.get(user)).toBe(42n);
      expect((await request([supplied(user, 42n)])).writeCheckpoints.get(user)).toBe(42n);
      expect((await request([supplied(user, 43n)])).writeCheckpoints.get(user)).toBe(43n);
    });

    it('always asks for a marker, even when the previous id was processed', async () => {
      const user = freshUser();
      await request([{ user_id: user, heads: heads('0/100') }]);
      await storage.markWriteCheckpointsProcessed(lsn('0/100'));
      expect((await request([{ user_id: user, heads: heads('0/100') }])).shouldAdvance).toBe(true);
    });

    it('generated entries of one user in one batch produce one increment; a supplied entry wins', async () => {
      const user = freshUser();
      const other = freshUser();
      const result = await request([
        { user_id: user, heads: heads('0/100') },
        { user_id: user, heads: heads('0/100') },
        { user_id: other, heads: heads('0/100') },
        supplied(other, 9n)
      ]);
      expect(result.writeCheckpoints).toEqual(
        new Map([
          [user, 1n],
          [other, 9n]
        ])
      );
    });
  });

  describe('acknowledgement by replication (PROTOCOL §4.8)', () => {
    it('returns null before anything is replicated and until the head is reached', async () => {
      const user = freshUser();
      await request([supplied(user, 1n, '0/16B3748')]);
      expect(await storage.lastWriteCheckpoint(user, null)).toBeNull();
      expect(await storage.lastWriteCheckpoint(user, lsn('0/16B3747'))).toBeNull();
      expect(await storage.lastWriteCheckpoint(user, lsn('0/16B3748'))).toBe(1n);
      expect(await storage.lastWriteCheckpoint(freshUser(), lsn('F/0'))).toBeNull();
    });

    it('compares LSNs numerically (9/0 < 10/0), not as text of different lengths', async () => {
      const user = freshUser();
      await request([supplied(user, 1n, '10/0')]);
      expect(await storage.lastWriteCheckpoint(user, lsn('9/FFFFFFFF'))).toBeNull();
      await storage.markWriteCheckpointsProcessed(lsn('9/FFFFFFFF'));
      expect((await request([supplied(user, 1n)])).shouldAdvance).toBe(true);
    });

    it('lastWriteCheckpoints answers many users at once exactly as lastWriteCheckpoint does one by one', async (context) => {
      if (!storage.lastWriteCheckpoints) return context.skip(); // optional: the sync stream falls back to one by one
      const users = Array.from({ length: 6 }, () => freshUser());
      // reached, not reached, an earlier pair reached under a later pending one, a processed one, none stored, generated.
      await request([
        supplied(users[0]!, 3n, '0/100'),
        supplied(users[1]!, 4n, 'A/0'),
        supplied(users[2]!, 7n, '0/200')
      ]);
      await request([supplied(users[2]!, 8n, 'B/0'), supplied(users[3]!, 9n, '0/50')]);
      await storage.markWriteCheckpointsProcessed(lsn('0/60'));
      await request([{ user_id: users[5]!, heads: { '1': lsn('0/300') } }]);
      for (const at of ['0/0', '0/100', '0/300', 'A/0', 'F/0']) {
        const batched = await storage.lastWriteCheckpoints(users, lsn(at));
        const single = new Map<string, bigint>();
        for (const user of users) {
          const value = await storage.lastWriteCheckpoint(user, lsn(at));
          if (value !== null) single.set(user, value);
        }
        expect(batched, `at ${at}`).toEqual(single);
      }
      expect(await storage.lastWriteCheckpoints(users, lsn('0/300'))).toEqual(
        new Map([
          [users[0]!, 3n],
          [users[2]!, 7n],
          [users[3]!, 9n],
          [users[5]!, 1n]
        ])
      );
    });

    it('marks exactly the pending records whose head is reached', async () => {
      const reached = freshUser();
      const notReached = freshUser();
      await request([supplied(reached, 1n, '0/500'), supplied(notReached, 1n, 'A0/600')]);
      expect(await storage.markWriteCheckpointsProcessed(lsn('0/550'))).toBeGreaterThanOrEqual(1);
      expect((await request([supplied(reached, 1n)])).shouldAdvance).toBe(false);
      expect((await request([supplied(notReached, 1n)])).shouldAdvance).toBe(true);
    });
  });

  describe('an earlier request is never delayed by a later one (issue 6)', () => {
    it('42 at head A, then 43 at head B before A is reached: at A ≤ L < B the answer is 42', async () => {
      const user = freshUser();
      await request([supplied(user, 42n, '0/1000')]);
      await request([supplied(user, 43n, '0/2000')]);
      expect(await storage.lastWriteCheckpoint(user, lsn('0/FFF'))).toBeNull();
      expect(await storage.lastWriteCheckpoint(user, lsn('0/1000'))).toBe(42n);
      expect(await storage.lastWriteCheckpoint(user, lsn('0/1FFF'))).toBe(42n);
      expect(await storage.lastWriteCheckpoint(user, lsn('0/2000'))).toBe(43n);
      // Processing A marks nothing of the latest record, which waits for B.
      await storage.markWriteCheckpointsProcessed(lsn('0/1800'));
      expect((await request([supplied(user, 43n)])).shouldAdvance).toBe(true);
      expect(await storage.lastWriteCheckpoint(user, lsn('0/1800'))).toBe(42n);
    });

    it('each checkpoint acknowledges the greatest id whose head it reached', async () => {
      const user = freshUser();
      for (let id = 1n; id <= 5n; id++) await request([supplied(user, id, `0/${id}000`)]);
      for (let id = 1n; id <= 5n; id++) {
        expect(await storage.lastWriteCheckpoint(user, lsn(`0/${id}000`))).toBe(id);
        expect(await storage.lastWriteCheckpoint(user, lsn(`0/${id}FFF`))).toBe(id);
      }
    });

    it('equal and stale requests leave the earlier pairs as they are', async () => {
      const user = freshUser();
      await request([supplied(user, 42n, '0/1000')]);
      await request([supplied(user, 43n, '0/2000')]);
      await request([supplied(user, 43n, '0/3000')]);
      await request([supplied(user, 40n, '0/3000')]);
      expect(await storage.lastWriteCheckpoint(user, lsn('0/1000'))).toBe(42n);
      expect(await storage.lastWriteCheckpoint(user, lsn('0/2000'))).toBe(43n);
    });

    it('a later id whose head is not after an earlier one supersedes it (heads read by racing batches)', async () => {
      const user = freshUser();
      await request([supplied(user, 42n, '0/3000')]);
      await request([supplied(user, 43n, '0/2000')]);
      expect(await storage.lastWriteCheckpoint(user, lsn('0/1FFF'))).toBeNull();
      expect(await storage.lastWriteCheckpoint(user, lsn('0/2000'))).toBe(43n);
      expect(await storage.lastWriteCheckpoint(user, lsn('0/3000'))).toBe(43n);
    });

    it('keeps at most 16 earlier pairs: the oldest are acknowledged with the next kept one, never early', async () => {
      const user = freshUser();
      for (let id = 1n; id <= 20n; id++) await request([supplied(user, id, `0/${id.toString(16)}000`)]);
      // Pairs 4..19 are kept besides the latest (20); 1..3 were dropped.
      expect(await storage.lastWriteCheckpoint(user, lsn('0/1000'))).toBeNull();
      expect(await storage.lastWriteCheckpoint(user, lsn('0/3FFF'))).toBeNull();
      expect(await storage.lastWriteCheckpoint(user, lsn('0/4000'))).toBe(4n);
      expect(await storage.lastWriteCheckpoint(user, lsn('0/13FFF'))).toBe(19n);
      expect(await storage.lastWriteCheckpoint(user, lsn('0/14000'))).toBe(20n);
    });

    it('a processed id stays acknowledged while the next request is pending', async () => {
      const user = freshUser();
      await request([supplied(user, 1n, '0/1000')]);
      await request([supplied(user, 2n, '0/2000')]);
      await storage.markWriteCheckpointsProcessed(lsn('0/2000'));
      await request([supplied(user, 3n, '0/3000')]);
      expect(await storage.lastWriteCheckpoint(user, lsn('0/2000'))).toBe(2n);
      expect(await storage.lastWriteCheckpoint(user, lsn('0/3000'))).toBe(3n);
    });

    it('legacy generated ids keep earlier pairs too', async () => {
      const user = freshUser();
      await request([{ user_id: user, heads: heads('0/1000') }]);
      await request([{ user_id: user, heads: heads('0/2000') }]);
      expect(await storage.lastWriteCheckpoint(user, lsn('0/1000'))).toBe(1n);
      expect(await storage.lastWriteCheckpoint(user, lsn('0/2000'))).toBe(2n);
    });
  });

  describe('retention (PROTOCOL §4.10)', () => {
    const future = () => new Date(Date.now() + 3_600_000);

    it('deletes processed client-requested records older than the cutoff', async () => {
      const user = freshUser();
      await request([supplied(user, 4n, '0/100')]);
      await storage.markWriteCheckpointsProcessed(lsn('0/100'));
      expect(await storage.deleteExpiredCheckpointRequests(future())).toBeGreaterThanOrEqual(1);
      expect(await storage.lastWriteCheckpoint(user, lsn('FFFF/0'))).toBeNull();
      const restarted = await request([supplied(user, 1n, '0/100')]);
      expect(restarted.writeCheckpoints.get(user)).toBe(1n);
    });

    it('never deletes a pending record, nor a generated one', async () => {
      const pending = freshUser();
      const generated = freshUser();
      await request([supplied(pending, 4n, 'FFFF/0'), { user_id: generated, heads: heads('0/100') }]);
      await storage.markWriteCheckpointsProcessed(lsn('0/100'));
      await storage.deleteExpiredCheckpointRequests(future());
      expect(await storage.lastWriteCheckpoint(pending, lsn('FFFF/0'))).toBe(4n);
      expect(await storage.lastWriteCheckpoint(generated, lsn('0/100'))).toBe(1n);
    });

    it('keeps records requested after the cutoff', async () => {
      const user = freshUser();
      await request([supplied(user, 4n, '0/100')]);
      await storage.markWriteCheckpointsProcessed(lsn('0/100'));
      await storage.deleteExpiredCheckpointRequests(new Date(Date.now() - 3_600_000));
      expect(await storage.lastWriteCheckpoint(user, lsn('0/100'))).toBe(4n);
    });
  });

  describe('replication lock (issue 6 item 5)', () => {
    it('elects one holder; others stand by until it releases', async () => {
      const a = `a-${process.pid}-${++userCounter}`;
      const b = `b-${process.pid}-${++userCounter}`;
      expect(await storage.replicationLock.acquire(a, 10_000)).toBe(true);
      expect(await storage.replicationLock.acquire(b, 10_000)).toBe(false);
      expect(await storage.replicationLock.acquire(a, 10_000)).toBe(true);
      expect(await storage.replicationLock.renew(a, 10_000)).toBe(true);
      expect(await storage.replicationLock.renew(b, 10_000)).toBe(false);
      await storage.replicationLock.release(b); // not the holder: no effect
      expect(await storage.replicationLock.acquire(b, 10_000)).toBe(false);
      await storage.replicationLock.release(a);
      expect(await storage.replicationLock.acquire(b, 10_000)).toBe(true);
      await storage.replicationLock.release(b);
    });

    it('a holder that stops renewing loses the lock when it expires', async () => {
      const crashed = `crashed-${process.pid}-${++userCounter}`;
      const standby = `standby-${process.pid}-${++userCounter}`;
      expect(await storage.replicationLock.acquire(crashed, 300)).toBe(true);
      expect(await storage.replicationLock.acquire(standby, 300)).toBe(false);
      await new Promise((resolve) => setTimeout(resolve, 500));
      expect(await storage.replicationLock.acquire(standby, 10_000)).toBe(true);
      expect(await storage.replicationLock.renew(crashed, 10_000)).toBe(false);
      await storage.replicationLock.release(standby);
    });
  });

  describe('sync config deployment', () => {
    it('creates a stream for new content and reuses it for the same content', async () => {
      const content = `bucket_definitions: {global: {data: ["SELECT * FROM t_${userCounter++}"]}}`;
      const first = await storage.deploySyncConfig(content);
      expect(first.content).toBe(content);
      const again = await storage.deploySyncConfig(content);
      expect(again.id).toBe(first.id);
      const serving = await storage.getServingStream();
      expect(serving?.content).toBe(content);
    });
  });
}
