import type { Benchmark } from './benchmark.js';
import { checkpointBenchmark } from './checkpoint-bench.js';
import { checkpointMultiBenchmark } from './checkpoint-multi-bench.js';
import { failoverBenchmark } from './failover-bench.js';
import { replicationBenchmark } from './replication-bench.js';
import { storageBenchmark } from './storage-bench.js';
import { syncBenchmark } from './sync-bench.js';

/**
 * Every benchmark `pnpm bench` knows, in the order they run. Later ones (storage, replication, sync) are added
 * here: a `{ name, description, run }` each.
 */
export const BENCHMARKS: readonly Benchmark[] = [
  checkpointBenchmark,
  checkpointMultiBenchmark,
  storageBenchmark,
  replicationBenchmark,
  syncBenchmark,
  failoverBenchmark
];

export function findBenchmark(name: string): Benchmark | undefined {
  return BENCHMARKS.find((benchmark) => benchmark.name === name);
}
