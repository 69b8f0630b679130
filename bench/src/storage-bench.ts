import { cpus, loadavg } from 'node:os';
import { performance } from 'node:perf_hooks';
import { testPostgresServer } from '@syncpoint/dev-postgres';
import type { ReplicationStreamStorage, RowChange, SourceTableRef } from '@syncpoint/service-core';
import { createPostgresStorage } from '@syncpoint/storage-postgres';
import { numberFlag, type Benchmark, type BenchmarkContext, type BenchmarkOutcome } from './benchmark.js';
import type { ReportRow } from './lib/report.js';
import { lsnFromBigint } from '@syncpoint/codecs';

/** Targets of issue 3 item 5 (2-core machine, embedded Postgres). */
const STORAGE_TARGETS = {
  writeOpsPerSecond: 50_000,
  checksums1000BucketsMs: 20
} as const;

const SYNC_CONFIG = `bucket_definitions:
  global:
    data:
      - SELECT * FROM items
  by_user:
    parameters: SELECT request.user_id() AS user_id
    data:
      - SELECT * FROM docs WHERE owner = bucket.user_id
`;

const items: SourceTableRef = { id: '20001', schema: 'public', name: 'items', replicaIdColumns: ['id'] };
const docs: SourceTableRef = { id: '20002', schema: 'public', name: 'docs', replicaIdColumns: ['id'] };

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
}

async function timeMs<T>(fn: () => Promise<T>): Promise<{ ms: number; value: T }> {
  const start = performance.now();
  const value = await fn();
  return { ms: performance.now() - start, value };
}

/** Median of `runs` timings of `fn` after one warm-up call. */
async function medianMs(runs: number, fn: () => Promise<unknown>): Promise<number> {
  await fn();
  const times: number[] = [];
  for (let i = 0; i < runs; i++) times.push((await timeMs(fn)).ms);
  return median(times);
}

