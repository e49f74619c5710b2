// Checkpoint payload: a copy of the maps, so recovery replays only the log written since.
//
// Layout (version 3; little-endian; docs/format.md has it to the byte):
//   0 magic 'ACKP' u32 | 4 version u32 | 8 seq f64 | 16 next seq f64 | 24 segment count u32
//   28 head count u32 | 32 extent count f64 | 40 reserved[8]
//   heads, 16 bytes each: kind u32 | segment u32 | offset u32 | reserved u32
//   segments, 32 bytes each: state u8 | kind u8 | damaged u8 | reserved u8 | erase count u32
//     nonce u32 | write offset u32 | open seq f64 | max seq f64
//   then varints (LEB128): the extents (putExtents), next pool id, the pools (putPool),
//   and the named snapshots: name, version, created at, extents, pools.
//
// The maps are copied whole; varints and shared key prefixes make the copy about a third
// of the fixed-width version 2, which matters because a full store checkpoints often.

import { assert } from '../base/assert.js';
import { EXTENT_FIELDS, ExtentMap, type Extent } from '../ftl/extent-map.js';
import { MAX_KEY_BYTES, META_FIELDS, type RawLeaf } from '../ftl/key-index.js';
import type { SegmentInfo, SegmentState } from '../ftl/segments.js';
import type { SegmentKind } from '../log/format.js';
import { MAX_SEGMENTS } from './limits.js';

const MAGIC = 0x504b4341; // 'ACKP'
const VERSION = 3;
/** The previous payload: every number fixed width. Still read; no longer written. */
const FIXED_WIDTH_VERSION = 2;
const HEADER_BYTES = 48;
const HEAD_BYTES = 16;
const SEGMENT_BYTES = 32;
const EXTENT_BYTES = 48;

const STATES: SegmentState[] = ['free', 'open', 'sealed', 'checkpoint'];

export interface Head {
  kind: SegmentKind;
  segment: number;
  offset: number;
}

export interface SegmentRow {
  state: SegmentState;
  kind: SegmentKind | 0;
  damaged: boolean;
  eraseCount: number;
  nonce: number;
  writeOffset: number;
  openSeq: number;
  maxSeq: number;
}

export interface PoolImage {
  id: number;
  name: string;
  keys: Uint8Array;
  /** Cumulative end of each key in `keys`. */
  ends: Uint32Array;
  meta: Float64Array;
}

export interface SnapshotImage {
  name: string;
  version: number;
  createdAt: number;
  extentsRaw: Float64Array;
  pools: PoolImage[];
}

export interface CheckpointState {
  seq: number;
  nextSeq: number;
  heads: Head[];
  segments: SegmentRow[];
  /** EXTENT_FIELDS numbers per extent, sorted by lba (ExtentMap.importRaw takes it as is). */
  extentsRaw: Float64Array;
  nextPoolId: number;
  pools: PoolImage[];
  snapshots: SnapshotImage[];
}

/** The checkpoint's extents as objects (for tools; the engine loads the raw form). */
export function checkpointExtents(state: CheckpointState): Extent[] {
  const out: Extent[] = [];
  for (let i = 0; i < state.extentsRaw.length / EXTENT_FIELDS; i++) out.push(ExtentMap.unpackRaw(state.extentsRaw, i));
  return out;
}

const LITTLE_ENDIAN = new Uint8Array(new Float64Array([1]).buffer)[7] === 0x3f;

export function checkpointBytes(segmentCount: number, headCount: number, extentCount: number): number {
  return HEADER_BYTES + headCount * HEAD_BYTES + segmentCount * SEGMENT_BYTES + extentCount * EXTENT_BYTES + 16;
}

function pad8(n: number): number {
  return Math.ceil(n / 8) * 8;
}

function poolBytesBound(name: string, n: number, keyBytes: number): number {
  return 24 + pad8(Buffer.byteLength(name)) + pad8(n * 4) + pad8(keyBytes) + n * META_FIELDS * 8;
}

