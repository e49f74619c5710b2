// Benchmark of atomio's NBD server against qemu-nbd on a raw file and nbdkit's file plugin,
// all driven by the same client tool in the same run on the same filesystem.
//
//   node dist/bench/nbd.js [--quick] [--repeats N] [--seconds S] [--range MiB] [--modes durable,writeback]
//                          [--cases seq,rand] [--dir PATH | --tmp] [--keep]
//   (to be wired as `npm run bench -- nbd`; runNbdBench(args) is the entry)
//
// Client: fio with its nbd engine (libnbd) when `fio --enghelp` lists nbd; otherwise
// `qemu-img bench` (sequential strides only: its "random" rows are then sequential 4 KiB).
// Servers, each on its own port over its own data in the same directory:
//   atomio     in this process: a store with one volume of --range bytes
//   qemu-nbd   -f raw on a file of --range bytes
//   nbdkit     the file plugin on a file of --range bytes
// Two flush semantics, each a separate table:
//   durable    every write is on stable storage before it is acknowledged: atomio
//              durability 'full'; qemu-nbd --cache=writethrough (flush after each write);
//              nbdkit --filter=fua fuamode=force (FUA, i.e. fdatasync, on every write)
//   writeback  writes are acknowledged from the OS cache: atomio durability 'none';
//              qemu-nbd --cache=writeback; nbdkit file
// Cases, in this order per server (each timed case runs R times, servers alternating; the
// median is shown with min–max): a 1 MiB sequential fill of the range (untimed), then
//   1 MiB sequential writes and reads (8 in flight), MB/s;
//   4 KiB random writes and reads at queue depth 1 and 32, IOPS.
// Beside each figure: the server's CPU time (user + system, all its threads) per request, the
// median over the runs: less disturbed than throughput when other jobs share the machine.
// Progress goes to stderr, results to stdout. Targets (issue 5): >= 1.0x qemu-nbd on 4 KiB
// random writes with the same flush semantics, >= 0.8x on sequential throughput.

import { spawn, execFile, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { open, type Store } from '../src/index.js';
import { startNbdServer, type NbdServer } from '../src/server/nbd/index.js';
import { Volumes } from '../src/server/volumes.js';
import { formatBytes, formatCount, formatRatio, formatSample, printTable, printTitle, processCpuUs, progress, summarize, type Sample, which } from './report.js';

const MiB = 1024 * 1024;
const SERVER_START_MS = 15_000;

type Mode = 'durable' | 'writeback';
type ServerName = 'atomio' | 'qemu-nbd' | 'nbdkit';
const SERVERS: readonly ServerName[] = ['atomio', 'qemu-nbd', 'nbdkit'];

interface Config {
  quick: boolean;
  repeats: number;
  seconds: number;
  rangeBytes: number;
  modes: Mode[];
  /** Which cases run: 'seq' (1 MiB sequential), 'rand' (4 KiB random), or both. */
  kinds: CaseKind[];
  dir: string | undefined;
  tmp: boolean;
  keep: boolean;
}

type CaseKind = 'seq' | 'rand';

interface Case {
  name: string;
  rw: 'write' | 'read' | 'randwrite' | 'randread';
  bs: number;
  depth: number;
  unit: 'MB/s' | 'IOPS';
}

const CASES: readonly Case[] = [
  { name: '1 MiB sequential write, QD8', rw: 'write', bs: MiB, depth: 8, unit: 'MB/s' },
  { name: '1 MiB sequential read, QD8', rw: 'read', bs: MiB, depth: 8, unit: 'MB/s' },
  { name: '4 KiB random write, QD1', rw: 'randwrite', bs: 4096, depth: 1, unit: 'IOPS' },
  { name: '4 KiB random write, QD32', rw: 'randwrite', bs: 4096, depth: 32, unit: 'IOPS' },
  { name: '4 KiB random read, QD1', rw: 'randread', bs: 4096, depth: 1, unit: 'IOPS' },
  { name: '4 KiB random read, QD32', rw: 'randread', bs: 4096, depth: 32, unit: 'IOPS' },
];

const USAGE = `usage: node dist/bench/nbd.js [--quick] [--repeats N] [--seconds S] [--range MiB] [--modes durable,writeback] [--cases seq,rand] [--dir PATH | --tmp] [--keep]`;

function kindOf(c: Case): CaseKind {
  return c.rw === 'write' || c.rw === 'read' ? 'seq' : 'rand';
}

function parse(args: string[]): Config | string {
  const cfg: Config = { quick: false, repeats: 3, seconds: 3, rangeBytes: 512 * MiB, modes: ['durable', 'writeback'], kinds: ['seq', 'rand'], dir: undefined, tmp: false, keep: false };
  let repeats: number | undefined;
  let seconds: number | undefined;
  let range: number | undefined;
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    const value = (): string => {
      const v = args[++i];
      if (v === undefined) throw new Error(`${a} needs a value`);
      return v;
    };
    try {
      if (a === '--quick') cfg.quick = true;
      else if (a === '--repeats') repeats = positive(value(), a);
      else if (a === '--seconds') seconds = positive(value(), a);
      else if (a === '--range') range = positive(value(), a) * MiB;
      else if (a === '--dir') cfg.dir = value();
      else if (a === '--tmp') cfg.tmp = true;
      else if (a === '--keep') cfg.keep = true;
      else if (a === '--modes') {
        const modes = value().split(',');
        if (modes.some((m) => m !== 'durable' && m !== 'writeback')) return `--modes takes durable and/or writeback`;
        cfg.modes = modes as Mode[];
      } else if (a === '--cases') {
        const kinds = value().split(',');
        if (kinds.some((k) => k !== 'seq' && k !== 'rand')) return `--cases takes seq and/or rand`;
        cfg.kinds = kinds as CaseKind[];
      } else return `unknown option ${a}`;
    } catch (error) {
      return (error as Error).message;
    }
  }
  if (cfg.quick) {
    cfg.repeats = 1;
    cfg.seconds = 1;
    cfg.rangeBytes = 64 * MiB;
  }
  cfg.repeats = repeats ?? cfg.repeats;
  cfg.seconds = seconds ?? cfg.seconds;
  cfg.rangeBytes = range ?? cfg.rangeBytes;
  return cfg;
}

