import { performance } from 'node:perf_hooks';
import { Pool } from 'undici';

/** One phase of checkpoint-request load: `concurrency` virtual clients, each one request at a time. */
export interface CheckpointLoadSpec {
  /** Service base URL (loopback). */
  url: string;
  concurrency: number;
  /** One token per user; virtual client i uses tokens[i % tokens.length]. */
  tokens: string[];
  /** Client ids are `${clientIdPrefix}-${i}`; their request ids continue across phases with the same prefix. */
  clientIdPrefix: string;
  /** The phase ends at this duration (no new requests start after it) … */
  durationMs: number;
  /** … or after this many requests in total, whichever comes first. */
  maxRequests: number;
  /** Per-request timeout. */
  timeoutMs?: number;
}

export interface CheckpointLoadResult {
  /** Requests that completed (successfully or not). */
  requests: number;
  errors: number;
  /** The first few error descriptions. */
  errorSamples: string[];
  /** Wall time from the first request to the last response. */
  elapsedMs: number;
  /** Per-request latency in ms, in completion order (successful requests only). */
  latencies: Float64Array;
}

const PATH = '/sync/checkpoint-request';
const MAX_ERROR_SAMPLES = 5;

/**
 * Drives `POST /sync/checkpoint-request` over keep-alive connections (an undici Pool per concurrency level,
 * one connection per virtual client). Every response must be 200 with the checkpoint_request_id that was sent:
 * each virtual client has its own client_id and sends 1, 2, 3 … one at a time, so the stored id is its own.
 */
export class CheckpointLoadGenerator {
  private readonly pools = new Map<string, Pool>();
  private readonly nextIds = new Map<string, number>();

  private pool(url: string, concurrency: number): Pool {
    const key = `${url}#${concurrency}`;
    let pool = this.pools.get(key);
    if (!pool) {
      pool = new Pool(url, { connections: concurrency, pipelining: 1, keepAliveTimeout: 60_000 });
      this.pools.set(key, pool);
    }
    return pool;
  }

  async run(spec: CheckpointLoadSpec): Promise<CheckpointLoadResult> {
    const pool = this.pool(spec.url, spec.concurrency);
    const timeoutMs = spec.timeoutMs ?? 10_000;
    const latencies = new Float64Array(spec.maxRequests);
    let completed = 0;
    let successes = 0;
    let issued = 0;
    let errors = 0;
    const errorSamples: string[] = [];
    const fail = (clientId: string, sent: number, message: string) => {
      errors++;
      if (errorSamples.length < MAX_ERROR_SAMPLES) errorSamples.push(`${clientId} #${sent}: ${message}`);
    };

    const start = performance.now();
    const deadline = start + spec.durationMs;
    const client = async (index: number) => {
      const clientId = `${spec.clientIdPrefix}-${index}`;
      const headers = {
        authorization: `Token ${spec.tokens[index % spec.tokens.length]!}`,
        'content-type': 'application/json'
      };
      while (issued < spec.maxRequests && performance.now() < deadline) {
        issued++;
        const sent = (this.nextIds.get(clientId) ?? 0) + 1;
        this.nextIds.set(clientId, sent);
        const body = JSON.stringify({ client_id: clientId, checkpoint_request_id: String(sent) });
        const t0 = performance.now();
        try {
          const response = await pool.request({
            path: PATH,
            method: 'POST',
            headers,
            body,
            headersTimeout: timeoutMs,
            bodyTimeout: timeoutMs
          });
          const text = await response.body.text();
          const latency = performance.now() - t0;
          completed++;
          if (response.statusCode !== 200) {
            fail(clientId, sent, `HTTP ${response.statusCode} ${text.slice(0, 200)}`);
            continue;
          }
          let received: unknown;
          try {
            received = (JSON.parse(text) as { data?: { checkpoint_request_id?: unknown } }).data?.checkpoint_request_id;
          } catch {
            fail(clientId, sent, `response is not JSON: ${text.slice(0, 200)}`);
            continue;
          }
          if (received !== String(sent)) {
            fail(clientId, sent, `checkpoint_request_id ${JSON.stringify(received)} in the response, sent "${sent}"`);
            continue;
          }
          latencies[successes++] = latency;
        } catch (error) {
          completed++;
          fail(clientId, sent, (error as Error).message ?? String(error));
        }
      }
    };
    await Promise.all(Array.from({ length: spec.concurrency }, (_, index) => client(index)));
    const elapsedMs = performance.now() - start;
    return { requests: completed, errors, errorSamples, elapsedMs, latencies: latencies.slice(0, successes) };
  }

  async close(): Promise<void> {
    await Promise.all([...this.pools.values()].map((pool) => pool.close()));
    this.pools.clear();
  }
}
