// Benchmark of the kv face against three embedded key-value stores for Node.js, in one run,
// on the same data and the same filesystem:
//
//   lmdb-js        (LMDB: copy-on-write B+tree in an mmap; default sync commits)
//   classic-level  (LevelDB: LSM tree; every write with { sync: true })
//   better-sqlite3 (SQLite: B-tree in WAL mode, synchronous=FULL, a transaction per put)
//
//   node dist/bench/main.js kv [--quick] [--repeats N] [--seconds S] [--dir PATH | --tmp] [--keep] [--peers lmdb,level,sqlite]
//   ATOMIO_BENCH_KEYS=20000 npm run bench -- kv        (N keys; default 1,000,000, or 20,000 with --quick)
//
// --quick: 20,000 keys (unless ATOMIO_BENCH_KEYS says otherwise) and 0.5 s timed runs.
// --tmp is accepted for symmetry with the block benchmark: data goes under os.tmpdir() anyway.
//
// Every engine is durable: a write resolves (or returns) once it is on stable storage. Keys
// are `key:` + 12 zero-padded digits (16 bytes), values 100 random bytes. Data lives in a
// temporary directory under os.tmpdir() (or --dir), removed at the end unless --keep.
// Progress goes to stderr, results to stdout.
//
// Cases (timed ones run R times, the engines one after another on the same seeded sequence
// in each run; shown as median (min–max), with the ratio atomio/peer beside each peer):
//   1. durable put, 1 in flight: PUTS_ONE_IN_FLIGHT puts to random keys among the N.
//   2. durable put, 64 in flight (64 promises outstanding, for --seconds).
//   3. atomic batch of 100 puts, one durable commit each (batches/s).
//   4. load of N keys in a seeded random order, 1000 per atomic commit (one run: it sets up 5–8).
//   5. hot reads after one read of every key: getSync, and async get at 1 and 64 in flight.
//   6. reads after reopen (cold): close, reopen (timed), random getSync of keys not yet read.
//   7. ordered scan of 100,000 entries (or N) from a random key: async and sync iterators.
//   8. in a fresh `node --expose-gc` process per engine: open time at N keys, and memory per
//      key (heapUsed + external, which counts arrayBuffers, and RSS) after open and after
//      reading every key once.
// The store each engine keeps on disk is measured after the load (allocated blocks per key).

import { fork } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { open, type KvPool, type Store } from '../src/index.js';
import {
  formatBytes,
  formatCount,
  formatMs,
  formatOps,
  formatRatio,
  formatSample,
  now,
  parseTimedArgs,
  printTable,
  printTitle,
  progress,
  runCount,
  runFor,
  secondsSince,
  seededRandom,
  summarize,
  timed,
  type Sample,
  type TimedArgs,
} from './report.js';

const GiB = 1024 ** 3;
const VALUE_BYTES = 100;
const DEFAULT_KEYS = 1_000_000;
const QUICK_KEYS = 20_000;
const PUTS_ONE_IN_FLIGHT = 2000;
const IN_FLIGHT = 64;
const BATCH = 100;
const LOAD_BATCH = 1000;
const SCAN = 100_000;
/** Random keys per run of the hot getSync case (each run draws its own). */
const HOT_GETS = 200_000;
/** Random gets per engine right after a reopen. */
const COLD_GETS = 20_000;
/** Distinct values the writes draw from (same for every engine). */
const VALUE_POOL = 65_536;
const POOL_NAME = 'bench';
const ATOMIO_CAPACITY = 4 * GiB;
/**
 * Memory for hot values: enough for every value of the run (the peers read through the OS
 * page cache, which holds all of them too). ATOMIO_BENCH_CACHE=0 uses the default (64 MiB).
 */
let ATOMIO_CACHE_BYTES: number | undefined;

function sizeAtomioCache(keys: number): void {
  ATOMIO_CACHE_BYTES = process.env.ATOMIO_BENCH_CACHE === '0' ? undefined : Math.max(64 * 1024 * 1024, keys * 160);
}

// ---------------------------------------------------------------------------------------
// Keys, values, seeded sequences

function keyOf(i: number): string {
  return `key:${String(i).padStart(12, '0')}`;
}

/** 100-byte values, the same for every engine: value v of the pool. */
class Values {
  private readonly bytes = randomBytes(VALUE_POOL * VALUE_BYTES);
  get(v: number): Buffer {
    const at = (v % VALUE_POOL) * VALUE_BYTES;
    return this.bytes.subarray(at, at + VALUE_BYTES);
  }
}

