// The kv face's index: every live key of a pool, in byte order, with its fixed metadata.
//
// Two levels: an array of leaves found by binary search over each leaf's first key, and
// inside a leaf up to LEAF_CAPACITY entries. A leaf keeps everything in one ArrayBuffer seen
// through three views: the metadata (META_FIELDS float64 an entry), the end offsets of its
// keys, and the key bytes packed back to back. A million keys are then some 20 thousand
// leaves and no object per key, so the garbage collector has almost nothing to trace and a
// checkpoint loads by copying. Objects are made only for what a caller asks to see.
//
// Among a million keys a lookup waits on memory, not on comparisons, so the search reads as
// few scattered cache lines as it can: beside the leaves, `heads` holds a number per leaf
// made from HEAD_BYTES bytes of its first key, in key order, and most steps of the leaf
// search read only that one contiguous array. The bytes are taken after `headSkip`, a prefix
// every leaf's first key shares ("user:" in a pool of user keys), so that heads still tell
// leaves apart when all keys start alike. Inside the leaf, every line of the ends and keys
// is read up front with loads that do not depend on each other (touchLeaf).
//
// Memory is mostly the 44 bytes of metadata and end an entry, so a leaf's buffer has little
// slack: it grows ENTRY_STEP entries at a time, with key room for them at the leaf's average
// key length (a quarter more when keys alone overflow), and shrinks after deletes. A full
// leaf shares entries with a neighbour under FILL_ENTRIES, or splits; when keys arrive in
// order (at either end of a leaf) the split keeps 7/8 of the entries on the side they leave
// behind. A leaf under a quarter full merges with its smaller neighbour when the two fit in
// FILL_ENTRIES.
//
// freeze() is copy-on-write: the index has an epoch and each leaf the epoch it was made in.
// A view keeps the leaves array as it was; the index never changes a leaf of an older epoch
// in place but replaces it by a copy, so a view stays exact whatever the index does next.
// lease() makes the same view for a reader that says when it is done (a checkpoint): once
// every lease is released, leaves older than the last freeze() alone are copied.
//
// Invariants:
// - keys are 1..MAX_KEY_BYTES bytes, unique, and sorted by unsigned bytes (a prefix first)
//   within each leaf and along the leaves array; leaves do not overlap;
// - no leaf is empty and none holds more than LEAF_CAPACITY entries;
// - the first keys of all leaves share their first headSkip bytes, and heads[l] is
//   headOf(the first key of leaf l, from byte headSkip) for every leaf l;
// - key i of a leaf spans keys[ends[i - 1] (or 0), ends[i]); `n` entries are in use and the
//   views may be longer (room to grow without reallocating);
// - a leaf made before the last freeze(), or before the last lease() while one is held, may
//   be shared with a view: it is never written again, only replaced in the leaves array;
// - the index copies every key it stores: no caller buffer is ever kept.

import { assert } from '../base/assert.js';

export interface KeyMeta {
  /** Seq of the record that last wrote the key. */
  version: number;
  /** Milliseconds since the epoch; 0 = never expires. */
  expiresAt: number;
  /** segment × 2^32 + offset of the value bytes in that segment. */
  location: number;
  valueBytes: number;
  /** Position of a cached copy of the value, -1 when none (owned by the caller). */
  cacheAt: number;
}

export interface KeyRange {
  /** Inclusive lower bound; none = from the first key. */
  start?: Uint8Array;
  /** Exclusive upper bound; none = to the last key. */
  end?: Uint8Array;
}

export const META_FIELDS = 5;
const F_VERSION = 0;
const F_EXPIRES = 1;
const F_LOCATION = 2;
const F_VALUE_BYTES = 3;
const F_CACHE_AT = 4;

export const MAX_KEY_BYTES = 2048;
export const LEAF_CAPACITY = 64;
/** A leaf's arrays grow and shrink by this many entries: little slack, few reallocations. */
const ENTRY_STEP = 8;
/** Bulk loads fill leaves this full; a split at either end of a leaf keeps this many on the far side. */
const FILL_ENTRIES = (LEAF_CAPACITY * 7) / 8;
/**
 * A full leaf shares its entries with a neighbour holding fewer than this instead of
 * splitting: random inserts then leave leaves fuller (about 52 entries rather than 45), and
 * fewer leaves cost less memory.
 */
const SHARE_BELOW = FILL_ENTRIES;
/** A leaf under this merges into a neighbour... */
const MERGE_BELOW = LEAF_CAPACITY / 4;
/** ...when the two together hold at most this many, so the next inserts do not split it again. */
const MERGE_LIMIT = FILL_ENTRIES;
/**
 * Heap bytes a leaf costs beside its buffer: the leaf object, the ArrayBuffer and three
 * views (measured on Node 20 x64), and its slot in the leaves array.
 */
const LEAF_OVERHEAD_BYTES = 460;

class Leaf {
  n = 0;
  constructor(
    /** The index epoch this leaf was made in; leaves of older epochs may belong to a view. */
    readonly epoch: number,
    readonly meta: Float64Array,
    readonly ends: Uint32Array,
    readonly keys: Buffer,
  ) {}
}

/** A leaf with room for `entryCap` entries and `keyCap` key bytes, all in one buffer. */
function makeLeaf(epoch: number, entryCap: number, keyCap: number): Leaf {
  assert(entryCap >= 1 && entryCap <= LEAF_CAPACITY, 'leaf capacity is within bounds');
  const metaBytes = entryCap * META_FIELDS * 8;
  const endsBytes = entryCap * 4;
  const block = new ArrayBuffer(metaBytes + endsBytes + keyCap);
  return new Leaf(
    epoch,
    new Float64Array(block, 0, entryCap * META_FIELDS),
    new Uint32Array(block, metaBytes, entryCap),
    Buffer.from(block, metaBytes + endsBytes, keyCap),
  );
}

function roundUp(value: number, step: number): number {
  return Math.ceil(value / step) * step;
}

/** Entry capacity for `n` entries: the next whole step. */
function entryCapFor(n: number): number {
  return Math.min(LEAF_CAPACITY, roundUp(n, ENTRY_STEP));
}

/** Key room for `entryCap` entries at the average length of `n` keys of `used` bytes. */
function keyCapFor(used: number, n: number, entryCap: number): number {
  return roundUp(Math.max(used, Math.ceil((used / n) * entryCap)), 8);
}

/** Bytes of a key that its head number encodes: 257^6 < 2^53, so the number is exact. */
const HEAD_BYTES = 6;

