// Small helpers shared by the benchmarks: timing, repetition (noise), formatting, tables.
//
// A benchmark measures each case R times and reports the median with the min–max spread,
// because these machines are noisy; and it always runs a peer on the same data so that the
// ratio, not a lone absolute figure, carries the result.

import fs from 'node:fs';
import path from 'node:path';

/** Nanoseconds from an arbitrary origin (monotonic). */
export function now(): bigint {
  return process.hrtime.bigint();
}

/** Seconds elapsed since `start` (a value of now()). */
export function secondsSince(start: bigint): number {
  return Number(now() - start) / 1e9;
}

/** Runs `fn` and returns its result with the seconds it took. */
export async function timed<T>(fn: () => Promise<T>): Promise<{ value: T; seconds: number }> {
  const start = now();
  const value = await fn();
  return { value, seconds: secondsSince(start) };
}

/** The median and spread of repeated measurements of one quantity. */
export interface Sample {
  median: number;
  min: number;
  max: number;
  values: number[];
}

export function summarize(values: readonly number[]): Sample {
  if (values.length === 0) return { median: NaN, min: NaN, max: NaN, values: [] };
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  const median = sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
  return { median, min: sorted[0]!, max: sorted[sorted.length - 1]!, values: [...values] };
}

/** Measures `fn` `repeats` times in a row; each call returns one value (ops/s, MB/s, ms…). */
export async function repeat(repeats: number, fn: (rep: number) => Promise<number>): Promise<Sample> {
  const values: number[] = [];
  for (let rep = 0; rep < repeats; rep++) values.push(await fn(rep));
  return summarize(values);
}

export interface RunResult {
  ops: number;
  seconds: number;
  opsPerSecond: number;
  /** Process CPU time (user + system, all threads) per op, in microseconds. */
  cpuMicrosPerOp: number;
}

function cpuMicros(): number {
  const u = process.cpuUsage();
  return u.user + u.system;
}

/**
 * Keeps `inFlight` operations running until `seconds` have passed (no new op starts after
 * the deadline; the ones in flight finish and count). `op` gets the worker's index, so each
 * worker can own its buffers.
 */
export async function runFor(
  inFlight: number,
  seconds: number,
  op: (worker: number) => Promise<unknown>,
): Promise<RunResult> {
  const cpu = cpuMicros();
  const start = now();
  const deadline = start + BigInt(Math.round(seconds * 1e9));
  let ops = 0;
  const worker = async (w: number): Promise<void> => {
    while (now() < deadline) {
      await op(w);
      ops++;
    }
  };
  await Promise.all(Array.from({ length: inFlight }, (_, w) => worker(w)));
  const elapsed = secondsSince(start);
  return { ops, seconds: elapsed, opsPerSecond: ops / elapsed, cpuMicrosPerOp: (cpuMicros() - cpu) / Math.max(1, ops) };
}

/** Runs exactly `total` operations with `inFlight` of them running at a time. */
export async function runCount(
  inFlight: number,
  total: number,
  op: (index: number, worker: number) => Promise<unknown>,
): Promise<RunResult> {
  const cpu = cpuMicros();
  const start = now();
  let next = 0;
  const worker = async (w: number): Promise<void> => {
    while (next < total) {
      const i = next++;
      await op(i, w);
    }
  };
  await Promise.all(Array.from({ length: Math.min(inFlight, Math.max(1, total)) }, (_, w) => worker(w)));
  const elapsed = secondsSince(start);
  return { ops: total, seconds: elapsed, opsPerSecond: total / elapsed, cpuMicrosPerOp: (cpuMicros() - cpu) / Math.max(1, total) };
}

// ---------------------------------------------------------------------------------------
// Formatting

/** 12,345 */
export function formatCount(n: number): string {
  if (!Number.isFinite(n)) return String(n);
  return Math.round(n).toLocaleString('en-US');
}

/** Operations per second: "12,345 ops/s". */
export function formatOps(opsPerSecond: number): string {
  return `${formatCount(opsPerSecond)} ops/s`;
}

/** Bytes per second as MB/s (10^6 bytes). */
export function mbPerSecond(bytes: number, seconds: number): number {
  return bytes / seconds / 1e6;
}

export function formatMBs(mbs: number): string {
  return `${mbs.toFixed(1)} MB/s`;
}

export function formatMs(ms: number): string {
  return ms >= 100 ? `${ms.toFixed(0)} ms` : `${ms.toFixed(1)} ms`;
}

