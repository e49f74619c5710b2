// Benchmark of the block face against plain fs doing the same work on the same filesystem.
//
//   node dist/bench/main.js block [--quick] [--repeats N] [--dir PATH | --tmp] [--keep] [--only CASES]
//                                 [--no-preallocate]
//
// Data lives in <project>/.bench/block-XXXXXX (git-ignored), or under os.tmpdir() with --tmp,
// or under --dir; atomio's store and the fs peer's file always share that directory, so both
// sides run on the same filesystem. Progress goes to stderr, results to stdout.
//
// Cases (each timed case runs R times, atomio and fs alternating, median and min–max shown):
//   1. 4 KiB random durable writes, 1 and 64 in flight. Peer: pwrite + fdatasync per write on
//      a preallocated file (64 in flight through the async fs API: the libuv threadpool runs
//      them 4 at a time — the honest per-write-fsync baseline). atomio's store is opened with
//      `preallocate` likewise, so that neither side's flushes commit block allocations
//      (--no-preallocate: a store whose file grows as it is written, each new segment
//      zero-filled just ahead of use only while batches are small).
//   2. 4 KiB random reads of the populated store vs the same file, 1 and 64 in flight.
//   3. 1 MiB sequential durable writes (write of 1 MiB vs pwrite 1 MiB + fdatasync), MB/s.
//   4. open() of a store holding 1,000,000 separate extents (after close, which checkpoints).
//   5. write amplification of 4 KiB random overwrites (uniform and 80/20) with the live data
//      at 50% and 80% of stats().usableBytes, each in a child process (a store whose cleaner
//      stalls is reported, and cannot hang the run).
// A "targets" section at the end prints PASS/MISS for every target this benchmark knows.

