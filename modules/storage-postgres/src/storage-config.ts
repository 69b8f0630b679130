import { z } from 'zod';

/**
 * Default of `query_timeout_seconds`. A stalled pooled connection is either closed by the pool's idle timeout (10 s,
 * `STORAGE_IDLE_TIMEOUT_MS`) or used and failed by this timeout: replaced within 10 + 15 s, under the 30 s bound.
 */
export const DEFAULT_STORAGE_QUERY_TIMEOUT_SECONDS = 15;

/** The `storage:` section when `type: postgresql` (PROTOCOL §10). */
export const postgresStorageConfigSchema = z
  .object({
    type: z.literal('postgresql'),
    uri: z.string().min(1).optional(),
    hostname: z.string().min(1).optional(),
    port: z.coerce.number().int().min(1).max(65535).optional(),
    database: z.string().min(1).optional(),
    username: z.string().min(1).optional(),
    password: z.string().optional(),
    sslmode: z.enum(['disable', 'verify-ca', 'verify-full']).optional(),
    cacert: z.string().optional(),
    max_pool_size: z.coerce.number().int().min(1).max(1000).default(8),
    /**
     * Client-side limit of one storage query (issue 12 item 4). A connection whose query outlives it is closed and
     * replaced, so a silently dead network path (no FIN, no RST) costs at most this long instead of hanging forever.
     * Migrations are exempt (index builds on large tables may take minutes). Default:
     * `DEFAULT_STORAGE_QUERY_TIMEOUT_SECONDS` (applied where the pool is built, so code building a config by hand
     * need not name it).
     */
    query_timeout_seconds: z.coerce.number().min(0.1).max(3600).optional()
  })
  .refine((config) => config.uri !== undefined || config.hostname !== undefined, {
    message: 'storage needs either uri or hostname',
    path: ['uri']
  });

export type PostgresStorageConfig = z.infer<typeof postgresStorageConfigSchema>;
