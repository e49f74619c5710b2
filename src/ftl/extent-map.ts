// The block face's map: which log location holds each mapped sector.
//
// A B+ tree keyed by lba whose leaves keep their extents in one Float64Array each (six
// numbers an extent, plus the lba again in a key array), so a million extents cost about
// 64 bytes each and no object per extent: loading a checkpoint is a copy, and the garbage
// collector has nothing to trace.
// Extent objects are made only for what a caller asks to see.
//
// Invariants:
// - extents never overlap and never have count 0; within a leaf and along the leaf chain
//   they are sorted by lba;
// - in an inner node, child i holds only lbas >= keys[i] (for i >= 1) and < keys[i + 1];
//   keys[0] is unused (the leftmost child takes everything below keys[1]);
// - no leaf or inner node is empty, except the root leaf of an empty map;
// - a leaf's keys[i] is the lba of its extent i (seek searches the keys);
// - an extent's sectors are sectors [firstSector, firstSector + count) of one write op whose
//   chunked data starts at `dataOffset` of `segment` and holds `opSectors` sectors;
// - every mutation reports the pieces it displaced, so the caller can keep per-segment live
//   byte counts exact;
// - a leaf whose epoch is older than the last freeze(), or older than the map's current
//   epoch while a lease is held, may share its storage: its data and keys are never written
//   again, only replaced by copies (writable).
//
// lease() hands out the extents as they are, without a copy: a checkpoint reads them across
// many turns of the event loop while commits keep changing the map. freeze() makes a map of
// its own from the same leaves' storage, for a snapshot. Either way the map copies a leaf's
// storage (some 7 KiB) the first time it changes it afterwards: after a lease, only until the
// lease is released; after a freeze, for good.

import { assert } from '../base/assert.js';

export interface Extent {
  readonly lba: number;
  readonly count: number;
  readonly version: number;
  readonly segment: number;
  readonly dataOffset: number;
  readonly opSectors: number;
  readonly firstSector: number;
  /** Milliseconds since the epoch; 0 = never expires. */
  readonly expiresAt: number;
}

/** The part of `e` covering [lba, lba + count), which must lie inside it. */
export function slice(e: Extent, lba: number, count: number): Extent {
  assert(lba >= e.lba && lba + count <= e.lba + e.count && count > 0, 'slice lies inside its extent');
  if (lba === e.lba && count === e.count) return e;
  return {
    lba,
    count,
    version: e.version,
    segment: e.segment,
    dataOffset: e.dataOffset,
    opSectors: e.opSectors,
    firstSector: e.firstSector + (lba - e.lba),
    expiresAt: e.expiresAt,
  };
}

// Six float64 fields per extent. Location and op shape are packed: both stay far below 2^53.
export const EXTENT_FIELDS = 6;
const F_LBA = 0;
const F_COUNT = 1;
const F_VERSION = 2;
const F_LOCATION = 3; // segment × 2^32 + dataOffset
const F_SHAPE = 4; // opSectors × 2^24 + firstSector
const F_EXPIRES = 5;
const TWO_32 = 2 ** 32;
const TWO_24 = 2 ** 24;

const LEAF_CAPACITY = 128;
const INNER_CAPACITY = 64;
/** Bulk loading fills leaves this full, leaving room for inserts without an immediate split. */
const LOAD_FILL = 112;

class Leaf {
  n = 0;
  next: Leaf | undefined;
  prev: Leaf | undefined;

  constructor(
    /** The map's epoch when this leaf's storage was made: older storage may be shared (see ExtentMap.writable). */
    public epoch: number,
    public data = new Float64Array(LEAF_CAPACITY * EXTENT_FIELDS),
    /**
     * The lbas of `data`, side by side: seek's binary search reads them, not the interleaved
     * data, so a probe costs a few cache lines rather than one per step (on a large map the
     * search was most of what applying a write cost).
     */
    public keys = new Float64Array(LEAF_CAPACITY),
  ) {}
}