/**
 * An order-preserving number for the key at [start, end) of `bytes`: its first HEAD_BYTES
 * bytes as base-257 digits, byte + 1 each and 0 past the end (a prefix sorts first). When
 * two heads differ they order the keys; when equal, the keys must be compared.
 */
function headOf(bytes: Uint8Array, start: number, end: number): number {
  let head = 0;
  for (let j = start; j < start + HEAD_BYTES; j++) head = head * 257 + (j < end ? bytes[j]! + 1 : 0);
  return head;
}

function keyStart(leaf: Leaf, i: number): number {
  return i === 0 ? 0 : leaf.ends[i - 1]!;
}

function usedKeyBytes(leaf: Leaf): number {
  return leaf.n === 0 ? 0 : leaf.ends[leaf.n - 1]!;
}

// -----------------------------------------------------------------------------------------
// Comparison. Hand loops: for short keys they beat Buffer.compare, which pays a native call.

/** Unsigned byte order, a prefix first: negative, zero or positive. */
export function compareKeys(a: Uint8Array, b: Uint8Array): number {
  const n = a.length < b.length ? a.length : b.length;
  for (let i = 0; i < n; i++) {
    const d = a[i]! - b[i]!;
    if (d !== 0) return d;
  }
  return a.length - b.length;
}

/** `probe` against the key at [start, end) of `keys`. */
function compareAt(probe: Uint8Array, keys: Uint8Array, start: number, end: number): number {
  const length = end - start;
  const n = probe.length < length ? probe.length : length;
  for (let i = 0; i < n; i++) {
    const d = probe[i]! - keys[start + i]!;
    if (d !== 0) return d;
  }
  return probe.length - length;
}

/** Two keys inside buffers (checkpoint validation). */
function compareRanges(a: Uint8Array, aStart: number, aEnd: number, b: Uint8Array, bStart: number, bEnd: number): number {
  const aLength = aEnd - aStart;
  const bLength = bEnd - bStart;
  const n = aLength < bLength ? aLength : bLength;
  for (let i = 0; i < n; i++) {
    const d = a[aStart + i]! - b[bStart + i]!;
    if (d !== 0) return d;
  }
  return aLength - bLength;
}

// -----------------------------------------------------------------------------------------
// Search, shared by the index and its views. Nothing here allocates.

/**
 * The last leaf whose first key is <= `key`, or 0 when `key` sorts before every leaf.
 * `heads` are the leaves' heads taken after `skip` bytes, which all first keys share.
 */
function findLeaf(leaves: readonly Leaf[], heads: Float64Array, skip: number, key: Uint8Array): number {
  const last = leaves.length - 1;
  if (last <= 0) return 0;
  // A key that differs within the shared prefix sorts before or after every first key.
  const shared = leaves[0]!.keys;
  const n = key.length < skip ? key.length : skip;
  for (let i = 0; i < n; i++) {
    const d = key[i]! - shared[i]!;
    if (d !== 0) return d < 0 ? 0 : last;
  }
  if (key.length < skip) return 0;
  const head = headOf(key, skip, key.length);
  let lo = 0;
  let hi = last;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    const other = heads[mid]!;
    let after: boolean;
    if (head !== other) {
      after = head > other;
    } else {
      const leaf = leaves[mid]!;
      after = compareAt(key, leaf.keys, 0, leaf.ends[0]!) >= 0;
    }
    if (after) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

function leafHead(leaf: Leaf, skip: number): number {
  return headOf(leaf.keys, skip, leaf.ends[0]!);
}

/** Bytes that the first keys of leaves `a` and `b` share. */
function sharedPrefix(a: Leaf, b: Leaf): number {
  const aEnd = a.ends[0]!;
  const n = Math.min(aEnd, b.ends[0]!);
  let i = 0;
  while (i < n && a.keys[i] === b.keys[i]) i++;
  return i;
}

/** Where touchLeaf() puts what it read, so that the reads are not optimized away (never read). */
let _touched = 0;

/** Key bytes up to which touchLeaf() reads every line; past it, only the lines searched. */
const TOUCH_KEY_BYTES = 2048;

/**
 * Reads one byte or number in every cache line of the leaf's ends and (short) keys. The reads
 * do not depend on each other, so the CPU overlaps their misses; the binary search that
 * follows, whose every step depends on the one before, then runs in cache.
 */
function touchLeaf(leaf: Leaf): void {
  const keys = leaf.keys;
  const ends = leaf.ends;
  const used = leaf.n === 0 ? 0 : ends[leaf.n - 1]!;
  let sum = 0;
  for (let i = 0; i < leaf.n; i += 16) sum += ends[i]!;
  if (used <= TOUCH_KEY_BYTES) for (let i = 0; i < used; i += 64) sum += keys[i]!;
  _touched = sum;
}

/** The entry holding `key`, or -(p + 1) where p is the position it would take. */
function searchLeaf(leaf: Leaf, key: Uint8Array): number {
  const keys = leaf.keys;
  const ends = leaf.ends;
  touchLeaf(leaf);
  let lo = 0;
  let hi = leaf.n;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    const c = compareAt(key, keys, mid === 0 ? 0 : ends[mid - 1]!, ends[mid]!);
    if (c > 0) lo = mid + 1;
    else if (c < 0) hi = mid;
    else return mid;
  }
  return -lo - 1;
}

/** Position of the first entry >= `key` in the leaf (may be leaf.n). */
function lowerBound(leaf: Leaf, key: Uint8Array): number {
  const r = searchLeaf(leaf, key);
  return r >= 0 ? r : -r - 1;
}

function readMeta(meta: Float64Array, i: number): KeyMeta {
  const o = i * META_FIELDS;
  return {
    version: meta[o + F_VERSION]!,
    expiresAt: meta[o + F_EXPIRES]!,
    location: meta[o + F_LOCATION]!,
    valueBytes: meta[o + F_VALUE_BYTES]!,
    cacheAt: meta[o + F_CACHE_AT]!,
  };
}

/** readMeta() into an existing object: for hot paths that make none. */
function readMetaInto(meta: Float64Array, i: number, out: KeyMeta): void {
  const o = i * META_FIELDS;
  out.version = meta[o + F_VERSION]!;
  out.expiresAt = meta[o + F_EXPIRES]!;
  out.location = meta[o + F_LOCATION]!;
  out.valueBytes = meta[o + F_VALUE_BYTES]!;
  out.cacheAt = meta[o + F_CACHE_AT]!;
}