/** A pool for a checkpoint: its entries in key order, in slices (KeyIndex.rawSlices, or one image). */
export interface PoolSource {
  id: number;
  name: string;
  count: number;
  keyBytes: number;
  slices: Iterable<RawLeaf>;
}

/** A block map's extents, read from its own leaves as the encoding reaches them. */
export function extentSource(map: { size: number; rawSlices(): Iterable<Float64Array> }): ExtentSource {
  return { count: map.size, slices: map.rawSlices() };
}

/** A pool's index (live or a frozen view), read from its own leaves as the encoding reaches them. */
export function poolSource(id: number, name: string, index: { size: number; keyBytes: number; rawSlices(): Iterable<RawLeaf> }): PoolSource {
  return { id, name, count: index.size, keyBytes: index.keyBytes, slices: index.rawSlices() };
}

/** A named snapshot for a checkpoint: its maps as sources. */
export interface SnapshotSource {
  name: string;
  version: number;
  createdAt: number;
  extents: ExtentSource;
  pools: PoolSource[];
}

/** A snapshot image as a source of one slice per map. */
function snapshotSourceOf(image: SnapshotImage): SnapshotSource {
  const extents = { count: image.extentsRaw.length / EXTENT_FIELDS, slices: [image.extentsRaw] };
  return { name: image.name, version: image.version, createdAt: image.createdAt, extents, pools: image.pools.map(poolSourceOf) };
}

function snapshotBytesBound(s: SnapshotSource): number {
  let bytes = 32 + pad8(Buffer.byteLength(s.name)) + s.extents.count * EXTENT_FIELDS * 8;
  for (const pool of s.pools) bytes += poolBytesBound(pool.name, pool.count, pool.keyBytes);
  return bytes;
}

/** A pool image as a source of one slice. */
function poolSourceOf(image: PoolImage): PoolSource {
  const n = image.ends.length;
  assert(image.meta.length === n * META_FIELDS, 'a pool image has metadata for each key');
  return { id: image.id, name: image.name, count: n, keyBytes: image.keys.length, slices: [{ n, keys: image.keys, ends: image.ends, meta: image.meta }] };
}

export function encodeCheckpoint(
  seq: number,
  nextSeq: number,
  heads: readonly Head[],
  segments: readonly SegmentInfo[],
  extentsRaw: Float64Array,
  nextPoolId: number,
  pools: readonly PoolImage[],
  snapshots: readonly SnapshotImage[],
): Buffer {
  const extents = { count: extentsRaw.length / EXTENT_FIELDS, slices: [extentsRaw] };
  const steps = encodeCheckpointInSteps(seq, nextSeq, heads, segments, extents, nextPoolId, pools.map(poolSourceOf), snapshots.map(snapshotSourceOf));
  for (;;) {
    const step = steps.next();
    if (step.done === true) return step.value;
  }
}

/**
 * Extents or keys encoded between two pauses of encodeCheckpointInSteps: a quarter of a
 * millisecond's work or so, as commits written meanwhile wait a step at each of their turns
 * of the event loop.
 */
export const CHECKPOINT_STEP_ENTRIES = 4096;

/** The block map's extents for a checkpoint: how many, and their raw fields in lba order, in slices. */
export interface ExtentSource {
  count: number;
  slices: Iterable<Float64Array>;
}

/**
 * encodeCheckpoint, pausing (yielding) after every CHECKPOINT_STEP_ENTRIES extents or keys;
 * returns the same payload. A store with a million extents takes 50 – 70 ms to encode, and
 * twice that into fresh memory: the engine lets the event loop turn at each pause, so that commits, reads and
 * replies are not held up for all of it. The segment rows are read before the first pause;
 * the extents and keys as the encoding reaches them, so their sources must not change until
 * it is done (the engine gives it leases of its maps: ExtentMap.lease, KeyIndex.lease).
 *
 * The payload is laid out in `spare` when it is large enough to hold the bound, else in a
 * buffer of its own (never a pooled one): memory written for the first time costs about as
 * much as the encoding itself (page faults: 40 ms of 80 for a million extents), so the engine
 * hands back the buffer of its last checkpoint.
 */
