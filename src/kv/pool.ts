// The kv face: a pool of ordered byte keys with versions, conditions, TTL and counters.
//
// Reads come from the pool's in-memory index and, for values, from the cache of hot values
// or one read of the log. Writes go through the engine's group commit like every other
// commit, so they are durable when they resolve (durability 'full') and a condition is
// checked atomically with the write it guards.

import { AtomioError } from '../base/errors.js';
import type { Condition, Engine, KeyExpectation, PoolReader, SnapshotState } from '../engine/engine.js';
import { KeyIndex, type KeyCursor, type KeyView } from '../ftl/key-index.js';
import {
  checkOptionsObject,
  checkTtl,
  checkVersion,
  describe,
  lookupKey,
  ownedKey,
  ownedValue,
  prefixEnd,
  type Key,
  type Value,
} from './encoding.js';

export interface Entry {
  key: Buffer;
  value: Buffer;
  /** The version of the commit that last wrote the key. */
  version: number;
  /** Milliseconds since the epoch when the key expires; 0 when it never does. */
  expiresAt: number;
}

export interface PutOptions {
  /** Milliseconds until the key expires (0 or absent: never). */
  ttl?: number;
  /** Write only if the key's version is this one. */
  ifVersion?: number;
  /** Write only if the key does not exist. */
  ifAbsent?: boolean;
  /** Write only if the key exists. */
  ifPresent?: boolean;
}

export interface DeleteOptions {
  ifVersion?: number;
  /** Fail with ERR_CONDITION when the key does not exist (memcached's NOT_FOUND). */
  ifPresent?: boolean;
}

export interface IncrOptions {
  /** Value to start from when the key is absent (without it, an absent key fails with ERR_CONDITION). */
  initial?: number | bigint;
  /** TTL of a key that incr creates; an existing key keeps its own. */
  ttl?: number;
}

export interface Range {
  /** Keys that start with these bytes. */
  prefix?: Key;
  /** First key (inclusive). */
  start?: Key;
  /** Last key (exclusive). */
  end?: Key;
}

export interface ListOptions extends Range {
  reverse?: boolean;
  limit?: number;
  /** false: entries come with empty values (no value is read). Default true. */
  values?: boolean;
}

export interface PoolStats {
  keys: number;
  /** Key and value bytes of the live keys. */
  liveBytes: number;
  /** Keys whose TTL passed and whose space returned without a copy, since open. */
  expiredKeys: number;
  expiredBytes: number;
  /** Bytes of memory the pool's index holds. */
  indexBytes: number;
}

/** A resolved range: byte bounds, or empty. */
export interface Bounds {
  start: Buffer | undefined;
  end: Buffer | undefined;
  empty: boolean;
}

const TWO_64 = 2n ** 64n;
const LIST_CHUNK = 256;

export class KvPool {
  /** @internal use store.kv(name) or snapshot.kv(name) */
  constructor(
    private readonly engine: Engine,
    /** The pool's name, as store.pools() lists it. */
    readonly name: string,
    private readonly maxValueBytes: number,
    /** Set for a snapshot's pool: reads see the snapshot, writes are refused. */
    private readonly snapshot?: SnapshotState,
  ) {}

  private get pool(): PoolReader | undefined {
    if (this.snapshot === undefined) return this.engine.pools.named(this.name);
    if (this.snapshot.released) throw releasedSnapshot();
    return this.snapshot.pools.get(this.name);
  }

  /** Throws unless writes are allowed (a snapshot's pools are read-only). */
  private writable(): void {
    this.engine.assertOpen();
    if (this.snapshot !== undefined) {
      throw new AtomioError('ERR_ARGUMENT', `pool '${this.name}' of a snapshot is read-only; write through store.kv('${this.name}')`, {});
    }
  }

  // -------------------------------------------------------------------------------------
  // Reads

