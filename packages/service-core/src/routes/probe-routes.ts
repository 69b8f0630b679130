import { Router } from 'express';

/** Process state behind the probes (PROTOCOL §12). */
export class ProbeState {
  started = false;
  ready = false;
  /** Last time the replication loop reported progress; undefined in an API-only process. */
  touchedAt: Date | undefined;
  constructor(readonly replicates: boolean) {}

  touch() {
    this.touchedAt = new Date();
  }

  live(): boolean {
    if (!this.replicates) return true;
    return this.touchedAt !== undefined && Date.now() - this.touchedAt.getTime() < 10_000;
  }

  toJSON() {
    return { ready: this.ready, started: this.started, touched_at: (this.touchedAt ?? new Date(0)).toISOString() };
  }
}

export function probeRoutes(state: ProbeState): Router {
  const router = Router();
  router.get('/probes/startup', (_req, res) => void res.status(state.started ? 200 : 400).json(state));
  router.get('/probes/readiness', (_req, res) => void res.status(state.ready ? 200 : 400).json(state));
  router.get('/probes/liveness', (_req, res) => void res.status(state.live() ? 200 : 400).json(state));
  return router;
}

/** How often readiness is re-checked, and how long one check may take (the probe itself only reads the result). */
export const READINESS_CHECK_MS = 5_000;

/**
 * Issue 12 item 6: readiness tells the truth. Every `intervalMs` the process's dependencies are checked (`check`
 * throws or times out when one is unreachable) and `state.ready` follows the result, so a load balancer stops sending
 * requests while storage is unreachable and sends them again after recovery. Checked on a timer rather than per probe
 * request: probes stay O(1) and a probe flood cannot load storage. Returns the stop function.
 */
export function startReadinessChecks(
  state: ProbeState,
  check: () => Promise<void>,
  options: { intervalMs?: number; onChange?: (ready: boolean, error?: unknown) => void } = {}
): () => void {
  const intervalMs = options.intervalMs ?? READINESS_CHECK_MS;
  let running = false;
  const run = async () => {
    if (running) return;
    running = true;
    let timeout: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        check(),
        new Promise<never>((_resolve, reject) => {
          timeout = setTimeout(() => reject(new Error(`readiness check took over ${intervalMs} ms`)), intervalMs);
        })
      ]);
      if (!state.ready) options.onChange?.(true);
      state.ready = true;
    } catch (error) {
      if (state.ready) options.onChange?.(false, error);
      state.ready = false;
    } finally {
      clearTimeout(timeout);
      running = false;
    }
  };
  const timer = setInterval(() => void run(), intervalMs);
  timer.unref();
  return () => clearInterval(timer);
}
