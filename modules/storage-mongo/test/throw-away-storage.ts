import { randomUUID } from 'node:crypto';
import { createMongoStorage, MongoBucketStorage, mongoStorageConfigSchema } from '../src/index.js';

/** Must name a replica set (or a single-node one): the storage is written for transactions and change streams. */
export const mongoTestUrl = process.env.MONGO_TEST_URL;

/** A storage on its own throw-away database, dropped again on close. */
export class ThrowAwayMongoStorage extends MongoBucketStorage {
  override async close(): Promise<void> {
    try {
      await this.db.dropDatabase();
    } finally {
      await super.close();
    }
  }
}

export async function createThrowAwayStorage(): Promise<ThrowAwayMongoStorage> {
  const config = mongoStorageConfigSchema.parse({
    type: 'mongodb',
    uri: mongoTestUrl,
    database: `syncpoint_test_${randomUUID().replaceAll('-', '').slice(0, 16)}`
  });
  const connected = await createMongoStorage(config);
  return new ThrowAwayMongoStorage(connected.client, connected.db);
}

export async function migratedStorage(): Promise<ThrowAwayMongoStorage> {
  const storage = await createThrowAwayStorage();
  await storage.migrate('up');
  return storage;
}
