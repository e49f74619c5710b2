// The items of the memcached server over one kv pool: every command's effect on the store,
// with memcached's outcomes (STORED, NOT_STORED, EXISTS, NOT_FOUND ...), independent of the
// wire format.
//
// Invariants:
// - an outcome that says an item changed (STORED, DELETED, TOUCHED, a counter's new value)
//   is returned only after the kv write resolved: durable under the store's durability;
// - a CAS unique is the item's explicit CAS value (meta E) when it has one, else the kv
//   version of its entry; writes that check one read the entry, compare, and write with
//   ifVersion = the version read, so no check and write can be split by another writer;
// - a write with E stores its token as the item's explicit CAS; any other write drops it
//   (the item's CAS becomes its new version);
// - a read-modify-write that lost a race to another writer (ERR_CONDITION on the version it
//   read) starts again from a fresh read, at most MAX_RETRIES times;
// - flush_all drops the whole pool in one commit, at once or at its deadline; a pending
//   deadline is kept in META_POOL so that it survives a restart (a deadline that passed while
//   the server was down is carried out when it starts).

import { AtomioError, isAtomioError } from '../../base/errors.js';
import type { Clock } from '../../base/clock.js';
import type { KvPool } from '../../kv/pool.js';
import type { Store } from '../../store/store.js';
import { decodeItem, encodeItem, type Item } from './item.js';
import { TWO_64 } from './protocol.js';

/** How often a read-modify-write retries after losing a race, before SERVER_ERROR. */
export const MAX_RETRIES = 16;
/**
 * Items whose fetch/access/win state is kept in memory (a power of two: slots of a table of
 * 32 bytes each; when it is full the items accessed longest ago are forgotten first).
 */
export const MAX_TRACKED_ITEMS = 128 * 1024;
/** The pool that holds a pending flush_all deadline. */
export const META_POOL = 'memcached.meta';
const FLUSH_KEY = 'flush_at';
/** Never written: deleting it is a commit that waits for the ones before it (Cache.landed). */
const BARRIER_KEY = 'barrier';
/** setTimeout's longest delay; longer flush delays re-arm. */
const MAX_TIMER_MS = 2 ** 31 - 1;

export type StoreStatus = 'STORED' | 'NOT_STORED' | 'EXISTS' | 'NOT_FOUND';
export type StoreMode = 'set' | 'add' | 'replace' | 'append' | 'prepend' | 'cas';

export interface StoreRequest {
  mode: StoreMode;
  key: Buffer;
  flags: number;
  /** kv TTL in ms: 0 never, -1 already expired (see ttlFromExptime). Ignored by append/prepend. */
  ttl: number;
  data: Buffer;
  /** The CAS unique to compare (cas, or any mode with meta C). */
  cas?: bigint | undefined;
  /** A CAS lower than the item's still stores, marking the item stale (meta I). */
  allowStale?: boolean;
  /** append/prepend on a miss create the item with this TTL (meta N). */
  vivifyTtl?: number | undefined;
  /** The item's new CAS value (meta E); undefined: its new version. */
  newCas?: bigint | undefined;
}

export interface StoreOutcome {
  status: StoreStatus;
  /** The new CAS unique (0 when nothing was stored). */
  version: number;
  /** Data bytes of the item as stored. */
  size: number;
}

export interface Found {
  item: Item;
  version: number;
  /** ms since the epoch; 0: never. */
  expiresAt: number;
}

export interface ArithRequest {
  key: Buffer;
  incr: boolean;
  delta: bigint;
  cas?: bigint | undefined;
  /** Create on a miss with this TTL and initial value (meta N, J). */
  vivify?: { ttl: number; initial: bigint } | undefined;
  /** A new TTL on success (meta T); -1 expires the item once changed. */
  ttl?: number | undefined;
  /** The item's new CAS value (meta E); undefined: its new version. */
  newCas?: bigint | undefined;
}

export type ArithOutcome =
  | { status: 'OK'; value: bigint; version: number; created: boolean }
  | { status: 'NOT_FOUND' | 'EXISTS' | 'NON_NUMERIC' };

export interface Counters {
  [name: string]: number;
}

/** What memcached keeps per item in memory and we keep here: fetched, last access, token sent. */
export interface Tracked {
  version: number;
  fetched: boolean;
  lastAccessMs: number;
  tokenSent: boolean;
}

