import { hostname } from 'node:os';
import { ReplicationLeadershipLostError, type Logger } from '@syncpoint/service-core';
import { MongoServerError, type ClientSession, type Collection } from 'mongodb';
import {
  holderIsGone,
  processIsAlive,
  REPLICATION_LOCK_ID,
  replicationLeaseUpdate,
  type ReplicationLockDocument
} from './replication-lock.js';

const DUPLICATE_KEY = 11000;
/** Every holder id this process has competed with (holder ids carry a random part: a previous incarnation's differ). */
const holderIdsOfThisProcess = new Set<string>();

/**
 * Replication leadership on MongoDB storage (issue 12 items 1–2): a lease document with the holder's host, pid and a
 * fencing epoch. It is taken when free, expired, or — at once — when its holder is provably gone (`holderIsGone`).
 * Every replication write transaction first runs `fence(session)`: a conditional update of the lease document on the
 * epoch this process was elected with. A takeover changes that document too, so the two conflict (MongoDB aborts one
 * of them), and a write after a takeover matches nothing and is refused. A storage object that never took part in an
 * election (CLI, tests) is not fenced.
 */
export class MongoReplicationLeadership {
  private epoch: number | null = null;
  private holderId: string | null = null;
  private fenced = false;
  private onLost: (() => void) | undefined;
  private readonly self = { host: hostname(), pid: process.pid };

  constructor(
    private readonly lease: Collection<ReplicationLockDocument>,
    private readonly logger?: Logger
  ) {}

  async acquire(holderId: string, ttlMs: number, onLost?: () => void): Promise<boolean> {
    holderIdsOfThisProcess.add(holderId);
    let document: ReplicationLockDocument | null = null;
    try {
      document = await this.lease.findOneAndUpdate(
        { _id: REPLICATION_LOCK_ID, $or: [{ holder: holderId }, { $expr: { $lt: ['$expires_at', '$$NOW'] } }] },
        replicationLeaseUpdate(holderId, ttlMs, this.self),
        { upsert: true, returnDocument: 'after' }
      );
    } catch (error) {
      if (!(error instanceof MongoServerError && error.code === DUPLICATE_KEY)) throw error;
      // Held by another holder whose lease runs: take it over now if that holder is provably gone.
      const current = await this.lease.findOne({ _id: REPLICATION_LOCK_ID });
      if (current && holderIsGone(current, { ...this.self, holderIds: holderIdsOfThisProcess }, processIsAlive)) {
        this.logger?.warn(
          { holder: current.holder, pid: current.pid },
          'the replication lease holder ran on this host and its process is gone; taking over without waiting'
        );
        document = await this.lease.findOneAndUpdate(
          { _id: REPLICATION_LOCK_ID, holder: current.holder, epoch: current.epoch },
          replicationLeaseUpdate(holderId, ttlMs, this.self),
          { returnDocument: 'after' }
        );
      }
    }
    if (!document || document.holder !== holderId) return false;
    const epoch = document.epoch ?? 0;
    if (this.epoch !== epoch) {
      this.logger?.info({ holder: holderId, epoch }, 'replication leadership taken');
    }
    this.epoch = epoch;
    this.holderId = holderId;
    this.fenced = true;
    this.onLost = onLost;
    return true;
  }

  async renew(holderId: string, ttlMs: number): Promise<boolean> {
    if (this.epoch === null || this.holderId !== holderId) return false;
    const result = await this.lease.updateOne(
      { _id: REPLICATION_LOCK_ID, holder: holderId, epoch: this.epoch },
      replicationLeaseUpdate(holderId, ttlMs, this.self)
    );
    if (result.matchedCount === 1) return true;
    this.lose('its lease renewal was refused');
    return false;
  }

  async release(holderId: string): Promise<void> {
    if (this.holderId !== holderId) return;
    this.epoch = null;
    this.holderId = null;
    this.onLost = undefined;
    await this.lease.deleteOne({ _id: REPLICATION_LOCK_ID, holder: holderId });
  }

  /** First operation of every replication write transaction; see the class doc. */
  async fence(session: ClientSession): Promise<void> {
    if (!this.fenced) return;
    const held = this.epoch;
    if (held === null) throw new ReplicationLeadershipLostError(null);
    const result = await this.lease.updateOne(
      { _id: REPLICATION_LOCK_ID, epoch: held },
      { $currentDate: { fenced_write_at: true } },
      { session }
    );
    if (result.matchedCount !== 1) {
      this.lose('another process took over (a newer epoch)');
      throw new ReplicationLeadershipLostError(BigInt(held));
    }
  }

  private lose(reason: string): void {
    if (this.epoch === null) return;
    this.logger?.error(
      { holder: this.holderId, epoch: this.epoch, reason },
      `replication leadership lost: ${reason}; this one stops writing and stands by`
    );
    this.epoch = null;
    this.holderId = null;
    const onLost = this.onLost;
    this.onLost = undefined;
    onLost?.();
  }
}
