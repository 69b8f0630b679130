import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { CheckpointOutcome } from './storage/write-checkpoint-api.js';

/** Acknowledgement latency is tracked for at most this many outstanding requests per process. */
const MAX_TRACKED_REQUESTS = 100_000;

/**
 * Prometheus metrics of one service instance (its own registry, so several instances in one process don't collide).
 * Gauges that describe shared state are read when scraped, through the callbacks given to `observe*`.
 */
export class ServiceMetrics {
  readonly registry = new Registry();

  readonly checkpointRequests = new Counter({
    name: 'syncpoint_checkpoint_requests_total',
    help: 'Checkpoint requests handled, by outcome: advanced (a new id), duplicate (the stored id again), stale (a lower id), generated (legacy route)',
    labelNames: ['outcome'] as const,
    registers: [this.registry]
  });

  readonly acknowledgementLatency = new Histogram({
    name: 'syncpoint_checkpoint_request_ack_seconds',
    help: 'Time from storing a checkpoint request to acknowledging it on a sync stream of this process',
    buckets: [0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30],
    registers: [this.registry]
  });

  readonly markersEmitted = new Counter({
    name: 'syncpoint_source_markers_total',
    help: 'Source markers emitted for checkpoint requests',
    registers: [this.registry]
  });

  readonly storageOperationSeconds = new Histogram({
    name: 'syncpoint_storage_operation_seconds',
    help: 'Duration of bucket storage operations',
    labelNames: ['operation'] as const,
    buckets: [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 5],
    registers: [this.registry]
  });

  /** Store time of the newest request per full user id, until a stream acknowledges it. */
  private readonly outstanding = new Map<string, { id: bigint; storedAt: number }>();

  /** A gauge whose value is read from `read` on every scrape; a failing read leaves the gauge unset. */
  observeGauge(name: string, help: string, read: () => Promise<number | null> | number | null): void {
    new Gauge({
      name,
      help,
      registers: [this.registry],
      async collect() {
        // Issue 12 item 6: a gauge that cannot be read is removed from the scrape, never left at its last value.
        try {
          const value = await read();
          if (value === null) this.remove();
          else this.set(value);
        } catch {
          this.remove(); // a scrape must not fail because storage is briefly unreachable
        }
      }
    });
  }

  /**
   * A gauge whose read is too costly for every scrape (a `count(*)`, relation sizes): read every `intervalMs` in the
   * background, so a scrape costs O(1). A failed read removes the gauge until the next good one. Returns the stop.
   */
  observeGaugeOnTimer(name: string, help: string, read: () => Promise<number | null>, intervalMs: number): () => void {
    let latest: number | null = null;
    const refresh = () =>
      read().then(
        (value) => (latest = value),
        () => (latest = null)
      );
    void refresh();
    const timer = setInterval(() => void refresh(), intervalMs);
    timer.unref();
    this.observeGauge(name, help, () => latest);
    return () => clearInterval(timer);
  }

  async time<T>(operation: string, run: () => Promise<T>): Promise<T> {
    const stop = this.storageOperationSeconds.startTimer({ operation });
    try {
      return await run();
    } finally {
      stop();
    }
  }

  requestStored(fullUserId: string, id: bigint, outcome: CheckpointOutcome): void {
    this.checkpointRequests.inc({ outcome });
    if (outcome === 'stale' || outcome === 'duplicate') return;
    if (this.outstanding.size >= MAX_TRACKED_REQUESTS) this.outstanding.delete(this.outstanding.keys().next().value!);
    this.outstanding.delete(fullUserId); // re-insert at the end: the map stays ordered by store time
    this.outstanding.set(fullUserId, { id, storedAt: performance.now() });
  }

  requestAcknowledged(fullUserId: string, id: bigint): void {
    const entry = this.outstanding.get(fullUserId);
    if (!entry || id < entry.id) return;
    this.outstanding.delete(fullUserId);
    this.acknowledgementLatency.observe((performance.now() - entry.storedAt) / 1000);
  }

  async render(): Promise<{ contentType: string; body: string }> {
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }
}
