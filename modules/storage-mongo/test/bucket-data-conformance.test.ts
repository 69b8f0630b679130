import { randomUUID } from 'node:crypto';
import { registerBucketDataConformance } from '@syncpoint/service-core-tests';
import { describe } from 'vitest';
import { createMongoStorage, MongoBucketStorage, mongoStorageConfigSchema } from '../src/index.js';

/** Must name a replica set (or a single-node one): flushes and checkpoints are MongoDB transactions. */
const url = process.env.MONGO_TEST_URL;

if (!url) {
  console.log('MongoDB bucket data conformance suite SKIPPED: MONGO_TEST_URL is not set (no MongoDB server on this machine)');
}

/** A storage on its own throw-away database, dropped again on close. */
class ThrowAwayMongoStorage extends MongoBucketStorage {
  override async close(): Promise<void> {
    try {
      await this.db.dropDatabase();
    } finally {
      await super.close();
    }
  }
}

async function migratedStorage(): Promise<ThrowAwayMongoStorage> {
  const config = mongoStorageConfigSchema.parse({
    type: 'mongodb',
    uri: url,
    database: `syncpoint_test_${randomUUID().replaceAll('-', '').slice(0, 16)}`
  });
  const connected = await createMongoStorage(config);
  const storage = new ThrowAwayMongoStorage(connected.client, connected.db);
  await storage.migrate('up');
  return storage;
}

describe.skipIf(!url)('MongoDB bucket data conformance', () => registerBucketDataConformance(migratedStorage));