function writeMeta(meta: Float64Array, i: number, m: KeyMeta): void {
  const o = i * META_FIELDS;
  meta[o + F_VERSION] = m.version;
  meta[o + F_EXPIRES] = m.expiresAt;
  meta[o + F_LOCATION] = m.location;
  meta[o + F_VALUE_BYTES] = m.valueBytes;
  meta[o + F_CACHE_AT] = m.cacheAt;
}

/** Keys up to this long are copied by a loop: cheaper than the native call a copy() makes (measured). */
const LOOP_COPY_BYTES = 48;

function copyKey(leaf: Leaf, i: number): Buffer {
  const start = keyStart(leaf, i);
  const end = leaf.ends[i]!;
  const out = Buffer.allocUnsafe(end - start);
  const keys = leaf.keys;
  if (end - start <= LOOP_COPY_BYTES) {
    for (let j = start; j < end; j++) out[j - start] = keys[j]!;
  } else {
    keys.copy(out, 0, start, end);
  }
  return out;
}

// -----------------------------------------------------------------------------------------
// Leaf surgery. Every function here makes a new leaf: the sources may belong to a view.

/** A copy of `leaf` with the given room, stamped with `epoch`. */
function relayout(leaf: Leaf, epoch: number, entryCap: number, keyCap: number): Leaf {
  assert(entryCap >= leaf.n && keyCap >= usedKeyBytes(leaf), 'relayout keeps every entry');
  const copy = makeLeaf(epoch, entryCap, keyCap);
  appendEntries(copy, leaf, 0, leaf.n);
  return copy;
}

/** Appends entries [from, to) of `src` to `dst`, which has room for them. */
function appendEntries(dst: Leaf, src: Leaf, from: number, to: number): void {
  if (from >= to) return;
  const base = usedKeyBytes(dst);
  const start = keyStart(src, from);
  const bytes = src.ends[to - 1]! - start;
  assert(dst.n + to - from <= dst.ends.length && base + bytes <= dst.keys.length, 'the destination leaf has room');
  src.keys.copy(dst.keys, base, start, start + bytes);
  for (let i = from; i < to; i++) dst.ends[dst.n + i - from] = src.ends[i]! - start + base;
  dst.meta.set(src.meta.subarray(from * META_FIELDS, to * META_FIELDS), dst.n * META_FIELDS);
  dst.n += to - from;
}

/** Key bytes of entries [from, to) of `leaf`. */
function spanBytes(leaf: Leaf, from: number, to: number): number {
  return from >= to ? 0 : leaf.ends[to - 1]! - keyStart(leaf, from);
}

/**
 * A new leaf with entries [from, to) of the sequence `a` then `b`, with room for `extra`
 * more (the leaf about to take a key gets one; the others none, as ordered inserts would
 * never use it).
 */
function gather(epoch: number, a: Leaf, b: Leaf | undefined, from: number, to: number, extra: number): Leaf {
  const count = to - from;
  assert(count > 0 && to <= a.n + (b?.n ?? 0), 'gather takes a non-empty span of its sources');
  const aTo = Math.min(to, a.n);
  const bFrom = Math.max(0, from - a.n);
  const bTo = to - a.n;
  const bytes = spanBytes(a, from, aTo) + (b !== undefined ? spanBytes(b, bFrom, bTo) : 0);
  const entryCap = entryCapFor(count + extra);
  const leaf = makeLeaf(epoch, entryCap, keyCapFor(bytes, count, entryCap));
  appendEntries(leaf, a, from, aTo);
  if (b !== undefined) appendEntries(leaf, b, bFrom, bTo);
  assert(leaf.n === count, 'gather copied the whole span');
  return leaf;
}

/**
 * The first raw key that is not 1..MAX_KEY_BYTES bytes or does not sort after the one
 * before, or -1. (Small functions of their own, these loops are optimized early: a
 * checkpoint load is a cold start.)
 */
function firstBadRawKey(keys: Uint8Array, ends: Uint32Array): number {
  let start = 0;
  let previous = 0;
  for (let i = 0; i < ends.length; i++) {
    const end = ends[i]!;
    if (end - start < 1 || end - start > MAX_KEY_BYTES) return i;
    if (i > 0 && compareRanges(keys, previous, start, keys, start, end) >= 0) return i;
    previous = start;
    start = end;
  }
  return -1;
}

/** A leaf holding raw entries [from, to), exactly sized. */
function leafOfRaw(epoch: number, keys: Uint8Array, ends: Uint32Array, meta: Float64Array, from: number, to: number): Leaf {
  const base = from === 0 ? 0 : ends[from - 1]!;
  const bytes = ends[to - 1]! - base;
  const leaf = makeLeaf(epoch, to - from, roundUp(bytes, 8));
  const leafEnds = leaf.ends;
  for (let i = from; i < to; i++) leafEnds[i - from] = ends[i]! - base;
  leaf.keys.set(keys.subarray(base, base + bytes));
  leaf.meta.set(meta.subarray(from * META_FIELDS, to * META_FIELDS));
  leaf.n = to - from;
  return leaf;
}

// -----------------------------------------------------------------------------------------

/** The read side, shared by the live index and its frozen views. */
abstract class KeyReader {
  protected leaves: Leaf[];
  /** heads[l] = leafHead(leaves[l], headSkip); longer than `leaves` (room to grow). */
  protected heads: Float64Array;
  /** Bytes every leaf's first key shares, which heads leave out. */
  protected headSkip: number;
  protected entries: number;
  protected keyByteCount: number;
  /** Bumped by every insert, delete and clear: a visit must not see the structure change. */
  protected reshapes = 0;

  protected constructor(leaves: Leaf[], heads: Float64Array, headSkip: number, entries: number, keyByteCount: number) {
    this.leaves = leaves;
    this.heads = heads;
    this.headSkip = headSkip;
    this.entries = entries;
    this.keyByteCount = keyByteCount;
  }

  /** Entries held. */
  get size(): number {
    return this.entries;
  }

  /** Sum of the lengths of the keys held. */
  get keyBytes(): number {
    return this.keyByteCount;
  }

  /** Sets seen[s] for the segment s that each entry's value lies in (location = segment × 2^32 + offset). */
  markSegments(seen: Uint8Array): void {
    for (const leaf of this.leaves) {
      const m = leaf.meta;
      for (let i = 0; i < leaf.n; i++) seen[Math.floor(m[i * META_FIELDS + F_LOCATION]! / 2 ** 32)] = 1;
    }
  }