/** A seeded permutation of 0..n-1 (the load order). */
function permutation(n: number, seed: number): Uint32Array {
  const rnd = seededRandom(seed);
  const perm = new Uint32Array(n);
  for (let i = 0; i < n; i++) perm[i] = i;
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(rnd() * (i + 1));
    const t = perm[i]!;
    perm[i] = perm[j]!;
    perm[j] = t;
  }
  return perm;
}

/** `count` keys drawn from the seeded sequence `seed`, as strings (formatting is not timed). */
function randomKeys(n: number, count: number, seed: number): string[] {
  const rnd = seededRandom(seed);
  return Array.from({ length: count }, () => keyOf(Math.floor(rnd() * n)));
}

// ---------------------------------------------------------------------------------------
// The engines, behind one small interface

type EngineId = 'atomio' | 'lmdb' | 'level' | 'sqlite';
const PEERS: readonly EngineId[] = ['lmdb', 'level', 'sqlite'];
const LABEL: Record<EngineId, string> = { atomio: 'atomio', lmdb: 'lmdb-js', level: 'classic-level', sqlite: 'better-sqlite3' };
const SHORT: Record<EngineId, string> = { atomio: 'atomio', lmdb: 'lmdb', level: 'level', sqlite: 'sqlite' };

interface ScanResult {
  entries: number;
  bytes: number;
  first: string | undefined;
}

interface Engine {
  readonly id: EngineId;
  /** A durable put; resolves once on stable storage. */
  put(key: string, value: Buffer): Promise<unknown>;
  /** One atomic, durable commit of all the entries. */
  batch(entries: readonly (readonly [string, Buffer])[]): Promise<unknown>;
  getSync(key: string): Uint8Array | undefined;
  /** undefined: the engine has no asynchronous get. */
  readonly get: ((key: string) => Promise<Uint8Array | undefined>) | undefined;
  /** The engine's own iterator (async where it has one). */
  scan(start: string, limit: number): Promise<ScanResult>;
  /** undefined: the engine has no synchronous iterator. */
  readonly scanSync: ((start: string, limit: number) => ScanResult) | undefined;
  close(): Promise<void>;
}

function keyText(key: unknown): string {
  if (typeof key === 'string') return key;
  if (key instanceof Uint8Array) return Buffer.from(key.buffer, key.byteOffset, key.byteLength).toString('utf8');
  return String(key);
}

/** Counts entries and value bytes (and keeps the first key) of an iteration. */
class Tally implements ScanResult {
  entries = 0;
  bytes = 0;
  first: string | undefined;
  add(key: unknown, value: Uint8Array | undefined): void {
    if (this.entries === 0) this.first = keyText(key);
    this.entries++;
    this.bytes += value?.length ?? 0;
  }
}

async function openAtomio(dir: string): Promise<Engine> {
  const store: Store = await open(dir, { capacity: ATOMIO_CAPACITY, ...(ATOMIO_CACHE_BYTES === undefined ? {} : { cacheSize: ATOMIO_CACHE_BYTES }) });
  const kv: KvPool = store.kv(POOL_NAME);
  return {
    id: 'atomio',
    put: (key, value) => kv.put(key, value),
    batch: async (entries) => {
      const batch = store.atomic();
      for (const [key, value] of entries) batch.put(POOL_NAME, key, value);
      const result = await batch.commit();
      if (!result.ok) throw new Error('atomio: an unconditional atomic commit failed its checks');
    },
    getSync: (key) => kv.getSync(key),
    get: (key) => kv.get(key),
    scan: async (start, limit) => {
      const t = new Tally();
      for await (const e of kv.list({ start, limit })) t.add(e.key, e.value);
      return t;
    },
    scanSync: (start, limit) => {
      const t = new Tally();
      for (const e of kv.listSync({ start, limit })) t.add(e.key, e.value);
      return t;
    },
    close: () => store.close(),
  };
}

async function openLmdb(dir: string): Promise<Engine> {
  const lmdb = await import('lmdb');
  // Defaults otherwise: sync commits (noSync false), overlappingSync on Linux (a put's
  // promise resolves once its transaction is flushed), puts of one event turn share a commit.
  const db = lmdb.open<Buffer, string>({ path: dir, encoding: 'binary', compression: false });
  const scanSync = (start: string, limit: number): ScanResult => {
    const t = new Tally();
    for (const e of db.getRange({ start, limit })) t.add(e.key, e.value);
    return t;
  };
  return {
    id: 'lmdb',
    put: (key, value) => db.put(key, value),
    batch: (entries) =>
      db.transaction(() => {
        for (const [key, value] of entries) void db.put(key, value);
      }),
    getSync: (key) => db.get(key),
    // Typed as an array, but resolves with the value (lmdb-js marks getAsync experimental).
    get: async (key) => (await db.getAsync(key)) as unknown as Uint8Array | undefined,
    scan: async (start, limit) => scanSync(start, limit),
    scanSync,
    close: () => db.close(),
  };
}

