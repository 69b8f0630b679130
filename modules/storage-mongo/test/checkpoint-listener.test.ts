import { MongoServerError, ObjectId } from 'mongodb';
import { describe, expect, it } from 'vitest';
import {
  CAPPED_POSITION_LOST,
  eventsAfter,
  isCappedPositionLost,
  MAX_AWAIT_MS,
  RECHECK_INTERVAL_MS
} from '../src/index.js';

describe('checkpoint_events tailing (PROTOCOL §6.2)', () => {
  it('waits at most 10 s per getMore and re-checks every 60 s', () => {
    expect(MAX_AWAIT_MS).toBe(10_000);
    expect(RECHECK_INTERVAL_MS).toBe(60_000);
  });

  it('reopens after the last event seen', () => {
    const id = new ObjectId();
    expect(eventsAfter(null)).toEqual({});
    expect(eventsAfter(id)).toEqual({ _id: { $gt: id } });
  });

  it('recognises CappedPositionLost by code or name', () => {
    expect(isCappedPositionLost(new MongoServerError({ message: 'lost', code: CAPPED_POSITION_LOST }))).toBe(true);
    expect(isCappedPositionLost(new MongoServerError({ message: 'lost', codeName: 'CappedPositionLost' }))).toBe(true);
    expect(isCappedPositionLost(new MongoServerError({ message: 'other', code: 11000 }))).toBe(false);
    expect(isCappedPositionLost(new Error('CappedPositionLost'))).toBe(false);
  });
});
