import { describe, expect, it } from 'vitest';
import { ServiceMetrics } from '../src/metrics.js';

/** Issue 12 item 6: gauges that cannot be read disappear from the scrape; costly gauges are read on a timer. */
describe('metrics gauges', () => {
  const sample = async (metrics: ServiceMetrics, name: string) =>
    (await metrics.registry.metrics()).split('\n').find((line) => line.startsWith(`${name} `)) ?? null;

  it('a gauge whose read fails or has no value is removed, not left at its last value', async () => {
    const metrics = new ServiceMetrics();
    let next: () => number | null = () => 7;
    metrics.observeGauge('test_gauge', 'a test gauge', () => next());
    expect(await sample(metrics, 'test_gauge')).toBe('test_gauge 7');
    next = () => {
      throw new Error('storage unreachable');
    };
    expect(await sample(metrics, 'test_gauge')).toBeNull();
    next = () => 9;
    expect(await sample(metrics, 'test_gauge')).toBe('test_gauge 9');
    next = () => null;
    expect(await sample(metrics, 'test_gauge')).toBeNull();
  });

  it('a timer gauge is read in the background, never by the scrape', async () => {
    const metrics = new ServiceMetrics();
    let reads = 0;
    const stop = metrics.observeGaugeOnTimer(
      'test_timer_gauge',
      'a costly gauge',
      () => Promise.resolve(++reads),
      60_000
    );
    await new Promise((resolve) => setTimeout(resolve, 10));
    for (let i = 0; i < 5; i++) expect(await sample(metrics, 'test_timer_gauge')).toBe('test_timer_gauge 1');
    expect(reads).toBe(1);
    stop();
  });
});