/** Slots of the tracker's table: 64-bit version, last access (ms), key hash, state bits. */
const SLOT_FIELDS = 4;
/** A lookup or an insert looks at most this many slots from the item's home slot. */
const PROBE_SLOTS = 8;
const FETCHED = 1;
const TOKEN_SENT = 2;

/**
 * Per-item state that is not worth a write: bounded, forgotten on restart.
 *
 * Every get marks its item fetched, so this sits on the hot path: one flat table of numbers
 * (no object, string or Map entry per item), where a lookup reads one or two cache lines.
 * An item is found by its version and a 32-bit hash of its key: a version names one commit,
 * so only keys written together share one, and those are told apart by the hash. A rewritten
 * item gets a new version; its old slot is never asked for again and is reused first, since
 * a full probe window gives up the slot accessed longest ago. Slots are never emptied, so a
 * lookup may stop at the first empty slot.
 */
export class AccessTracker {
  private readonly slots: number;
  private readonly table: Float64Array;
  private used = 0;

  /** `slots`: a power of two; at most that many items are tracked. */
  constructor(slots = MAX_TRACKED_ITEMS) {
    if (!Number.isSafeInteger(slots) || slots < PROBE_SLOTS || (slots & (slots - 1)) !== 0) {
      throw new AtomioError('ERR_ARGUMENT', `tracker slots must be a power of two >= ${PROBE_SLOTS}, not ${String(slots)}`, {});
    }
    this.slots = slots;
    this.table = new Float64Array(slots * SLOT_FIELDS);
  }

  /** The item's state if it was tracked at this version. */
  get(key: Buffer, version: number): Tracked | undefined {
    const at = this.find(version, keyHash(key));
    if (at < 0) return undefined;
    const t = this.table;
    const state = t[at + 3]!;
    return { version, fetched: (state & FETCHED) !== 0, lastAccessMs: t[at + 1]!, tokenSent: (state & TOKEN_SENT) !== 0 };
  }

  /** Records a fetch (get, gets, mg without u) at `version`. */
  fetched(key: Buffer, version: number, nowMs: number): void {
    this.mark(key, version, nowMs, FETCHED, true);
  }

  /** Marks that a client won the right to recache the item at `version` (mg W). */
  tokenSent(key: Buffer, version: number, nowMs: number): void {
    this.mark(key, version, nowMs, TOKEN_SENT, false);
  }

  /** Items tracked. */
  get size(): number {
    return this.used;
  }

  private mark(key: Buffer, version: number, nowMs: number, bit: number, access: boolean): void {
    const hash = keyHash(key);
    const t = this.table;
    const found = this.find(version, hash);
    if (found >= 0) {
      t[found + 3] = t[found + 3]! | bit;
      if (access) t[found + 1] = nowMs;
      return;
    }
    const at = this.victim(version, hash);
    if (t[at] === 0) this.used++;
    t[at] = version;
    t[at + 1] = nowMs;
    t[at + 2] = hash;
    t[at + 3] = bit;
  }

  /** The table index of the item's slot, or -1. */
  private find(version: number, hash: number): number {
    const t = this.table;
    const mask = this.slots - 1;
    const home = homeSlot(version, hash);
    for (let i = 0; i < PROBE_SLOTS; i++) {
      const at = ((home + i) & mask) * SLOT_FIELDS;
      const v = t[at]!;
      if (v === 0) return -1;
      if (v === version && t[at + 2] === hash) return at;
    }
    return -1;
  }

  /** Where a new item goes: the first empty slot of its window, else the one accessed longest ago. */
  private victim(version: number, hash: number): number {
    const t = this.table;
    const mask = this.slots - 1;
    const home = homeSlot(version, hash);
    let oldest = -1;
    for (let i = 0; i < PROBE_SLOTS; i++) {
      const at = ((home + i) & mask) * SLOT_FIELDS;
      if (t[at] === 0) return at;
      if (oldest < 0 || t[at + 1]! < t[oldest + 1]!) oldest = at;
    }
    return oldest;
  }
}

/** FNV-1a over the key's bytes, as an unsigned 32-bit number. */
function keyHash(key: Buffer): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < key.length; i++) h = Math.imul(h ^ key[i]!, 0x01000193);
  return h >>> 0;
}

function homeSlot(version: number, hash: number): number {
  return (Math.imul(version | 0, 0x9e3779b1) ^ hash) >>> 0;
}