export function* encodeCheckpointInSteps(
  seq: number,
  nextSeq: number,
  heads: readonly Head[],
  segments: readonly SegmentInfo[],
  extents: ExtentSource,
  nextPoolId: number,
  pools: readonly PoolSource[],
  snapshots: readonly SnapshotSource[],
  spare?: Buffer,
): Generator<void, Buffer, void> {
  const extentCount = extents.count;
  // The fixed-width sizes bound the compact ones (see MAX_EXTENT_VARINT_BYTES): one
  // allocation, never a resize.
  let poolBytes = 0;
  for (const pool of pools) poolBytes += poolBytesBound(pool.name, pool.count, pool.keyBytes);
  for (const snapshot of snapshots) poolBytes += snapshotBytesBound(snapshot);
  const bound = checkpointBytes(segments.length, heads.length, extentCount) + poolBytes + VARINT_SLACK_BYTES;
  const buf = spare !== undefined && spare.length >= bound ? spare : Buffer.allocUnsafeSlow(bound);
  buf.fill(0, 0, HEADER_BYTES);
  buf.writeUInt32LE(MAGIC, 0);
  buf.writeUInt32LE(VERSION, 4);
  buf.writeDoubleLE(seq, 8);
  buf.writeDoubleLE(nextSeq, 16);
  buf.writeUInt32LE(segments.length, 24);
  buf.writeUInt32LE(heads.length, 28);
  buf.writeDoubleLE(extentCount, 32);
  let p = HEADER_BYTES;
  for (const h of heads) {
    buf.writeUInt32LE(h.kind, p);
    buf.writeUInt32LE(h.segment, p + 4);
    buf.writeUInt32LE(h.offset, p + 8);
    buf.writeUInt32LE(0, p + 12);
    p += HEAD_BYTES;
  }
  for (const s of segments) {
    buf[p] = STATES.indexOf(s.state);
    buf[p + 1] = s.kind;
    buf[p + 2] = s.damaged ? 1 : 0;
    buf[p + 3] = 0;
    buf.writeUInt32LE(s.eraseCount, p + 4);
    buf.writeUInt32LE(s.nonce >>> 0, p + 8);
    buf.writeUInt32LE(s.writeOffset, p + 12);
    buf.writeDoubleLE(s.openSeq, p + 16);
    buf.writeDoubleLE(s.maxSeq, p + 24);
    p += SEGMENT_BYTES;
  }
  const w = new VarintWriter(buf, p);
  yield* putExtents(w, extents);
  w.uint(nextPoolId);
  w.uint(pools.length);
  for (const pool of pools) yield* putPool(w, pool);
  w.uint(snapshots.length);
  for (const snapshot of snapshots) {
    w.bytes(Buffer.from(snapshot.name, 'utf8'));
    w.uint(snapshot.version);
    w.uint(snapshot.createdAt);
    yield* putExtents(w, snapshot.extents);
    w.uint(snapshot.pools.length);
    for (const pool of snapshot.pools) yield* putPool(w, pool);
  }
  assert(w.at <= buf.length, 'the compact checkpoint fits the fixed-width bound');
  return buf.subarray(0, w.at);
}

/**
 * Extents as varints: the gap from the previous extent's end, count, version, segment, data
 * offset, op sectors, first sector, expires at. Sorted and disjoint, so gaps are small.
 * Pauses after every CHECKPOINT_STEP_ENTRIES.
 */
function* putExtents(w: VarintWriter, extents: ExtentSource): Generator<void, void, void> {
  w.uint(extents.count);
  let end = 0;
  const written = yield* inSteps(
    extents.slices,
    (slice) => slice.length / EXTENT_FIELDS,
    (slice, from, to) => (end = putExtentRange(w, slice, from, to, end)),
  );
  assert(written === extents.count, 'the slices hold every extent counted');
}

/**
 * Calls put(slice, from, to) over the entries of every slice (`entries` tells how many a
 * slice holds), in ranges that pause after every CHECKPOINT_STEP_ENTRIES entries across
 * slices; returns how many entries it put.
 */
