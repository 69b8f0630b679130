import { createServer, Socket, type Server } from 'node:net';

/**
 * A loopback TCP proxy for fault tests: clients connect to `port`, bytes go both ways to `127.0.0.1:targetPort`.
 * Faults:
 * - `dropAll()`: destroy every open connection abruptly (both sides see a reset/close), as when a router or the
 *   server's host dies.
 * - `stallExisting()`: the connections open now stop forwarding bytes in both directions and stay open forever (a
 *   silently dead path: neither side gets a FIN or RST). Connections opened later forward normally.
 */
export interface TcpProxy {
  readonly port: number;
  /** Connections currently open (forwarding or stalled). */
  readonly openConnections: number;
  /** Connections accepted since the start. */
  readonly acceptedConnections: number;
  dropAll(): number;
  stallExisting(): number;
  /** Close the listener and destroy every connection (stalled ones too). */
  close(): Promise<void>;
}

interface Pair {
  client: Socket;
  upstream: Socket;
  stalled: boolean;
}

export async function startTcpProxy(targetPort: number): Promise<TcpProxy> {
  const pairs = new Set<Pair>();
  let accepted = 0;
  const server: Server = createServer((client) => {
    accepted++;
    const upstream = new Socket();
    const pair: Pair = { client, upstream, stalled: false };
    pairs.add(pair);
    const forget = () => {
      pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    // Forward by hand (not pipe()) so a stalled pair can keep reading and discard, without closing anything.
    const forward = (from: Socket, to: Socket) => {
      from.on('data', (chunk) => {
        if (!pair.stalled) to.write(chunk);
      });
      from.on('end', () => {
        if (!pair.stalled) to.end();
      });
      from.on('close', () => {
        if (!pair.stalled) forget();
      });
      from.on('error', () => {});
    };
    forward(client, upstream);
    forward(upstream, client);
    upstream.connect(targetPort, '127.0.0.1');
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const address = server.address();
  if (typeof address !== 'object' || !address) throw new Error('the proxy has no port');

  return {
    port: address.port,
    get openConnections() {
      return pairs.size;
    },
    get acceptedConnections() {
      return accepted;
    },
    dropAll() {
      const dropped = pairs.size;
      for (const pair of [...pairs]) {
        pairs.delete(pair);
        // resetAndDestroy sends an RST where available: the abrupt kind of loss, not a polite FIN.
        for (const socket of [pair.client, pair.upstream]) {
          if (typeof socket.resetAndDestroy === 'function' && socket.readyState === 'open') socket.resetAndDestroy();
          else socket.destroy();
        }
      }
      return dropped;
    },
    stallExisting() {
      let stalled = 0;
      for (const pair of pairs) {
        if (!pair.stalled) stalled++;
        pair.stalled = true;
      }
      return stalled;
    },
    async close() {
      for (const pair of [...pairs]) {
        pairs.delete(pair);
        pair.client.destroy();
        pair.upstream.destroy();
      }
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  };
}
