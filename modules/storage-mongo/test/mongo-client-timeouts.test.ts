import { createServer, type Server, type Socket } from 'node:net';
import { isDatabaseUnavailable } from '@syncpoint/service-core';
import {
  MongoNetworkError,
  MongoNetworkTimeoutError,
  MongoServerError,
  MongoServerSelectionError,
  MongoTopologyClosedError
} from 'mongodb';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createMongoStorage, isMongoUnavailable, mongoClientOptions, mongoStorageConfigSchema } from '../src/index.js';

/**
 * Issue 12: the MongoDB storage client never waits forever on a dead server, and the driver's "unreachable" errors get
 * the routes' 503 handling. No MongoDB server runs here: a TCP server that accepts and never answers stands in for a
 * hung one, and a closed port for a dead one.
 */

describe('MongoDB client options', () => {
  it('maps the validated timeouts (seconds) to the driver options (ms), defaults included', () => {
    const defaults = mongoClientOptions(mongoStorageConfigSchema.parse({ type: 'mongodb', uri: 'mongodb://h' }));
    expect(defaults).toMatchObject({
      maxPoolSize: 8,
      serverSelectionTimeoutMS: 15_000,
      socketTimeoutMS: 15_000,
      connectTimeoutMS: 10_000,
      heartbeatFrequencyMS: 10_000,
      promoteLongs: false
    });
    expect(defaults).not.toHaveProperty('auth');
    const tuned = mongoClientOptions(
      mongoStorageConfigSchema.parse({
        type: 'mongodb',
        uri: 'mongodb://h',
        username: 'ps',
        password: 'secret',
        server_selection_timeout_seconds: 2.5,
        socket_timeout_seconds: 60,
        connect_timeout_seconds: '0.25',
        heartbeat_frequency_seconds: 0.5
      })
    );
    expect(tuned).toMatchObject({
      auth: { username: 'ps', password: 'secret' },
      serverSelectionTimeoutMS: 2_500,
      socketTimeoutMS: 60_000,
      connectTimeoutMS: 250,
      heartbeatFrequencyMS: 500
    });
  });
});

describe('MongoDB errors that mean "storage unavailable"', () => {
  it('recognises network errors, socket timeouts and servers shutting down or stepping down', () => {
    expect(isMongoUnavailable(new MongoNetworkError('connection reset'))).toBe(true);
    expect(isMongoUnavailable(new MongoNetworkTimeoutError('connection 3 to h:27017 timed out'))).toBe(true);
    for (const code of [91, 189, 10107, 11600, 11602, 13435, 13436])
      expect({ code, unavailable: isMongoUnavailable(new MongoServerError({ code, errmsg: 'x' })) }).toEqual({
        code,
        unavailable: true
      });
  });

  it('leaves request errors and our own closed client alone', () => {
    expect(isMongoUnavailable(new MongoServerError({ code: 11000, errmsg: 'duplicate key' }))).toBe(false);
    expect(isMongoUnavailable(new MongoServerError({ code: 2, errmsg: 'bad value' }))).toBe(false);
    expect(isMongoUnavailable(new MongoTopologyClosedError())).toBe(false);
    expect(isMongoUnavailable(new Error('connection reset'))).toBe(false);
    expect(isMongoUnavailable('ECONNREFUSED')).toBe(false);
  });
});

describe('a dead or hung MongoDB server', () => {
  let hung: Server;
  let hungPort: number;
  const sockets: Socket[] = [];

  beforeAll(async () => {
    // Accepts connections and never answers: the handshake waits for a reply that never comes.
    hung = createServer((socket) => void sockets.push(socket));
    await new Promise<void>((resolve) => hung.listen(0, '127.0.0.1', resolve));
    hungPort = (hung.address() as { port: number }).port;
  });
  afterAll(async () => {
    for (const socket of sockets) socket.destroy();
    await new Promise((resolve) => hung.close(resolve));
  });

  async function connectFails(uri: string) {
    const started = Date.now();
    const error = await createMongoStorage(
      mongoStorageConfigSchema.parse({
        type: 'mongodb',
        uri,
        server_selection_timeout_seconds: 1,
        connect_timeout_seconds: 0.5
      })
    ).then(
      () => null,
      (error: unknown) => error
    );
    return { error, ms: Date.now() - started };
  }

  it('gives up on a server that never answers after the server selection timeout, as "unavailable"', async () => {
    const { error, ms } = await connectFails(`mongodb://127.0.0.1:${hungPort}/?directConnection=true`);
    expect(error).toBeInstanceOf(MongoServerSelectionError);
    expect(ms).toBeLessThan(10_000); // 1 s configured; the driver's default would be 30 s
    expect(sockets.length).toBeGreaterThan(0); // it did reach the hung server
    // The routes' check (service-core, driver-agnostic) now knows this driver's error: 503, not 500.
    expect(isDatabaseUnavailable(error)).toBe(true);
  });

  it('gives up on a closed port the same way', async () => {
    const closed = createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const port = (closed.address() as { port: number }).port;
    await new Promise((resolve) => closed.close(resolve));
    const { error, ms } = await connectFails(`mongodb://127.0.0.1:${port}/?directConnection=true`);
    expect(error).toBeInstanceOf(MongoServerSelectionError);
    expect(ms).toBeLessThan(10_000);
    expect(isDatabaseUnavailable(error)).toBe(true);
  });
});