class Inner {
  n = 0;
  readonly keys = new Float64Array(INNER_CAPACITY);
  readonly children: Node[] = [];
}

type Node = Leaf | Inner;

/** An inner node on the way down, with the child index taken in it. */
interface PathStep {
  node: Inner;
  child: number;
}

function unpack(d: Float64Array, i: number): Extent {
  const o = i * EXTENT_FIELDS;
  const location = d[o + F_LOCATION]!;
  const shape = d[o + F_SHAPE]!;
  return {
    lba: d[o + F_LBA]!,
    count: d[o + F_COUNT]!,
    version: d[o + F_VERSION]!,
    segment: Math.floor(location / TWO_32),
    dataOffset: location % TWO_32,
    opSectors: Math.floor(shape / TWO_24),
    firstSector: shape % TWO_24,
    expiresAt: d[o + F_EXPIRES]!,
  };
}

function pack(e: Extent, leaf: Leaf, i: number): void {
  assert(e.opSectors < TWO_24 && e.firstSector < TWO_24 && e.dataOffset < TWO_32, 'extent fields fit their packing');
  const d = leaf.data;
  const o = i * EXTENT_FIELDS;
  leaf.keys[i] = e.lba;
  d[o + F_LBA] = e.lba;
  d[o + F_COUNT] = e.count;
  d[o + F_VERSION] = e.version;
  d[o + F_LOCATION] = e.segment * TWO_32 + e.dataOffset;
  d[o + F_SHAPE] = e.opSectors * TWO_24 + e.firstSector;
  d[o + F_EXPIRES] = e.expiresAt;
}

/** The extents of a map as they were at ExtentMap.lease(), unaffected by later changes. */
export interface ExtentLease {
  readonly size: number;
  /** The raw fields of every extent, in lba order, a leaf's worth a slice, without a copy. */
  rawSlices(): Iterable<Float64Array>;
  /** Gives the leaves back: the map stops copying them for this lease. Call once, after the last read. */
  release(): void;
}

export class ExtentMap {
  /** Bumped by each lease and freeze: leaves of older epochs may share their storage (see writable). */
  private epoch = 0;
  /** Leaves of epochs below this may share their storage with a map from freeze(), for good. */
  private frozenBelow = 0;
  /** Leases not yet released. */
  private leases = 0;
  private root: Node = new Leaf(0);
  private count = 0;
  /** Counts the calls that change the map: a reader across pauses (rawSlices) checks it. */
  private changes = 0;
  /** What seek() found: the leaf, and the index there of the last extent with lba <= the probe (-1: none). */
  private foundLeaf: Leaf = this.root as Leaf;
  private foundIndex = -1;

  get size(): number {
    return this.count;
  }

  /**
   * Empties the map for reuse, keeping its root leaf's storage when the map is a single
   * leaf; returns false (the map left as it was) when it has grown inner nodes.
   */
  reset(): boolean {
    this.changes++;
    if (!(this.root instanceof Leaf)) return false;
    this.root.n = 0;
    this.count = 0;
    return true;
  }

  /** Calls `visit` with each extent overlapping [lba, lba + count), clipped to the range, in lba order. */
  forEachIn(lba: number, count: number, visit: (piece: Extent) => void): void {
    const end = lba + count;
    this.forEachOverlapping(lba, count, (d, i) => {
      const e = unpack(d, i);
      const from = Math.max(lba, e.lba);
      visit(slice(e, from, Math.min(end, e.lba + e.count) - from));
    });
  }

  /**
   * How many extents the map gains by mapping [lba, lba + count) (`mapping`), or by clearing
   * it: negative when the range covers whole extents, +1 more when it splits one in two.
   */
  growthOf(lba: number, count: number, mapping: boolean): number {
    const end = lba + count;
    let growth = mapping ? 1 : 0;
    this.forEachOverlapping(lba, count, (d, i) => {
      const eLba = d[i * EXTENT_FIELDS + F_LBA]!;
      const eEnd = eLba + d[i * EXTENT_FIELDS + F_COUNT]!;
      // The extent goes, but what reaches out of the range on either side stays.
      growth += (eLba < lba ? 1 : 0) + (eEnd > end ? 1 : 0) - 1;
    });
    return growth;
  }