function* inSteps<S>(slices: Iterable<S>, entries: (slice: S) => number, put: (slice: S, from: number, to: number) => void): Generator<void, number, void> {
  let written = 0;
  let sincePause = 0;
  for (const slice of slices) {
    const n = entries(slice);
    for (let from = 0; from < n; ) {
      if (sincePause === CHECKPOINT_STEP_ENTRIES) {
        yield;
        sincePause = 0;
      }
      const to = Math.min(n, from + CHECKPOINT_STEP_ENTRIES - sincePause);
      put(slice, from, to);
      sincePause += to - from;
      written += to - from;
      from = to;
    }
  }
  return written;
}

/** Extents [from, to) of `raw`, the one before `from` ending at `end`; returns where the last ends. */
function putExtentRange(w: VarintWriter, raw: Float64Array, from: number, to: number, end: number): number {
  // A checkpoint's hottest loop: the position stays in a local, not the writer's field.
  const buf = w.buf;
  let p = w.at;
  for (let o = from * EXTENT_FIELDS; o < to * EXTENT_FIELDS; o += EXTENT_FIELDS) {
    const lba = raw[o]!;
    const count = raw[o + 1]!;
    assert(lba >= end && count > 0, 'checkpoint extents are sorted, disjoint and not empty');
    p = putVarint(buf, p, lba - end);
    p = putVarint(buf, p, count);
    p = putVarint(buf, p, raw[o + 2]!);
    const location = raw[o + 3]!;
    const segment = Math.floor(location / TWO_32);
    p = putVarint(buf, p, segment);
    p = putVarint(buf, p, location - segment * TWO_32);
    const shape = raw[o + 4]!;
    const opSectors = Math.floor(shape / TWO_24);
    p = putVarint(buf, p, opSectors);
    p = putVarint(buf, p, shape - opSectors * TWO_24);
    p = putVarint(buf, p, raw[o + 5]!);
    end = lba + count;
  }
  w.at = p;
  return end;
}

/**
 * A pool as varints: id, name, key count, key bytes, then per key the bytes it shares with
 * the key before it (keys are sorted, so prefixes repeat; the key before may lie in the
 * slice before), the rest of the key, and its metadata with the location split in two. The
 * cache position is not stored. Pauses after every CHECKPOINT_STEP_ENTRIES keys.
 */
function* putPool(w: VarintWriter, pool: PoolSource): Generator<void, void, void> {
  w.uint(pool.id);
  w.bytes(Buffer.from(pool.name, 'utf8'));
  w.uint(pool.count);
  w.uint(pool.keyBytes);
  const prev: PreviousKey = { keys: NO_KEY, start: 0, end: 0 };
  let keyBytes = 0;
  const written = yield* inSteps(
    pool.slices,
    (slice) => {
      assert(slice.meta.length >= slice.n * META_FIELDS && slice.ends.length >= slice.n, 'a slice has an end and metadata for each key');
      keyBytes += slice.n === 0 ? 0 : slice.ends[slice.n - 1]!;
      return slice.n;
    },
    (slice, from, to) => putKeyRange(w, slice, from, to, prev),
  );
  assert(written === pool.count && keyBytes === pool.keyBytes, 'the slices hold every key counted');
}

/** The key before the next one put: where its bytes lie. */
interface PreviousKey {
  keys: Uint8Array;
  start: number;
  end: number;
}

const NO_KEY = new Uint8Array(0);

/** Keys [from, to) of `slice`, each against the key before it (`prev`, which it moves along). */
function putKeyRange(w: VarintWriter, slice: RawLeaf, from: number, to: number, prev: PreviousKey): void {
  const keys = slice.keys;
  let prevKeys = prev.keys;
  let prevStart = prev.start;
  let prevEnd = prev.end;
  for (let i = from; i < to; i++) {
    const start = i === 0 ? 0 : slice.ends[i - 1]!;
    const end = slice.ends[i]!;
    let shared = 0;
    const most = Math.min(end - start, prevEnd - prevStart);
    while (shared < most && keys[start + shared] === prevKeys[prevStart + shared]) shared++;
    w.uint(shared);
    w.range(keys, start + shared, end);
    const o = i * META_FIELDS;
    w.uint(slice.meta[o]!);
    w.uint(slice.meta[o + 1]!);
    const location = slice.meta[o + 2]!;
    const segment = Math.floor(location / TWO_32);
    w.uint(segment);
    w.uint(location - segment * TWO_32);
    w.uint(slice.meta[o + 3]!);
    prevKeys = keys;
    prevStart = start;
    prevEnd = end;
  }
  prev.keys = prevKeys;
  prev.start = prevStart;
  prev.end = prevEnd;
}

