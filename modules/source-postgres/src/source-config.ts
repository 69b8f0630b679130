import { z } from 'zod';

/** One `replication.connections[]` entry with `type: postgresql` (PROTOCOL §10). */
export const postgresSourceConfigSchema = z
  .object({
    type: z.literal('postgresql'),
    id: z.string().default('1'),
    tag: z.string().default('default'),
    uri: z.string().min(1).optional(),
    hostname: z.string().min(1).optional(),
    port: z.coerce.number().int().min(1).max(65535).optional(),
    database: z.string().min(1).optional(),
    username: z.string().min(1).optional(),
    password: z.string().optional(),
    sslmode: z.enum(['disable', 'verify-ca', 'verify-full']).optional(),
    cacert: z.string().optional(),
    client_certificate: z.string().optional(),
    client_private_key: z.string().optional(),
    tls_servername: z.string().optional(),
    slot_name_prefix: z
      .string()
      .regex(/^[a-z0-9_]+$/, 'slot_name_prefix may contain only lower-case letters, digits and _')
      .max(40)
      .default('powersync_'),
    heartbeat_interval_seconds: z.coerce.number().int().min(5).max(60).default(60),
    max_pool_size: z.coerce.number().int().min(1).max(100).default(4),
    connect_timeout: z.coerce.number().int().min(1).optional(),
    reject_ip_ranges: z.array(z.string()).optional()
  })
  .refine((config) => config.uri !== undefined || config.hostname !== undefined, {
    message: 'the replication connection needs either uri or hostname',
    path: ['uri']
  });

export type PostgresSourceConfig = z.infer<typeof postgresSourceConfigSchema>;
