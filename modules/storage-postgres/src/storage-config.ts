import { z } from 'zod';

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
    max_pool_size: z.coerce.number().int().min(1).max(1000).default(8)
  })
  .refine((config) => config.uri !== undefined || config.hostname !== undefined, {
    message: 'storage needs either uri or hostname',
    path: ['uri']
  });

export type PostgresStorageConfig = z.infer<typeof postgresStorageConfigSchema>;
