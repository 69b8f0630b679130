import { int64 } from '@syncpoint/codecs';
import pg from 'pg';
import { DEFAULT_STORAGE_QUERY_TIMEOUT_SECONDS, type PostgresStorageConfig } from './storage-config.js';

const INT8_OID = 20;

/**
 * TCP keepalive probes start after this much idle time on a storage connection, so the kernel notices a peer that is
 * gone (host down, NAT entry dropped) on an idle pooled connection too; a busy one is bounded by the query timeout.
 */
const STORAGE_KEEPALIVE_INITIAL_DELAY_MS = 10_000;
/** An idle pooled connection is closed after this long (pg-pool's default, stated: the stall bound relies on it). */
const STORAGE_IDLE_TIMEOUT_MS = 10_000;

/**
 * Type parsers that keep int8 exact: a JS number never carries an op id or a checkpoint id. Every int8 column comes
 * back as a bigint through the int64 codec (a value that is not one is corrupt storage: a typed error). Where a
 * column means something narrower (an op id, a checksum), the reader checks it with that codec's `fromPgInt8`.
 */
const bigintTypes = {
  getTypeParser(oid: number, format?: 'text' | 'binary'): (value: string) => unknown {
    if (oid === INT8_OID && (format ?? 'text') === 'text') return (value: string) => int64.fromPgInt8(value);
    return pg.types.getTypeParser(oid, format) as (value: string) => unknown;
  }
};

export function poolConfigFromStorageConfig(config: PostgresStorageConfig): pg.PoolConfig {
  const ssl =
    config.sslmode === undefined
      ? undefined
      : config.sslmode === 'disable'
        ? false
        : {
            rejectUnauthorized: true,
            ...(config.cacert ? { ca: config.cacert } : {}),
            ...(config.sslmode === 'verify-ca' ? { checkServerIdentity: () => undefined } : {})
          };
  return {
    ...(config.uri ? { connectionString: config.uri } : {}),
    ...(config.hostname ? { host: config.hostname } : {}),
    ...(config.port ? { port: config.port } : {}),
    ...(config.database ? { database: config.database } : {}),
    ...(config.username ? { user: config.username } : {}),
    ...(config.password !== undefined ? { password: config.password } : {}),
    ...(ssl !== undefined ? { ssl } : {}),
    max: config.max_pool_size,
    idleTimeoutMillis: STORAGE_IDLE_TIMEOUT_MS,
    keepAlive: true,
    keepAliveInitialDelayMillis: STORAGE_KEEPALIVE_INITIAL_DELAY_MS,
    query_timeout: Math.round((config.query_timeout_seconds ?? DEFAULT_STORAGE_QUERY_TIMEOUT_SECONDS) * 1000),
    types: bigintTypes,
    application_name: 'syncpoint-storage'
  };
}

/** pg's message when a query outlived `query_timeout`. */
function isQueryReadTimeout(error: unknown): boolean {
  return error instanceof Error && error.message === 'Query read timeout';
}

/**
 * After pg's `query_timeout` fires, the query is still outstanding on the connection: every later statement on that
 * client waits behind it (on a silently dead path: forever), and pg-pool would hand the client out again, since its
 * release does not see the timeout (Kysely and `inTransaction` release without an error). So a query timeout destroys
 * the client's socket: the client becomes unqueryable, its pending queries fail at once, and the pool discards it on
 * release (an idle one at once) and opens a fresh connection for the next caller. Wraps `client.query` in place.
 */
export function destroyConnectionOnQueryTimeout(client: pg.ClientBase): void {
  const query = client.query.bind(client) as (...args: unknown[]) => unknown;
  const destroyIfTimedOut = (error: unknown) => {
    if (!isQueryReadTimeout(error)) return;
    const connection = (client as unknown as { connection?: { stream?: { destroy(): void } } }).connection;
    connection?.stream?.destroy();
  };
  const wrapped = (...args: unknown[]): unknown => {
    const callback = args[args.length - 1];
    if (typeof callback === 'function') {
      // pg-pool's own pool.query uses the callback form.
      args[args.length - 1] = (error: unknown, result: unknown) => {
        destroyIfTimedOut(error);
        (callback as (error: unknown, result: unknown) => void)(error, result);
      };
      return query(...args);
    }
    const result = query(...args);
    // Observes only: the caller still gets (and handles) the rejection of `result` itself.
    if (result instanceof Promise) result.catch(destroyIfTimedOut);
    return result;
  };
  Object.assign(client, { query: wrapped });
}