function positive(text: string, what: string): number {
  const n = Number(text);
  if (!Number.isFinite(n) || n <= 0) throw new Error(`${what} takes a positive number, not '${text}'`);
  return n;
}

// ---------------------------------------------------------------------------------------
// Tools

function exec(file: string, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    execFile(file, args, { maxBuffer: 64 * MiB }, (error, stdout, stderr) => {
      if (error !== null && typeof error.code !== 'number') reject(error);
      else resolve({ code: error === null ? 0 : (error.code as number), stdout, stderr });
    });
  });
}

async function fioHasNbd(): Promise<boolean> {
  if (which('fio') === undefined) return false;
  const r = await exec('fio', ['--enghelp']);
  return /^\s*nbd\s*$/m.test(r.stdout);
}

/** One measured run: IOPS, MB/s and the requests done. */
interface Measure {
  iops: number;
  mbs: number;
  ios: number;
}

async function runFio(uri: string, c: Case, seconds: number, rangeBytes: number, outDir: string, timed: boolean): Promise<Measure> {
  const out = path.join(outDir, `fio-${process.pid}-${Date.now()}.json`);
  const args = [
    '--name=bench',
    '--ioengine=nbd',
    `--uri=${uri}`,
    `--rw=${c.rw}`,
    `--bs=${c.bs}`,
    `--iodepth=${c.depth}`,
    `--size=${rangeBytes}`,
    '--norandommap',
    '--randrepeat=0',
    '--output-format=json',
    `--output=${out}`,
  ];
  if (timed) args.push(`--runtime=${seconds}`, '--time_based');
  const r = await exec('fio', args);
  if (r.code !== 0) throw new Error(`fio ${args.join(' ')} failed: ${r.stderr}`);
  type Side = { iops: number; bw_bytes: number; total_ios: number };
  const json = JSON.parse(fs.readFileSync(out, 'utf8')) as { jobs: { read: Side; write: Side }[] };
  fs.rmSync(out, { force: true });
  const job = json.jobs[0]!;
  const side = c.rw === 'read' || c.rw === 'randread' ? job.read : job.write;
  return { iops: side.iops, mbs: side.bw_bytes / 1e6, ios: side.total_ios };
}

