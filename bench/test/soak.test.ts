import { describe, expect, it } from 'vitest';
import { formatTable } from '../src/lib/report.js';
import { summarizeLatencies } from '../src/lib/stats.js';
import {
  AckTracker,
  MB,
  describeOperations,
  leastSquaresSlope,
  parseSoakOptions,
  parseStorageOperations,
  rssSlopeMbPerMinute,
  soakJson,
  soakPassed,
  soakRows,
  windowMinima,
  type SoakFigures
} from '../src/soak-report.js';

describe('least-squares slope', () => {
  it('recovers the slope of a line, and of noise around one', () => {
    expect(leastSquaresSlope([0, 1, 2, 3].map((x) => ({ x, y: 5 + 2 * x })))).toBeCloseTo(2, 12);
    // Symmetric noise (+1, -1, -1, +1) around y = 3x does not move the fitted slope.
    const noisy = [1, -1, -1, 1].map((noise, x) => ({ x, y: 3 * x + noise }));
    expect(leastSquaresSlope(noisy)).toBeCloseTo(3, 12);
    expect(
      leastSquaresSlope([
        { x: 0, y: 7 },
        { x: 10, y: 7 }
      ])
    ).toBe(0);
  });

  it('is NaN without two distinct x', () => {
    expect(leastSquaresSlope([])).toBeNaN();
    expect(leastSquaresSlope([{ x: 1, y: 1 }])).toBeNaN();
    expect(
      leastSquaresSlope([
        { x: 1, y: 1 },
        { x: 1, y: 9 }
      ])
    ).toBeNaN();
  });

  it('gives RSS growth in MB per minute, ignoring samples before the warm-up', () => {
    // 100 MB during a 60 s warm-up (a steep start), then +0.5 MB every 30 s.
    const samples = [
      { atMs: 0, rssBytes: 100 * MB },
      { atMs: 30_000, rssBytes: 180 * MB },
      ...[0, 1, 2, 3, 4].map((i) => ({ atMs: 60_000 + i * 30_000, rssBytes: (200 + 0.5 * i) * MB }))
    ];
    expect(rssSlopeMbPerMinute(samples, 60_000)).toBeCloseTo(1, 12);
    expect(rssSlopeMbPerMinute(samples, 0)).toBeGreaterThan(20);
  });
});

describe('RSS floor', () => {
  it('keeps the lowest sample of each window after the warm-up, so a GC sawtooth on a flat floor has no slope', () => {
    // Every 5 s for 4 minutes after a 60 s warm-up: grows 10 MB per 5 s, back to 200 MB every 30 s (a major GC).
    const samples = Array.from({ length: 49 }, (_, i) => ({
      atMs: 60_000 + i * 5_000,
      rssBytes: (200 + 10 * (i % 6)) * MB
    }));
    samples.unshift({ atMs: 0, rssBytes: 50 * MB }); // before the warm-up: ignored
    const minima = windowMinima(samples, 60_000, 30_000);
    expect(minima).toHaveLength(9);
    expect(minima.every((sample) => sample.rssBytes === 200 * MB)).toBe(true);
    expect(rssSlopeMbPerMinute(minima, 0)).toBe(0);
    // A floor rising 1 MB per window shows up as 2 MB/min.
    const leaking = samples.map((sample) => ({
      ...sample,
      rssBytes: sample.rssBytes + Math.floor((sample.atMs - 60_000) / 30_000) * MB
    }));
    expect(rssSlopeMbPerMinute(windowMinima(leaking, 60_000, 30_000), 0)).toBeCloseTo(2, 9);
  });
});