  /**
   * Every entry in key order, as exportRaw gives them but leaf by leaf and without a copy:
   * views of the leaves' own arrays. A view's leaves never change; the live index checks
   * that it does not change while they are read (KeyIndex.rawSlices).
   */
  rawSlices(): Generator<RawLeaf, void, void> {
    return leafSlices(this.leaves);
  }

  /** A copy of the metadata of `key`, or undefined when absent. */
  get(key: Uint8Array): KeyMeta | undefined {
    const leaves = this.leaves;
    if (leaves.length === 0) return undefined;
    const leaf = leaves[findLeaf(leaves, this.heads, this.headSkip, key)]!;
    const i = searchLeaf(leaf, key);
    return i >= 0 ? readMeta(leaf.meta, i) : undefined;
  }

  /** Like get() but fills `out` instead of making an object: for hot paths. */
  getInto(key: Uint8Array, out: KeyMeta): boolean {
    const leaves = this.leaves;
    if (leaves.length === 0) return false;
    const leaf = leaves[findLeaf(leaves, this.heads, this.headSkip, key)]!;
    const i = searchLeaf(leaf, key);
    if (i < 0) return false;
    readMetaInto(leaf.meta, i, out);
    return true;
  }

  has(key: Uint8Array): boolean {
    const leaves = this.leaves;
    if (leaves.length === 0) return false;
    return searchLeaf(leaves[findLeaf(leaves, this.heads, this.headSkip, key)]!, key) >= 0;
  }

  /**
   * Visits entries in byte order within [start, end), either bound optional, backwards when
   * `reverse`; stops when `fn` returns false. The key passed is a fresh copy.
   *
   * `fn` may call update() or set() on a key that exists; inserting, deleting or clearing
   * during a visit is a bug (asserted). To change the index while walking it, walk a
   * freeze() instead.
   */
  forEachIn(range: KeyRange & { reverse?: boolean }, fn: (key: Buffer, meta: KeyMeta) => boolean | void): void {
    if (this.leaves.length === 0) return;
    if (range.reverse === true) this.visitBackward(range, fn);
    else this.visitForward(range, fn);
  }

  /**
   * Copies the first key at or after `start` and before `end` into `out` and returns its
   * length; -1 when there is none or it is longer than `out`. Makes nothing: a seek for
   * hot paths that need one key, not a visit.
   */
  firstKeyInto(start: Uint8Array, end: Uint8Array, out: Uint8Array): number {
    const leaves = this.leaves;
    if (leaves.length === 0) return -1;
    let li = findLeaf(leaves, this.heads, this.headSkip, start);
    let i = lowerBound(leaves[li]!, start);
    // The first key at or after start may open the next leaf.
    while (i === leaves[li]!.n) {
      if (++li === leaves.length) return -1;
      i = 0;
    }
    const leaf = leaves[li]!;
    const from = keyStart(leaf, i);
    const to = leaf.ends[i]!;
    if (compareAt(end, leaf.keys, from, to) <= 0 || to - from > out.length) return -1;
    for (let j = from; j < to; j++) out[j - from] = leaf.keys[j]!;
    return to - from;
  }

  private visitForward(range: KeyRange, fn: (key: Buffer, meta: KeyMeta) => boolean | void): void {
    const { start, end } = range;
    const leaves = this.leaves;
    const reshapes = this.reshapes;
    let li = 0;
    let i = 0;
    if (start !== undefined) {
      li = findLeaf(leaves, this.heads, this.headSkip, start);
      i = lowerBound(leaves[li]!, start);
    }
    for (; li < leaves.length; li++, i = 0) {
      for (; i < leaves[li]!.n; i++) {
        // Read the slot each time: update() from `fn` may have replaced the leaf by a copy.
        const leaf = leaves[li]!;
        if (end !== undefined && compareAt(end, leaf.keys, keyStart(leaf, i), leaf.ends[i]!) <= 0) return;
        const more = fn(copyKey(leaf, i), readMeta(leaf.meta, i));
        assert(this.reshapes === reshapes, 'no insert or delete during forEachIn');
        if (more === false) return;
      }
    }
  }

  private visitBackward(range: KeyRange, fn: (key: Buffer, meta: KeyMeta) => boolean | void): void {
    const { start, end } = range;
    const leaves = this.leaves;
    const reshapes = this.reshapes;
    let li = leaves.length - 1;
    let i = leaves[li]!.n - 1;
    if (end !== undefined) {
      li = findLeaf(leaves, this.heads, this.headSkip, end);
      i = lowerBound(leaves[li]!, end) - 1;
    }
    for (;;) {
      for (; i >= 0; i--) {
        const leaf = leaves[li]!;
        if (start !== undefined && compareAt(start, leaf.keys, keyStart(leaf, i), leaf.ends[i]!) > 0) return;
        const more = fn(copyKey(leaf, i), readMeta(leaf.meta, i));
        assert(this.reshapes === reshapes, 'no insert or delete during forEachIn');
        if (more === false) return;
      }
      if (--li < 0) return;
      i = leaves[li]!.n - 1;
    }
  }

  /** Entries in [start, end): O(log n) plus the leaves between the bounds (or outside them, if fewer). */
  count(range: KeyRange): number {
    const { start, end } = range;
    const leaves = this.leaves;
    if (leaves.length === 0) return 0;
    if (start === undefined && end === undefined) return this.entries;
    if (start !== undefined && end !== undefined && compareKeys(start, end) >= 0) return 0;
    const firstLeaf = start === undefined ? 0 : findLeaf(leaves, this.heads, this.headSkip, start);
    const firstAt = start === undefined ? 0 : lowerBound(leaves[firstLeaf]!, start);
    const lastLeaf = end === undefined ? leaves.length - 1 : findLeaf(leaves, this.heads, this.headSkip, end);
    const lastAt = end === undefined ? leaves[lastLeaf]!.n : lowerBound(leaves[lastLeaf]!, end);
    if (firstLeaf === lastLeaf) return Math.max(0, lastAt - firstAt);
    const inside = lastLeaf - firstLeaf - 1;
    let total = 0;
    if (inside <= leaves.length - inside) {
      total = leaves[firstLeaf]!.n - firstAt + lastAt;
      for (let li = firstLeaf + 1; li < lastLeaf; li++) total += leaves[li]!.n;
      return total;
    }
    // Fewer leaves outside the range: count those and subtract.
    total = firstAt + (leaves[lastLeaf]!.n - lastAt);
    for (let li = 0; li < firstLeaf; li++) total += leaves[li]!.n;
    for (let li = lastLeaf + 1; li < leaves.length; li++) total += leaves[li]!.n;
    return this.entries - total;
  }

