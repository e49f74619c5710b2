// Benchmark of the region face: durable commits of dirty 4 KiB pages against writing the
// same pages into a plain file with pwrite + fdatasync, in one run, on the same filesystem.
//
//   node dist/bench/main.js region [--quick] [--repeats N] [--seconds S] [--dir PATH] [--keep]
//                                  [--no-preallocate]
//
// A region of REGION_BYTES (16 MiB, 4096 pages of 4 KiB) keeps its two newest versions. Each
// commit first changes N random distinct pages (a copy of 4 KiB each, on both sides), then:
//   atomio 'mark'     region.markDirty() per page, region.commit({ scan: false })
//   atomio 'compare'  region.commit(): the dirty pages found by comparing the whole buffer
//                     with the last committed copy (the default)
//   fs                pwrite of each page at its offset in a preallocated 16 MiB file, all
//                     N in flight, then one fdatasync
// for N = 1, 16 and 256; commits one after another; ms per commit, median (min–max), and the
// process's CPU time per commit (all threads). The issue's target: a commit of 16 dirty pages
// takes at most 1.5x one fdatasync'd 64 KiB write (one pwrite of 64 KiB + fdatasync, measured
// in turn with the commits of 16 pages: the verdict is the median of each run's ratio). Also
// measured: a 'compare' commit with nothing dirty (the scan alone) and one Buffer#equals of
// two copies of the region (the memory-bandwidth floor of any scan).
// The fs file is written whole before timing, so its blocks exist; atomio's store is opened
// with `preallocate` likewise, so that neither side's fdatasync commits block allocations
// (--no-preallocate: a store whose file grows as segments are first used).

import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { open, type Region } from '../src/index.js';
import { formatBytes, formatRatio, formatSample, type Sample, printTable, printTitle, progress, runFor, seededRandom, summarize, parseTimedArgs } from './report.js';

const PAGE = 4096;
const REGION_BYTES = 16 * 1024 * 1024;
const PAGES = REGION_BYTES / PAGE;
const DIRTY = [1, 16, 256] as const;
const TARGET_PAGES = 16;
const TARGET_RATIO = 1.5;
const GiB = 1024 ** 3;

const USAGE = 'usage: node dist/bench/main.js region [--quick] [--repeats N] [--seconds S] [--dir PATH] [--keep] [--no-preallocate]';

function pwrite(fd: number, buffer: Buffer, position: number): Promise<void> {
  return new Promise((resolve, reject) => {
    fs.write(fd, buffer, 0, buffer.length, position, (error, written) => {
      if (error) reject(error);
      else if (written !== buffer.length) reject(new Error(`short write: ${written} of ${buffer.length}`));
      else resolve();
    });
  });
}

function fdatasync(fd: number): Promise<void> {
  return new Promise((resolve, reject) => fs.fdatasync(fd, (error) => (error ? reject(error) : resolve())));
}

/** `n` distinct random pages, ascending. */
function pickPages(rnd: () => number, n: number): number[] {
  const set = new Set<number>();
  while (set.size < n) set.add(Math.floor(rnd() * PAGES));
  return [...set].sort((a, b) => a - b);
}