  /** Calls `visit` with the leaf data and index of each extent overlapping [lba, lba + count), in lba order. */
  private forEachOverlapping(lba: number, count: number, visit: (data: Float64Array, index: number) => void): void {
    const end = lba + count;
    this.seek(lba);
    let leaf: Leaf | undefined = this.foundLeaf;
    let i = Math.max(0, this.foundIndex);
    while (leaf !== undefined) {
      const d = leaf.data;
      for (; i < leaf.n; i++) {
        const eLba = d[i * EXTENT_FIELDS + F_LBA]!;
        if (eLba >= end) return;
        if (eLba + d[i * EXTENT_FIELDS + F_COUNT]! <= lba) continue;
        visit(d, i);
      }
      leaf = leaf.next;
      i = 0;
    }
  }

  /** Extents overlapping the range, clipped. */
  piecesIn(lba: number, count: number): Extent[] {
    const pieces: Extent[] = [];
    this.forEachIn(lba, count, (p) => pieces.push(p));
    return pieces;
  }

  /** Unmaps [lba, lba + count); returns the displaced pieces. */
  clear(lba: number, count: number): Extent[] {
    this.changes++;
    this.seek(lba);
    return this.clearSought(lba, count);
  }

  /** clear(), with seek(lba) just done. */
  private clearSought(lba: number, count: number): Extent[] {
    const end = lba + count;
    const displaced: Extent[] = [];
    // An extent starting before the range: keep its left part, and its right part if it
    // reaches past the range.
    const first = this.foundLeaf;
    const firstIndex = this.foundIndex;
    // Fields are read raw first: most probes find no overlap, and then make no object.
    const fo = firstIndex * EXTENT_FIELDS;
    if (firstIndex >= 0 && first.data[fo + F_LBA]! < lba && first.data[fo + F_LBA]! + first.data[fo + F_COUNT]! > lba) {
      const e = unpack(first.data, firstIndex);
      const eEnd = e.lba + e.count;
      displaced.push(slice(e, lba, Math.min(end, eEnd) - lba));
      pack(slice(e, e.lba, lba - e.lba), this.writable(first), firstIndex);
      if (eEnd > end) {
        this.insert(slice(e, end, eEnd - end));
        return displaced;
      }
    }
    // Extents starting inside the range: drop them, or keep the part past its end. The
    // first probe reuses the seek above (nothing has moved since); a removal moves extents.
    for (let sought = true; ; sought = false) {
      if (!sought) this.seek(lba);
      const index = this.foundIndex;
      let leaf: Leaf | undefined = this.foundLeaf;
      let i = index + 1;
      if (index >= 0 && leaf.data[index * EXTENT_FIELDS + F_LBA]! >= lba) i = index;
      while (leaf !== undefined && i >= leaf.n) {
        leaf = leaf.next;
        i = 0;
      }
      if (leaf === undefined || leaf.data[i * EXTENT_FIELDS + F_LBA]! >= end) return displaced;
      const e = unpack(leaf.data, i);
      const eEnd = e.lba + e.count;
      if (eEnd <= end) {
        displaced.push(e);
        this.removeAt(leaf, i);
      } else {
        // Its start moves right, maybe past the next leaf's separator: re-insert it, so that
        // routing finds it.
        displaced.push(slice(e, e.lba, end - e.lba));
        this.removeAt(leaf, i);
        this.insert(slice(e, end, eEnd - end));
        return displaced;
      }
    }
  }

  /** Maps `extent`, replacing whatever it overlaps; returns the displaced pieces. */
  set(extent: Extent): Extent[] {
    assert(extent.count > 0, 'extent maps at least one sector');
    this.changes++;
    // The common overwrite replaces an extent of exactly the same range: in place.
    const index = this.seekSameRange(extent);
    if (index >= 0) {
      const old = unpack(this.foundLeaf.data, index);
      pack(extent, this.writable(this.foundLeaf), index);
      return [old];
    }
    const displaced = this.clearSought(extent.lba, extent.count);
    this.insert(extent);
    return displaced;
  }