async function openLevel(dir: string): Promise<Engine> {
  const { ClassicLevel } = await import('classic-level');
  // Defaults otherwise (8 MiB block cache, 4 MiB write buffer, snappy).
  const db = new ClassicLevel<string, Buffer>(dir, { keyEncoding: 'utf8', valueEncoding: 'buffer' });
  await db.open();
  const durable = { sync: true };
  return {
    id: 'level',
    put: (key, value) => db.put(key, value, durable),
    batch: (entries) =>
      db.batch(
        entries.map(([key, value]) => ({ type: 'put' as const, key, value })),
        durable,
      ),
    getSync: (key) => db.getSync(key),
    get: (key) => db.get(key),
    scan: async (start, limit) => {
      const t = new Tally();
      for await (const [key, value] of db.iterator({ gte: start, limit })) t.add(key, value);
      return t;
    },
    scanSync: undefined,
    close: () => db.close(),
  };
}

async function openSqlite(dir: string): Promise<Engine> {
  const Database = (await import('better-sqlite3')).default;
  fs.mkdirSync(dir, { recursive: true });
  const db = new Database(path.join(dir, 'kv.sqlite'));
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = FULL');
  const mode: unknown = db.pragma('journal_mode', { simple: true });
  const sync: unknown = db.pragma('synchronous', { simple: true });
  if (mode !== 'wal' || sync !== 2) throw new Error(`sqlite: journal_mode ${String(mode)}, synchronous ${String(sync)}: not WAL + FULL`);
  db.exec('CREATE TABLE IF NOT EXISTS kv (k TEXT PRIMARY KEY, v BLOB NOT NULL) WITHOUT ROWID');
  const put = db.prepare<[string, Buffer]>('INSERT OR REPLACE INTO kv (k, v) VALUES (?, ?)');
  const get = db.prepare<[string], Buffer>('SELECT v FROM kv WHERE k = ?').pluck();
  const range = db.prepare<[string, number], [string, Buffer]>('SELECT k, v FROM kv WHERE k >= ? ORDER BY k LIMIT ?').raw();
  const putMany = db.transaction((entries: readonly (readonly [string, Buffer])[]) => {
    for (const [key, value] of entries) put.run(key, value);
  });
  const scanSync = (start: string, limit: number): ScanResult => {
    const t = new Tally();
    for (const [key, value] of range.iterate(start, limit)) t.add(key, value);
    return t;
  };
  return {
    id: 'sqlite',
    // Autocommit: each statement is its own transaction, committed (and fsynced) before run() returns.
    put: async (key, value) => put.run(key, value),
    batch: async (entries) => putMany(entries),
    getSync: (key) => get.get(key),
    get: undefined,
    scan: async (start, limit) => scanSync(start, limit),
    scanSync,
    close: async () => {
      db.close();
    },
  };
}

const OPENERS: Record<EngineId, (dir: string) => Promise<Engine>> = {
  atomio: openAtomio,
  lmdb: openLmdb,
  level: openLevel,
  sqlite: openSqlite,
};

// ---------------------------------------------------------------------------------------
// Results

type Cell = number[] | { text: string };

interface Row {
  name: string;
  format: (n: number) => string;
  /** No ratio when either median is below this (memory deltas near 0 are noise, not a divisor). */
  ratioFloor: number;
  cells: Map<EngineId, Cell>;
}

class Results {
  readonly rows: Row[] = [];
  readonly notes: string[] = [];

  row(name: string, format: (n: number) => string, ratioFloor = 0): Row {
    const row: Row = { name, format, ratioFloor, cells: new Map() };
    this.rows.push(row);
    return row;
  }

  static add(row: Row, id: EngineId, value: number): void {
    const cell = row.cells.get(id);
    if (Array.isArray(cell)) cell.push(value);
    else if (cell === undefined) row.cells.set(id, [value]);
  }

  failed(row: Row, id: EngineId, error: unknown): void {
    const message = error instanceof Error ? error.message : String(error);
    row.cells.set(id, { text: 'error' });
    this.notes.push(`${row.name}, ${LABEL[id]}: ${message}`);
    progress(`${row.name}, ${LABEL[id]} failed: ${message}`);
  }

