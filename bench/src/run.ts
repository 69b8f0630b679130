/**
 * `pnpm bench [name...] [--flag=value...]`: runs the named benchmarks (all when none is named), prints each one's
 * figures beside their targets and writes bench/results/<name>.json. Exit code 0 when every request and check
 * succeeded (a missed target is reported as MISS but does not fail), 1 on errors, 2 on bad usage.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Benchmark } from './benchmark.js';
import { BENCHMARKS, findBenchmark } from './benchmarks.js';
import { formatTable, verdict } from './lib/report.js';
import { runIfEntry } from './lib/entry.js';
import { hottestFunctions, profilePaths, type CpuProfile, renderFlameGraph, startCpuProfile } from './lib/profile.js';

/** Flags every benchmark accepts, handled here. */
const COMMON_FLAGS: Record<string, string> = {
  profile:
    'sample the service (this process) while the benchmark runs; writes results/<name>-flame.svg and <name>.cpuprofile'
};

export const RESULTS_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', 'results');

export interface ParsedArgs {
  names: string[];
  flags: Map<string, string>;
  help: boolean;
}

export function parseArgs(argv: string[]): ParsedArgs {
  const names: string[] = [];
  const flags = new Map<string, string>();
  let help = false;
  for (const arg of argv) {
    if (arg === '--') continue; // `pnpm bench -- name` passes the separator through
    if (arg === '--help' || arg === '-h') help = true;
    else if (arg.startsWith('--')) {
      const [name, ...value] = arg.slice(2).split('=');
      flags.set(name!, value.length > 0 ? value.join('=') : 'true');
    } else names.push(arg);
  }
  return { names, flags, help };
}

function usage(): string {
  const lines = ['usage: pnpm bench [name...] [--flag=value...]', '', 'flags of every benchmark:'];
  for (const [flag, help] of Object.entries(COMMON_FLAGS)) lines.push(`  --${flag}  ${help}`);
  lines.push('', 'benchmarks:');
  for (const benchmark of BENCHMARKS) {
    lines.push(`  ${benchmark.name.padEnd(12)} ${benchmark.description}`);
    for (const [flag, help] of Object.entries(benchmark.flags ?? {})) lines.push(`    --${flag}=…  ${help}`);
  }
  return lines.join('\n');
}

async function main(argv: string[]): Promise<number> {
  const { names, flags, help } = parseArgs(argv);
  if (help) {
    console.log(usage());
    return 0;
  }
  const unknown = names.filter((name) => !findBenchmark(name));
  if (unknown.length > 0) {
    console.error(`unknown benchmark${unknown.length > 1 ? 's' : ''}: ${unknown.join(', ')}`);
    console.error(`known: ${BENCHMARKS.map((benchmark) => benchmark.name).join(', ')}`);
    return 2;
  }
  const selected: Benchmark[] =
    names.length === 0 ? [...BENCHMARKS] : [...new Set(names)].map((name) => findBenchmark(name)!);
  const knownFlags = new Set([
    ...Object.keys(COMMON_FLAGS),
    ...selected.flatMap((benchmark) => Object.keys(benchmark.flags ?? {}))
  ]);
  const profiling = flags.has('profile');
  const unknownFlags = [...flags.keys()].filter((flag) => !knownFlags.has(flag));
  if (unknownFlags.length > 0) {
    console.error(
      `unknown flag${unknownFlags.length > 1 ? 's' : ''}: ${unknownFlags.map((flag) => `--${flag}`).join(', ')}`
    );
    console.error(usage());
    return 2;
  }

  let failed = false;
  for (const benchmark of selected) {
    console.log(`\n== ${benchmark.name}: ${benchmark.description}`);
    try {
      const stopProfile = profiling ? await startCpuProfile() : null;
      const outcome = await benchmark.run({ flags, log: (line) => console.log(line) });
      if (stopProfile) await writeProfile(benchmark.name, await stopProfile());
      console.log('');
      console.log(formatTable(outcome.rows));
      for (const note of outcome.notes ?? []) console.log(note);
      await mkdir(RESULTS_DIR, { recursive: true });
      const file = path.join(RESULTS_DIR, `${benchmark.name}.json`);
      await writeFile(file, JSON.stringify(outcome.json, null, 2) + '\n');
      const misses = outcome.rows.filter((row) => verdict(row) === 'MISS').length;
      console.log(
        `\n${benchmark.name}: ${outcome.errors} error${outcome.errors === 1 ? '' : 's'}, ${misses} target${misses === 1 ? '' : 's'} missed; results in ${path.relative(process.cwd(), file) || file}`
      );
      if (outcome.errors > 0) failed = true;
    } catch (error) {
      console.error(`${benchmark.name} failed: ${(error as Error).stack ?? error}`);
      failed = true;
    }
  }
  return failed ? 1 : 0;
}

async function writeProfile(name: string, profile: CpuProfile) {
  await mkdir(RESULTS_DIR, { recursive: true });
  const paths = profilePaths(RESULTS_DIR, name);
  await writeFile(paths.cpuprofile, JSON.stringify(profile));
  await writeFile(paths.svg, renderFlameGraph(profile, `pnpm bench ${name} --profile`));
  console.log(
    `\nprofile: ${path.relative(process.cwd(), paths.svg)} (flame graph), ${path.relative(process.cwd(), paths.cpuprofile)} (open in Chrome DevTools)`
  );
  console.log('hottest functions by self time:');
  for (const entry of hottestFunctions(profile)) {
    console.log(`  ${entry.percent.toFixed(1).padStart(5)} %  ${entry.name}  ${entry.file}`);
  }
}

runIfEntry(import.meta.url, main);
