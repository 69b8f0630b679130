import { Long } from 'mongodb';
import { describe, expect, it } from 'vitest';
import { streamCheckpointState } from '../src/index.js';

describe('sync_rules documents', () => {
  it('reads the stream document with its defaults and Int64 fields', () => {
    expect(
      streamCheckpointState({
        _id: 3,
        state: 'PROCESSING',
        content: '',
        created_at: new Date(),
        last_checkpoint: Long.fromBigInt(2n ** 62n),
        keepalive_op: null
      })
    ).toEqual({
      state: 'PROCESSING',
      snapshotDone: false,
      lastCheckpoint: 2n ** 62n,
      lastCheckpointLsn: null,
      noCheckpointBefore: null,
      keepaliveOp: null
    });
  });
});
