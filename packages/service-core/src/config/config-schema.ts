import { z } from 'zod';
import { createJwksAddressGuard } from '../auth/jwks-address-guard.js';

const jwkSchema = z.looseObject({
  kty: z.enum(['RSA', 'EC', 'OKP', 'oct']),
  kid: z.string().min(1).optional(),
  alg: z.string().optional()
});

const syncConfigSectionSchema = z
  .strictObject({
    path: z.string().min(1).optional(),
    content: z.string().min(1).optional(),
    exit_on_error: z.boolean().default(true)
  })
  .refine((section) => !(section.path && section.content), { message: 'give either path or content, not both' });

const POSITIVE_INTEGER = 'must be a positive integer';
/** The issue path names the key, so the message only says what is wrong with it. */
const positiveInteger = () =>
  z.coerce.number({ error: POSITIVE_INTEGER }).int(POSITIVE_INTEGER).min(1, POSITIVE_INTEGER);

/**
 * The service-wide part of the config (PROTOCOL §10). Module-owned sections (`storage`, each replication
 * connection) are only checked for a `type` here; the module registered for that type validates the rest.
 */
export const serviceConfigSchema = z.looseObject({
  replication: z
    .strictObject({
      connections: z
        .array(z.looseObject({ type: z.string({ error: 'each connection needs a type' }) }))
        .max(1, 'only one replication connection is supported')
        .default([])
    })
    .default({ connections: [] }),
  storage: z.looseObject({ type: z.string({ error: 'storage needs a type (postgresql or mongodb)' }) }),
  port: z.coerce.number().int().min(0).max(65535).default(8080),
  sync_config: syncConfigSectionSchema.optional(),
  sync_rules: syncConfigSectionSchema.optional(),
  client_auth: z
    .strictObject({
      jwks_uri: z.union([z.string().url(), z.array(z.string().url())]).optional(),
      audience: z.array(z.string()).default([]),
      jwks: z.strictObject({ keys: z.array(jwkSchema) }).optional(),
      supabase: z.boolean().default(false),
      supabase_jwt_secret: z.string().optional(),
      jwks_reject_ip_ranges: z
        .array(z.string())
        .superRefine((ranges, context) => {
          try {
            createJwksAddressGuard(ranges);
          } catch (error) {
            context.addIssue({
              code: 'custom',
              message: (error as Error).message.replace(/^jwks_reject_ip_ranges: /, '')
            });
          }
        })
        .optional(),
      block_local_jwks: z.boolean().optional(),
      max_token_lifetime_seconds: positiveInteger().optional()
    })
    .default({ audience: [], supabase: false }),
  api: z
    .strictObject({
      tokens: z.array(z.string().min(1)).default([]),
      parameters: z
        .strictObject({
          max_concurrent_connections: positiveInteger().default(200),
          max_data_fetch_concurrency: positiveInteger().default(10),
          max_buckets_per_connection: positiveInteger().default(1000),
          max_parameter_query_results: positiveInteger().default(1000),
          checkpoint_request_retention_minutes: positiveInteger().default(60),
          bucket_count_cache_ttl_minutes: positiveInteger().default(60)
        })
        .prefault({})
    })
    .prefault({}),
  migrations: z.strictObject({ disable_auto_migration: z.boolean().default(false) }).prefault({}),
  healthcheck: z
    .strictObject({
      probes: z
        .strictObject({
          use_http: z.boolean().default(true),
          use_filesystem: z.boolean().default(false),
          use_legacy: z.boolean().default(false)
        })
        .prefault({})
    })
    .optional(),
  system: z
    .strictObject({
      logging: z
        .strictObject({
          level: z.enum(['silly', 'trace', 'debug', 'verbose', 'info', 'warn', 'error', 'silent']).default('info'),
          format: z.enum(['json', 'text']).default('json')
        })
        .prefault({})
    })
    .prefault({}),
  telemetry: z.looseObject({}).optional(),
  metadata: z.record(z.string(), z.string()).default({}),
  parameters: z.record(z.string(), z.unknown()).default({})
});

export type ServiceConfigInput = z.input<typeof serviceConfigSchema>;
export type CoreServiceConfig = z.infer<typeof serviceConfigSchema>;

/** Top-level keys the service understands; anything else is reported as a warning (probably a typo). */
export const KNOWN_TOP_LEVEL_KEYS = new Set(Object.keys(serviceConfigSchema.shape));