  /**
   * set(), telling `displaced(segment, sectors)` of each piece it replaced instead of
   * returning them: the common overwrite of an extent of the same range makes no object.
   */
  setCounting(extent: Extent, displaced: (segment: number, sectors: number) => void): void {
    assert(extent.count > 0, 'extent maps at least one sector');
    this.changes++;
    const index = this.seekSameRange(extent);
    if (index >= 0) {
      const segment = Math.floor(this.foundLeaf.data[index * EXTENT_FIELDS + F_LOCATION]! / TWO_32);
      pack(extent, this.writable(this.foundLeaf), index);
      displaced(segment, extent.count);
      return;
    }
    for (const e of this.clearSought(extent.lba, extent.count)) displaced(e.segment, e.count);
    this.insert(extent);
  }

  /** Seeks `extent.lba` (for clearSought); the index there of an extent of exactly its range, or -1. */
  private seekSameRange(extent: Extent): number {
    this.seek(extent.lba);
    const index = this.foundIndex;
    if (index < 0) return -1;
    const d = this.foundLeaf.data;
    const o = index * EXTENT_FIELDS;
    return d[o + F_LBA] === extent.lba && d[o + F_COUNT] === extent.count ? index : -1;
  }

  /** Calls `visit` with every extent in lba order. */
  forEach(visit: (e: Extent) => void): void {
    for (let leaf: Leaf | undefined = this.firstLeaf(); leaf !== undefined; leaf = leaf.next) {
      for (let i = 0; i < leaf.n; i++) visit(unpack(leaf.data, i));
    }
  }

  /** Every extent's segment, sector count and lba, in lba order, without making objects. */
  forEachRaw(visit: (segment: number, sectors: number, lba: number) => void): void {
    for (let leaf: Leaf | undefined = this.firstLeaf(); leaf !== undefined; leaf = leaf.next) {
      const d = leaf.data;
      for (let i = 0; i < leaf.n; i++) {
        const o = i * EXTENT_FIELDS;
        visit(Math.floor(d[o + F_LOCATION]! / TWO_32), d[o + F_COUNT]!, d[o + F_LBA]!);
      }
    }
  }

  /** Sets seen[s] for the segment s that each extent's data lies in. */
  markSegments(seen: Uint8Array): void {
    for (let leaf: Leaf | undefined = this.firstLeaf(); leaf !== undefined; leaf = leaf.next) {
      const d = leaf.data;
      for (let o = F_LOCATION; o < leaf.n * EXTENT_FIELDS; o += EXTENT_FIELDS) seen[Math.floor(d[o]! / TWO_32)] = 1;
    }
  }

  /** Iterates all extents in lba order. */
  *all(): IterableIterator<Extent> {
    for (let leaf: Leaf | undefined = this.firstLeaf(); leaf !== undefined; leaf = leaf.next) {
      for (let i = 0; i < leaf.n; i++) yield unpack(leaf.data, i);
    }
  }

  /**
   * The raw fields of every extent, in lba order, as views of the map's own leaves (a
   * leaf's worth each), without a copy. The map must not change from this call until the
   * last is read: a change in between fails an assertion when the iteration resumes.
   */
  rawSlices(): Generator<Float64Array, void, void> {
    return this.slicesUnchangedSince(this.changes);
  }

  /**
   * The extents as they are now, for reading over a while the map goes on changing: O(number
   * of leaves), no copy of the extents. Until release(), the map writes a leaf it shares with
   * the lease only after copying its storage.
   */
  lease(): ExtentLease {
    const datas: Float64Array[] = [];
    const counts: number[] = [];
    for (let leaf: Leaf | undefined = this.firstLeaf(); leaf !== undefined; leaf = leaf.next) {
      if (leaf.n === 0) continue;
      datas.push(leaf.data);
      counts.push(leaf.n);
    }
    this.epoch++;
    this.leases++;
    let held = true;
    return {
      size: this.count,
      rawSlices: function* () {
        assert(held, 'a lease is read before its release');
        for (let i = 0; i < datas.length; i++) yield datas[i]!.subarray(0, counts[i]! * EXTENT_FIELDS);
      },
      release: () => {
        assert(held, 'a lease is released once');
        held = false;
        this.leases--;
      },
    };
  }

