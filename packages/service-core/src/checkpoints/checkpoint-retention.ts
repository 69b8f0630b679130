import type { Logger } from '../logger.js';
import type { WriteCheckpointAPI } from '../storage/write-checkpoint-api.js';

/** How often the replication process deletes expired checkpoint requests (besides `syncpoint compact`). */
export const RETENTION_INTERVAL_MS = 5 * 60_000;

/**
 * Periodic retention of client-requested checkpoint records (PROTOCOL §4.10, issue 6 item 3): every
 * `intervalMs`, records last requested more than `retentionMinutes` ago are deleted. Storage never deletes a
 * pending or a generated (legacy) record. Runs in the replication process; returns a stop function.
 */
export function startCheckpointRetention(options: {
  storage: Pick<WriteCheckpointAPI, 'deleteExpiredCheckpointRequests'>;
  retentionMinutes: number;
  intervalMs?: number;
  logger: Logger;
}): () => Promise<void> {
  let running: Promise<void> | null = null;
  const run = () => {
    if (running) return;
    running = (async () => {
      const cutoff = new Date(Date.now() - options.retentionMinutes * 60_000);
      try {
        const deleted = await options.storage.deleteExpiredCheckpointRequests(cutoff);
        if (deleted > 0)
          options.logger.info({ deleted, cutoff: cutoff.toISOString() }, 'expired checkpoint requests deleted');
      } catch (error) {
        options.logger.warn({ err: error }, 'checkpoint request retention failed; retrying at the next interval');
      } finally {
        running = null;
      }
    })();
  };
  const timer = setInterval(run, options.intervalMs ?? RETENTION_INTERVAL_MS);
  timer.unref?.();
  return async () => {
    clearInterval(timer);
    await running;
  };
}
