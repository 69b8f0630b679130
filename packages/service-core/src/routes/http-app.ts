import { randomUUID } from 'node:crypto';
import http from 'node:http';
import type { Duplex } from 'node:stream';
import express, { type ErrorRequestHandler, type RequestHandler } from 'express';
import {
  databaseUnavailableError,
  ErrorCode,
  internalError,
  isDatabaseUnavailable,
  ServiceError,
  validationError
} from '../errors.js';
import type { Logger } from '../logger.js';
import type { ServiceMetrics } from '../metrics.js';
import { ADMIN_BODY_LIMIT_BYTES, adminRoutes, type AdminRouteDependencies } from './admin-routes.js';
import { checkpointRoutes, type CheckpointRouteDependencies } from './checkpoint-routes.js';
import { probeRoutes, type ProbeState } from './probe-routes.js';
import { syncStreamRoutes, type SyncConnections, type SyncStreamDependencies } from './sync-stream-route.js';

export interface HttpAppOptions extends CheckpointRouteDependencies {
  logger: Logger;
  probes?: ProbeState;
  /** Largest accepted JSON body (default 64 KiB; checkpoint requests are tiny). */
  bodyLimitBytes?: number;
  /** Served at `GET /metrics` (Prometheus text format). */
  metrics?: ServiceMetrics;
  /** `/sync/stream`, when this process serves sync streams. */
  sync?: { dependencies: SyncStreamDependencies; connections: SyncConnections };
  /** `/api/admin/v1/*` and `/api/sync-rules/v1/*` (PROTOCOL §12), behind `api.tokens`. */
  admin?: AdminRouteDependencies;
  /**
   * False in the `replication` role: only the probes and `/metrics` are served, every other path answers 404
   * `PSYNC_S2002` (issue 12 item 6). Default true.
   */
  serveApi?: boolean;
  /** Timeouts of the server `app.listen` creates (defaults: `SERVER_TIMEOUTS`); tests shorten them. */
  serverTimeouts?: Partial<ServerTimeouts>;
}

export interface ServerTimeouts {
  /** A client must send its complete request headers within this time (cuts off slowloris-style clients). */
  headersTimeoutMs: number;
  /**
   * A client must send its complete request (headers and body) within this time, so a body that never ends cannot
   * hold a connection and a request slot forever. Streaming *responses* are not affected: the timer stops once the
   * request is received.
   */
  requestTimeoutMs: number;
  /** How often Node checks the two timeouts above; a slow client is cut off at most this much late. */
  checkIntervalMs: number;
}

/**
 * Node's defaults are 60 s for headers, 300 s for a request, checked every 30 s — a slow client could hold a
 * connection for up to 90 s without sending a single complete header. Real clients send headers at once and bodies of
 * at most 2 MiB (a sync request listing 1,000 buckets), which take seconds even on a slow mobile link.
 */
export const SERVER_TIMEOUTS: ServerTimeouts = {
  headersTimeoutMs: 15_000,
  requestTimeoutMs: 60_000,
  checkIntervalMs: 5_000
};

/** Sync requests list the buckets a client holds (up to 1,000 by default), so they may be larger. */
const SYNC_BODY_LIMIT_BYTES = 2 * 1024 * 1024;

/** CORS per PROTOCOL §2.1, as name/value pairs (the checkpoint-request fast path writes them with its answer). */
const CORS_HEADERS = [
  'Access-Control-Allow-Origin',
  '*',
  'Access-Control-Allow-Headers',
  'Content-Type, Authorization, User-Agent, X-User-Agent',
  'Access-Control-Expose-Headers',
  'Content-Type',
  'Access-Control-Allow-Methods',
  'GET, HEAD, POST, PUT, PATCH, DELETE',
  'Access-Control-Max-Age',
  '3600'
] as const;

const cors: RequestHandler = (req, res, next) => {
  for (let i = 0; i < CORS_HEADERS.length; i += 2) res.setHeader(CORS_HEADERS[i]!, CORS_HEADERS[i + 1]!);
  if (req.method === 'OPTIONS') return void res.status(204).end();
  next();
};

function sendError(res: express.Response, error: ServiceError) {
  if (res.headersSent) return void res.destroy();
  res.status(error.status).json(error.toJSON());
}

function bodyTooLargeError(limit: number | undefined): ServiceError {
  return new ServiceError(ErrorCode.BODY_TOO_LARGE, 413, 'Request body too large', `limit is ${limit} bytes`, {
    name: 'ValidationError'
  });
}