  /** The key's value, or undefined. */
  async get(key: Key): Promise<Buffer | undefined> {
    this.engine.assertOpen();
    const k = ownedKey(key);
    const pool = this.pool;
    const meta = this.engine.liveEntry(pool, k);
    if (meta === undefined) return undefined;
    return this.engine.readValue(pool!, k, meta);
  }

  /** get() without a promise: hot values come from memory; others are read with a blocking call. */
  getSync(key: Key): Buffer | undefined {
    this.engine.assertOpen();
    return this.engine.liveValueSync(this.pool, lookupKey(key));
  }

  /** The key with its value, version and expiry, or undefined. */
  async getEntry(key: Key): Promise<Entry | undefined> {
    this.engine.assertOpen();
    const k = ownedKey(key);
    const pool = this.pool;
    const meta = this.engine.liveEntry(pool, k);
    if (meta === undefined) return undefined;
    const value = await this.engine.readValue(pool!, k, meta);
    return { key: k, value, version: meta.version, expiresAt: meta.expiresAt };
  }

  getEntrySync(key: Key): Entry | undefined {
    this.engine.assertOpen();
    const k = ownedKey(key);
    const pool = this.pool;
    const meta = this.engine.liveEntry(pool, k);
    if (meta === undefined) return undefined;
    return { key: k, value: this.engine.readValueSync(pool!, k, meta), version: meta.version, expiresAt: meta.expiresAt };
  }

  /** Values of several keys, in order (undefined for absent ones), all as of one moment. */
  async getMany(keys: readonly Key[]): Promise<(Buffer | undefined)[]> {
    this.engine.assertOpen();
    if (!Array.isArray(keys)) throw new AtomioError('ERR_ARGUMENT', `getMany takes an array of keys, not ${describe(keys)}`, {});
    const pool = this.pool;
    const now = this.engine.clock.now();
    const found = keys.map((key) => {
      const k = ownedKey(key);
      return { k, meta: this.engine.liveEntry(pool, k, now) };
    });
    if (pool === undefined) return found.map(() => undefined);
    const pin = this.engine.pin();
    try {
      return await Promise.all(found.map(({ k, meta }) => (meta === undefined ? undefined : this.engine.readValue(pool, k, meta))));
    } finally {
      this.engine.unpin(pin);
    }
  }

  has(key: Key): boolean {
    this.engine.assertOpen();
    return this.engine.liveEntry(this.pool, lookupKey(key)) !== undefined;
  }

  /** The key's version, or undefined when absent. */
  versionOf(key: Key): number | undefined {
    this.engine.assertOpen();
    return this.engine.liveEntry(this.pool, lookupKey(key))?.version;
  }

  // -------------------------------------------------------------------------------------
  // Writes

