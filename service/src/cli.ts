#!/usr/bin/env node
import { Command, CommanderError, Option } from 'commander';
import {
  assertValidSyncConfig,
  ConfigError,
  createLogger,
  loadConfig,
  openStorage,
  parseConfig,
  startService,
  type Logger,
  type ResolvedConfig,
  type ServiceRole
} from '@syncpoint/service-core';
import { signDevToken } from './dev-token.js';
import { startEmbeddedDefault, type EmbeddedDefault } from './embedded-default.js';
import { createModuleRegistry } from './module-registry.js';

/** Exit codes scripts can rely on. */
export const EXIT = { OK: 0, FAILURE: 1, USAGE: 2, CONFIG: 3 } as const;

const registry = createModuleRegistry();

async function requireConfig(configPath: string | undefined): Promise<ResolvedConfig> {
  const config = await loadConfig({ configPath, registry });
  if (!config) {
    throw new ConfigError(['no config found: pass -c <file>, set POWERSYNC_CONFIG_PATH or POWERSYNC_CONFIG_B64, or add ./powersync.yaml']);
  }
  return config;
}

function loggerFor(config: ResolvedConfig | null): Logger {
  return createLogger({ level: config?.system.logging.level ?? (process.env.SYNCPOINT_LOG_LEVEL as never) ?? 'info' });
}

async function waitForShutdownSignal(): Promise<string> {
  return new Promise((resolve) => {
    process.once('SIGINT', () => resolve('SIGINT'));
    process.once('SIGTERM', () => resolve('SIGTERM'));
  });
}

async function startCommand(options: { config?: string; port?: string; role: ServiceRole }) {
  const found = await loadConfig({ configPath: options.config, registry });
  let embedded: EmbeddedDefault | undefined;
  let config = found;
  if (!config) {
    // Zero-config default: everything on an embedded Postgres under ./.syncpoint/.
    const root = process.env.INIT_CWD ?? process.cwd();
    const port = Number(options.port ?? process.env.PORT ?? 8080);
    embedded = await startEmbeddedDefault({ root, port });
    config = await parseConfig(embedded.configText, { source: 'embedded default', configDir: root, registry });
  } else if (options.port) {
    config = { ...config, port: Number(options.port) };
  }
  const logger = loggerFor(config);
  let service;
  try {
    service = await startService(config, { registry, logger, role: options.role });
  } catch (error) {
    await embedded?.postgres.stop();
    throw error;
  }

  if (embedded) {
    const token = await signDevToken(embedded.devKey, { sub: 'dev-user' });
    const curl = `curl -s -X POST ${service.url}/sync/checkpoint-request -H 'Authorization: Token ${token}' -H 'Content-Type: application/json' -d '{"client_id":"my-device","checkpoint_request_id":"1"}'`;
    process.stdout.write(
      [
        '',
        `Syncpoint is running at ${service.url} on embedded Postgres (data in ${embedded.dataDir})`,
        `  source:  ${embedded.postgres.url('syncpoint_source')}`,
        `  storage: ${embedded.postgres.url('syncpoint_storage')}`,
        `Dev token for user "dev-user" (valid 12 h):`,
        `  ${token}`,
        'Make a checkpoint request:',
        `  ${curl}`,
        'Press Ctrl-C to stop.',
        ''
      ].join('\n') + '\n'
    );
  }

  const signal = await waitForShutdownSignal();
  logger.info({ signal }, 'shutting down');
  await service.stop();
  await embedded?.postgres.stop();
}

async function migrateCommand(direction: string, options: { config?: string }) {
  if (direction !== 'up' && direction !== 'down') {
    throw new CommanderError(EXIT.USAGE, 'syncpoint.usage', `migrate: expected "up" or "down", got "${direction}"`);
  }
  const config = await requireConfig(options.config);
  const logger = loggerFor(config);
  const storage = await openStorage(config, registry, logger);
  try {
    const { applied } = await storage.migrate(direction);
    process.stdout.write(
      applied.length === 0
        ? `Nothing to migrate ${direction}.\n`
        : applied.map((name) => `${direction === 'up' ? 'applied' : 'reverted'} ${name}`).join('\n') + '\n'
    );
  } finally {
    await storage.close();
  }
}