  print(ids: readonly EngineId[]): void {
    const peers = ids.filter((id) => id !== 'atomio');
    const headers = ['case', 'atomio', ...peers.flatMap((p) => [LABEL[p], `atomio/${SHORT[p]}`])];
    const sample = (cell: Cell | undefined): Sample | undefined => (Array.isArray(cell) && cell.length > 0 ? summarize(cell) : undefined);
    const show = (row: Row, cell: Cell | undefined): string => {
      if (cell === undefined) return '—';
      if (!Array.isArray(cell)) return cell.text;
      return cell.length === 0 ? '—' : formatSample(summarize(cell), row.format);
    };
    const table = this.rows.map((row) => {
      const a = sample(row.cells.get('atomio'));
      return [
        row.name,
        show(row, row.cells.get('atomio')),
        ...peers.flatMap((p) => {
          const s = sample(row.cells.get(p));
          const ratio = a !== undefined && s !== undefined && Math.min(a.median, s.median) > row.ratioFloor ? a.median / s.median : NaN;
          return [show(row, row.cells.get(p)), formatRatio(ratio)];
        }),
      ];
    });
    printTable(headers, table);
  }
}

const formatEntries = (n: number): string => `${formatCount(n)} entries/s`;
const formatKeys = (n: number): string => `${formatCount(n)} keys/s`;
const formatBatches = (n: number): string => `${formatCount(n)} batches/s`;
const formatPerKey = (n: number): string => `${n.toFixed(n >= 100 ? 0 : 1)} B`;

// ---------------------------------------------------------------------------------------
// Arguments and environment

interface Args extends TimedArgs {
  peers: EngineId[];
  keys: number;
}

const USAGE =
  'usage: node dist/bench/main.js kv [--quick] [--repeats N] [--seconds S] [--dir PATH | --tmp] [--keep] [--peers lmdb,level,sqlite]  (env ATOMIO_BENCH_KEYS=N)';

function parseArgs(argv: string[]): Args | string {
  const quick = argv.includes('--quick');
  const envKeys = process.env.ATOMIO_BENCH_KEYS;
  const keys = envKeys === undefined || envKeys === '' ? (quick ? QUICK_KEYS : DEFAULT_KEYS) : Number(envKeys);
  if (!Number.isInteger(keys) || keys < 1000) return `ATOMIO_BENCH_KEYS must be an integer >= 1000, not ${envKeys ?? ''}`;
  let peers: EngineId[] = [...PEERS];
  const timed = parseTimedArgs(argv, {
    quickRepeats: 3,
    more: (option, value) => {
      if (option !== '--peers') return false;
      const names = (value() ?? '').split(',').filter((n) => n !== '');
      if (!names.every((n): n is EngineId => (PEERS as readonly string[]).includes(n))) return `--peers takes ${PEERS.join(', ')}`;
      peers = names;
      return true;
    },
  });
  if (typeof timed === 'string') return timed;
  return { ...timed, peers, keys };
}

function packageVersion(name: string): string {
  try {
    const file = fileURLToPath(new URL(`../../node_modules/${name}/package.json`, import.meta.url));
    return (JSON.parse(fs.readFileSync(file, 'utf8')) as { version: string }).version;
  } catch {
    return '?';
  }
}

/** Allocated bytes of every file under `dir` (sparse files count what they hold). */
function diskBytes(dir: string): number {
  let total = 0;
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, entry.name);
    if (entry.isDirectory()) total += diskBytes(p);
    else if (entry.isFile()) total += fs.statSync(p).blocks * 512;
  }
  return total;
}

// ---------------------------------------------------------------------------------------