/** A ratio such as "21.3x" (two decimals below 10). */
export function formatRatio(r: number): string {
  if (!Number.isFinite(r)) return '—';
  return r >= 10 ? `${r.toFixed(1)}x` : `${r.toFixed(2)}x`;
}

export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${v >= 100 || u === 0 ? v.toFixed(0) : v.toFixed(1)} ${units[u]}`;
}

/** "median (min–max)", each part formatted by `format` without its unit repeated. */
export function formatSample(s: Sample, format: (n: number) => string): string {
  if (s.values.length <= 1) return format(s.median);
  return `${format(s.median)} (${stripUnit(format(s.min))}–${stripUnit(format(s.max))})`;
}

function stripUnit(text: string): string {
  const space = text.indexOf(' ');
  return space < 0 ? text : text.slice(0, space);
}

/** Prints rows as an aligned text table; the first column is left-aligned, the rest right. */
export function printTable(headers: readonly string[], rows: readonly (readonly string[])[], out = console.log): void {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: readonly string[]): string =>
    cells
      .map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!)))
      .join(' | ')
      .trimEnd();
  out(line(headers));
  out(widths.map((w) => '-'.repeat(w)).join('-|-'));
  for (const r of rows) out(line(headers.map((_, i) => r[i] ?? '')));
}

/** A section title. */
export function printTitle(title: string, out = console.log): void {
  out('');
  out(title);
  out('='.repeat(title.length));
}

/** Progress goes to stderr so that stdout holds only results. */
export function progress(message: string): void {
  process.stderr.write(`  … ${message}\n`);
}

// ---------------------------------------------------------------------------------------
// Deterministic randomness: both sides of a comparison see the same sequence.

/** The tests' seeded PRNG (mulberry32), floats in [0, 1). */
export { makeRandom as seededRandom } from '../src/media/random.js';

/** Linux's USER_HZ, the unit of utime and stime in /proc/PID/stat. */
const CLOCK_TICKS_PER_S = 100;

/** User + system CPU time of a process (all its threads) in µs, from /proc; NaN where unknown or gone. */
export function processCpuUs(pid: number | undefined): number {
  if (pid === undefined) return NaN;
  try {
    // Fields after the command name (which may hold spaces): utime and stime are the 12th and 13th.
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'latin1');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return ((Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS_PER_S) * 1e6;
  } catch {
    return NaN;
  }
}

/** The options every timed benchmark takes (--tmp is accepted: the data lives in a temporary directory anyway). */
export interface TimedArgs {
  quick: boolean;
  repeats: number;
  seconds: number;
  dir: string | undefined;
  keep: boolean;
}

/**
 * Parses [--quick] [--repeats N] [--seconds S] [--dir PATH] [--keep]; a string is the error.
 * `more` takes a benchmark's own options: given one and a reader of its value, it returns
 * true when it took it, a string when its value is wrong, false when it does not know it.
 */
export function parseTimedArgs(
  argv: readonly string[],
  { quickRepeats = 1, more }: { quickRepeats?: number; more?: (option: string, value: () => string | undefined) => boolean | string } = {},
): TimedArgs | string {
  const quick = argv.includes('--quick');
  const args: TimedArgs = { quick, repeats: quick ? quickRepeats : 3, seconds: quick ? 0.5 : 2, dir: undefined, keep: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const taken = more?.(a, () => argv[++i]) ?? false;
    if (typeof taken === 'string') return taken;
    if (taken) continue;
    if (a === '--quick' || a === '--tmp') continue;
    if (a === '--keep') args.keep = true;
    else if (a === '--repeats') {
      const n = Number(argv[++i]);
      if (!Number.isInteger(n) || n < 1) return '--repeats needs an integer >= 1';
      args.repeats = n;
    } else if (a === '--seconds') {
      const s = Number(argv[++i]);
      if (!(s > 0)) return '--seconds needs a number > 0';
      args.seconds = s;
    } else if (a === '--dir') {
      const d = argv[++i];
      if (d === undefined) return '--dir needs a path';
      args.dir = d;
    } else return `unknown option ${a}`;
  }
  return args;
}

/** The full path of an executable on PATH, or undefined. */
export function which(name: string): string | undefined {
  for (const dir of (process.env.PATH ?? '').split(':')) {
    const p = path.join(dir, name);
    try {
      fs.accessSync(p, fs.constants.X_OK);
      return p;
    } catch {
      // not here
    }
  }
  return undefined;
}