/** The fallback client: qemu-img bench (sequential strides; "random" cases run sequentially). */
async function runQemuImgBench(uri: string, c: Case, seconds: number, rangeBytes: number): Promise<Measure> {
  // qemu-img bench runs a count, not a time: estimate from a short probe.
  const write = c.rw === 'write' || c.rw === 'randwrite';
  const base = ['bench', '-f', 'raw', '-t', 'none', '-d', String(c.depth), '-s', String(c.bs), '-S', String(c.bs), ...(write ? ['-w'] : [])];
  const probeCount = Math.max(16, Math.min(1000, Math.floor(rangeBytes / c.bs)));
  const started = process.hrtime.bigint();
  await exec('qemu-img', [...base, '-c', String(probeCount), uri]);
  const probeSeconds = Number(process.hrtime.bigint() - started) / 1e9;
  const count = Math.max(probeCount, Math.floor((probeCount / probeSeconds) * seconds));
  const t0 = process.hrtime.bigint();
  const r = await exec('qemu-img', [...base, '-c', String(count), uri]);
  if (r.code !== 0) throw new Error(`qemu-img bench failed: ${r.stderr}`);
  const s = Number(process.hrtime.bigint() - t0) / 1e9;
  return { iops: count / s, mbs: (count * c.bs) / s / 1e6, ios: count };
}

// ---------------------------------------------------------------------------------------
// Servers

interface Running {
  name: ServerName;
  uri: string;
  stop: () => Promise<void>;
  /** CPU time the server has used so far, µs (NaN if unknown). */
  cpuUs: () => number;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

async function waitForPort(port: number, child: ChildProcess, what: string): Promise<void> {
  const deadline = Date.now() + SERVER_START_MS;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`${what} exited with ${child.exitCode}`);
    const ok = await nbdGreets(port);
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`${what} did not listen on ${port} within ${SERVER_START_MS} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * Whether an NBD server answers on `port`: it sends its newstyle greeting, and the probe
 * leaves by NBD_OPT_ABORT (a bare connect and close makes qemu-nbd log a failed negotiation).
 */
function nbdGreets(port: number): Promise<boolean> {
  const GREETING_BYTES = 18; // NBDMAGIC, IHAVEOPT, handshake flags
  return new Promise<boolean>((resolve) => {
    let got = Buffer.alloc(0);
    let greeted = false;
    const s = net.connect({ port, host: '127.0.0.1' });
    const timer = setTimeout(() => s.destroy(), 2000);
    s.on('data', (chunk: Buffer) => {
      if (greeted) return;
      got = Buffer.concat([got, chunk]);
      if (got.length < GREETING_BYTES) return;
      greeted = got.toString('latin1', 0, 8) === 'NBDMAGIC';
      if (!greeted) return void s.destroy();
      const abort = Buffer.alloc(4 + 16);
      abort.writeUInt32BE(1, 0); // client flags: fixed newstyle
      abort.write('IHAVEOPT', 4, 'latin1');
      abort.writeUInt32BE(2, 12); // NBD_OPT_ABORT, no data
      s.end(abort);
    });
    s.once('error', () => undefined);
    s.once('close', () => {
      clearTimeout(timer);
      resolve(greeted);
    });
  });
}

/** Server processes still running: killed if this process exits early (Ctrl-C). */
const children = new Set<ChildProcess>();
function track(child: ChildProcess): ChildProcess {
  children.add(child);
  child.once('exit', () => children.delete(child));
  return child;
}
process.once('exit', () => {
  for (const c of children) c.kill('SIGKILL');
});

function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    child.once('exit', () => resolve());
    child.kill('SIGTERM');
  });
}

function rawFile(file: string, bytes: number): void {
  const fd = fs.openSync(file, 'w');
  fs.ftruncateSync(fd, bytes);
  fs.closeSync(fd);
}

async function startAtomio(dir: string, mode: Mode, rangeBytes: number): Promise<Running> {
  const durability = mode === 'durable' ? 'full' : 'none';
  const store: Store = await open(path.join(dir, `atomio-${mode}`), { capacity: Math.max(1024 * MiB, 4 * rangeBytes), durability });
  let server: NbdServer | undefined;
  try {
    const volumes = await Volumes.load(store, store.directory, { defaultSize: rangeBytes });
    server = await startNbdServer(store, volumes, { port: 0, durability, log: (l) => process.stderr.write(`${l}\n`) });
  } catch (error) {
    await store.close();
    throw error;
  }
  const s = server;
  return {
    name: 'atomio',
    uri: `nbd://127.0.0.1:${s.address.port}/`,
    stop: async () => {
      await s.close();
      await store.close();
    },
    // The server runs in this process: its CPU time is the process's (the bench itself idles while fio runs).
    cpuUs: () => {
      const u = process.cpuUsage();
      return u.user + u.system;
    },
  };
}