  /** Visits every entry, in byte order. The key passed is a fresh copy. */
  forEach(fn: (key: Buffer, meta: KeyMeta) => void): void {
    this.forEachIn({}, (key, meta) => {
      fn(key, meta);
    });
  }

  /**
   * Every entry in key order, as a checkpoint stores it: the keys back to back, their
   * cumulative ends, the metadata. KeyIndex.importRaw() takes it back.
   */
  exportRaw(): { keys: Buffer; ends: Uint32Array; meta: Float64Array } {
    assert(this.keyByteCount < 2 ** 32, 'cumulative key ends fit 32 bits');
    const keys = Buffer.allocUnsafe(this.keyByteCount);
    const ends = new Uint32Array(this.entries);
    const meta = new Float64Array(this.entries * META_FIELDS);
    let n = 0;
    let base = 0;
    for (const leaf of this.leaves) {
      const used = usedKeyBytes(leaf);
      leaf.keys.copy(keys, base, 0, used);
      for (let i = 0; i < leaf.n; i++) ends[n + i] = leaf.ends[i]! + base;
      meta.set(leaf.meta.subarray(0, leaf.n * META_FIELDS), n * META_FIELDS);
      n += leaf.n;
      base += used;
    }
    assert(n === this.entries && base === this.keyByteCount, 'export covers every entry');
    return { keys, ends, meta };
  }

  /**
   * Bytes of memory held: leaf buffers plus an estimate of the objects around them. A view
   * shares its leaves with the index until the index replaces them.
   */
  memoryBytes(): number {
    let bytes = 0;
    for (const leaf of this.leaves) bytes += leaf.keys.buffer.byteLength + LEAF_OVERHEAD_BYTES;
    return bytes + this.heads.byteLength;
  }

  /** Checks every invariant of the structure, walking all of it (for tests and `atomio check`). */
  checkInvariants(): void {
    let entries = 0;
    let keyBytes = 0;
    let prev: Leaf | undefined;
    assert(this.heads.length >= this.leaves.length, 'there is a head for each leaf');
    const last = this.leaves[this.leaves.length - 1];
    if (last !== undefined) assert(this.headSkip <= sharedPrefix(this.leaves[0]!, last), 'every first key has the skipped prefix');
    for (const [l, leaf] of this.leaves.entries()) {
      assert(leaf.n >= 1 && leaf.n <= LEAF_CAPACITY && leaf.n <= leaf.ends.length, 'a leaf is neither empty nor over capacity');
      assert(leaf.meta.length === leaf.ends.length * META_FIELDS, 'a leaf has metadata room for each entry');
      for (let i = 0; i < leaf.n; i++) {
        const length = leaf.ends[i]! - keyStart(leaf, i);
        assert(length >= 1 && length <= MAX_KEY_BYTES, 'key lengths are within limits');
        if (i > 0) {
          const c = compareRanges(leaf.keys, keyStart(leaf, i - 1), leaf.ends[i - 1]!, leaf.keys, keyStart(leaf, i), leaf.ends[i]!);
          assert(c < 0, 'keys in a leaf are sorted and unique');
        }
      }
      assert(usedKeyBytes(leaf) <= leaf.keys.length, 'key bytes fit the leaf buffer');
      assert(this.heads[l] === leafHead(leaf, this.headSkip), 'the head of a leaf is made from its first key');
      if (prev !== undefined) {
        const c = compareRanges(prev.keys, keyStart(prev, prev.n - 1), prev.ends[prev.n - 1]!, leaf.keys, 0, leaf.ends[0]!);
        assert(c < 0, 'leaves are sorted and do not overlap');
      }
      entries += leaf.n;
      keyBytes += usedKeyBytes(leaf);
      prev = leaf;
    }
    assert(entries === this.entries, 'size counts the entries of the leaves');
    assert(keyBytes === this.keyByteCount, 'keyBytes sums the key lengths');
  }
}

/** A read-only view of a KeyIndex as it was at freeze(). Unaffected by later changes. */
export class KeyView extends KeyReader {
  /** @internal Made by KeyIndex.freeze(). */
  constructor(leaves: Leaf[], heads: Float64Array, headSkip: number, entries: number, keyByteCount: number) {
    super(leaves, heads, headSkip, entries, keyByteCount);
  }

  /**
   * A cursor over the entries in [start, end), backwards when `reverse`. Safe because a
   * view never changes: both ends are found once, and each step is an index increment.
   */
  cursor(range: KeyRange, reverse = false): KeyCursor {
    const leaves = this.leaves;
    let fromLeaf = 0;
    let fromAt = 0;
    let toLeaf = leaves.length - 1;
    let toAt = toLeaf < 0 ? 0 : leaves[toLeaf]!.n;
    if (toLeaf >= 0 && range.start !== undefined) {
      fromLeaf = findLeaf(leaves, this.heads, this.headSkip, range.start);
      fromAt = lowerBound(leaves[fromLeaf]!, range.start);
    }
    if (toLeaf >= 0 && range.end !== undefined) {
      toLeaf = findLeaf(leaves, this.heads, this.headSkip, range.end);
      toAt = lowerBound(leaves[toLeaf]!, range.end);
    }
    return new KeyCursor(leaves, fromLeaf, fromAt, toLeaf, toAt, reverse);
  }
}

/**
 * Steps through the entries of a view between two positions, without a callback and without
 * an object per entry: after next() returns true, the current entry's metadata is in the
 * cursor's fields and key() copies its key. Made by KeyView.cursor().
 *
 * Positions are (leaf, entry) pairs; [from, to) is the range, and a position past a leaf's
 * last entry is the same as the first entry of the next leaf.
 */
export class KeyCursor implements KeyMeta {
  version = 0;
  expiresAt = 0;
  location = 0;
  valueBytes = 0;
  cacheAt = -1;
  private leaf: Leaf | undefined;
  private at = 0;
  /** The next position to visit (forward), or one past it (reverse). */
  private li: number;
  private i: number;

  /** @internal */
  constructor(
    private readonly leaves: readonly Leaf[],
    private readonly fromLeaf: number,
    private readonly fromAt: number,
    private readonly toLeaf: number,
    private readonly toAt: number,
    private readonly reverse: boolean,
  ) {
    this.li = reverse ? toLeaf : fromLeaf;
    this.i = reverse ? toAt : fromAt;
  }

