// Benchmark of atomio's memcached server against the real memcached, driven by the same load
// generator in the same run.
//
//   npm run bench -- memcached [--quick] [--seconds S] [--repeats N] [--connections C]
//                              [--keys K] [--value BYTES] [--get-ratio R] [--modes full,none]
//                              [--dir PATH | --tmp] [--keep]
//
// Servers, each on its own free loopback port:
//   memcached       Debian's memcached (started here: -m 1024, default threads), in memory
//   atomio full     this process, a store with durability 'full': every STORED is on disk
//   atomio none     this process, durability 'none': acknowledged once the OS has it
// Load: a Node load generator in a child process (so it does not share the server's event
// loop), C connections (default 50) each with one request outstanding, keys drawn uniformly
// from K (default 10 000, all set before timing), 90% get / 10% set of 100-byte values, for
// S seconds (default 10), R runs per server (default 3), servers alternating. Reported:
// ops/s (median, min–max), p50 and p99 latency of the median run (and the p99 of gets and of
// sets alone), and the ratio to memcached;
// the generator's CPU and the server's CPU time per request (from /proc for memcached, from
// this process for atomio), which shows the cost of a request even when other jobs on the
// machine take the cores the servers would use.
// Targets (issue 4): none >= 0.7x memcached's ops/s, full >= 0.5x; p99 within 2x.

import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { open, type Store } from '../src/index.js';
import { startMemcachedServer, type MemcachedServer } from '../src/server/memcached/index.js';
import { formatBytes, formatOps, formatRatio, formatSample, printTable, printTitle, processCpuUs, progress, seededRandom, summarize, type Sample, which } from './report.js';

const SERVER_START_MS = 10_000;
const THIS_FILE = fileURLToPath(import.meta.url);

type Mode = 'full' | 'none';

interface Config {
  quick: boolean;
  seconds: number;
  repeats: number;
  connections: number;
  keys: number;
  valueBytes: number;
  getRatio: number;
  modes: Mode[];
  dir: string | undefined;
  tmp: boolean;
  keep: boolean;
}

interface LoadConfig {
  port: number;
  connections: number;
  keys: number;
  valueBytes: number;
  getRatio: number;
  seconds: number;
  preload: boolean;
  seed: number;
}

interface LoadResult {
  ops: number;
  seconds: number;
  opsPerSecond: number;
  p50Us: number;
  p99Us: number;
  /** p99 of the gets alone and of the sets alone (10% of requests: the sets' p99 is the tail's tail). */
  getP99Us: number;
  setP99Us: number;
  errors: number;
  /** The generator's own CPU time over the run, as a share of one core (1 = saturated). */
  generatorCpu: number;
  /** The server's CPU time (user + system) per request over the run, preload included, in µs. */
  serverCpuUsPerOp?: number;
}

const USAGE =
  'usage: npm run bench -- memcached [--quick] [--seconds S] [--repeats N] [--connections C] [--keys K] [--value BYTES] [--get-ratio R] [--modes full,none] [--dir PATH | --tmp] [--keep]';

function parse(args: string[]): Config | string {
  const cfg: Config = { quick: false, seconds: 10, repeats: 3, connections: 50, keys: 10_000, valueBytes: 100, getRatio: 0.9, modes: ['full', 'none'], dir: undefined, tmp: false, keep: false };
  let seconds: number | undefined;
  let repeats: number | undefined;
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    const value = (): string => {
      const v = args[++i];
      if (v === undefined) throw new Error(`${a} needs a value`);
      return v;
    };
    const num = (min: number): number => {
      const n = Number(value());
      if (!Number.isFinite(n) || n < min) throw new Error(`${a} takes a number >= ${min}`);
      return n;
    };
    try {
      if (a === '--quick') cfg.quick = true;
      else if (a === '--seconds') seconds = num(0.1);
      else if (a === '--repeats') repeats = Math.floor(num(1));
      else if (a === '--connections') cfg.connections = Math.floor(num(1));
      else if (a === '--keys') cfg.keys = Math.floor(num(1));
      else if (a === '--value') cfg.valueBytes = Math.floor(num(0));
      else if (a === '--get-ratio') cfg.getRatio = Math.min(1, num(0));
      else if (a === '--modes') {
        const modes = value().split(',');
        if (!modes.every((m) => m === 'full' || m === 'none')) return '--modes takes full, none or full,none';
        cfg.modes = modes as Mode[];
      } else if (a === '--dir') cfg.dir = value();
      else if (a === '--tmp') cfg.tmp = true;
      else if (a === '--keep') cfg.keep = true;
      else return `unknown option ${a}`;
    } catch (error) {
      return (error as Error).message;
    }
  }
  cfg.seconds = seconds ?? (cfg.quick ? 2 : 10);
  cfg.repeats = repeats ?? (cfg.quick ? 1 : 3);
  return cfg;
}

