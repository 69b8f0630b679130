import type { IncomingMessage, Server } from 'node:http';
import type { Duplex } from 'node:stream';
import { BSON } from 'bson';
import {
  Deferred,
  deserializeFrame,
  ErrorCodes,
  Flags,
  FrameTypes,
  RSocketError,
  RSocketServer,
  serializeFrame,
  type Closeable,
  type Demultiplexer,
  type DuplexConnection,
  type Frame,
  type FrameHandler,
  type Multiplexer,
  type OnExtensionSubscriber,
  type OnNextSubscriber,
  type OnTerminalSubscriber,
  type Outbound,
  type Payload,
  type RSocket,
  type ServerTransport,
  type SetupPayload
} from 'rsocket-core';
import { WebSocketServer, type WebSocket } from 'ws';
import type { TokenPayload } from '../auth/token-verifier.js';
import { tokenFromAuthorizationHeader } from '../auth/token-verifier.js';
import { ErrorCode, internalError, ServiceError, validationError } from '../errors.js';
import type { Logger } from '../logger.js';
import {
  SyncStreamRunner,
  type SyncConnections,
  type SyncLineSink,
  type SyncStreamDependencies,
  type SyncStreamSession
} from './sync-stream-route.js';

/**
 * The sync stream over RSocket-over-WebSocket (PROTOCOL §7.10), for SDKs configured with
 * `connectionMethod: 'web-socket'`.
 *
 * - Any upgrade request on the HTTP server is accepted (the SDK uses `/sync/stream`), permessage-deflate allowed.
 * - SETUP carries `{"token": "Token <jwt>", "user_agent": ...}` as metadata (JSON or BSON by its MIME type); the
 *   token is verified there: a rejected SETUP is answered with a connection ERROR frame whose message carries the
 *   `PSYNC_S21xx` code (the SDK invalidates its credentials on `PSYNC_S21`). Keepalive/lifetime are the client's.
 * - REQUEST_STREAM carries `{"path": "/sync/stream"}` as metadata and the §7.2 body as data; each sync line is one
 *   PAYLOAD frame whose data is the line's BSON document, sent only while the client's request-N demand lasts.
 * - The stream itself is the HTTP route's (`SyncStreamRunner`): same validation, limits, lines, expiry and periodic
 *   `token_expires_in` keepalive lines (besides RSocket keepalive frames: the SDK re-evaluates expired stream
 *   subscriptions only when a line arrives, STREAMS §5.9).
 *
 * The RSocket protocol (frame codec, stream state machines, request-N bookkeeping, keepalive answers and lifetime,
 * fragment reassembly) is `rsocket-core` 1.0.0-alpha.3, the version the PowerSync SDK bundles on the client side. The
 * WebSocket layer is `ws`; the small server transport below replaces `rsocket-websocket-server` (see the README).
 */

export interface SyncWebSocketOptions {
  /** Largest accepted WebSocket message (a REQUEST_STREAM lists the client's buckets); default 2 MiB + 64 KiB. */
  maxPayloadBytes?: number;
  /** A connection that sends no SETUP within this time is closed (default 30 s). */
  setupTimeoutMs?: number;
  /** Unsent bytes per socket above which a stream waits for the socket to drain (default 1 MiB). */
  highWaterMarkBytes?: number;
}

export interface SyncWebSocketServer {
  /** Open WebSocket connections (for tests and metrics). */
  readonly connectionCount: number;
  /** Close every WebSocket connection (also done by `SyncConnections.closeAll`). */
  close(): void;
}

/** Frames (and their bytes) a connection may send while its SETUP is being verified; the SDK sends one REQUEST_STREAM. */
export const MAX_PRE_SETUP_FRAMES = 16;
export const MAX_PRE_SETUP_BYTES = 4 * 1024 * 1024;

/** WebSocket close codes. */
const GOING_AWAY = 1001;

/** A live WebSocket, as an RSocket duplex connection; frames are WebSocket binary messages (no length prefix). */
class WebSocketDuplexConnection extends Deferred implements DuplexConnection {
  readonly multiplexerDemultiplexer: Multiplexer & Demultiplexer & FrameHandler;
  private unsentBytes = 0;
  private drainWaiters: Array<() => void> = [];

