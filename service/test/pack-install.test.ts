import { spawn, spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, readdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { beforeAll, describe, expect, it } from 'vitest';

/**
 * The release path end to end: build every package (turbo), `pnpm pack` the service and its workspace dependencies,
 * `npm install` the tarballs together into an empty folder, and run the installed `syncpoint` binary: `--help`, then
 * the zero-config embedded default and a checkpoint request against it. Slow (a build and an npm install).
 */

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const MINUTE = 60_000;

let work: string;
/** An environment without the workspace's hints (pnpm's INIT_CWD, source conditions, config locations). */
let cleanEnv: NodeJS.ProcessEnv;

function run(
  command: string,
  args: string[],
  options: { cwd: string; env?: NodeJS.ProcessEnv; timeoutMs?: number }
): SpawnSyncReturns<string> {
  const result = spawnSync(command, args, {
    cwd: options.cwd,
    env: options.env ?? process.env,
    encoding: 'utf8',
    timeout: options.timeoutMs ?? 10 * MINUTE,
    maxBuffer: 64 * 1024 * 1024
  });
  if (result.status !== 0) {
    throw new Error(
      `${command} ${args.join(' ')} failed (${result.status ?? result.signal}):\n${result.stdout}\n${result.stderr}`
    );
  }
  return result;
}

/** A directory with a `pnpm` on it: the real one when installed, else a corepack wrapper (turbo needs the binary). */
function pnpmPath(): string {
  if (spawnSync('pnpm', ['--version'], { encoding: 'utf8' }).status === 0) return process.env.PATH ?? '';
  const bin = path.join(work, 'bin');
  mkdirSync(bin, { recursive: true });
  writeFileSync(path.join(bin, 'pnpm'), '#!/bin/sh\nexec corepack pnpm "$@"\n');
  chmodSync(path.join(bin, 'pnpm'), 0o755);
  return `${bin}${path.delimiter}${process.env.PATH ?? ''}`;
}

interface Manifest {
  name: string;
  private?: boolean;
  dependencies?: Record<string, string>;
  exports?: Record<string, Record<string, string>>;
  files?: string[];
  bin?: Record<string, string>;
}

/** Workspace package directories by name. */
function workspacePackages(): Map<string, string> {
  const packages = new Map<string, string>();
  for (const group of ['libs', 'packages', 'modules']) {
    for (const name of readdirSyncSafe(path.join(repoRoot, group))) {
      const dir = path.join(repoRoot, group, name);
      if (existsSync(path.join(dir, 'package.json'))) packages.set(readManifest(dir).name, dir);
    }
  }
  packages.set('@syncpoint/service', path.join(repoRoot, 'service'));
  return packages;
}

function readdirSyncSafe(dir: string): string[] {
  return existsSync(dir) ? readdirSync(dir) : [];
}

const readManifest = (dir: string): Manifest =>
  JSON.parse(readFileSync(path.join(dir, 'package.json'), 'utf8')) as Manifest;

/** The service and every workspace package it depends on, transitively. */
function serviceClosure(): Array<{ name: string; dir: string }> {
  const all = workspacePackages();
  const seen = new Map<string, string>();
  const visit = (name: string) => {
    if (seen.has(name)) return;
    const dir = all.get(name);
    if (!dir) throw new Error(`workspace package ${name} not found`);
    seen.set(name, dir);
    for (const [dependency, range] of Object.entries(readManifest(dir).dependencies ?? {})) {
      if (range.startsWith('workspace:')) visit(dependency);
    }
  };
  visit('@syncpoint/service');
  return [...seen].map(([name, dir]) => ({ name, dir }));
}

beforeAll(async () => {
  work = await mkdtemp(path.join(tmpdir(), 'syncpoint-pack-'));
  // As root, embedded Postgres runs its binaries as a `postgres` user, who must be able to reach them and the data.
  chmodSync(work, 0o755);
  cleanEnv = { ...process.env };
  for (const key of Object.keys(cleanEnv)) {
    if (
      key.startsWith('POWERSYNC_') ||
      key.startsWith('npm_') ||
      key.startsWith('VITEST') ||
      key === 'INIT_CWD' ||
      key === 'NODE_OPTIONS'
    ) {
      delete cleanEnv[key];
    }
  }
});

describe('release: pack, install with npm, run', () => {
  it(
    'builds every package, packs the service with its workspace dependencies, installs them into an empty folder and runs syncpoint',
    async () => {
      const env = { ...cleanEnv, PATH: pnpmPath(), TURBO_TELEMETRY_DISABLED: '1', COREPACK_INTEGRITY_KEYS: '0' };

      // 1. `pnpm build` (turbo): every package's dist.
      run('pnpm', ['run', 'build'], { cwd: repoRoot, env, timeoutMs: 15 * MINUTE });

      // 2. Pack the service and its workspace dependencies; check what each tarball declares and contains.
      const tarballs = path.join(work, 'tarballs');
      mkdirSync(tarballs);
      const closure = serviceClosure();
      expect(closure.map((entry) => entry.name)).toEqual(
        expect.arrayContaining(['@syncpoint/service', '@syncpoint/service-core', '@syncpoint/codecs'])
      );
      for (const { name, dir } of closure) {
        const manifest = readManifest(dir);
        expect(manifest.private, `${name} is publishable`).not.toBe(true);
        expect(manifest.files, `${name} files`).toEqual(['dist']);
        expect(manifest.exports?.['.'], `${name} exports`).toMatchObject({
          '@syncpoint/source': './src/index.ts',
          types: './dist/index.d.ts',
          default: './dist/index.js'
        });
        run('pnpm', ['pack', '--pack-destination', tarballs], { cwd: dir, env });
      }
      const files = (await readdir(tarballs)).filter((file) => file.endsWith('.tgz'));
      expect(files).toHaveLength(closure.length);
      for (const file of files) {
        const listing = run('tar', ['tzf', path.join(tarballs, file)], { cwd: work }).stdout.split('\n');
        expect(listing, file).toContain('package/dist/index.js');
        expect(listing, file).toContain('package/dist/index.d.ts');
        expect(
          listing.filter((entry) => entry.startsWith('package/src/')),
          `${file} ships only dist`
        ).toEqual([]);
        const packed = JSON.parse(
          run('tar', ['xzf', path.join(tarballs, file), '-O', 'package/package.json'], { cwd: work }).stdout
        ) as Manifest;
        for (const range of Object.values(packed.dependencies ?? {}))
          expect(range, `${file}: workspace: ranges are rewritten`).not.toMatch(/^workspace:/);
        if (packed.name === '@syncpoint/service') {
          expect(packed.bin).toEqual({ syncpoint: './dist/cli.js' });
          expect(listing).toContain('package/dist/cli.js');
        }
      }

      // 3. Install every tarball together into an empty folder (workspace:* became exact versions).
      const app = path.join(work, 'app');
      mkdirSync(app);
      writeFileSync(path.join(app, 'package.json'), JSON.stringify({ name: 'syncpoint-install-test', private: true }));
      run(
        'npm',
        ['install', '--no-audit', '--no-fund', '--loglevel=error', ...files.map((file) => path.join(tarballs, file))],
        {
          cwd: app,
          env: cleanEnv,
          timeoutMs: 10 * MINUTE
        }
      );
      const syncpoint = path.join(app, 'node_modules', '.bin', 'syncpoint');
      expect(existsSync(syncpoint)).toBe(true);

      // 4. `syncpoint --help` from the install.
      const help = run(syncpoint, ['--help'], { cwd: app, env: cleanEnv });
      expect(help.stdout).toContain('Usage: syncpoint');
      expect(help.stdout).toMatch(/start .*\n[\s\S]*status[\s\S]*token[\s\S]*fetch/);

      // 5. The zero-config default (embedded Postgres) in an empty folder, and a checkpoint request against it.
      const cwd = path.join(work, 'run');
      mkdirSync(cwd);
      const child = spawn(syncpoint, ['start', '--port', '0'], { cwd, env: cleanEnv });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (chunk) => (stdout += chunk));
      child.stderr.on('data', (chunk) => (stderr += chunk));
      const exited = new Promise<number | null>((resolve) => child.on('close', resolve));
      try {
        const deadline = Date.now() + 3 * MINUTE;
        while (!/Press Ctrl-C to stop/.test(stdout)) {
          if (child.exitCode !== null || Date.now() > deadline)
            throw new Error(`syncpoint start did not come up:\n${stdout}\n${stderr}`);
          await new Promise((resolve) => setTimeout(resolve, 200));
        }
        const url = /Syncpoint is running at (http:\/\/\S+)/.exec(stdout)?.[1];
        const token = /Dev token for user "dev-user".*\n\s+(\S+)/.exec(stdout)?.[1];
        expect(url, stdout).toBeDefined();
        expect(token, stdout).toMatch(/^[\w-]+\.[\w-]+\.[\w-]+$/);
        const response = await fetch(`${url}/sync/checkpoint-request`, {
          method: 'POST',
          headers: { Authorization: `Token ${token}`, 'Content-Type': 'application/json' },
          body: JSON.stringify({ client_id: 'pack-test', checkpoint_request_id: '1' })
        });
        expect(response.status).toBe(200);
        expect(await response.json()).toEqual({ data: { checkpoint_request_id: '1' } });
      } finally {
        child.kill('SIGINT');
      }
      expect(await exited, `${stdout}\n${stderr}`).toBe(0);
    },
    30 * MINUTE
  );
});
