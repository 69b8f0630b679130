import { testPostgresServer, type PostgresServer } from '@syncpoint/dev-postgres';
import { registerBucketDataConformance } from '@syncpoint/service-core-tests';
import { afterAll, describe } from 'vitest';
import { createPostgresStorage } from '../src/index.js';

let server: PostgresServer | undefined;
afterAll(async () => server?.stop());

describe('Postgres storage: bucket data conformance', () => {
  registerBucketDataConformance(async () => {
    server ??= await testPostgresServer();
    const database = `syncpoint_bucket_data_${process.pid}_${Date.now()}`;
    await server.ensureDatabase(database);
    const storage = createPostgresStorage({ type: 'postgresql', uri: server.url(database), max_pool_size: 8 });
    await storage.migrate('up');
    return storage;
  });
});
