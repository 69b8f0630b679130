import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startServiceHarness, type ServiceHarness } from './service-harness.js';
import { openSyncStream } from './sync-stream-client.js';

describe('GET /metrics (Prometheus)', () => {
  let harness: ServiceHarness;
  let token: string;
  beforeAll(async () => {
    harness = await startServiceHarness({ role: 'unified' });
    token = await harness.token('metrics-user');
    const deadline = Date.now() + 30_000;
    while (!(await harness.service.storage.getServingCheckpoint())) {
      if (Date.now() > deadline) throw new Error('no first checkpoint');
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }, 60_000);
  afterAll(async () => harness?.stop());

  const request = (id: string) =>
    fetch(`${harness.service.url}/sync/checkpoint-request`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', Authorization: `Token ${token}` },
      body: JSON.stringify({ client_id: 'phone', checkpoint_request_id: id })
    });
  const scrape = async () => {
    const response = await fetch(`${harness.service.url}/metrics`);
    expect(response.headers.get('content-type')).toContain('text/plain');
    return response.text();
  };
  const value = (text: string, series: string) => {
    const line = text.split('\n').find((l) => l.startsWith(series + ' '));
    return line === undefined ? undefined : Number(line.slice(series.length + 1));
  };

  it('counts requests by outcome, markers, acknowledgement latency, open streams and storage timings', async () => {
    const stream = await openSyncStream(harness.service.url, token, { client_id: 'phone' });
    try {
      await stream.until((line) => 'checkpoint_complete' in line);
      expect((await request('5')).status).toBe(200); // advanced
      await stream.until((line) => line.checkpoint_diff?.write_checkpoint === '5');
      expect((await request('5')).status).toBe(200); // duplicate of a processed request: no marker
      expect((await request('3')).status).toBe(200); // stale
      expect(
        (
          await fetch(`${harness.service.url}/write-checkpoint2.json?client_id=legacy`, {
            headers: { Authorization: `Token ${token}` }
          })
        ).status
      ).toBe(200); // generated

      const text = await scrape();
      expect(value(text, 'syncpoint_checkpoint_requests_total{outcome="advanced"}')).toBe(1);
      expect(value(text, 'syncpoint_checkpoint_requests_total{outcome="duplicate"}')).toBe(1);
      expect(value(text, 'syncpoint_checkpoint_requests_total{outcome="stale"}')).toBe(1);
      expect(value(text, 'syncpoint_checkpoint_requests_total{outcome="generated"}')).toBe(1);
      expect(value(text, 'syncpoint_source_markers_total')).toBe(2); // the advance and the legacy request
      expect(value(text, 'syncpoint_checkpoint_request_ack_seconds_count')).toBe(1);
      expect(value(text, 'syncpoint_open_sync_streams')).toBe(1);
      expect(value(text, 'syncpoint_pending_checkpoint_requests')).toBeGreaterThanOrEqual(0);
      expect(value(text, 'syncpoint_replication_lag_bytes')).toBeGreaterThanOrEqual(0);
      expect(
        value(text, 'syncpoint_storage_operation_seconds_count{operation="create_managed_write_checkpoints"}')
      ).toBe(4);
      expect(text).toContain('syncpoint_storage_operation_seconds_bucket{le="0.001",operation="get_checksums"}');
    } finally {
      await stream.close();
    }
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(value(await scrape(), 'syncpoint_open_sync_streams')).toBe(0);
  });
});