  constructor(
    private readonly socket: WebSocket,
    firstFrame: Frame,
    factory: (frame: Frame, outbound: Outbound & Closeable) => Multiplexer & Demultiplexer & FrameHandler,
    private readonly highWaterMarkBytes: number
  ) {
    super();
    this.multiplexerDemultiplexer = factory(firstFrame, this);
  }

  get availability(): number {
    return this.done ? 0 : 1;
  }

  /**
   * Deliver one received frame to the multiplexer; a malformed frame closes the connection. This runs in the socket's
   * message event: anything thrown here would be an uncaught exception that ends the process.
   */
  receive(data: Buffer) {
    if (this.done) return;
    let frame: Frame;
    try {
      frame = decodeFrame(data);
    } catch (error) {
      this.close(new RSocketError(ErrorCodes.CONNECTION_ERROR, `invalid frame: ${(error as Error).message}`));
      return;
    }
    try {
      this.multiplexerDemultiplexer.handle(frame);
    } catch (error) {
      this.close(new RSocketError(ErrorCodes.CONNECTION_ERROR, `frame not handled: ${(error as Error).message}`));
    }
  }

  send(frame: Frame): void {
    if (this.done || this.socket.readyState !== this.socket.OPEN) return;
    const buffer = serializeFrame(frame);
    this.unsentBytes += buffer.length;
    this.socket.send(buffer, { binary: true }, () => {
      this.unsentBytes -= buffer.length;
      if (this.unsentBytes <= this.highWaterMarkBytes) this.wakeDrainWaiters();
    });
  }

  /** Resolves once the socket's unsent bytes are below the high-water mark (or the connection is gone). */
  drained(): Promise<void> {
    if (this.done || this.unsentBytes <= this.highWaterMarkBytes) return Promise.resolve();
    return new Promise((resolve) => this.drainWaiters.push(resolve));
  }

  private wakeDrainWaiters() {
    const waiters = this.drainWaiters;
    this.drainWaiters = [];
    for (const wake of waiters) wake();
  }

  override close(error?: Error): void {
    if (this.done) return; // closed from both ends (the socket's close event follows our own close)
    // Queued frames (e.g. an ERROR rejecting the SETUP) still go out before the close frame.
    if (this.socket.readyState === this.socket.OPEN || this.socket.readyState === this.socket.CONNECTING) {
      this.socket.close(error ? 1011 : 1000);
    }
    super.close(error);
    this.wakeDrainWaiters();
  }
}

/**
 * An RSocket server transport for exactly one accepted WebSocket: the first message must be SETUP (or RESUME, which
 * `RSocketServer` rejects); frames arriving while the acceptor runs (the SDK sends REQUEST_STREAM right after SETUP)
 * are queued and handled once it is done, as `rsocket-websocket-server` does by pausing its stream.
 */
class SingleWebSocketTransport implements ServerTransport {
  connection: WebSocketDuplexConnection | null = null;

  constructor(
    private readonly socket: WebSocket,
    private readonly options: Required<SyncWebSocketOptions>
  ) {}