/** Thrown inside update() functions to refuse with a memcached outcome. */
function refuse(outcome: string): AtomioError {
  return new AtomioError('ERR_CONDITION', `memcached: ${outcome}`, { memcached: outcome });
}

function refusal(error: unknown): string | undefined {
  if (!isAtomioError(error, 'ERR_CONDITION') && !isAtomioError(error, 'ERR_ARGUMENT')) return undefined;
  const m = error.details.memcached;
  return typeof m === 'string' ? m : undefined;
}

const isCondition = (error: unknown): boolean => isAtomioError(error, 'ERR_CONDITION') && refusal(error) === undefined;

/** The CAS unique a client sees: the item's explicit CAS value when it has one, else its version. */
export function visibleCas(found: Found): bigint | number {
  return found.item.cas ?? found.version;
}

/** Whether a client's CAS token equals the item's CAS as found. */
export function casMatches(token: bigint, found: Found): boolean {
  const explicit = found.item.cas;
  if (explicit !== undefined) return token === explicit;
  return token <= BigInt(Number.MAX_SAFE_INTEGER) && Number(token) === found.version;
}

/**
 * The check of a store (cas, ms C): as memcached's, a token of 0 matches nothing (not even
 * an explicit CAS of 0); with `allowStale` (ms I) a lower token is a stale store.
 */
function storeCheck(token: bigint, found: Found, allowStale: boolean): 'match' | 'stale' | 'bad' {
  if (token === 0n) return 'bad';
  if (casMatches(token, found)) return 'match';
  return allowStale && token < BigInt(visibleCas(found)) ? 'stale' : 'bad';
}

function lostRace(): AtomioError {
  return new AtomioError('ERR_CONFLICT', `the item kept changing under ${MAX_RETRIES} attempts`, {});
}

export interface CacheOptions {
  pool: string;
  maxItemBytes: number;
  clock: Clock;
  log: (line: string) => void;
}

export class Cache {
  readonly pool: KvPool;
  readonly tracker = new AccessTracker();
  readonly counters: Counters = {
    cmd_get: 0, cmd_set: 0, cmd_flush: 0, cmd_touch: 0, cmd_meta: 0,
    get_hits: 0, get_misses: 0, get_expired: 0, get_flushed: 0,
    delete_misses: 0, delete_hits: 0, incr_misses: 0, incr_hits: 0, decr_misses: 0, decr_hits: 0,
    cas_misses: 0, cas_hits: 0, cas_badval: 0, touch_hits: 0, touch_misses: 0,
    store_too_large: 0, store_no_memory: 0, total_items: 0,
  };
  private flushTimer: NodeJS.Timeout | undefined;
  private flushAt = 0;
  private closed = false;

  constructor(
    private readonly kvStore: Store,
    private readonly options: CacheOptions,
  ) {
    this.pool = kvStore.kv(options.pool);
  }

  get maxItemBytes(): number {
    return this.options.maxItemBytes;
  }

  now(): number {
    return this.options.clock.now();
  }

  /** Carries out a flush_all whose deadline passed while the server was down; re-arms a later one. */
  async start(): Promise<void> {
    const at = this.kvStore.kv(META_POOL).getSync(FLUSH_KEY);
    if (at === undefined) return;
    const deadline = Number(at.toString('latin1'));
    if (!Number.isSafeInteger(deadline) || deadline <= this.now()) await this.flushNow();
    else this.arm(deadline);
  }

  /** Stops the flush timer (the deadline stays stored). */
  close(): void {
    this.closed = true;
    if (this.flushTimer !== undefined) clearTimeout(this.flushTimer);
    this.flushTimer = undefined;
  }

  // -------------------------------------------------------------------------------------
  // Reads (synchronous: values come from the store's cache or one blocking read)

  /** The item's value bytes (header + data), or undefined. */
  value(key: Buffer): Buffer | undefined {
    return this.pool.getSync(key);
  }

  find(key: Buffer): Found | undefined {
    const e = this.pool.getEntrySync(key);
    if (e === undefined) return undefined;
    return { item: decodeItem(e.value), version: e.version, expiresAt: e.expiresAt };
  }

  has(key: Buffer): boolean {
    return this.pool.has(key);
  }

  /** TTL left in whole seconds, -1 when the item never expires (meta t). */
  ttlSeconds(expiresAt: number): number {
    if (expiresAt === 0) return -1;
    return Math.max(0, Math.ceil((expiresAt - this.now()) / 1000));
  }