  /**
   * A map of the extents as they are now, sharing the leaves' storage: O(number of leaves),
   * no copy of the extents. This map copies a leaf's storage before it next writes it, for
   * good; the frozen map is never written (a snapshot's).
   */
  freeze(): ExtentMap {
    const frozen = new ExtentMap();
    const leaves: Leaf[] = [];
    let prev: Leaf | undefined;
    for (let leaf: Leaf | undefined = this.firstLeaf(); leaf !== undefined; leaf = leaf.next) {
      if (leaf.n === 0) continue;
      // Stamped older than the frozen map's epoch, so that it too copies before any write.
      const shared = new Leaf(0, leaf.data, leaf.keys);
      shared.n = leaf.n;
      shared.prev = prev;
      if (prev) prev.next = shared;
      prev = shared;
      leaves.push(shared);
    }
    frozen.epoch = 1;
    frozen.frozenBelow = 1;
    frozen.build(leaves, this.count);
    this.epoch++;
    this.frozenBelow = this.epoch;
    return frozen;
  }

  /** `leaf`, its storage first replaced by a copy when a lease or a frozen map may share it. */
  private writable(leaf: Leaf): Leaf {
    if (leaf.epoch < this.frozenBelow || (this.leases > 0 && leaf.epoch !== this.epoch)) {
      leaf.data = leaf.data.slice();
      leaf.keys = leaf.keys.slice();
      leaf.epoch = this.epoch;
    }
    return leaf;
  }

  private *slicesUnchangedSince(at: number): Generator<Float64Array, void, void> {
    for (let leaf: Leaf | undefined = this.firstLeaf(); leaf !== undefined; leaf = leaf.next) {
      assert(this.changes === at, 'the extent map is not changed while its raw slices are read');
      yield leaf.data.subarray(0, leaf.n * EXTENT_FIELDS);
    }
    assert(this.changes === at, 'the extent map is not changed while its raw slices are read');
  }

  /**
   * The raw fields of every extent, in lba order, EXTENT_FIELDS numbers each: what a
   * checkpoint stores. `rawLocation` and `rawShape` decode the packed ones.
   */
  exportRaw(): Float64Array {
    const out = new Float64Array(this.count * EXTENT_FIELDS);
    let at = 0;
    for (let leaf: Leaf | undefined = this.firstLeaf(); leaf !== undefined; leaf = leaf.next) {
      out.set(leaf.data.subarray(0, leaf.n * EXTENT_FIELDS), at);
      at += leaf.n * EXTENT_FIELDS;
    }
    assert(at === out.length, 'export covers every extent');
    return out;
  }

  /**
   * Replaces the map with extents given raw, sorted and not overlapping (a checkpoint).
   * Calls `each(segment, sectors, expiresAt, lba, version)` for every extent, so the caller
   * can count live bytes and deadlines in the same pass.
   */
  importRaw(
    raw: Float64Array,
    each?: (segment: number, sectors: number, expiresAt: number, lba: number, version: number) => void,
  ): void {
    assert(raw.length % EXTENT_FIELDS === 0, 'raw extents come in whole records');
    this.changes++;
    const total = raw.length / EXTENT_FIELDS;
    const leaves: Leaf[] = [];
    let prev: Leaf | undefined;
    let lastEnd = -Infinity;
    for (let at = 0; at < total; at += LOAD_FILL) {
      const leaf = new Leaf(this.epoch);
      leaf.n = Math.min(LOAD_FILL, total - at);
      leaf.data.set(raw.subarray(at * EXTENT_FIELDS, (at + leaf.n) * EXTENT_FIELDS));
      for (let i = 0; i < leaf.n; i++) {
        const o = i * EXTENT_FIELDS;
        const lba = leaf.data[o + F_LBA]!;
        leaf.keys[i] = lba;
        const sectors = leaf.data[o + F_COUNT]!;
        assert(lba >= lastEnd && sectors > 0, 'checkpoint extents are sorted and disjoint');
        lastEnd = lba + sectors;
        if (each) {
          each(Math.floor(leaf.data[o + F_LOCATION]! / TWO_32), sectors, leaf.data[o + F_EXPIRES]!, lba, leaf.data[o + F_VERSION]!);
        }
      }
      leaf.prev = prev;
      if (prev) prev.next = leaf;
      prev = leaf;
      leaves.push(leaf);
    }
    this.build(leaves, total);
  }

