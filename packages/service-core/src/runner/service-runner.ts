import { once } from 'node:events';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createTokenVerifier } from '../auth/client-auth.js';
import { emitMarkerForPendingRequests, WriteCheckpointBatcher } from '../checkpoints/write-checkpoint-batcher.js';
import { startCheckpointRetention } from '../checkpoints/checkpoint-retention.js';
import { startReplicationElection } from './replication-election.js';
import { parseSyncRules } from '@syncpoint/sync-rules';
import { ConfigError, type ResolvedConfig } from '../config/config-loader.js';
import type { Logger } from '../logger.js';
import type { ModuleRegistry, ReplicatorContext } from '../modules.js';
import express from 'express';
import { lsnDistance } from '@syncpoint/codecs';
import { ServiceMetrics } from '../metrics.js';
import { createHttpApp, metricsHandler, type HttpAppOptions } from '../routes/http-app.js';
import { SyncConnections } from '../routes/sync-stream-route.js';
import { attachSyncWebSocket } from '../routes/sync-websocket.js';
import { CheckpointWatcher } from '../sync/checkpoint-watcher.js';
import { ProbeState, startReadinessChecks } from '../routes/probe-routes.js';
import type { BucketStorage } from '../storage/bucket-storage.js';
import type { ReplicationSource } from '../source/replication-source.js';

/** Period of the metrics gauges too costly to read per scrape. */
const METRICS_REFRESH_MS = 15_000;

export interface RunningService {
  /** Base URL, e.g. http://127.0.0.1:8080 */
  url: string;
  port: number;
  storage: BucketStorage;
  source: ReplicationSource;
  /** The process's checkpoint watcher (absent in the replication role); read-only, for metrics and tests. */
  readonly watcher?: CheckpointWatcher;
  /** Open sync connections (absent in the replication role); read-only, for metrics and tests. */
  readonly syncConnections?: SyncConnections;
  readonly metrics: ServiceMetrics;
  stop(): Promise<void>;
}

/** Refuse to start on sync rules with errors, listing every problem with its place (PROTOCOL §11). */
export function assertValidSyncConfig(content: string): void {
  const { problems } = checkSyncConfig(content);
  if (problems.length > 0) throw new ConfigError(problems);
}

/** A sync config's errors (which block deployment) and warnings (which never do), one line each. */
export function checkSyncConfig(content: string): { problems: string[]; warnings: string[] } {
  const parsed = parseSyncRules(content);
  return {
    problems: parsed.errors.map((error) => `sync config: ${error.message}`),
    warnings: parsed.warnings.map((warning) => `sync config: ${warning.message}`)
  };
}

/** Build the storage the config names, through the module that owns its `type`. */
export async function openStorage(
  config: ResolvedConfig,
  registry: ModuleRegistry,
  logger: Logger
): Promise<BucketStorage> {
  const module = registry.storage.get(config.storage.type);
  if (!module) throw new Error(`no storage module for type ${config.storage.type}`);
  return module.createStorage(config.storage, { logger, configDir: config.configDir });
}

export async function openSource(
  config: ResolvedConfig,
  registry: ModuleRegistry,
  logger: Logger
): Promise<ReplicationSource> {
  const connection = config.replication.connections[0];
  if (!connection) throw new Error('replication.connections: one source connection is required');
  const module = registry.sources.get(connection.type);
  if (!module) throw new Error(`no source module for type ${connection.type}`);
  return module.createSource(connection, { logger, configDir: config.configDir });
}

/**
 * Start the API: storage (migrated unless disabled), the sync config deployed, the source connection, and the
 * HTTP server. `stop()` closes the server first, so in-flight requests finish before their pools close.
 */
export type ServiceRole = 'api' | 'replication' | 'unified';

