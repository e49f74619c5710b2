// Checkpoint payload: a copy of the maps, so recovery replays only the log written since.
//
// Layout (little-endian):
//   0 magic 'ACKP' u32 | 4 version u32 | 8 seq f64 | 16 next seq f64 | 24 segment count u32
//   28 head count u32 | 32 extent count f64 | 40 reserved[8]
//   heads, 16 bytes each: kind u32 | segment u32 | offset u32 | reserved u32
//   segments, 32 bytes each: state u8 | kind u8 | damaged u8 | reserved u8 | erase count u32
//     nonce u32 | write offset u32 | open seq f64 | max seq f64
//   extents, 48 bytes each, six f64 (the extent map's own leaf layout, so loading is a copy):
//     lba | count | version | segment × 2^32 + data offset | op sectors × 2^24 + first sector
//     | expires at
//   pools: next pool id u32 | pool count u32, then for each pool:
//     id u32 | name bytes u32 | key count f64 | key bytes f64 | name (UTF-8, zero-padded to 8)
//     | key ends u32 × count (cumulative; zero-padded to 8) | keys (zero-padded to 8)
//     | metadata f64 × META_FIELDS × count: version | expires at | segment × 2^32 + data
//       offset | value bytes | (a cache position, meaningless on disk: written as -1)
//   named snapshots: count u32 | reserved u32, then for each:
//     name bytes u32 | pool count u32 | version f64 | created at f64 | extent count f64
//     | name (zero-padded to 8) | extents (48 bytes each, as above) | pools (as above)

import { assert } from '../base/assert.js';
import { EXTENT_FIELDS, ExtentMap, type Extent } from '../ftl/extent-map.js';
import { META_FIELDS } from '../ftl/key-index.js';
import type { SegmentInfo, SegmentState } from '../ftl/segments.js';
import type { SegmentKind } from '../log/format.js';

const MAGIC = 0x504b4341; // 'ACKP'
const VERSION = 2;
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

function snapshotImageBytes(s: SnapshotImage): number {
  let bytes = 32 + pad8(Buffer.byteLength(s.name)) + s.extentsRaw.length * 8;
  for (const pool of s.pools) bytes += poolImageBytes(pool);
  return bytes;
}

function pad8(n: number): number {
  return Math.ceil(n / 8) * 8;
}

function poolImageBytes(p: PoolImage): number {
  const n = p.ends.length;
  return 24 + pad8(Buffer.byteLength(p.name)) + pad8(n * 4) + pad8(p.keys.length) + n * META_FIELDS * 8;
}

function putBytes(buf: Buffer, at: number, bytes: Uint8Array): number {
  buf.set(bytes, at);
  return at + pad8(bytes.length);
}

function putU32s(buf: Buffer, at: number, values: Uint32Array): number {
  for (let i = 0; i < values.length; i++) buf.writeUInt32LE(values[i]!, at + i * 4);
  return at + pad8(values.length * 4);
}

