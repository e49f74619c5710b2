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

import { assert } from '../base/assert.js';
import { EXTENT_FIELDS, ExtentMap, type Extent } from '../ftl/extent-map.js';
import type { SegmentInfo, SegmentState } from '../ftl/segments.js';
import type { SegmentKind } from '../log/format.js';

const MAGIC = 0x504b4341; // 'ACKP'
const VERSION = 1;
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

export interface CheckpointState {
  seq: number;
  nextSeq: number;
  heads: Head[];
  segments: SegmentRow[];
  /** EXTENT_FIELDS numbers per extent, sorted by lba (ExtentMap.importRaw takes it as is). */
  extentsRaw: Float64Array;
}

/** The checkpoint's extents as objects (for tools; the engine loads the raw form). */
export function checkpointExtents(state: CheckpointState): Extent[] {
  const out: Extent[] = [];
  for (let i = 0; i < state.extentsRaw.length / EXTENT_FIELDS; i++) out.push(ExtentMap.unpackRaw(state.extentsRaw, i));
  return out;
}

const LITTLE_ENDIAN = new Uint8Array(new Float64Array([1]).buffer)[7] === 0x3f;

export function checkpointBytes(segmentCount: number, headCount: number, extentCount: number): number {
  return HEADER_BYTES + headCount * HEAD_BYTES + segmentCount * SEGMENT_BYTES + extentCount * EXTENT_BYTES;
}

export function encodeCheckpoint(
  seq: number,
  nextSeq: number,
  heads: readonly Head[],
  segments: readonly SegmentInfo[],
  extentsRaw: Float64Array,
): Buffer {
  const extentCount = extentsRaw.length / EXTENT_FIELDS;
  const buf = Buffer.alloc(checkpointBytes(segments.length, heads.length, extentCount));
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
  assert(p === buf.length, 'checkpoint holds exactly the extents counted');
  return buf;
}

/** Returns undefined when the payload is malformed. */
export function decodeCheckpoint(buf: Buffer): CheckpointState | undefined {
  if (buf.length < HEADER_BYTES || buf.readUInt32LE(0) !== MAGIC || buf.readUInt32LE(4) !== VERSION) return undefined;
  const segmentCount = buf.readUInt32LE(24);
  const headCount = buf.readUInt32LE(28);
  const extentCount = buf.readDoubleLE(32);
  if (buf.length !== checkpointBytes(segmentCount, headCount, extentCount)) return undefined;
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
  return { seq: buf.readDoubleLE(8), nextSeq: buf.readDoubleLE(16), heads, segments, extentsRaw };
}
