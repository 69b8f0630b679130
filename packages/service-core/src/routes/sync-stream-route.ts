import { Router, type Request } from 'express';
import type { TokenVerifier } from '../auth/token-verifier.js';
import { tokenFromAuthorizationHeader } from '../auth/token-verifier.js';
import { ErrorCode, noActiveSyncConfigError, ServiceError } from '../errors.js';
import type { Logger } from '../logger.js';
import type { ReplicationStreamStorage } from '../storage/bucket-data.js';
import type { BucketStorage, ReplicationStream } from '../storage/bucket-storage.js';
import type { CheckpointWatcher } from '../sync/checkpoint-watcher.js';
import { BSON_CONTENT_TYPE, LineWriter, NDJSON_CONTENT_TYPE } from '../sync/line-writer.js';
import { parseSyncRequest } from '../sync/sync-request.js';
import { syncLines, type SyncLimits } from '../sync/sync-lines.js';
import { fullUserId } from './checkpoint-routes.js';

export interface SyncStreamDependencies {
  storage: BucketStorage;
  watcher: CheckpointWatcher;
  verifier: TokenVerifier;
  logger: Logger;
  limits: SyncLimits & { maxConnections: number; maxDataFetchConcurrency: number };
  /** Keepalive period; default 20 s ± 10 % (PROTOCOL §7.7). */
  keepaliveMs?: () => number;
}

/** Open sync connections of this process; `closeAll` ends them on shutdown. */
export class SyncConnections {
  private readonly open = new Set<AbortController>();
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

  closeAll() {
    this.shuttingDown = true;
    for (const controller of this.open) controller.abort();
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

/** Node runs a timer with a delay over 2^31 − 1 ms (24.8 days) at once; longer delays are chained. */
const MAX_TIMER_MS = 2 ** 31 - 1;

function setLongTimeout(callback: () => void, ms: number): { clear(): void } {
  let timer: NodeJS.Timeout;
  const schedule = (remaining: number) => {
    timer = setTimeout(() => (remaining > MAX_TIMER_MS ? schedule(remaining - MAX_TIMER_MS) : callback()), Math.min(remaining, MAX_TIMER_MS));
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
  const withDataFetchSlot = semaphore(deps.limits.maxDataFetchConcurrency);
  const streamStorages = new Map<number, Promise<ReplicationStreamStorage>>();
  const streamStorage = (stream: ReplicationStream) => {
    let cached = streamStorages.get(stream.id);
    if (!cached) {
      cached = deps.storage.getStreamStorage(stream);
      cached.catch(() => streamStorages.delete(stream.id));
      streamStorages.set(stream.id, cached);
    }
    return cached;
  };
  const keepaliveMs = deps.keepaliveMs ?? (() => 18_000 + Math.random() * 4_000);

  router.post('/sync/stream', async (req, res) => {
    const request = parseSyncRequest(req.body, { maxBuckets: deps.limits.maxBuckets });
    const token = await deps.verifier.verify(tokenFromAuthorizationHeader(req.headers.authorization));
    if (connections.shuttingDown) throw new ServiceError(ErrorCode.SHUTTING_DOWN, 503, 'Service is shutting down');
    if (!(await deps.storage.getServingStream())) throw noActiveSyncConfigError();
    if (connections.count >= deps.limits.maxConnections) {
      throw new ServiceError(ErrorCode.TOO_MANY_REQUESTS, 429, 'Too many open sync connections', `limit is ${deps.limits.maxConnections} per process`);
    }

    const controller = new AbortController();
    connections.add(controller);
    const log = ((req as { log?: Logger }).log ?? deps.logger).child({ user_id: token.userId, client_id: request.clientId });
    const format = negotiateFormat(req);
    res.status(200);
    res.setHeader('Content-Type', format === 'bson' ? BSON_CONTENT_TYPE : NDJSON_CONTENT_TYPE);
    res.setHeader('X-Accel-Buffering', 'no');
    res.setHeader('Cache-Control', 'no-store');
    res.flushHeaders();
    res.socket?.setNoDelay(true);
    const writer = new LineWriter(res, format);
    res.once('close', () => controller.abort());

    // Keepalives and the expiry notice (PROTOCOL §7.7): the stream ends when the token expires.
    const secondsLeft = () => Math.max(0, Math.ceil(token.exp - Date.now() / 1000));
    let keepalive: NodeJS.Timeout;
    const scheduleKeepalive = () => {
      keepalive = setTimeout(() => {
        void writer.write({ token_expires_in: secondsLeft() });
        scheduleKeepalive();
      }, keepaliveMs());
    };
    scheduleKeepalive();
    const msToExpiry = token.exp * 1000 - Date.now();
    // Tokens may live longer than a single timer can wait (max_token_lifetime_seconds is configurable).
    const warning = setLongTimeout(() => void writer.write({ token_expires_in: secondsLeft() }), msToExpiry - 20_000);
    // A timer may fire a millisecond or two before Date.now() reaches `exp` (libuv's cached loop time), when
    // secondsLeft() is still 1: remember that the token expired so the final {"token_expires_in":0} is always sent.
    let expired = false;
    const expiry = setLongTimeout(() => {
      expired = true;
      controller.abort();
    }, msToExpiry);

    const started = Date.now();
    log.info({ format, buckets: request.buckets.size }, 'sync stream opened');
    try {
      for await (const line of syncLines({
        storage: deps.storage,
        watcher: deps.watcher,
        streamStorage,
        withDataFetchSlot,
        token,
        request,
        fullUserId: fullUserId(token.userId, request.clientId),
        limits: deps.limits,
        signal: controller.signal,
        logger: log
      })) {
        await writer.write(line);
        if (controller.signal.aborted) break;
      }
    } catch (error) {
      if (error instanceof ServiceError && error.status < 500) {
        log.warn({ code: error.code }, error.message);
        await writer.write({ error: { code: error.code, status: error.status, description: error.description, ...(error.details ? { details: error.details } : {}) } });
      } else if (!controller.signal.aborted) {
        log.error({ err: error }, 'sync stream failed');
        res.destroy(); // the client sees a broken stream and retries
      }
    } finally {
      clearTimeout(keepalive!);
      warning.clear();
      expiry.clear();
      connections.remove(controller);
      if ((expired || secondsLeft() === 0) && !writer.isClosed) await writer.write({ token_expires_in: 0 });
      await writer.end();
      log.info({ seconds: (Date.now() - started) / 1000 }, 'sync stream closed');
    }
  });
  return router;
}
