import type pg from 'pg';
import type { PostgresSourceConfig } from './source-config.js';

type SslMode = 'disable' | 'verify-ca' | 'verify-full';

/** Used when the connection sets no `connect_timeout`. */
const DEFAULT_CONNECT_TIMEOUT_SECONDS = 30;

/**
 * Client-side limit for one query on a source pool. Every query is small (a head read, a marker, a chunk of 10,000
 * snapshot rows), so a query this slow is almost certainly on a connection whose peer vanished without closing it;
 * failing it frees the pool slot (pg-pool discards a client whose query failed) and lets a retry use a new connection.
 */
export const SOURCE_QUERY_TIMEOUT_MS = 120_000;

/**
 * TCP keepalive probes start after this much idle time on every source connection (the pools and the replication
 * connection): the kernel notices a peer that is gone on an idle connection. A silent stall with the peer still
 * answering at the TCP level is caught by the application checks: query timeouts on the pools, the replication
 * connection's own silence watchdog (replication-connection.ts).
 */
const SOURCE_KEEPALIVE_INITIAL_DELAY_MS = 10_000;

/** The sslmode from the config key, else from the URI's `sslmode` parameter, else `verify-full` (PROTOCOL §10). */
export function effectiveSslMode(config: PostgresSourceConfig): SslMode {
  if (config.sslmode) return config.sslmode;
  const fromUri = config.uri ? new URL(config.uri).searchParams.get('sslmode') : null;
  if (fromUri === 'disable' || fromUri === 'verify-ca' || fromUri === 'verify-full') return fromUri;
  return 'verify-full';
}

export function sourceClientConfig(config: PostgresSourceConfig): pg.ClientConfig {
  const sslmode = effectiveSslMode(config);
  let connectionString = config.uri;
  if (connectionString) {
    // pg would otherwise interpret sslmode itself, differently from PROTOCOL's three modes.
    const url = new URL(connectionString);
    url.searchParams.delete('sslmode');
    connectionString = url.toString();
  }
  const ssl: pg.ClientConfig['ssl'] =
    sslmode === 'disable'
      ? false
      : {
          rejectUnauthorized: true,
          ...(config.cacert ? { ca: config.cacert } : {}),
          ...(config.client_certificate ? { cert: config.client_certificate } : {}),
          ...(config.client_private_key ? { key: config.client_private_key } : {}),
          ...(config.tls_servername ? { servername: config.tls_servername } : {}),
          // verify-ca checks the chain but not the host name.
          ...(sslmode === 'verify-ca' ? { checkServerIdentity: () => undefined } : {})
        };
  return {
    ...(connectionString ? { connectionString } : {}),
    ...(config.hostname ? { host: config.hostname } : {}),
    ...(config.port ? { port: config.port } : {}),
    ...(config.database ? { database: config.database } : {}),
    ...(config.username ? { user: config.username } : {}),
    ...(config.password !== undefined ? { password: config.password } : {}),
    // A default too: without one, connecting through a silently dead network path waits forever.
    connectionTimeoutMillis: (config.connect_timeout ?? DEFAULT_CONNECT_TIMEOUT_SECONDS) * 1000,
    ssl,
    keepAlive: true,
    keepAliveInitialDelayMillis: SOURCE_KEEPALIVE_INITIAL_DELAY_MS,
    application_name: 'syncpoint'
  };
}

/** Errors after which the same query may succeed on a new connection. */
export function isTransientPgError(error: unknown): boolean {
  const code = (error as { code?: string }).code ?? '';
  return (
    ['ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT', '57P01', '57P02', '57P03', '53300'].includes(code) ||
    code.startsWith('08') ||
    /Connection terminated|timeout exceeded when trying to connect|Query read timeout/i.test(
      String((error as Error)?.message)
    )
  );
}

export async function withRetries<T>(operation: () => Promise<T>, attempts = 3, delayMs = 50): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await operation();
    } catch (error) {
      if (attempt >= attempts || !isTransientPgError(error)) throw error;
      await new Promise((resolve) => setTimeout(resolve, delayMs * 2 ** (attempt - 1)));
    }
  }
}