export async function main(argv: string[]): Promise<number> {
  let preallocate = true;
  const args = parseTimedArgs(argv, {
    more: (a) => {
      if (a !== '--no-preallocate') return false;
      preallocate = false;
      return true;
    },
  });
  if (typeof args === 'string') {
    process.stderr.write(`region: ${args}\n${USAGE}\n`);
    return 2;
  }
  const parent = path.resolve(args.dir ?? fileURLToPath(new URL('../../.bench', import.meta.url)));
  fs.mkdirSync(parent, { recursive: true });
  const dir = fs.mkdtempSync(path.join(parent, 'region-'));
  const cpus = os.cpus();
  const started = Date.now();
  console.log(`atomio region benchmark: commits of dirty ${PAGE / 1024} KiB pages of a ${formatBytes(REGION_BYTES)} region${args.quick ? ' (--quick: short runs; verdicts indicative only)' : ''}`);
  console.log(`node ${process.version} on ${os.platform()} ${os.release()} ${os.arch()}`);
  console.log(`cpu: ${cpus[0]?.model.trim() ?? 'unknown'} × ${cpus.length}, ${formatBytes(os.totalmem())} RAM; load average ${loadAverage()}`);
  console.log(`data directory: ${dir}`);
  console.log(`each case: ${args.repeats} run(s) of ${args.seconds} s per side, sides in turn; one commit at a time; ms per commit, median (min–max)`);

  const source = randomBytes(1024 * 1024);
  const fill = (target: Buffer, at: number, rnd: () => number): void => {
    const from = Math.floor(rnd() * (source.length / PAGE)) * PAGE;
    source.copy(target, at, from, from + PAGE);
  };
  const opening = performance.now();
  const store = await open(path.join(dir, 'atomio'), { capacity: 4 * GiB, preallocate });
  console.log(
    preallocate
      ? `atomio's store opened with preallocate, as the fs file is written whole first (zeros over ${formatBytes(4 * GiB)}: open took ${formatMs(performance.now() - opening)})`
      : "atomio's store opened without preallocate (--no-preallocate): its file grows as segments are first used",
  );
  const marked = await store.region('mark', { size: REGION_BYTES, pageSize: PAGE, track: 'mark' });
  const compared = await store.region('compare', { size: REGION_BYTES, pageSize: PAGE });
  const file = path.join(dir, 'region.fs');
  const fd = fs.openSync(file, 'w+');
  const rows: string[][] = [];
  const notes: string[] = [];
  let target16 = NaN;
  let target16Mark = NaN;
  let write64 = summarize([]);
  const targetMark: number[] = [];
  const targetCompare: number[] = [];
  const scanMs: number[] = [];
  const memcmpMs: number[] = [];
  try {
    progress('filling the region (both versions) and the file once');
    for (const region of [marked, compared]) {
      await region.retain({ count: 2 });
      region.buffer.set(source.subarray(0, Math.min(source.length, REGION_BYTES)));
      for (let p = 0; p < PAGES; p += 1024) {
        region.markDirty(p * PAGE, 1024 * PAGE);
        await region.commit({ scan: false });
      }
    }
    for (let at = 0; at < REGION_BYTES; at += source.length) fs.writeSync(fd, source, 0, source.length, at);
    fs.fdatasyncSync(fd);
    const pageBuffers = Array.from({ length: 256 }, () => Buffer.alloc(PAGE));

    // The target's yardstick: one pwrite of 64 KiB + fdatasync, measured in turn with the
    // commits of TARGET_PAGES pages (the disk's latency drifts within a run).
    const block = Buffer.from(source.subarray(0, 64 * 1024));

    for (const n of DIRTY) {
      const ms = { mark: [] as number[], compare: [] as number[], fs: [] as number[], yard: [] as number[] };
      const cpu = { mark: [] as number[], compare: [] as number[], fs: [] as number[], yard: [] as number[] };
      for (let rep = 0; rep < args.repeats; rep++) {
        const run = async (label: keyof typeof ms, body: (pages: number[], rnd: () => number) => Promise<unknown>): Promise<void> => {
          progress(`${n} dirty pages: ${label}, run ${rep + 1}/${args.repeats}`);
          const rnd = seededRandom(1000 * n + rep);
          const r = await runFor(1, args.seconds, () => body(pickPages(rnd, n), rnd));
          ms[label].push(1000 / r.opsPerSecond);
          cpu[label].push(r.cpuMicrosPerOp);
        };
        await run('mark', (pages, rnd) => commitMarked(marked, pages, rnd, fill));
        await run('compare', (pages, rnd) => {
          for (const p of pages) fill(compared.buffer, p * PAGE, rnd);
          return compared.commit();
        });
        await run('fs', async (pages, rnd) => {
          await Promise.all(
            pages.map((p, i) => {
              const b = pageBuffers[i]!;
              fill(b, 0, rnd);
              return pwrite(fd, b, p * PAGE);
            }),
          );
          await fdatasync(fd);
        });
        if (n === TARGET_PAGES) {
          await run('yard', async (_pages, rnd) => {
            await pwrite(fd, block, Math.floor(rnd() * (REGION_BYTES / block.length)) * block.length);
            await fdatasync(fd);
          });
          targetMark.push(ms.mark[rep]! / ms.yard[rep]!);
          targetCompare.push(ms.compare[rep]! / ms.yard[rep]!);
        }
      }
      const mark = summarize(ms.mark);
      const compare = summarize(ms.compare);
      const peer = summarize(ms.fs);
      if (n === TARGET_PAGES) {
        target16 = compare.median;
        target16Mark = mark.median;
        write64 = summarize(ms.yard);
      }
      rows.push([
        `commit of ${n} dirty page${n === 1 ? '' : 's'}`,
        formatSample(mark, formatMs),
        formatRatio(mark.median / peer.median),
        formatSample(compare, formatMs),
        formatRatio(compare.median / peer.median),
        formatSample(peer, formatMs),
        [cpu.mark, cpu.compare, cpu.fs].map((c) => summarize(c).median.toFixed(0)).join(' / '),
      ]);
    }

    // What a 'compare' commit adds: the scan (a commit with nothing dirty writes nothing), and
    // the floor of any scan, one memory compare of the region with a copy of it.
    const copy = Buffer.from(compared.buffer);
    for (let rep = 0; rep < args.repeats; rep++) {
      progress(`the scan alone, run ${rep + 1}/${args.repeats}`);
      scanMs.push(1000 / (await runFor(1, args.seconds / 2, () => compared.commit())).opsPerSecond);
      memcmpMs.push(1000 / (await runFor(1, args.seconds / 2, () => Promise.resolve(compared.buffer.equals(copy)))).opsPerSecond);
    }
    const s = store.stats();
    notes.push(`atomio: ${s.commits} commits, ${s.flushes} flushes, ${s.checkpoints} checkpoints, ${s.segmentsCleaned} segments cleaned; region 'compare' holds ${compared.stats().storedPages} page versions (${compared.versions().length} versions kept)`);
  } finally {
    fs.closeSync(fd);
    await store.close();
    if (!args.keep) fs.rmSync(dir, { recursive: true, force: true });
  }

  printTitle('Region commits (ms per commit; ratio = atomio time / fs time, lower is better)');
  printTable(['case', "atomio 'mark'", 'ratio', "atomio 'compare'", 'ratio', 'fs pwrite + fdatasync', 'CPU µs per commit (mark / compare / fs)'], rows);
  printTitle('Notes');
  console.log(`- one pwrite of 64 KiB + fdatasync (in turn with the commits of ${TARGET_PAGES} pages): ${formatSample(write64, formatMs)}`);
  console.log(`- 'compare' scans the whole ${formatBytes(REGION_BYTES)} buffer against its shadow copy on every commit; 'mark' writes what markDirty() named`);
  console.log(`- the scan alone ('compare' commit with nothing dirty): ${formatSample(summarize(scanMs), formatMs)}; one Buffer#equals of ${formatBytes(REGION_BYTES)} with a copy (the floor of any scan): ${formatSample(summarize(memcmpMs), formatMs)}`);
  for (const n of notes) console.log(`- ${n}`);
  printTitle('Targets');
  const target = `region commit of ${TARGET_PAGES} dirty pages <= ${TARGET_RATIO}x one fdatasync'd 64 KiB write`;
  printTable(
    ['target', 'measured', 'verdict'],
    [
      targetRow(`${target} ('mark')`, summarize(targetMark), target16Mark, write64.median),
      targetRow(`${target} ('compare', with the scan)`, summarize(targetCompare), target16, write64.median),
    ],
  );
  console.log('');
  console.log(`total time ${((Date.now() - started) / 1000).toFixed(0)} s; load average at end ${loadAverage()}${args.keep ? `; data kept in ${dir}` : ''}`);
  return 0;
}

/** A target's row: the ratio of each run to the yardstick of the same run, median (min–max). */
function targetRow(label: string, ratios: Sample, commitMs: number, yardMs: number): string[] {
  return [label, `${formatSample(ratios, formatRatio)} (${formatMs(commitMs)} vs ${formatMs(yardMs)})`, ratios.median <= TARGET_RATIO ? 'PASS' : 'MISS'];
}

function commitMarked(region: Region, pages: number[], rnd: () => number, fill: (target: Buffer, at: number, rnd: () => number) => void): Promise<number> {
  for (const p of pages) {
    fill(region.buffer, p * PAGE, rnd);
    region.markDirty(p * PAGE, PAGE);
  }
  return region.commit({ scan: false });
}

/** Milliseconds with two decimals below 10 ms (the figures compared here are fractions of one). */
function formatMs(ms: number): string {
  return ms >= 100 ? `${ms.toFixed(0)} ms` : ms >= 10 ? `${ms.toFixed(1)} ms` : `${ms.toFixed(2)} ms`;
}

function loadAverage(): string {
  return os
    .loadavg()
    .map((l) => l.toFixed(2))
    .join(' ');
}