/** How long a client may go on sending a refused body before its connection is closed. */
const BODY_LINGER_MS = 2_000;

/** Set on a request the checkpoint-request fast path failed: the app answers it with the error handler. */
const fastPathError = Symbol('fastPathError');
type FastPathFailed = http.IncomingMessage & { [fastPathError]?: unknown };

/** Set on a request once a body limit applies to it (the first, most specific one registered wins). */
const bodyLimitApplied = Symbol('bodyLimitApplied');

/**
 * body-parser answers a body over its limit only after reading the whole request, to keep the connection usable: a
 * client declaring (or sending) gigabytes would keep the server reading them. This refuses such a body as soon as it
 * is known to be too large — from its Content-Length, or once that many bytes of a chunked body arrived — and closes
 * the connection instead of reading on.
 */
function bodySizeLimit(limit: number): RequestHandler {
  return (req, res, next) => {
    const marked = req as typeof req & { [bodyLimitApplied]?: true };
    if (marked[bodyLimitApplied]) return next();
    marked[bodyLimitApplied] = true;
    const refuse = () => {
      sendError(res, bodyTooLargeError(limit));
      // Then close, but not at once: closing a socket with unread data resets the connection, and the client (still
      // sending) would never read the answer. Node discards the rest of the body meanwhile.
      const socket = req.socket;
      res.once('finish', () => {
        socket.end();
        setTimeout(() => socket.destroy(), BODY_LINGER_MS).unref();
      });
    };
    if (Number(req.headers['content-length']) > limit) return refuse();
    if (req.headers['content-length'] === undefined && req.headers['transfer-encoding'] !== undefined) {
      // Only a chunked body's size is unknown up front (Node enforces a declared length). body-parser attaches its own
      // listener in this same tick, so no data passes by before it.
      let received = 0;
      const count = (chunk: Buffer) => {
        received += chunk.length;
        if (received <= limit) return;
        req.off('data', count);
        if (res.headersSent) res.destroy();
        else refuse();
      };
      req.on('data', count);
    }
    next();
  };
}

/** Maps body-parser failures and anything unexpected to the error envelope; never leaks internals. */
function errorHandler(logger: Logger): ErrorRequestHandler {
  return (error, req, res, _next) => {
    const log = (req as { log?: Logger }).log ?? logger;
    if (error instanceof ServiceError) {
      if (error.status >= 500) log.error({ err: error.cause ?? error, code: error.code }, error.message);
      else log.info({ code: error.code, status: error.status }, error.message);
      return sendError(res, error);
    }
    const type = (error as { type?: string }).type;
    if (type === 'entity.parse.failed') return sendError(res, validationError(['body is not valid JSON']));
    if (type === 'entity.too.large') return sendError(res, bodyTooLargeError((error as { limit?: number }).limit));
    if (
      type === 'encoding.unsupported' ||
      type === 'charset.unsupported' ||
      (error as { status?: number }).status === 415
    ) {
      return sendError(
        res,
        new ServiceError(ErrorCode.UNSUPPORTED_MEDIA_TYPE, 415, 'Unsupported body encoding', (error as Error).message, {
          name: 'ValidationError'
        })
      );
    }
    if (typeof (error as { status?: number }).status === 'number' && (error as { status: number }).status < 500) {
      return sendError(res, validationError([(error as Error).message]));
    }
    if (isDatabaseUnavailable(error)) {
      log.warn({ err: error }, 'storage or source unavailable');
      res.setHeader('Retry-After', '1');
      return sendError(res, databaseUnavailableError(error));
    }
    log.error({ err: error }, 'unexpected error');
    sendError(res, internalError(error));
  };
}

/** Prometheus scrape endpoint. */
export function metricsHandler(metrics: ServiceMetrics): RequestHandler {
  return async (_req, res) => {
    const { contentType, body } = await metrics.render();
    res.setHeader('Content-Type', contentType);
    res.send(body);
  };
}

