// Model-based randomized test of the kv face: random puts (with TTLs and ifVersion /
// ifAbsent / ifPresent), deletes, memcached counters, touches, atomic batches across pools
// (with checks that hold or fail), transactions, pool drops, and every kind of read, run
// against a store on a FaultMedia and against a plain in-memory model (per pool a map from
// key to value, version and deadline). A ManualClock moves between groups of ops, often
// to a deadline exactly, so that TTLs expire while the test watches.
//
// Writes are issued in concurrent groups: each outcome (version, counter value, failed
// checks, error code) must be what the model predicts from issue order, versions must rise
// in issue order, and reads issued among the writes may only see a state the group went
// through. Every write's returned version must be what reads report afterwards.
//
// Periodically the store is closed and reopened, or crashed ('lose-all', 'keep-all',
// 'torn') with writes in flight: every acknowledged write must survive; each write in
// flight may be there or not, whole (an atomic batch all or nothing), and those that
// survive form a prefix of the writes in issue order. After every reopen the whole content
// of every pool is compared with the model. Small segments and a small checkpoint interval
// make the cleaner and checkpoints run throughout.
//
// Besides the small pools the test works on, a 'cold' pool of large values written at the
// start and rewritten now and then fills about half the store, so that making room takes
// moving live keys (cleaning), not only freeing dead segments.
//
// The seed comes from ATOMIO_SEED or is random; it is printed and every assertion message
// carries it. ATOMIO_KV_MODEL_OPS sets the number of ops (default 3000) for longer soaks;
// ATOMIO_KV_TRACE=pool/keyhex prints every commit on one key.

import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import {
  ManualClock,
  isAtomioError,
  type AtomicResult,
  type Entry,
  type ErrorCode,
  type Key,
  type ListOptions,
  type PutOptions,
  type DeleteOptions,
  type Store,
  type Value,
} from '../../src/index.js';
import type { CrashMode } from '../../src/media/fault.js';
import { makeRandom } from '../../src/media/random.js';
import { FaultStore, turns } from '../helpers/store.js';
import { deriveSeed, testSeed } from '../helpers/seed.js';
import { code, describe } from '../helpers/errors.js';

const MiB = 1024 * 1024;
const GEOMETRY = { capacity: 8 * MiB, segmentSize: 64 * 1024, checkpointIntervalBytes: 256 * 1024 } as const;
const POOLS = ['a', 'b', 'c', 'users'] as const;
/** A pool no op ever writes: reads of it always find nothing. */
const NO_POOL = 'never';
/**
 * Long-lived large values: written at the start and rewritten now and then, they fill
 * about half the store, so that the cleaner has to move live keys to make room.
 */
const COLD_POOL = 'cold';
const COLD_KEYS = 1300;
const COLD_UNIVERSE = Array.from({ length: COLD_KEYS }, (_, i) => Buffer.from(`k${String(i).padStart(4, '0')}`, 'latin1'));
/** Keys per run (the same set in every pool): bounded, so that keys are rewritten often. */
const UNIVERSE = 200;
/** Key bytes: a few letters, '/', and the extremes 0x00 and 0xff (where prefix ends are special). */
const ALPHABET = [0x61, 0x62, 0x63, 0x2f, 0x00, 0xff];
const TWO_64 = 1n << 64n;
const MAX_U64 = TWO_64 - 1n;
const MODES: readonly CrashMode[] = ['lose-all', 'keep-all', 'torn'];
/** Version of a write planned in the current group and not yet acknowledged. */
const PENDING = -1;
const EMPTY = Buffer.alloc(0);
const NOT_COUNTERS = ['', 'abc', '12x', '-5', ' 7', '+3', '0x10', '1 2', '   ', '18446744073709551616', '123456789012345678901', '000000000000000000000001'];

// ---------------------------------------------------------------------------------------
// The model

interface Cell {
  value: Buffer;
  version: number;
  /** 0: never. */
  expiresAt: number;
}

/** Pools that exist, each a map from key hex to its cell (expired cells stay until rewritten). */
type State = Map<string, Map<string, Cell>>;

type Effect =
  | { type: 'put'; pool: string; key: Buffer; value: Buffer; expiresAt: number }
  | { type: 'delete'; pool: string; key: Buffer }
  | { type: 'touch'; pool: string; key: Buffer; expiresAt: number }
  | { type: 'drop'; pool: string };

type Expect =
  | { kind: 'version' }
  | { kind: 'incr'; value: bigint }
  | { kind: 'atomic' }
  | { kind: 'failed'; failed: string[] }
  | { kind: 'reject'; code: ErrorCode };

interface Plan {
  what: string;
  expect: Expect;
  /** What the commit does when it goes ahead, in order; applied with its version. */
  effects: Effect[];
  /** Every key the commit reads (checks) or writes. */
  keys: { pool: string; key: Buffer }[];
  issue: (store: Store) => Promise<unknown>;
}

interface RangeSpec {
  prefix?: Buffer;
  start?: Buffer;
  end?: Buffer;
  reverse?: boolean;
  limit?: number;
  values?: boolean;
}

const hexOf = (key: Buffer): string => key.toString('hex');
const idOf = (pool: string, key: Buffer): string => `${pool}/${hexOf(key)}`;

/** Pool maps that some clone shares: copied before they change (copy on write). */
const shared = new WeakSet<Map<string, Cell>>();

function cloneState(s: State): State {
  for (const pool of s.values()) shared.add(pool);
  return new Map(s);
}

/** The pool's map in `s`, ready to change (a private copy if it is shared). */
function ownPool(s: State, name: string): Map<string, Cell> | undefined {
  const pool = s.get(name);
  if (pool === undefined || !shared.has(pool)) return pool;
  const copy = new Map(pool);
  s.set(name, copy);
  return copy;
}

function isLive(cell: Cell | undefined, now: number): cell is Cell {
  return cell !== undefined && (cell.expiresAt === 0 || cell.expiresAt > now);
}

function liveCell(s: State, pool: string, key: Buffer, now: number): Cell | undefined {
  const cell = s.get(pool)?.get(hexOf(key));
  return isLive(cell, now) ? cell : undefined;
}

function applyEffects(s: State, effects: readonly Effect[], version: number): void {
  for (const e of effects) {
    if (e.type === 'drop') {
      s.delete(e.pool);
      continue;
    }
    const hex = hexOf(e.key);
    if (e.type === 'put') {
      let pool = ownPool(s, e.pool);
      if (pool === undefined) s.set(e.pool, (pool = new Map()));
      pool.set(hex, { value: e.value, version, expiresAt: e.expiresAt });
    } else if (e.type === 'delete') {
      ownPool(s, e.pool)?.delete(hex);
    } else {
      const pool = ownPool(s, e.pool);
      const cell = pool?.get(hex);
      if (pool !== undefined && cell !== undefined) pool.set(hex, { ...cell, expiresAt: e.expiresAt });
    }
  }
}

/** Live entries of a pool in byte order of their keys. */
function liveEntries(s: State, pool: string, now: number): { key: Buffer; cell: Cell }[] {
  const out: { key: Buffer; cell: Cell }[] = [];
  for (const [hex, cell] of s.get(pool) ?? []) if (isLive(cell, now)) out.push({ key: Buffer.from(hex, 'hex'), cell });
  return out.sort((a, b) => Buffer.compare(a.key, b.key));
}

function inRange(key: Buffer, r: RangeSpec): boolean {
  if (r.prefix !== undefined && !(key.length >= r.prefix.length && key.subarray(0, r.prefix.length).equals(r.prefix))) return false;
  if (r.start !== undefined && Buffer.compare(key, r.start) < 0) return false;
  if (r.end !== undefined && Buffer.compare(key, r.end) >= 0) return false;
  return true;
}

function modelList<T extends { key: Buffer }>(sorted: readonly T[], r: RangeSpec): T[] {
  let out = sorted.filter((e) => inRange(e.key, r));
  if (r.reverse) out = out.reverse();
  return r.limit === undefined ? out : out.slice(0, r.limit);
}

/** memcached's idea of a counter, written independently of src/: digits (trailing spaces allowed), below 2^64. */
function parseCounter(value: Buffer): bigint | undefined {
  let end = value.length;
  while (end > 0 && value[end - 1] === 0x20) end--;
  if (end > 20) return undefined;
  const text = value.toString('latin1', 0, end);
  if (!/^[0-9]{1,20}$/.test(text)) return undefined;
  const n = BigInt(text);
  return n < TWO_64 ? n : undefined;
}

function deadline(now: number, ttl: number | undefined): number {
  return ttl === undefined || ttl === 0 ? 0 : now + Math.max(1, Math.ceil(ttl));
}

function showKey(key: Buffer): string {
  return key.every((b) => b >= 0x20 && b < 0x7f) ? JSON.stringify(key.toString('latin1')) : `0x${key.toString('hex')}`;
}

function showValue(value: Buffer | undefined): string {
  if (value === undefined) return 'absent';
  if (value.length <= 24 && value.every((b) => b >= 0x20 && b < 0x7f)) return JSON.stringify(value.toString('latin1'));
  const tag = /^v(\d+):/.exec(value.toString('latin1', 0, 16));
  return tag ? `v${tag[1]} (${value.length} bytes)` : `${value.length} bytes 0x${value.toString('hex', 0, 8)}…`;
}