  /** Moves to the next entry; false when the range is done. */
  next(): boolean {
    const leaves = this.leaves;
    let li = this.li;
    let i = this.i;
    let leaf: Leaf | undefined;
    if (this.reverse) {
      // this.i is one past the entry to visit.
      while (i === 0 && li > this.fromLeaf) i = leaves[--li]!.n;
      if (i === 0 || li < this.fromLeaf || (li === this.fromLeaf && i <= this.fromAt)) return this.end();
      i--;
      leaf = leaves[li]!;
      this.i = i;
    } else {
      leaf = leaves[li];
      while (leaf !== undefined && i >= leaf.n && li < this.toLeaf) {
        li++;
        i = 0;
        leaf = leaves[li];
      }
      if (leaf === undefined || li > this.toLeaf || (li === this.toLeaf && i >= this.toAt)) return this.end();
      this.i = i + 1;
    }
    this.li = li;
    this.leaf = leaf;
    this.at = i;
    readMetaInto(leaf.meta, i, this);
    return true;
  }

  /** A fresh copy of the current entry's key. */
  key(): Buffer {
    assert(this.leaf !== undefined, 'key() follows a next() that returned true');
    return copyKey(this.leaf, this.at);
  }

  /** The current entry's metadata as an object (for the less common paths). */
  meta(): KeyMeta {
    return { version: this.version, expiresAt: this.expiresAt, location: this.location, valueBytes: this.valueBytes, cacheAt: this.cacheAt };
  }

  private end(): false {
    this.leaf = undefined;
    this.li = this.reverse ? this.fromLeaf : this.toLeaf;
    this.i = this.reverse ? this.fromAt : this.toAt;
    return false;
  }
}

/**
 * An ordered map from byte keys to KeyMeta, for millions of keys: under 60 bytes a key
 * beside the key bytes (about 52 when loaded from a checkpoint), and no object per key.
 * Inside a forEachIn() callback only update() and set() of a present key are allowed.
 *
 * @example
 *   const index = new KeyIndex();
 *   index.set(Buffer.from('user:1'), { version: 7, expiresAt: 0, location: 2 ** 32 + 4096, valueBytes: 300, cacheAt: -1 });
 *   index.get(Buffer.from('user:1'))?.version; // 7
 */
/** One leaf's entries as a checkpoint reads them: its key bytes, their ends (from the leaf's start), their metadata. */
export interface RawLeaf {
  n: number;
  keys: Uint8Array;
  ends: Uint32Array;
  meta: Float64Array;
}

function* leafSlices(leaves: readonly Leaf[]): Generator<RawLeaf, void, void> {
  for (const leaf of leaves) yield { n: leaf.n, keys: leaf.keys, ends: leaf.ends, meta: leaf.meta };
}

/** A view of a KeyIndex that its reader gives back when done (KeyIndex.lease). */
export interface KeyLease {
  readonly view: KeyView;
  /** The index stops copying leaves for this view. Call once, after the last read. */
  release(): void;
}

export class KeyIndex extends KeyReader {
  /** Bumped by each freeze and lease: leaves of older epochs may be shared with a view (see shared). */
  private epoch = 0;
  /** Leaves of epochs below this may be shared with a view from freeze(), kept for as long as anyone holds it. */
  private frozenBelow = 0;
  /** Leases not yet released: while any is, every leaf of an older epoch may be shared. */
  private leases = 0;
  /** Counts the calls that change what a checkpoint stores: a reader across pauses (rawSlices) checks it. */
  private changes = 0;
  /** Head updates since the heads were last rebuilt: a longer headSkip waits for enough of them. */
  private headUpdates = 0;

  constructor() {
    super([], new Float64Array(16), 0, 0, 0);
  }

  /** Inserts or replaces; returns the previous metadata. The key's bytes are copied. */
  set(key: Uint8Array, meta: KeyMeta): KeyMeta | undefined {
    assert(key.length >= 1 && key.length <= MAX_KEY_BYTES, 'a key is 1..MAX_KEY_BYTES bytes');
    this.changes++;
    if (this.leaves.length === 0) {
      // A first leaf holding just this key, so that its head is right from the start.
      const leaf = makeLeaf(this.epoch, ENTRY_STEP, roundUp(key.length, 8) * ENTRY_STEP);
      leaf.keys.set(key, 0);
      leaf.ends[0] = key.length;
      writeMeta(leaf.meta, 0, meta);
      leaf.n = 1;
      this.splice(0, 0, [leaf]);
      this.entries = 1;
      this.keyByteCount = key.length;
      this.reshapes++;
      return undefined;
    }
    for (;;) {
      const li = findLeaf(this.leaves, this.heads, this.headSkip, key);
      let leaf = this.leaves[li]!;
      const r = searchLeaf(leaf, key);
      if (r >= 0) {
        leaf = this.writable(li);
        const previous = readMeta(leaf.meta, r);
        writeMeta(leaf.meta, r, meta);
        return previous;
      }
      if (leaf.n < LEAF_CAPACITY) {
        this.insertAt(li, -r - 1, key, meta);
        return undefined;
      }
      this.makeRoom(li, -r - 1);
    }
  }

  /** Changes the given fields of an existing entry; false when `key` is absent. */
  update(key: Uint8Array, patch: Partial<KeyMeta>): boolean {
    if (this.leaves.length === 0) return false;
    const li = findLeaf(this.leaves, this.heads, this.headSkip, key);
    const i = searchLeaf(this.leaves[li]!, key);
    if (i < 0) return false;
    const cacheOnly = patch.version === undefined && patch.expiresAt === undefined && patch.location === undefined && patch.valueBytes === undefined;
    // A cache position alone is written in place, even in a leaf a view or lease shares (a
    // read during a checkpoint or beside a snapshot would otherwise copy the leaf): every
    // sharer holds this very entry, and a position names the same value for all of them
    // (ValueCache). A checkpoint does not keep it, so it counts as no change.
    const m = (cacheOnly ? this.leaves[li]! : this.writable(li)).meta;
    const o = i * META_FIELDS;
    if (!cacheOnly) this.changes++;
    if (patch.version !== undefined) m[o + F_VERSION] = patch.version;
    if (patch.expiresAt !== undefined) m[o + F_EXPIRES] = patch.expiresAt;
    if (patch.location !== undefined) m[o + F_LOCATION] = patch.location;
    if (patch.valueBytes !== undefined) m[o + F_VALUE_BYTES] = patch.valueBytes;
    if (patch.cacheAt !== undefined) m[o + F_CACHE_AT] = patch.cacheAt;
    return true;
  }