// ---------------------------------------------------------------------------------------
// The load generator (runs in a child process: `node memcached.js --load-child JSON`)

async function runLoad(c: LoadConfig): Promise<LoadResult> {
  const value = Buffer.alloc(c.valueBytes, 'x');
  const keyOf = (i: number): string => `key:${i}`;
  if (c.preload) await preload(c, value, keyOf);
  const latencies: number[] = [];
  const getLatencies: number[] = [];
  const setLatencies: number[] = [];
  let errors = 0;
  let ops = 0;
  const random = seededRandom(c.seed);
  const cpu = process.cpuUsage();
  const start = process.hrtime.bigint();
  const deadline = start + BigInt(Math.round(c.seconds * 1e9));
  const setPrefix = (k: string): Buffer => Buffer.from(`set ${k} 0 0 ${c.valueBytes}\r\n`);
  const CRLF = Buffer.from('\r\n');
  await Promise.all(
    Array.from({ length: c.connections }, () =>
      connect(c.port).then(
        (socket) =>
          new Promise<void>((resolve, reject) => {
            let pending: Buffer = Buffer.alloc(0);
            let expect = '';
            let sentAt = 0n;
            const next = (): void => {
              const now = process.hrtime.bigint();
              if (now >= deadline) {
                socket.end();
                resolve();
                return;
              }
              const k = keyOf(Math.floor(random() * c.keys));
              sentAt = now;
              if (random() < c.getRatio) {
                expect = 'END\r\n';
                socket.write(`get ${k}\r\n`);
              } else {
                expect = 'STORED\r\n';
                socket.write(Buffer.concat([setPrefix(k), value, CRLF]));
              }
            };
            socket.on('data', (chunk: Buffer) => {
              pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk]);
              if (pending.length < expect.length || pending.toString('latin1', pending.length - expect.length) !== expect) {
                if (pending.length > 2 * c.valueBytes + 512 || /ERROR/.test(pending.toString('latin1'))) {
                  errors++;
                  pending = Buffer.alloc(0);
                  next();
                }
                return;
              }
              pending = Buffer.alloc(0);
              const us = Number(process.hrtime.bigint() - sentAt) / 1000;
              latencies.push(us);
              (expect === 'END\r\n' ? getLatencies : setLatencies).push(us);
              ops++;
              next();
            });
            socket.on('error', reject);
            next();
          }),
      ),
    ),
  );
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  const used = process.cpuUsage(cpu);
  const at = (sample: number[], q: number): number => sample[Math.min(sample.length - 1, Math.floor(q * sample.length))] ?? NaN;
  for (const sample of [latencies, getLatencies, setLatencies]) sample.sort((a, b) => a - b);
  return {
    ops,
    seconds,
    opsPerSecond: ops / seconds,
    p50Us: at(latencies, 0.5),
    p99Us: at(latencies, 0.99),
    getP99Us: at(getLatencies, 0.99),
    setP99Us: at(setLatencies, 0.99),
    errors,
    generatorCpu: (used.user + used.system) / 1e6 / seconds,
  };
}

async function preload(c: LoadConfig, value: Buffer, keyOf: (i: number) => string): Promise<void> {
  const socket = await connect(c.port);
  const parts: Buffer[] = [];
  for (let i = 0; i < c.keys; i++) parts.push(Buffer.from(`set ${keyOf(i)} 0 0 ${value.length}\r\n`), value, Buffer.from('\r\n'));
  const want = 'STORED\r\n'.length * c.keys;
  await new Promise<void>((resolve, reject) => {
    let got = 0;
    socket.on('data', (b: Buffer) => {
      got += b.length;
      if (got >= want) resolve();
    });
    socket.on('error', reject);
    socket.write(Buffer.concat(parts));
  });
  socket.end();
}

