/**
 * `--profile` (issue 14 item 1): a CPU profile of this process's main thread — where the service runs in every
 * benchmark; load generators run in worker threads and are not sampled — rendered as a flame graph SVG, so a reader
 * of bench/results/ sees where the time goes without opening DevTools.
 */
import { Session } from 'node:inspector/promises';
import path from 'node:path';

/** The V8 CPU profile format (`Profiler.stop`), as far as it is read here. */
export interface CpuProfile {
  nodes: CpuProfileNode[];
  startTime: number;
  endTime: number;
}

interface CpuProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
  children?: number[];
}

/** Starts sampling the main thread every `intervalUs`; the returned function stops and hands the profile back. */
export async function startCpuProfile(intervalUs = 500): Promise<() => Promise<CpuProfile>> {
  const session = new Session();
  session.connect();
  await session.post('Profiler.enable');
  await session.post('Profiler.setSamplingInterval', { interval: intervalUs });
  await session.post('Profiler.start');
  return async () => {
    const { profile } = await session.post('Profiler.stop');
    session.disconnect();
    return profile;
  };
}

/** A call path merged by frame: what the flame graph draws. */
interface Frame {
  name: string;
  file: string;
  self: number;
  total: number;
  children: Map<string, Frame>;
}

/** Samples where the thread waited are not CPU time: left out of the graph and of the percentages. */
const NOT_CPU = new Set(['(idle)', '(root)']);

function frameFile(url: string, lineNumber: number): string {
  if (!url) return '';
  const clean = url.replace(/^file:\/\//, '');
  const inModules = clean.lastIndexOf('node_modules/');
  const short =
    inModules >= 0
      ? clean.slice(inModules + 'node_modules/'.length)
      : clean.replace(/^.*?\/(packages|modules|libs|service|bench)\//, '$1/');
  return `${short}:${lineNumber + 1}`;
}

function buildTree(profile: CpuProfile): Frame {
  const byId = new Map(profile.nodes.map((node) => [node.id, node]));
  const root: Frame = { name: 'all CPU', file: '', self: 0, total: 0, children: new Map() };
  const visit = (node: CpuProfileNode, parent: Frame) => {
    let frame = parent;
    const name = node.callFrame.functionName || '(anonymous)';
    if (!NOT_CPU.has(name)) {
      const file = frameFile(node.callFrame.url, node.callFrame.lineNumber);
      const key = `${name}\u0000${file}`;
      frame = parent.children.get(key) ?? { name, file, self: 0, total: 0, children: new Map() };
      parent.children.set(key, frame);
      frame.self += node.hitCount ?? 0;
    }
    for (const childId of node.children ?? []) {
      const child = byId.get(childId);
      if (child) visit(child, frame);
    }
  };
  const top = profile.nodes[0];
  if (top) visit(top, root);
  const total = (frame: Frame): number => {
    frame.total = frame.self;
    for (const child of frame.children.values()) frame.total += total(child);
    return frame.total;
  };
  total(root);
  return root;
}

/** Functions by self time, the first thing to read in a profile. */
export function hottestFunctions(profile: CpuProfile, count = 15): { name: string; file: string; percent: number }[] {
  const root = buildTree(profile);
  const self = new Map<string, { name: string; file: string; samples: number }>();
  const walk = (frame: Frame) => {
    const key = `${frame.name}\u0000${frame.file}`;
    const entry = self.get(key) ?? { name: frame.name, file: frame.file, samples: 0 };
    entry.samples += frame.self;
    self.set(key, entry);
    for (const child of frame.children.values()) walk(child);
  };
  for (const child of root.children.values()) walk(child);
  return [...self.values()]
    .sort((a, b) => b.samples - a.samples)
    .slice(0, count)
    .map((entry) => ({ name: entry.name, file: entry.file, percent: (100 * entry.samples) / Math.max(1, root.total) }));
}

const WIDTH = 1200;
const ROW = 16;
/** Frames narrower than this many pixels are left out: they are unreadable and would bloat the file. */
const MIN_WIDTH_PX = 0.3;

function escapeXml(text: string): string {
  return text.replace(/[<>&"']/g, (char) => `&#${char.charCodeAt(0)};`);
}

/** Colour by where the code lives: Syncpoint's own, dependencies, Node internals, V8 (GC, compiler). */
function colour(frame: Frame): string {
  const { file, name } = frame;
  if (name.startsWith('(')) return '#b0b0b0';
  if (file.startsWith('node:') || file === '') return '#e0a040';
  if (!file.includes('/') || /^(packages|modules|libs|service|bench)\//.test(file)) return '#e06040';
  return '#50a0d0';
}

/** Renders the profile as an SVG flame graph (root at the bottom, one row per call depth). */
export function renderFlameGraph(profile: CpuProfile, title: string): string {
  const root = buildTree(profile);
  const placed: { frame: Frame; x: number; depth: number; width: number }[] = [];
  const place = (frame: Frame, x: number, depth: number) => {
    const width = (frame.total / Math.max(1, root.total)) * WIDTH;
    if (width < MIN_WIDTH_PX) return;
    placed.push({ frame, x, depth, width });
    let childX = x;
    const children = [...frame.children.values()].sort((a, b) => a.name.localeCompare(b.name));
    for (const child of children) {
      place(child, childX, depth + 1);
      childX += (child.total / Math.max(1, root.total)) * WIDTH;
    }
  };
  place(root, 0, 0);
  const maxDepth = Math.max(0, ...placed.map((entry) => entry.depth));
  const height = (maxDepth + 1) * ROW + 24;
  const seconds = (profile.endTime - profile.startTime) / 1e6;
  const heading =
    `${title}: ${root.total} CPU samples over ${seconds.toFixed(1)} s ` +
    '(red: Syncpoint, blue: dependencies, orange: Node, grey: V8); hover a frame for its figures';
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${height}" font-family="monospace" font-size="11">`,
    `<text x="4" y="15" font-size="12">${escapeXml(heading)}</text>`,
    ...placed.map(({ frame, x, depth, width }) => drawFrame(frame, x, height - (depth + 1) * ROW, width, root.total)),
    '</svg>',
    ''
  ].join('\n');
}

function drawFrame(frame: Frame, x: number, y: number, width: number, rootTotal: number): string {
  const percent = ((100 * frame.total) / Math.max(1, rootTotal)).toFixed(2);
  const tooltip = `${frame.name} ${frame.file}: ${percent} % (${frame.total} samples, ${frame.self} self)`;
  const label =
    width > 40
      ? `<text x="${(x + 3).toFixed(1)}" y="${y + 12}">${escapeXml(truncate(frame.name, Math.floor((width - 6) / 6.6)))}</text>`
      : '';
  const rect = `<rect x="${x.toFixed(1)}" y="${y}" width="${width.toFixed(1)}" height="${ROW - 1}" fill="${colour(frame)}"/>`;
  return `<g><title>${escapeXml(tooltip)}</title>${rect}${label}</g>`;
}

function truncate(text: string, chars: number): string {
  if (chars <= 1) return '';
  return text.length <= chars ? text : `${text.slice(0, chars - 1)}…`;
}

/** File names of a benchmark's profile outputs under the results folder. */
export function profilePaths(resultsDir: string, benchmark: string): { svg: string; cpuprofile: string } {
  return {
    svg: path.join(resultsDir, `${benchmark}-flame.svg`),
    cpuprofile: path.join(resultsDir, `${benchmark}.cpuprofile`)
  };
}