  /** Removes `key`; returns its metadata, or undefined when it was absent. */
  delete(key: Uint8Array): KeyMeta | undefined {
    this.changes++;
    if (this.leaves.length === 0) return undefined;
    const li = findLeaf(this.leaves, this.heads, this.headSkip, key);
    const i = searchLeaf(this.leaves[li]!, key);
    if (i < 0) return undefined;
    const leaf = this.writable(li);
    const previous = readMeta(leaf.meta, i);
    this.removeAt(li, leaf, i);
    return previous;
  }

  /** Empties the index. Views taken before keep their content. */
  clear(): void {
    this.changes++;
    this.leaves = [];
    this.heads = new Float64Array(16);
    this.headSkip = 0;
    this.entries = 0;
    this.keyByteCount = 0;
    this.reshapes++;
  }

  /**
   * Every entry in key order, as exportRaw gives them but leaf by leaf and without a copy:
   * views of the leaves' own arrays. Nothing a checkpoint stores may change from this call
   * until the last is read (a cache position may): a change in between fails an assertion
   * when the iteration resumes.
   */
  override rawSlices(): Generator<RawLeaf, void, void> {
    return this.slicesUnchangedSince(this.changes);
  }

  private *slicesUnchangedSince(at: number): Generator<RawLeaf, void, void> {
    for (let li = 0; li < this.leaves.length; li++) {
      assert(this.changes === at, 'the key index is not changed while its raw slices are read');
      const leaf = this.leaves[li]!;
      yield { n: leaf.n, keys: leaf.keys, ends: leaf.ends, meta: leaf.meta };
    }
    assert(this.changes === at, 'the key index is not changed while its raw slices are read');
  }

  /**
   * A read-only view of the index as it is now. O(number of leaves): the view shares the
   * leaves, and the index copies a shared leaf before changing it.
   */
  freeze(): KeyView {
    const view = this.view();
    this.frozenBelow = this.epoch;
    return view;
  }

  /** freeze() for a reader that calls release() when done, after which the index stops copying leaves for it. */
  lease(): KeyLease {
    const view = this.view();
    this.leases++;
    let held = true;
    return {
      view,
      release: () => {
        assert(held, 'a lease is released once');
        held = false;
        this.leases--;
      },
    };
  }

  private view(): KeyView {
    const heads = this.heads.slice(0, this.leaves.length);
    const view = new KeyView(this.leaves.slice(), heads, this.headSkip, this.entries, this.keyByteCount);
    this.epoch++;
    return view;
  }

  /** Whether a view may share `leaf` (then it is copied before any change). */
  private shared(leaf: Leaf): boolean {
    return leaf.epoch < this.frozenBelow || (this.leases > 0 && leaf.epoch !== this.epoch);
  }

  /**
   * An index holding `raw` (as exportRaw makes it: sorted, unique, `keys` exactly the bytes
   * the ends cover). Leaves are filled 7/8 so that inserts do not split at once. The order
   * and key lengths are checked.
   */
  static importRaw(raw: { keys: Uint8Array; ends: Uint32Array; meta: Float64Array }): KeyIndex {
    const { keys, ends, meta } = raw;
    const total = ends.length;
    assert(meta.length === total * META_FIELDS, 'raw metadata has META_FIELDS numbers an entry');
    assert(keys.length === (total === 0 ? 0 : ends[total - 1]!), 'raw keys are exactly the bytes the ends cover');
    const bad = firstBadRawKey(keys, ends);
    assert(bad === -1, `raw key ${bad} is 1..${MAX_KEY_BYTES} bytes and sorts after the one before`);
    const index = new KeyIndex();
    const leafCount = Math.ceil(total / FILL_ENTRIES);
    let at = 0;
    for (let l = 0; l < leafCount; l++) {
      // Spread the entries evenly so that no leaf is left nearly empty at the end.
      const to = Math.floor(((l + 1) * total) / leafCount);
      index.leaves.push(leafOfRaw(index.epoch, keys, ends, meta, at, to));
      at = to;
    }
    index.heads = new Float64Array(Math.max(16, leafCount));
    index.rebuildHeads();
    index.entries = total;
    index.keyByteCount = keys.length;
    return index;
  }

  // ---------------------------------------------------------------------------------------
  // Mechanics

  /** Replaces `remove` leaves from `from` by `pieces`, in the leaves and their heads alike. */
  private splice(from: number, remove: number, pieces: Leaf[]): void {
    const before = this.leaves.length;
    const after = before - remove + pieces.length;
    if (after > this.heads.length || (after * 4 < this.heads.length && this.heads.length > 16)) {
      // Doubles when full, halves when under a quarter used.
      const resized = new Float64Array(Math.max(16, after * 2));
      resized.set(this.heads.subarray(0, Math.min(before, resized.length)));
      this.heads = resized;
    }
    if (remove === pieces.length) {
      // Two leaves sharing their entries stay two: no need to move the array.
      for (let i = 0; i < pieces.length; i++) this.leaves[from + i] = pieces[i]!;
    } else {
      this.heads.copyWithin(from + pieces.length, from + remove, before);
      this.leaves.splice(from, remove, ...pieces);
    }
    this.headsChanged(from, from + pieces.length);
  }

  /**
   * The first keys of leaves [from, to) may have changed, or leaves came or went there:
   * sets their heads, and all heads again when the prefix the first keys share has changed.
   */
  private headsChanged(from: number, to: number): void {
    const leaves = this.leaves;
    const last = leaves.length - 1;
    if (last < 0) return;
    if (from === 0 || to >= last) {
      // The smallest or largest first key may have changed, and with them the shared prefix.
      // A shorter one must be taken at once; a longer one (faster searches) only once the
      // heads have changed half as often as there are leaves, so that a rebuild costs O(1)
      // per change and keys coming and going at the edges cannot make each one rebuild.
      const shared = sharedPrefix(leaves[0]!, leaves[last]!);
      if (shared < this.headSkip || (shared > this.headSkip && this.headUpdates * 2 >= leaves.length)) {
        this.rebuildHeads();
        return;
      }
    }
    for (let l = from; l < to; l++) this.heads[l] = leafHead(leaves[l]!, this.headSkip);
    this.headUpdates++;
  }