export async function main(argv: string[]): Promise<number> {
  if (argv[0] === '--child') return memoryChild(argv[1] ?? '{}');
  const args = parseArgs(argv);
  if (typeof args === 'string') {
    process.stderr.write(`kv: ${args}\n${USAGE}\n`);
    return 2;
  }
  const parent = path.resolve(args.dir ?? os.tmpdir());
  fs.mkdirSync(parent, { recursive: true });
  const root = fs.mkdtempSync(path.join(parent, 'atomio-kv-'));
  const ids: EngineId[] = ['atomio', ...args.peers];
  const n = args.keys;
  sizeAtomioCache(n);
  const cpus = os.cpus();
  const started = Date.now();

  console.log(`atomio kv benchmark: ${formatCount(n)} keys of 16 bytes, values of ${VALUE_BYTES} bytes`);
  console.log(`node ${process.version} on ${os.platform()} ${os.release()} ${os.arch()}`);
  console.log(`cpu: ${cpus[0]?.model.trim() ?? 'unknown'} × ${cpus.length}, ${formatBytes(os.totalmem())} RAM; load average ${os.loadavg().map((l) => l.toFixed(2)).join(' ')}`);
  console.log(`data directory: ${root}`);
  console.log(
    `atomio: durability 'full' (default), capacity ${formatBytes(ATOMIO_CAPACITY)}, value cache ${ATOMIO_CACHE_BYTES === undefined ? 'default (64 MiB)' : formatBytes(ATOMIO_CACHE_BYTES)}`,
  );
  if (ids.includes('lmdb')) console.log(`lmdb-js ${packageVersion('lmdb')}: default sync commits (overlappingSync), binary values, no compression`);
  if (ids.includes('level')) console.log(`classic-level ${packageVersion('classic-level')}: LevelDB, { sync: true } on every write, default options`);
  if (ids.includes('sqlite')) console.log(`better-sqlite3 ${packageVersion('better-sqlite3')}: WAL, synchronous=FULL, WITHOUT ROWID table, autocommit (a transaction per put)`);
  console.log(`each timed case: ${args.repeats} run(s) per engine, engines in turn on the same seeded sequence; median (min–max); ratio = atomio / peer`);

  const results = new Results();
  const cleanup = (): void => {
    if (!args.keep) fs.rmSync(root, { recursive: true, force: true });
  };
  const interrupted = (): void => {
    activeChild?.kill('SIGKILL');
    cleanup();
    process.exit(130);
  };
  process.once('SIGINT', interrupted);
  process.once('SIGTERM', interrupted);
  try {
    const loaded: EngineId[] = [];
    await inProcessCases(args, root, ids, results, loaded);
    await childCases(args, root, loaded, results);
  } finally {
    cleanup();
    process.off('SIGINT', interrupted);
    process.off('SIGTERM', interrupted);
  }

  printTitle(`kv: atomio beside ${args.peers.map((p) => LABEL[p]).join(', ')} (${formatCount(n)} keys)`);
  results.print(ids);
  console.log('ratio = atomio / peer: above 1 is atomio ahead for rates (ops/s, keys/s, entries/s), behind for ms and bytes');
  printTitle('Notes');
  for (const note of results.notes) console.log(`- ${note}`);
  console.log('');
  console.log(`total time ${((Date.now() - started) / 1000).toFixed(0)} s${args.keep ? `; data kept in ${root}` : ''}`);
  return 0;
}

