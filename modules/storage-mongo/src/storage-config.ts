import { z } from 'zod';
import { MAX_AWAIT_MS } from './checkpoint-listener.js';

export const DEFAULT_DATABASE = 'powersync';
export const DEFAULT_MAX_POOL_SIZE = 8;

/** A positive integer, also accepted as a decimal string (values substituted from `!env` without `::number`). */
const positiveInteger = z.preprocess(
  (value) => (typeof value === 'string' && /^[0-9]+$/.test(value) ? Number(value) : value),
  z
    .number({ error: 'must be a positive integer' })
    .int('must be a positive integer')
    .min(1, 'must be a positive integer')
    .max(1000, 'must be at most 1000')
);

/**
 * Seconds in [min, max], also accepted as a decimal string (from `!env` without `::number`). Fractions are allowed so
 * tests can use short timeouts.
 */
const seconds = (min: number, max: number) =>
  z.preprocess(
    (value) => (typeof value === 'string' && /^[0-9]+(\.[0-9]+)?$/.test(value) ? Number(value) : value),
    z
      .number({ error: `must be a number of seconds (${min}–${max})` })
      .min(min, `must be at least ${min} seconds`)
      .max(max, `must be at most ${max} seconds`)
  );

/**
 * Driver timeouts, so that no storage call waits forever on a dead or unreachable server (issue 12). Consistent with
 * the Postgres storage: its 15 s query timeout, its 10 s keepalive probes.
 */
export const MONGO_TIMEOUT_DEFAULTS = {
  /** Waiting for a usable server (a primary for writes) before an operation fails: the 15 s query timeout. */
  server_selection_timeout_seconds: 15,
  /** No reply on a socket for this long fails the operation and closes the connection (tailable reads await 10 s). */
  socket_timeout_seconds: 15,
  /** Opening one TCP/TLS connection, handshake included. */
  connect_timeout_seconds: 10,
  /** How often the driver checks each server, so a dead one is noticed while idle (the keepalive's role). */
  heartbeat_frequency_seconds: 10
} as const;

/** The `storage:` section when `type: mongodb` (PROTOCOL §10). Unknown keys are ignored. */
export const mongoStorageConfigSchema = z.object({
  type: z.literal('mongodb'),
  uri: z
    .string({ error: 'is required: a mongodb:// or mongodb+srv:// connection string' })
    .regex(/^mongodb(\+srv)?:\/\/[^/?]+/, 'must be a mongodb:// or mongodb+srv:// connection string with a host'),
  /** Defaults to the database named in the URI, else `powersync`. */
  database: z.string().min(1, 'must not be empty').optional(),
  username: z.string().min(1, 'must not be empty').optional(),
  password: z.string().optional(),
  max_pool_size: positiveInteger.default(DEFAULT_MAX_POOL_SIZE),
  server_selection_timeout_seconds: seconds(0.1, 3600).default(MONGO_TIMEOUT_DEFAULTS.server_selection_timeout_seconds),
  // Longer than the checkpoint listener's await, or every idle tailable read would time out.
  socket_timeout_seconds: seconds(MAX_AWAIT_MS / 1000 + 1, 3600).default(MONGO_TIMEOUT_DEFAULTS.socket_timeout_seconds),
  connect_timeout_seconds: seconds(0.1, 600).default(MONGO_TIMEOUT_DEFAULTS.connect_timeout_seconds),
  // The driver refuses a heartbeat more frequent than every 500 ms.
  heartbeat_frequency_seconds: seconds(0.5, 600).default(MONGO_TIMEOUT_DEFAULTS.heartbeat_frequency_seconds)
});

export type MongoStorageConfig = z.infer<typeof mongoStorageConfigSchema>;

/** The database path segment of a MongoDB connection string (`mongodb://h1,h2/<db>?…`), if any. */
export function databaseFromUri(uri: string): string | undefined {
  const match = /^mongodb(?:\+srv)?:\/\/[^/?]*\/([^?#]*)/.exec(uri);
  const name = match?.[1];
  return name ? decodeURIComponent(name) : undefined;
}

/** `database` from config, else the one named in the URI, else `powersync`. */
export function resolveDatabaseName(config: Pick<MongoStorageConfig, 'uri' | 'database'>): string {
  return config.database ?? databaseFromUri(config.uri) ?? DEFAULT_DATABASE;
}