/** The counts between the sections may take a few bytes more than their fixed-width fields. */
const VARINT_SLACK_BYTES = 16;
const TWO_24 = 2 ** 24;
const TWO_32 = 2 ** 32;

/**
 * Writes `v` (a non-negative integer up to 2^53) at buf[p] as a LEB128 varint, eight bytes
 * at most; returns the position after it.
 */
function putVarint(buf: Buffer, p: number, v: number): number {
  if (v < 128 && v >>> 0 === v) {
    buf[p] = v;
    return p + 1;
  }
  if (v < 2 ** 28 && v >>> 0 === v) {
    // Versions, offsets and lengths: two to four bytes, unrolled.
    buf[p++] = (v & 127) | 128;
    if (v < 2 ** 14) {
      buf[p] = v >>> 7;
      return p + 1;
    }
    buf[p++] = ((v >>> 7) & 127) | 128;
    if (v < 2 ** 21) {
      buf[p] = v >>> 14;
      return p + 1;
    }
    buf[p++] = ((v >>> 14) & 127) | 128;
    buf[p] = v >>> 21;
    return p + 1;
  }
  assert(Number.isSafeInteger(v) && v >= 0, 'a checkpoint varint is a non-negative safe integer');
  while (v > 0x7fffffff) {
    buf[p++] = (v % 128) | 128;
    v = Math.floor(v / 128);
  }
  while (v >= 128) {
    buf[p++] = (v & 127) | 128;
    v >>>= 7;
  }
  buf[p] = v;
  return p + 1;
}

/** LEB128 varints (putVarint) and the rest of a checkpoint's fields, appended to one buffer. */
class VarintWriter {
  constructor(
    readonly buf: Buffer,
    public at: number,
  ) {}

  uint(v: number): void {
    this.at = putVarint(this.buf, this.at, v);
  }

  /** A length, then the bytes. */
  bytes(b: Uint8Array): void {
    this.range(b, 0, b.length);
  }

  /** A length, then b[from, to): short keys by hand, which beats making a view of each. */
  range(b: Uint8Array, from: number, to: number): void {
    this.uint(to - from);
    const buf = this.buf;
    if (to - from > 32) {
      buf.set(b.subarray(from, to), this.at);
      this.at += to - from;
      return;
    }
    let p = this.at;
    for (let i = from; i < to; i++) buf[p++] = b[i]!;
    this.at = p;
  }
}

/** A payload that does not parse; decodeCheckpoint turns it into undefined. */
class Malformed extends Error {}

class VarintReader {
  constructor(
    readonly buf: Buffer,
    public at: number,
  ) {}

  uint(): number {
    const b = this.buf[this.at];
    if (b !== undefined && b < 128) {
      this.at++;
      return b;
    }
    return this.uintLong();
  }

  private uintLong(): number {
    const buf = this.buf;
    let p = this.at;
    if (p + 4 <= buf.length) {
      // Two to four bytes, unrolled.
      const b0 = buf[p]!;
      const b1 = buf[p + 1]!;
      if (b1 < 128) {
        this.at = p + 2;
        return (b0 & 127) | (b1 << 7);
      }
      const b2 = buf[p + 2]!;
      if (b2 < 128) {
        this.at = p + 3;
        return (b0 & 127) | ((b1 & 127) << 7) | (b2 << 14);
      }
      const b3 = buf[p + 3]!;
      if (b3 < 128) {
        this.at = p + 4;
        return (b0 & 127) | ((b1 & 127) << 7) | ((b2 & 127) << 14) | (b3 << 21);
      }
    }
    if (p >= buf.length) throw new Malformed();
    let b = buf[p++]!;
    let v = b & 127;
    let scale = 128;
    while (b >= 128) {
      if (p >= buf.length || scale > 2 ** 49) throw new Malformed();
      b = buf[p++]!;
      v += (b & 127) * scale;
      scale *= 128;
    }
    if (v > Number.MAX_SAFE_INTEGER) throw new Malformed();
    this.at = p;
    return v;
  }

