import { hostname } from 'node:os';
import { isReplicationLeadershipLost } from '@syncpoint/service-core';
import { MongoServerError, type ClientSession, type Collection, type Document } from 'mongodb';
import { describe, expect, it } from 'vitest';
import { MongoReplicationLeadership } from '../src/replication-leadership.js';
import { REPLICATION_LOCK_ID, type ReplicationLockDocument } from '../src/replication-lock.js';

/**
 * Issue 12 items 1–2 on MongoDB storage, without a server: the lease collection is an in-memory fake that evaluates the
 * filters and the pipeline update the leadership code sends (the operators it uses, nothing more), with a clock the
 * test moves. The conformance suite (MONGO_TEST_URL) runs the same logic against a real replica set.
 */

type Filter = Record<string, unknown>;

class FakeLeaseCollection {
  document: ReplicationLockDocument | null = null;
  now = new Date('2026-12-05T12:00:00Z');

  advance(ms: number) {
    this.now = new Date(this.now.getTime() + ms);
  }

  private matches(filter: Filter): boolean {
    const document = this.document;
    if (!document) return false;
    return Object.entries(filter).every(([key, value]) => {
      if (key === '$or') return (value as Filter[]).some((part) => this.matches(part));
      if (key === '$expr') return this.evaluate(value, document) === true;
      return (document as unknown as Record<string, unknown>)[key] === value;
    });
  }

  /** The aggregation expressions of `replicationLeaseUpdate` and the expiry filter. */
  private evaluate(expression: unknown, document: Partial<ReplicationLockDocument>): unknown {
    if (expression === '$$NOW') return this.now;
    if (typeof expression === 'string' && expression.startsWith('$'))
      return (document as Record<string, unknown>)[expression.slice(1)];
    if (expression === null || typeof expression !== 'object' || expression instanceof Date) return expression;
    const [operator, operand] = Object.entries(expression as Record<string, unknown>)[0]!;
    const args = operand as unknown[];
    const values = () => args.map((arg) => this.evaluate(arg, document));
    switch (operator) {
      case '$literal':
        return operand;
      case '$cond':
        return this.evaluate(this.evaluate(args[0], document) ? args[1] : args[2], document);
      case '$eq': {
        const [a, b] = values();
        return a === b;
      }
      case '$lt': {
        const [a, b] = values() as [Date | number, Date | number];
        return Number(a) < Number(b);
      }
      case '$ifNull': {
        const [a, b] = values();
        return a ?? b;
      }
      case '$add': {
        const [a, b] = values() as [Date | number, number];
        return a instanceof Date ? new Date(a.getTime() + b) : a + b;
      }
      default:
        throw new Error(`the fake does not evaluate ${operator}`);
    }
  }

  private apply(update: Document[] | Document, base: Partial<ReplicationLockDocument>): ReplicationLockDocument {
    if (!Array.isArray(update)) {
      const stamped = { ...base } as Record<string, unknown>;
      for (const key of Object.keys((update as { $currentDate: Record<string, true> }).$currentDate))
        stamped[key] = this.now;
      return stamped as unknown as ReplicationLockDocument;
    }
    const next = { ...base } as Record<string, unknown>;
    for (const [key, expression] of Object.entries((update[0] as { $set: Record<string, unknown> }).$set))
      next[key] = this.evaluate(expression, base);
    return next as unknown as ReplicationLockDocument;
  }

  findOneAndUpdate(filter: Filter, update: Document[], options: { upsert?: boolean } = {}) {
    if (this.matches(filter)) {
      this.document = this.apply(update, this.document!);
      return Promise.resolve({ ...this.document });
    }
    if (!options.upsert) return Promise.resolve(null);
    // An upsert whose filter matched nothing inserts with the same _id: a duplicate key when the document exists.
    if (this.document) return Promise.reject(new MongoServerError({ message: 'E11000 duplicate key', code: 11000 }));
    this.document = this.apply(update, { _id: REPLICATION_LOCK_ID });
    return Promise.resolve({ ...this.document });
  }

  findOne(filter: Filter) {
    return Promise.resolve(this.matches(filter) ? { ...this.document! } : null);
  }

  updateOne(filter: Filter, update: Document[] | Document, _options?: { session?: ClientSession }) {
    if (!this.matches(filter)) return Promise.resolve({ matchedCount: 0 });
    this.document = this.apply(update, this.document!);
    return Promise.resolve({ matchedCount: 1 });
  }