  /** Takes the prefix all first keys share now and makes every head again. */
  private rebuildHeads(): void {
    const leaves = this.leaves;
    const last = leaves.length - 1;
    this.headSkip = last < 0 ? 0 : sharedPrefix(leaves[0]!, leaves[last]!);
    for (let l = 0; l <= last; l++) this.heads[l] = leafHead(leaves[l]!, this.headSkip);
    this.headUpdates = 0;
  }

  /** Leaf `li`, first replaced by a copy when a view may share it. */
  private writable(li: number): Leaf {
    const leaf = this.leaves[li]!;
    if (!this.shared(leaf)) return leaf;
    const copy = relayout(leaf, this.epoch, leaf.ends.length, leaf.keys.length);
    this.leaves[li] = copy;
    return copy;
  }

  /** Inserts at position `at` of leaf `li`, which holds fewer than LEAF_CAPACITY entries. */
  private insertAt(li: number, at: number, key: Uint8Array, meta: KeyMeta): void {
    let leaf = this.leaves[li]!;
    const used = usedKeyBytes(leaf);
    const length = key.length;
    const fits = leaf.n < leaf.ends.length && used + length <= leaf.keys.length;
    if (!fits || this.shared(leaf)) {
      let entryCap = leaf.ends.length;
      let keyCap = leaf.keys.length;
      if (!fits) {
        // Keys that arrive in order (a stream's runs, a region's versions) land at the end of
        // the last leaf: it grows to full size at once, not a step (and a copy) per 8 keys.
        const appending = at === leaf.n && li === this.leaves.length - 1;
        if (leaf.n === entryCap) entryCap = appending ? LEAF_CAPACITY : Math.min(LEAF_CAPACITY, entryCap + ENTRY_STEP);
        // Key room for the new capacity at the average length; growing by at least a quarter
        // when keys alone overflow keeps reallocation amortized.
        const grown = used + length > keyCap ? keyCap + (keyCap >> 2) : keyCap;
        keyCap = Math.max(grown, keyCapFor(used + length, leaf.n + 1, entryCap));
      }
      leaf = relayout(leaf, this.epoch, entryCap, keyCap);
      this.leaves[li] = leaf;
    }
    const start = keyStart(leaf, at);
    const n = leaf.n;
    const ends = leaf.ends;
    leaf.keys.copyWithin(start + length, start, used);
    leaf.keys.set(key, start);
    for (let i = n; i > at; i--) ends[i] = ends[i - 1]! + length;
    ends[at] = start + length;
    leaf.meta.copyWithin((at + 1) * META_FIELDS, at * META_FIELDS, n * META_FIELDS);
    writeMeta(leaf.meta, at, meta);
    leaf.n = n + 1;
    if (at === 0) this.headsChanged(li, li + 1);
    this.entries++;
    this.keyByteCount += length;
    this.reshapes++;
  }

  /**
   * Leaf `li` is full and a key must go in at position `at`: split it or share with a
   * neighbour. Inserts at either end of a leaf are runs (keys written in order): the split
   * leaves the far side 7/8 full rather than half, so ordered loads pack leaves tightly.
   */
  private makeRoom(li: number, at: number): void {
    const leaves = this.leaves;
    const leaf = leaves[li]!;
    assert(leaf.n === LEAF_CAPACITY, 'only a full leaf is split');
    let a = leaf;
    let b: Leaf | undefined;
    let from = li;
    let split: number;
    // Where the key goes in the sequence of the entries of a then b.
    let position = at;
    if (at === leaf.n) {
      split = FILL_ENTRIES;
    } else if (at === 0) {
      split = leaf.n - FILL_ENTRIES;
    } else {
      const right = leaves[li + 1];
      const left = leaves[li - 1];
      if (right !== undefined && right.n < SHARE_BELOW) {
        b = right;
      } else if (left !== undefined && left.n < SHARE_BELOW) {
        a = left;
        b = leaf;
        from = li - 1;
        position = left.n + at;
      }
      split = (a.n + (b?.n ?? 0)) >> 1;
    }
    const total = a.n + (b?.n ?? 0);
    // A key at the split point sorts before the right piece's first key: it goes left.
    const toLeft = position <= split ? 1 : 0;
    const pieces = [gather(this.epoch, a, b, 0, split, toLeft), gather(this.epoch, a, b, split, total, 1 - toLeft)];
    this.splice(from, b === undefined ? 1 : 2, pieces);
  }

  /** Removes entry `i` of leaf `li` (writable), then keeps leaves from getting sparse. */
  private removeAt(li: number, leaf: Leaf, i: number): void {
    const start = keyStart(leaf, i);
    const length = leaf.ends[i]! - start;
    const n = leaf.n;
    const ends = leaf.ends;
    leaf.keys.copyWithin(start, start + length, usedKeyBytes(leaf));
    for (let k = i; k < n - 1; k++) ends[k] = ends[k + 1]! - length;
    leaf.meta.copyWithin(i * META_FIELDS, (i + 1) * META_FIELDS, n * META_FIELDS);
    leaf.n = n - 1;
    this.entries--;
    this.keyByteCount -= length;
    this.reshapes++;
    if (leaf.n === 0) {
      this.splice(li, 1, []);
      return;
    }
    if (i === 0) this.headsChanged(li, li + 1);
    if (leaf.n < MERGE_BELOW && this.mergeAround(li)) return;
    // Give back room that deletes left unused (two steps of slack before shrinking).
    if (leaf.ends.length - leaf.n >= 2 * ENTRY_STEP) {
      const entryCap = entryCapFor(leaf.n + ENTRY_STEP);
      this.leaves[li] = relayout(leaf, this.epoch, entryCap, keyCapFor(usedKeyBytes(leaf), leaf.n, entryCap));
    }
  }

  /** Merges sparse leaf `li` with its smaller neighbour when the two fit together. */
  private mergeAround(li: number): boolean {
    const leaves = this.leaves;
    const leaf = leaves[li]!;
    const left = leaves[li - 1];
    const right = leaves[li + 1];
    let from: number;
    if (left !== undefined && (right === undefined || left.n <= right.n)) from = li - 1;
    else if (right !== undefined) from = li;
    else return false;
    const a = leaves[from]!;
    const b = leaves[from + 1]!;
    if (a.n + b.n > MERGE_LIMIT) return false;
    assert(a === leaf || b === leaf, 'the merge takes the sparse leaf');
    this.splice(from, 2, [gather(this.epoch, a, b, 0, a.n + b.n, 0)]);
    return true;
  }
}
