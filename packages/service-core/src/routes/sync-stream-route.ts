import { Router, type Request } from 'express';
import type { TokenPayload, TokenVerifier } from '../auth/token-verifier.js';
import { tokenFromAuthorizationHeader } from '../auth/token-verifier.js';
import { ErrorCode, noActiveSyncConfigError, ServiceError } from '../errors.js';
import type { Logger } from '../logger.js';
import type { ServiceMetrics } from '../metrics.js';
import type { ReplicationStreamStorage } from '../storage/bucket-data.js';
import type { BucketStorage } from '../storage/bucket-storage.js';
import type { ReplicationStream } from '../storage/replication-stream.js';
import type { CheckpointWatcher } from '../sync/checkpoint-watcher.js';
import { BSON_CONTENT_TYPE, LineWriter, NDJSON_CONTENT_TYPE } from '../sync/line-writer.js';
import { parseSyncRequest, type SyncRequest } from '../sync/sync-request.js';
import { syncLines, type SyncLimits } from '../sync/sync-lines.js';
import { fullUserId } from './checkpoint-routes.js';
import { SharedCheckpointReads } from '../sync/shared-checkpoint-reads.js';

export interface SyncStreamDependencies {
  storage: BucketStorage;
  watcher: CheckpointWatcher;
  verifier: TokenVerifier;
  logger: Logger;
  limits: SyncLimits & { maxConnections: number; maxDataFetchConcurrency: number };
  /**
   * Keepalive period; default uniform 18–20 s: within PROTOCOL §7.7's 20 s ± 10 %, and never more than 20 s apart, so
   * the SDK drops expired stream subscriptions promptly (STREAMS §5.9).
   */
  keepaliveMs?: () => number;
  metrics?: ServiceMetrics;
}

/** Open sync connections of this process (both transports); `closeAll` ends them on shutdown. */
export class SyncConnections {
  private readonly open = new Set<AbortController>();
  private readonly closeListeners = new Set<() => void>();
  shuttingDown = false;

  get count(): number {
    return this.open.size;
  }

  add(controller: AbortController) {
    this.open.add(controller);
  }

  remove(controller: AbortController) {
    this.open.delete(controller);
  }

  /** Called by `closeAll`, after every stream was aborted (the WebSocket transport closes its sockets here). */
  onCloseAll(listener: () => void): () => void {
    this.closeListeners.add(listener);
    return () => this.closeListeners.delete(listener);
  }

  closeAll() {
    this.shuttingDown = true;
    for (const controller of this.open) controller.abort();
    for (const listener of this.closeListeners) listener();
  }
}

/** A counting semaphore: at most `limit` holders at once. */
function semaphore(limit: number) {
  let active = 0;
  const queue: Array<() => void> = [];
  return async <T>(task: () => Promise<T>): Promise<T> => {
    if (active >= limit) await new Promise<void>((resolve) => queue.push(resolve));
    else active++;
    try {
      return await task();
    } finally {
      const next = queue.shift();
      if (next) next();
      else active--;
    }
  };
}

/**
 * Where one stream's lines go: an HTTP response (NDJSON/BSON) or an RSocket stream (one PAYLOAD frame per line).
 * `write` resolves when the transport can take the next line (socket drain, RSocket request-N), which pauses the
 * line generator in between.
 */
export interface SyncLineSink {
  write(line: object): Promise<void>;
  readonly isClosed: boolean;
  /** The stream ends with an error: a `ServiceError` below 500 is the client's fault, anything else is internal. */
  fail(error: unknown): Promise<void>;
  /** The stream ends normally (after the lines already written). */
  end(): Promise<void>;
  /**
   * End the transport now, dropping lines not yet taken: the client stopped reading (HTTP backpressure) or gives no
   * RSocket demand, and the stream must end anyway (token expiry, shutdown). Pending and later writes return at once.
   */
  destroy(): void;
}

/**
 * Issue 12 item 3: how long an ending stream may take to hand its last lines (the final `token_expires_in: 0`) and its
 * end to a client that is not reading, before the transport is destroyed so the connection slot is freed.
 */
export const STREAM_END_GRACE_MS = 500;