function putF64s(buf: Buffer, at: number, values: Float64Array): number {
  if (LITTLE_ENDIAN) buf.set(new Uint8Array(values.buffer, values.byteOffset, values.byteLength), at);
  else for (let i = 0; i < values.length; i++) buf.writeDoubleLE(values[i]!, at + i * 8);
  return at + values.length * 8;
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
  const extentCount = extentsRaw.length / EXTENT_FIELDS;
  let poolBytes = 0;
  for (const pool of pools) poolBytes += poolImageBytes(pool);
  for (const snapshot of snapshots) poolBytes += snapshotImageBytes(snapshot);
  const buf = Buffer.alloc(checkpointBytes(segments.length, heads.length, extentCount) + poolBytes);
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
    p += HEAD_BYTES;
  }
  for (const s of segments) {
    buf[p] = STATES.indexOf(s.state);
    buf[p + 1] = s.kind;
    buf[p + 2] = s.damaged ? 1 : 0;
    buf.writeUInt32LE(s.eraseCount, p + 4);
    buf.writeUInt32LE(s.nonce >>> 0, p + 8);
    buf.writeUInt32LE(s.writeOffset, p + 12);
    buf.writeDoubleLE(s.openSeq, p + 16);
    buf.writeDoubleLE(s.maxSeq, p + 24);
    p += SEGMENT_BYTES;
  }
  if (LITTLE_ENDIAN) {
    buf.set(new Uint8Array(extentsRaw.buffer, extentsRaw.byteOffset, extentsRaw.byteLength), p);
  } else {
    for (let i = 0; i < extentsRaw.length; i++) buf.writeDoubleLE(extentsRaw[i]!, p + i * 8);
  }
  p += extentCount * EXTENT_BYTES;
  buf.writeUInt32LE(nextPoolId, p);
  buf.writeUInt32LE(pools.length, p + 4);
  p += 8;
  for (const pool of pools) p = putPool(buf, p, pool);
  buf.writeUInt32LE(snapshots.length, p);
  p += 8;
  for (const snapshot of snapshots) {
    const name = Buffer.from(snapshot.name, 'utf8');
    buf.writeUInt32LE(name.length, p);
    buf.writeUInt32LE(snapshot.pools.length, p + 4);
    buf.writeDoubleLE(snapshot.version, p + 8);
    buf.writeDoubleLE(snapshot.createdAt, p + 16);
    buf.writeDoubleLE(snapshot.extentsRaw.length / EXTENT_FIELDS, p + 24);
    p = putBytes(buf, p + 32, name);
    p = putF64s(buf, p, snapshot.extentsRaw);
    for (const pool of snapshot.pools) p = putPool(buf, p, pool);
  }
  assert(p === buf.length, 'checkpoint holds exactly the extents, pools and snapshots counted');
  return buf;
}

function putPool(buf: Buffer, at: number, pool: PoolImage): number {
  const name = Buffer.from(pool.name, 'utf8');
  const n = pool.ends.length;
  assert(pool.meta.length === n * META_FIELDS, 'a pool image has metadata for each key');
  buf.writeUInt32LE(pool.id, at);
  buf.writeUInt32LE(name.length, at + 4);
  buf.writeDoubleLE(n, at + 8);
  buf.writeDoubleLE(pool.keys.length, at + 16);
  let p = putBytes(buf, at + 24, name);
  p = putU32s(buf, p, pool.ends);
  p = putBytes(buf, p, pool.keys);
  const metaAt = p;
  p = putF64s(buf, p, pool.meta);
  for (let i = 0; i < n; i++) buf.writeDoubleLE(-1, metaAt + (i * META_FIELDS + META_FIELDS - 1) * 8);
  return p;
}

/** Returns undefined when the payload is malformed. */
export function decodeCheckpoint(buf: Buffer): CheckpointState | undefined {
  if (buf.length < HEADER_BYTES || buf.readUInt32LE(0) !== MAGIC || buf.readUInt32LE(4) !== VERSION) return undefined;
  const segmentCount = buf.readUInt32LE(24);
  const headCount = buf.readUInt32LE(28);
  const extentCount = buf.readDoubleLE(32);
  if (!Number.isSafeInteger(extentCount) || buf.length < checkpointBytes(segmentCount, headCount, extentCount)) return undefined;
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
  const extentsRaw = new Float64Array(extentCount * EXTENT_FIELDS);
  if (LITTLE_ENDIAN) {
    new Uint8Array(extentsRaw.buffer).set(buf.subarray(p, p + extentCount * EXTENT_BYTES));
  } else {
    for (let i = 0; i < extentsRaw.length; i++) extentsRaw[i] = buf.readDoubleLE(p + i * 8);
  }
  p += extentCount * EXTENT_BYTES;
  const pools = decodePools(buf, p);
  if (pools === undefined) return undefined;
  return { seq: buf.readDoubleLE(8), nextSeq: buf.readDoubleLE(16), heads, segments, extentsRaw, ...pools };
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
