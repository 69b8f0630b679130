import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { dataOps, dataParts, linePart } from '@syncpoint/test-fixtures';
import { startServiceHarness, type ServiceHarness } from './service-harness.js';
import { openSyncStream } from './sync-stream-client.js';

/** Replication into storage and the sync stream end to end, on real Postgres, in both encodings. */
describe.each(['ndjson', 'bson'] as const)('replication and sync stream (%s)', (format) => {
  let harness: ServiceHarness;
  let token: string;

  beforeAll(async () => {
    harness = await startServiceHarness({
      role: 'unified',
      sourceSetup: [
        `ALTER TABLE todos ADD COLUMN big int8`,
        `INSERT INTO todos SELECT 't' || i, 'todo ' || i, 9007199254740993 FROM generate_series(1, 2500) i`
      ]
    });
    token = await harness.token('user-1');
    const deadline = Date.now() + 30_000;
    while (!(await harness.service.storage.getServingCheckpoint())) {
      if (Date.now() > deadline) throw new Error('replication did not reach a first checkpoint');
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }, 60_000);
  afterAll(async () => harness?.stop());

  it('sends the snapshot, then live changes, then acknowledges a checkpoint request', async () => {
    const stream = await openSyncStream(
      harness.service.url,
      token,
      { client_id: 'device-1', raw_data: true },
      { format }
    );
    expect(stream.response.status).toBe(200);
    expect(stream.contentType).toBe(
      format === 'bson' ? 'application/vnd.powersync.bson-stream' : 'application/x-ndjson'
    );
    try {
      const first = await stream.until((line) => 'checkpoint_complete' in line);
      const checkpoint = linePart(first[0], 'checkpoint');
      expect(checkpoint.buckets).toEqual([
        expect.objectContaining({ bucket: 'global[]', count: 2500, priority: 3, subscriptions: [{ default: 0 }] })
      ]);
      const ops = dataOps(first);
      expect(ops).toHaveLength(2500);
      expect(ops[0]).toMatchObject({ op: 'PUT', object_type: 'todos' });
      const t7 = ops.find((op) => op.object_id === 't7')!;
      expect(JSON.parse(t7.data as string)).toEqual({
        id: 't7',
        description: 'todo 7',
        // eslint-disable-next-line no-loss-of-precision -- JSON.parse rounds it the same way; the exact digits are checked in the text below
        big: 9007199254740993
      });
      expect(t7.data).toContain('9007199254740993');
      // The bucket checksum is the wrapping sum of the op checksums.
      const sum = ops.reduce((total, op) => (total + op.checksum) >>> 0, 0);
      expect(sum | 0).toBe(checkpoint.buckets[0]!.checksum);
      expect(linePart(first.at(-1), 'checkpoint_complete').last_op_id).toBe(checkpoint.last_op_id);

      await harness.sourceDb.query(`UPDATE todos SET description = 'changed' WHERE id = 't1'`);
      await harness.sourceDb.query(`DELETE FROM todos WHERE id = 't2'`);
      // The two source transactions may arrive in one checkpoint or two.
      const live = await stream.until(
        (line) => line.data?.data.some((op) => op.op === 'REMOVE' && op.object_id === 't2') ?? false
      );
      live.push(...(await stream.until((line) => 'checkpoint_complete' in line)));
      const liveOps = dataOps(live);
      expect(liveOps.map((op) => [op.op, op.object_id])).toEqual([
        ['PUT', 't1'],
        ['REMOVE', 't2']
      ]);
      expect(JSON.parse(liveOps[0]!.data as string)).toMatchObject({ description: 'changed' });

      const requested = Date.now();
      const response = await fetch(`${harness.service.url}/sync/checkpoint-request`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', Authorization: `Token ${token}` },
        body: JSON.stringify({ client_id: 'device-1', checkpoint_request_id: '1' })
      });
      expect(response.status).toBe(200);
      const acknowledged = await stream.until((line) => line.checkpoint_diff?.write_checkpoint === '1', 5_000);
      expect(Date.now() - requested).toBeLessThan(5_000);
      expect(linePart(acknowledged.at(-1), 'checkpoint_diff')).toMatchObject({
        updated_buckets: [],
        removed_buckets: []
      });
    } finally {
      await stream.close();
    }
  });

  it('embeds row data exactly for legacy clients (raw_data false), int8 beyond 2^53 included', async () => {
    const stream = await openSyncStream(
      harness.service.url,
      token,
      { client_id: 'device-3', raw_data: false },
      { format }
    );
    try {
      const lines = await stream.until((line) => 'checkpoint_complete' in line);
      const t7 = dataOps(lines).find((op) => op.object_id === 't7')!;
      // Legacy lines embed the row as an object. NDJSON carries int8 as a plain JSON integer, BSON as an Int64 (a Long
      // when read back).
      const big: unknown = (t7.data as { big: unknown }).big;
      expect(typeof big === 'bigint' ? big : (big as { toBigInt(): bigint }).toBigInt()).toBe(9007199254740993n);
      expect(t7.data).toMatchObject({ id: 't7', description: 'todo 7' });
      expect(typeof t7.checksum).toBe('number');
    } finally {
      await stream.close();
    }
  });

  it('resumes from the positions the client holds', async () => {
    const first = await openSyncStream(harness.service.url, token, { client_id: 'device-2' }, { format });
    const lines = await first.until((line) => 'checkpoint_complete' in line);
    await first.close();
    const lastOpId = linePart(lines.at(-1), 'checkpoint_complete').last_op_id;
    const resumed = await openSyncStream(
      harness.service.url,
      token,
      { client_id: 'device-2', buckets: [{ name: 'global[]', after: lastOpId }] },
      { format }
    );
    try {
      const again = await resumed.until((line) => 'checkpoint_complete' in line);
      // Only ops after the position the client already holds are sent again.
      for (const op of dataOps(again)) {
        expect(BigInt(op.op_id) > BigInt(lastOpId)).toBe(true);
      }
      expect(dataParts(again).every((data) => BigInt(data.after!) >= BigInt(lastOpId))).toBe(true);
    } finally {
      await resumed.close();
    }
  });
});
