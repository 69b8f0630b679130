import { startEmbeddedPostgres } from '@syncpoint/dev-postgres';
const s = await startEmbeddedPostgres();
process.exitCode = 3;