async function runStorageBenchmark({ flags, log }: BenchmarkContext): Promise<BenchmarkOutcome> {
  const totalOps = Math.floor(numberFlag(flags, 'ops', 1_000_000));
  const txRows = Math.floor(numberFlag(flags, 'tx', 10_000));
  const distinctRows = Math.floor(numberFlag(flags, 'rows', Math.max(1, totalOps / 4)));
  const users = Math.floor(numberFlag(flags, 'buckets', 1_000));

  const load = loadavg()[0]!;
  log(
    `load average (1 min) ${load.toFixed(2)} on ${cpus().length} CPUs${load > 0.5 ? ' (other work is running: figures will be pessimistic)' : ''}`
  );
  log(process.env.PG_TEST_URL ? 'using PG_TEST_URL' : 'starting embedded Postgres …');
  const server = await testPostgresServer();
  const database = `syncpoint_storage_bench_${process.pid}_${Date.now()}`;
  await server.ensureDatabase(database);
  const storage = createPostgresStorage({ type: 'postgresql', uri: server.url(database), max_pool_size: 8 });
  let errors = 0;
  const notes: string[] = [];
  try {
    await storage.migrate('up');
    const { rows: version } = await storage.pool.query<{ server_version: string }>('SHOW server_version');
    log(`Postgres ${version[0]!.server_version}, database ${database}`);
    const stream = await storage.deploySyncConfig(SYNC_CONFIG);
    const s: ReplicationStreamStorage = await storage.getStreamStorage(stream);
    await s.markSnapshotDone(lsnFromBigint(1n));
    let lsn = 16n;
    const nextLsn = () => lsnFromBigint((lsn += 16n));
    const payload = 'x'.repeat(60);

    // 1. Write throughput: `totalOps` ops in the global bucket, `txRows` rows per source transaction, each
    //    committed (a checkpoint per transaction). Rows are updated round-robin, so the log has superseded ops.
    log(
      `writing ${totalOps.toLocaleString('en-US')} ops in ${txRows.toLocaleString('en-US')}-row transactions over ${distinctRows.toLocaleString('en-US')} rows …`
    );
    const write = await timeMs(() =>
      s.startBatch(async (batch) => {
        let written = 0;
        let round = 0;
        while (written < totalOps) {
          const rows = Math.min(txRows, totalOps - written);
          for (let i = 0; i < rows; i++) {
            const n = (written + i) % distinctRows;
            const change: RowChange = {
              kind: 'update',
              table: items,
              after: { id: `item-${n}`, round: BigInt(round), note: payload }
            };
            await batch.save(change);
          }
          written += rows;
          round++;
          if (!(await batch.commit(nextLsn()))) throw new Error('a commit created no checkpoint');
        }
        return batch.skippedRows;
      })
    );
    if (write.value > 0) errors++;
    const writeRate = totalOps / (write.ms / 1000);
    log(`  ${(write.ms / 1000).toFixed(1)} s, ${Math.round(writeRate).toLocaleString('en-US')} ops/s`);
    const afterWrite = await s.getCheckpoint();

    // 2. Checksums of 1,000 buckets at a checkpoint: 10 ops per bucket, plus one more transaction flushed above the
    //    checkpoint (so every bucket has ops to subtract).
    log(`writing ${users} per-user buckets …`);
    await s.startBatch(async (batch) => {
      for (let i = 0; i < users * 10; i++) {
        await batch.save({
          kind: 'insert',
          table: docs,
          after: { id: `doc-${i}`, owner: `user-${i % users}`, note: payload }
        });
      }
      await batch.commit(nextLsn());
      for (let i = 0; i < users; i++) {
        await batch.save({ kind: 'insert', table: docs, after: { id: `late-${i}`, owner: `user-${i % users}` } });
      }
      await batch.flush();
    });
    const checkpoint = (await s.getCheckpoint()).checkpoint;
    const buckets = Array.from({ length: users }, (_, i) => `by_user["user-${i}"]`);
    const checksums = await s.getChecksums(checkpoint, buckets);
    if (checksums.size !== users || [...checksums.values()].some((c) => c.count !== 10)) {
      errors++;
      notes.push(`checksums of ${users} buckets: expected ${users} buckets with 10 ops each, got ${checksums.size}`);
    }
    const manyMs = await medianMs(20, () => s.getChecksums(checkpoint, buckets));
    log(`  ${users} bucket checksums: ${manyMs.toFixed(2)} ms (median of 20)`);

    // 3. One bucket with `totalOps` ops: at the latest checkpoint, and 10,000 ops behind it.
    const big = await s.getChecksums(checkpoint, ['global[]']);
    if (big.get('global[]')?.count !== totalOps) {
      errors++;
      notes.push(`global bucket: expected ${totalOps} ops, got ${big.get('global[]')?.count}`);
    }
    const bigMs = await medianMs(20, () => s.getChecksums(checkpoint, ['global[]']));
    const behind = afterWrite.checkpoint - BigInt(Math.min(txRows, totalOps - 1));
    const bigBehindMs = await medianMs(10, () => s.getChecksums(behind, ['global[]']));
    log(
      `  one bucket with ${totalOps.toLocaleString('en-US')} ops: ${bigMs.toFixed(2)} ms; ${Math.min(txRows, totalOps - 1).toLocaleString('en-US')} ops behind: ${bigBehindMs.toFixed(2)} ms`
    );

    // 4. Compaction of the global bucket.
    log('compacting …');
    const compaction = await timeMs(() => s.compact({ buckets: ['global[]'] }));
    const after = await s.getChecksums(checkpoint, ['global[]']);
    const expectedLeft = Math.min(distinctRows, totalOps) + 1;
    if (distinctRows < totalOps && (after.get('global[]')?.count ?? 0) > expectedLeft) {
      errors++;
      notes.push(
        `compaction left ${after.get('global[]')?.count} ops; expected at most ${expectedLeft} (one PUT per row and a CLEAR)`
      );
    }
    if (after.get('global[]')?.checksum !== big.get('global[]')?.checksum) {
      errors++;
      notes.push('compaction changed the checksum of the global bucket');
    }
    log(
      `  ${(compaction.ms / 1000).toFixed(1)} s: ${compaction.value.opsMoved.toLocaleString('en-US')} ops moved, ${compaction.value.opsCleared.toLocaleString('en-US')} cleared; ${after.get('global[]')?.count.toLocaleString('en-US')} ops left`
    );

    const rows: ReportRow[] = [
      {
        label: `write ${totalOps.toLocaleString('en-US')} ops, ${txRows.toLocaleString('en-US')}-row transactions`,
        value: writeRate,
        unit: 'ops/s',
        target: { comparison: '>=', value: STORAGE_TARGETS.writeOpsPerSecond }
      },
      {
        label: `checksums of ${users.toLocaleString('en-US')} buckets at a checkpoint`,
        value: manyMs,
        unit: 'ms',
        target: { comparison: '<=', value: STORAGE_TARGETS.checksums1000BucketsMs }
      },
      { label: `checksum of one bucket with ${totalOps.toLocaleString('en-US')} ops`, value: bigMs, unit: 'ms' },
      {
        label: `  same, ${Math.min(txRows, totalOps - 1).toLocaleString('en-US')} ops behind the newest`,
        value: bigBehindMs,
        unit: 'ms'
      },
      {
        label: `compaction of ${totalOps.toLocaleString('en-US')} ops`,
        value: compaction.ms / 1000,
        unit: 's',
        digits: 1
      }
    ];
    return {
      rows,
      errors,
      notes,
      json: {
        date: new Date().toISOString(),
        postgres: version[0]!.server_version,
        loadAverage: load,
        cpus: cpus().length,
        ops: totalOps,
        transactionRows: txRows,
        distinctRows,
        writeSeconds: write.ms / 1000,
        writeOpsPerSecond: writeRate,
        checksumBuckets: users,
        checksumsManyBucketsMs: manyMs,
        checksumOneBigBucketMs: bigMs,
        checksumOneBigBucketBehindMs: bigBehindMs,
        compactionSeconds: compaction.ms / 1000,
        compaction: compaction.value,
        opsAfterCompaction: after.get('global[]')?.count ?? 0,
        targets: STORAGE_TARGETS
      }
    };
  } finally {
    await storage.close();
    await server.stop();
  }
}

export const storageBenchmark: Benchmark = {
  name: 'storage',
  description:
    'Postgres bucket storage on embedded Postgres: write throughput (1M ops, 10k-row transactions, one bucket), checksums of 1,000 buckets and of one 1M-op bucket, compaction of 1M ops',
  flags: {
    ops: 'ops written to the global bucket (default 1000000)',
    tx: 'rows per source transaction (default 10000)',
    rows: 'distinct source rows the ops are spread over (default ops/4, so compaction has superseded ops)',
    buckets: 'buckets for the checksum query (default 1000)'
  },
  run: runStorageBenchmark
};
