import { existsSync } from 'node:fs';
import { rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Command, CommanderError, Option } from 'commander';
import {
  checkSyncConfig,
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
import { HEAP_LIMIT_ENV, HEAP_LIMIT_REASON_ENV, watchSupervisor } from './cli-heap-limit.js';
import { EXIT, hostOption, positiveIntegerOption } from './cli-support.js';
import { signDevToken } from './dev-token.js';
import { startEmbeddedDefault, type EmbeddedDefault } from './embedded-default.js';
import { fetchFirstCheckpoint, formatCheckpoint } from './fetch-command.js';
import { createModuleRegistry } from './module-registry.js';
import { terminalSnapshotProgress } from './progress-line.js';
import { collectStatus, formatStatus } from './status-command.js';
import { devSigningKey } from './token-command.js';

const registry = createModuleRegistry();

/** Where a running embedded default leaves its effective config, for `status` in the same folder. */
function embeddedConfigFile(root = process.env.INIT_CWD ?? process.cwd()): string {
  return path.join(root, '.syncpoint', 'running-config.yaml');
}

async function requireConfig(
  configPath: string | undefined,
  options: { embeddedFallback?: boolean } = {}
): Promise<ResolvedConfig> {
  const config = await loadConfig({ configPath, registry });
  if (config) return config;
  if (options.embeddedFallback && existsSync(embeddedConfigFile())) {
    return (await loadConfig({ configPath: embeddedConfigFile(), registry }))!;
  }
  throw new ConfigError([
    'no config found: pass -c <file>, set POWERSYNC_CONFIG_PATH or POWERSYNC_CONFIG_B64, or add ./powersync.yaml'
  ]);
}

function loggerFor(config: ResolvedConfig | null): Logger {
  return createLogger({ level: config?.system.logging.level ?? (process.env.SYNCPOINT_LOG_LEVEL as never) ?? 'info' });
}

/**
 * The first SIGINT, SIGTERM or SIGHUP (or the supervising parent's death) starts the shutdown. Later ones are logged
 * and otherwise ignored: a Ctrl-C reaches both a supervised child and its parent, which forwards it once more, and
 * the second must not cut the graceful shutdown short.
 */
async function waitForShutdownSignal(logger: Logger): Promise<string> {
  return new Promise((resolve) => {
    let received: string | undefined;
    const onSignal = (signal: string) => {
      if (received) logger.info({ signal }, 'already shutting down');
      else resolve((received = signal));
    };
    for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(signal, onSignal);
    watchSupervisor(() => {
      logger.warn('the supervising syncpoint process is gone; shutting down');
      onSignal('supervisor exit');
    });
  });
}

async function startCommand(options: { config?: string; port?: string; host?: string; role: ServiceRole }) {
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
  const heapLimitMb = process.env[HEAP_LIMIT_ENV];
  if (heapLimitMb !== undefined)
    logger.info(
      { pid: process.pid, heap_limit_mb: Number(heapLimitMb), reason: process.env[HEAP_LIMIT_REASON_ENV] },
      'heap limit set (override: NODE_OPTIONS=--max-old-space-size=<MB>)'
    );
  let service;
  try {
    service = await startService(config, {
      registry,
      logger,
      host: options.host,
      role: options.role,
      // On a terminal the initial snapshot shows one updating line; otherwise replication logs structured progress.
      onSnapshotProgress: process.stderr.isTTY ? terminalSnapshotProgress(process.stderr) : undefined
    });
  } catch (error) {
    await embedded?.postgres.stop();
    throw error;
  }

  if (embedded) {
    // The effective config (with the embedded server's port), so `syncpoint status` in this folder finds it.
    await writeFile(embeddedConfigFile(), embedded.configText.replace(/^port: .*$/m, `port: ${service.port}`), {
      mode: 0o600
    });
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

  const signal = await waitForShutdownSignal(logger);
  logger.info({ signal }, 'shutting down');
  await service.stop();
  if (embedded) await rm(embeddedConfigFile(), { force: true });
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
  const warnings = [...config.warnings];
  if (config.syncConfigContent === null)
    problems.push('sync config: none is configured (sync_config.path or sync_config.content)');
  else {
    const checked = checkSyncConfig(config.syncConfigContent);
    problems.push(...checked.problems);
    warnings.push(...checked.warnings);
  }
  const connection = config.replication.connections[0];
  if (!connection) problems.push('replication.connections: one source connection is required');
  else if (config.syncConfigContent !== null && problems.length === 0) {
    const source = registry.sources.get(connection.type)!;
    problems.push(
      ...(await source.checkSource(connection, config.syncConfigContent)).map((problem) => `source: ${problem}`)
    );
  }
  for (const warning of warnings) process.stdout.write(`warning: ${warning}\n`);
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
          if (process.stdout.isTTY)
            process.stdout.write(`\rstream ${stream.id}: ${bucketsDone} buckets, ${opsScanned} ops scanned`);
          else
            logger.info(
              { stream_id: stream.id, buckets_done: bucketsDone, ops_scanned: opsScanned },
              'compaction progress'
            );
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

/** Replication slot, lag, last checkpoint, pending checkpoint requests and storage size. */
async function statusCommand(options: { config?: string; json?: boolean }) {
  const config = await requireConfig(options.config, { embeddedFallback: true });
  const report = await collectStatus(config, registry, loggerFor(config));
  process.stdout.write(options.json ? JSON.stringify(report, null, 2) + '\n' : formatStatus(report));
}

/** A dev token signed with the configured HMAC key (or the embedded default's key). */
async function tokenCommand(options: { sub: string; config?: string; expiresIn: string }) {
  if (options.sub.trim() === '') throw new CommanderError(EXIT.USAGE, 'syncpoint.usage', '--sub must not be empty');
  const config = await loadConfig({ configPath: options.config, registry });
  const { key, audience, maxLifetime } = await devSigningKey(config, process.env.INIT_CWD ?? process.cwd());
  const expiresInSeconds = positiveIntegerOption('--expires-in', options.expiresIn, maxLifetime);
  process.stdout.write(`${await signDevToken(key, { sub: options.sub, audience, expiresInSeconds })}\n`);
}

/** What a client would be told first: the checkpoint, its write checkpoint and every bucket's checksum. */
async function fetchCommand(options: {
  token: string;
  url: string;
  clientId?: string;
  timeout: string;
  json?: boolean;
}) {
  const timeoutMs = positiveIntegerOption('--timeout', options.timeout) * 1000;
  const checkpoint = await fetchFirstCheckpoint({
    url: options.url,
    token: options.token,
    clientId: options.clientId,
    timeoutMs
  });
  process.stdout.write(options.json ? JSON.stringify(checkpoint, null, 2) + '\n' : formatCheckpoint(checkpoint));
}

function buildProgram(): Command {
  const program = new Command('syncpoint')
    .description('Syncpoint: an open sync service that speaks the PowerSync protocol')
    .showHelpAfterError()
    .exitOverride();
  const configOption = () =>
    new Option(
      '-c, --config <file>',
      'config file (else POWERSYNC_CONFIG_B64, POWERSYNC_CONFIG_PATH, ./powersync.yaml)'
    );

  program
    .command('start')
    .description('Start the service. With no config at all, boots the embedded Postgres default under ./.syncpoint/')
    .addOption(configOption())
    .option('-p, --port <port>', 'HTTP port (overrides the config)')
    .option(
      '--host <address>',
      'IP address to listen on, e.g. 127.0.0.1 for this machine only (default 0.0.0.0: every interface)',
      hostOption
    )
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
    .description(
      'Check the config, the sync rules and the source (wal_level, publication, replica identity); one line per problem'
    )
    .addOption(configOption())
    .action(validateCommand);

  program
    .command('compact')
    .description('Delete expired checkpoint requests, then compact bucket storage (MOVE/CLEAR)')
    .addOption(configOption())
    .action(compactCommand);

  program
    .command('status')
    .description(
      'Replication slot, lag behind the source, last checkpoint, pending checkpoint requests and storage size ' +
        '(with no config: the embedded default running in this folder)'
    )
    .addOption(configOption())
    .option('--json', 'print the status as JSON')
    .action(statusCommand);

  program
    .command('token')
    .description(
      'Print a dev client token signed with the first HMAC key of client_auth.jwks (audience: the first configured one); ' +
        'with no config, the embedded default key in ./.syncpoint/dev-key.json'
    )
    .requiredOption('--sub <user>', 'the user id (JWT sub)')
    .addOption(configOption())
    .option('--expires-in <seconds>', 'token lifetime in seconds', '3600')
    .action(tokenCommand);

  program
    .command('fetch')
    .description(
      'Open /sync/stream like a tiny client and print the first checkpoint: last_op_id, write_checkpoint, bucket checksums'
    )
    .requiredOption('--token <jwt>', 'client token (see `syncpoint token`)')
    .option('--url <url>', 'service base URL', 'http://127.0.0.1:8080')
    .option('--client-id <id>', "client id, so write_checkpoint shows this client's acknowledged checkpoint request")
    .option('--timeout <seconds>', 'give up when no checkpoint arrives in time', '30')
    .option('--json', 'print the checkpoint as JSON')
    .action(fetchCommand);

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
      if (error.code === 'syncpoint.failure') {
        process.stderr.write(`error: ${error.message}\n`);
        return EXIT.FAILURE;
      }
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
