export * from './benchmark.js';
export * from './benchmarks.js';
export * from './checkpoint-bench.js';
export * from './lib/report.js';
export * from './lib/stats.js';
