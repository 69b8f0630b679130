/**
 * The soak's load generator (runs in the bench process): `streams` NDJSON sync streams held open for the whole run,
 * and checkpoint requests at a fixed rate, each from a user+client whose stream is open, with that client's next id.
 * It watches every stream for its `write_checkpoint` and counts anything unexpected as an error.
 */
import http from 'node:http';
import { performance } from 'node:perf_hooks';
import { Pool } from 'undici';
import { AckTracker, describeAckFailure, type AckFailure } from './soak-report.js';
import { checkpointRequestId, writeCheckpoint } from '@syncpoint/codecs';

export interface SoakClient {
  /** `soak-client-<i>`; the stream and the requests use it. */
  clientId: string;
  user: string;
  token: string;
}

const MAX_ERROR_SAMPLES = 10;

class ErrorLog {
  http = 0;
  stream = 0;
  ack = 0;
  readonly samples: string[] = [];

  add(kind: 'http' | 'stream' | 'ack', message: string) {
    this[kind]++;
    if (this.samples.length < MAX_ERROR_SAMPLES) this.samples.push(`${kind}: ${message}`);
  }

  get total(): number {
    return this.http + this.stream + this.ack;
  }
}

/** One open `/sync/stream`: counts the rows of the initial download and reports every `write_checkpoint`. */
class SyncStream {
  ready = false;
  rowsReceived = 0;
  private request: http.ClientRequest | undefined;
  private closing = false;

  constructor(
    readonly client: SoakClient,
    private readonly handlers: {
      onReady(stream: SyncStream): void;
      onWriteCheckpoint(stream: SyncStream, writeCheckpoint: bigint): void;
      onError(stream: SyncStream, message: string): void;
    }
  ) {}

  open(url: string, agent: http.Agent) {
    const request = http.request(`${url}/sync/stream`, {
      method: 'POST',
      agent,
      headers: {
        'Content-Type': 'application/json',
        Accept: 'application/x-ndjson',
        Authorization: `Token ${this.client.token}`
      }
    });
    this.request = request;
    const fail = (message: string) => {
      if (!this.closing) this.handlers.onError(this, message);
      this.closing = true; // one error per stream
    };
    request.on('error', (error) => fail(`request error: ${error.message}`));
    request.on('response', (response) => {
      if (response.statusCode !== 200) {
        let body = '';
        response.on('data', (chunk) => (body += chunk));
        response.on('end', () => fail(`HTTP ${response.statusCode} ${body.slice(0, 200)}`));
        return;
      }
      let pending = '';
      response.setEncoding('utf8');
      response.on('data', (chunk: string) => {
        pending += chunk;
        let newline: number;
        while ((newline = pending.indexOf('\n')) >= 0) {
          const text = pending.slice(0, newline);
          pending = pending.slice(newline + 1);
          try {
            this.line(JSON.parse(text) as SyncLine);
          } catch (error) {
            fail(`unreadable line ${JSON.stringify(text.slice(0, 200))}: ${(error as Error).message}`);
          }
        }
      });
      response.on('end', () => fail('the stream ended'));
      response.on('aborted', () => fail('the stream was aborted'));
      response.on('error', (error) => fail(`response error: ${error.message}`));
    });
    request.end(JSON.stringify({ client_id: this.client.clientId, raw_data: true, buckets: [] }));
  }

  private line(line: SyncLine) {
    const checkpoint = line.checkpoint ?? line.checkpoint_diff;
    if (checkpoint) {
      if (checkpoint.write_checkpoint !== undefined && checkpoint.write_checkpoint !== null) {
        this.handlers.onWriteCheckpoint(this, writeCheckpoint.parse(checkpoint.write_checkpoint));
      }
    } else if (line.data) {
      this.rowsReceived += line.data.data.length;
    } else if (line.checkpoint_complete) {
      if (!this.ready) {
        this.ready = true;
        this.handlers.onReady(this);
      }
    } else if (line.error) {
      throw new Error(`error line ${JSON.stringify(line.error)}`);
    }
  }

