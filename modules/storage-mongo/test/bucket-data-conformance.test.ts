import { registerBucketDataConformance } from '@syncpoint/service-core-tests';
import { describe } from 'vitest';
import { migratedStorage, mongoTestUrl as url } from './throw-away-storage.js';

if (!url) {
  console.log(
    'MongoDB bucket data conformance suite SKIPPED: MONGO_TEST_URL is not set (no MongoDB server on this machine)'
  );
}

describe.skipIf(!url)('MongoDB bucket data conformance', () => registerBucketDataConformance(migratedStorage));