  bind(
    connectionAcceptor: (frame: Frame, connection: DuplexConnection) => Promise<void>,
    factory: (frame: Frame, outbound: Outbound & Closeable) => Multiplexer & Demultiplexer & FrameHandler
  ): Promise<Closeable> {
    const socket = this.socket;
    let queued: Buffer[] | null = null;
    let queuedBytes = 0;
    const setupTimer = setTimeout(() => socket.terminate(), this.options.setupTimeoutMs);
    socket.on('message', (data) => {
      if (!Buffer.isBuffer(data)) return; // binaryType 'nodebuffer': always a Buffer
      if (queued) {
        // Issue 12 item 5: frames before the SETUP is verified are held in memory: bounded in count and bytes.
        queuedBytes += data.length;
        if (queued.length >= MAX_PRE_SETUP_FRAMES || queuedBytes > MAX_PRE_SETUP_BYTES) {
          queued = [];
          const message = `too many frames before the SETUP was verified (at most ${MAX_PRE_SETUP_FRAMES} frames, ${MAX_PRE_SETUP_BYTES} bytes)`;
          this.connection?.send({
            type: FrameTypes.ERROR,
            streamId: 0,
            flags: Flags.NONE,
            code: ErrorCodes.CONNECTION_ERROR,
            message
          });
          this.connection?.close(new RSocketError(ErrorCodes.CONNECTION_ERROR, message));
          return;
        }
        return void queued.push(data);
      }
      if (this.connection) return this.connection.receive(data);
      // The first frame: SETUP.
      clearTimeout(setupTimer);
      let frame: Frame;
      let connection: WebSocketDuplexConnection;
      try {
        frame = decodeFrame(data);
        connection = new WebSocketDuplexConnection(socket, frame, factory, this.options.highWaterMarkBytes);
      } catch {
        // A malformed frame, or one rsocket-core's connection factory cannot take (it throws on some frame types).
        socket.close(1002, 'invalid RSocket frame');
        return;
      }
      this.connection = connection;
      queued = [];
      connectionAcceptor(frame, connection)
        .catch((error: unknown) => connection.close(error instanceof Error ? error : new Error(String(error))))
        .finally(() => {
          const pending = queued ?? [];
          queued = null;
          for (const message of pending) connection.receive(message);
        });
    });
    socket.on('close', (code, reason) => {
      clearTimeout(setupTimer);
      this.connection?.close(new Error(reason.length > 0 ? reason.toString() : `WebSocket closed (${code})`));
    });
    socket.on('error', (error) => {
      clearTimeout(setupTimer);
      this.connection?.close(error);
    });
    const closeable = new Deferred();
    closeable.onClose(() => socket.terminate());
    return Promise.resolve(closeable);
  }
}

/**
 * `deserializeFrame`, but an unknown frame type is an error: rsocket-core returns undefined for it, which its
 * multiplexer then dereferences (a TypeError thrown from the socket's message event would end the process).
 */
function decodeFrame(data: Buffer): Frame {
  const frame = deserializeFrame(data) as Frame | undefined;
  if (typeof frame !== 'object' || frame === null) throw new Error('unknown frame type');
  return frame;
}

/** Decode SETUP/REQUEST_STREAM metadata or data: BSON when the MIME type says so, JSON otherwise. */
export function decodeRSocketJson(buffer: Buffer | null | undefined, mimeType: string, what: string): unknown {
  if (buffer == null || buffer.length === 0) return undefined;
  try {
    if (/bson/i.test(mimeType)) return BSON.deserialize(buffer);
    return JSON.parse(buffer.toString('utf8'));
  } catch {
    throw validationError([`${what} is not valid ${/bson/i.test(mimeType) ? 'BSON' : 'JSON'}`]);
  }
}

/** The message of an RSocket ERROR frame for an error: always with a `PSYNC_` code (the SDK looks for it). */
export function rsocketErrorMessage(error: unknown): string {
  if (error instanceof ServiceError) return error.message;
  return internalError(error).message;
}

/**
 * A stream's lines as PAYLOAD frames. Lines go out one at a time, only while the client's outstanding request-N
 * demand is positive and the socket is not backed up; `write` waits otherwise, which pauses the line generator.
 */
export class RSocketLineSink implements SyncLineSink {
  private demand: number;
  private chain: Promise<void> = Promise.resolve();
  private closed = false;
  private wake: (() => void) | null = null;
  private readonly destroyed: Promise<void>;
  private markDestroyed!: () => void;

  constructor(
    private readonly responder: OnNextSubscriber & OnTerminalSubscriber,
    initialRequestN: number,
    private readonly drained: () => Promise<void> = () => Promise.resolve()
  ) {
    this.demand = initialRequestN;
    this.destroyed = new Promise<void>((resolve) => (this.markDestroyed = resolve));
  }

  get isClosed(): boolean {
    return this.closed;
  }

  get outstandingDemand(): number {
    return this.demand;
  }

  /** REQUEST_N: the client can take `n` more lines. */
  request(n: number) {
    this.demand += n;
    this.notify();
  }

  /** CANCEL or connection loss: nothing more is sent; a waiting write returns. */
  cancel() {
    this.closed = true;
    this.notify();
  }

  write(line: object): Promise<void> {
    this.chain = this.chain.then(() => this.writeNow(line));
    return this.chain;
  }

  private notify() {
    const wake = this.wake;
    this.wake = null;
    wake?.();
  }

