import type { SnapshotTableProgress } from '@syncpoint/service-core';
import { formatDuration } from './cli-support.js';

/** One progress line for a terminal: `snapshot public.todos: 30,000 / 120,000 rows (25%), 41,200 rows/s, ETA 2 s`. */
export function formatSnapshotProgress(progress: SnapshotTableProgress): string {
  const total = Math.max(progress.estimatedTotal, progress.rowsDone);
  const percent = total === 0 ? 100 : Math.floor((progress.rowsDone / total) * 100);
  const eta = progress.etaSeconds === null ? '' : `, ETA ${formatDuration(progress.etaSeconds)}`;
  return `snapshot ${progress.table}: ${progress.rowsDone.toLocaleString('en')} / ~${total.toLocaleString('en')} rows (${percent}%), ${progress.rowsPerSecond.toLocaleString('en')} rows/s${eta}`;
}

/**
 * Snapshot progress as a single updating line on a terminal (`\r` + erase line); a new table starts a new line.
 * Off a terminal the caller passes nothing and replication logs structured progress lines instead.
 */
export function terminalSnapshotProgress(out: NodeJS.WriteStream): (progress: SnapshotTableProgress) => void {
  let table: string | undefined;
  return (progress) => {
    if (table !== undefined && table !== progress.table) out.write('\n');
    table = progress.table;
    out.write(`\r\x1b[K${formatSnapshotProgress(progress)}`);
  };
}