  /** Makes the map the chain of `leaves` (linked, in lba order, none empty) holding `count` extents, with inner nodes over them. */
  private build(leaves: Leaf[], count: number): void {
    this.count = count;
    if (leaves.length === 0) {
      this.root = new Leaf(this.epoch);
      return;
    }
    let level: Node[] = leaves;
    let firstKeys = leaves.map((leaf) => leaf.keys[0]!);
    while (level.length > 1) {
      const up: Node[] = [];
      const upKeys: number[] = [];
      const per = Math.floor((INNER_CAPACITY * 7) / 8);
      for (let at = 0; at < level.length; at += per) {
        const inner = new Inner();
        const n = Math.min(per, level.length - at);
        for (let i = 0; i < n; i++) {
          inner.children.push(level[at + i]!);
          inner.keys[i] = firstKeys[at + i]!;
        }
        inner.n = n;
        up.push(inner);
        upKeys.push(firstKeys[at]!);
      }
      level = up;
      firstKeys = upKeys;
    }
    this.root = level[0]!;
  }

  /** Decodes one raw extent (for readers of exportRaw output). */
  static unpackRaw(raw: Float64Array, index: number): Extent {
    return unpack(raw, index);
  }

  // -------------------------------------------------------------------------------------
  // Tree mechanics

  private firstLeaf(): Leaf {
    let node = this.root;
    while (node instanceof Inner) node = node.children[0]!;
    return node;
  }

