import { packageTestConfig } from '../../vitest.shared.js';

// Real SDK instances, real Postgres and replication: waits are bounded in the tests, but longer than unit tests.
export default packageTestConfig({ testTimeout: 60_000 });
