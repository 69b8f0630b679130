/**
 * `pnpm soak [--duration=300] [--streams=1000] [--rate=500] …`: a bounded load/soak run against a real service.
 *
 * `syncpoint start` runs as a child process on embedded Postgres; this process holds `--streams` sync streams open and
 * sends `--rate` checkpoint requests per second for `--duration` seconds, all over loopback. It reports the errors
 * (must be 0), whether every request was acknowledged on its stream within the bound (and how fast), and the
 * service's RSS, sampled every few seconds, with its least-squares slope after the warm-up. Exit code 0 when the run
 * passes (the load applied in full, no error, every request acknowledged, slope within the target), 1 when it does
 * not, 2 on bad usage.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { cpus, loadavg } from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { signDevToken } from '@syncpoint/service';
import { cpuSince, sampleCpu } from './lib/cpu.js';
import { formatTable } from './lib/report.js';
import { round, summarizeLatencies } from './lib/stats.js';
import { RESULTS_DIR, parseArgs } from './run.js';
import { SoakLoad, type SoakClient } from './soak-load.js';
import {
  MB,
  SOAK_FLAGS,
  SOAK_TARGETS,
  describeOperations,
  parseSoakOptions,
  parseStorageOperations,
  rssSlopeMbPerMinute,
  soakJson,
  soakPassed,
  soakRows,
  windowMinima,
  type RssSample,
  type SoakFigures,
  type SoakOptions
} from './soak-report.js';
import { readCpuMs, readRssBytes, startSoakService } from './soak-service.js';
import { runIfEntry } from './lib/entry.js';

function usage(): string {
  return [
    'usage: pnpm soak [--flag=value...]',
    '',
    `Holds sync streams open and sends checkpoint requests at a fixed rate against a \`syncpoint start\` child process;`,
    `passes when every stream opened and ≥ ${SOAK_TARGETS.minimumRateShare * 100} % of the rate was sent, with 0 errors, every request`,
    `acknowledged within the bound and an RSS slope ≤ ${SOAK_TARGETS.rssSlopeMbPerMinute} MB/min after the warm-up.`,
    '',
    ...Object.entries(SOAK_FLAGS).map(([flag, help]) => `  --${flag}=…  ${help}`)
  ].join('\n');
}

/** The service's Prometheus metrics ('' when they cannot be read). */
async function scrapeMetrics(url: string): Promise<string> {
  try {
    return await (await fetch(`${url}/metrics`)).text();
  } catch {
    return '';
  }
}

