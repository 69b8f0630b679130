import { describe, expect, it } from 'vitest';
import { formatSnapshotProgress, terminalSnapshotProgress } from '../src/progress-line.js';

describe('snapshot progress on a terminal', () => {
  it('formats rows done / estimated total, rate and ETA', () => {
    expect(
      formatSnapshotProgress({
        table: 'public.todos',
        rowsDone: 30_000,
        estimatedTotal: 120_000,
        rowsPerSecond: 41_200,
        etaSeconds: 2
      })
    ).toBe('snapshot public.todos: 30,000 / ~120,000 rows (25%), 41,200 rows/s, ETA 2 s');
    expect(
      formatSnapshotProgress({ table: 'public.t', rowsDone: 10, estimatedTotal: 0, rowsPerSecond: 0, etaSeconds: null })
    ).toBe('snapshot public.t: 10 / ~10 rows (100%), 0 rows/s');
  });

  it('rewrites one line per table and starts a new line for the next table', () => {
    let written = '';
    const show = terminalSnapshotProgress({
      write: (text: string) => ((written += text), true)
    } as unknown as NodeJS.WriteStream);
    show({ table: 'public.a', rowsDone: 10_000, estimatedTotal: 20_000, rowsPerSecond: 5_000, etaSeconds: 2 });
    show({ table: 'public.a', rowsDone: 20_000, estimatedTotal: 20_000, rowsPerSecond: 5_000, etaSeconds: 0 });
    show({ table: 'public.b', rowsDone: 5, estimatedTotal: 5, rowsPerSecond: 100, etaSeconds: 0 });
    expect(written.split('\n')).toEqual([
      '\r\x1b[Ksnapshot public.a: 10,000 / ~20,000 rows (50%), 5,000 rows/s, ETA 2 s\r\x1b[Ksnapshot public.a: 20,000 / ~20,000 rows (100%), 5,000 rows/s, ETA 0 s',
      '\r\x1b[Ksnapshot public.b: 5 / ~5 rows (100%), 100 rows/s, ETA 0 s'
    ]);
  });
});
