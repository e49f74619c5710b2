// Benchmark of the stream face: durable appends of 100-byte records against plain fs and
// better-sqlite3, in one run, on the same filesystem.
//
//   node dist/bench/main.js stream [--quick] [--repeats N] [--seconds S] [--dir PATH] [--keep]
//
// Every side is durable: an append resolves (or returns) once its record is on stable
// storage.
//   atomio          stream.append(record), durability 'full' (group commit)
//   fs              write(2) of the record to a file opened O_APPEND, then fdatasync, per record
//   better-sqlite3  INSERT of the record into a table, WAL, synchronous=FULL, autocommit (a
//                   transaction, and a WAL fsync, per record)
// Cases, each timed for --seconds, --repeats times, the sides in turn; median (min–max):
//   1. 1 append in flight;
//   2. 64 in flight (64 promises outstanding). better-sqlite3 is synchronous: its "64 in
//      flight" run one after another, like case 1. The fs side runs 64 write + fdatasync
//      pairs concurrently, which the kernel may merge into fewer journal commits.
// The issue's target compares atomio at 64 in flight with fs append + fdatasync per record
// (case 1's fs figure, one record per fsync): >= 50x.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { open, type Store } from '../src/index.js';
import {
  formatBytes,
  formatCount,
  formatOps,
  formatRatio,
  formatSample,
  printTable,
  printTitle,
  progress,
  runFor,
  summarize,
  parseTimedArgs,
  type Sample,
} from './report.js';

const RECORD_BYTES = 100;
const IN_FLIGHT = 64;
const TARGET_RATIO = 50;
const GiB = 1024 ** 3;

const USAGE = 'usage: node dist/bench/main.js stream [--quick] [--repeats N] [--seconds S] [--dir PATH] [--keep]';

// ---------------------------------------------------------------------------------------
// The sides

interface Side {
  name: string;
  append: (record: Buffer) => Promise<unknown>;
  close: () => Promise<void>;
  /** What it did since the last call, for the notes. */
  note?: () => string;
}

async function openAtomio(dir: string): Promise<Side & { store: Store }> {
  const store = await open(path.join(dir, 'atomio'), { capacity: 4 * GiB });
  const stream = store.stream('bench');
  await stream.retain({ count: 2_000_000 });
  let before = store.stats();
  return {
    name: 'atomio',
    store,
    append: (record) => stream.append(record),
    close: () => store.close(),
    note: () => {
      const after = store.stats();
      const commits = after.commits - before.commits;
      const flushes = after.flushes - before.flushes;
      before = after;
      return `${formatCount(commits)} commits, ${formatCount(flushes)} flushes (${(commits / Math.max(1, flushes)).toFixed(1)} commits/flush)`;
    },
  };
}

function openFs(dir: string): Side {
  const fd = fs.openSync(path.join(dir, 'fs.log'), 'a');
  return {
    name: 'fs',
    append: (record) =>
      new Promise<void>((resolve, reject) => {
        fs.write(fd, record, 0, record.length, null, (error) => {
          if (error) reject(error);
          else fs.fdatasync(fd, (e) => (e ? reject(e) : resolve()));
        });
      }),
    close: async () => fs.closeSync(fd),
  };
}

async function openSqlite(dir: string): Promise<Side> {
  const Database = (await import('better-sqlite3')).default;
  const db = new Database(path.join(dir, 'log.sqlite'));
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = FULL');
  const mode: unknown = db.pragma('journal_mode', { simple: true });
  const sync: unknown = db.pragma('synchronous', { simple: true });
  if (mode !== 'wal' || sync !== 2) throw new Error(`sqlite: journal_mode ${String(mode)}, synchronous ${String(sync)}: not WAL + FULL`);
  db.exec('CREATE TABLE IF NOT EXISTS log (seq INTEGER PRIMARY KEY, v BLOB NOT NULL)');
  const insert = db.prepare<[Buffer]>('INSERT INTO log (v) VALUES (?)');
  return {
    name: 'better-sqlite3',
    // Autocommit: each insert is its own transaction, committed (WAL fsynced) before run() returns.
    append: async (record) => insert.run(record),
    close: async () => {
      db.close();
    },
  };
}

// ---------------------------------------------------------------------------------------

