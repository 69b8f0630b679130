import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { BSON } from 'bson';
import {
  Deferred,
  deserializeFrame,
  ErrorCodes,
  Flags,
  FrameTypes,
  RSocketConnector,
  serializeFrame,
  type ClientTransport,
  type Closeable,
  type Demultiplexer,
  type DuplexConnection,
  type Frame,
  type FrameHandler,
  type Multiplexer,
  type Outbound,
  type Requestable,
  type RSocket
} from 'rsocket-core';
import { afterEach, beforeEach, describe, expect, test, vi } from 'vitest';
import { WebSocket } from 'ws';
import { authError, ErrorCode } from '../src/errors.js';
import { createLogger } from '../src/logger.js';
import { RSocketLineSink, attachSyncWebSocket, type SyncWebSocketServer } from '../src/routes/sync-websocket.js';
import { SyncConnections, type SyncStreamDependencies } from '../src/routes/sync-stream-route.js';

/**
 * The RSocket-over-WebSocket transport (PROTOCOL §7.10) against an `rsocket-core` 1.0.0-alpha.3 client (the RSocket
 * implementation the PowerSync SDK bundles) over `ws`, with fake storage: SETUP authentication errors, request-N flow
 * control, the shared connection limit, cancellation, expiry lines and shutdown.
 */

// ---- a minimal RSocket client transport over `ws` (the SDK uses rsocket-websocket-client over the platform WebSocket)

class ClientConnection extends Deferred implements DuplexConnection {
  readonly multiplexerDemultiplexer: Multiplexer & Demultiplexer & FrameHandler;
  constructor(
    private readonly ws: WebSocket,
    factory: (outbound: Outbound & Closeable) => Multiplexer & Demultiplexer & FrameHandler
  ) {
    super();
    this.multiplexerDemultiplexer = factory(this);
    ws.on('message', (data: Buffer) => this.multiplexerDemultiplexer.handle(deserializeFrame(data)));
    ws.on('close', (code) => {
      if (!this.done) this.close(new Error(`socket closed ${code}`));
    });
  }
  get availability() {
    return this.done ? 0 : 1;
  }
  send(frame: Frame) {
    if (!this.done) this.ws.send(serializeFrame(frame));
  }
  override close(error?: Error) {
    if (this.done) return;
    this.ws.close();
    super.close(error);
  }
}

class ClientWsTransport implements ClientTransport {
  socket: WebSocket | null = null;
  constructor(private readonly url: string) {}
  connect(
    factory: (outbound: Outbound & Closeable) => Multiplexer & Demultiplexer & FrameHandler
  ): Promise<DuplexConnection> {
    return new Promise((resolve, reject) => {
      const ws = (this.socket = new WebSocket(this.url, { perMessageDeflate: true }));
      ws.once('open', () => resolve(new ClientConnection(ws, factory)));
      ws.once('error', reject);
    });
  }
}

type Mime = 'application/json' | 'application/bson';
const encode = (value: unknown, mime: Mime) =>
  mime === 'application/bson' ? Buffer.from(BSON.serialize(value as object)) : Buffer.from(JSON.stringify(value));

async function connect(url: string, metadata: Record<string, unknown>, mime: Mime = 'application/json') {
  const transport = new ClientWsTransport(url);
  const rsocket = await new RSocketConnector({
    transport,
    setup: {
      keepAlive: 20_000,
      lifetime: 90_000,
      dataMimeType: mime,
      metadataMimeType: mime,
      payload: { data: null, metadata: encode(metadata, mime) }
    }
  }).connect();
  return { rsocket, transport };
}

interface StreamHandle {
  lines: Array<Record<string, unknown>>;
  error: Error | null;
  completed: boolean;
  requestable: Requestable & { cancel(): void };
  ended: Promise<void>;
}

function requestStream(
  rsocket: RSocket,
  body: unknown,
  initialN: number,
  mime: Mime = 'application/json'
): StreamHandle {
  let finish!: () => void;
  const handle = {
    lines: [],
    error: null,
    completed: false,
    ended: new Promise<void>((resolve) => (finish = resolve))
  } as unknown as StreamHandle;
  handle.requestable = rsocket.requestStream(
    { data: encode(body, mime), metadata: encode({ path: '/sync/stream' }, mime) },
    initialN,
    {
      onNext: (payload) => void handle.lines.push(BSON.deserialize(payload.data!)),
      onError: (error) => {
        handle.error = error;
        finish();
      },
      onComplete: () => {
        handle.completed = true;
        finish();
      },
      onExtension: () => {}
    }
  );
  return handle;
}