/** True when `promise` settles within `ms`. */
async function settlesWithin(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), ms)));
  try {
    return await Promise.race([
      promise.then(
        () => true,
        () => true
      ),
      timeout
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** One admitted sync stream, counted against the connection limit until `run` ends. */
export interface SyncStreamSession {
  readonly signal: AbortSignal;
  /** Ends the stream at once: the line generator stops, timers and the connection slot are freed. */
  abort(): void;
  run(sink: SyncLineSink, options: { logFields?: Record<string, unknown> }): Promise<void>;
}

/**
 * The transport-independent part of a sync stream (PROTOCOL §7), shared by `POST /sync/stream` and the WebSocket
 * transport: admission checks, the connection limit, keepalive/expiry lines, the per-connection line generator
 * and per-process data-fetch concurrency, error handling and cleanup. One per process (per `SyncConnections`).
 */
export class SyncStreamRunner {
  private static readonly runners = new WeakMap<SyncConnections, SyncStreamRunner>();

  /** The process's runner for these connections (both transports must share it: limits are per process). */
  static for(deps: SyncStreamDependencies, connections: SyncConnections): SyncStreamRunner {
    let runner = SyncStreamRunner.runners.get(connections);
    if (!runner) {
      runner = new SyncStreamRunner(deps, connections);
      SyncStreamRunner.runners.set(connections, runner);
    }
    return runner;
  }

  private readonly withDataFetchSlot: <T>(task: () => Promise<T>) => Promise<T>;
  private readonly streamStorages = new Map<number, Promise<ReplicationStreamStorage>>();
  private readonly keepaliveMs: () => number;
  private readonly reads: SharedCheckpointReads;

  private constructor(
    readonly deps: SyncStreamDependencies,
    readonly connections: SyncConnections
  ) {
    this.withDataFetchSlot = semaphore(deps.limits.maxDataFetchConcurrency);
    this.reads = new SharedCheckpointReads(deps.storage);
    this.keepaliveMs = deps.keepaliveMs ?? (() => 18_000 + Math.random() * 2_000);
  }

  private streamStorage = (stream: ReplicationStream): Promise<ReplicationStreamStorage> => {
    let cached = this.streamStorages.get(stream.id);
    if (!cached) {
      cached = this.deps.storage.getStreamStorage(stream);
      cached.catch(() => this.streamStorages.delete(stream.id));
      this.streamStorages.set(stream.id, cached);
    }
    return cached;
  };

  /** Validate a §7.2 body (400 PSYNC_S2001). */
  parseRequest(body: unknown): SyncRequest {
    return parseSyncRequest(body, { maxBuckets: this.deps.limits.maxBuckets });
  }

  /**
   * Checks before a stream starts (PROTOCOL §7.1): 503 while shutting down, 500 without an active sync config,
   * 429 past the connection limit. On success the stream holds a connection slot until its `run` ends.
   */
  async open(request: SyncRequest, token: TokenPayload, logger: Logger): Promise<SyncStreamSession> {
    const { deps, connections } = this;
    if (connections.shuttingDown) throw new ServiceError(ErrorCode.SHUTTING_DOWN, 503, 'Service is shutting down');
    if (!(await deps.storage.getServingStream())) throw noActiveSyncConfigError();
    if (connections.count >= deps.limits.maxConnections) {
      throw new ServiceError(
        ErrorCode.TOO_MANY_REQUESTS,
        429,
        'Too many open sync connections',
        `limit is ${deps.limits.maxConnections} per process`
      );
    }
    const controller = new AbortController();
    connections.add(controller);
    const log = logger.child({ user_id: token.userId, client_id: request.clientId });
    return {
      signal: controller.signal,
      abort: () => controller.abort(),
      run: (sink, options) => this.run(controller, request, token, log, sink, options)
    };
  }

  private async run(
    controller: AbortController,
    request: SyncRequest,
    token: TokenPayload,
    log: Logger,
    sink: SyncLineSink,
    options: { logFields?: Record<string, unknown> }
  ): Promise<void> {
    const { deps, connections } = this;
    // Keepalives and the expiry notice (PROTOCOL §7.7): the stream ends when the token expires. Keepalive lines go
    // over RSocket too (besides its own keepalive frames): the SDK re-evaluates expired stream subscriptions only
    // when a line arrives (STREAMS §5.9).
    const secondsLeft = () => Math.max(0, Math.ceil(token.exp - Date.now() / 1000));
    let keepalive: NodeJS.Timeout | undefined;
    const scheduleKeepalive = () => {
      keepalive = setTimeout(() => {
        void sink.write({ token_expires_in: secondsLeft() });
        scheduleKeepalive();
      }, this.keepaliveMs());
    };
    scheduleKeepalive();
    const msToExpiry = token.exp * 1000 - Date.now();
    // Tokens may live longer than a single timer can wait (max_token_lifetime_seconds is configurable).
    const warning = setLongTimeout(() => void sink.write({ token_expires_in: secondsLeft() }), msToExpiry - 20_000);
    // A timer may fire a millisecond or two before Date.now() reaches `exp` (libuv's cached loop time), when
    // secondsLeft() is still 1: remember that the token expired so the final {"token_expires_in":0} is always sent.
    let expired = false;
    const expiry = setLongTimeout(() => {
      expired = true;
      controller.abort();
    }, msToExpiry);

    // A write blocked on a client that stopped reading (or gave no RSocket demand) must not hold the stream open past
    // its end: every write is raced against the abort (expiry, shutdown, close).
    const aborted = new Promise<void>((resolve) => {
      if (controller.signal.aborted) resolve();
      else controller.signal.addEventListener('abort', () => resolve(), { once: true });
    });

    let failure: unknown;
    const started = Date.now();
    log.info({ ...options.logFields, buckets: request.buckets.size }, 'sync stream opened');
    try {
      for await (const line of syncLines({
        watcher: deps.watcher,
        streamStorage: this.streamStorage,
        reads: this.reads,
        withDataFetchSlot: this.withDataFetchSlot,
        token,
        request,
        fullUserId: fullUserId(token.userId, request.clientId),
        limits: deps.limits,
        signal: controller.signal,
        logger: log,
        metrics: deps.metrics
      })) {
        await Promise.race([sink.write(line), aborted]);
        if (controller.signal.aborted) break;
      }
    } catch (error) {
      if (error instanceof ServiceError && error.status < 500) {
        log.warn({ code: error.code }, error.message);
        failure = error;
      } else if (!controller.signal.aborted) {
        log.error({ err: error }, 'sync stream failed');
        failure = error;
      }
    } finally {
      clearTimeout(keepalive);
      warning.clear();
      expiry.clear();
      connections.remove(controller);
      const closing = (async () => {
        if (failure !== undefined) await sink.fail(failure);
        else if ((expired || secondsLeft() === 0) && !sink.isClosed) await sink.write({ token_expires_in: 0 });
        await sink.end();
      })();
      if (!(await settlesWithin(closing, STREAM_END_GRACE_MS))) {
        log.info('the client is not taking lines; the stream is closed without them');
        sink.destroy();
        await closing.catch(() => undefined);
      }
      log.info({ seconds: (Date.now() - started) / 1000 }, 'sync stream closed');
    }
  }
}

/** Node runs a timer with a delay over 2^31 − 1 ms (24.8 days) at once; longer delays are chained. */
const MAX_TIMER_MS = 2 ** 31 - 1;

function setLongTimeout(callback: () => void, ms: number): { clear(): void } {
  let timer: NodeJS.Timeout;
  const schedule = (remaining: number) => {
    timer = setTimeout(
      () => (remaining > MAX_TIMER_MS ? schedule(remaining - MAX_TIMER_MS) : callback()),
      Math.min(remaining, MAX_TIMER_MS)
    );
  };
  schedule(Math.max(0, ms));
  return { clear: () => clearTimeout(timer) };
}

function negotiateFormat(req: Request): 'bson' | 'ndjson' {
  if (!req.headers.accept) return 'ndjson';
  return req.accepts([BSON_CONTENT_TYPE, NDJSON_CONTENT_TYPE]) === BSON_CONTENT_TYPE ? 'bson' : 'ndjson';
}

export function syncStreamRoutes(deps: SyncStreamDependencies, connections: SyncConnections): Router {
  const router = Router();
  const runner = SyncStreamRunner.for(deps, connections);

  router.post('/sync/stream', async (req, res) => {
    const request = runner.parseRequest(req.body);
    const token = await deps.verifier.verify(tokenFromAuthorizationHeader(req.headers.authorization));
    const session = await runner.open(request, token, (req as { log?: Logger }).log ?? deps.logger);

    const format = negotiateFormat(req);
    res.status(200);
    res.setHeader('Content-Type', format === 'bson' ? BSON_CONTENT_TYPE : NDJSON_CONTENT_TYPE);
    res.setHeader('X-Accel-Buffering', 'no');
    res.setHeader('Cache-Control', 'no-store');
    res.flushHeaders();
    res.socket?.setNoDelay(true);
    const writer = new LineWriter(res, format);
    res.once('close', () => session.abort());

    await session.run(
      {
        write: (line) => writer.write(line),
        get isClosed() {
          return writer.isClosed;
        },
        async fail(error) {
          if (error instanceof ServiceError && error.status < 500) {
            await writer.write({
              error: {
                code: error.code,
                status: error.status,
                description: error.description,
                ...(error.details ? { details: error.details } : {})
              }
            });
          } else {
            res.destroy(); // the client sees a broken stream and retries
          }
        },
        end: () => writer.end(),
        destroy: () => writer.destroy()
      },
      { logFields: { format } }
    );
  });
  return router;
}