  /** A length, then that many bytes copied into `into` at `at`; returns the length. */
  copyInto(into: Uint8Array, at: number, most: number): number {
    const n = this.uint();
    if (n > most || n > this.buf.length - this.at) throw new Malformed();
    const buf = this.buf;
    const p = this.at;
    if (n > 32) {
      into.set(buf.subarray(p, p + n), at);
    } else {
      for (let i = 0; i < n; i++) into[at + i] = buf[p + i]!;
    }
    this.at = p + n;
    return n;
  }

  /** A length, then that many bytes (a view into the payload). */
  bytes(): Buffer {
    const n = this.uint();
    if (n > this.buf.length - this.at) throw new Malformed();
    const b = this.buf.subarray(this.at, this.at + n);
    this.at += n;
    return b;
  }

  /** Bytes left; a count that claims more entries than could fit is refused before allocating. */
  left(): number {
    return this.buf.length - this.at;
  }
}

/**
 * Returns undefined when the payload is malformed. Reads version 3 (compact) and version 2
 * (fixed width, written by earlier builds).
 */
export function decodeCheckpoint(buf: Buffer): CheckpointState | undefined {
  if (buf.length < HEADER_BYTES || buf.readUInt32LE(0) !== MAGIC) return undefined;
  const version = buf.readUInt32LE(4);
  if (version !== VERSION && version !== FIXED_WIDTH_VERSION) return undefined;
  const segmentCount = buf.readUInt32LE(24);
  const headCount = buf.readUInt32LE(28);
  const extentCount = buf.readDoubleLE(32);
  if (!Number.isSafeInteger(extentCount) || extentCount < 0) return undefined;
  if (buf.length < HEADER_BYTES + headCount * HEAD_BYTES + segmentCount * SEGMENT_BYTES) return undefined;
  const heads: Head[] = [];
  let p = HEADER_BYTES;
  for (let i = 0; i < headCount; i++, p += HEAD_BYTES) {
    heads.push({ kind: buf.readUInt32LE(p) as SegmentKind, segment: buf.readUInt32LE(p + 4), offset: buf.readUInt32LE(p + 8) });
  }
  const segments: SegmentRow[] = [];
  for (let i = 0; i < segmentCount; i++, p += SEGMENT_BYTES) {
    const state = STATES[buf[p]!];
    if (state === undefined) return undefined;
    segments.push({
      state,
      kind: buf[p + 1] as SegmentKind | 0,
      damaged: buf[p + 2] === 1,
      eraseCount: buf.readUInt32LE(p + 4),
      nonce: buf.readUInt32LE(p + 8),
      writeOffset: buf.readUInt32LE(p + 12),
      openSeq: buf.readDoubleLE(p + 16),
      maxSeq: buf.readDoubleLE(p + 24),
    });
  }
  const seqs = { seq: buf.readDoubleLE(8), nextSeq: buf.readDoubleLE(16), heads, segments };
  if (version === FIXED_WIDTH_VERSION) {
    if (buf.length < checkpointBytes(segmentCount, headCount, extentCount)) return undefined;
    const extentsRaw = new Float64Array(extentCount * EXTENT_FIELDS);
    if (LITTLE_ENDIAN) {
      new Uint8Array(extentsRaw.buffer).set(buf.subarray(p, p + extentCount * EXTENT_BYTES));
    } else {
      for (let i = 0; i < extentsRaw.length; i++) extentsRaw[i] = buf.readDoubleLE(p + i * 8);
    }
    p += extentCount * EXTENT_BYTES;
    const pools = decodePools(buf, p);
    if (pools === undefined) return undefined;
    return { ...seqs, extentsRaw, ...pools };
  }
  try {
    const r = new VarintReader(buf, p);
    const extentsRaw = readExtents(r);
    if (extentsRaw.length !== extentCount * EXTENT_FIELDS) return undefined;
    const nextPoolId = r.uint();
    const pools = readPools(r);
    const snapshotCount = r.uint();
    if (snapshotCount > r.left()) return undefined;
    const snapshots: SnapshotImage[] = [];
    for (let i = 0; i < snapshotCount; i++) {
      const name = r.bytes().toString('utf8');
      const snapshotVersion = r.uint();
      const createdAt = r.uint();
      const snapshotExtents = readExtents(r);
      snapshots.push({ name, version: snapshotVersion, createdAt, extentsRaw: snapshotExtents, pools: readPools(r) });
    }
    if (r.at !== buf.length) return undefined;
    return { ...seqs, extentsRaw, nextPoolId, pools, snapshots };
  } catch (error) {
    if (error instanceof Malformed) return undefined;
    throw error;
  }
}

