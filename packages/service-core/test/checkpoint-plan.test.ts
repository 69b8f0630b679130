import { lsnFromBigint } from '@syncpoint/codecs';
import { describe, expect, it } from 'vitest';
import { canCheckpoint, planCheckpoint, type StreamCheckpointState } from '../src/index.js';

const lsn = (n: number) => lsnFromBigint(BigInt(n));
const base: StreamCheckpointState = {
  state: 'ACTIVE',
  snapshotDone: true,
  lastCheckpoint: 10n,
  lastCheckpointLsn: lsn(0x100),
  noCheckpointBefore: lsn(1),
  keepaliveOp: null
};
const commit = { keepalive: false, lastFlushedOp: 0n, pendingRequestsReached: false };

describe('checkpoint planning (PROTOCOL §8.3)', () => {
  it('is blocked before the snapshot is done, before no_checkpoint_before, and behind the last checkpoint lsn', () => {
    expect(canCheckpoint(base, lsn(0x100))).toBe(true);
    expect(canCheckpoint({ ...base, snapshotDone: false }, lsn(0x200))).toBe(false);
    expect(canCheckpoint({ ...base, noCheckpointBefore: lsn(0x300) }, lsn(0x2ff))).toBe(false);
    expect(canCheckpoint({ ...base, noCheckpointBefore: lsn(0x300) }, lsn(0x300))).toBe(true);
    expect(canCheckpoint(base, lsn(0xff))).toBe(false);
    expect(canCheckpoint({ ...base, lastCheckpointLsn: null, noCheckpointBefore: null }, lsn(0))).toBe(true);
    expect(planCheckpoint({ ...base, snapshotDone: false }, lsn(0x200), { ...commit, lastFlushedOp: 50n })).toEqual({
      kind: 'blocked'
    });
  });

  it('an empty commit changes nothing; a keepalive advances only the lsn', () => {
    expect(planCheckpoint(base, lsn(0x200), commit)).toEqual({ kind: 'unchanged' });
    expect(planCheckpoint(base, lsn(0x200), { ...commit, keepalive: true })).toEqual({
      kind: 'checkpoint',
      checkpoint: 10n,
      lsn: lsn(0x200),
      activate: false,
      advanced: false
    });
  });

  it('includes the flushed ops (keepalive_op, or the batch) and ops kept while blocked', () => {
    expect(planCheckpoint({ ...base, keepaliveOp: 42n }, lsn(0x200), commit)).toMatchObject({
      kind: 'checkpoint',
      checkpoint: 42n,
      advanced: true
    });
    expect(planCheckpoint(base, lsn(0x200), { ...commit, lastFlushedOp: 43n })).toMatchObject({
      kind: 'checkpoint',
      checkpoint: 43n
    });
    // Never goes back.
    expect(planCheckpoint({ ...base, keepaliveOp: 5n }, lsn(0x200), { ...commit, keepalive: true })).toMatchObject({
      checkpoint: 10n
    });
  });

  it('a marker transaction without ops creates a checkpoint when a request with head ≤ lsn is pending', () => {
    expect(planCheckpoint(base, lsn(0x200), { ...commit, pendingRequestsReached: true })).toMatchObject({
      kind: 'checkpoint',
      checkpoint: 10n,
      lsn: lsn(0x200)
    });
  });

  it('the first allowed checkpoint of a PROCESSING stream activates it, even without ops', () => {
    const fresh: StreamCheckpointState = {
      ...base,
      state: 'PROCESSING',
      lastCheckpoint: null,
      lastCheckpointLsn: null
    };
    expect(planCheckpoint(fresh, lsn(0x10), commit)).toEqual({
      kind: 'checkpoint',
      checkpoint: 0n,
      lsn: lsn(0x10),
      activate: true,
      advanced: true
    });
  });
});