  close() {
    this.closing = true;
    this.request?.destroy();
  }
}

export interface LoadResult {
  elapsedMs: number;
  sent: number;
  skipped: number;
}

/**
 * Holds the streams and sends the requests. Usage: `openStreams` (all must become ready), then `run` for the
 * measured load, then `drain` (waits for the last acknowledgements), then `close`.
 */
export class SoakLoad {
  readonly errors = new ErrorLog();
  readonly tracker: AckTracker;
  private readonly streams: SyncStream[] = [];
  private readonly streamAgent: http.Agent;
  private readonly requestPool: Pool;
  /** Clients with a checkpoint request whose HTTP response has not arrived. */
  private readonly inFlight = new Set<string>();
  private readonly nextIds = new Map<string, bigint>();
  private readonly httpLatencyList: number[] = [];
  private expiryTimer: NodeJS.Timeout | undefined;
  private readyCount = 0;
  private onReadyChange: (() => void) | undefined;

  constructor(
    private readonly url: string,
    private readonly clients: SoakClient[],
    options: { ackBoundMs: number; requestConnections: number }
  ) {
    this.tracker = new AckTracker(options.ackBoundMs);
    // One socket per stream, plus headroom; the streams never share a socket (they never end).
    this.streamAgent = new http.Agent({ keepAlive: false, maxSockets: clients.length + 16 });
    // Keep-alive connections for the requests; bounded so the service's checkpoint route (1,000 running + 1,000 queued,
    // 429 beyond) is not overrun: more requests wait here, and their latency includes that wait.
    this.requestPool = new Pool(url, {
      connections: options.requestConnections,
      pipelining: 1,
      keepAliveTimeout: 60_000
    });
  }

  private ackFailed(failure: AckFailure) {
    this.errors.add('ack', describeAckFailure(failure));
  }