import { execFileSync, fork, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { open, type Store } from '../src/index.js';
import {
  formatBytes,
  formatCount,
  formatMBs,
  formatMs,
  formatOps,
  formatRatio,
  formatSample,
  mbPerSecond,
  printTable,
  printTitle,
  progress,
  runCount,
  runFor,
  seededRandom,
  summarize,
  timed,
  type Sample,
} from './report.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;
const BLOCK = 4 * KiB;
const MAX_IN_FLIGHT = 64;
/** Size of the writes that fill the store in the amplification case. */
const FILL_WRITE_BYTES = 64 * KiB;

interface Config {
  quick: boolean;
  repeats: number;
  /** Length of each timed run. */
  seconds: number;
  /** The lba range of the random cases, and the size of the fs peer's file. */
  rangeBytes: number;
  randomCapacity: number;
  sequentialCapacity: number;
  openExtents: number;
  openCapacity: number;
  waCapacity: number;
  /** Overwrite this many times the live data in the amplification case. */
  waOverwrite: number;
  /** A workload with no commit completing for this long is reported as stalled. */
  stallSeconds: number;
}

function configFor(quick: boolean, repeats: number | undefined): Config {
  return quick
    ? {
        quick,
        repeats: repeats ?? 3,
        seconds: 0.3,
        rangeBytes: 32 * MiB,
        randomCapacity: 512 * MiB,
        sequentialCapacity: 512 * MiB,
        openExtents: 50_000,
        openCapacity: 256 * MiB,
        waCapacity: 256 * MiB,
        waOverwrite: 0.5,
        stallSeconds: 5,
      }
    : {
        quick,
        repeats: repeats ?? 3,
        seconds: 3,
        rangeBytes: 256 * MiB,
        randomCapacity: 4 * GiB,
        sequentialCapacity: 4 * GiB,
        openExtents: 1_000_000,
        openCapacity: 2 * GiB,
        waCapacity: 256 * MiB,
        waOverwrite: 3,
        stallSeconds: 20,
      };
}

interface Row {
  name: string;
  atomio: string;
  baseline: string;
  ratio: string;
}

interface Target {
  name: string;
  measured: string;
  pass: boolean | undefined;
}

class Results {
  readonly rows: Row[] = [];
  readonly notes: string[] = [];
  readonly targets: Target[] = [];
  /** A store stalled: its engine keeps working in the background, so the process must exit. */
  wedged = false;

  compare(name: string, atomio: Sample, baseline: Sample, format: (n: number) => string): number {
    const ratio = atomio.median / baseline.median;
    this.rows.push({
      name,
      atomio: formatSample(atomio, format),
      baseline: formatSample(baseline, format),
      ratio: formatRatio(ratio),
    });
    return ratio;
  }

  /** Notes the median CPU time per op of each side (process user + system, all threads). */
  cpu(name: string, atomio: readonly number[], peer: readonly number[]): void {
    const a = summarize(atomio).median;
    const f = summarize(peer).median;
    this.notes.push(`${name}: CPU per op (process user+sys, median): atomio ${a.toFixed(1)} µs, fs ${f.toFixed(1)} µs`);
  }

  failed(name: string, error: unknown): void {
    const message = error instanceof Error ? error.message : String(error);
    this.rows.push({ name, atomio: `error: ${message.slice(0, 60)}`, baseline: '', ratio: '' });
    this.notes.push(`${name} failed: ${message}`);
  }
}

// ---------------------------------------------------------------------------------------
// Plain fs, through the same callback API the engine's FileMedia uses.

function pwrite(fd: number, buffer: Buffer, position: number): Promise<void> {
  return new Promise((resolve, reject) => {
    fs.write(fd, buffer, 0, buffer.length, position, (error, written) => {
      if (error) reject(error);
      else if (written !== buffer.length) reject(new Error(`short write: ${written} of ${buffer.length}`));
      else resolve();
    });
  });
}

function pread(fd: number, buffer: Buffer, position: number): Promise<void> {
  return new Promise((resolve, reject) => {
    fs.read(fd, buffer, 0, buffer.length, position, (error, got) => {
      if (error) reject(error);
      else if (got !== buffer.length) reject(new Error(`short read: ${got} of ${buffer.length}`));
      else resolve();
    });
  });
}

function fdatasync(fd: number): Promise<void> {
  return new Promise((resolve, reject) => fs.fdatasync(fd, (error) => (error ? reject(error) : resolve())));
}

/** Writes the whole file once (1 MiB at a time) and syncs it: the peer overwrites allocated blocks. */
function preallocate(filePath: string, bytes: number, fill: Buffer): number {
  const fd = fs.openSync(filePath, 'w+');
  for (let at = 0; at < bytes; at += fill.length) fs.writeSync(fd, fill, 0, Math.min(fill.length, bytes - at), at);
  fs.fdatasyncSync(fd);
  return fd;
}

// ---------------------------------------------------------------------------------------
// Stall detection: a workload whose commits stop completing is reported, not waited on.

class Stall extends Error {}

/**
 * Runs `work`, rejecting with Stall when no commit of `store` completes for `stallSeconds`.
 * A stalled engine keeps running in the background; the caller must not close the store.
 */
async function guarded<T>(store: Store, stallSeconds: number, what: string, work: () => Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const stalled = new Promise<never>((_, reject) => {
    let commits = store.stats().commits;
    let quietSince = Date.now();
    timer = setInterval(() => {
      const s = store.stats();
      if (s.commits !== commits) {
        commits = s.commits;
        quietSince = Date.now();
      } else if (Date.now() - quietSince > stallSeconds * 1000) {
        reject(
          new Stall(
            `${what} stalled: no commit completed for ${stallSeconds} s while the engine cleaned ` +
              `${s.segmentsCleaned} segments and wrote ${s.checkpoints} checkpoints; ${s.freeSegments} of ${s.segments} segments free, ` +
              `live ${formatBytes(s.liveBytes)} of usable ${formatBytes(s.usableBytes)}, ${formatBytes(s.bytesUsed)} of segments in use`,
          ),
        );
      }
    }, 1000);
  });
  try {
    return await Promise.race([work(), stalled]);
  } finally {
    clearInterval(timer);
  }
}

// ---------------------------------------------------------------------------------------
// Environment

const FS_TYPES: Record<number, string> = {
  0xef53: 'ext2/3/4',
  0x58465342: 'xfs',
  0x9123683e: 'btrfs',
  0x01021994: 'tmpfs',
  0x794c7630: 'overlayfs',
  0x6969: 'nfs',
  0x65735546: 'fuse',
  0x2fc12fc1: 'zfs',
  0xf2f52010: 'f2fs',
};

function filesystemOf(dir: string): string {
  try {
    const s = fs.statfsSync(dir);
    return FS_TYPES[s.type] ?? `type 0x${s.type.toString(16)}`;
  } catch {
    return 'unknown';
  }
}

/** The commit measured, and whether src/ differs from it (benchmarks of a moving tree say so). */
function sourceVersion(): string {
  const root = fileURLToPath(new URL('../..', import.meta.url));
  try {
    const git = (...args: string[]): string => execFileSync('git', args, { cwd: root, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    const commit = git('rev-parse', '--short', 'HEAD');
    const dirty = git('status', '--porcelain', '--', 'src').length > 0;
    return `commit ${commit}${dirty ? ' + uncommitted changes in src/' : ''}`;
  } catch {
    return 'version unknown (not a git checkout)';
  }
}

/** 1, 5 and 15 minute load averages: other work on the machine skews every figure. */
function loadAverage(): string {
  return os
    .loadavg()
    .map((l) => l.toFixed(2))
    .join(' ');
}

interface Args {
  quick: boolean;
  repeats: number | undefined;
  dir: string | undefined;
  tmp: boolean;
  keep: boolean;
  only: Set<CaseName>;
  preallocate: boolean;
}

const CASES = ['random', 'sequential', 'open', 'wa'] as const;
type CaseName = (typeof CASES)[number];
const USAGE = `usage: node dist/bench/main.js block [--quick] [--repeats N] [--dir PATH | --tmp] [--keep] [--only ${CASES.join('|')}[,…]] [--no-preallocate]`;

function parseArgs(argv: string[]): Args | string {
  const args: Args = { quick: false, repeats: undefined, dir: undefined, tmp: false, keep: false, only: new Set(CASES), preallocate: true };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--quick') args.quick = true;
    else if (a === '--tmp') args.tmp = true;
    else if (a === '--keep') args.keep = true;
    else if (a === '--no-preallocate') args.preallocate = false;
    else if (a === '--repeats') {
      const n = Number(argv[++i]);
      if (!Number.isInteger(n) || n < 1) return '--repeats needs an integer >= 1';
      args.repeats = n;
    } else if (a === '--dir') {
      const d = argv[++i];
      if (d === undefined) return '--dir needs a path';
      args.dir = d;
    } else if (a === '--only') {
      const names = (argv[++i] ?? '').split(',');
      if (!names.every((n): n is CaseName => (CASES as readonly string[]).includes(n))) return `--only takes ${CASES.join(', ')}`;
      args.only = new Set(names);
    } else return `unknown option ${a}`;
  }
  return args;
}

// ---------------------------------------------------------------------------------------

export async function main(argv: string[]): Promise<number> {
  if (argv[0] === '--wa-worker') return workloadChild(argv[1] ?? '{}');
  const args = parseArgs(argv);
  if (typeof args === 'string') {
    process.stderr.write(`block: ${args}\n${USAGE}\n`);
    return 2;
  }
  const cfg = configFor(args.quick, args.repeats);
  const projectBench = fileURLToPath(new URL('../../.bench', import.meta.url));
  const parent = path.resolve(args.dir ?? (args.tmp ? os.tmpdir() : projectBench));
  fs.mkdirSync(parent, { recursive: true });
  const dir = fs.mkdtempSync(path.join(parent, 'block-'));

  const cpus = os.cpus();
  const started = Date.now();
  console.log(`atomio block benchmark${cfg.quick ? ' (--quick: every case shrunk; verdicts indicative only)' : ''}`);
  console.log(`node ${process.version} on ${os.platform()} ${os.release()} ${os.arch()}`);
  console.log(`cpu: ${cpus[0]?.model.trim() ?? 'unknown'} × ${cpus.length}, ${formatBytes(os.totalmem())} RAM`);
  console.log(`libuv threadpool: ${process.env.UV_THREADPOOL_SIZE ?? '4 (default)'}; load average at start ${loadAverage()}`);
  console.log(`data directory: ${dir} (${filesystemOf(dir)}); atomio's store and the fs peer's file both live here`);
  console.log(
    `each timed case: ${cfg.repeats} run(s) of ${cfg.seconds} s per side, atomio and fs alternating; shown as median (min–max)`,
  );
  console.log(`atomio ${sourceVersion()} (as built in dist/)`);
  console.log(`atomio: default sector size (512 B), durability 'full' for timed cases; page cache warm on both sides`);

  const results = new Results();
  const cleanup = (): void => {
    if (!args.keep) fs.rmSync(dir, { recursive: true, force: true });
  };
  const interrupted = (): void => {
    activeChild?.kill('SIGKILL');
    cleanup();
    process.exit(130);
  };
  process.once('SIGINT', interrupted);
  process.once('SIGTERM', interrupted);
  try {
    if (args.only.has('random')) await randomCases(cfg, dir, results, args.preallocate);
    if (args.only.has('sequential')) await sequentialCase(cfg, dir, results);
    if (results.rows.length > 0) {
      printTitle('Throughput (case | atomio | fs baseline | ratio)');
      printTable(
        ['case', 'atomio', 'fs baseline', 'ratio'],
        results.rows.map((r) => [r.name, r.atomio, r.baseline, r.ratio]),
      );
    }
    if (args.only.has('open')) await openCase(cfg, dir, results);
    if (args.only.has('wa')) await amplificationCase(cfg, dir, results);
  } finally {
    cleanup();
    process.off('SIGINT', interrupted);
    process.off('SIGTERM', interrupted);
  }

  if (results.notes.length > 0) {
    printTitle('Notes');
    for (const n of results.notes) console.log(`- ${n}`);
  }
  printTitle('Targets');
  printTable(
    ['target', 'measured', 'verdict'],
    results.targets.map((t) => [t.name, t.measured, t.pass === undefined ? 'n/a' : t.pass ? 'PASS' : 'MISS']),
  );
  console.log('');
  console.log(
    `total time ${((Date.now() - started) / 1000).toFixed(0)} s; load average at end ${loadAverage()}${args.keep ? `; data kept in ${dir}` : ''}`,
  );
  if (results.wedged) {
    console.log('exiting: a wedged store keeps its engine running, so the process would not end by itself');
    process.exit(1);
  }
  return 0;
}

// ---------------------------------------------------------------------------------------
// 1 + 2: 4 KiB random durable writes, then random reads of the populated store and file.

type Op = (worker: number) => Promise<unknown>;

/**
 * Runs atomio and the peer `cfg.repeats` times each, alternating, on the same seeded random
 * sequence (seed `seedBase + rep`), and collects ops/s and CPU per op for both.
 */
async function alternate(
  name: string,
  cfg: Config,
  inFlight: number,
  seedBase: number,
  sides: { atomio: (rnd: () => number) => Op; peer: (rnd: () => number) => Op },
): Promise<{ atomio: number[]; peer: number[]; atomioCpu: number[]; peerCpu: number[] }> {
  const out = { atomio: [] as number[], peer: [] as number[], atomioCpu: [] as number[], peerCpu: [] as number[] };
  for (let rep = 0; rep < cfg.repeats; rep++) {
    progress(`${name}: run ${rep + 1}/${cfg.repeats}`);
    const a = await runFor(inFlight, cfg.seconds, sides.atomio(seededRandom(seedBase + rep)));
    out.atomio.push(a.opsPerSecond);
    out.atomioCpu.push(a.cpuMicrosPerOp);
    const f = await runFor(inFlight, cfg.seconds, sides.peer(seededRandom(seedBase + rep)));
    out.peer.push(f.opsPerSecond);
    out.peerCpu.push(f.cpuMicrosPerOp);
  }
  return out;
}

async function randomCases(cfg: Config, dir: string, results: Results, preallocateStore: boolean): Promise<void> {
  const blocks = cfg.rangeBytes / BLOCK;
  const fill = randomBytes(MiB);
  const pool = randomBytes(MAX_IN_FLIGHT * BLOCK);
  const slot = (w: number): Buffer => pool.subarray(w * BLOCK, (w + 1) * BLOCK);

  progress(`random: filling ${formatBytes(cfg.rangeBytes)} in the fs file and in the store`);
  const filePath = path.join(dir, 'random.fs');
  const fd = preallocate(filePath, cfg.rangeBytes, fill);
  const opening = performance.now();
  const store = await open(path.join(dir, 'random.atomio'), { capacity: cfg.randomCapacity, preallocate: preallocateStore });
  results.notes.push(
    preallocateStore
      ? `random cases: atomio's store opened with preallocate, as the fs file is preallocated (zeros over ${formatBytes(cfg.randomCapacity)}: open took ${formatMs(performance.now() - opening)})`
      : `random cases: atomio's store opened without preallocate (--no-preallocate): its file grows as segments are first used`,
  );
  try {
    const perBlock = BLOCK / store.block.sectorSize;
    const perMiB = MiB / store.block.sectorSize;
    await runCount(8, cfg.rangeBytes / MiB, (i) => store.block.write(i * perMiB, fill));

    let peerOneInFlight = NaN;
    for (const inFlight of [1, MAX_IN_FLIGHT]) {
      const name = `4 KiB random durable writes, ${inFlight} in flight`;
      try {
        const before = store.stats();
        const { atomio, peer, atomioCpu, peerCpu } = await alternate(name, cfg, inFlight, 1000, {
          atomio: (rnd) => (w) => store.block.write(Math.floor(rnd() * blocks) * perBlock, slot(w)),
          peer: (rnd) => async (w) => {
            await pwrite(fd, slot(w), Math.floor(rnd() * blocks) * BLOCK);
            await fdatasync(fd);
          },
        });
        results.cpu(name, atomioCpu, peerCpu);
        const after = store.stats();
        const ratio = results.compare(name, summarize(atomio), summarize(peer), formatOps);
        const commits = after.commits - before.commits;
        const flushes = after.flushes - before.flushes;
        results.notes.push(
          `${name}: atomio made ${formatCount(commits)} commits with ${formatCount(flushes)} flushes ` +
            `(${(commits / Math.max(1, flushes)).toFixed(1)} commits/flush), cleaned ${after.segmentsCleaned - before.segmentsCleaned} segments, ` +
            `wrote ${after.checkpoints - before.checkpoints} checkpoints; store ${formatBytes(after.bytesUsed)} of segments in use`,
        );
        if (inFlight === 1) peerOneInFlight = summarize(peer).median;
        if (inFlight === MAX_IN_FLIGHT && Number.isFinite(peerOneInFlight)) {
          // Each batch costs at least one flush; a flush is no cheaper than one pwrite + fdatasync.
          const bound = inFlight * peerOneInFlight;
          results.notes.push(
            `${name}: with at most ${inFlight} commits per flush, and a flush no cheaper than the peer's 1-in-flight ` +
              `pwrite + fdatasync (${formatMs(1000 / peerOneInFlight)}), atomio is bounded near ${formatOps(bound)}, ` +
              `${formatRatio(bound / summarize(peer).median)} the fs ${inFlight}-in-flight baseline`,
          );
        }
        if (inFlight === MAX_IN_FLIGHT) {
          // The per-write-fsync baseline is one pwrite + fdatasync after another: at 64 in
          // flight the kernel merges the fs peer's concurrent fdatasyncs, so that figure is
          // printed beside it (the table's ratio) but is no longer one fsync per write.
          const perWriteFsync = ratio * (summarize(peer).median / peerOneInFlight);
          results.targets.push({
            name: `random 4 KiB durable writes at ${inFlight} in flight >= 20x per-write-fsync fs (pwrite + fdatasync, 1 in flight)`,
            measured: formatRatio(perWriteFsync),
            pass: perWriteFsync >= 20,
          });
        }
      } catch (error) {
        results.failed(name, error);
        if (inFlight === MAX_IN_FLIGHT) {
          results.targets.push({ name: `random 4 KiB durable writes at ${inFlight} in flight >= 20x fs`, measured: 'error', pass: false });
        }
      }
    }

    for (const inFlight of [1, MAX_IN_FLIGHT]) {
      const name = `4 KiB random reads, ${inFlight} in flight`;
      try {
        const buffers = Array.from({ length: inFlight }, () => Buffer.allocUnsafe(BLOCK));
        const { atomio, peer, atomioCpu, peerCpu } = await alternate(name, cfg, inFlight, 2000, {
          atomio: (rnd) => () => store.block.read(Math.floor(rnd() * blocks) * perBlock, perBlock),
          peer: (rnd) => (w) => pread(fd, buffers[w]!, Math.floor(rnd() * blocks) * BLOCK),
        });
        results.cpu(name, atomioCpu, peerCpu);
        results.compare(name, summarize(atomio), summarize(peer), formatOps);
      } catch (error) {
        results.failed(name, error);
      }
    }
  } finally {
    await store.close();
    fs.closeSync(fd);
    fs.rmSync(filePath, { force: true });
    fs.rmSync(path.join(dir, 'random.atomio'), { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------------------
// 3: 1 MiB sequential durable writes, one at a time.

async function sequentialCase(cfg: Config, dir: string, results: Results): Promise<void> {
  const name = '1 MiB sequential durable writes, 1 in flight';
  const fill = randomBytes(MiB);
  const writes = cfg.rangeBytes / MiB;
  const filePath = path.join(dir, 'sequential.fs');
  const storeDir = path.join(dir, 'sequential.atomio');
  progress(`${name}: preallocating the fs file`);
  const fd = preallocate(filePath, cfg.rangeBytes, fill);
  const store = await open(storeDir, { capacity: cfg.sequentialCapacity });
  try {
    const perMiB = MiB / store.block.sectorSize;
    let nextAtomio = 0;
    let nextFs = 0;
    const atomio: number[] = [];
    const peer: number[] = [];
    const atomioCpu: number[] = [];
    const peerCpu: number[] = [];
    for (let rep = 0; rep < cfg.repeats; rep++) {
      progress(`${name}: run ${rep + 1}/${cfg.repeats}`);
      const a = await runFor(1, cfg.seconds, () => store.block.write((nextAtomio++ % writes) * perMiB, fill));
      atomio.push(mbPerSecond(a.ops * MiB, a.seconds));
      atomioCpu.push(a.cpuMicrosPerOp);
      const f = await runFor(1, cfg.seconds, async () => {
        await pwrite(fd, fill, (nextFs++ % writes) * MiB);
        await fdatasync(fd);
      });
      peer.push(mbPerSecond(f.ops * MiB, f.seconds));
      peerCpu.push(f.cpuMicrosPerOp);
    }
    results.cpu(name, atomioCpu, peerCpu);
    results.compare(name, summarize(atomio), summarize(peer), formatMBs);
    const s = store.stats();
    results.notes.push(
      `${name}: atomio writeAmplification ${s.writeAmplification.toFixed(3)} (record headers, chunk CRCs, checkpoints), ` +
        `${s.segmentsCleaned} segments cleaned`,
    );
  } catch (error) {
    results.failed(name, error);
  } finally {
    await store.close();
    fs.closeSync(fd);
    fs.rmSync(filePath, { force: true });
    fs.rmSync(storeDir, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------------------
// 4: open() of a store with many separate extents.

async function openCase(cfg: Config, dir: string, results: Results): Promise<void> {
  const n = cfg.openExtents;
  const title = `Open time with ${formatCount(n)} mapped extents`;
  const target = `open() with ${formatCount(n)} extents <= 1 s (median)`;
  const storeDir = path.join(dir, 'open.atomio');
  try {
    progress(`${title}: building (1-sector writes at every other lba, 1024 per atomic commit, durability 'none')`);
    const sector = randomBytes(512);
    const perCommit = 1024;
    const commits = Math.ceil(n / perCommit);
    const options = { capacity: cfg.openCapacity };
    let store: Store = await open(storeDir, { ...options, durability: 'none' });
    const building = store;
    const built = await timed(() =>
      guarded(building, cfg.stallSeconds, 'the build', () =>
        runCount(8, commits, (c) => {
          const ops = [];
          for (let k = c * perCommit; k < Math.min(n, (c + 1) * perCommit); k++) ops.push({ write: 2 * k, data: sector });
          return building.block.atomic(ops);
        }),
      ),
    );
    const extents = store.stats().mappedExtents;
    const closed = await timed(() => store.close());

    const opens: number[] = [];
    let report = store.stats();
    for (let rep = 0; rep < cfg.repeats; rep++) {
      progress(`${title}: open ${rep + 1}/${cfg.repeats}`);
      const t = await timed(() => open(storeDir, options));
      store = t.value;
      opens.push(t.seconds * 1000);
      report = store.stats();
      await store.close();
    }
    const sample = summarize(opens);
    const r = report.lastRecovery;
    const bytes = fs.statSync(path.join(storeDir, 'atomio.data')).blocks * 512;

    printTitle(title);
    printTable(
      ['measure', 'value'],
      [
        ['build (write all extents)', `${built.seconds.toFixed(1)} s (${formatOps(n / built.seconds).replace('ops', 'extents')})`],
        ['mapped extents after build', formatCount(extents)],
        ['close (final checkpoint)', formatMs(closed.seconds * 1000)],
        ['open() wall time', formatSample(sample, formatMs)],
        ['  recovery.ms (engine, last open)', r ? formatMs(r.ms) : '—'],
        ['  recovery.checkpointSeq', r ? formatCount(r.checkpointSeq) : '—'],
        ['  recovery.recordsReplayed', r ? formatCount(r.recordsReplayed) : '—'],
        ['  recovery.bytesReplayed', r ? formatBytes(r.bytesReplayed) : '—'],
        ['  recovery.recordsDropped', r ? formatCount(r.recordsDropped) : '—'],
        ['  recovery.corruptions', r ? String(r.corruptions.length) : '—'],
        ['mapped extents after open', formatCount(report.mappedExtents)],
        ['data file on disk', formatBytes(bytes)],
      ],
    );
    results.targets.push({ name: target, measured: formatMs(sample.median), pass: sample.median <= 1000 && extents === n });
    if (extents !== n) results.notes.push(`${title}: expected ${formatCount(n)} extents, the store mapped ${formatCount(extents)}`);
  } catch (error) {
    results.failed(title, error);
    results.targets.push({ name: target, measured: error instanceof Stall ? 'stalled' : 'error', pass: false });
    if (error instanceof Stall) results.wedged = true;
  } finally {
    fs.rmSync(storeDir, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------------------
// 5: write amplification under random 4 KiB overwrites.
//
// Each workload runs in a child process: a store whose cleaner wedges keeps its engine busy
// forever, and must not slow down (or hang) the rest of the run.

interface Workload {
  name: string;
  /** Live data as a fraction of stats().usableBytes. */
  fill: number;
  skewed: boolean;
  /** Target on writeAmplification. */
  target?: number;
}

const WORKLOADS: Workload[] = [
  { name: 'uniform, 50% full', fill: 0.5, skewed: false, target: 1.5 },
  { name: 'uniform, 80% full', fill: 0.8, skewed: false, target: 3 },
  { name: '80/20, 50% full', fill: 0.5, skewed: true },
  { name: '80/20, 80% full', fill: 0.8, skewed: true, target: 2 },
];

interface WorkloadJob {
  workload: Workload;
  storeDir: string;
  capacity: number;
  overwrite: number;
  stallSeconds: number;
}

type WorkloadOutcome =
  | {
      ok: true;
      geometry: string;
      fullFraction: number;
      liveBytes: number;
      writeAmplification: number;
      cleanerAmplification: number;
      steadyWriteAmplification: number;
      steadyCleanerAmplification: number;
      segmentsCleaned: number;
      checkpoints: number;
      /** Checkpoint media bytes per user byte (part of writeAmplification). */
      checkpointShare: number;
      opsPerSecond: number;
    }
  | { ok: false; stalled: boolean; message: string };

/** Entry of the child process (main.js block --wa-worker JSON): measures one workload, reports over IPC. */
export async function workloadChild(json: string): Promise<number> {
  const job = JSON.parse(json) as WorkloadJob;
  let outcome: WorkloadOutcome;
  try {
    outcome = await measureWorkload(job);
  } catch (error) {
    outcome = { ok: false, stalled: error instanceof Stall, message: error instanceof Error ? error.message : String(error) };
  }
  await new Promise<void>((resolve) => process.send?.(outcome, () => resolve()) ?? resolve());
  // A wedged engine never lets the event loop empty.
  process.exit(0);
}

async function measureWorkload(job: WorkloadJob): Promise<WorkloadOutcome> {
  const w = job.workload;
  const options = { capacity: job.capacity, durability: 'none' as const };
  const stall = job.stallSeconds;
  progress(`write amplification, ${w.name}: filling`);
  let store = await open(job.storeDir, options);
  const usable = store.stats().usableBytes;
  const sectorsPerBlock = BLOCK / store.block.sectorSize;
  const liveBlocks = Math.floor((w.fill * usable) / BLOCK);
  // 64 KiB fill writes: 1 MiB ones pack 7 to an 8 MiB segment, which leaves the cleaner less room.
  const fill = randomBytes(FILL_WRITE_BYTES);
  const perFill = FILL_WRITE_BYTES / BLOCK;
  const filling = store;
  await guarded(filling, stall, `the fill of ${w.name}`, () =>
    runCount(16, Math.ceil(liveBlocks / perFill), (i) => {
      const count = Math.min(perFill, liveBlocks - i * perFill);
      return filling.block.write(i * perFill * sectorsPerBlock, fill.subarray(0, count * BLOCK));
    }),
  );
  // Counters run since open: reopen so that they cover the overwrites alone.
  await store.close();
  store = await open(job.storeDir, options);
  const s0 = store.stats();

  const rnd = seededRandom(w.skewed ? 77 : 42);
  let pick: () => number;
  if (w.skewed) {
    // 80% of the writes go to a hot 20% of the blocks, scattered over the live range.
    const perm = new Uint32Array(liveBlocks);
    for (let i = 0; i < liveBlocks; i++) perm[i] = i;
    for (let i = liveBlocks - 1; i > 0; i--) {
      const j = Math.floor(rnd() * (i + 1));
      const t = perm[i]!;
      perm[i] = perm[j]!;
      perm[j] = t;
    }
    const hot = Math.max(1, Math.floor(liveBlocks * 0.2));
    pick = () => (rnd() < 0.8 ? perm[Math.floor(rnd() * hot)]! : perm[hot + Math.floor(rnd() * (liveBlocks - hot))]!);
  } else {
    pick = () => Math.floor(rnd() * liveBlocks);
  }
  const pool = randomBytes(MAX_IN_FLIGHT * BLOCK);
  const target = store;
  const overwrite = (count: number): Promise<unknown> =>
    guarded(target, stall, `the overwrites of ${w.name}`, () =>
      runCount(MAX_IN_FLIGHT, count, (_i, worker) =>
        target.block.write(pick() * sectorsPerBlock, pool.subarray(worker * BLOCK, (worker + 1) * BLOCK)),
      ),
    );

  // A first pass of 1× the live data, then the rest, which is closer to the steady state.
  const first = Math.min(liveBlocks, Math.round(job.overwrite * liveBlocks));
  const total = Math.round(job.overwrite * liveBlocks);
  progress(`write amplification, ${w.name}: overwriting ${formatBytes(total * BLOCK)}`);
  const t = await timed(async () => {
    await overwrite(first);
    const s1 = store.stats();
    await overwrite(total - first);
    return s1;
  });
  const s1 = t.value;
  const s2 = store.stats();
  const u1 = first * BLOCK;
  const u2 = total * BLOCK;
  const steady = (a1: number, a2: number): number => (u2 > u1 ? (a2 * u2 - a1 * u1) / (u2 - u1) : NaN);
  await store.close();
  return {
    ok: true,
    geometry: `${formatBytes(s0.capacity)} store, ${s0.segments} segments of ${formatBytes(s0.segmentBytes)}, usableBytes ${formatBytes(s0.usableBytes)}`,
    fullFraction: s0.liveBytes / s0.usableBytes,
    liveBytes: s0.liveBytes,
    writeAmplification: s2.writeAmplification,
    cleanerAmplification: s2.cleanerAmplification,
    steadyWriteAmplification: steady(s1.writeAmplification, s2.writeAmplification),
    steadyCleanerAmplification: steady(s1.cleanerAmplification, s2.cleanerAmplification),
    segmentsCleaned: s2.segmentsCleaned,
    checkpoints: s2.checkpoints,
    checkpointShare: s2.checkpointBytes / u2,
    opsPerSecond: total / t.seconds,
  };
}

/** Three decimals; NaN (sent over IPC as null) prints as a dash. */
function fixed3(n: number | null): string {
  return n === null || !Number.isFinite(n) ? '—' : n.toFixed(3);
}

/** The workload child running now, so that an interrupted run can end it. */
let activeChild: ChildProcess | undefined;

function runChild(job: WorkloadJob): Promise<WorkloadOutcome> {
  const mainScript = fileURLToPath(new URL('./main.js', import.meta.url));
  return new Promise((resolve) => {
    const child = fork(mainScript, ['block', '--wa-worker', JSON.stringify(job)], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    activeChild = child;
    let outcome: WorkloadOutcome | undefined;
    // The child guards itself against stalls; this only catches a child that hangs outright.
    const limit = setTimeout(() => child.kill('SIGKILL'), 15 * 60 * 1000);
    child.on('message', (m) => {
      outcome = m as WorkloadOutcome;
    });
    child.on('exit', (code, signal) => {
      clearTimeout(limit);
      activeChild = undefined;
      resolve(outcome ?? { ok: false, stalled: false, message: `the worker process ended (${signal ?? `exit code ${String(code)}`}) without a result` });
    });
  });
}

async function amplificationCase(cfg: Config, dir: string, results: Results): Promise<void> {
  const rows: string[][] = [];
  let geometry = '';
  for (const w of WORKLOADS) {
    const storeDir = path.join(dir, `wa-${w.skewed ? 'skewed' : 'uniform'}-${Math.round(w.fill * 100)}`);
    const outcome = await runChild({
      workload: w,
      storeDir,
      capacity: cfg.waCapacity,
      overwrite: cfg.waOverwrite,
      stallSeconds: cfg.stallSeconds,
    });
    fs.rmSync(storeDir, { recursive: true, force: true });
    const targetName = `writeAmplification, ${w.name} <= ${w.target ?? ''}`;
    if (!outcome.ok) {
      rows.push([w.name, outcome.stalled ? 'STALLED (see notes)' : 'error (see notes)']);
      results.notes.push(`write amplification, ${outcome.message}`);
      if (w.target !== undefined) results.targets.push({ name: targetName, measured: outcome.stalled ? 'stalled' : 'error', pass: false });
      continue;
    }
    geometry = outcome.geometry;
    rows.push([
      w.name,
      `${(outcome.fullFraction * 100).toFixed(1)}%`,
      formatBytes(outcome.liveBytes),
      fixed3(outcome.writeAmplification),
      fixed3(outcome.cleanerAmplification),
      fixed3(outcome.steadyWriteAmplification),
      fixed3(outcome.steadyCleanerAmplification),
      formatCount(outcome.segmentsCleaned),
      formatCount(outcome.checkpoints),
      fixed3(outcome.checkpointShare),
      formatOps(outcome.opsPerSecond),
    ]);
    if (w.target !== undefined) {
      results.targets.push({
        name: targetName,
        measured: `${fixed3(outcome.writeAmplification)} (cleanerAmplification ${fixed3(outcome.cleanerAmplification)})`,
        pass: outcome.writeAmplification <= w.target,
      });
    }
  }
  printTitle(`Write amplification: random 4 KiB overwrites of ${cfg.waOverwrite}× the live data (durability 'none')`);
  if (geometry !== '') console.log(geometry);
  console.log('full = live / usableBytes after the fill; counters reset by reopening the store before the overwrites;');
  console.log('"steady" = the same figures over the overwrites after the first 1× of the live data;');
  console.log('"ckpt share" = checkpoint bytes per user byte (part of writeAmp).');
  printTable(
    ['workload', 'full', 'live', 'writeAmp', 'cleanerAmp', 'steady WA', 'steady CA', 'cleaned', 'ckpts', 'ckpt share', 'overwrite rate'],
    rows,
  );
}