export function createHttpApp(options: HttpAppOptions): express.Express {
  const app = express();
  app.disable('x-powered-by');
  app.set('query parser', 'simple'); // no nested objects from query strings
  app.set('etag', false);

  // Request ids: a per-process prefix and a counter (cheaper than a UUID per request, still unique across processes).
  const processPrefix = randomUUID().slice(0, 8);
  let requestCounter = 0;
  const nextRequestId = () => `${processPrefix}-${(++requestCounter).toString(36)}`;
  const bodyLimitBytes = options.bodyLimitBytes ?? 64 * 1024;
  const checkpoints =
    options.serveApi === false
      ? undefined
      : checkpointRoutes(options, {
          bodyLimitBytes,
          responseHeaders: () => ['X-Request-Id', nextRequestId(), ...CORS_HEADERS]
        });

  app.use((req, res, next) => {
    const requestId = nextRequestId();
    res.setHeader('X-Request-Id', requestId);
    // The child logger is built only when something is logged for this request.
    let log: Logger | undefined;
    Object.defineProperty(req, 'log', {
      get: () => (log ??= options.logger.child({ request_id: requestId, method: req.method, path: req.path }))
    });
    next();
  });
  app.use(cors);
  // A checkpoint request the fast path failed comes here for its error answer (request id and CORS set just above).
  app.use((req, _res, next) => next((req as FastPathFailed)[fastPathError]));
  const json = (limit: number) => [
    bodySizeLimit(limit),
    express.json({ limit, strict: false, type: 'application/json' })
  ];
  if (options.sync) {
    app.use('/sync/stream', json(SYNC_BODY_LIMIT_BYTES));
    app.use(syncStreamRoutes(options.sync.dependencies, options.sync.connections));
  }
  if (options.admin) app.use('/api', json(ADMIN_BODY_LIMIT_BYTES));
  app.use(json(bodyLimitBytes));

  if (options.probes) app.use(probeRoutes(options.probes));
  if (options.metrics) app.get('/metrics', metricsHandler(options.metrics));
  if (checkpoints) {
    app.use(checkpoints.router);
    if (options.admin) app.use(adminRoutes(options.admin));
  }

  app.use((req, _res, next) => {
    next(
      new ServiceError(ErrorCode.ROUTE_NOT_FOUND, 404, 'Route not found', `${req.method} ${req.path}`, {
        name: 'RouteNotFound'
      })
    );
  });
  app.use(errorHandler(options.logger));

  const answerFailedFastPath = (req: http.IncomingMessage, res: http.ServerResponse, error: unknown) => {
    (req as FastPathFailed)[fastPathError] = error ?? new Error('checkpoint request failed');
    app(req, res);
  };
  // Express's own `listen` creates a server with Node's default timeouts and bare error answers; this one applies ours.
  const timeouts = { ...SERVER_TIMEOUTS, ...options.serverTimeouts };
  app.listen = ((...args: unknown[]) => {
    const server = http.createServer(
      {
        headersTimeout: timeouts.headersTimeoutMs,
        requestTimeout: timeouts.requestTimeoutMs,
        connectionsCheckingInterval: timeouts.checkIntervalMs
      },
      // The route clients call most, in its usual shape, is answered before Express; everything else goes to the app.
      (req, res) => {
        if (!checkpoints?.fastPath(req, res, answerFailedFastPath)) app(req, res);
      }
    );
    server.on('clientError', answerClientError);
    return server.listen(...(args as Parameters<http.Server['listen']>));
  }) as express.Express['listen'];
  return app;
}

/**
 * Requests Node's HTTP parser refuses (malformed request line or headers, unknown method, headers too large, too slow)
 * never reach Express; Node would answer with a bare status line. This answers with the usual error envelope, then
 * closes the connection (its remaining bytes cannot be trusted). Mirrors Node's default handler otherwise: nothing is
 * written once a response has started on the socket.
 */
function answerClientError(error: NodeJS.ErrnoException, socket: Duplex) {
  const net = socket as Duplex & { bytesWritten?: number };
  if (error.code === 'ECONNRESET' || !socket.writable || (net.bytesWritten ?? 0) > 0) return void socket.destroy();
  const serviceError =
    error.code === 'HPE_HEADER_OVERFLOW'
      ? new ServiceError(ErrorCode.HEADERS_TOO_LARGE, 431, 'Request headers too large', undefined, {
          name: 'ValidationError'
        })
      : error.code === 'ERR_HTTP_REQUEST_TIMEOUT'
        ? new ServiceError(ErrorCode.REQUEST_TIMEOUT, 408, 'Request not received in time', undefined, {
            name: 'ValidationError'
          })
        : new ServiceError(ErrorCode.VALIDATION, 400, 'Malformed HTTP request', error.code, {
            name: 'ValidationError'
          });
  const body = JSON.stringify(serviceError.toJSON());
  socket.end(
    `HTTP/1.1 ${serviceError.status} ${http.STATUS_CODES[serviceError.status]}\r\n` +
      `Content-Type: application/json; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
    () => socket.destroy() // flushed: close now rather than wait for the client to close its side
  );
}