  /** Items and the key + value bytes they hold. */
  usage(): { items: number; bytes: number } {
    const s = this.pool.stats();
    return { items: s.keys, bytes: s.liveBytes };
  }

  // -------------------------------------------------------------------------------------
  // Writes

  /** Never throws: a failure is the promise's rejection. */
  store(r: StoreRequest): Promise<StoreOutcome> {
    try {
      if (r.mode === 'append' || r.mode === 'prepend') return this.concat(r);
      if (r.mode === 'cas' || r.cas !== undefined) {
        if (r.mode === 'add') return this.plainStore({ ...r, cas: undefined });
        return this.casStore(r);
      }
      return this.plainStore(r);
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /** set, add and replace: one reaction on the commit's promise and no async frame, as every set takes this path. */
  private plainStore(r: StoreRequest): Promise<StoreOutcome> {
    if (r.ttl < 0) return this.storeExpired(r);
    const size = r.data.length;
    const value = encodeItem(r.flags, r.data, this.now(), r.newCas);
    const options = r.mode === 'add' ? { ttl: r.ttl, ifAbsent: true } : r.mode === 'replace' ? { ttl: r.ttl, ifPresent: true } : { ttl: r.ttl };
    return this.pool.put(r.key, value, options).then(
      (version): StoreOutcome => {
        this.counters.total_items!++;
        return { status: 'STORED', version, size };
      },
      (error: unknown): StoreOutcome => {
        if (isCondition(error)) return { status: 'NOT_STORED', version: 0, size };
        throw error;
      },
    );
  }

  /** Stored already expired: whatever the key held is gone, and nothing new is visible. */
  private async storeExpired(r: StoreRequest): Promise<StoreOutcome> {
    const size = r.data.length;
    if (r.mode === 'set') {
      await this.pool.delete(r.key);
      return { status: 'STORED', version: 0, size };
    }
    if (r.mode === 'add') return { status: this.has(r.key) ? 'NOT_STORED' : 'STORED', version: 0, size };
    try {
      await this.pool.delete(r.key, { ifPresent: true });
      return { status: 'STORED', version: 0, size };
    } catch (error) {
      if (isCondition(error)) return { status: 'NOT_STORED', version: 0, size };
      throw error;
    }
  }

  /**
   * cas, and set/replace with a CAS to compare (meta C; with I a lower CAS stores a stale
   * item). Reads the item first, so that NOT_FOUND and EXISTS are told apart exactly (the
   * caller runs it once the connection's earlier writes are applied), then writes only if
   * the item is still at the version read.
   */
  private async casStore(r: StoreRequest): Promise<StoreOutcome> {
    const size = r.data.length;
    for (let i = 0; i < MAX_RETRIES; i++) {
      const found = this.find(r.key);
      if (found === undefined) return this.casMiss(size);
      const check = storeCheck(r.cas ?? 0n, found, r.allowStale === true);
      if (check === 'bad') return this.casBad(size);
      const staleStore = check === 'stale';
      const ttl = staleStore ? this.keptTtl(found.expiresAt) : r.ttl;
      try {
        const value = encodeItem(r.flags, r.data, this.now(), r.newCas, staleStore);
        const version = await this.writeOrExpire(r.key, value, ttl, found.version);
        this.counters.cas_hits!++;
        return { status: 'STORED', version, size };
      } catch (error) {
        if (!isCondition(error)) throw error;
        await this.landed();
      }
    }
    throw lostRace();
  }

  private casMiss(size: number): StoreOutcome {
    this.counters.cas_misses!++;
    return { status: 'NOT_FOUND', version: 0, size };
  }

  private casBad(size: number): StoreOutcome {
    this.counters.cas_badval!++;
    return { status: 'EXISTS', version: 0, size };
  }

  /** Puts `value` if the key is at `version`; with ttl -1 deletes it instead (resolving 0). */
  private async writeOrExpire(key: Buffer, value: Buffer, ttl: number, version: number): Promise<number> {
    if (ttl < 0) {
      await this.pool.delete(key, { ifVersion: version });
      return 0;
    }
    const v = await this.pool.put(key, value, { ttl, ifVersion: version });
    this.counters.total_items!++;
    return v;
  }

  /** The TTL (ms) that keeps an item's expiry where it is. */
  private keptTtl(expiresAt: number): number {
    if (expiresAt === 0) return 0;
    return Math.max(1, expiresAt - this.now());
  }

  private async concat(r: StoreRequest): Promise<StoreOutcome> {
    const prepend = r.mode === 'prepend';
    const limit = this.options.maxItemBytes;
    if (r.cas === undefined && r.vivifyTtl === undefined) {
      let size = 0;
      try {
        const version = await this.pool.update(r.key, (current) => {
          if (current === undefined) throw refuse('NOT_STORED');
          const item = decodeItem(current);
          size = item.data.length + r.data.length;
          if (size > limit) throw refuse('NOT_STORED');
          return encodeItem(item.flags, item.data, this.now(), r.newCas, false, r.data, prepend);
        });
        this.counters.total_items!++;
        return { status: 'STORED', version, size };
      } catch (error) {
        if (refusal(error) === 'NOT_STORED') return { status: 'NOT_STORED', version: 0, size: 0 };
        throw error;
      }
    }
    for (let i = 0; i < MAX_RETRIES; i++) {
      const found = this.find(r.key);
      try {
        if (found === undefined) {
          if (r.vivifyTtl === undefined) return { status: 'NOT_STORED', version: 0, size: 0 };
          if (r.vivifyTtl < 0) return { status: 'STORED', version: 0, size: r.data.length };
          const value = encodeItem(r.flags, r.data, this.now(), r.newCas);
          const version = await this.pool.put(r.key, value, { ttl: r.vivifyTtl, ifAbsent: true });
          this.counters.total_items!++;
          return { status: 'STORED', version, size: r.data.length };
        }
        if (r.cas !== undefined && storeCheck(r.cas, found, false) !== 'match') return { status: 'EXISTS', version: 0, size: 0 };
        const size = found.item.data.length + r.data.length;
        if (size > limit) return { status: 'NOT_STORED', version: 0, size: 0 };
        const value = encodeItem(found.item.flags, found.item.data, this.now(), r.newCas, false, r.data, prepend);
        const version = await this.pool.put(r.key, value, { ttl: this.keptTtl(found.expiresAt), ifVersion: found.version });
        this.counters.total_items!++;
        return { status: 'STORED', version, size };
      } catch (error) {
        if (!isCondition(error)) throw error;
        await this.landed();
      }
    }
    throw lostRace();
  }

  /** incr/decr, and meta arithmetic with a CAS to compare, vivify on miss and a new TTL. */
  async arith(r: ArithRequest): Promise<ArithOutcome> {
    const outcome = await this.arithWrite(r);
    const counter = r.incr ? 'incr' : 'decr';
    if (outcome.status === 'OK') this.counters[`${counter}_hits`]!++;
    else if (outcome.status === 'NOT_FOUND') this.counters[`${counter}_misses`]!++;
    return outcome;
  }

  private async arithWrite(r: ArithRequest): Promise<ArithOutcome> {
    const apply = (data: Buffer): bigint | undefined => {
      const n = parseCounterData(data);
      if (n === undefined) return undefined;
      return r.incr ? (n + r.delta) % TWO_64 : n > r.delta ? n - r.delta : 0n;
    };
    if (r.cas === undefined && r.vivify === undefined) {
      let result = 0n;
      try {
        const ttl = r.ttl === undefined || r.ttl < 0 ? {} : { ttl: r.ttl };
        const version = await this.pool.update(
          r.key,
          (current) => {
            if (current === undefined) throw refuse('NOT_FOUND');
            const item = decodeItem(current);
            const next = apply(item.data);
            if (next === undefined) throw refuse('NON_NUMERIC');
            result = next;
            return encodeItem(item.flags, Buffer.from(next.toString(), 'latin1'), this.now(), r.newCas);
          },
          ttl,
        );
        if (r.ttl !== undefined && r.ttl < 0) await this.pool.delete(r.key, { ifVersion: version }).catch(() => undefined);
        return { status: 'OK', value: result, version, created: false };
      } catch (error) {
        const why = refusal(error);
        if (why === 'NOT_FOUND' || why === 'NON_NUMERIC') return { status: why };
        throw error;
      }
    }
    for (let i = 0; i < MAX_RETRIES; i++) {
      const found = this.find(r.key);
      try {
        if (found === undefined) {
          if (r.vivify === undefined) return { status: 'NOT_FOUND' };
          const value = encodeItem(0, Buffer.from(r.vivify.initial.toString(), 'latin1'), this.now(), r.newCas);
          // A negative TTL makes an item expired at once, which memcached answers as made.
          const expired = r.vivify.ttl < 0;
          const version = await this.pool.put(r.key, value, { ...(expired ? {} : { ttl: r.vivify.ttl }), ifAbsent: true });
          if (expired) await this.pool.delete(r.key, { ifVersion: version }).catch(() => undefined);
          return { status: 'OK', value: r.vivify.initial, version, created: true };
        }
        if (r.cas !== undefined && !casMatches(r.cas, found)) return { status: 'EXISTS' };
        const next = apply(found.item.data);
        if (next === undefined) return { status: 'NON_NUMERIC' };
        const value = encodeItem(found.item.flags, Buffer.from(next.toString(), 'latin1'), this.now(), r.newCas);
        const ttl = r.ttl === undefined ? this.keptTtl(found.expiresAt) : r.ttl;
        const version = await this.writeOrExpire(r.key, value, ttl, found.version);
        return { status: 'OK', value: next, version, created: false };
      } catch (error) {
        if (!isCondition(error)) throw error;
        await this.landed();
      }
    }
    throw lostRace();
  }

  /** A new exptime for a present item; its value and CAS stay. */
  async touch(key: Buffer, ttl: number): Promise<boolean> {
    this.counters.cmd_touch!++;
    try {
      if (ttl < 0) await this.pool.delete(key, { ifPresent: true });
      else await this.pool.touch(key, ttl);
      this.counters.touch_hits!++;
      return true;
    } catch (error) {
      if (!isCondition(error)) throw error;
      this.counters.touch_misses!++;
      return false;
    }
  }

  /**
   * delete, and meta delete with a CAS to compare (which reads the item first, as casStore
   * does: the caller runs it once the connection's earlier writes are applied).
   */
  async delete(key: Buffer, cas?: bigint): Promise<'DELETED' | 'NOT_FOUND' | 'EXISTS'> {
    for (let i = 0; i < MAX_RETRIES; i++) {
      let options: { ifPresent: true } | { ifVersion: number } = { ifPresent: true };
      if (cas !== undefined) {
        const found = this.find(key);
        if (found === undefined || !casMatches(cas, found)) {
          this.counters.delete_misses!++;
          return found === undefined ? 'NOT_FOUND' : 'EXISTS';
        }
        options = { ifVersion: found.version };
      }
      try {
        await this.pool.delete(key, options);
        this.counters.delete_hits!++;
        return 'DELETED';
      } catch (error) {
        if (!isCondition(error)) throw error;
        if (cas === undefined) {
          this.counters.delete_misses!++;
          return 'NOT_FOUND';
        }
        await this.landed();
      }
    }
    throw lostRace();
  }

  /**
   * Meta delete with I (mark stale: a new CAS, the value kept) and/or x (keep the item with
   * empty data and the given flags). `ttl`: the T flag's, or undefined.
   */
  async invalidate(
    key: Buffer,
    o: { cas?: bigint | undefined; stale: boolean; removeValue: boolean; flags: number; ttl: number | undefined; newCas?: bigint | undefined },
  ): Promise<'DELETED' | 'NOT_FOUND' | 'EXISTS'> {
    for (let i = 0; i < MAX_RETRIES; i++) {
      const found = this.find(key);
      if (found === undefined) {
        this.counters.delete_misses!++;
        return 'NOT_FOUND';
      }
      if (o.cas !== undefined && !casMatches(o.cas, found)) {
        this.counters.delete_misses!++;
        return 'EXISTS';
      }
      const item = found.item;
      const value = o.removeValue
        ? encodeItem(o.flags, EMPTY, this.now(), o.newCas, o.stale)
        : encodeItem(item.flags, item.data, this.now(), o.newCas, true);
      const ttl = o.ttl ?? (o.removeValue ? 0 : this.keptTtl(found.expiresAt));
      try {
        await this.writeOrExpire(key, value, ttl, found.version);
        if (!o.stale) this.counters.delete_hits!++;
        return 'DELETED';
      } catch (error) {
        if (!isCondition(error)) throw error;
        await this.landed();
      }
    }
    throw lostRace();
  }

  /**
   * Resolves once every commit submitted before it has landed. A condition can fail on a
   * write another connection has in flight, which reads do not see until it lands: a retry
   * that read again at once would see the same state and fail the same way.
   */
  private landed(): Promise<unknown> {
    // Deleting a key that is never written: a commit that changes nothing, queued behind the others.
    return this.kvStore.kv(META_POOL).delete(BARRIER_KEY);
  }

  /**
   * Creates an empty item when the key is absent (meta get N; `cas`: its explicit CAS, meta E);
   * its version, or undefined when present.
   */
  async vivify(key: Buffer, ttl: number, cas?: bigint): Promise<number | undefined> {
    try {
      const version = await this.pool.put(key, encodeItem(0, EMPTY, this.now(), cas), { ttl, ifAbsent: true });
      this.counters.total_items!++;
      // The win is marked at once: a client that lost the race reads the item next, and sees Z.
      this.tracker.tokenSent(key, version, this.now());
      return version;
    } catch (error) {
      if (!isCondition(error)) throw error;
      // Another client's write of the key is in flight: once it landed, the caller can read it.
      await this.landed();
      return undefined;
    }
  }

  /**
   * flush_all: every item written before the deadline goes. `ttl` (ms, as ttlFromExptime
   * gives it): 0 or -1 now; otherwise the deadline is stored and the pool dropped then.
   */
  async flushAll(ttl: number): Promise<void> {
    this.counters.cmd_flush!++;
    if (ttl <= 0) {
      await this.flushNow();
      return;
    }
    const deadline = this.now() + ttl;
    await this.kvStore.kv(META_POOL).put(FLUSH_KEY, String(deadline));
    this.arm(deadline);
  }

  private async flushNow(): Promise<void> {
    if (this.flushTimer !== undefined) clearTimeout(this.flushTimer);
    this.flushTimer = undefined;
    this.flushAt = 0;
    // Dropped whether or not the pools exist now: a write queued before the flush may create
    // the pool, and the engine resolves the drop behind it, in commit order.
    await this.kvStore.dropPool(this.options.pool);
    await this.kvStore.dropPool(META_POOL);
  }

  private arm(deadline: number): void {
    if (this.flushTimer !== undefined) clearTimeout(this.flushTimer);
    this.flushAt = deadline;
    if (this.closed) return;
    const wait = Math.min(MAX_TIMER_MS, Math.max(0, deadline - this.now()));
    this.flushTimer = setTimeout(() => {
      this.flushTimer = undefined;
      if (this.flushAt !== deadline) return;
      if (this.now() < deadline) {
        this.arm(deadline);
        return;
      }
      this.flushNow().catch((error: unknown) => this.options.log(`memcached: flush_all at its deadline failed: ${(error as Error).message}`));
    }, wait);
    this.flushTimer.unref();
  }
}

const EMPTY = Buffer.alloc(0);

/**
 * A counter's data as memcached's strtoull reads it: leading white space, an optional '+',
 * digits (leading zeros any number), ended by the data's end, white space or a NUL; below
 * 2^64. Undefined otherwise.
 */
export function parseCounterData(data: Buffer): bigint | undefined {
  let start = 0;
  while (start < data.length && isSpace(data[start]!)) start++;
  if (data[start] === 0x2b) start++;
  let end = start;
  while (end < data.length && data[end]! >= 0x30 && data[end]! <= 0x39) end++;
  if (end === start || (end < data.length && data[end] !== 0 && !isSpace(data[end]!))) return undefined;
  while (start < end - 1 && data[start] === 0x30) start++;
  if (end - start > 20) return undefined;
  const v = BigInt(data.toString('latin1', start, end));
  return v < TWO_64 ? v : undefined;
}

/** C's isspace: space, \t, \n, \v, \f, \r. */
function isSpace(c: number): boolean {
  return c === 0x20 || (c >= 0x09 && c <= 0x0d);
}

/** The one-line SERVER_ERROR for a failure of the store (never a stack, never a newline). */
export function serverErrorLine(error: unknown): string {
  if (isAtomioError(error, 'ERR_LIMIT')) return 'SERVER_ERROR object too large for cache';
  if (isAtomioError(error, 'ERR_NO_SPACE')) return 'SERVER_ERROR out of memory storing object';
  const text = isAtomioError(error) ? `${error.code} ${error.message}` : error instanceof Error ? error.message : String(error);
  return `SERVER_ERROR ${text.replace(/[\r\n]+/g, ' ').slice(0, 400)}`;
}