/** Cases 1–7, with every engine open in this process; `loaded` gets the engines that opened. */
async function inProcessCases(args: Args, root: string, ids: EngineId[], results: Results, loaded: EngineId[]): Promise<void> {
  const n = args.keys;
  const values = new Values();
  const engines = new Map<EngineId, Engine>();
  for (const id of ids) {
    try {
      engines.set(id, await OPENERS[id](path.join(root, id)));
    } catch (error) {
      results.notes.push(`${LABEL[id]}: open failed, left out of every case: ${error instanceof Error ? error.message : String(error)}`);
      progress(`${LABEL[id]}: open failed: ${String(error)}`);
    }
  }
  const each = async (row: Row, fn: (e: Engine) => Promise<number | undefined>): Promise<void> => {
    for (const [id, engine] of engines) {
      if (row.cells.has(id) && !Array.isArray(row.cells.get(id))) continue; // failed before
      try {
        const v = await fn(engine);
        if (v === undefined) row.cells.set(id, { text: 'n/a' });
        else Results.add(row, id, v);
      } catch (error) {
        results.failed(row, id, error);
      }
    }
  };

  try {
    // 4. Load, first: every other case reads or overwrites these keys.
    const loadRow = results.row(`load ${formatCount(n)} keys, ${LOAD_BATCH} per commit (1 run)`, formatKeys);
    const diskRow = results.row('disk after load, per key (lower is better)', formatPerKey);
    const order = permutation(n, 4242);
    await each(loadRow, async (e) => {
      progress(`load: ${LABEL[e.id]}`);
      const t = await timed(async () => {
        for (let at = 0; at < n; at += LOAD_BATCH) {
          const entries: [string, Buffer][] = [];
          for (let i = at; i < Math.min(n, at + LOAD_BATCH); i++) entries.push([keyOf(order[i]!), values.get(order[i]!)]);
          await e.batch(entries);
        }
      });
      Results.add(diskRow, e.id, diskBytes(path.join(root, e.id)) / n);
      return n / t.seconds;
    });
    loaded.push(...[...engines.keys()].filter((id) => Array.isArray(loadRow.cells.get(id))));
    results.notes.push(
      'disk after load: allocated blocks of every file in the engine\'s directory / N (with the data as loaded: ' +
        'before the overwrites of the write cases); fixed costs (atomio\'s segments and their zero-filled prefill, ' +
        'lmdb\'s free pages, the WAL) weigh most at small N',
    );

    // 1–3. Durable writes: overwrites of random keys among the N.
    const cpu = new Map<string, Map<EngineId, number[]>>();
    const noteCpu = (caseName: string, id: EngineId, micros: number): void => {
      const m = cpu.get(caseName) ?? new Map<EngineId, number[]>();
      cpu.set(caseName, m);
      m.set(id, [...(m.get(id) ?? []), micros]);
    };
    const put1 = results.row(`durable put, 1 in flight (${formatCount(PUTS_ONE_IN_FLIGHT)} puts)`, formatOps);
    const put64 = results.row(`durable put, ${IN_FLIGHT} in flight`, formatOps);
    const batchRow = results.row(`atomic batch of ${BATCH} puts, 1 in flight`, formatBatches);
    for (let rep = 0; rep < args.repeats; rep++) {
      progress(`durable writes: run ${rep + 1}/${args.repeats}`);
      await each(put1, async (e) => {
        const rnd = seededRandom(1000 + rep);
        const r = await runCount(1, PUTS_ONE_IN_FLIGHT, (i) => e.put(keyOf(Math.floor(rnd() * n)), values.get(i)));
        noteCpu(put1.name, e.id, r.cpuMicrosPerOp);
        return r.opsPerSecond;
      });
      await each(put64, async (e) => {
        const rnd = seededRandom(2000 + rep);
        let i = 0;
        const r = await runFor(IN_FLIGHT, args.seconds, () => e.put(keyOf(Math.floor(rnd() * n)), values.get(i++)));
        noteCpu(put64.name, e.id, r.cpuMicrosPerOp);
        return r.opsPerSecond;
      });
      await each(batchRow, async (e) => {
        const rnd = seededRandom(3000 + rep);
        let i = 0;
        const r = await runFor(1, args.seconds, () => {
          const entries: [string, Buffer][] = [];
          for (let k = 0; k < BATCH; k++) entries.push([keyOf(Math.floor(rnd() * n)), values.get(i++)]);
          return e.batch(entries);
        });
        noteCpu(batchRow.name, e.id, r.cpuMicrosPerOp / BATCH);
        return r.opsPerSecond;
      });
    }
    for (const [name, m] of cpu) {
      const parts = [...m].map(([id, v]) => `${LABEL[id]} ${summarize(v).median.toFixed(1)} µs`);
      results.notes.push(`${name}: CPU per put (process user+sys, all threads, median): ${parts.join(', ')}`);
    }
    if (engines.has('sqlite')) {
      results.notes.push(
        `durable put, ${IN_FLIGHT} in flight: better-sqlite3 is synchronous, so its ${IN_FLIGHT} "in flight" puts run one after another, a transaction (and a WAL fsync) each`,
      );
    }
    if (engines.has('lmdb')) {
      results.notes.push(`durable put, ${IN_FLIGHT} in flight: lmdb-js commits the puts issued in one event turn as one transaction (its default batching)`);
    }

    // 5. Hot reads: every key read once, then random keys.
    const misses = new Map<EngineId, number>();
    const warm = results.row(`read every key once, getSync in key order (1 run)`, formatOps);
    await each(warm, async (e) => {
      progress(`warm-up: ${LABEL[e.id]} reads every key`);
      let missing = 0;
      const start = now();
      for (let i = 0; i < n; i++) {
        const v = e.getSync(keyOf(i));
        if (v === undefined || v.length !== VALUE_BYTES) missing++;
      }
      const seconds = secondsSince(start);
      if (missing > 0) misses.set(e.id, missing);
      return n / seconds;
    });
    for (const [id, m] of misses) results.notes.push(`${LABEL[id]}: ${formatCount(m)} of ${formatCount(n)} keys missing or of the wrong size after the load`);

    const hotSync = results.row(`hot getSync, random keys`, formatOps);
    const hotAsync1 = results.row(`hot async get, 1 in flight`, formatOps);
    const hotAsync64 = results.row(`hot async get, ${IN_FLIGHT} in flight`, formatOps);
    const gets = Math.min(HOT_GETS, 10 * n);
    for (let rep = 0; rep < args.repeats; rep++) {
      progress(`hot reads: run ${rep + 1}/${args.repeats}`);
      const keys = randomKeys(n, gets, 5000 + rep);
      await each(hotSync, async (e) => {
        let bytes = 0;
        const start = now();
        for (const key of keys) bytes += e.getSync(key)?.length ?? 0;
        const seconds = secondsSince(start);
        if (bytes !== keys.length * VALUE_BYTES) throw new Error(`read ${bytes} bytes, expected ${keys.length * VALUE_BYTES}`);
        return keys.length / seconds;
      });
      for (const [row, inFlight] of [
        [hotAsync1, 1],
        [hotAsync64, IN_FLIGHT],
      ] as const) {
        await each(row, async (e) => {
          const get = e.get;
          if (get === undefined) return undefined;
          let next = 0;
          const r = await runFor(inFlight, args.seconds / 2, () => get(keys[next++ % keys.length]!));
          return r.opsPerSecond;
        });
      }
    }
    if (engines.has('sqlite')) results.notes.push('hot async get: better-sqlite3 has no asynchronous API (n/a)');
    if (engines.has('lmdb')) results.notes.push('hot async get: lmdb-js getAsync (marked experimental by lmdb-js)');

    // 7. Ordered scans.
    const span = Math.min(SCAN, n);
    const scanAsync = results.row(`ordered scan of ${formatCount(span)}, own iterator (async where it has one)`, formatEntries);
    const scanSync = results.row(`ordered scan of ${formatCount(span)}, sync iterator`, formatEntries);
    for (let rep = 0; rep < args.repeats; rep++) {
      progress(`scans: run ${rep + 1}/${args.repeats}`);
      const first = Math.floor(seededRandom(7000 + rep)() * (n - span + 1));
      const check = (r: ScanResult): void => {
        if (r.entries !== span || r.first !== keyOf(first) || r.bytes !== span * VALUE_BYTES) {
          throw new Error(`scan from ${keyOf(first)} gave ${r.entries} entries (${r.bytes} value bytes) starting at ${r.first ?? 'nothing'}`);
        }
      };
      await each(scanAsync, async (e) => {
        const t = await timed(() => e.scan(keyOf(first), span));
        check(t.value);
        return span / t.seconds;
      });
      await each(scanSync, async (e) => {
        const scan = e.scanSync;
        if (scan === undefined) return undefined;
        const start = now();
        const r = scan(keyOf(first), span);
        const seconds = secondsSince(start);
        check(r);
        return span / seconds;
      });
    }
    if (engines.has('lmdb') || engines.has('sqlite')) {
      results.notes.push('ordered scan, own iterator: lmdb-js getRange and better-sqlite3 iterate() are synchronous; they are the same loop in both scan rows');
    }
    if (engines.has('level')) results.notes.push('ordered scan, sync iterator: classic-level has none (n/a)');

    // 6. Cold: close, reopen, random gets of keys this process has not read since the reopen.
    const reopenRow = results.row(`reopen in-process at ${formatCount(n)} keys (lower is better)`, formatMs);
    const cold = results.row(`getSync after reopen, ${formatCount(Math.min(COLD_GETS, n))} random keys`, formatOps);
    for (let rep = 0; rep < args.repeats; rep++) {
      progress(`cold reads: run ${rep + 1}/${args.repeats}`);
      const keys = randomKeys(n, Math.min(COLD_GETS, n), 6000 + rep);
      for (const id of [...engines.keys()]) {
        const engine = engines.get(id)!;
        engines.delete(id);
        try {
          await engine.close();
          const t = await timed(() => OPENERS[id](path.join(root, id)));
          engines.set(id, t.value);
          Results.add(reopenRow, id, t.seconds * 1000);
        } catch (error) {
          results.failed(reopenRow, id, error);
          results.failed(cold, id, error);
        }
      }
      await each(cold, async (e) => {
        let bytes = 0;
        const start = now();
        for (const key of keys) bytes += e.getSync(key)?.length ?? 0;
        const seconds = secondsSince(start);
        if (bytes !== keys.length * VALUE_BYTES) throw new Error(`read ${bytes} bytes, expected ${keys.length * VALUE_BYTES}`);
        return keys.length / seconds;
      });
    }
    results.notes.push(
      'after reopen: the OS page cache stays warm (nothing here drops it); "cold" means a fresh open with empty in-process caches',
    );
  } finally {
    for (const [id, engine] of engines) {
      try {
        await engine.close();
      } catch (error) {
        results.notes.push(`${LABEL[id]}: close failed: ${error instanceof Error ? error.message : String(error)}`);
      }
    }
  }
}