function showRange(r: RangeSpec): string {
  const parts: string[] = [];
  if (r.prefix !== undefined) parts.push(`prefix ${showKey(r.prefix)}`);
  if (r.start !== undefined) parts.push(`start ${showKey(r.start)}`);
  if (r.end !== undefined) parts.push(`end ${showKey(r.end)}`);
  if (r.reverse) parts.push('reverse');
  if (r.limit !== undefined) parts.push(`limit ${r.limit}`);
  if (r.values === false) parts.push('no values');
  return `{${parts.join(', ')}}`;
}

/** The first difference between listed entries and the model's, or undefined. */
function entriesDiff(got: readonly Entry[], want: readonly { key: Buffer; cell: Cell }[], values = true): string | undefined {
  for (let i = 0; i < Math.max(got.length, want.length); i++) {
    const g = got[i];
    const w = want[i];
    if (g === undefined || w === undefined || !g.key.equals(w.key)) {
      return `entry ${i}: the store lists ${g ? showKey(g.key) : 'nothing'}, the model ${w ? showKey(w.key) : 'nothing'} (${got.length} entries listed, ${want.length} expected)`;
    }
    const value = values ? w.cell.value : EMPTY;
    if (!g.value.equals(value)) return `key ${showKey(g.key)}: value ${showValue(g.value)}, expected ${showValue(value)}`;
    if (g.version !== w.cell.version) return `key ${showKey(g.key)}: version ${g.version}, expected ${w.cell.version}`;
    if (g.expiresAt !== w.cell.expiresAt) return `key ${showKey(g.key)}: expiresAt ${g.expiresAt}, expected ${w.cell.expiresAt}`;
  }
  return undefined;
}

/** Thrown from a transaction's function to end it when the model says one of its ops fails. */
class TxAbort extends Error {
  constructor(readonly code: ErrorCode) {
    super(`transaction ended by the test: ${code}`);
  }
}

// ---------------------------------------------------------------------------------------
// The run

interface Totals {
  ops: number;
  groups: number;
  conditionFailures: number;
  atomicFailedChecks: number;
  incrWraps: number;
  incrFloors: number;
  incrNotCounter: number;
  expiries: number;
  transactions: number;
  txConflicts: number;
  txAborted: number;
  drops: number;
  concurrentReads: number;
  rangeQueries: number;
  reopens: number;
  crashes: Record<CrashMode, number>;
  inFlight: number;
  inFlightAcked: number;
  unackedWrites: number;
  unackedApplied: number;
  unackedLost: number;
  segmentsCleaned: number;
  checkpoints: number;
  commits: number;
  mediaBytes: number;
}

class Run {
  readonly random: () => number;
  readonly keys: Buffer[];
  model: State = new Map();
  /** The highest version any write returned or any read reported. */
  maxVersion = 0;
  opIndex = 0;
  where = '';
  nextTag = 1;
  readonly totals: Totals = {
    ops: 0,
    groups: 0,
    conditionFailures: 0,
    atomicFailedChecks: 0,
    incrWraps: 0,
    incrFloors: 0,
    incrNotCounter: 0,
    expiries: 0,
    transactions: 0,
    txConflicts: 0,
    txAborted: 0,
    drops: 0,
    concurrentReads: 0,
    rangeQueries: 0,
    reopens: 0,
    crashes: { 'lose-all': 0, 'keep-all': 0, torn: 0 },
    inFlight: 0,
    inFlightAcked: 0,
    unackedWrites: 0,
    unackedApplied: 0,
    unackedLost: 0,
    segmentsCleaned: 0,
    checkpoints: 0,
    commits: 0,
    mediaBytes: 0,
  };

  constructor(
    readonly t: TestContext,
    readonly seed: number,
    readonly fault: FaultStore,
    readonly clock: ManualClock,
  ) {
    this.random = makeRandom(deriveSeed(seed, 11));
    this.keys = this.makeUniverse();
  }

  get store(): Store {
    return this.fault.store;
  }

  msg(m: string): string {
    return `${m} [seed ${this.seed}, op ${this.opIndex}${this.where ? `, ${this.where}` : ''}; replay with ATOMIO_SEED=${this.seed}]`;
  }

  /** Debugging a replay: see ATOMIO_KV_TRACE. */
  trace(line: string): void {
    console.log(`[trace] op ${this.opIndex}: ${line}`);
  }

  int(n: number): number {
    return Math.floor(this.random() * n);
  }