  private async writeNow(line: object): Promise<void> {
    while (!this.closed && this.demand <= 0) await new Promise<void>((resolve) => (this.wake = resolve));
    if (this.closed) return;
    this.demand--;
    const document = BSON.serialize(line);
    this.responder.onNext({ data: Buffer.from(document.buffer, document.byteOffset, document.byteLength) }, false);
    await Promise.race([this.drained(), this.destroyed]);
  }

  /**
   * The stream must end but the client gives no demand (or its socket is backed up): drop what is queued and complete
   * the stream now (COMPLETE needs no demand), so the SDK reconnects.
   */
  destroy(): void {
    this.markDestroyed();
    if (this.closed) return;
    this.closed = true;
    this.notify();
    this.responder.onComplete();
  }

  async fail(error: unknown): Promise<void> {
    await this.chain;
    if (this.closed) return;
    this.closed = true;
    this.responder.onError(new RSocketError(ErrorCodes.APPLICATION_ERROR, rsocketErrorMessage(error)));
  }

  async end(): Promise<void> {
    await this.chain;
    if (this.closed) return;
    this.closed = true;
    this.responder.onComplete();
  }
}

type Responder = OnTerminalSubscriber & OnNextSubscriber & OnExtensionSubscriber;

/** Per WebSocket connection: the verified SETUP and the streams it opened. */
class SyncSocketSession {
  private tokenString = '';
  private token: TokenPayload | null = null;
  private userAgent: string | undefined;
  private dataMimeType = 'application/json';
  private metadataMimeType = 'application/json';
  readonly streams = new Set<Promise<void>>();

  constructor(
    private readonly runner: SyncStreamRunner,
    private readonly log: Logger
  ) {}

  /** SETUP: authenticate; throwing rejects the SETUP with an ERROR frame carrying the message. */
  async accept(setup: SetupPayload): Promise<Partial<RSocket>> {
    this.dataMimeType = setup.dataMimeType;
    this.metadataMimeType = setup.metadataMimeType;
    try {
      const metadata = decodeRSocketJson(setup.metadata, setup.metadataMimeType, 'SETUP metadata');
      const fields = typeof metadata === 'object' && metadata !== null ? (metadata as Record<string, unknown>) : {};
      this.userAgent = typeof fields.user_agent === 'string' ? fields.user_agent : undefined;
      this.tokenString = tokenFromAuthorizationHeader(fields.token);
      this.token = await this.runner.deps.verifier.verify(this.tokenString);
    } catch (error) {
      const message = rsocketErrorMessage(error);
      if (error instanceof ServiceError && error.status < 500)
        this.log.info({ code: error.code, user_agent: this.userAgent }, `WebSocket setup rejected: ${message}`);
      else this.log.error({ err: error }, 'WebSocket setup failed');
      throw new RSocketError(ErrorCodes.REJECTED_SETUP, message);
    }
    return {
      requestStream: (payload, initialRequestN, responder) => this.requestStream(payload, initialRequestN, responder)
    };
  }

  private requestStream(payload: Payload, initialRequestN: number, responder: Responder) {
    const sink = new RSocketLineSink(responder, initialRequestN, () => this.connectionDrained());
    let abort: (() => void) | null = null;
    const stream = this.runStream(payload, sink, (session) => (abort = session)).catch((error: unknown) => {
      this.log.error({ err: error }, 'WebSocket sync stream failed');
      void sink.fail(error);
    });
    this.streams.add(stream);
    void stream.finally(() => this.streams.delete(stream));
    return {
      request: (n: number) => sink.request(n),
      cancel: () => {
        sink.cancel();
        abort?.();
      },
      onExtension: () => {}
    };
  }

  connectionDrained: () => Promise<void> = () => Promise.resolve();

