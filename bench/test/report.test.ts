import { describe, expect, it } from 'vitest';
import { formatTable, verdict } from '../src/lib/report.js';
import { percentile, summarizeLatencies } from '../src/lib/stats.js';
import { parseArgs } from '../src/run.js';
import { BENCHMARKS } from '../src/benchmarks.js';

describe('stats', () => {
  it('takes nearest-rank percentiles', () => {
    const sorted = Float64Array.from({ length: 100 }, (_, i) => i + 1);
    expect(percentile(sorted, 50)).toBe(50);
    expect(percentile(sorted, 99)).toBe(99);
    expect(percentile(sorted, 100)).toBe(100);
    expect(percentile([7], 50)).toBe(7);
    expect(percentile([], 50)).toBeNaN();
  });

  it('summarizes unsorted latencies', () => {
    expect(summarizeLatencies([3, 1, 2, 4])).toMatchObject({ count: 4, p50: 2, p99: 4, max: 4, mean: 2.5 });
  });
});

describe('report', () => {
  it('prints PASS/MISS against ≥ and ≤ targets', () => {
    expect(verdict({ label: 'a', value: 6123, unit: 'req/s', target: { comparison: '>=', value: 5000 } })).toBe('PASS');
    expect(verdict({ label: 'a', value: 4999, unit: 'req/s', target: { comparison: '>=', value: 5000 } })).toBe('MISS');
    expect(verdict({ label: 'b', value: 4, unit: 'ms', target: { comparison: '<=', value: 4 } })).toBe('PASS');
    expect(verdict({ label: 'b', value: Number.NaN, unit: 'ms', target: { comparison: '<=', value: 4 } })).toBe('MISS');
    expect(verdict({ label: 'c', value: 1, unit: '' })).toBe('');
  });

  it('lays out figure beside target', () => {
    const table = formatTable([
      {
        label: 'throughput @64 clients',
        value: 6123,
        unit: 'req/s',
        digits: 0,
        target: { comparison: '>=', value: 5000 }
      },
      { label: 'latency p50 @1', value: 3.2, unit: 'ms', target: { comparison: '<=', value: 4 } }
    ]);
    expect(table).toContain('throughput @64 clients   6,123 req/s   target ≥ 5,000 req/s   PASS');
    expect(table).toMatch(/latency p50 @1 +3\.20 ms +target ≤ 4 ms +PASS/);
  });
});

describe('runner', () => {
  it('separates names from flags and ignores a pnpm "--"', () => {
    const parsed = parseArgs(['--', 'checkpoint', '--duration=2', '--client=inline']);
    expect(parsed.names).toEqual(['checkpoint']);
    expect(Object.fromEntries(parsed.flags)).toEqual({ duration: '2', client: 'inline' });
  });

  it('registers the checkpoint benchmark', () => {
    expect(BENCHMARKS.map((benchmark) => benchmark.name)).toContain('checkpoint');
    for (const benchmark of BENCHMARKS) expect(benchmark.description.length).toBeGreaterThan(0);
  });
});
