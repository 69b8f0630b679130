import { z } from 'zod';

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
  max_pool_size: positiveInteger.default(DEFAULT_MAX_POOL_SIZE)
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