  chance(p: number): boolean {
    return this.random() < p;
  }

  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)]!;
  }

  sample<T>(items: readonly T[], n: number): T[] {
    const left = [...items];
    const out: T[] = [];
    while (out.length < n && left.length > 0) out.push(left.splice(this.int(left.length), 1)[0]!);
    return out;
  }

  // -------------------------------------------------------------------------------------
  // Random keys, values, numbers

  private makeUniverse(): Buffer[] {
    const found = new Map<string, Buffer>();
    const add = (b: Buffer): void => {
      if (b.length >= 1 && b.length <= 24) found.set(hexOf(b), Buffer.from(b));
    };
    const bytes = (n: number): Buffer => Buffer.from(Array.from({ length: n }, () => this.pick(ALPHABET)));
    for (const k of [[0xff], [0xff, 0xff], [0x00], [0x61], [0x61, 0x62]]) add(Buffer.from(k));
    while (found.size < UNIVERSE) {
      const r = this.random();
      if (r < 0.7) {
        // Extend a key: keys share prefixes, and prefix / start / end cut through them.
        const base = this.pick([...found.values()]);
        add(Buffer.concat([base, bytes(1 + this.int(base.length < 10 ? 3 : 6))]).subarray(0, 24));
      } else if (r < 0.8) {
        add(bytes(18 + this.int(7)));
      } else {
        add(bytes(1 + this.int(3)));
      }
    }
    return [...found.values()];
  }

  /** A key of the pool: often one the model holds, else any of the universe. */
  pickKey(pool: string, s: State): Buffer {
    const held = s.get(pool);
    if (held !== undefined && held.size > 0 && this.chance(0.6)) return Buffer.from(this.pick([...held.keys()]), 'hex');
    return this.pick(this.keys);
  }

  /** A key of the pool that holds a counter now, when there is one (half the time). */
  pickCounterKey(pool: string, s: State, now: number): Buffer {
    if (this.chance(0.5)) {
      const counters = liveEntries(s, pool, now).filter((e) => parseCounter(e.cell.value) !== undefined);
      if (counters.length > 0) return this.pick(counters).key;
    }
    return this.pickKey(pool, s);
  }

  pickPool(): string {
    return this.pick(POOLS);
  }

  u64(): bigint {
    return (BigInt(this.int(2 ** 32)) << 32n) | BigInt(this.int(2 ** 32));
  }

  counterText(): string {
    const r = this.random();
    const n = r < 0.4 ? BigInt(this.int(1000)) : r < 0.75 ? MAX_U64 - BigInt(this.int(1000)) : this.u64();
    let text = n.toString();
    const f = this.random();
    if (f < 0.15) text += ' '.repeat(1 + this.int(3)); // memcached pads after a decrement
    else if (f < 0.25 && text.length < 20) text = '0'.repeat(1 + this.int(20 - text.length)) + text;
    return text;
  }

  value(big = false): Buffer {
    if (!big) {
      const r = this.random();
      if (r < 0.16) return Buffer.from(this.counterText(), 'latin1');
      if (r < 0.21) return Buffer.from(this.pick(NOT_COUNTERS), 'latin1');
    }
    const tag = this.nextTag++;
    const s = this.random();
    const size = big ? 1500 + this.int(1501) : s < 0.3 ? this.int(100) : s < 0.8 ? 100 + this.int(1400) : 1500 + this.int(1501);
    const out = Buffer.alloc(size);
    for (let i = 0; i < size; i++) out[i] = (tag * 31 + i * 7) & 0xff;
    Buffer.from(`v${tag}:`, 'latin1').copy(out, 0);
    return out;
  }

  delta(): bigint {
    const r = this.random();
    if (r < 0.45) return BigInt(this.int(100)) * (this.chance(0.5) ? 1n : -1n);
    if (r < 0.65) return this.u64();
    if (r < 0.85) return -this.u64();
    return r < 0.92 ? MAX_U64 : -MAX_U64;
  }

  ttl(): number | undefined {
    const r = this.random();
    if (r < 0.75) return undefined;
    if (r < 0.78) return 0;
    if (r < 0.82) return 0.25 + this.random() * 3; // fractional: rounded up
    if (r < 0.93) return 1 + this.int(1500);
    return 2000 + this.int(60_000);
  }

  /** An ifVersion / check version: the key's own (right) or one some other write got (wrong). */
  versionFor(s: State, pool: string, key: Buffer, now: number): number {
    const live = liveCell(s, pool, key, now);
    if (this.chance(0.55)) {
      if (live !== undefined && live.version > 0) return live.version;
      // Rewritten earlier in the group: a caller only knows the version from before.
      const before = liveCell(this.model, pool, key, now);
      if (before !== undefined) return before.version;
    }
    return 1 + this.int(Math.max(1, this.maxVersion));
  }

  /** The API forms of a key: a string when its bytes are ASCII, a Buffer, or a plain Uint8Array. */
  apiKey(key: Buffer): Key {
    const r = this.random();
    if (r < 0.4 && key.every((b) => b < 0x80)) return key.toString('latin1');
    if (r < 0.6) return new Uint8Array(key);
    return Buffer.from(key);
  }

  apiValue(value: Buffer): Value {
    const r = this.random();
    if (r < 0.3 && value.every((b) => b < 0x80)) return value.toString('latin1');
    if (r < 0.5) return new Uint8Array(value);
    return Buffer.from(value);
  }

  apiNumber(n: bigint): number | bigint {
    return n >= -BigInt(Number.MAX_SAFE_INTEGER) && n <= BigInt(Number.MAX_SAFE_INTEGER) && this.chance(0.5) ? Number(n) : n;
  }

  range(keys: readonly Buffer[] = this.keys): RangeSpec {
    const r: RangeSpec = {};
    const cut = (): Buffer => {
      const k = this.pick(keys);
      return Buffer.from(k.subarray(0, 1 + this.int(k.length)));
    };
    if (this.chance(0.4)) r.prefix = this.chance(0.1) ? EMPTY : cut();
    if (this.chance(0.3)) r.start = this.chance(0.1) ? EMPTY : cut();
    if (this.chance(0.3)) r.end = this.chance(0.05) ? EMPTY : cut();
    if (this.chance(0.35)) r.reverse = true;
    if (this.chance(0.4)) r.limit = this.int(10);
    if (this.chance(0.15)) r.values = false;
    return r;
  }

  apiRange(r: RangeSpec): ListOptions {
    const o: ListOptions = {};
    if (r.prefix !== undefined) o.prefix = this.apiKey(r.prefix);
    if (r.start !== undefined) o.start = this.apiKey(r.start);
    if (r.end !== undefined) o.end = this.apiKey(r.end);
    if (r.reverse !== undefined) o.reverse = r.reverse;
    if (r.limit !== undefined) o.limit = r.limit;
    if (r.values !== undefined) o.values = r.values;
    return o;
  }

  // -------------------------------------------------------------------------------------
  // Plans: each op's outcome and effects as the model predicts them from state `s`

  planPut(s: State, now: number): Plan {
    const pool = this.pickPool();
    const key = this.pickKey(pool, s);
    const value = this.value();
    const live = liveCell(s, pool, key, now);
    const ttl = this.ttl();
    const options: PutOptions = ttl === undefined ? {} : { ttl };
    let ok = true;
    const c = this.random();
    if (c < 0.12) {
      options.ifVersion = this.versionFor(s, pool, key, now);
      ok = live !== undefined && live.version === options.ifVersion;
    } else if (c < 0.22) {
      options.ifAbsent = true;
      ok = live === undefined;
    } else if (c < 0.3) {
      options.ifPresent = true;
      ok = live !== undefined;
    }
    return {
      what: `put ${pool}/${showKey(key)} = ${showValue(value)} ${JSON.stringify(options)}`,
      expect: ok ? { kind: 'version' } : { kind: 'reject', code: 'ERR_CONDITION' },
      effects: ok ? [{ type: 'put', pool, key, value, expiresAt: deadline(now, ttl) }] : [],
      keys: [{ pool, key }],
      issue: (store) => store.kv(pool).put(this.apiKey(key), this.apiValue(value), options),
    };
  }

  planDelete(s: State, now: number): Plan {
    const pool = this.pickPool();
    const key = this.pickKey(pool, s);
    const live = liveCell(s, pool, key, now);
    const options: DeleteOptions = {};
    let ok = true;
    const c = this.random();
    if (c < 0.2) {
      options.ifVersion = this.versionFor(s, pool, key, now);
      ok = live !== undefined && live.version === options.ifVersion;
    } else if (c < 0.4) {
      options.ifPresent = true;
      ok = live !== undefined;
    }
    return {
      what: `delete ${pool}/${showKey(key)} ${JSON.stringify(options)}`,
      expect: ok ? { kind: 'version' } : { kind: 'reject', code: 'ERR_CONDITION' },
      effects: ok ? [{ type: 'delete', pool, key }] : [],
      keys: [{ pool, key }],
      issue: (store) => store.kv(pool).delete(this.apiKey(key), options),
    };
  }

  /** A counter update on state `s`: the new value and the put it makes, or the error. */
  incrOutcome(
    s: State,
    now: number,
    pool: string,
    key: Buffer,
    delta: bigint,
    initial: bigint | undefined,
    ttl: number | undefined,
  ): { ok: true; value: bigint; effect: Effect } | { ok: false; code: ErrorCode } {
    const live = liveCell(s, pool, key, now);
    if (live === undefined) {
      if (initial === undefined) return { ok: false, code: 'ERR_CONDITION' };
      return { ok: true, value: initial, effect: { type: 'put', pool, key, value: Buffer.from(initial.toString(), 'latin1'), expiresAt: deadline(now, ttl) } };
    }
    const current = parseCounter(live.value);
    if (current === undefined) {
      this.totals.incrNotCounter++;
      return { ok: false, code: 'ERR_ARGUMENT' };
    }
    let next = current + delta;
    if (next >= TWO_64) {
      next -= TWO_64; // an increment wraps
      this.totals.incrWraps++;
    } else if (next < 0n) {
      next = 0n; // a decrement stops at 0
      this.totals.incrFloors++;
    }
    // An existing counter keeps its TTL.
    return { ok: true, value: next, effect: { type: 'put', pool, key, value: Buffer.from(next.toString(), 'latin1'), expiresAt: live.expiresAt } };
  }

  planIncr(s: State, now: number): Plan {
    const pool = this.pickPool();
    const key = this.pickCounterKey(pool, s, now);
    const delta = this.delta();
    const initial = this.chance(0.6) ? (this.chance(0.5) ? BigInt(this.int(100)) : this.u64()) : undefined;
    const ttl = this.chance(0.2) ? 1 + this.int(5000) : undefined;
    const outcome = this.incrOutcome(s, now, pool, key, delta, initial, ttl);
    const options: { initial?: number | bigint; ttl?: number } = {};
    if (initial !== undefined) options.initial = this.apiNumber(initial);
    if (ttl !== undefined) options.ttl = ttl;
    return {
      what: `incr ${pool}/${showKey(key)} by ${delta} (initial ${initial}, ttl ${ttl}) on ${showValue(liveCell(s, pool, key, now)?.value)}`,
      expect: outcome.ok ? { kind: 'incr', value: outcome.value } : { kind: 'reject', code: outcome.code },
      effects: outcome.ok ? [outcome.effect] : [],
      keys: [{ pool, key }],
      issue: (store) => store.kv(pool).incr(this.apiKey(key), this.apiNumber(delta), options),
    };
  }

  planTouch(s: State, now: number): Plan {
    const pool = this.pickPool();
    const key = this.pickKey(pool, s);
    const ttl = this.chance(0.2) ? 0 : this.chance(0.7) ? 1 + this.int(3000) : 5000 + this.int(60_000);
    const live = liveCell(s, pool, key, now);
    return {
      what: `touch ${pool}/${showKey(key)} ttl ${ttl}`,
      expect: live !== undefined ? { kind: 'version' } : { kind: 'reject', code: 'ERR_CONDITION' },
      effects: live !== undefined ? [{ type: 'touch', pool, key, expiresAt: deadline(now, ttl) }] : [],
      keys: [{ pool, key }],
      issue: (store) => store.kv(pool).touch(this.apiKey(key), ttl),
    };
  }

  /** store.atomic() over 2–3 pools with 0–3 checks; `bulk`: many large puts in one pool (fills segments). */
  planAtomic(s: State, now: number, bulk: boolean): Plan {
    const pools = bulk ? [this.chance(0.5) ? 'users' : this.pickPool()] : this.sample(POOLS, 2 + this.int(2));
    const checks: { pool: string; key: Buffer; version: number | null; holds: boolean }[] = [];
    const nChecks = bulk ? 0 : this.int(4);
    for (let i = 0; i < nChecks; i++) {
      const pool = this.pick(pools);
      const key = this.pickKey(pool, s);
      const live = liveCell(s, pool, key, now);
      const r = this.random();
      let version: number | null;
      if (r < 0.5) version = live === undefined ? null : live.version > 0 ? live.version : (liveCell(this.model, pool, key, now)?.version ?? null);
      else if (r < 0.65) version = null;
      else version = this.versionFor(s, pool, key, now);
      checks.push({ pool, key, version, holds: version === null ? live === undefined : live?.version === version });
    }
    type Op =
      | { op: 'put'; pool: string; key: Buffer; value: Buffer; ttl: number | undefined }
      | { op: 'delete'; pool: string; key: Buffer }
      | { op: 'incr'; pool: string; key: Buffer; delta: bigint; initial: bigint | undefined; ttl: number | undefined }
      | { op: 'touch'; pool: string; key: Buffer; ttl: number };
    const ops: Op[] = [];
    const nOps = bulk ? 10 + this.int(5) : 1 + this.int(5);
    for (let i = 0; i < nOps; i++) {
      const pool = this.pick(pools);
      const r = bulk ? 0 : this.random();
      if (r < 0.45) ops.push({ op: 'put', pool, key: this.pickKey(pool, s), value: this.value(bulk), ttl: bulk ? undefined : this.ttl() });
      else if (r < 0.65) ops.push({ op: 'delete', pool, key: this.pickKey(pool, s) });
      else if (r < 0.85) {
        ops.push({
          op: 'incr',
          pool,
          key: this.pickCounterKey(pool, s, now),
          delta: this.delta(),
          initial: this.chance(0.6) ? BigInt(this.int(1000)) : undefined,
          ttl: this.chance(0.2) ? 1 + this.int(5000) : undefined,
        });
      } else ops.push({ op: 'touch', pool, key: this.pickKey(pool, s), ttl: this.chance(0.2) ? 0 : 1 + this.int(5000) });
    }
    const failed = checks.filter((c) => !c.holds).map((c) => `${c.pool}/${hexOf(c.key)}@${c.version}`);
    let expect: Expect = failed.length > 0 ? { kind: 'failed', failed } : { kind: 'atomic' };
    const effects: Effect[] = [];
    if (failed.length === 0) {
      // Each op sees the ones before it in the batch.
      const sim = cloneState(s);
      for (const op of ops) {
        let effect: Effect | undefined;
        if (op.op === 'put') effect = { type: 'put', pool: op.pool, key: op.key, value: op.value, expiresAt: deadline(now, op.ttl) };
        else if (op.op === 'delete') effect = { type: 'delete', pool: op.pool, key: op.key };
        else if (op.op === 'touch') {
          // In a batch, touching an absent key does nothing (no check is implied).
          if (liveCell(sim, op.pool, op.key, now) !== undefined) effect = { type: 'touch', pool: op.pool, key: op.key, expiresAt: deadline(now, op.ttl) };
        } else {
          const o = this.incrOutcome(sim, now, op.pool, op.key, op.delta, op.initial, op.ttl);
          if (!o.ok) {
            expect = { kind: 'reject', code: o.code };
            break;
          }
          effect = o.effect;
        }
        if (effect !== undefined) {
          effects.push(effect);
          applyEffects(sim, [effect], PENDING);
        }
      }
      if (expect.kind === 'reject') effects.length = 0;
    }
    const describeOp = (op: Op): string =>
      op.op === 'put'
        ? `put ${op.pool}/${showKey(op.key)}=${showValue(op.value)}${op.ttl === undefined ? '' : ` ttl ${op.ttl}`}`
        : op.op === 'delete'
          ? `delete ${op.pool}/${showKey(op.key)}`
          : op.op === 'touch'
            ? `touch ${op.pool}/${showKey(op.key)} ${op.ttl}`
            : `incr ${op.pool}/${showKey(op.key)} ${op.delta} initial ${op.initial}`;
    return {
      what: `${bulk ? 'bulk ' : ''}atomic checks [${checks.map((c) => `${c.pool}/${showKey(c.key)}@${c.version}`).join(' ')}] ops [${ops.map(describeOp).join('; ')}]`,
      expect,
      effects,
      keys: [...checks.map(({ pool, key }) => ({ pool, key })), ...ops.map(({ pool, key }) => ({ pool, key }))],
      issue: (store) => {
        const batch = store.atomic();
        for (const c of checks) batch.check(c.pool, this.apiKey(c.key), c.version);
        for (const op of ops) {
          if (op.op === 'put') batch.put(op.pool, this.apiKey(op.key), this.apiValue(op.value), op.ttl === undefined ? {} : { ttl: op.ttl });
          else if (op.op === 'delete') batch.delete(op.pool, this.apiKey(op.key));
          else if (op.op === 'touch') batch.touch(op.pool, this.apiKey(op.key), op.ttl);
          else {
            const options: { initial?: number | bigint; ttl?: number } = {};
            if (op.initial !== undefined) options.initial = this.apiNumber(op.initial);
            if (op.ttl !== undefined) options.ttl = op.ttl;
            batch.incr(op.pool, this.apiKey(op.key), this.apiNumber(op.delta), options);
          }
        }
        return batch.commit();
      },
    };
  }

  /** A rewrite (or now and then a delete) of a cold key. */
  planCold(s: State, now: number): Plan {
    const key = this.pick(COLD_UNIVERSE);
    if (this.chance(0.1)) {
      return {
        what: `delete ${COLD_POOL}/${showKey(key)}`,
        expect: { kind: 'version' },
        effects: [{ type: 'delete', pool: COLD_POOL, key }],
        keys: [{ pool: COLD_POOL, key }],
        issue: (store) => store.kv(COLD_POOL).delete(this.apiKey(key)),
      };
    }
    const value = this.value(true);
    const live = liveCell(s, COLD_POOL, key, now);
    const ifVersion = live !== undefined && live.version > 0 && this.chance(0.3) ? live.version : undefined;
    return {
      what: `put ${COLD_POOL}/${showKey(key)} = ${showValue(value)}${ifVersion === undefined ? '' : ` ifVersion ${ifVersion}`}`,
      expect: { kind: 'version' },
      effects: [{ type: 'put', pool: COLD_POOL, key, value, expiresAt: 0 }],
      keys: [{ pool: COLD_POOL, key }],
      issue: (store) => store.kv(COLD_POOL).put(this.apiKey(key), this.apiValue(value), ifVersion === undefined ? {} : { ifVersion }),
    };
  }

  /** The cold pool's first values, in atomic batches of twelve. */
  async fillCold(): Promise<void> {
    this.where = 'filling the cold pool';
    for (let i = 0; i < COLD_KEYS; i += 12) {
      const batch = this.store.atomic();
      const effects: Effect[] = [];
      for (const key of COLD_UNIVERSE.slice(i, i + 12)) {
        const value = this.value(true);
        batch.put(COLD_POOL, this.apiKey(key), this.apiValue(value));
        effects.push({ type: 'put', pool: COLD_POOL, key, value, expiresAt: 0 });
      }
      const result = await batch.commit();
      assert.ok(result.ok && result.version > this.maxVersion, this.msg(`filling: ${JSON.stringify(result)}`));
      this.maxVersion = result.version;
      applyEffects(this.model, effects, result.version);
    }
    this.where = '';
  }

  planDrop(): Plan {
    // 'users' is never dropped: its keys live long, so the cleaner has data to move.
    const pool = this.pick(POOLS.filter((p) => p !== 'users'));
    return {
      what: `dropPool ${pool}`,
      expect: { kind: 'version' },
      effects: [{ type: 'drop', pool }],
      keys: [],
      issue: (store) => store.dropPool(pool),
    };
  }

  planOne(s: State, now: number, inFlight = false): Plan {
    const r = this.random();
    if (r < 0.32) return this.planPut(s, now);
    if (r < 0.41) return this.planDelete(s, now);
    if (r < 0.56) return this.planIncr(s, now);
    if (r < 0.63) return this.planTouch(s, now);
    if (r < 0.78) return this.planAtomic(s, now, false);
    if (r < 0.82) return this.planCold(s, now);
    if (r < 0.995 || inFlight) return this.planAtomic(s, now, true);
    return this.planDrop();
  }

  /** Checks a settled commit against its plan; returns its version when it went ahead. */
  checkOutcome(p: Plan, r: PromiseSettledResult<unknown>): number | undefined {
    const e = p.expect;
    if (e.kind === 'reject') {
      const reason = r.status === 'rejected' ? (r.reason as unknown) : undefined;
      assert.ok(r.status === 'rejected' && isAtomioError(reason, e.code), this.msg(`${p.what}: expected ${e.code}, got ${r.status === 'rejected' ? describe(reason) : `success ${JSON.stringify(r.value, bigints)}`}`));
      if (e.code === 'ERR_CONDITION') this.totals.conditionFailures++;
      return undefined;
    }
    assert.equal(r.status, 'fulfilled', this.msg(`${p.what}: expected success, got ${r.status === 'rejected' ? describe(r.reason) : ''}`));
    const value = (r as PromiseFulfilledResult<unknown>).value;
    if (e.kind === 'version') {
      assert.ok(typeof value === 'number' && Number.isSafeInteger(value) && value > 0, this.msg(`${p.what}: resolved with ${String(value)}, not a version`));
      return value;
    }
    if (e.kind === 'incr') {
      const got = value as { value: bigint; version: number };
      assert.equal(got.value, e.value, this.msg(`${p.what}: the counter's new value`));
      return got.version;
    }
    const got = value as AtomicResult;
    if (e.kind === 'atomic') {
      assert.ok(got.ok, this.msg(`${p.what}: expected { ok: true }, got ${JSON.stringify(got)}`));
      return got.version;
    }
    assert.ok(!got.ok, this.msg(`${p.what}: expected failed checks ${e.failed.join(' ')}, the batch committed`));
    assert.deepEqual(got.failed.map((c) => `${c.pool}/${hexOf(c.key)}@${c.version}`), e.failed, this.msg(`${p.what}: the failed checks`));
    this.totals.atomicFailedChecks++;
    this.totals.conditionFailures++;
    return undefined;
  }

  // -------------------------------------------------------------------------------------
  // Reads checked against the model

  async checkKey(pool: string, key: Buffer): Promise<void> {
    const kv = this.store.kv(pool);
    const now = this.clock.now();
    const want = liveCell(this.model, pool, key, now);
    const what = `${pool}/${showKey(key)}`;
    const k = this.apiKey(key);
    const how = this.int(6);
    const sameValue = (got: Buffer | undefined, via: string): void => {
      if (got === undefined && want === undefined) return;
      assert.ok(got !== undefined && want !== undefined && got.equals(want.value), this.msg(`${via}(${what}) = ${showValue(got)}, the model has ${showValue(want?.value)}`));
    };
    const sameEntry = (got: Entry | undefined, via: string): void => {
      if (want === undefined || got === undefined) {
        assert.equal(got === undefined, want === undefined, this.msg(`${via}(${what}) = ${got ? showValue(got.value) : 'absent'}, the model has ${showValue(want?.value)}`));
        return;
      }
      assert.ok(got.key.equals(key), this.msg(`${via}(${what}).key`));
      sameValue(got.value, via);
      assert.equal(got.version, want.version, this.msg(`${via}(${what}).version`));
      assert.equal(got.expiresAt, want.expiresAt, this.msg(`${via}(${what}).expiresAt`));
    };
    if (how === 0) sameValue(await kv.get(k), 'get');
    else if (how === 1) sameValue(kv.getSync(k), 'getSync');
    else if (how === 2) sameEntry(await kv.getEntry(k), 'getEntry');
    else if (how === 3) sameEntry(kv.getEntrySync(k), 'getEntrySync');
    else if (how === 4) {
      const other = this.pickKey(pool, this.model);
      const got = await kv.getMany([k, this.apiKey(other), k]);
      sameValue(got[0], 'getMany');
      sameValue(got[2], 'getMany (the same key again)');
      const w = liveCell(this.model, pool, other, now)?.value;
      assert.ok(got[1] === undefined ? w === undefined : w !== undefined && got[1].equals(w), this.msg(`getMany(${pool}/${showKey(other)}) = ${showValue(got[1])}, the model has ${showValue(w)}`));
    } else assert.equal(kv.has(k), want !== undefined, this.msg(`has(${what})`));
    assert.equal(kv.versionOf(this.apiKey(key)), want?.version, this.msg(`versionOf(${what})`));
  }

  /** One random list / listSync / count over a random range of a random pool. */
  async checkRange(): Promise<void> {
    this.totals.rangeQueries++;
    const which = this.random();
    const pool = which < 0.05 ? NO_POOL : which < 0.12 ? COLD_POOL : this.pickPool();
    const kv = this.store.kv(pool);
    const now = this.clock.now();
    const r = this.range(pool === COLD_POOL ? COLD_UNIVERSE : this.keys);
    const want = modelList(liveEntries(this.model, pool, now), r);
    const options = this.apiRange(r);
    const label = `${pool} ${showRange(r)}`;
    const how = this.int(3);
    let got: Entry[];
    if (how === 0) {
      got = [...kv.listSync(options)];
    } else {
      got = [];
      // Now and then stop early: the iterator must let go and what came so far must be right.
      const stopAt = how === 2 && want.length > 1 ? 1 + this.int(want.length - 1) : Infinity;
      for await (const e of kv.list(options)) {
        got.push(e);
        if (got.length >= stopAt) break;
      }
      if (stopAt !== Infinity) want.length = stopAt;
    }
    const diff = entriesDiff(got, want, r.values !== false);
    assert.equal(diff, undefined, this.msg(`${how === 0 ? 'listSync' : 'list'}(${label}): ${diff}`));
    const { reverse: _r, limit: _l, values: _v, ...bounds } = r;
    const counted = modelList(liveEntries(this.model, pool, now), bounds).length;
    assert.equal(kv.count(this.apiRange(bounds)), counted, this.msg(`count(${label})`));
  }

  /** The whole content of every pool, the pool list and the pool stats against the model. */
  async checkAll(label: string): Promise<void> {
    const store = this.store;
    const now = this.clock.now();
    assert.deepEqual(store.pools(), [...this.model.keys()].sort(), this.msg(`${label}: store.pools()`));
    for (const pool of new Set<string>([...POOLS, NO_POOL, ...this.model.keys()])) {
      const kv = store.kv(pool);
      const want = liveEntries(this.model, pool, now);
      let got: Entry[];
      if (this.chance(0.5)) got = [...kv.listSync()];
      else {
        got = [];
        for await (const e of kv.list()) got.push(e);
      }
      const diff = entriesDiff(got, want);
      assert.equal(diff, undefined, this.msg(`${label}: pool ${pool}: ${diff}`));
      assert.equal(kv.count(), want.length, this.msg(`${label}: count() of pool ${pool}`));
      const stats = kv.stats();
      assert.equal(stats.keys, want.length, this.msg(`${label}: stats().keys of pool ${pool}`));
      const bytes = want.reduce((n, e) => n + e.key.length + e.cell.value.length, 0);
      assert.equal(stats.liveBytes, bytes, this.msg(`${label}: stats().liveBytes of pool ${pool}`));
      for (const e of want) this.maxVersion = Math.max(this.maxVersion, e.cell.version);
    }
  }

  // -------------------------------------------------------------------------------------
  // Steps

  /** A group of commits issued together (some reads among them), then checked. */
  async group(): Promise<void> {
    this.totals.groups++;
    const now = this.clock.now();
    const shadow = cloneState(this.model);
    const plans: Plan[] = [];
    const promises: Promise<PromiseSettledResult<unknown>>[] = [];
    /** Every state each key went through in the group so far (its value, or undefined: absent). */
    const history = new Map<string, (Buffer | undefined)[]>();
    const dropped = new Set<string>();
    const stateOf = (s: State, pool: string, key: Buffer): Buffer | undefined => liveCell(s, pool, key, now)?.value;
    const reads: { what: string; allowed: (Buffer | undefined)[]; promise: Promise<PromiseSettledResult<Buffer | undefined>> }[] = [];
    const n = this.chance(0.4) ? 1 : 2 + this.int(7);
    for (let i = 0; i < n; i++) {
      const p = this.planOne(shadow, now);
      plans.push(p);
      promises.push(settle(p.issue(this.store)));
      if (p.expect.kind !== 'reject' && p.expect.kind !== 'failed') applyEffects(shadow, p.effects, PENDING);
      for (const e of p.effects) {
        if (e.type === 'drop') dropped.add(e.pool);
        else {
          const id = idOf(e.pool, e.key);
          if (!history.has(id)) history.set(id, []);
          history.get(id)!.push(stateOf(shadow, e.pool, e.key));
        }
      }
      if (this.chance(0.2)) {
        // A read among the writes sees the state before the group or after one of the
        // commits issued before it: never a state the group did not go through.
        this.totals.concurrentReads++;
        const pool = this.pickPool();
        const key = this.pickKey(pool, shadow);
        const allowed = [stateOf(this.model, pool, key), ...(history.get(idOf(pool, key)) ?? [])];
        if (dropped.has(pool)) allowed.push(undefined);
        const kv = this.store.kv(pool);
        const how = this.int(3);
        const promise = how === 0 ? kv.get(this.apiKey(key)) : how === 1 ? Promise.resolve(kv.getSync(this.apiKey(key))) : kv.getEntry(this.apiKey(key)).then((e) => e?.value);
        reads.push({ what: `${['get', 'getSync', 'getEntry'][how]}(${pool}/${showKey(key)}) issued after op ${i}`, allowed, promise: settle(promise) });
      }
      if (this.chance(0.3)) await turns(this.int(3));
    }
    const results = await Promise.all(promises);
    let last = this.maxVersion;
    for (let i = 0; i < plans.length; i++) {
      const p = plans[i]!;
      this.where = p.what;
      const version = this.checkOutcome(p, results[i]!);
      if (p.keys.some(({ pool, key }) => traced(pool, key)) || p.effects.some((e) => e.type === 'drop' && traced(e.pool))) {
        this.trace(`at ${now}: ${p.what} -> ${version ?? describeResult(results[i]!)}`);
      }
      this.opIndex++;
      this.totals.ops++;
      if (version === undefined) continue;
      assert.ok(version > last, this.msg(`version ${version} after ${last}: versions rise in the order commits are issued`));
      last = version;
      applyEffects(this.model, p.effects, version);
    }
    this.maxVersion = last;
    this.where = 'reads among the writes';
    for (const r of reads) {
      const s = await r.promise;
      assert.equal(s.status, 'fulfilled', this.msg(`${r.what} failed: ${s.status === 'rejected' ? describe(s.reason) : ''}`));
      const got = (s as PromiseFulfilledResult<Buffer | undefined>).value;
      const seen = r.allowed.some((a) => (a === undefined ? got === undefined : got !== undefined && got.equals(a)));
      assert.ok(seen, this.msg(`${r.what} = ${showValue(got)}, a state the key never had in this group`));
    }
    this.where = 'after a group';
    const seen = new Set<string>();
    for (const p of plans) {
      for (const { pool, key } of p.keys) {
        const id = idOf(pool, key);
        if (seen.has(id)) continue;
        seen.add(id);
        await this.checkKey(pool, key);
      }
      for (const e of p.effects) {
        if (e.type === 'drop') {
          this.totals.drops++;
          assert.equal(this.store.kv(e.pool).count(), liveEntries(this.model, e.pool, now).length, this.msg(`count() of pool ${e.pool} after the group that dropped it`));
        }
      }
    }
    this.where = '';
  }

  /** A transaction that reads, maybe lists, writes; now and then a write of another client makes it run again. */
  async transaction(): Promise<void> {
    this.totals.transactions++;
    const pools = this.sample(POOLS, 1 + this.int(2));
    const reads = Array.from({ length: this.int(4) }, () => {
      const pool = this.pick(pools);
      return { how: this.pick(['get', 'getEntry', 'has'] as const), pool, key: this.pickKey(pool, this.model) };
    });
    const listing = this.chance(0.3) ? { pool: this.pick(pools), range: { ...this.range(), values: undefined } } : undefined;
    type TxWrite =
      | { how: 'put'; pool: string; key: Buffer; value: Buffer; ttl: number | undefined }
      | { how: 'delete'; pool: string; key: Buffer }
      | { how: 'incr'; pool: string; key: Buffer; delta: bigint; initial: bigint | undefined; ttl: number | undefined };
    const writes: TxWrite[] = [];
    const withTtl = new Set<string>();
    const nWrites = this.chance(0.1) ? 0 : 1 + this.int(3);
    for (let i = 0; i < nWrites; i++) {
      const pool = this.pick(pools);
      const fromReads = reads.filter((r) => r.pool === pool);
      const key = fromReads.length > 0 && this.chance(0.5) ? this.pick(fromReads).key : this.pickKey(pool, this.model);
      const id = idOf(pool, key);
      const r = this.random();
      // An incr of a key this transaction gave a TTL is left out: see the test of tx.incr below.
      if (r < 0.3 && !withTtl.has(id)) {
        const ttl = this.chance(0.2) ? 1 + this.int(5000) : undefined;
        if (ttl !== undefined) withTtl.add(id);
        writes.push({ how: 'incr', pool, key, delta: this.delta(), initial: this.chance(0.6) ? BigInt(this.int(1000)) : undefined, ttl });
      } else if (r < 0.75) {
        const ttl = this.ttl();
        if (ttl !== undefined && ttl !== 0) withTtl.add(id);
        writes.push({ how: 'put', pool, key, value: this.value(), ttl });
      } else writes.push({ how: 'delete', pool, key });
    }
    const ownRead = writes.length > 0 && this.chance(0.5) ? this.pick(writes) : undefined;
    const ownListing = this.chance(0.2) ? { pool: this.pick(pools), range: { ...this.range(), values: undefined } } : undefined;
    // Now and then another client writes, between the transaction's reads and its commit, a
    // key it read or a key inside the range it listed.
    let conflict: { pool: string; key: Buffer; value: Buffer } | undefined;
    if ((reads.length > 0 || listing !== undefined) && this.chance(0.3)) {
      const inListed = listing === undefined ? [] : this.keys.filter((k) => inRange(k, listing.range));
      if (inListed.length > 0 && (reads.length === 0 || this.chance(0.5))) conflict = { pool: listing!.pool, key: this.pick(inListed), value: this.value() };
      else if (reads.length > 0) conflict = { pool: reads[0]!.pool, key: reads[0]!.key, value: this.value() };
    }
    let retry = false;
    const what = `transaction: reads [${reads.map((r) => `${r.how} ${r.pool}/${showKey(r.key)}`).join(', ')}]${listing ? ` list ${listing.pool} ${showRange(listing.range)}` : ''}, writes [${writes
      .map((w) => `${w.how} ${w.pool}/${showKey(w.key)}`)
      .join(', ')}]${conflict ? `, with a conflicting write of ${conflict.pool}/${showKey(conflict.key)}` : ''}`;
    this.where = what;

    type Own = { pool: string; key: Buffer; value: Buffer | undefined; expiresAt: number };
    let attempts = 0;
    let abortedIn = -1;
    let final: Map<string, Own> | undefined;
    const now = this.clock.now();
    const merged = (own: Map<string, Own>, pool: string): { key: Buffer; cell: Cell }[] => {
      const byKey = new Map<string, { key: Buffer; cell: Cell }>();
      for (const e of liveEntries(this.model, pool, now)) byKey.set(hexOf(e.key), e);
      for (const w of own.values()) {
        if (w.pool !== pool) continue;
        if (w.value === undefined) byKey.delete(hexOf(w.key));
        else byKey.set(hexOf(w.key), { key: w.key, cell: { value: w.value, version: 0, expiresAt: 0 } });
      }
      return [...byKey.values()].sort((a, b) => Buffer.compare(a.key, b.key));
    };
    const run = this.store.transaction(async (tx) => {
      const attempt = attempts++;
      const own = new Map<string, Own>();
      // What the transaction should see: its own writes (version 0, no deadline), else the store.
      const view = (pool: string, key: Buffer): Cell | undefined => {
        const w = own.get(idOf(pool, key));
        if (w !== undefined) return w.value === undefined ? undefined : { value: w.value, version: 0, expiresAt: 0 };
        return liveCell(this.model, pool, key, now);
      };
      const checkList = async (l: { pool: string; range: RangeSpec }, label: string): Promise<void> => {
        const got = await tx.list(l.pool, this.apiRange(l.range));
        const diff = entriesDiff(got, modelList(merged(own, l.pool), l.range));
        assert.equal(diff, undefined, this.msg(`attempt ${attempt}: ${label} tx.list(${l.pool} ${showRange(l.range)}): ${diff}`));
      };
      for (const r of reads) {
        const want = view(r.pool, r.key);
        const label = `attempt ${attempt}: tx.${r.how}(${r.pool}/${showKey(r.key)})`;
        if (r.how === 'has') assert.equal(tx.has(r.pool, this.apiKey(r.key)), want !== undefined, this.msg(label));
        else if (r.how === 'get') {
          const got = await tx.get(r.pool, this.apiKey(r.key));
          assert.ok(got === undefined ? want === undefined : want !== undefined && got.equals(want.value), this.msg(`${label} = ${showValue(got)}, expected ${showValue(want?.value)}`));
        } else {
          const got = await tx.getEntry(r.pool, this.apiKey(r.key));
          assert.equal(got === undefined, want === undefined, this.msg(`${label}: present`));
          if (got !== undefined && want !== undefined) {
            assert.ok(got.value.equals(want.value), this.msg(`${label} = ${showValue(got.value)}, expected ${showValue(want.value)}`));
            assert.equal(got.version, want.version, this.msg(`${label}.version`));
            assert.equal(got.expiresAt, want.expiresAt, this.msg(`${label}.expiresAt`));
          }
        }
      }
      if (listing !== undefined) await checkList(listing, 'before its writes:');
      if (conflict !== undefined && attempt === 0) {
        // If the write changes a key the transaction read, or what its listing saw (the keys
        // and versions of the listed window), its commit must fail and it must run again, on
        // fresh reads; otherwise it commits at once.
        const window = (l: { pool: string; range: RangeSpec }): string =>
          modelList(liveEntries(this.model, l.pool, now), l.range)
            .map((e) => `${hexOf(e.key)}@${e.cell.version}`)
            .join(',');
        const before = listing !== undefined && listing.pool === conflict.pool ? window(listing) : undefined;
        const version = await this.store.kv(conflict.pool).put(this.apiKey(conflict.key), conflict.value);
        assert.ok(version > this.maxVersion, this.msg(`the conflicting put's version ${version} after ${this.maxVersion}`));
        this.maxVersion = version;
        applyEffects(this.model, [{ type: 'put', pool: conflict.pool, key: conflict.key, value: conflict.value, expiresAt: 0 }], version);
        retry = reads.some((r) => r.pool === conflict.pool && r.key.equals(conflict.key)) || (before !== undefined && window(listing!) !== before);
        if (retry) this.totals.txConflicts++;
      }
      for (const w of writes) {
        const id = idOf(w.pool, w.key);
        if (w.how === 'put') {
          tx.put(w.pool, this.apiKey(w.key), this.apiValue(w.value), w.ttl === undefined ? {} : { ttl: w.ttl });
          own.delete(id);
          own.set(id, { pool: w.pool, key: w.key, value: w.value, expiresAt: deadline(now, w.ttl) });
        } else if (w.how === 'delete') {
          tx.delete(w.pool, this.apiKey(w.key));
          own.delete(id);
          own.set(id, { pool: w.pool, key: w.key, value: undefined, expiresAt: 0 });
        } else {
          // The counter as the transaction sees it: its own write, or the store's (keeping its deadline).
          const mine = own.get(id);
          const state: State = new Map();
          const current = mine !== undefined ? (mine.value === undefined ? undefined : { value: mine.value, version: 0, expiresAt: mine.expiresAt }) : liveCell(this.model, w.pool, w.key, now);
          if (current !== undefined) state.set(w.pool, new Map([[hexOf(w.key), current]]));
          const o = this.incrOutcome(state, now, w.pool, w.key, w.delta, w.initial, w.ttl);
          const options: { initial?: number | bigint; ttl?: number } = {};
          if (w.initial !== undefined) options.initial = this.apiNumber(w.initial);
          if (w.ttl !== undefined) options.ttl = w.ttl;
          if (!o.ok) {
            await assert.rejects(tx.incr(w.pool, this.apiKey(w.key), this.apiNumber(w.delta), options), code(o.code, this.msg(`attempt ${attempt}: tx.incr(${w.pool}/${showKey(w.key)})`)));
            abortedIn = attempt;
            throw new TxAbort(o.code);
          }
          const got = await tx.incr(w.pool, this.apiKey(w.key), this.apiNumber(w.delta), options);
          assert.equal(got, o.value, this.msg(`attempt ${attempt}: tx.incr(${w.pool}/${showKey(w.key)}) by ${w.delta}`));
          const effect = o.effect as Extract<Effect, { type: 'put' }>;
          own.delete(id);
          own.set(id, { pool: w.pool, key: w.key, value: effect.value, expiresAt: effect.expiresAt });
        }
      }
      if (ownRead !== undefined) {
        const want = view(ownRead.pool, ownRead.key);
        const got = await tx.get(ownRead.pool, this.apiKey(ownRead.key));
        assert.ok(got === undefined ? want === undefined : want !== undefined && got.equals(want.value), this.msg(`attempt ${attempt}: tx.get of its own write ${ownRead.pool}/${showKey(ownRead.key)} = ${showValue(got)}, expected ${showValue(want?.value)}`));
      }
      if (ownListing !== undefined) await checkList(ownListing, 'after its writes:');
      final = own;
      return attempt;
    });
    let result: number | undefined;
    try {
      result = await run;
    } catch (error) {
      if (!(error instanceof TxAbort)) throw error;
      this.totals.txAborted++;
    }
    const expectedAttempts = retry && abortedIn !== 0 ? 2 : 1;
    assert.equal(attempts, expectedAttempts, this.msg(`the transaction's function ran ${attempts} times`));
    if (abortedIn >= 0) {
      // Ended by its function: nothing written.
      for (const w of writes) await this.checkKey(w.pool, w.key);
      this.where = '';
      return;
    }
    assert.equal(result, expectedAttempts - 1, this.msg('the transaction resolves with what its function returned'));
    const written = [...final!.values()];
    let version: number | undefined;
    for (const w of written) {
      if (w.value === undefined) continue;
      const v = this.store.kv(w.pool).versionOf(this.apiKey(w.key));
      version ??= v;
      assert.equal(v, version, this.msg(`every key the transaction put has its one version (${w.pool}/${showKey(w.key)})`));
    }
    if (version !== undefined) {
      assert.ok(version > this.maxVersion, this.msg(`the transaction's version ${version} after ${this.maxVersion}`));
      this.maxVersion = version;
    }
    const effects: Effect[] = written.map((w) =>
      w.value === undefined ? { type: 'delete', pool: w.pool, key: w.key } : { type: 'put', pool: w.pool, key: w.key, value: w.value, expiresAt: w.expiresAt },
    );
    applyEffects(this.model, effects, version ?? PENDING);
    if ([...reads, ...writes].some((r) => traced(r.pool, r.key)) || (conflict !== undefined && traced(conflict.pool, conflict.key))) this.trace(`${what} -> ${version}`);
    for (const w of written) await this.checkKey(w.pool, w.key);
    this.opIndex++;
    this.where = '';
  }

  /** Time passes: sometimes to a deadline exactly (or 1 ms before it). */
  async advanceClock(): Promise<void> {
    const before = this.clock.now();
    const r = this.random();
    const deadlines: { pool: string; key: Buffer; at: number }[] = [];
    for (const [pool, cells] of this.model) {
      for (const [hex, cell] of cells) if (cell.expiresAt > before) deadlines.push({ pool, key: Buffer.from(hex, 'hex'), at: cell.expiresAt });
    }
    let watch: { pool: string; key: Buffer }[] = [];
    if (r < 0.35 && deadlines.length > 0) {
      const d = this.pick(deadlines);
      this.clock.set(this.chance(0.7) || d.at - 1 < before ? d.at : d.at - 1);
      watch = [d];
    } else {
      this.clock.advance(r < 0.8 ? this.int(400) : r < 0.95 ? this.int(4000) : this.int(70_000));
    }
    const now = this.clock.now();
    const crossed = deadlines.filter((d) => d.at <= now);
    this.totals.expiries += crossed.length;
    // Look before any commit sweeps: expiry is a matter of the clock, not of housekeeping.
    this.where = `after the clock moved from ${before} to ${now}`;
    for (const d of [...watch, ...crossed.slice(0, 4)]) await this.checkKey(d.pool, d.key);
    await this.checkRange();
    this.where = '';
  }

  collectStats(): void {
    const s = this.store.stats();
    this.totals.segmentsCleaned += s.segmentsCleaned;
    this.totals.checkpoints += s.checkpoints;
    this.totals.commits += s.commits;
    this.totals.mediaBytes += this.fault.media.bytesWritten;
  }

  async closeAndReopen(): Promise<void> {
    this.collectStats();
    this.where = 'close + reopen';
    await this.fault.closeAndReopen();
    this.totals.reopens++;
    const report = this.store.stats().lastRecovery!;
    assert.deepEqual(report.corruptions, [], this.msg('a clean reopen reports no corruption'));
    assert.equal(report.recordsReplayed, 0, this.msg('a clean close checkpoints everything'));
    await this.checkAll('after close and reopen');
    this.where = '';
  }

  /**
   * Commits on distinct keys issued without waiting, then a crash in `mode` at a random
   * moment, and a reopen: every acknowledged commit is there; every other one is all or
   * nothing; those that are there form a prefix of the commits in issue order.
   */
  async crashWithWritesInFlight(mode: CrashMode, crashNo: number): Promise<void> {
    const now = this.clock.now();
    const used = new Set<string>();
    interface InFlight {
      plan: Plan;
      acked: boolean;
      result: PromiseSettledResult<unknown> | undefined;
    }
    const inFlight: InFlight[] = [];
    let crashed = false;
    const waves = 1 + this.int(3);
    for (let w = 0; w < waves; w++) {
      const n = 2 + this.int(11);
      for (let i = 0; i < n; i++) {
        const plan = this.planOne(this.model, now, true);
        const ids = plan.keys.map(({ pool, key }) => idOf(pool, key));
        // Keys distinct across the commits in flight (and within each): each commit's fate
        // can be read off its own keys.
        if (new Set(ids).size !== ids.length || ids.some((id) => used.has(id))) continue;
        for (const id of ids) used.add(id);
        const f: InFlight = { plan, acked: false, result: undefined };
        plan.issue(this.store).then(
          (value) => {
            if (crashed) return;
            f.acked = true;
            f.result = { status: 'fulfilled', value };
          },
          (reason: unknown) => {
            if (!crashed) f.result = { status: 'rejected', reason };
          },
        );
        inFlight.push(f);
      }
      await turns(this.int(4));
    }
    // When to pull the plug: after everything settled, at a random moment, or while writes
    // sit unflushed in the medium's cache.
    const when = this.random();
    if (when < 0.2) {
      for (let i = 0; i < 2000 && inFlight.some((f) => f.result === undefined); i++) await turns(1);
    } else if (when < 0.5) {
      await turns(this.int(12));
    } else {
      let sightings = this.int(4);
      for (let i = 0; i < 300; i++) {
        if (this.fault.media.pendingWrites > 0 && sightings-- === 0) break;
        await turns(1);
      }
    }
    this.collectStats();
    crashed = true;
    this.where = `crash ${crashNo} (${mode}) with ${inFlight.length} commits in flight`;
    const report = await this.fault.crashAndReopen(mode, deriveSeed(this.seed, 5000 + crashNo));
    this.totals.crashes[mode]++;
    if (TRACE !== undefined) this.trace(`crash ${crashNo} (${mode}) with ${inFlight.length} commits in flight`);
    const recovery = this.store.stats().lastRecovery!;
    assert.deepEqual(recovery.corruptions, [], this.msg(`a crash is not corruption: ${JSON.stringify(recovery)} after ${JSON.stringify(report.writes.map((w) => w.outcome))}`));

    let lostBefore: string | undefined;
    let last = this.maxVersion;
    for (const f of inFlight) {
      const p = f.plan;
      this.totals.inFlight++;
      if (f.acked) this.totals.inFlightAcked++;
      this.where = `crash ${crashNo} (${mode}): ${p.what}`;
      if (f.result !== undefined) this.checkOutcome(p, f.result); // settled before the crash: as predicted
      if (p.expect.kind === 'reject' || p.expect.kind === 'failed') continue;
      if (!f.acked) this.totals.unackedWrites++;
      // What each of its keys shows: the commit's effect, the state before it, or neither.
      const states: ('applied' | 'absent' | 'unknown')[] = [];
      let version: number | undefined;
      for (const e of p.effects) {
        if (e.type === 'drop') continue;
        const before = liveCell(this.model, e.pool, e.key, now);
        const got = this.store.kv(e.pool).getEntrySync(this.apiKey(e.key));
        const isBefore = before === undefined ? got === undefined : got !== undefined && got.version === before.version && got.value.equals(before.value) && got.expiresAt === before.expiresAt;
        let state: 'applied' | 'absent' | 'unknown' | 'neither';
        if (e.type === 'put') {
          const isAfter = got !== undefined && got.value.equals(e.value) && got.expiresAt === e.expiresAt && (before === undefined || got.version !== before.version);
          state = isAfter ? 'applied' : isBefore ? 'absent' : 'neither';
          if (isAfter) {
            version ??= got.version;
            assert.equal(got.version, version, this.msg(`every key of one commit has its version (${e.pool}/${showKey(e.key)})`));
          }
        } else if (e.type === 'delete') {
          state = before === undefined ? 'unknown' : got === undefined ? 'applied' : isBefore ? 'absent' : 'neither';
        } else {
          const isAfter = got !== undefined && before !== undefined && got.version === before.version && got.value.equals(before.value) && got.expiresAt === e.expiresAt;
          state = before !== undefined && e.expiresAt === before.expiresAt ? 'unknown' : isAfter ? 'applied' : isBefore ? 'absent' : 'neither';
        }
        assert.notEqual(state, 'neither', this.msg(`${e.type} of ${e.pool}/${showKey(e.key)}: the key shows ${got ? `${showValue(got.value)} v${got.version} exp ${got.expiresAt}` : 'absent'}, neither the commit's effect nor the state before it (${showValue(before?.value)} v${before?.version})`));
        states.push(state as 'applied' | 'absent' | 'unknown');
      }
      const applied = states.includes('applied');
      const absent = states.includes('absent');
      assert.ok(!(applied && absent), this.msg(`the commit is half there: its keys show ${states.join(', ')}`));
      if (f.acked) assert.ok(!absent, this.msg('an acknowledged commit is lost after the crash'));
      if (applied) {
        assert.equal(lostBefore, undefined, this.msg(`this commit survived, but an earlier one (${lostBefore}) was lost: not a prefix of the log`));
        if (f.acked && f.result?.status === 'fulfilled' && version !== undefined) {
          const ackedVersion = this.checkOutcome(p, f.result);
          assert.equal(version, ackedVersion, this.msg('the version after the crash is the one the write returned'));
        }
        if (version !== undefined) {
          assert.ok(version > last, this.msg(`version ${version} after ${last}: surviving commits keep issue order`));
          last = version;
        }
        if (!f.acked) this.totals.unackedApplied++;
        applyEffects(this.model, p.effects, version ?? PENDING);
      } else if (absent) {
        lostBefore ??= p.what;
        this.totals.unackedLost++;
      }
    }
    this.maxVersion = last;
    this.where = `after crash ${crashNo} (${mode})`;
    await this.checkAll(`after crash ${crashNo} (${mode})`);
    this.where = '';
  }
}