// ---------------------------------------------------------------------------------------
// 8. Open time and memory per key, each in a fresh process with --expose-gc.

interface ChildJob {
  id: EngineId;
  dir: string;
  keys: number;
}

interface Memory {
  heap: number;
  rss: number;
}

type ChildOutcome =
  | { ok: true; openMs: number; gc: boolean; afterOpen: Memory; afterReads: Memory; missing: number }
  | { ok: false; message: string };

function memoryNow(): Memory {
  const gc = globalThis.gc;
  if (gc !== undefined) {
    gc();
    gc();
  }
  const m = process.memoryUsage();
  // external already counts arrayBuffers.
  return { heap: m.heapUsed + m.external, rss: m.rss };
}

/** Entry of the child process (main.js kv --child JSON): measures one engine, reports over IPC. */
async function memoryChild(json: string): Promise<number> {
  const job = JSON.parse(json) as ChildJob;
  let outcome: ChildOutcome;
  try {
    // Load the engine's modules first, so that the open is timed alone.
    sizeAtomioCache(job.keys);
    if (job.id === 'lmdb') await import('lmdb');
    else if (job.id === 'level') await import('classic-level');
    else if (job.id === 'sqlite') await import('better-sqlite3');
    const before = memoryNow();
    const t = await timed(() => OPENERS[job.id](job.dir));
    const engine = t.value;
    const opened = memoryNow();
    let missing = 0;
    // Keys are made as they are read: nothing allocated before `before` is freed by the end.
    for (let i = 0; i < job.keys; i++) if (engine.getSync(keyOf(i))?.length !== VALUE_BYTES) missing++;
    const read = memoryNow();
    await engine.close();
    outcome = {
      ok: true,
      openMs: t.seconds * 1000,
      gc: globalThis.gc !== undefined,
      afterOpen: { heap: opened.heap - before.heap, rss: opened.rss - before.rss },
      afterReads: { heap: read.heap - before.heap, rss: read.rss - before.rss },
      missing,
    };
  } catch (error) {
    outcome = { ok: false, message: error instanceof Error ? error.message : String(error) };
  }
  await new Promise<void>((resolve) => process.send?.(outcome, () => resolve()) ?? resolve());
  return 0;
}