async function startQemuNbd(dir: string, mode: Mode, rangeBytes: number): Promise<Running> {
  const file = path.join(dir, `qemu-nbd-${mode}.raw`);
  rawFile(file, rangeBytes);
  const port = await freePort();
  const cache = mode === 'durable' ? 'writethrough' : 'writeback';
  const child = track(spawn('qemu-nbd', ['-f', 'raw', '-t', '-e', '16', '-b', '127.0.0.1', '-p', String(port), `--cache=${cache}`, '--aio=threads', file], { stdio: ['ignore', 'ignore', 'inherit'] }));
  await waitForPort(port, child, 'qemu-nbd');
  return { name: 'qemu-nbd', uri: `nbd://127.0.0.1:${port}/`, stop: () => stopChild(child), cpuUs: () => processCpuUs(child.pid) };
}

async function startNbdkit(dir: string, mode: Mode, rangeBytes: number): Promise<Running> {
  const file = path.join(dir, `nbdkit-${mode}.raw`);
  rawFile(file, rangeBytes);
  const port = await freePort();
  const filter = mode === 'durable' ? ['--filter=fua'] : [];
  const params = mode === 'durable' ? ['fuamode=force'] : [];
  const child = track(
    spawn('nbdkit', ['-f', '-i', '127.0.0.1', '-p', String(port), '--exit-with-parent', ...filter, 'file', `file=${file}`, ...params], {
      stdio: ['ignore', 'ignore', 'inherit'],
    }),
  );
  await waitForPort(port, child, 'nbdkit');
  return { name: 'nbdkit', uri: `nbd://127.0.0.1:${port}/`, stop: () => stopChild(child), cpuUs: () => processCpuUs(child.pid) };
}

// ---------------------------------------------------------------------------------------
// The run

export async function runNbdBench(args: string[]): Promise<number> {
  const cfg = parse(args);
  if (typeof cfg === 'string') {
    process.stderr.write(`nbd: ${cfg}\n${USAGE}\n`);
    return 2;
  }
  const useFio = await fioHasNbd();
  if (!useFio && which('qemu-img') === undefined) {
    process.stderr.write('nbd: neither fio with its nbd engine nor qemu-img is installed (apt-get install fio qemu-utils)\n');
    return 1;
  }
  const available = SERVERS.filter((s) => s === 'atomio' || which(s) !== undefined);
  const projectBench = fileURLToPath(new URL('../../.bench', import.meta.url));
  const parent = path.resolve(cfg.dir ?? (cfg.tmp ? os.tmpdir() : projectBench));
  fs.mkdirSync(parent, { recursive: true });
  const dir = fs.mkdtempSync(path.join(parent, 'nbd-'));

  const cpus = os.cpus();
  console.log(`atomio NBD benchmark${cfg.quick ? ' (--quick: shrunk; verdicts indicative only)' : ''}`);
  console.log(`node ${process.version} on ${os.platform()} ${os.release()} ${os.arch()}`);
  console.log(`cpu: ${cpus[0]?.model.trim() ?? 'unknown'} × ${cpus.length}, ${formatBytes(os.totalmem())} RAM; load average at start ${os.loadavg().map((l) => l.toFixed(2)).join(' ')}`);
  console.log(`client: ${useFio ? 'fio (nbd engine, libnbd), one connection per run' : 'qemu-img bench (fio with an nbd engine not found; "random" rows are sequential strides)'}`);
  console.log(`servers: ${available.join(', ')}${available.length < SERVERS.length ? ` (missing: ${SERVERS.filter((s) => !available.includes(s)).join(', ')})` : ''}`);
  console.log(`data directory: ${dir}; every server's data lives here; range ${formatBytes(cfg.rangeBytes)} per server`);
  console.log(`each timed case: ${cfg.repeats} run(s) of ${cfg.seconds} s per server, servers alternating; median (min–max)`);

  const interrupted = (): void => {
    if (!cfg.keep) fs.rmSync(dir, { recursive: true, force: true });
    process.exit(130);
  };
  process.once('SIGINT', interrupted);
  const running: Running[] = [];
  const stopAll = async (): Promise<void> => {
    for (const r of running.splice(0)) await r.stop().catch(() => undefined);
  };
  let verdicts: string[] = [];
  try {
    for (const mode of cfg.modes) {
      const results = new Map<string, Sample>();
      const cpu = new Map<string, Sample>();
      for (const name of available) {
        progress(`${mode}: starting ${name}`);
        const start = name === 'atomio' ? startAtomio : name === 'qemu-nbd' ? startQemuNbd : startNbdkit;
        running.push(await start(dir, mode, cfg.rangeBytes));
      }
      const measure = (r: Running, c: Case, timed: boolean): Promise<Measure> =>
        useFio ? runFio(r.uri, c, cfg.seconds, cfg.rangeBytes, dir, timed) : runQemuImgBench(r.uri, c, cfg.seconds, cfg.rangeBytes);
      for (const r of running) {
        progress(`${mode}: ${r.name}: filling ${formatBytes(cfg.rangeBytes)}`);
        await measure(r, CASES[0]!, false);
      }
      for (const c of CASES.filter((k) => cfg.kinds.includes(kindOf(k)))) {
        const values = new Map<ServerName, number[]>();
        const cpuPerOp = new Map<ServerName, number[]>();
        for (let rep = 0; rep < cfg.repeats; rep++) {
          for (const r of running) {
            progress(`${mode}: ${c.name}: ${r.name} (run ${rep + 1}/${cfg.repeats})`);
            const cpuBefore = r.cpuUs();
            const m = await measure(r, c, true);
            const list = values.get(r.name) ?? [];
            list.push(c.unit === 'IOPS' ? m.iops : m.mbs);
            values.set(r.name, list);
            cpuPerOp.set(r.name, [...(cpuPerOp.get(r.name) ?? []), (r.cpuUs() - cpuBefore) / m.ios]);
          }
        }
        for (const [name, v] of values) results.set(`${c.name}|${name}`, summarize(v));
        for (const [name, v] of cpuPerOp) cpu.set(`${c.name}|${name}`, summarize(v));
      }
      await stopAll();
      verdicts = verdicts.concat(report(mode, available, results, cpu));
    }
  } finally {
    process.off('SIGINT', interrupted);
    await stopAll();
    if (!cfg.keep) fs.rmSync(dir, { recursive: true, force: true });
  }
  printTitle('targets (issue 5)');
  for (const v of verdicts) console.log(v);
  return 0;
}