async function until(what: string, check: () => boolean, timeoutMs = 5_000) {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

const settle = () => new Promise((resolve) => setTimeout(resolve, 150));

// ---- fake storage: one bucket with DATA_CHUNKS chunks of ops at checkpoint 10, then no new checkpoint

const DATA_CHUNKS = 5;
const stream = { id: 1, state: 'ACTIVE', content: '' };

function fakeDependencies(options: { maxConnections?: number; keepaliveMs?: number } = {}) {
  const pulled = { chunks: 0 };
  const verifier = {
    verify: vi.fn(async (token: string) => {
      if (token === 'slow') await new Promise((resolve) => setTimeout(resolve, 1_000));
      if (token === 'good' || token === 'slow')
        return { userId: 'u1', parameters: {}, exp: Math.floor(Date.now() / 1000) + 3600, claims: { sub: 'u1' } };
      if (token.startsWith('expiring'))
        return { userId: 'u1', parameters: {}, exp: Math.floor(Date.now() / 1000) + 1, claims: { sub: 'u1' } };
      throw authError(ErrorCode.INVALID_TOKEN, 'Invalid token');
    })
  };
  const streamStorage = {
    stream,
    syncRules: {
      resolveConnection: () =>
        Promise.resolve({
          streams: [{ name: 'global', isDefault: true, errors: [] }],
          buckets: [{ bucket: 'global[]', priority: 3, subscriptions: [{ default: 0 }] }],
          errors: [],
          usesLookups: false
        })
    },
    getChecksums: () => Promise.resolve(new Map([['global[]', { checksum: 0, count: DATA_CHUNKS }]])),
    getParameterSets: () => Promise.resolve([]),
    // eslint-disable-next-line @typescript-eslint/require-await -- storage yields asynchronously; this stand-in has its chunks in memory
    async *getBucketData() {
      for (let i = 0; i < DATA_CHUNKS; i++) {
        pulled.chunks++;
        const op = {
          op_id: BigInt(i + 1),
          op: 'PUT',
          object_type: 'todos',
          object_id: `t${i}`,
          subkey: 's',
          checksum: 0,
          data: '{}'
        };
        yield {
          bucket: 'global[]',
          after: BigInt(i),
          nextAfter: BigInt(i + 1),
          hasMore: i < DATA_CHUNKS - 1,
          data: [op]
        };
      }
    }
  };
  const watcher = {
    latest: null,
    async next(after: unknown, signal: AbortSignal) {
      if (after === null) return { stream, checkpoint: { checkpoint: 10n, lsn: '0/1' } };
      if (!signal.aborted) await new Promise((resolve) => signal.addEventListener('abort', resolve, { once: true }));
      return null;
    }
  };
  const deps = {
    storage: {
      getServingStream: () => Promise.resolve(stream),
      getStreamStorage: () => Promise.resolve(streamStorage),
      lastWriteCheckpoint: () => Promise.resolve(null)
    },
    watcher,
    verifier,
    logger: createLogger({ level: 'silent' }),
    limits: {
      maxBuckets: 1000,
      maxParameterResults: 1000,
      maxConnections: options.maxConnections ?? 10,
      maxDataFetchConcurrency: 10,
      opsPerBatch: 1
    },
    keepaliveMs: () => options.keepaliveMs ?? 60_000
  } as unknown as SyncStreamDependencies;
  return { deps, verifier, pulled };
}

describe('RSocket over WebSocket', () => {
  let server: Server;
  let url: string;
  let connections: SyncConnections;
  let ws: SyncWebSocketServer;
  let fake: ReturnType<typeof fakeDependencies>;
  const sockets: RSocket[] = [];
  const warn = vi.spyOn(console, 'warn');

  async function start(options: { maxConnections?: number; keepaliveMs?: number } = {}) {
    fake = fakeDependencies(options);
    connections = new SyncConnections();
    server = createServer((_req, res) => res.writeHead(404).end());
    ws = attachSyncWebSocket(server, fake.deps, connections);
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    url = `ws://127.0.0.1:${(server.address() as AddressInfo).port}/sync/stream`;
  }

  const open = async (metadata: Record<string, unknown> = { token: 'Token good', user_agent: 'test' }, mime?: Mime) => {
    const { rsocket } = await connect(url, metadata, mime);
    sockets.push(rsocket);
    return rsocket;
  };

  beforeEach(() => {
    warn.mockClear();
  });
  afterEach(async () => {
    for (const rsocket of sockets.splice(0)) rsocket.close();
    connections?.closeAll();
    await new Promise<void>((resolve) => server.close(() => resolve()));
    // rsocket-core warns about double closes/errors: the server side must not produce any.
    expect(warn).not.toHaveBeenCalled();
  });

  test('SETUP without a token is rejected with PSYNC_S2106', async () => {
    await start();
    const rsocket = await open({ user_agent: 'test' });
    const stream = requestStream(rsocket, {}, 1);
    await stream.ended;
    expect(stream.error?.message).toContain('PSYNC_S2106');
    expect(fake.verifier.verify).not.toHaveBeenCalled();
  });

  test('SETUP with an invalid token is rejected with the auth error code', async () => {
    await start();
    const rsocket = await open({ token: 'Token bad' });
    const stream = requestStream(rsocket, {}, 1);
    await stream.ended;
    expect(stream.error?.message).toContain('PSYNC_S2101');
    expect(stream.lines).toEqual([]);
  });

  test('lines are BSON PAYLOAD frames sent only while request-N demand lasts', async () => {
    await start();
    const rsocket = await open();
    const stream = requestStream(rsocket, { buckets: [], raw_data: true, client_id: 'c1' }, 2);
    await until('2 lines', () => stream.lines.length === 2);
    await settle();
    expect(stream.lines).toHaveLength(2); // paused: demand is 0
    expect(Object.keys(stream.lines[0]!)).toEqual(['checkpoint']);
    expect(stream.lines[0]).toMatchObject({
      checkpoint: { last_op_id: '10', buckets: [{ bucket: 'global[]', count: DATA_CHUNKS }] }
    });
    // The generator is paused too: at most one line is produced ahead of the demand.
    expect(fake.pulled.chunks).toBeLessThanOrEqual(2);

    stream.requestable.request(3);
    await until('5 lines', () => stream.lines.length === 5);
    await settle();
    expect(stream.lines).toHaveLength(5);

    stream.requestable.request(100);
    await until('all lines', () => stream.lines.length === DATA_CHUNKS + 2);
    expect(stream.lines.slice(1, -1).map((line) => Object.keys(line)[0])).toEqual(Array(DATA_CHUNKS).fill('data'));
    expect(stream.lines.at(-1)).toEqual({ checkpoint_complete: { last_op_id: '10' } });
    // Nothing more than the demanded lines (keepalives are a minute apart here).
    await settle();
    expect(stream.lines).toHaveLength(DATA_CHUNKS + 2);
    expect(connections.count).toBe(1);

    // CANCEL frees the connection slot at once.
    stream.requestable.cancel();
    await until('the slot to be freed', () => connections.count === 0);
  });

  test('BSON SETUP metadata and REQUEST_STREAM data are accepted', async () => {
    await start();
    const rsocket = await open({ token: 'Token good' }, 'application/bson');
    const stream = requestStream(
      rsocket,
      { buckets: [{ name: 'global[]', after: '3' }], raw_data: true },
      10,
      'application/bson'
    );
    await until('the first data line', () => stream.lines.length >= 2);
    expect(stream.lines[1]).toMatchObject({ data: { bucket: 'global[]' } });
    stream.requestable.cancel();
  });

  test('an invalid body is an ERROR frame with PSYNC_S2001', async () => {
    await start();
    const rsocket = await open();
    const stream = requestStream(rsocket, { buckets: 'nope' }, 1);
    await stream.ended;
    expect(stream.error?.message).toContain('PSYNC_S2001');
    expect(connections.count).toBe(0);
  });

  test('the connection limit is shared and reported as PSYNC_S2304; a closed socket frees its slot', async () => {
    await start({ maxConnections: 1 });
    const first = await open();
    const stream = requestStream(first, {}, 1);
    await until('the first line', () => stream.lines.length === 1);
    expect(connections.count).toBe(1);
    const second = requestStream(await open(), {}, 1);
    await second.ended;
    expect(second.error?.message).toContain('PSYNC_S2304');

    first.close(); // the socket goes away: the stream is aborted
    await until('the slot to be freed', () => connections.count === 0);
    await until('the socket to be gone', () => ws.connectionCount === 1);
  });

  test('keepalive lines are sent over RSocket too, so the SDK re-evaluates expired subscriptions (STREAMS §5.9)', async () => {
    await start({ keepaliveMs: 30 });
    const stream = requestStream(await open(), {}, 1000);
    await until('two keepalive lines', () => stream.lines.filter((line) => 'token_expires_in' in line).length >= 2);
    const keepalive = stream.lines.find((line) => 'token_expires_in' in line) as { token_expires_in: number };
    expect(keepalive.token_expires_in).toBeGreaterThan(0);
    stream.requestable.cancel();
    await until('the slot to be freed', () => connections.count === 0);
  });

  test('the token expiry ends the stream with {"token_expires_in": 0}', async () => {
    await start();
    const stream = requestStream(await open({ token: 'Token expiring' }), {}, 100);
    await stream.ended;
    expect(stream.completed).toBe(true);
    const expiryLines = stream.lines.filter((line) => 'token_expires_in' in line);
    expect(expiryLines.at(-1)).toEqual({ token_expires_in: 0 });
    expect(connections.count).toBe(0);
  });

  test('closeAll (shutdown) ends the streams and closes the sockets', async () => {
    await start();
    const stream = requestStream(await open(), {}, 100);
    await until('lines', () => stream.lines.length > 0);
    connections.closeAll();
    await stream.ended;
    await until('no sockets', () => ws.connectionCount === 0);
    expect(connections.count).toBe(0);
  });
});

describe('RSocketLineSink', () => {
  test('write waits for demand; cancel releases a waiting write', async () => {
    const sent: unknown[] = [];
    const responder = {
      onNext: (payload: { data: Buffer }) => sent.push(BSON.deserialize(payload.data)),
      onError: vi.fn(),
      onComplete: vi.fn()
    };
    const sink = new RSocketLineSink(responder, 1);
    await sink.write({ a: 1 });
    let second = false;
    const pending = sink.write({ b: 2 }).then(() => (second = true));
    await settle();
    expect(second).toBe(false);
    sink.request(1);
    await pending;
    expect(sent).toEqual([{ a: 1 }, { b: 2 }]);
    const third = sink.write({ c: 3 });
    sink.cancel();
    await third;
    expect(sent).toHaveLength(2);
    await sink.end();
    expect(responder.onComplete).not.toHaveBeenCalled(); // cancelled streams get no terminal frame
  });

  test('fail sends an ERROR with the PSYNC code; internal errors are PSYNC_S2001', async () => {
    const responder = { onNext: vi.fn(), onError: vi.fn(), onComplete: vi.fn() };
    await new RSocketLineSink(responder, 1).fail(new Error('boom'));
    expect((responder.onError.mock.calls[0]![0] as Error).message).toContain('PSYNC_S2001');
    expect((responder.onError.mock.calls[0]![0] as Error).message).not.toContain('boom');
  });
});

describe('frames before SETUP is verified (issue 12 item 5)', () => {
  test('a flood of frames while the SETUP is being verified closes the connection with an RSocket error', async () => {
    const { deps } = fakeDependencies();
    const connections = new SyncConnections();
    const server = createServer((_req, res) => res.writeHead(404).end());
    attachSyncWebSocket(server, deps, connections);
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    try {
      const socket = new WebSocket(`ws://127.0.0.1:${(server.address() as AddressInfo).port}/sync/stream`);
      await once(socket, 'open');
      const received: Frame[] = [];
      socket.on('message', (data: Buffer) => received.push(deserializeFrame(data)));
      const closed = once(socket, 'close');
      socket.send(
        serializeFrame({
          type: FrameTypes.SETUP,
          streamId: 0,
          flags: Flags.METADATA,
          majorVersion: 1,
          minorVersion: 0,
          keepAlive: 60_000,
          lifetime: 300_000,
          resumeToken: null,
          dataMimeType: 'application/json',
          metadataMimeType: 'application/json',
          data: null,
          metadata: Buffer.from(JSON.stringify({ token: 'Token slow' }))
        })
      );
      // The verifier takes 1 s: these arrive while it runs, far more than the cap.
      for (let i = 0; i < 1_000; i++) {
        socket.send(serializeFrame({ type: FrameTypes.REQUEST_N, streamId: 1, flags: Flags.NONE, requestN: 1 }));
      }
      await closed;
      const error = received.find((frame) => frame.type === FrameTypes.ERROR) as
        { code: number; message: string } | undefined;
      expect(error?.code).toBe(ErrorCodes.CONNECTION_ERROR);
      expect(error?.message).toMatch(/too many frames before the SETUP/);
    } finally {
      connections.closeAll();
      server.close();
    }
  });
});