/** Config, sync rules and source preconditions: one line per problem; exit 1 when there is any. */
async function validateCommand(options: { config?: string }) {
  const config = await requireConfig(options.config);
  const problems: string[] = [];
  if (config.syncConfigContent === null) problems.push('sync config: none is configured (sync_config.path or sync_config.content)');
  else {
    try {
      assertValidSyncConfig(config.syncConfigContent);
    } catch (error) {
      problems.push(...((error as ConfigError).problems ?? [String(error)]));
    }
  }
  const connection = config.replication.connections[0];
  if (!connection) problems.push('replication.connections: one source connection is required');
  else if (config.syncConfigContent !== null && problems.length === 0) {
    const source = registry.sources.get(connection.type)!;
    problems.push(...(await source.checkSource(connection, config.syncConfigContent)).map((problem) => `source: ${problem}`));
  }
  for (const warning of config.warnings) process.stdout.write(`warning: ${warning}\n`);
  if (problems.length === 0) {
    process.stdout.write(`OK: ${config.source} is valid and the source is ready for replication\n`);
    return;
  }
  for (const problem of problems) process.stdout.write(`${problem}\n`);
  throw new CommanderError(EXIT.FAILURE, 'syncpoint.invalid', `${problems.length} problem(s) found`);
}

/** Retention cleanup, then compaction of every replicating stream (PROTOCOL §8.4). */
async function compactCommand(options: { config?: string }) {
  const config = await requireConfig(options.config);
  const logger = loggerFor(config);
  const storage = await openStorage(config, registry, logger);
  try {
    const retentionMinutes = config.api.parameters.checkpoint_request_retention_minutes;
    const deleted = await storage.deleteExpiredCheckpointRequests(new Date(Date.now() - retentionMinutes * 60_000));
    process.stdout.write(`deleted ${deleted} checkpoint request(s) older than ${retentionMinutes} minutes\n`);
    for (const stream of await storage.getReplicatingStreams()) {
      const streamStorage = await storage.getStreamStorage(stream);
      const started = Date.now();
      const result = await streamStorage.compact({
        onProgress: ({ bucketsDone, opsScanned }) => {
          if (process.stdout.isTTY) process.stdout.write(`\rstream ${stream.id}: ${bucketsDone} buckets, ${opsScanned} ops scanned`);
          else logger.info({ stream_id: stream.id, buckets_done: bucketsDone, ops_scanned: opsScanned }, 'compaction progress');
        }
      });
      if (process.stdout.isTTY) process.stdout.write('\n');
      process.stdout.write(
        `stream ${stream.id}: compacted ${result.bucketsCompacted} bucket(s), ${result.opsMoved} op(s) moved, ${result.opsCleared} cleared in ${((Date.now() - started) / 1000).toFixed(1)} s\n`
      );
    }
  } finally {
    await storage.close();
  }
}

export function buildProgram(): Command {
  const program = new Command('syncpoint')
    .description('Syncpoint: an open sync service that speaks the PowerSync protocol')
    .showHelpAfterError()
    .exitOverride();
  const configOption = () =>
    new Option('-c, --config <file>', 'config file (else POWERSYNC_CONFIG_B64, POWERSYNC_CONFIG_PATH, ./powersync.yaml)');

  program
    .command('start')
    .description('Start the service. With no config at all, boots the embedded Postgres default under ./.syncpoint/')
    .addOption(configOption())
    .option('-p, --port <port>', 'HTTP port (overrides the config)')
    .addOption(
      new Option('-r, --role <role>', 'api: HTTP only; replication: replicate only; unified: both')
        .choices(['api', 'replication', 'unified'])
        .default('unified')
    )
    .action(startCommand);

  program
    .command('migrate')
    .description('Apply (up) or revert the newest (down) storage migration')
    .argument('<direction>', 'up | down')
    .addOption(configOption())
    .action(migrateCommand);

  program
    .command('validate')
    .description('Check the config, the sync rules and the source (wal_level, publication, replica identity); one line per problem')
    .addOption(configOption())
    .action(validateCommand);

  program
    .command('compact')
    .description('Delete expired checkpoint requests, then compact bucket storage (MOVE/CLEAR)')
    .addOption(configOption())
    .action(compactCommand);

  return program;
}

export async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv, { from: 'user' });
    return EXIT.OK;
  } catch (error) {
    if (error instanceof CommanderError) {
      if (error.code === 'commander.helpDisplayed' || error.code === 'commander.version') return EXIT.OK;
      if (error.code === 'syncpoint.usage') process.stderr.write(`error: ${error.message}\n`);
      if (error.code === 'syncpoint.invalid') return EXIT.FAILURE;
      return EXIT.USAGE;
    }
    if (error instanceof ConfigError) {
      process.stderr.write(`${error.message}\n`);
      return EXIT.CONFIG;
    }
    process.stderr.write(`error: ${(error as Error).message ?? error}\n`);
    return EXIT.FAILURE;
  }
}

process.exitCode = await main(process.argv.slice(2));