describe('AckTracker', () => {
  it('acknowledges a request when its id appears, with the latency since it was sent', () => {
    const tracker = new AckTracker(30_000);
    tracker.sent('c1', 1n, 1_000);
    expect(tracker.observe('c1', 1n, 1_250)).toEqual([]);
    expect(tracker.acknowledged).toBe(1);
    expect(tracker.outstanding).toBe(0);
    expect(tracker.latencies()).toMatchObject({ count: 1, p50: 250 });
  });

  it("does not take another client's write_checkpoint, nor a smaller one, as the acknowledgement", () => {
    const tracker = new AckTracker(30_000);
    tracker.sent('c1', 2n, 0);
    tracker.observe('c2', 5n, 10);
    tracker.observe('c1', 1n, 10);
    expect(tracker.acknowledged).toBe(0);
    expect(tracker.outstanding).toBe(1);
  });

  it('lets a greater id acknowledge earlier requests of the same client, and counts that', () => {
    const tracker = new AckTracker(30_000);
    tracker.sent('c1', 1n, 0);
    tracker.sent('c1', 2n, 100);
    tracker.sent('c1', 3n, 200);
    expect(tracker.observe('c1', 2n, 300)).toEqual([]);
    expect(tracker.acknowledged).toBe(2);
    expect(tracker.acknowledgedByLaterId).toBe(1);
    expect(tracker.outstanding).toBe(1);
    expect(() => tracker.sent('c1', 3n, 400)).toThrow(/ids must increase/);
  });

  it('fails requests not acknowledged within the bound, whether found by expiry or by a late line', () => {
    const tracker = new AckTracker(1_000);
    tracker.sent('c1', 1n, 0);
    tracker.sent('c2', 1n, 500);
    expect(tracker.expire(1_200)).toEqual([{ kind: 'timeout', client: 'c1', id: 1n, ageMs: 1_200 }]);
    expect(tracker.outstanding).toBe(1);
    expect(tracker.observe('c2', 1n, 1_600)).toEqual([{ kind: 'timeout', client: 'c2', id: 1n, ageMs: 1_100 }]);
    expect(tracker.acknowledged).toBe(0);
    expect(tracker.outstanding).toBe(0);
  });

  it('reports a write_checkpoint that goes down on a stream', () => {
    const tracker = new AckTracker(1_000);
    tracker.observe('c1', 4n, 0);
    expect(tracker.observe('c1', 3n, 1)).toEqual([{ kind: 'regressed', client: 'c1', from: 4n, to: 3n }]);
  });

  it('forgets a request whose HTTP call failed, so it is not also a missing acknowledgement', () => {
    const tracker = new AckTracker(1_000);
    tracker.sent('c1', 1n, 0);
    tracker.forget('c1', 1n);
    expect(tracker.outstanding).toBe(0);
    expect(tracker.expire(10_000)).toEqual([]);
  });
});

describe('soak options', () => {
  it('defaults to the full run: 1,000 streams over 100 users, 500 req/s for 5 minutes, 60 s warm-up', () => {
    expect(parseSoakOptions(new Map())).toEqual({
      durationSeconds: 300,
      streams: 1000,
      users: 100,
      rate: 500,
      warmupSeconds: 60,
      sampleSeconds: 5,
      rows: 100,
      ackBoundMs: 30_000,
      storagePoolSize: undefined
    });
  });

  it('scales the warm-up with a short run and checks values', () => {
    expect(
      parseSoakOptions(
        new Map([
          ['duration', '30'],
          ['streams', '50']
        ])
      )
    ).toMatchObject({ durationSeconds: 30, warmupSeconds: 6, streams: 50, users: 50 });
    expect(() =>
      parseSoakOptions(
        new Map([
          ['streams', '10'],
          ['users', '20']
        ])
      )
    ).toThrow(/cannot exceed/);
    expect(() =>
      parseSoakOptions(
        new Map([
          ['duration', '30'],
          ['warmup', '30']
        ])
      )
    ).toThrow(/shorter than/);
    expect(() => parseSoakOptions(new Map([['streams', '1.5']]))).toThrow(/--streams must be a positive integer/);
    expect(() => parseSoakOptions(new Map([['rate', '0']]))).toThrow(/--rate must be a positive number/);
    expect(() => parseSoakOptions(new Map([['durtion', '30']]))).toThrow(/unknown flag: --durtion/);
  });
});

function figures(overrides: Partial<SoakFigures> = {}): SoakFigures {
  const options = parseSoakOptions(new Map([['duration', '60']]));
  return {
    options,
    elapsedMs: 60_000,
    streamsOpened: 1000,
    serviceOpenStreams: 1000,
    requestsSent: 30_000,
    requestsSkipped: 0,
    requestsAcknowledged: 30_000,
    acknowledgedByLaterId: 12,
    httpErrors: 0,
    streamErrors: 0,
    ackFailures: 0,
    errors: 0,
    http: summarizeLatencies([5, 10, 20]),
    ack: summarizeLatencies([40, 50, 90]),
    rss: {
      samples: [
        { atMs: 0, rssBytes: 200 * MB },
        { atMs: 60_000, rssBytes: 200.5 * MB }
      ],
      slopeMbPerMinute: 0.5,
      floorSlopeMbPerMinute: 0.4,
      startMb: 200,
      afterWarmupMb: 200,
      endMb: 200.5,
      maxMb: 201
    },
    serviceCpuCores: 0.8,
    serviceWarnings: 0,
    ...overrides
  };
}