/** The smallest encoded extent and key: one byte per varint. */
const MIN_EXTENT_VARINT_BYTES = 8;
const MIN_KEY_VARINT_BYTES = 7;

function readExtents(r: VarintReader): Float64Array {
  const count = r.uint();
  if (count * MIN_EXTENT_VARINT_BYTES > r.left()) throw new Malformed();
  const raw = new Float64Array(count * EXTENT_FIELDS);
  let end = 0;
  for (let o = 0; o < raw.length; o += EXTENT_FIELDS) {
    const lba = end + r.uint();
    const sectors = r.uint();
    const version = r.uint();
    const segment = r.uint();
    const offset = r.uint();
    const opSectors = r.uint();
    const firstSector = r.uint();
    const expiresAt = r.uint();
    if (sectors === 0 || offset >= TWO_32 || segment >= MAX_SEGMENTS || opSectors >= TWO_24 || firstSector >= TWO_24) throw new Malformed();
    end = lba + sectors;
    if (end > Number.MAX_SAFE_INTEGER) throw new Malformed();
    raw[o] = lba;
    raw[o + 1] = sectors;
    raw[o + 2] = version;
    raw[o + 3] = segment * TWO_32 + offset;
    raw[o + 4] = opSectors * TWO_24 + firstSector;
    raw[o + 5] = expiresAt;
  }
  return raw;
}

function readPools(r: VarintReader): PoolImage[] {
  const count = r.uint();
  if (count > r.left()) throw new Malformed();
  const pools: PoolImage[] = [];
  for (let i = 0; i < count; i++) pools.push(readPool(r));
  return pools;
}

function readPool(r: VarintReader): PoolImage {
  const id = r.uint();
  const name = r.bytes().toString('utf8');
  const n = r.uint();
  const keyBytes = r.uint();
  if (n * MIN_KEY_VARINT_BYTES > r.left() || keyBytes > n * MAX_KEY_BYTES) throw new Malformed();
  const keys = new Uint8Array(keyBytes);
  const ends = new Uint32Array(n);
  const meta = new Float64Array(n * META_FIELDS);
  let at = 0;
  let prevStart = 0;
  for (let i = 0; i < n; i++) {
    const shared = r.uint();
    if (shared > at - prevStart) throw new Malformed();
    if (shared > 0) keys.copyWithin(at, prevStart, prevStart + shared);
    const rest = r.copyInto(keys, at + shared, keyBytes - at - shared);
    prevStart = at;
    at += shared + rest;
    ends[i] = at;
    const o = i * META_FIELDS;
    meta[o] = r.uint();
    meta[o + 1] = r.uint();
    const segment = r.uint();
    const offset = r.uint();
    if (segment >= MAX_SEGMENTS || offset >= TWO_32) throw new Malformed();
    meta[o + 2] = segment * TWO_32 + offset;
    meta[o + 3] = r.uint();
    meta[o + 4] = -1;
  }
  if (at !== keyBytes) throw new Malformed();
  return { id, name, keys, ends, meta };
}

