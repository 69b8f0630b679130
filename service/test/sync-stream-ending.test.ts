import http from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startServiceHarness, type ServiceHarness } from './service-harness.js';

/**
 * Issue 12 item 3: a stream whose client stopped reading (its socket buffers full, the server's write waiting for
 * 'drain') still ends within 1 s at token expiry and at shutdown, and its connection slot is freed.
 */
const ROWS = 20_000;

async function waitFor(condition: () => boolean, what: string, timeoutMs: number) {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** A raw NDJSON client that reads the first bytes, then stops reading for good. */
function stalledClient(url: string, token: string) {
  let closedAt: number | null = null;
  let response: http.IncomingMessage | undefined;
  const request = http.request(`${url}/sync/stream`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', Authorization: `Token ${token}`, Accept: 'application/x-ndjson' }
  });
  // The socket's close, not the paused response's (a paused response emits nothing until read).
  request.once('socket', (socket) => socket.once('close', () => (closedAt ??= Date.now())));
  const firstBytes = new Promise<void>((resolve, reject) => {
    request.once('response', (res) => {
      response = res;
      res.once('data', () => {
        res.pause(); // stop reading: the kernel buffers fill and the server's writes wait for 'drain'
        resolve();
      });
      res.on('error', () => undefined);
    });
    request.once('error', reject);
  });
  request.end(JSON.stringify({ client_id: 'stalled' }));
  return {
    firstBytes,
    /** When the socket closed; a paused socket notices the server's close only once it reads again (`resume`). */
    closedAt: () => closedAt,
    resume: () => response?.resume(),
    destroy: () => request.destroy()
  };
}

describe('streams end when they must (issue 12 item 3)', () => {
  let harness: ServiceHarness;

  beforeAll(async () => {
    harness = await startServiceHarness({
      role: 'unified',
      syncConfig: `bucket_definitions:\n  bulk:\n    data:\n      - SELECT * FROM bulk\n`,
      sourceSetup: [
        `CREATE TABLE bulk (id text PRIMARY KEY, payload text)`,
        `INSERT INTO bulk SELECT 'b' || i, repeat(md5(i::text), 32) FROM generate_series(1, ${ROWS}) i`
      ]
    });
    const deadline = Date.now() + 120_000;
    while ((await harness.service.storage.getServingCheckpoint()) === null) {
      if (Date.now() > deadline) throw new Error('no first checkpoint');
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }, 180_000);
  afterAll(async () => harness?.stop());

  it('token expiry ends a stream whose client stopped reading within 1 s, and frees its slot', async () => {
    const token = await harness.token('reader', { expiresInSeconds: 4 });
    const client = stalledClient(harness.service.url, token);
    await client.firstBytes;
    await waitFor(() => harness.service.syncConnections!.count === 1, 'the stream to be open', 5_000);
    // The token's exp is whole seconds: the stream must be gone within 1 s after it.
    const expiresAt = (JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString()) as { exp: number }).exp;
    await waitFor(() => harness.service.syncConnections!.count === 0, 'the slot to be freed', 10_000);
    const slotFreedAt = Date.now();
    expect(slotFreedAt - expiresAt * 1000).toBeLessThan(1_000);
    // The server closed the connection (the client sees it once it reads what was buffered).
    client.resume();
    await waitFor(() => client.closedAt() !== null, 'the connection to close', 10_000);
  }, 30_000);

  it('shutdown with a client that stopped reading completes within the grace period', async () => {
    const token = await harness.token('reader');
    const client = stalledClient(harness.service.url, token);
    await client.firstBytes;
    await waitFor(() => harness.service.syncConnections!.count === 1, 'the stream to be open', 5_000);
    const started = Date.now();
    const stopped = harness.service.stop();
    await waitFor(() => harness.service.syncConnections!.count === 0, 'the slot to be freed', 10_000);
    expect(Date.now() - started).toBeLessThan(1_000);
    client.resume();
    await waitFor(() => client.closedAt() !== null, 'the stalled connection to close', 10_000);
    await stopped;
    // The rest of the shutdown (replication, pools) does not wait for the stalled client either.
    expect(Date.now() - started).toBeLessThan(15_000);
    client.destroy();
  }, 30_000);
});
