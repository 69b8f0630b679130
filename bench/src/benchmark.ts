import type { ReportRow } from './lib/report.js';

/** Options from the command line: `--name=value` (or `--name` alone, meaning "true"). */
export type BenchmarkFlags = ReadonlyMap<string, string>;

export interface BenchmarkContext {
  flags: BenchmarkFlags;
  /** Progress output (the table is printed by the runner). */
  log: (line: string) => void;
}

export interface BenchmarkOutcome {
  /** The figures, printed beside their targets. */
  rows: ReportRow[];
  /** Failed requests or checks; non-zero makes `pnpm bench` exit 1. A missed target is not an error. */
  errors: number;
  /** Lines printed under the table (error samples, notes). */
  notes?: string[];
  /** Written to bench/results/<name>.json. */
  json: unknown;
}

export interface Benchmark {
  name: string;
  description: string;
  /** Flags this benchmark understands, with their help text. */
  flags?: Record<string, string>;
  run(context: BenchmarkContext): Promise<BenchmarkOutcome>;
}

/** A numeric flag, or the default; throws on anything that is not a positive number. */
export function numberFlag(flags: BenchmarkFlags, name: string, fallback: number): number {
  const raw = flags.get(name);
  if (raw === undefined) return fallback;
  const value = Number(raw);
  if (!Number.isFinite(value) || value <= 0)
    throw new Error(`--${name} must be a positive number, got ${JSON.stringify(raw)}`);
  return value;
}