/** `syncpoint_open_sync_streams` from a scrape, or NaN. */
function openStreamsGauge(metricsText: string): number {
  const match = /^syncpoint_open_sync_streams(?:\{[^}]*\})? (\d+)/m.exec(metricsText);
  return match ? Number(match[1]) : Number.NaN;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export async function runSoak(
  options: SoakOptions,
  log: (line: string) => void
): Promise<{ figures: SoakFigures; notes: string[]; json: Record<string, unknown> }> {
  const loadBefore = loadavg();
  log(
    `soak: ${options.streams} streams (${options.users} users), ${options.rate} checkpoint requests/s for ${options.durationSeconds} s, ` +
      `RSS every ${options.sampleSeconds} s, slope after ${options.warmupSeconds} s` +
      (options.storagePoolSize !== undefined ? `, storage max_pool_size ${options.storagePoolSize}` : '')
  );
  log('starting embedded Postgres and `syncpoint start` (child process)');
  const service = await startSoakService({
    maxConnections: options.streams + 100,
    rows: options.rows,
    storagePoolSize: options.storagePoolSize,
    log
  });
  let load: SoakLoad | undefined;
  const notes: string[] = [];
  try {
    // Tokens outlive the run, so no stream ends on token expiry.
    const expiresInSeconds = Math.ceil(options.durationSeconds) + 3600;
    const tokens = await Promise.all(
      Array.from({ length: options.users }, (_, user) =>
        signDevToken(service.devKey, { sub: `soak-user-${user}`, expiresInSeconds })
      )
    );
    const clients: SoakClient[] = Array.from({ length: options.streams }, (_, i) => ({
      clientId: `soak-client-${i}`,
      user: `soak-user-${i % options.users}`,
      token: tokens[i % options.users]!
    }));
    load = new SoakLoad(service.url, clients, { ackBoundMs: options.ackBoundMs, requestConnections: 100 });

    log(`opening ${options.streams} sync streams (each downloads ${options.rows} rows first)`);
    const openStart = performance.now();
    await load.openStreams(Math.max(120_000, options.streams * 200), (ready) =>
      log(`  ${ready} of ${options.streams} streams ready`)
    );
    log(`  all ${options.streams} streams ready after ${((performance.now() - openStart) / 1000).toFixed(1)} s`);
    const short = load.openStreamsWithRows.filter((rows) => rows !== options.rows).length;
    if (short > 0)
      load.errors.add(
        'stream',
        `${short} streams did not receive all ${options.rows} rows before their first checkpoint_complete`
      );

    // The load: RSS sampled from its start, the first sample before any request.
    const samples: RssSample[] = [];
    const loadStart = performance.now();
    const sample = () => {
      try {
        samples.push({ atMs: performance.now() - loadStart, rssBytes: readRssBytes(service.pid) });
      } catch {
        // the service is gone; reported below
      }
    };
    sample();
    const operationsBefore = parseStorageOperations(await scrapeMetrics(service.url));
    const cpuBefore = readCpuMs(service.pid);
    const allCpuBefore = sampleCpu();
    const sampler = setInterval(sample, options.sampleSeconds * 1000);
    let nextProgress = 30_000;
    const result = await load.run(options.rate, options.durationSeconds * 1000, (elapsed) => {
      if (elapsed < nextProgress) return;
      nextProgress += 30_000;
      const rss = samples.at(-1);
      log(
        `  ${(elapsed / 1000).toFixed(0)} s: ${load!.tracker.acknowledged} acknowledged, ${load!.tracker.outstanding} waiting, ` +
          `${load!.errors.total} errors, RSS ${rss ? (rss.rssBytes / MB).toFixed(1) : '?'} MB`
      );
    });
    clearInterval(sampler);
    sample();
    const serviceCpuMs = service.running() ? readCpuMs(service.pid) - cpuBefore : Number.NaN;
    // Descendants of this process are the service and the Postgres processes; this process is the load generator.
    const allCpu = cpuSince(allCpuBefore);
    const cpuShare = (ms: number) => `${Math.round((ms / result.elapsedMs) * 100)} %`;
    const cpuLine = `CPU during the load (share of one core): service ${cpuShare(serviceCpuMs)}, Postgres ${cpuShare(allCpu.postgresMs - serviceCpuMs)}, load generator ${cpuShare(allCpu.processMs)}`;
    const operations = describeOperations(
      operationsBefore,
      parseStorageOperations(await scrapeMetrics(service.url)),
      result.elapsedMs
    );
    log(
      `load done: ${result.sent} requests sent; waiting up to ${options.ackBoundMs / 1000} s for the last acknowledgements`
    );
    await load.drain();
    const openAtEnd = openStreamsGauge(await scrapeMetrics(service.url));
    if (!service.running())
      load.errors.add('stream', `the service exited during the run; output:\n${service.output().slice(-2_000)}`);
    if (openAtEnd !== options.streams)
      notes.push(`the service reported ${openAtEnd} open sync streams at the end, expected ${options.streams}`);

    const measured = samples.filter((s) => s.atMs >= options.warmupSeconds * 1000);
    const rssMb = (s: RssSample | undefined) => (s ? s.rssBytes / MB : Number.NaN);
    const figures: SoakFigures = {
      options,
      elapsedMs: result.elapsedMs,
      streamsOpened: load.readyStreams,
      serviceOpenStreams: openAtEnd,
      requestsSent: result.sent,
      requestsSkipped: result.skipped,
      requestsAcknowledged: load.tracker.acknowledged,
      acknowledgedByLaterId: load.tracker.acknowledgedByLaterId,
      httpErrors: load.errors.http,
      streamErrors: load.errors.stream,
      ackFailures: load.errors.ack,
      errors: load.errors.total,
      http: summarizeLatencies(load.httpLatencies()),
      ack: load.tracker.latencies(),
      rss: {
        samples,
        slopeMbPerMinute: rssSlopeMbPerMinute(samples, options.warmupSeconds * 1000),
        floorSlopeMbPerMinute: rssSlopeMbPerMinute(windowMinima(samples, options.warmupSeconds * 1000, 30_000), 0),
        startMb: rssMb(samples[0]),
        afterWarmupMb: rssMb(measured[0]),
        endMb: rssMb(samples.at(-1)),
        maxMb: Math.max(...samples.map((s) => s.rssBytes / MB))
      },
      serviceCpuCores: serviceCpuMs / result.elapsedMs,
      serviceWarnings: service.warnings.count
    };
    notes.push(cpuLine, `storage operations of the service during the load: ${operations}`);
    if (service.supervisorPid !== undefined && service.running())
      notes.push(
        `the supervising \`syncpoint start\` parent (pid ${service.supervisorPid}) holds ${(readRssBytes(service.supervisorPid) / MB).toFixed(1)} MB RSS besides the service`
      );
    if (load.errors.samples.length > 0) notes.push('first errors:', ...load.errors.samples.map((line) => `  ${line}`));
    if (service.warnings.samples.length > 0)
      notes.push(
        'service warnings/errors (first few):',
        ...service.warnings.samples.slice(0, 5).map((line) => `  ${line}`)
      );

    const errorSamples = [...load.errors.samples];
    await load.close();
    load = undefined;
    await sleep(200);
    const exitCode = await service.stop();
    if (exitCode !== 0) notes.push(`the service exited with ${exitCode} on SIGTERM`);
    const json = soakJson(figures, {
      machine: {
        cpus: cpus().length,
        node: process.version,
        loadavgBefore: loadBefore.map((v) => round(v, 2)),
        loadavgAfter: loadavg().map((v) => round(v, 2))
      },
      serviceExitCode: exitCode,
      storageOperations: operations,
      cpu: cpuLine,
      errorSamples,
      serviceWarningSamples: service.warnings.samples
    });
    notes.push(
      `load average (1 min): ${loadBefore[0]!.toFixed(2)} before, ${loadavg()[0]!.toFixed(2)} after (the run itself adds to it)`
    );
    return { figures, notes, json };
  } finally {
    await load?.close().catch(() => {});
    await service.stop().catch(() => {});
  }
}

