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