describe('soak report', () => {
  it('passes only with the load applied, no error, every request acknowledged and a slope at most the target', () => {
    expect(soakPassed(figures())).toBe(true);
    expect(soakPassed(figures({ streamsOpened: 999 }))).toBe(false);
    expect(soakPassed(figures({ requestsSent: 29_000, requestsAcknowledged: 29_000 }))).toBe(false); // 483 req/s of 500
    expect(soakPassed(figures({ requestsSent: 29_500, requestsAcknowledged: 29_500 }))).toBe(true); // 492 req/s
    expect(soakPassed(figures({ errors: 1, httpErrors: 1 }))).toBe(false);
    expect(soakPassed(figures({ requestsAcknowledged: 29_999 }))).toBe(false);
    expect(soakPassed(figures({ rss: { ...figures().rss, slopeMbPerMinute: 1.2 } }))).toBe(false);
    expect(soakPassed(figures({ rss: { ...figures().rss, slopeMbPerMinute: Number.NaN } }))).toBe(false);
  });

  it('prints each figure beside its target', () => {
    const table = formatTable(
      soakRows(figures({ errors: 2, streamErrors: 2, rss: { ...figures().rss, slopeMbPerMinute: 1.5 } }))
    );
    expect(table).toMatch(/checkpoint requests +500 req\/s +target ≥ 490 req\/s +PASS/);
    expect(table).toMatch(/errors +2 +target ≤ 0 +MISS +\(HTTP 0, stream 2, acknowledgement 0\)/);
    expect(table).toMatch(/requests acknowledged +30,000 +target ≥ 30,000 +PASS/);
    expect(table).toMatch(/ack latency max +90\.00 ms +target ≤ 30,000 ms +PASS/);
    expect(table).toMatch(/RSS slope after warm-up +1\.50 MB\/min +target ≤ 1 MB\/min +MISS/);
  });

  it('writes the figures and the verdict to JSON', () => {
    const json = soakJson(figures(), { machine: { cpus: 2 } }) as { rss: { samples: unknown }; ackLatency: unknown };
    expect(json).toMatchObject({
      machine: { cpus: 2 },
      passed: true,
      requests: { sent: 30_000, perSecond: 500, acknowledged: 30_000 },
      errors: { total: 0 }
    });
    expect(json.rss.samples).toEqual([
      [0, 200],
      [60, 200.5]
    ]);
    expect(json.ackLatency).toMatchObject({ count: 3, p50Ms: 50, maxMs: 90 });
  });
});

describe('storage operations from /metrics', () => {
  const scrape = (checksums: number, seconds: number) =>
    [
      '# HELP syncpoint_storage_operation_seconds Duration of bucket storage operations',
      `syncpoint_storage_operation_seconds_bucket{le="0.001",operation="get_checksums"} 1`,
      `syncpoint_storage_operation_seconds_sum{operation="get_checksums"} ${seconds}`,
      `syncpoint_storage_operation_seconds_count{operation="get_checksums"} ${checksums}`,
      'syncpoint_storage_operation_seconds_sum{operation="last_write_checkpoint"} 0.5',
      'syncpoint_storage_operation_seconds_count{operation="last_write_checkpoint"} 100'
    ].join('\n');

  it('reads count and total seconds per operation and describes the difference', () => {
    const before = parseStorageOperations(scrape(10, 0.1));
    expect(before.get('get_checksums')).toEqual({ count: 10, seconds: 0.1 });
    const after = parseStorageOperations(scrape(1010, 2.1));
    expect(describeOperations(before, after, 10_000)).toBe('get_checksums 1,000 (100/s, mean 2.0 ms)');
    expect(describeOperations(new Map(), new Map(), 1_000)).toBe('none recorded');
  });
});