async function main(argv: string[]): Promise<number> {
  const { names, flags, help } = parseArgs(argv);
  if (help) {
    console.log(usage());
    return 0;
  }
  let options: SoakOptions;
  try {
    if (names.length > 0) throw new Error(`unexpected argument${names.length > 1 ? 's' : ''}: ${names.join(' ')}`);
    options = parseSoakOptions(flags);
  } catch (error) {
    console.error((error as Error).message);
    console.error(usage());
    return 2;
  }
  const { figures, notes, json } = await runSoak(options, (line) => console.log(line));
  console.log('');
  console.log(formatTable(soakRows(figures)));
  for (const note of notes) console.log(note);
  await mkdir(RESULTS_DIR, { recursive: true });
  const file = path.join(RESULTS_DIR, 'soak.json');
  await writeFile(file, JSON.stringify(json, null, 2) + '\n');
  const passed = soakPassed(figures);
  console.log(
    `\nsoak: ${passed ? 'PASS' : 'FAIL'} — ${Math.round(figures.requestsSent / (figures.elapsedMs / 1000))} of ${options.rate} req/s sent, ` +
      `${figures.errors} error${figures.errors === 1 ? '' : 's'}, ` +
      `${figures.requestsAcknowledged} of ${figures.requestsSent} requests acknowledged within ${options.ackBoundMs / 1000} s, ` +
      `RSS slope ${figures.rss.slopeMbPerMinute.toFixed(2)} MB/min (target ≤ ${SOAK_TARGETS.rssSlopeMbPerMinute}); results in ${path.relative(process.cwd(), file) || file}`
  );
  return passed ? 0 : 1;
}

runIfEntry(import.meta.url, main);