function connect(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ port, host: '127.0.0.1', noDelay: true }, () => resolve(s));
    s.once('error', reject);
  });
}

function loadChild(config: LoadConfig): Promise<LoadResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [THIS_FILE, '--load-child', JSON.stringify(config)], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout!.on('data', (b: Buffer) => (out += b.toString()));
    child.once('exit', (code) => {
      if (code !== 0) reject(new Error(`the load generator exited with ${String(code)}`));
      else resolve(JSON.parse(out) as LoadResult);
    });
  });
}

function formatCpu(us: number | undefined): string {
  return us === undefined || !Number.isFinite(us) ? '—' : `${us.toFixed(1)} µs`;
}

// ---------------------------------------------------------------------------------------
// Servers

interface Running {
  name: string;
  port: number;
  /** CPU time the server has used so far, in µs (user + system). */
  cpuUs(): number;
  stop(): Promise<void>;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen({ host: '127.0.0.1', port: 0 }, () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

async function startRealMemcached(): Promise<Running> {
  const port = await freePort();
  const args = ['-l', '127.0.0.1', '-p', String(port), '-U', '0', '-m', '1024', '-c', '4096'];
  if (process.getuid?.() === 0) args.push('-u', 'root');
  const proc: ChildProcess = spawn(which('memcached')!, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  proc.stderr!.on('data', (b: Buffer) => (err += b.toString()));
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  const started = Date.now();
  for (;;) {
    try {
      (await connect(port)).destroy();
      break;
    } catch {
      if (proc.exitCode !== null || Date.now() - started > SERVER_START_MS) throw new Error(`memcached did not start: ${err}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }
  return {
    name: 'memcached',
    port,
    cpuUs: () => processCpuUs(proc.pid),
    stop: async () => {
      proc.kill('SIGTERM');
      await exited;
    },
  };
}

async function startAtomio(dir: string, mode: Mode): Promise<Running> {
  const store: Store = await open(path.join(dir, `atomio-${mode}`), { capacity: 2 * 1024 * 1024 * 1024, durability: mode });
  const server: MemcachedServer = await startMemcachedServer(store, { port: 0, maxConnections: 4096 });
  return {
    name: `atomio ${mode}`,
    port: server.address.port,
    // In this process: the generator runs in a child, and the other servers are idle meanwhile.
    cpuUs: () => {
      const u = process.cpuUsage();
      return u.user + u.system;
    },
    stop: async () => {
      await server.close();
      await store.close();
    },
  };
}

// ---------------------------------------------------------------------------------------

export async function main(args: string[]): Promise<number> {
  const cfg = parse(args);
  if (typeof cfg === 'string') {
    process.stderr.write(`memcached: ${cfg}\n${USAGE}\n`);
    return 2;
  }
  const hasMemcached = which('memcached') !== undefined;
  const projectBench = fileURLToPath(new URL('../../.bench', import.meta.url));
  const parent = path.resolve(cfg.dir ?? (cfg.tmp ? os.tmpdir() : projectBench));
  fs.mkdirSync(parent, { recursive: true });
  const dir = fs.mkdtempSync(path.join(parent, 'memcached-'));
  const cpus = os.cpus();
  console.log(`atomio memcached benchmark${cfg.quick ? ' (--quick: shrunk; verdicts indicative only)' : ''}`);
  console.log(`node ${process.version} on ${os.platform()} ${os.release()} ${os.arch()}`);
  console.log(`cpu: ${cpus[0]?.model.trim() ?? 'unknown'} × ${cpus.length}, ${formatBytes(os.totalmem())} RAM; load average at start ${os.loadavg().map((l) => l.toFixed(2)).join(' ')}`);
  console.log(
    `load: Node generator in a child process, ${cfg.connections} connections × 1 outstanding request, ${Math.round(cfg.getRatio * 100)}% get / ${Math.round((1 - cfg.getRatio) * 100)}% set, ${cfg.valueBytes}-byte values, ${cfg.keys} keys (all set before timing)`,
  );
  console.log(`servers: ${hasMemcached ? 'memcached (Debian), ' : '(memcached is not installed: apt-get install memcached) '}${cfg.modes.map((m) => `atomio ${m}`).join(', ')}; atomio's data in ${dir}`);
  console.log(`each server: ${cfg.repeats} run(s) of ${cfg.seconds} s, servers alternating; median (min–max)`);

  const servers: Running[] = [];
  const results = new Map<string, LoadResult[]>();
  try {
    if (hasMemcached) servers.push(await startRealMemcached());
    for (const mode of cfg.modes) servers.push(await startAtomio(dir, mode));
    for (let rep = 0; rep < cfg.repeats; rep++) {
      for (const s of servers) {
        progress(`${s.name}: run ${rep + 1}/${cfg.repeats}`);
        const cpuBefore = s.cpuUs();
        const r = await loadChild({
          port: s.port,
          connections: cfg.connections,
          keys: cfg.keys,
          valueBytes: cfg.valueBytes,
          getRatio: cfg.getRatio,
          seconds: cfg.seconds,
          preload: rep === 0,
          seed: 1000 + rep,
        });
        r.serverCpuUsPerOp = (s.cpuUs() - cpuBefore) / r.ops;
        if (r.errors > 0) process.stderr.write(`  ${s.name}: ${r.errors} unexpected replies\n`);
        results.set(s.name, [...(results.get(s.name) ?? []), r]);
      }
    }
  } finally {
    for (const s of servers) await s.stop();
    if (!cfg.keep) fs.rmSync(dir, { recursive: true, force: true });
  }

  const sample = (name: string): Sample => summarize((results.get(name) ?? []).map((r) => r.opsPerSecond));
  const medianRun = (name: string): LoadResult | undefined => {
    const runs = [...(results.get(name) ?? [])].sort((a, b) => a.opsPerSecond - b.opsPerSecond);
    return runs[Math.floor(runs.length / 2)];
  };
  const base = hasMemcached ? medianRun('memcached') : undefined;
  const baseOps = hasMemcached ? sample('memcached').median : NaN;
  printTitle('ops/s and latency (one request outstanding per connection)');
  const rows = servers.map((s) => {
    const run = medianRun(s.name)!;
    const ops = sample(s.name);
    return [
      s.name,
      formatSample(ops, formatOps),
      `${(run.p50Us / 1000).toFixed(3)} ms`,
      `${(run.p99Us / 1000).toFixed(3)} ms`,
      `${(run.getP99Us / 1000).toFixed(2)} / ${(run.setP99Us / 1000).toFixed(2)} ms`,
      hasMemcached ? formatRatio(ops.median / baseOps) : '—',
      hasMemcached && base !== undefined ? formatRatio(run.p99Us / base.p99Us) : '—',
      `${Math.round(run.generatorCpu * 100)}%`,
      formatCpu(run.serverCpuUsPerOp),
    ];
  });
  printTable(['server', 'ops/s', 'p50', 'p99', 'p99 get / set', 'ops vs memcached', 'p99 vs memcached', 'generator CPU', 'server CPU/op'], rows);
  if (hasMemcached && base !== undefined) {
    console.log('');
    const targets: [Mode, number][] = [
      ['none', 0.7],
      ['full', 0.5],
    ];
    for (const [mode, target] of targets) {
      if (!cfg.modes.includes(mode)) continue;
      const ratio = sample(`atomio ${mode}`).median / baseOps;
      const p99 = medianRun(`atomio ${mode}`)!.p99Us / base.p99Us;
      console.log(`${ratio >= target ? 'PASS' : 'MISS'}  atomio ${mode}: ${formatRatio(ratio)} of memcached's ops/s (target >= ${target}x)`);
      console.log(`${p99 <= 2 ? 'PASS' : 'MISS'}  atomio ${mode}: p99 ${formatRatio(p99)} memcached's (target <= 2x)`);
    }
  }
  return 0;
}

if (process.argv[1] === THIS_FILE && process.argv[2] === '--load-child') {
  runLoad(JSON.parse(process.argv[3]!) as LoadConfig).then(
    (r) => process.stdout.write(JSON.stringify(r)),
    (error: unknown) => {
      process.stderr.write(`load generator: ${(error as Error).stack ?? String(error)}\n`);
      process.exitCode = 1;
    },
  );
}
