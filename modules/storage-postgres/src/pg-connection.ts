import { int64 } from '@syncpoint/codecs';
import pg from 'pg';
import type { PostgresStorageConfig } from './storage-config.js';

const INT8_OID = 20;

/**
 * Type parsers that keep int8 exact: a JS number never carries an op id or a checkpoint id. Every int8 column comes
 * back as a bigint through the int64 codec (a value that is not one is corrupt storage: a typed error). Where a
 * column means something narrower (an op id, a checksum), the reader checks it with that codec's `fromPgInt8`.
 */
export const bigintTypes = {
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
    types: bigintTypes,
    application_name: 'syncpoint-storage'
  };
}