  /** Stores a value; resolves with its version once durable. A failed condition rejects with ERR_CONDITION. */
  put(key: Key, value: Value, options: PutOptions = {}): Promise<number> {
    try {
      this.writable();
      checkOptionsObject(options, 'put');
      const k = ownedKey(key);
      const v = ownedValue(value, this.maxValueBytes);
      const ttlMs = checkTtl(options.ttl);
      const conditions = this.conditionsOf(k, options);
      return this.engine.commit([{ type: 'put', pool: this.name, key: k, value: v, ttlMs }], conditions, 0);
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /** Removes a key (a no-op when absent, unless ifPresent); resolves with the version of the commit. */
  delete(key: Key, options: DeleteOptions = {}): Promise<number> {
    try {
      this.writable();
      checkOptionsObject(options, 'delete');
      const k = ownedKey(key);
      const conditions = this.conditionsOf(k, options);
      return this.engine.commit([{ type: 'delete', pool: this.name, key: k }], conditions, 0);
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /**
   * Adds `delta` to a decimal counter (memcached semantics: unsigned 64 bits, an increment
   * wraps, a decrement (negative delta) stops at 0). Resolves with the new value.
   */
  async incr(key: Key, delta: number | bigint, options: IncrOptions = {}): Promise<{ value: bigint; version: number }> {
    this.writable();
    checkOptionsObject(options, 'incr');
    const k = ownedKey(key);
    const counter = counterUpdate(delta, options.initial);
    const ttlMs = checkTtl(options.ttl);
    const version = await this.engine.commit([{ type: 'put', pool: this.name, key: k, value: counter.apply, ttlMs, keepTtl: true }], [], 0);
    return { value: counter.result(), version };
  }

  /**
   * Replaces a key's value with what `fn` makes of the current one (undefined when absent),
   * atomically: `fn` runs inside the commit, after every earlier commit, so no other write
   * can come between its read and its write, and there is no retry. `fn` must be quick and
   * pure; it may throw an AtomioError to refuse (nothing is written). The key keeps its TTL
   * unless `ttl` is given; a key it creates takes `ttl`. Resolves with the version.
   * @example await kv.update('log', (cur) => Buffer.concat([cur ?? Buffer.alloc(0), line]));
   */
  update(key: Key, fn: (current: Buffer | undefined) => Value, options: { ttl?: number } = {}): Promise<number> {
    try {
      this.writable();
      const k = ownedKey(key);
      if (typeof fn !== 'function') throw new AtomioError('ERR_ARGUMENT', `update takes a function (current) => value, not ${describe(fn)}`, {});
      checkOptionsObject(options, 'update');
      const ttlMs = checkTtl(options.ttl);
      const limit = this.maxValueBytes;
      const value = (current: Buffer | undefined): Buffer => ownedValue(fn(current), limit);
      return this.engine.commit([{ type: 'put', pool: this.name, key: k, value, ttlMs, keepTtl: options.ttl === undefined }], [], 0);
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /** Gives a present key a new TTL (0: never expires); ERR_CONDITION when the key is absent. */
  touch(key: Key, ttl: number): Promise<number> {
    try {
      this.writable();
      const k = ownedKey(key);
      const ttlMs = checkTtl(ttl);
      return this.engine.commit([{ type: 'touch', pool: this.name, key: k, ttlMs }], [{ kind: 'key', pool: this.name, key: k, expect: 'present' }], 0);
    } catch (error) {
      return Promise.reject(error);
    }
  }

  private conditionsOf(key: Buffer, options: PutOptions | DeleteOptions): Condition[] {
    const expect: KeyExpectation[] = [];
    if (options.ifVersion !== undefined) expect.push(checkVersion(options.ifVersion, 'ifVersion'));
    if ('ifAbsent' in options && options.ifAbsent) expect.push('absent');
    if (options.ifPresent) expect.push('present');
    if (expect.length > 1) {
      throw new AtomioError('ERR_ARGUMENT', 'give at most one of ifVersion, ifAbsent and ifPresent', {});
    }
    return expect.map((e) => ({ kind: 'key', pool: this.name, key, expect: e }));
  }

  // -------------------------------------------------------------------------------------
  // Iteration

  /**
   * Entries in byte order (or reverse), as they were when the iteration started, even while
   * writes go on. Break out of the loop (or call return()) to release what it holds.
   */
  list(options: ListOptions = {}): AsyncIterableIterator<Entry> {
    this.engine.assertOpen();
    const { bounds, reverse, limit, values } = listArguments(options);
    const pool = this.pool;
    if (bounds.empty || pool === undefined || limit === 0) return new ListIterator(this.engine, undefined, bounds, reverse, 0, values);
    return new ListIterator(this.engine, pool, bounds, reverse, limit, values, this.frozen(pool));
  }

  /**
   * list() without promises: values not in memory are read with blocking calls. Arguments
   * are checked at the call. Break out of the loop (or call return()) to release what it holds.
   */
  listSync(options: ListOptions = {}): IterableIterator<Entry> & { return(): IteratorResult<Entry, undefined> } {
    this.engine.assertOpen();
    const { bounds, reverse, limit, values } = listArguments(options);
    const pool = this.pool;
    if (bounds.empty || pool === undefined || limit === 0) return new SyncListIterator(this.engine, undefined, undefined, 0, values);
    return new SyncListIterator(this.engine, pool, this.frozen(pool), limit, values, bounds, reverse);
  }

  /** The pool's index as it is now, and a pin on what it points into (none for a snapshot: it holds its own). */
  frozen(pool: PoolReader): { view: KeyView; pin: ReturnType<Engine['pin']> | undefined } {
    if (!(pool.index instanceof KeyIndex)) return { view: pool.index, pin: undefined };
    return { view: pool.index.freeze(), pin: this.engine.pin() };
  }

  /** Live keys in a range. */
  count(range: Range = {}): number {
    this.engine.assertOpen();
    const bounds = resolveBounds(range);
    const pool = this.pool;
    if (bounds.empty || pool === undefined) return 0;
    if (this.snapshot === undefined) {
      this.engine.sweepExpired();
      return pool.index.count({ start: bounds.start, end: bounds.end });
    }
    const now = this.engine.clock.now();
    let n = 0;
    pool.index.forEachIn({ start: bounds.start, end: bounds.end }, (_key, meta) => {
      if (meta.expiresAt === 0 || meta.expiresAt > now) n++;
    });
    return n;
  }

  stats(): PoolStats {
    this.engine.assertOpen();
    this.engine.sweepExpired();
    const pool = this.snapshot === undefined ? this.engine.pools.named(this.name) : undefined;
    if (pool === undefined) return { keys: this.count(), liveBytes: 0, expiredKeys: 0, expiredBytes: 0, indexBytes: 0 };
    return {
      keys: pool.index.size,
      liveBytes: pool.liveBytes,
      expiredKeys: pool.expiredKeys,
      expiredBytes: pool.expiredBytes,
      indexBytes: pool.index.memoryBytes(),
    };
  }
}

const EMPTY = Buffer.alloc(0);

/** What both list iterators hold: a cursor over a frozen view, and a pin on what it points into. */
type Frozen = { view: KeyView; pin: ReturnType<Engine['pin']> | undefined };

/**
 * The iterator listSync() returns. Hand-written rather than a generator: each step reads
 * the next entry straight from a cursor over the frozen view, with no chunk in between.
 */
class SyncListIterator implements IterableIterator<Entry> {
  private readonly cursor: KeyCursor | undefined;
  private readonly pin: ReturnType<Engine['pin']> | undefined;
  private readonly now: number;
  private left: number;
  private finished = false;

  constructor(
    private readonly engine: Engine,
    private readonly pool: PoolReader | undefined,
    frozen: Frozen | undefined,
    limit: number,
    private readonly values: boolean,
    bounds?: Bounds,
    reverse = false,
  ) {
    this.cursor = frozen?.view.cursor({ start: bounds?.start, end: bounds?.end }, reverse);
    this.pin = frozen?.pin;
    this.left = limit;
    this.now = engine.clock.now();
    if (this.cursor === undefined || limit === 0) this.finish();
  }

  [Symbol.iterator](): IterableIterator<Entry> {
    return this;
  }

  next(): IteratorResult<Entry, undefined> {
    if (this.finished) return { done: true, value: undefined };
    const c = this.cursor!;
    const now = this.now;
    try {
      while (c.next()) {
        if (c.expiresAt !== 0 && c.expiresAt <= now) continue;
        const key = c.key();
        let value: Buffer = EMPTY;
        if (this.values) value = this.engine.cachedValue(c) ?? this.engine.readValueSync(this.pool!, key, c.meta());
        if (--this.left <= 0) this.finish();
        return { done: false, value: { key, value, version: c.version, expiresAt: c.expiresAt } };
      }
    } catch (error) {
      this.finish();
      throw error;
    }
    this.finish();
    return { done: true, value: undefined };
  }

  return(): IteratorResult<Entry, undefined> {
    this.finish();
    return { done: true, value: undefined };
  }

  private finish(): void {
    if (this.finished) return;
    this.finished = true;
    if (this.pin !== undefined) this.engine.unpin(this.pin);
  }
}

/**
 * The iterator list() returns. Hand-written rather than an async generator: entries come
 * from a chunk read ahead, so next() mostly hands back a resolved promise, and values in
 * the cache are taken without a read. It holds a frozen view and a pin until it ends
 * (done, return() — which `break` calls — or an error).
 */
class ListIterator implements AsyncIterableIterator<Entry> {
  private chunk: Entry[] = [];
  private at = 0;
  private left: number;
  private finished = false;
  private readonly cursor: KeyCursor | undefined;
  private readonly pin: ReturnType<Engine['pin']> | undefined;
  private readonly now: number;

  constructor(
    private readonly engine: Engine,
    private readonly pool: PoolReader | undefined,
    bounds: Bounds,
    reverse: boolean,
    limit: number,
    private readonly values: boolean,
    frozen?: Frozen,
  ) {
    this.left = limit;
    this.cursor = frozen?.view.cursor({ start: bounds.start, end: bounds.end }, reverse);
    this.pin = frozen?.pin;
    this.now = engine.clock.now();
    if (pool === undefined || limit === 0) this.finish();
  }

  [Symbol.asyncIterator](): AsyncIterableIterator<Entry> {
    return this;
  }

  next(): Promise<IteratorResult<Entry, undefined>> {
    if (this.at < this.chunk.length) return Promise.resolve({ done: false, value: this.chunk[this.at++]! });
    if (this.finished) return Promise.resolve({ done: true, value: undefined });
    return this.fill().then(
      () => (this.at < this.chunk.length ? { done: false, value: this.chunk[this.at++]! } : { done: true, value: undefined }),
      (error: unknown) => {
        this.finish();
        throw error;
      },
    );
  }

  return(): Promise<IteratorResult<Entry, undefined>> {
    this.finish();
    return Promise.resolve({ done: true, value: undefined });
  }

  private async fill(): Promise<void> {
    this.engine.assertOpen();
    const c = this.cursor!;
    const now = this.now;
    const max = Math.min(this.left, LIST_CHUNK);
    const chunk: Entry[] = [];
    let misses: Promise<void>[] | undefined;
    while (chunk.length < max && c.next()) {
      if (c.expiresAt !== 0 && c.expiresAt <= now) continue;
      const key = c.key();
      const entry: Entry = { key, value: EMPTY, version: c.version, expiresAt: c.expiresAt };
      chunk.push(entry);
      if (!this.values) continue;
      const cached = this.engine.cachedValue(c);
      if (cached !== undefined) entry.value = cached;
      else (misses ??= []).push(this.engine.readValue(this.pool!, key, c.meta()).then((v) => void (entry.value = v)));
    }
    if (misses !== undefined) await Promise.all(misses);
    this.left -= chunk.length;
    if (this.left <= 0 || chunk.length < max) this.finish();
    this.chunk = chunk;
    this.at = 0;
  }

  private finish(): void {
    if (this.finished) return;
    this.finished = true;
    if (this.pin !== undefined) this.engine.unpin(this.pin);
  }
}

export function listArguments(options: ListOptions): { bounds: Bounds; reverse: boolean; limit: number; values: boolean } {
  if (options === null || typeof options !== 'object') {
    throw new AtomioError('ERR_ARGUMENT', `list options are an object, not ${describe(options)}`, {});
  }
  const limit = options.limit ?? Infinity;
  if (typeof limit !== 'number' || !(limit >= 0) || (Number.isFinite(limit) && !Number.isInteger(limit))) {
    throw new AtomioError('ERR_ARGUMENT', `limit is a non-negative integer, not ${describe(limit)}`, {});
  }
  return { bounds: resolveBounds(options), reverse: options.reverse === true, limit, values: options.values !== false };
}

/** The byte bounds of a range: prefix, start and end together. */
export function resolveBounds(range: Range): Bounds {
  let start = range.start === undefined ? undefined : ownedKeyOrEmpty(range.start);
  let end = range.end === undefined ? undefined : ownedKeyOrEmpty(range.end);
  if (range.prefix !== undefined) {
    const prefix = ownedKeyOrEmpty(range.prefix);
    if (start === undefined || Buffer.compare(prefix, start) > 0) start = prefix;
    const pe = prefixEnd(prefix);
    if (pe !== undefined && (end === undefined || Buffer.compare(pe, end) < 0)) end = pe;
  }
  const empty = start !== undefined && end !== undefined && Buffer.compare(start, end) >= 0;
  return { start, end, empty };
}

/** Range bounds may be empty (the start of everything). */
function ownedKeyOrEmpty(key: Key): Buffer {
  if (typeof key === 'string' && key.length === 0) return EMPTY;
  if (key instanceof Uint8Array && key.length === 0) return EMPTY;
  return ownedKey(key);
}

// ---------------------------------------------------------------------------------------
// Counters

/** A counter update for the engine to apply to the key's current value; result() after the commit. */
export function counterUpdate(delta: number | bigint, initial: number | bigint | undefined): { apply: (current: Buffer | undefined) => Buffer; result: () => bigint } {
  const d = toBigInt(delta, 'delta');
  if (d >= TWO_64 || d <= -TWO_64) throw new AtomioError('ERR_ARGUMENT', 'delta must lie within ±(2^64 - 1)', {});
  const start = initial === undefined ? undefined : toBigInt(initial, 'initial');
  if (start !== undefined && (start < 0n || start >= TWO_64)) {
    throw new AtomioError('ERR_ARGUMENT', 'initial is an unsigned 64-bit integer', {});
  }
  let result: bigint | undefined;
  return {
    apply: (current) => {
      let next: bigint;
      if (current === undefined) {
        if (start === undefined) throw new AtomioError('ERR_CONDITION', 'the counter does not exist (give `initial` to create it)', { expect: 'present' });
        next = start;
      } else {
        const value = parseCounter(current);
        next = d >= 0n ? (value + d) % TWO_64 : value + d < 0n ? 0n : value + d;
      }
      result = next;
      return Buffer.from(next.toString(), 'latin1');
    },
    result: () => {
      if (result === undefined) throw new AtomioError('ERR_CONDITION', 'the counter was not updated', {});
      return result;
    },
  };
}

/** A stored counter: decimal digits, maybe padded with spaces (memcached pads after a decrement). */
export function parseCounter(bytes: Buffer): bigint {
  let end = bytes.length;
  while (end > 0 && bytes[end - 1] === 0x20) end--;
  if (end === 0 || end > 20) throw notACounter();
  for (let i = 0; i < end; i++) {
    const c = bytes[i]!;
    if (c < 0x30 || c > 0x39) throw notACounter();
  }
  const value = BigInt(bytes.toString('latin1', 0, end));
  if (value >= TWO_64) throw notACounter();
  return value;
}

function notACounter(): AtomioError {
  return new AtomioError('ERR_ARGUMENT', 'cannot increment or decrement a value that is not a decimal unsigned 64-bit number', {});
}

function toBigInt(n: number | bigint, what: string): bigint {
  if (typeof n === 'bigint') return n;
  if (typeof n === 'number' && Number.isSafeInteger(n)) return BigInt(n);
  throw new AtomioError('ERR_ARGUMENT', `${what} is an integer (a safe-integer number or a bigint), not ${describe(n)}`, {});
}


export function releasedSnapshot(): AtomioError {
  return new AtomioError('ERR_CLOSED', 'the snapshot was released or deleted; take a new one with store.snapshot()', {});
}