function decodePools(buf: Buffer, at: number): { nextPoolId: number; pools: PoolImage[]; snapshots: SnapshotImage[] } | undefined {
  if (at + 16 > buf.length) return undefined;
  const nextPoolId = buf.readUInt32LE(at);
  const decoded = decodePoolList(buf, at + 8, buf.readUInt32LE(at + 4));
  if (decoded === undefined) return undefined;
  let p = decoded.end;
  if (p + 8 > buf.length) return undefined;
  const count = buf.readUInt32LE(p);
  p += 8;
  const snapshots: SnapshotImage[] = [];
  for (let i = 0; i < count; i++) {
    if (p + 32 > buf.length) return undefined;
    const nameBytes = buf.readUInt32LE(p);
    const poolCount = buf.readUInt32LE(p + 4);
    const extentCount = buf.readDoubleLE(p + 24);
    if (!Number.isSafeInteger(extentCount) || extentCount < 0) return undefined;
    const version = buf.readDoubleLE(p + 8);
    const createdAt = buf.readDoubleLE(p + 16);
    p += 32;
    if (p + pad8(nameBytes) + extentCount * EXTENT_BYTES > buf.length) return undefined;
    const name = buf.toString('utf8', p, p + nameBytes);
    p += pad8(nameBytes);
    const extentsRaw = new Float64Array(extentCount * EXTENT_FIELDS);
    if (LITTLE_ENDIAN) new Uint8Array(extentsRaw.buffer).set(buf.subarray(p, p + extentCount * EXTENT_BYTES));
    else for (let k = 0; k < extentsRaw.length; k++) extentsRaw[k] = buf.readDoubleLE(p + k * 8);
    p += extentCount * EXTENT_BYTES;
    const pools = decodePoolList(buf, p, poolCount);
    if (pools === undefined) return undefined;
    p = pools.end;
    snapshots.push({ name, version, createdAt, extentsRaw, pools: pools.pools });
  }
  if (p !== buf.length) return undefined;
  return { nextPoolId, pools: decoded.pools, snapshots };
}

function decodePoolList(buf: Buffer, at: number, count: number): { pools: PoolImage[]; end: number } | undefined {
  let p = at;
  const pools: PoolImage[] = [];
  for (let i = 0; i < count; i++) {
    if (p + 24 > buf.length) return undefined;
    const id = buf.readUInt32LE(p);
    const nameBytes = buf.readUInt32LE(p + 4);
    const n = buf.readDoubleLE(p + 8);
    const keyBytes = buf.readDoubleLE(p + 16);
    if (!Number.isSafeInteger(n) || !Number.isSafeInteger(keyBytes) || n < 0 || keyBytes < 0) return undefined;
    p += 24;
    const image: PoolImage = { id, name: '', keys: new Uint8Array(0), ends: new Uint32Array(n), meta: new Float64Array(n * META_FIELDS) };
    if (p + pad8(nameBytes) + pad8(n * 4) + pad8(keyBytes) + n * META_FIELDS * 8 > buf.length) return undefined;
    image.name = buf.toString('utf8', p, p + nameBytes);
    p += pad8(nameBytes);
    if (LITTLE_ENDIAN && (buf.byteOffset + p) % 4 === 0) image.ends.set(new Uint32Array(buf.buffer, buf.byteOffset + p, n));
    else for (let k = 0; k < n; k++) image.ends[k] = buf.readUInt32LE(p + k * 4);
    p += pad8(n * 4);
    image.keys = buf.subarray(p, p + keyBytes);
    p += pad8(keyBytes);
    if (LITTLE_ENDIAN) new Uint8Array(image.meta.buffer).set(buf.subarray(p, p + n * META_FIELDS * 8));
    else for (let k = 0; k < n * META_FIELDS; k++) image.meta[k] = buf.readDoubleLE(p + k * 8);
    p += n * META_FIELDS * 8;
    if (n > 0 && image.ends[n - 1] !== keyBytes) return undefined;
    pools.push(image);
  }
  return { pools, end: p };
}
