import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { testPostgresServer, type PostgresServer } from '../src/index.js';

describe('test Postgres server', () => {
  let server: PostgresServer;
  beforeAll(async () => {
    server = await testPostgresServer();
  });
  afterAll(async () => server?.stop());

  it('runs with wal_level=logical and creates databases idempotently', async () => {
    await server.ensureDatabase('syncpoint_dev_pg_test');
    await server.ensureDatabase('syncpoint_dev_pg_test');
    const client = new pg.Client({ connectionString: server.url('syncpoint_dev_pg_test') });
    await client.connect();
    try {
      const { rows } = await client.query<{ wal_level: string }>('SHOW wal_level');
      expect(rows[0]?.wal_level).toBe('logical');
    } finally {
      await client.end();
    }
  });
});