let activeChild: ReturnType<typeof fork> | undefined;

function runChild(job: ChildJob): Promise<ChildOutcome> {
  const mainScript = fileURLToPath(new URL('./main.js', import.meta.url));
  return new Promise((resolve) => {
    const child = fork(mainScript, ['kv', '--child', JSON.stringify(job)], {
      execArgv: [...process.execArgv, '--expose-gc'],
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    activeChild = child;
    let outcome: ChildOutcome | undefined;
    const limit = setTimeout(() => child.kill('SIGKILL'), 10 * 60 * 1000);
    child.on('message', (m) => {
      outcome = m as ChildOutcome;
    });
    child.on('exit', (code, signal) => {
      clearTimeout(limit);
      activeChild = undefined;
      resolve(outcome ?? { ok: false, message: `the child process ended (${signal ?? `exit code ${String(code)}`}) without a result` });
    });
  });
}

async function childCases(args: Args, root: string, ids: EngineId[], results: Results): Promise<void> {
  const n = args.keys;
  const openRow = results.row(`open at ${formatCount(n)} keys, fresh process (lower is better)`, formatMs);
  const heapOpen = results.row('memory per key after open: heap+external (lower is better)', formatPerKey, 1);
  const heapRead = results.row('  … after reading every key once', formatPerKey, 1);
  const rssOpen = results.row('memory per key after open: RSS (lower is better)', formatPerKey, 1);
  const rssRead = results.row('  … after reading every key once', formatPerKey, 1);
  let gc = true;
  for (let rep = 0; rep < args.repeats; rep++) {
    for (const id of ids) {
      const dir = path.join(root, id);
      const cell = openRow.cells.get(id);
      if (cell !== undefined && !Array.isArray(cell)) continue; // failed in an earlier run
      progress(`open and memory: ${LABEL[id]}, run ${rep + 1}/${args.repeats}`);
      const outcome = await runChild({ id, dir, keys: n });
      if (!outcome.ok) {
        for (const row of [openRow, heapOpen, heapRead, rssOpen, rssRead]) results.failed(row, id, new Error(outcome.message));
        continue;
      }
      gc &&= outcome.gc;
      Results.add(openRow, id, outcome.openMs);
      Results.add(heapOpen, id, outcome.afterOpen.heap / n);
      Results.add(heapRead, id, outcome.afterReads.heap / n);
      Results.add(rssOpen, id, outcome.afterOpen.rss / n);
      Results.add(rssRead, id, outcome.afterReads.rss / n);
      if (outcome.missing > 0) results.notes.push(`open and memory, ${LABEL[id]}: ${formatCount(outcome.missing)} keys missing after the reopen`);
    }
  }
  results.notes.push(
    'memory per key: deltas from just before open, over N keys, measured in a fresh process' +
      (gc ? ' after gc() (--expose-gc)' : ' (gc() was not exposed: deltas include garbage)') +
      '; heap+external misses native allocations (LevelDB block cache, SQLite page cache), RSS counts them and the mmap pages lmdb-js touches; ' +
      'no ratio where a median is below 1 B per key (noise)',
  );
}