  private async runStream(payload: Payload, sink: RSocketLineSink, onOpen: (abort: () => void) => void): Promise<void> {
    let session: SyncStreamSession;
    try {
      const metadata = decodeRSocketJson(payload.metadata, this.metadataMimeType, 'REQUEST_STREAM metadata');
      const path =
        typeof metadata === 'object' && metadata !== null ? (metadata as Record<string, unknown>).path : undefined;
      if (path !== undefined && path !== '/sync/stream') {
        throw new ServiceError(
          ErrorCode.ROUTE_NOT_FOUND,
          404,
          'Route not found',
          `REQUEST_STREAM ${typeof path === 'string' ? path : JSON.stringify(path)}`,
          {
            name: 'RouteNotFound'
          }
        );
      }
      const request = this.runner.parseRequest(
        decodeRSocketJson(payload.data, this.dataMimeType, 'REQUEST_STREAM data')
      );
      // Verified at SETUP; again per stream (cached), so an expired token opens no new stream.
      const token = await this.runner.deps.verifier.verify(this.tokenString);
      if (sink.isClosed) return; // cancelled while checking
      session = await this.runner.open(request, token, this.log);
    } catch (error) {
      if (error instanceof ServiceError && error.status < 500)
        this.log.info({ code: error.code, status: error.status }, error.message);
      else if (error instanceof ServiceError) this.log.warn({ code: error.code, status: error.status }, error.message);
      else this.log.error({ err: error }, 'WebSocket sync stream failed to start');
      await sink.fail(error);
      return;
    }
    onOpen(() => session.abort());
    if (sink.isClosed) session.abort(); // cancelled while opening
    await session.run(sink, { logFields: { format: 'bson', user_agent: this.userAgent } });
  }
}

/**
 * Serve the sync stream over RSocket-over-WebSocket on an HTTP server's `upgrade` event (any path). Streams share the
 * HTTP route's per-process runner: connection limit, data-fetch concurrency, shutdown. `connections.closeAll()` (the
 * service's shutdown) also closes every WebSocket, so `server.close()` can complete.
 */
export function attachSyncWebSocket(
  server: Server,
  deps: SyncStreamDependencies,
  connections: SyncConnections,
  options: SyncWebSocketOptions = {}
): SyncWebSocketServer {
  const resolved: Required<SyncWebSocketOptions> = {
    maxPayloadBytes: options.maxPayloadBytes ?? 2 * 1024 * 1024 + 64 * 1024,
    setupTimeoutMs: options.setupTimeoutMs ?? 30_000,
    highWaterMarkBytes: options.highWaterMarkBytes ?? 1024 * 1024
  };
  const runner = SyncStreamRunner.for(deps, connections);
  const wss = new WebSocketServer({
    noServer: true,
    perMessageDeflate: true,
    maxPayload: resolved.maxPayloadBytes,
    clientTracking: true
  });
  const log = deps.logger.child({ transport: 'websocket' });

  const sessions = new Map<WebSocket, SyncSocketSession>();

  const onUpgrade = (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    if (connections.shuttingDown) {
      socket.end('HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
      return;
    }
    wss.handleUpgrade(req, socket, head, (ws) => {
      const session = new SyncSocketSession(
        runner,
        log.child({ path: req.url?.split('?')[0], remote: req.socket.remoteAddress })
      );
      sessions.set(ws, session);
      ws.once('close', () => sessions.delete(ws));
      ws.on('error', (error) => log.debug({ err: error }, 'WebSocket error'));
      const transport = new SingleWebSocketTransport(ws, resolved);
      session.connectionDrained = () => transport.connection?.drained() ?? Promise.resolve();
      new RSocketServer({ transport, acceptor: { accept: (setup) => session.accept(setup) } })
        .bind()
        .catch((error: unknown) => {
          log.error({ err: error }, 'WebSocket connection failed');
          ws.terminate();
        });
    });
  };
  server.on('upgrade', onUpgrade);

  let closing = false;
  const closeSockets = () => {
    if (closing) return;
    closing = true;
    server.off('upgrade', onUpgrade);
    // The streams were aborted: let them send their last frames (at most 1 s), then close; stragglers are cut 2 s later.
    for (const [ws, session] of sessions) {
      const settled = Promise.allSettled([...session.streams]);
      const timeout = new Promise((resolve) => setTimeout(resolve, 1_000).unref());
      void Promise.race([settled, timeout]).then(() => {
        ws.close(GOING_AWAY, 'server shutting down');
        setTimeout(() => ws.terminate(), 2_000).unref();
      });
    }
    for (const ws of wss.clients) if (!sessions.has(ws)) ws.terminate();
  };
  connections.onCloseAll(closeSockets);

  return {
    get connectionCount() {
      return wss.clients.size;
    },
    close() {
      connections.shuttingDown = true;
      closeSockets();
    }
  };
}