/** The promise's outcome, with its rejection handled from the start. */
function settle<T>(promise: Promise<T>): Promise<PromiseSettledResult<T>> {
  return promise.then(
    (value) => ({ status: 'fulfilled', value }),
    (reason: unknown) => ({ status: 'rejected', reason }),
  );
}

function bigints(_key: string, value: unknown): unknown {
  return typeof value === 'bigint' ? `${value}n` : value;
}

// ---------------------------------------------------------------------------------------

const SEED = testSeed();
/** ATOMIO_KV_TRACE=pool/keyhex prints every commit on that key (and drops of its pool), to debug a replay. */
const TRACE = process.env.ATOMIO_KV_TRACE;

function traced(pool: string, key?: Buffer): boolean {
  if (TRACE === undefined) return false;
  return key === undefined ? TRACE.startsWith(`${pool}/`) : TRACE === idOf(pool, key);
}

function describeResult(r: PromiseSettledResult<unknown>): string {
  return r.status === 'rejected' ? describe(r.reason) : JSON.stringify(r.value, bigints);
}
const OPS = Number(process.env.ATOMIO_KV_MODEL_OPS ?? 3000);

test('model: kv puts, deletes, counters, touches, atomic batches, transactions and pool drops match an in-memory model through TTL expiry, cleaning, checkpoints, reopens and crashes with writes in flight', async (t) => {
  t.diagnostic(`seed ${SEED} (replay: ATOMIO_SEED=${SEED} node --test dist/test/kv/model.test.js)`);
  const clock = new ManualClock();
  const fault = await FaultStore.create({ ...GEOMETRY, clock, mediaSeed: deriveSeed(SEED, 3) });
  const run = new Run(t, SEED, fault, clock);
  try {
    await run.fillCold();
    const reopenEvery = 500;
    const crashEvery = 300;
    let nextReopen = reopenEvery;
    let nextCrash = crashEvery / 2 + run.int(crashEvery / 2);
    let crashNo = 0;
    const firstMode = run.int(MODES.length);
    while (run.opIndex < OPS) {
      if (run.chance(0.25)) await run.advanceClock();
      const r = run.random();
      if (r < 0.07) await run.transaction();
      else await run.group();
      if (run.chance(0.3)) await run.checkRange();
      if (run.opIndex >= nextReopen) {
        nextReopen += reopenEvery;
        await run.closeAndReopen();
      }
      if (run.opIndex >= nextCrash) {
        nextCrash += crashEvery;
        await run.crashWithWritesInFlight(MODES[(firstMode + crashNo) % MODES.length]!, crashNo);
        crashNo++;
      }
    }
    run.collectStats();
    await run.checkAll('at the end');
    const totals = run.totals;
    t.diagnostic(`seed ${SEED}: ${JSON.stringify(totals)}; stats now ${JSON.stringify(fault.store.stats())}`);
    const m = (s: string): string => `${s} [seed ${SEED}; replay with ATOMIO_SEED=${SEED}]: ${JSON.stringify(totals)}`;
    assert.ok(totals.segmentsCleaned > 0, m('the cleaner ran'));
    assert.ok(totals.checkpoints > totals.reopens, m('checkpoints were written while running'));
    assert.ok(totals.conditionFailures > 0 && totals.atomicFailedChecks > 0, m('conditions and atomic checks failed'));
    assert.ok(totals.expiries > 0, m('keys expired'));
    assert.ok(totals.incrWraps > 0 && totals.incrFloors > 0 && totals.incrNotCounter > 0, m('counters wrapped, stopped at 0 and refused non-numbers'));
    assert.ok(totals.txConflicts > 0 && totals.transactions > 10, m('transactions ran and conflicted'));
    if (OPS >= 2000) {
      for (const mode of MODES) assert.ok(totals.crashes[mode] > 0, m(`a ${mode} crash happened`));
      assert.ok(totals.drops > 0, m('pools were dropped'));
    }
  } finally {
    await fault.dispose();
  }
});

