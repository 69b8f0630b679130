import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { startEmbeddedPostgres, type PostgresServer } from '@syncpoint/dev-postgres';
import {
  DEV_AUDIENCE,
  DEMO_SYNC_CONFIG,
  createModuleRegistry,
  loadOrCreateDevKey,
  prepareDemoSourceDatabase,
  type DevKey
} from '@syncpoint/service';
import {
  parseConfig,
  silentLogger,
  startService,
  type Logger,
  type ResolvedConfig,
  type RunningService,
  type ServiceRole
} from '@syncpoint/service-core';

const SOURCE_DATABASE = 'bench_source';
const STORAGE_DATABASE = 'bench_storage';

/** Embedded Postgres (source + storage databases) and the service running in this process on a free port. */
export interface BenchService {
  postgres: PostgresServer;
  service: RunningService;
  config: ResolvedConfig;
  devKey: DevKey;
  /** Base URL of the service, on loopback. */
  url: string;
  sourceUrl: string;
  storageUrl: string;
  stop(): Promise<void>;
}

/**
 * The embedded default's setup (service/src/embedded-default.ts) in a fresh temp folder: a source database with
 * the demo table and the `powersync` publication, a storage database, an HS256 dev key, the config YAML through
 * parseConfig, and startService on 127.0.0.1, port 0. Everything is removed again by `stop()`.
 */
export async function startBenchService(
  options: {
    logger?: Logger;
    onPostgresLog?: (line: string) => void;
    /** Bucket storage on a second embedded server, so the source server's WAL shows only source writes. */
    separateStorage?: boolean;
    /** The service role (default unified: API and replication in this process). */
    role?: ServiceRole;
    /** Extra config sections merged into the config. */
    config?: Record<string, unknown>;
  } = {}
): Promise<BenchService> {
  const root = await mkdtemp(path.join(tmpdir(), 'syncpoint-bench-'));
  await chmod(root, 0o755); // as root, Postgres runs as the postgres user and must reach the data folder
  const cleanups: Array<() => Promise<unknown>> = [() => rm(root, { recursive: true, force: true })];
  const stop = async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup().catch(() => {});
  };
  try {
    const postgres = await startEmbeddedPostgres({
      dataDir: path.join(root, 'postgres'),
      persistent: false,
      ...(options.onPostgresLog ? { onLog: options.onPostgresLog } : {})
    });
    cleanups.push(() => postgres.stop());
    await postgres.ensureDatabase(SOURCE_DATABASE);
    let storageServer = postgres;
    if (options.separateStorage) {
      storageServer = await startEmbeddedPostgres({ dataDir: path.join(root, 'storage-postgres'), persistent: false });
      cleanups.push(() => storageServer.stop());
    }
    await storageServer.ensureDatabase(STORAGE_DATABASE);
    const sourceUrl = postgres.url(SOURCE_DATABASE);
    const storageUrl = storageServer.url(STORAGE_DATABASE);
    await prepareDemoSourceDatabase(sourceUrl);

    const devKey = await loadOrCreateDevKey(path.join(root, 'dev-key.json'));
    // JSON is YAML, so the config goes through the same parser as a config file.
    const configText = JSON.stringify({
      replication: { connections: [{ type: 'postgresql', uri: sourceUrl, sslmode: 'disable' }] },
      storage: { type: 'postgresql', uri: storageUrl, sslmode: 'disable' },
      port: 0,
      sync_config: { content: DEMO_SYNC_CONFIG },
      client_auth: { audience: [DEV_AUDIENCE], jwks: { keys: [devKey] } },
      ...options.config
    });
    const registry = createModuleRegistry();
    const config = await parseConfig(configText, { source: 'bench', configDir: root, registry });
    const service = await startService(config, {
      registry,
      logger: options.logger ?? silentLogger,
      host: '127.0.0.1',
      role: options.role ?? 'unified'
    });
    cleanups.push(() => service.stop());
    return { postgres, service, config, devKey, url: service.url, sourceUrl, storageUrl, stop };
  } catch (error) {
    await stop();
    throw error;
  }
}