export async function main(argv: string[]): Promise<number> {
  const args = parseTimedArgs(argv);
  if (typeof args === 'string') {
    process.stderr.write(`stream: ${args}\n${USAGE}\n`);
    return 2;
  }
  const parent = path.resolve(args.dir ?? fileURLToPath(new URL('../../.bench', import.meta.url)));
  fs.mkdirSync(parent, { recursive: true });
  const dir = fs.mkdtempSync(path.join(parent, 'stream-'));
  const cpus = os.cpus();
  const started = Date.now();
  console.log(`atomio stream benchmark: durable appends of ${RECORD_BYTES}-byte records${args.quick ? ' (--quick: short runs; verdicts indicative only)' : ''}`);
  console.log(`node ${process.version} on ${os.platform()} ${os.release()} ${os.arch()}`);
  console.log(`cpu: ${cpus[0]?.model.trim() ?? 'unknown'} × ${cpus.length}, ${formatBytes(os.totalmem())} RAM; load average ${loadAverage()}`);
  console.log(`data directory: ${dir}`);
  console.log(`each case: ${args.repeats} run(s) of ${args.seconds} s per side, sides in turn; median (min–max); ratio = atomio / peer`);

  const atomio = await openAtomio(dir);
  const sides: Side[] = [atomio, openFs(dir), await openSqlite(dir)];
  const record = Buffer.alloc(RECORD_BYTES, 0x61);
  const rows: string[][] = [];
  const notes: string[] = [];
  const medians = new Map<string, number>();
  try {
    progress('warming up (the store opens its first segments, the fs file and the WAL grow)');
    for (const side of sides) await runFor(4, Math.min(0.5, args.seconds), () => side.append(record));
    atomio.note?.();
    for (const inFlight of [1, IN_FLIGHT]) {
      const samples = new Map<string, number[]>();
      const cpu: number[] = [];
      for (let rep = 0; rep < args.repeats; rep++) {
        for (const side of sides) {
          progress(`${inFlight} in flight: ${side.name}, run ${rep + 1}/${args.repeats}`);
          // better-sqlite3 blocks: its in-flight appends run one after another anyway.
          const r = await runFor(inFlight, args.seconds, () => side.append(record));
          samples.set(side.name, [...(samples.get(side.name) ?? []), r.opsPerSecond]);
          if (side === atomio) cpu.push(r.cpuMicrosPerOp);
        }
      }
      const a = summarize(samples.get('atomio')!);
      medians.set(`atomio@${inFlight}`, a.median);
      const row = [`durable append, ${inFlight} in flight`, formatSample(a, formatOps)];
      for (const side of sides.slice(1)) {
        const s: Sample = summarize(samples.get(side.name)!);
        medians.set(`${side.name}@${inFlight}`, s.median);
        row.push(formatSample(s, formatOps), formatRatio(a.median / s.median));
      }
      rows.push(row);
      notes.push(`${inFlight} in flight: atomio made ${atomio.note?.() ?? ''}; process CPU ${summarize(cpu).median.toFixed(1)} µs per append`);
    }
  } finally {
    for (const side of sides) await side.close().catch(() => undefined);
    if (!args.keep) fs.rmSync(dir, { recursive: true, force: true });
  }

  printTitle('Durable appends (records/s)');
  printTable(['case', 'atomio', 'fs append+fdatasync', 'ratio', 'better-sqlite3', 'ratio'], rows);
  printTitle('Notes');
  for (const n of notes) console.log(`- ${n}`);
  console.log(`- better-sqlite3 is synchronous: its 64 "in flight" appends run one after another (a WAL fsync each)`);
  console.log(`- fs at 64 in flight: 64 write + fdatasync pairs outstanding at once; the kernel may share a journal commit among them`);
  const perRecord = medians.get('fs@1')!;
  const ratio = medians.get(`atomio@${IN_FLIGHT}`)! / perRecord;
  printTitle('Targets');
  printTable(
    ['target', 'measured', 'verdict'],
    [[`stream appends at ${IN_FLIGHT} in flight >= ${TARGET_RATIO}x fs append + fdatasync per record`, `${formatRatio(ratio)} (${formatOps(medians.get(`atomio@${IN_FLIGHT}`)!)} vs ${formatOps(perRecord)})`, ratio >= TARGET_RATIO ? 'PASS' : 'MISS']],
  );
  console.log('');
  console.log(`total time ${((Date.now() - started) / 1000).toFixed(0)} s; load average at end ${loadAverage()}${args.keep ? `; data kept in ${dir}` : ''}`);
  return 0;
}

function loadAverage(): string {
  return os
    .loadavg()
    .map((l) => l.toFixed(2))
    .join(' ');
}