// ---------------------------------------------------------------------------------------
// Minimal reproductions of what the model found (both fixed; kept as regression tests).

test('an atomic batch that touches an expired key changes nothing, and the key stays absent after a crash and recovery', async () => {
  const clock = new ManualClock(1_000_000);
  const fault = await FaultStore.create({ ...GEOMETRY, clock });
  try {
    const kv = fault.store.kv('p');
    await kv.put('k', 'v', { ttl: 100 });
    clock.advance(200);
    assert.equal(kv.has('k'), false, 'the key expired');
    const result = await fault.store.atomic().touch('p', 'k', 1_000_000).commit();
    assert.equal(result.ok, true);
    assert.equal(kv.has('k'), false, 'a touch in a batch does not bring back an expired key');
    await fault.crashAndReopen('keep-all');
    const entry = await fault.store.kv('p').getEntry('k');
    assert.equal(entry, undefined, `recovery, replaying the touch, must not bring it back either: got ${JSON.stringify(entry && { value: entry.value.toString(), version: entry.version, expiresAt: entry.expiresAt })}`);
  } finally {
    await fault.dispose();
  }
});

test("tx.incr of a key the same transaction put with a TTL keeps that TTL, as incr keeps an existing key's", async () => {
  const clock = new ManualClock(1_000_000);
  const fault = await FaultStore.create({ ...GEOMETRY, clock });
  try {
    const kv = fault.store.kv('p');
    await fault.store.transaction(async (tx) => {
      tx.put('p', 'n', '5', { ttl: 1000 });
      assert.equal(await tx.incr('p', 'n', 1), 6n);
    });
    const entry = await kv.getEntry('n');
    assert.equal(entry?.value.toString(), '6');
    assert.equal(entry?.expiresAt, 1_001_000, 'the counter keeps the TTL the transaction gave it');
  } finally {
    await fault.dispose();
  }
});