export async function startService(
  config: ResolvedConfig,
  options: {
    registry: ModuleRegistry;
    logger: Logger;
    host?: string;
    role?: ServiceRole;
    /** Sync stream keepalive period (default 18–20 s, PROTOCOL §7.7, STREAMS §5.9); tests shorten it. */
    syncKeepaliveMs?: () => number;
    /** Period of the checkpoint-request retention job in the replication process (default 5 min). */
    retentionIntervalMs?: number;
    /** Period of the readiness checks (default `READINESS_CHECK_MS`, 5 s); tests shorten it. */
    readinessCheckMs?: number;
    /** Initial snapshot progress (the CLI shows it on a terminal); see `ReplicatorContext`. */
    onSnapshotProgress?: ReplicatorContext['onSnapshotProgress'];
  }
): Promise<RunningService> {
  const { registry, logger } = options;
  const role = options.role ?? 'unified';
  for (const warning of config.warnings) logger.warn(warning);

  const probes = new ProbeState(role !== 'api');
  const storage = await openStorage(config, registry, logger);
  const closers: Array<() => Promise<void>> = [() => storage.close()];
  const closeAll = async () => {
    for (const close of closers.reverse())
      await close().catch((error) => logger.warn({ err: error }, 'error while closing'));
  };
  try {
    if (!config.migrations.disable_auto_migration) {
      const { applied } = await storage.migrate('up');
      if (applied.length > 0) logger.info({ migrations: applied }, 'storage migrated');
    }
    if (config.syncConfigContent !== null) {
      assertValidSyncConfig(config.syncConfigContent);
      const stream = await storage.deploySyncConfig(config.syncConfigContent);
      logger.info({ stream_id: stream.id, state: stream.state }, 'sync config deployed');
    } else {
      logger.warn('no sync config is configured: checkpoint requests are answered with PSYNC_S2302');
    }
    const source = await openSource(config, registry, logger);
    closers.push(() => source.close());
    let election: ReturnType<typeof startReplicationElection> | undefined;
    if (role !== 'api') {
      // One replication process per storage: the storage's replication lock elects it (issue 6 item 5).
      const connection = config.replication.connections[0]!;
      election = startReplicationElection({
        storage,
        logger,
        onStandby: () => probes.touch(),
        work: () => {
          const replicator = registry.sources.get(connection.type)!.createReplicator(connection, {
            storage,
            logger: logger.child({ component: 'replication' }),
            configDir: config.configDir,
            onAlive: () => probes.touch(),
            onSnapshotProgress: options.onSnapshotProgress
          });
          replicator.start();
          const stopRetention = startCheckpointRetention({
            storage,
            retentionMinutes: config.api.parameters.checkpoint_request_retention_minutes,
            intervalMs: options.retentionIntervalMs,
            logger: logger.child({ component: 'retention' })
          });
          return Promise.resolve(async () => {
            await stopRetention();
            await replicator.stop();
          });
        }
      });
      const running = election;
      closers.push(() => running.stop());
    }
    const verifier = await createTokenVerifier(config.client_auth, { logger });
    const metrics = new ServiceMetrics();
    const batcher = new WriteCheckpointBatcher({ storage, source, metrics });

    let sync: HttpAppOptions['sync'];
    if (role !== 'replication') {
      const watcher = new CheckpointWatcher(storage, logger);
      await watcher.start();
      closers.push(() => watcher.stop());
      const connections = new SyncConnections();
      const parameters = config.api.parameters;
      sync = {
        connections,
        dependencies: {
          storage,
          watcher,
          verifier,
          logger,
          limits: {
            maxBuckets: parameters.max_buckets_per_connection,
            maxParameterResults: parameters.max_parameter_query_results,
            maxConnections: parameters.max_concurrent_connections,
            maxDataFetchConcurrency: parameters.max_data_fetch_concurrency
          },
          keepaliveMs: options.syncKeepaliveMs,
          metrics
        }
      };
      metrics.observeGauge('syncpoint_open_sync_streams', 'Sync streams open in this process', () => connections.count);
    }
    // getStatus counts rows and sizes relations: read on a timer, not per scrape (issue 12 item 6).
    const stopPendingGauge = metrics.observeGaugeOnTimer(
      'syncpoint_pending_checkpoint_requests',
      'Checkpoint requests replication has not reached yet',
      async () => (storage.getStatus ? (await storage.getStatus()).checkpointRequests.pending : null),
      METRICS_REFRESH_MS
    );
    closers.push(() => Promise.resolve(stopPendingGauge()));
    metrics.observeGauge(
      'syncpoint_replication_lag_bytes',
      'Source WAL bytes between the source head and the served checkpoint',
      async () => {
        const served = await storage.getServingCheckpoint();
        if (!served?.checkpoint.lsn) return null;
        return Number(lsnDistance(served.checkpoint.lsn, await source.currentHead()));
      }
    );

    const admin = {
      tokens: config.api.tokens,
      storage,
      source,
      role,
      syncStreams: sync && {
        open: () => sync.connections.count,
        max: config.api.parameters.max_concurrent_connections
      }
    };
    const app = createHttpApp({
      logger,
      probes,
      verifier,
      batcher,
      sync,
      admin,
      metrics,
      serveApi: role !== 'replication'
    });
    const prometheusPort = (config.telemetry as { prometheus_port?: number } | undefined)?.prometheus_port;
    if (prometheusPort !== undefined) {
      // A separate port for scrapers, when configured (PROTOCOL §10 telemetry.prometheus_port).
      const metricsServer = express()
        .get('/metrics', metricsHandler(metrics))
        .listen(prometheusPort, options.host ?? '0.0.0.0');
      await once(metricsServer, 'listening');
      closers.push(() => new Promise<void>((resolve) => metricsServer.close(() => resolve())));
    }
    const server: Server = app.listen(config.port, options.host ?? '0.0.0.0');
    if (sync) attachSyncWebSocket(server, sync.dependencies, sync.connections); // RSocket over WebSocket (§7.10); closeAll closes it
    await once(server, 'listening');
    closers.push(
      () =>
        new Promise<void>((resolve) => {
          sync?.connections.closeAll(); // open streams end first, so the server can close
          server.close(() => resolve());
          server.closeIdleConnections();
        })
    );
    if (role !== 'replication') {
      // Not awaited: an unreachable source must not delay the start (the heartbeat marker still comes later).
      emitMarkerForPendingRequests({ storage, source, logger }).catch((error) =>
        logger.warn({ err: error }, 'could not emit a marker for pending checkpoint requests; the next heartbeat will')
      );
    }
    probes.started = true;
    probes.ready = true;
    // Not ready while storage is unreachable; the replicating process also while its source is unreachable or its
    // replication stopped reporting progress. A standby only needs storage (it takes over through it).
    const stopReadinessChecks = startReadinessChecks(
      probes,
      async () => {
        await storage.getServingCheckpoint();
        if (election?.isLeader()) {
          await source.currentHead();
          if (!probes.live()) throw new Error('replication has not reported progress for 10 s');
        }
      },
      {
        intervalMs: options.readinessCheckMs,
        onChange: (ready, error) =>
          ready
            ? logger.info('ready again: storage and replication reachable')
            : logger.warn({ err: error }, 'not ready: a readiness check failed')
      }
    );
    closers.push(() => Promise.resolve(stopReadinessChecks()));
    const port = (server.address() as AddressInfo).port;
    const url = `http://${urlHost(options.host)}:${port}`;
    logger.info({ url, role }, 'Syncpoint is listening');
    return {
      url,
      port,
      storage,
      source,
      metrics,
      watcher: sync?.dependencies.watcher,
      syncConnections: sync?.connections,
      stop: closeAll
    };
  } catch (error) {
    await closeAll();
    throw error;
  }
}

/** How to reach a server listening on `host` from this machine: a wildcard address is reached over loopback. */
function urlHost(host: string | undefined): string {
  if (host === undefined || host === '0.0.0.0') return '127.0.0.1';
  if (host === '::') return '[::1]';
  return host.includes(':') ? `[${host}]` : host;
}
