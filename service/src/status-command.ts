import {
  buildStatusReport,
  openSource,
  openStorage,
  type Logger,
  type ModuleRegistry,
  type ReplicationSource,
  type ResolvedConfig,
  type StatusReport as CoreStatusReport
} from '@syncpoint/service-core';
import { failure, formatBytes, formatDuration } from './cli-support.js';

export interface StatusReport extends CoreStatusReport {
  config: string;
  storage: CoreStatusReport['storage'] & { type: string };
  source: CoreStatusReport['source'] & { type: string };
}

/** Everything `syncpoint status` shows, read-only, from storage and the source. */
export async function collectStatus(
  config: ResolvedConfig,
  registry: ModuleRegistry,
  logger: Logger
): Promise<StatusReport> {
  const storage = await openStorage(config, registry, logger);
  let source: ReplicationSource | null = null;
  try {
    if (!storage.getStatus) throw failure(`storage type ${config.storage.type} does not report its status`);
    const connection = config.replication.connections[0];
    if (connection) source = await openSource(config, registry, logger);
    const report = await buildStatusReport(storage, source);
    return {
      config: config.source,
      ...report,
      storage: { type: config.storage.type, ...report.storage },
      source: { type: connection?.type ?? 'none', ...report.source }
    };
  } finally {
    await source?.close().catch(() => undefined);
    await storage.close();
  }
}

/** The report as aligned text lines. */
export function formatStatus(report: StatusReport, now = Date.now()): string {
  const lines: string[] = [];
  const row = (label: string, value: string, indent = '') =>
    lines.push(`${indent}${`${label}:`.padEnd(22 - indent.length)} ${value}`);
  row('config', report.config);
  row('storage', `${report.storage.type}, ${formatBytes(report.storage.size_bytes)}`);
  row('source head', report.source.error ? `unreachable (${report.source.error})` : (report.source.head ?? 'unknown'));
  row(
    'checkpoint requests',
    `${report.checkpoint_requests.pending} pending, ${report.checkpoint_requests.total} stored`
  );
  if (report.streams.length === 0)
    lines.push('no replication stream: no sync config was deployed yet (start the service)');
  for (const stream of report.streams) {
    lines.push(`stream ${stream.id} (${stream.state})`);
    const slot = stream.slot;
    if (slot === null) row('replication slot', 'not created yet', '  ');
    else if (slot.exists === false)
      row(
        'replication slot',
        `${slot.name}: MISSING on the source (replication will re-snapshot into a new slot)`,
        '  '
      );
    else if (slot.exists === null) row('replication slot', `${slot.name} (the source cannot report its state)`, '  ');
    else {
      row(
        'replication slot',
        `${slot.name}, ${slot.active ? 'active' : 'inactive'}, confirmed_flush_lsn ${slot.confirmed_flush_lsn ?? 'none'}, ` +
          `retains ${formatBytes(slot.retained_wal_bytes)} of WAL${slot.wal_status ? ` (wal_status ${slot.wal_status})` : ''}`,
        '  '
      );
    }
    row('snapshot', stream.snapshot_done ? 'done' : 'in progress', '  ');
    const checkpoint = stream.last_checkpoint;
    if (checkpoint.op_id === null && checkpoint.lsn === null) row('last checkpoint', 'none yet', '  ');
    else {
      const age = checkpoint.at
        ? ` at ${checkpoint.at} (${formatDuration((now - Date.parse(checkpoint.at)) / 1000)} ago)`
        : '';
      row('last checkpoint', `op ${checkpoint.op_id ?? 0}, lsn ${checkpoint.lsn ?? 'none'}${age}`, '  ');
    }
    row(
      'lag',
      stream.lag_bytes === null
        ? 'unknown'
        : `${stream.lag_bytes} bytes${stream.lag_bytes >= 1000 ? ` (${formatBytes(stream.lag_bytes)})` : ''} behind the source head`,
      '  '
    );
    if (stream.last_error) row('last error', stream.last_error, '  ');
  }
  return lines.join('\n') + '\n';
}
