import type { IncomingMessage } from 'node:http';
import type { RequestHandler } from 'express';

export interface ConcurrencyLimits {
  concurrent: number;
  queued: number;
}

/**
 * Admits `concurrent` requests at a time and queues up to `queued` more; the caller answers the excess with 429
 * (PROTOCOL §2.1; the SDKs retry on 429). Shared by the middleware below and the checkpoint-request fast path, which
 * releases its slot itself once it has answered (no per-request listeners).
 */
export class ConcurrencyLimit {
  private running = 0;
  private readonly waiting: Array<() => void> = [];

  constructor(private readonly limits: ConcurrencyLimits) {}

  /**
   * Runs `start` now or once a slot frees; `start` must call `release` exactly once when the request is done. Returns
   * false (and never runs `start`) when the queue is full. A queued request whose client disconnected is skipped.
   */
  admit(req: IncomingMessage, start: () => void): boolean {
    if (this.running < this.limits.concurrent) {
      this.running++;
      start();
      return true;
    }
    if (this.waiting.length >= this.limits.queued) return false;
    this.waiting.push(() => {
      if (req.socket.destroyed) return this.release(); // client gave up while queued
      start();
    });
    return true;
  }

  /** Frees a slot: hands it to the next queued request, if any. */
  release(): void {
    const next = this.waiting.shift();
    if (next) next();
    else this.running--;
  }
}

/** Express middleware over a `ConcurrencyLimit`: the slot is freed when the response finishes or the connection closes. */
export function concurrencyLimiter(limits: ConcurrencyLimits | ConcurrencyLimit): RequestHandler {
  const limit = limits instanceof ConcurrencyLimit ? limits : new ConcurrencyLimit(limits);
  return (req, res, next) => {
    const admitted = limit.admit(req, () => {
      let released = false;
      const done = () => {
        if (released) return;
        released = true;
        limit.release();
      };
      res.once('finish', done);
      res.once('close', done);
      next();
    });
    if (!admitted) res.status(429).end();
  };
}