  deleteOne(filter: Filter) {
    if (this.matches(filter)) this.document = null;
    return Promise.resolve({ deletedCount: 1 });
  }
}

const session = {} as ClientSession;
const TTL_MS = 30_000;

function leadershipOn(lease: FakeLeaseCollection) {
  return new MongoReplicationLeadership(lease as unknown as Collection<ReplicationLockDocument>);
}

async function refused(write: () => Promise<unknown>) {
  const error = await write().then(
    () => null,
    (caught: unknown) => caught
  );
  expect(isReplicationLeadershipLost(error), `refused with a leadership error, got ${String(error)}`).toBe(true);
}

describe('MongoDB replication lease and fence (issue 12, no server)', () => {
  it('a free lease is taken with epoch 1; a second holder stands by while the lease runs', async () => {
    const lease = new FakeLeaseCollection();
    const first = leadershipOn(lease);
    const second = leadershipOn(lease);
    expect(await first.acquire('fake:a', TTL_MS)).toBe(true);
    expect(lease.document).toMatchObject({ holder: 'fake:a', epoch: 1, pid: process.pid });
    expect(await second.acquire('fake:b', TTL_MS)).toBe(false);
    lease.advance(TTL_MS - 1);
    expect(await second.acquire('fake:b', TTL_MS)).toBe(false);
    // The holder renews: same epoch, a new expiry.
    expect(await first.renew('fake:a', TTL_MS)).toBe(true);
    expect(lease.document).toMatchObject({ holder: 'fake:a', epoch: 1 });
    expect(lease.document!.expires_at.getTime()).toBe(lease.now.getTime() + TTL_MS);
    await first.fence(session);
    expect(lease.document!.fenced_write_at).toEqual(lease.now);
  });

  it('at lease expiry the standby takes over with the next epoch; every write and renewal of the old one is refused', async () => {
    const lease = new FakeLeaseCollection();
    const paused = leadershipOn(lease);
    const standby = leadershipOn(lease);
    let lostReports = 0;
    expect(await paused.acquire('fake:paused', TTL_MS, () => lostReports++)).toBe(true);
    lease.advance(TTL_MS + 1);
    expect(await standby.acquire('fake:standby', TTL_MS)).toBe(true);
    expect(lease.document).toMatchObject({ holder: 'fake:standby', epoch: 2 });

    const before = { ...lease.document };
    await refused(() => paused.fence(session));
    expect(lostReports).toBe(1);
    // Once lost, it stays refused (a resumed leader never writes again under the old epoch) and cannot renew.
    await refused(() => paused.fence(session));
    expect(await paused.renew('fake:paused', TTL_MS)).toBe(false);
    expect(lease.document).toEqual(before);
    // The new leader writes.
    await standby.fence(session);
  });

  it('takes over at once from a holder on this host whose process is gone, not from a live or remote one', async () => {
    const lease = new FakeLeaseCollection();
    const expiresAt = new Date(lease.now.getTime() + TTL_MS);
    const recorded = (host: string, pid: number): ReplicationLockDocument => ({
      _id: REPLICATION_LOCK_ID,
      holder: `${host}:${pid}:previous`,
      expires_at: expiresAt,
      acquired_at: lease.now,
      epoch: 7,
      host,
      pid
    });
    const restarted = leadershipOn(lease);

    lease.document = recorded('another-host', 2 ** 22 + 7);
    expect(await restarted.acquire('fake:restarted', TTL_MS)).toBe(false);

    lease.document = recorded(hostname(), process.ppid); // alive: the process that started this one
    expect(await restarted.acquire('fake:restarted', TTL_MS)).toBe(false);

    lease.document = recorded(hostname(), 2 ** 22 + 7); // above Linux's pid_max: no such process
    expect(await restarted.acquire('fake:restarted', TTL_MS)).toBe(true);
    expect(lease.document).toMatchObject({ holder: 'fake:restarted', epoch: 8, pid: process.pid });
  });

  it('a storage object that never took part in an election is not fenced; a released one is', async () => {
    const lease = new FakeLeaseCollection();
    await leadershipOn(lease).fence(session); // CLI commands and tests write without an election
    expect(lease.document).toBeNull();

    const leader = leadershipOn(lease);
    expect(await leader.acquire('fake:leader', TTL_MS)).toBe(true);
    await leader.release('fake:leader');
    expect(lease.document).toBeNull();
    await refused(() => leader.fence(session));
  });
});
