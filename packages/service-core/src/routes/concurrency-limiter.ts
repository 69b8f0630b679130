import type { RequestHandler } from 'express';

/**
 * Admits `concurrent` requests at a time and queues up to `queued` more; beyond that answers 429 with an
 * empty body at once (PROTOCOL §2.1; the SDKs retry on 429).
 */
export function concurrencyLimiter(options: { concurrent: number; queued: number }): RequestHandler {
  let running = 0;
  const waiting: Array<() => void> = [];

  const release = () => {
    const next = waiting.shift();
    if (next) next();
    else running--;
  };

  return (req, res, next) => {
    const start = () => {
      let released = false;
      const done = () => {
        if (released) return;
        released = true;
        release();
      };
      res.once('finish', done);
      res.once('close', done);
      next();
    };
    if (running < options.concurrent) {
      running++;
      start();
    } else if (waiting.length < options.queued) {
      const entry = () => {
        if (req.socket.destroyed) return release(); // client gave up while queued
        start();
      };
      waiting.push(entry);
    } else {
      res.status(429).end();
    }
  };
}