function report(mode: Mode, servers: readonly ServerName[], results: Map<string, Sample>, cpu: Map<string, Sample>): string[] {
  printTitle(
    mode === 'durable'
      ? "durable: every write on stable storage before its ack (atomio 'full', qemu-nbd writethrough, nbdkit fua=force)"
      : "writeback: writes acked from the OS cache (atomio 'none', qemu-nbd writeback, nbdkit file)",
  );
  const peers = servers.filter((s) => s !== 'atomio');
  const headers = ['case', ...servers, ...peers.map((p) => `atomio/${p}`), ...servers.map((s) => `${s} CPU/req`)];
  const rows: string[][] = [];
  const verdicts: string[] = [];
  for (const c of CASES) {
    if (!results.has(`${c.name}|atomio`)) continue;
    const fmt = c.unit === 'IOPS' ? (n: number): string => `${formatCount(n)} IOPS` : (n: number): string => `${n.toFixed(1)} MB/s`;
    const get = (s: ServerName): Sample | undefined => results.get(`${c.name}|${s}`);
    const row = [c.name, ...servers.map((s) => (get(s) === undefined ? '—' : formatSample(get(s)!, fmt)))];
    const mine = get('atomio')?.median ?? NaN;
    for (const p of peers) row.push(formatRatio(mine / (get(p)?.median ?? NaN)));
    for (const s of servers) {
      const us = cpu.get(`${c.name}|${s}`)?.median;
      row.push(us === undefined || !Number.isFinite(us) ? '—' : `${us.toFixed(0)} µs`);
    }
    rows.push(row);
    const q = get('qemu-nbd')?.median;
    if (q !== undefined && mode === 'durable' && c.rw === 'randwrite') {
      const r = mine / q;
      verdicts.push(`${r >= 1 ? 'PASS' : 'MISS'}  ${c.name} (${mode}): ${formatRatio(r)} qemu-nbd, target >= 1.00x`);
    }
    if (q !== undefined && (c.rw === 'write' || c.rw === 'read')) {
      const r = mine / q;
      verdicts.push(`${r >= 0.8 ? 'PASS' : 'MISS'}  ${c.name} (${mode}): ${formatRatio(r)} qemu-nbd, target >= 0.80x`);
    }
  }
  printTable(headers, rows);
  return verdicts;
}

// Runs when executed directly (until bench/main.ts lists it).
if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  runNbdBench(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (error: unknown) => {
      console.error(error);
      process.exitCode = 1;
    },
  );
}