  /** Opens a stream per client, a few at a time, and waits until each has its first `checkpoint_complete`. */
  async openStreams(timeoutMs: number, progress: (ready: number) => void): Promise<SyncStream[]> {
    const allReady = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(
        () =>
          reject(
            new Error(
              `only ${this.readyCount} of ${this.clients.length} streams got their first checkpoint_complete within ${timeoutMs / 1000} s`
            )
          ),
        timeoutMs
      );
      this.onReadyChange = () => {
        if (this.readyCount === this.clients.length) {
          clearTimeout(timer);
          resolve();
        } else if (this.errors.stream > 0) {
          clearTimeout(timer);
          reject(new Error(`a stream failed while opening: ${this.errors.samples.join('; ')}`));
        }
      };
    });
    const progressTimer = setInterval(() => progress(this.readyCount), 5_000);
    try {
      for (const [index, client] of this.clients.entries()) {
        const stream = new SyncStream(client, {
          onReady: () => {
            this.readyCount++;
            this.onReadyChange?.();
          },
          onWriteCheckpoint: (stream, writeCheckpoint) => {
            for (const failure of this.tracker.observe(stream.client.clientId, writeCheckpoint, performance.now()))
              this.ackFailed(failure);
          },
          onError: (stream, message) => {
            this.errors.add('stream', `${stream.client.clientId}: ${message}`);
            this.onReadyChange?.();
          }
        });
        this.streams.push(stream);
        stream.open(this.url, this.streamAgent);
        // Do not open a thousand sockets in one tick.
        if (index % 50 === 49) await new Promise((resolve) => setTimeout(resolve, 20));
      }
      await allReady;
    } finally {
      clearInterval(progressTimer);
    }
    return this.streams;
  }

  /**
   * Checkpoint requests at `rate` per second for `durationMs`, open loop: each tick sends what the schedule says is
   * due, each from the next client (round robin) whose previous request has had its response.
   */
  async run(rate: number, durationMs: number, onTick?: (elapsedMs: number) => void): Promise<LoadResult> {
    const start = performance.now();
    let sent = 0;
    let skipped = 0;
    let cursor = 0;
    this.expiryTimer = setInterval(() => {
      for (const failure of this.tracker.expire(performance.now())) this.ackFailed(failure);
    }, 1_000);
    await new Promise<void>((resolve) => {
      const tick = () => {
        const now = performance.now();
        const elapsed = now - start;
        if (elapsed >= durationMs) {
          resolve();
          return;
        }
        onTick?.(elapsed);
        const due = Math.floor((elapsed / 1000) * rate) - sent - skipped;
        for (let i = 0; i < due; i++) {
          const client = this.nextIdleClient(cursor);
          if (client === null) {
            skipped++;
            continue;
          }
          cursor = (client + 1) % this.clients.length;
          sent++;
          this.send(this.clients[client]!);
        }
        setTimeout(tick, 5);
      };
      tick();
    });
    return { elapsedMs: performance.now() - start, sent, skipped };
  }

  private nextIdleClient(from: number): number | null {
    for (let step = 0; step < this.clients.length; step++) {
      const index = (from + step) % this.clients.length;
      const clientId = this.clients[index]!.clientId;
      // Like an SDK, a client sends its next request only after the response to the previous one.
      if (!this.inFlight.has(clientId)) return index;
    }
    return null;
  }

  private send(client: SoakClient) {
    const id = (this.nextIds.get(client.clientId) ?? 0n) + 1n;
    this.nextIds.set(client.clientId, id);
    const sentAt = performance.now();
    this.tracker.sent(client.clientId, id, sentAt);
    this.inFlight.add(client.clientId);
    const fail = (message: string) => {
      this.errors.add('http', `${client.clientId} request ${id}: ${message}`);
      this.tracker.forget(client.clientId, id); // counted once, not again as a missing acknowledgement
    };
    this.requestPool
      .request({
        path: '/sync/checkpoint-request',
        method: 'POST',
        headers: { authorization: `Token ${client.token}`, 'content-type': 'application/json' },
        body: JSON.stringify({ client_id: client.clientId, checkpoint_request_id: checkpointRequestId.encode(id) }),
        headersTimeout: this.tracker.boundMs,
        bodyTimeout: this.tracker.boundMs
      })
      .then(async (response) => {
        const text = await response.body.text();
        this.httpLatencyList.push(performance.now() - sentAt);
        if (response.statusCode !== 200) return fail(`HTTP ${response.statusCode} ${text.slice(0, 200)}`);
        const stored = (JSON.parse(text) as { data?: { checkpoint_request_id?: unknown } }).data?.checkpoint_request_id;
        if (stored !== checkpointRequestId.encode(id)) fail(`the service stored ${JSON.stringify(stored)}`);
      })
      .catch((error: Error) => fail(error.message))
      .finally(() => this.inFlight.delete(client.clientId));
  }

  /** After the load: waits until every response arrived and every request is acknowledged or expired. */
  async drain(): Promise<void> {
    while (this.inFlight.size > 0 || this.tracker.outstanding > 0) {
      await new Promise((resolve) => setTimeout(resolve, 50));
      for (const failure of this.tracker.expire(performance.now())) this.ackFailed(failure);
    }
    clearInterval(this.expiryTimer);
  }

  /** Time from sending each request to its full response, ms (complete after `drain`). */
  httpLatencies(): number[] {
    return this.httpLatencyList;
  }

  /** Streams that reached their first `checkpoint_complete`. */
  get readyStreams(): number {
    return this.readyCount;
  }

  get openStreamsWithRows(): number[] {
    return this.streams.map((stream) => stream.rowsReceived);
  }

  async close(): Promise<void> {
    clearInterval(this.expiryTimer);
    for (const stream of this.streams) stream.close();
    await this.requestPool.close();
    this.streamAgent.destroy();
  }
}

/** The parts of a sync line this load client reads (PROTOCOL: checkpoint, checkpoint_diff, data, checkpoint_complete). */
interface SyncLine {
  checkpoint?: { write_checkpoint?: string | null };
  checkpoint_diff?: { write_checkpoint?: string | null };
  data?: { data: unknown[] };
  checkpoint_complete?: unknown;
  error?: unknown;
}