  /**
   * Finds the leaf where `lba` belongs and the last extent there with lba <= it (foundLeaf,
   * foundIndex). With `path`, records the inner nodes on the way down; the path is left
   * empty when the floor lies at the end of the previous leaf (this one starts after lba).
   */
  private seek(lba: number, path?: PathStep[]): void {
    let node = this.root;
    while (node instanceof Inner) {
      let lo = 1;
      let hi = node.n - 1;
      let child = 0;
      while (lo <= hi) {
        const mid = (lo + hi) >> 1;
        if (node.keys[mid]! <= lba) {
          child = mid;
          lo = mid + 1;
        } else {
          hi = mid - 1;
        }
      }
      path?.push({ node, child });
      node = node.children[child]!;
    }
    const keys = node.keys;
    let lo = 0;
    let hi = node.n - 1;
    let index = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (keys[mid]! <= lba) {
        index = mid;
        lo = mid + 1;
      } else {
        hi = mid - 1;
      }
    }
    if (index === -1 && node.prev !== undefined && node.prev.n > 0) {
      this.foundLeaf = node.prev;
      this.foundIndex = node.prev.n - 1;
      if (path !== undefined) path.length = 0;
      return;
    }
    this.foundLeaf = node;
    this.foundIndex = index;
  }

  private insert(e: Extent): void {
    let path: PathStep[] = [];
    this.seek(e.lba, path);
    // seek() may answer with the previous leaf (floor there); insert where routing says.
    let leaf = this.foundLeaf;
    let index = this.foundIndex;
    if (path.length === 0 && this.root instanceof Inner) {
      const routed = this.route(e.lba);
      leaf = routed.leaf;
      path = routed.path;
      index = -1;
      for (let i = 0; i < leaf.n && leaf.keys[i]! <= e.lba; i++) index = i;
    }
    const at = index + 1;
    this.writable(leaf);
    leaf.data.copyWithin((at + 1) * EXTENT_FIELDS, at * EXTENT_FIELDS, leaf.n * EXTENT_FIELDS);
    leaf.keys.copyWithin(at + 1, at, leaf.n);
    pack(e, leaf, at);
    leaf.n++;
    this.count++;
    if (leaf.n === LEAF_CAPACITY) this.splitLeaf(leaf, path);
  }

  /** Descends by routing only (never steps to a neighbour leaf). */
  private route(lba: number): { leaf: Leaf; path: PathStep[] } {
    const path: PathStep[] = [];
    let node = this.root;
    while (node instanceof Inner) {
      let child = 0;
      for (let i = 1; i < node.n && node.keys[i]! <= lba; i++) child = i;
      path.push({ node, child });
      node = node.children[child]!;
    }
    return { leaf: node, path };
  }

  private splitLeaf(leaf: Leaf, path: PathStep[]): void {
    const right = new Leaf(this.epoch);
    const half = leaf.n >> 1;
    right.n = leaf.n - half;
    right.data.set(leaf.data.subarray(half * EXTENT_FIELDS, leaf.n * EXTENT_FIELDS));
    right.keys.set(leaf.keys.subarray(half, leaf.n));
    leaf.n = half;
    right.next = leaf.next;
    if (right.next) right.next.prev = right;
    right.prev = leaf;
    leaf.next = right;
    this.insertChild(path, path.length - 1, right, right.data[F_LBA]!);
  }

  /** Puts `child` (holding lbas from `key` up) right of path[level]'s child, splitting upward. */
  private insertChild(path: PathStep[], level: number, child: Node, key: number): void {
    if (level < 0) {
      const root = new Inner();
      root.children.push(this.root, child);
      root.keys[1] = key;
      root.n = 2;
      this.root = root;
      return;
    }
    const { node, child: at } = path[level]!;
    node.children.splice(at + 1, 0, child);
    node.keys.copyWithin(at + 2, at + 1, node.n);
    node.keys[at + 1] = key;
    node.n++;
    if (node.n < INNER_CAPACITY) return;
    const right = new Inner();
    const half = node.n >> 1;
    right.n = node.n - half;
    for (let i = 0; i < right.n; i++) {
      right.children.push(node.children[half + i]!);
      right.keys[i] = node.keys[half + i]!;
    }
    node.children.length = half;
    node.n = half;
    this.insertChild(path, level - 1, right, right.keys[0]!);
  }

  private removeAt(leaf: Leaf, i: number): void {
    const d = this.writable(leaf).data;
    const lba = d[i * EXTENT_FIELDS + F_LBA]!;
    d.copyWithin(i * EXTENT_FIELDS, (i + 1) * EXTENT_FIELDS, leaf.n * EXTENT_FIELDS);
    leaf.keys.copyWithin(i, i + 1, leaf.n);
    leaf.n--;
    this.count--;
    if (leaf.n > 0 || leaf === this.root) return;
    // Routing by an lba the leaf held leads back to it: that is its path.
    const { leaf: found, path } = this.route(lba);
    assert(found === leaf, 'routing by a held lba finds the leaf');
    if (leaf.prev) leaf.prev.next = leaf.next;
    if (leaf.next) leaf.next.prev = leaf.prev;
    this.removeChild(path, path.length - 1);
  }

  /** Removes path[level]'s child from it; an inner node left empty goes the same way. */
  private removeChild(path: PathStep[], level: number): void {
    const { node, child } = path[level]!;
    node.children.splice(child, 1);
    node.keys.copyWithin(child, child + 1, node.n);
    node.n--;
    if (node.n === 0) {
      if (level === 0) this.root = new Leaf(this.epoch);
      else this.removeChild(path, level - 1);
      return;
    }
    // A lone child under the root: the tree gets shorter.
    while (this.root instanceof Inner && this.root.n === 1) this.root = this.root.children[0]!;
  }
}
