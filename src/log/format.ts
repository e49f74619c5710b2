// The on-media format, to the byte. docs/format.md is the prose version of this file.
//
//   [superblock A: 4 KiB][superblock B: 4 KiB][segment 0][segment 1]…[segment N-1]
//
// All integers are little-endian. Counts and sequence numbers that may exceed 2^32 are
// stored as float64, which is exact for every integer below 2^53 (the largest lba).
//
// Invariants:
// - a record never crosses a segment boundary;
// - every group commit starts at a multiple of the store's alignment (its sector size) and
//   is padded to the next one; records inside it start at multiples of 8 bytes. A sector
//   once acknowledged is never written again until its segment is reused;
// - sequence numbers rise strictly within a segment and across the whole log.

import { assert } from '../base/assert.js';
import { checksum, checksumRange, seedAt } from './crc.js';

export const FORMAT_VERSION = 1;

export const SUPERBLOCK_BYTES = 4096;
export const SUPERBLOCK_COPIES = 2;
/** Byte offset of segment 0 in the medium. */
export const SEGMENTS_OFFSET = SUPERBLOCK_BYTES * SUPERBLOCK_COPIES;

export const SEGMENT_HEADER_USED_BYTES = 64;
export const RECORD_HEADER_BYTES = 56;
export const BLOCK_OP_BYTES = 40;
/** Data of a write op is stored as chunks of [crc32c: 4][up to 4096 data bytes]. */
export const CHUNK_DATA_BYTES = 4096;
export const CHUNK_CRC_BYTES = 4;

const SUPERBLOCK_MAGIC = Buffer.from('ATOMIOSB', 'latin1');
const SEGMENT_MAGIC = 0x47455341; // 'ASEG'
const RECORD_MAGIC = 0x43455241; // 'AREC'

export const SegmentKind = {
  /** Written by user commits: hot data. */
  hot: 1,
  /** Written by the cleaner: data that survived at least one cleaning, cold. */
  cold: 2,
  /** Holds part of a checkpoint. */
  checkpoint: 3,
} as const;
export type SegmentKind = (typeof SegmentKind)[keyof typeof SegmentKind];

export const RecordKind = {
  /** A user commit: its ops take effect at version = seq. */
  commit: 1,
  /** The cleaner moved live data: each op keeps its original version. */
  relocation: 2,
} as const;
export type RecordKind = (typeof RecordKind)[keyof typeof RecordKind];

export const OpType = {
  /** Block face: map sectors to the data that follows. */
  write: 1,
  /** Block face: unmap sectors. */
  trim: 2,
  /** kv face: a key's value (which follows in the data area), version and expiry. */
  put: 3,
  /** kv face: remove a key. */
  delete: 4,
  /** kv face: a new expiry for a key; its value and version stay. */
  touch: 5,
  /** kv face: a pool comes into being; its name is the op's key. */
  poolCreate: 6,
  /** kv face: a pool and every key in it go away. */
  poolDrop: 7,
} as const;
export type OpType = (typeof OpType)[keyof typeof OpType];
export type BlockOpType = typeof OpType.write | typeof OpType.trim;
export type KvOpType = typeof OpType.put | typeof OpType.delete | typeof OpType.touch | typeof OpType.poolCreate | typeof OpType.poolDrop;

export function isKvOpType(type: number): type is KvOpType {
  return type >= OpType.put && type <= OpType.poolDrop;
}

// ---------------------------------------------------------------------------------------
// Superblock

export interface CheckpointPointer {
  /** Every record with seq <= this is reflected in the checkpoint. */
  seq: number;
  /** First segment of the checkpoint's chain; -1 when the store has none yet. */
  firstSegment: number;
  /** Total payload bytes across the chain. */
  payloadBytes: number;
}

export interface Superblock {
  formatVersion: number;
  generation: number;
  storeId: Buffer; // 16 bytes
  sectorBytes: number;
  segmentBytes: number;
  segmentCount: number;
  capacity: number;
  checkpoint: CheckpointPointer;
}

// Layout of the first 128 bytes of a superblock copy:
//   0 magic[8] | 8 crc32c of [12,128) | 12 format version u32 | 16 generation f64
//   24 store id[16] | 40 sector bytes u32 | 44 segment bytes u32 | 48 segment count u32
//   52 reserved u32 | 56 capacity f64 | 64 checkpoint seq f64 | 72 checkpoint first segment i32
//   76 reserved u32 | 80 checkpoint payload bytes f64 | 88..128 reserved (zero)
const SUPERBLOCK_USED_BYTES = 128;

export function encodeSuperblock(sb: Superblock): Buffer {
  const buf = Buffer.alloc(SUPERBLOCK_BYTES);
  SUPERBLOCK_MAGIC.copy(buf, 0);
  buf.writeUInt32LE(sb.formatVersion, 12);
  buf.writeDoubleLE(sb.generation, 16);
  assert(sb.storeId.length === 16, 'store id is 16 bytes');
  sb.storeId.copy(buf, 24);
  buf.writeUInt32LE(sb.sectorBytes, 40);
  buf.writeUInt32LE(sb.segmentBytes, 44);
  buf.writeUInt32LE(sb.segmentCount, 48);
  buf.writeDoubleLE(sb.capacity, 56);
  buf.writeDoubleLE(sb.checkpoint.seq, 64);
  buf.writeInt32LE(sb.checkpoint.firstSegment, 72);
  buf.writeDoubleLE(sb.checkpoint.payloadBytes, 80);
  buf.writeUInt32LE(checksum(buf.subarray(12, SUPERBLOCK_USED_BYTES), 0), 8);
  return buf;
}

export type SuperblockDecode =
  | { ok: true; superblock: Superblock }
  | { ok: false; reason: 'not-a-store' | 'checksum' | 'newer-format'; formatVersion?: number };

export function decodeSuperblock(buf: Buffer): SuperblockDecode {
  if (!buf.subarray(0, 8).equals(SUPERBLOCK_MAGIC)) return { ok: false, reason: 'not-a-store' };
  if (buf.readUInt32LE(8) !== checksum(buf.subarray(12, SUPERBLOCK_USED_BYTES), 0)) {
    return { ok: false, reason: 'checksum' };
  }
  const formatVersion = buf.readUInt32LE(12);
  if (formatVersion > FORMAT_VERSION) return { ok: false, reason: 'newer-format', formatVersion };
  return {
    ok: true,
    superblock: {
      formatVersion,
      generation: buf.readDoubleLE(16),
      storeId: Buffer.from(buf.subarray(24, 40)),
      sectorBytes: buf.readUInt32LE(40),
      segmentBytes: buf.readUInt32LE(44),
      segmentCount: buf.readUInt32LE(48),
      capacity: buf.readDoubleLE(56),
      checkpoint: {
        seq: buf.readDoubleLE(64),
        firstSegment: buf.readInt32LE(72),
        payloadBytes: buf.readDoubleLE(80),
      },
    },
  };
}

// ---------------------------------------------------------------------------------------
// Segment header: the first `alignment` bytes of every segment in use.
//   0 magic u32 | 4 crc32c of [8,64) seeded with 0 | 8 segment index u32 | 12 kind u32
//   16 nonce u32 | 20 erase count u32 | 24 open seq f64 | 32 store id[16]
//   48 next segment i32 (checkpoint chains; -1 = last) | 52 payload bytes u32 (checkpoint)
//   56 payload crc32c u32 (checkpoint) | 60 reserved u32

export interface SegmentHeader {
  index: number;
  kind: SegmentKind;
  /** Random per opening; seeds every checksum inside the segment. */
  nonce: number;
  eraseCount: number;
  /** Every record in the segment has seq >= openSeq. */
  openSeq: number;
  storeId: Buffer;
  nextSegment: number;
  payloadBytes: number;
  payloadCrc: number;
}

export function encodeSegmentHeader(h: SegmentHeader, into: Buffer, at = 0): void {
  const b = into.subarray(at, at + SEGMENT_HEADER_USED_BYTES);
  b.fill(0);
  b.writeUInt32LE(SEGMENT_MAGIC, 0);
  b.writeUInt32LE(h.index, 8);
  b.writeUInt32LE(h.kind, 12);
  b.writeUInt32LE(h.nonce >>> 0, 16);
  b.writeUInt32LE(h.eraseCount, 20);
  b.writeDoubleLE(h.openSeq, 24);
  h.storeId.copy(b, 32);
  b.writeInt32LE(h.nextSegment, 48);
  b.writeUInt32LE(h.payloadBytes, 52);
  b.writeUInt32LE(h.payloadCrc >>> 0, 56);
  b.writeUInt32LE(checksum(b.subarray(8, SEGMENT_HEADER_USED_BYTES), 0), 4);
}

/** Returns undefined when the bytes are not a valid header of this store's segment `index`. */
export function decodeSegmentHeader(b: Buffer, index: number, storeId: Buffer): SegmentHeader | undefined {
  if (b.length < SEGMENT_HEADER_USED_BYTES) return undefined;
  if (b.readUInt32LE(0) !== SEGMENT_MAGIC) return undefined;
  if (b.readUInt32LE(4) !== checksum(b.subarray(8, SEGMENT_HEADER_USED_BYTES), 0)) return undefined;
  if (b.readUInt32LE(8) !== index) return undefined;
  if (!b.subarray(32, 48).equals(storeId)) return undefined;
  const kind = b.readUInt32LE(12);
  if (kind !== SegmentKind.hot && kind !== SegmentKind.cold && kind !== SegmentKind.checkpoint) return undefined;
  return {
    index,
    kind,
    nonce: b.readUInt32LE(16),
    eraseCount: b.readUInt32LE(20),
    openSeq: b.readDoubleLE(24),
    storeId: Buffer.from(b.subarray(32, 48)),
    nextSegment: b.readInt32LE(48),
    payloadBytes: b.readUInt32LE(52),
    payloadCrc: b.readUInt32LE(56),
  };
}

// ---------------------------------------------------------------------------------------
// Records
//
// Record header (56 bytes):
//   0 magic u32 | 4 crc32c of [8, metaBytes) seeded by (nonce, record offset)
//   8 record bytes u32 (header + ops + data, before padding) | 12 meta bytes u32 (header + ops)
//   16 seq f64 | 24 batch seq f64 (seq of the first record of its group commit)
//   32 batch count u32 (records in that group commit) | 36 kind u16 | 38 reserved u16
//   40 op count u32 | 44 reserved u32
//   48 durable seq f64: every record up to this seq had been flushed when this one was
//      written. Recovery uses it to tell a lost unflushed write (drop from there on) from
//      damage to flushed data (report it, keep the rest).
// Block op (40 bytes):
//   0 type u8 | 1 reserved[3] | 4 descriptor bytes u32 (= 40) | 8 lba f64 | 16 count f64 (sectors)
//   24 version f64 | 32 expires-at f64 (ms since the epoch; 0 = never)
// kv op (40 bytes + the key padded with zeros to a multiple of 8):
//   0 type u8 | 1 reserved[3] | 4 descriptor bytes u32 | 8 version f64 | 16 expires-at f64
//   24 pool u32 | 28 key bytes u32 | 32 value bytes u32 | 36 reserved u32 | 40 key
// Data, in op order: each write op's sectors as chunks [crc32c u32][≤4096 bytes], each crc
// seeded by (nonce, chunk offset); each put op's value as [crc32c u32][value bytes], the crc
// seeded by (nonce, offset of the crc). Values are read whole, so one crc covers each.

export const KV_OP_BYTES = 40;

export function kvDescriptorBytes(keyBytes: number): number {
  return KV_OP_BYTES + alignUp(keyBytes, 8);
}

/** Bytes of a put's data: the crc, then the value. */
export function kvDataBytes(valueBytes: number): number {
  return CHUNK_CRC_BYTES + valueBytes;
}

/** Bytes a put of this shape occupies in a record: what a live key counts in its segment. */
export function kvEntryBytes(keyBytes: number, valueBytes: number): number {
  return kvDescriptorBytes(keyBytes) + kvDataBytes(valueBytes);
}

export interface KvOp {
  type: KvOpType;
  pool: number;
  /** The key; for poolCreate the pool's name (UTF-8). */
  key: Uint8Array;
  /** For commits equal to the record's seq; for relocations the original version. */
  version: number;
  expiresAt: number;
  /** Put ops only. */
  value?: Uint8Array;
  /** Put ops only, in memory (never encoded): apply keeps no copy in the value cache. */
  uncached?: boolean;
}

export type LogOp = BlockOp | KvOp;

export function isKvOp(op: LogOp): op is KvOp {
  return isKvOpType(op.type);
}

export interface BlockOp {
  type: BlockOpType;
  lba: number;
  count: number;
  /** For commits equal to the record's seq; for relocations the original version. */
  version: number;
  expiresAt: number;
  /** Write ops only: count × sector bytes. */
  data?: Uint8Array;
}

export function chunkedBytes(dataBytes: number): number {
  return dataBytes + Math.ceil(dataBytes / CHUNK_DATA_BYTES) * CHUNK_CRC_BYTES;
}

export function recordBytesFor(ops: readonly LogOp[], sectorBytes: number): number {
  let bytes = RECORD_HEADER_BYTES;
  for (const op of ops) {
    if (isKvOp(op)) {
      bytes += kvDescriptorBytes(op.key.length) + (op.type === OpType.put ? kvDataBytes(op.value!.length) : 0);
    } else {
      bytes += BLOCK_OP_BYTES;
      if (op.type === OpType.write) bytes += chunkedBytes(op.count * sectorBytes);
    }
  }
  return bytes;
}

/** Bytes of the header and op descriptors. */
function metaBytesFor(ops: readonly LogOp[]): number {
  let bytes = RECORD_HEADER_BYTES;
  for (const op of ops) bytes += isKvOp(op) ? kvDescriptorBytes(op.key.length) : BLOCK_OP_BYTES;
  return bytes;
}

export function alignUp(n: number, alignment: number): number {
  return Math.ceil(n / alignment) * alignment;
}

/**
 * Records of one group commit follow each other at this alignment; the group commit as a
 * whole starts at the store's alignment (its sector size) and is padded with zeros to the
 * next, so a sector holding acknowledged records is never written again.
 */
export const RECORD_ALIGN = 8;

/** Offset of the record that may follow one of `recordBytes` at `offset`. */
export function nextRecordAt(offset: number, recordBytes: number): number {
  return alignUp(offset + recordBytes, RECORD_ALIGN);
}

/**
 * Where a scan looks next after finding no record at `offsetInSegment` (bytes[at]): the
 * following record position, or past zeros to the end of the block at once (padding), and
 * past every whole block of zeros after it (the unwritten tail: a block at a time, a 16 MiB
 * segment's tail took 30 000 failed decodes).
 */
export function resyncAfter(bytes: Buffer, at: number, offsetInSegment: number, alignment: number): number {
  const boundary = alignUp(offsetInSegment + 1, alignment);
  const length = boundary - offsetInSegment;
  if (at + length <= bytes.length && isZero(bytes, at, length)) return boundary + zeroBlocksAt(bytes, at + length, alignment);
  return offsetInSegment + RECORD_ALIGN;
}

/** The bytes of whole zero blocks of `alignment` (a power of two, at most ZEROS.length) from bytes[at]. */
function zeroBlocksAt(bytes: Buffer, at: number, alignment: number): number {
  let p = at;
  while (p + ZEROS.length <= bytes.length && isZero(bytes, p, ZEROS.length)) p += ZEROS.length;
  while (p + alignment <= bytes.length && isZero(bytes, p, alignment)) p += alignment;
  return p - at;
}

const ZEROS = Buffer.alloc(64 * 1024);
export function isZero(bytes: Buffer, at: number, length: number): boolean {
  for (let p = 0; p < length; p += ZEROS.length) {
    const n = Math.min(ZEROS.length, length - p);
    if (bytes.compare(ZEROS, 0, n, at + p, at + p + n) !== 0) return false;
  }
  return true;
}

export interface RecordFields {
  seq: number;
  batchSeq: number;
  batchCount: number;
  durableSeq: number;
  kind: RecordKind;
  ops: readonly LogOp[];
}

/**
 * Bytes laid out back to back as a list of parts, for one vectored write: small pieces are
 * written into `inline` (which the caller sizes for them), large data is referred to where
 * it lies, not copied.
 */
export class Gather {
  /** Bytes laid out so far. */
  length = 0;
  private readonly parts: Uint8Array[] = [];
  private used: number;
  private partStart: number;

  constructor(
    readonly inline: Buffer,
    at = 0,
  ) {
    this.used = at;
    this.partStart = at;
  }

  /** Takes the next `n` bytes in `inline`; returns where they start there. */
  reserve(n: number): number {
    assert(this.used + n <= this.inline.length, 'the inline buffer holds every byte not referred to');
    const at = this.used;
    this.used += n;
    this.length += n;
    return at;
  }

  /** Appends `data` itself: it must not change until the parts are written. */
  refer(data: Uint8Array): void {
    this.closeInline();
    this.parts.push(data);
    this.length += data.length;
  }

  /** The parts, in order; together `length` bytes. */
  finish(): Uint8Array[] {
    this.closeInline();
    return this.parts;
  }

  private closeInline(): void {
    if (this.used > this.partStart) this.parts.push(this.inline.subarray(this.partStart, this.used));
    this.partStart = this.used;
  }
}

/**
 * Appends one record to `out`; the record lies at `offsetInSegment` of a segment with
 * `nonce`. The data of a write op of at least `referBytes` is referred to, not copied (see
 * Gather); everything else is copied into `out.inline`. Returns the record's unpadded
 * length. For every write op and every put op, `dataOffsets` receives the offset-in-segment
 * where its data begins.
 */
export function encodeRecord(
  r: RecordFields,
  sectorBytes: number,
  nonce: number,
  offsetInSegment: number,
  out: Gather,
  dataOffsets: number[],
  referBytes = Infinity,
): number {
  const into = out.inline;
  const metaBytes = metaBytesFor(r.ops);
  const start = out.length;
  const h = out.reserve(metaBytes);
  let d = h + RECORD_HEADER_BYTES;
  for (const op of r.ops) {
    if (isKvOp(op)) {
      const bytes = kvDescriptorBytes(op.key.length);
      zero(into, d, d + bytes);
      into[d] = op.type;
      putU32(into, d + 4, bytes);
      putF64(into, d + 8, op.version);
      putF64(into, d + 16, op.expiresAt);
      putU32(into, d + 24, op.pool);
      putU32(into, d + 28, op.key.length);
      into.set(op.key, d + KV_OP_BYTES);
      if (op.type === OpType.put) {
        const value = op.value;
        assert(value !== undefined, 'a put op carries its value');
        const dataOffset = offsetInSegment + (out.length - start);
        const p = out.reserve(kvDataBytes(value.length));
        putU32(into, d + 32, value.length);
        putU32(into, p, checksum(value, seedAt(nonce, dataOffset)));
        into.set(value, p + CHUNK_CRC_BYTES);
        dataOffsets.push(dataOffset);
      }
      d += bytes;
      continue;
    }
    // Every byte of the 40 is written: no fill first.
    into[d] = op.type;
    into[d + 1] = 0;
    into[d + 2] = 0;
    into[d + 3] = 0;
    putU32(into, d + 4, BLOCK_OP_BYTES);
    putF64(into, d + 8, op.lba);
    putF64(into, d + 16, op.count);
    putF64(into, d + 24, op.version);
    putF64(into, d + 32, op.expiresAt);
    if (op.type === OpType.write) {
      const data = op.data;
      assert(data !== undefined && data.length === op.count * sectorBytes, 'write op carries count sectors of data');
      const dataOffset = offsetInSegment + (out.length - start);
      dataOffsets.push(dataOffset);
      writeChunks(data, nonce, dataOffset, out, data.length >= referBytes);
    }
    d += BLOCK_OP_BYTES;
  }
  const recordBytes = out.length - start;
  putU32(into, h, RECORD_MAGIC);
  putU32(into, h + 8, recordBytes);
  putU32(into, h + 12, metaBytes);
  putF64(into, h + 16, r.seq);
  putF64(into, h + 24, r.batchSeq);
  putU32(into, h + 32, r.batchCount);
  into[h + 36] = r.kind;
  into[h + 37] = r.kind >>> 8;
  into[h + 38] = 0;
  into[h + 39] = 0;
  putU32(into, h + 40, r.ops.length);
  putU32(into, h + 44, 0);
  putF64(into, h + 48, r.durableSeq);
  putU32(into, h + 4, checksumRange(into, h + 8, h + metaBytes, seedAt(nonce, offsetInSegment)));
  return recordBytes;
}

/** Appends `data` as chunks [crc][≤ 4096 bytes], the first at `offsetInSegment`; the data copied or referred to. */
function writeChunks(data: Uint8Array, nonce: number, offsetInSegment: number, out: Gather, refer: boolean): void {
  const into = out.inline;
  let offset = offsetInSegment;
  for (let i = 0; i < data.length; i += CHUNK_DATA_BYTES) {
    // A one-chunk write (a 4 KiB block write, the common case) needs no view of itself.
    const piece = i === 0 && data.length <= CHUNK_DATA_BYTES ? data : data.subarray(i, Math.min(data.length, i + CHUNK_DATA_BYTES));
    const c = out.reserve(CHUNK_CRC_BYTES);
    putU32(into, c, checksum(piece, seedAt(nonce, offset)));
    if (refer) out.refer(piece);
    else into.set(piece, out.reserve(piece.length));
    offset += CHUNK_CRC_BYTES + piece.length;
  }
}

// The record encoder's field writers: the values are known to fit (they come from the
// engine, not from callers), so Buffer's range checks are skipped on this path.

/** A u32, little-endian. */
function putU32(into: Uint8Array, at: number, v: number): void {
  into[at] = v;
  into[at + 1] = v >>> 8;
  into[at + 2] = v >>> 16;
  into[at + 3] = v >>> 24;
}

const F64 = new Float64Array(1);
const F64_BYTES = new Uint8Array(F64.buffer);
const LITTLE_ENDIAN_HOST = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** An f64, little-endian. */
function putF64(into: Uint8Array, at: number, v: number): void {
  F64[0] = v;
  if (LITTLE_ENDIAN_HOST) {
    for (let i = 0; i < 8; i++) into[at + i] = F64_BYTES[i]!;
  } else {
    for (let i = 0; i < 8; i++) into[at + i] = F64_BYTES[7 - i]!;
  }
}

/** Zeros into[from, to): short runs by hand, longer ones by the typed-array fill (Buffer's fill adds checks). */
export function zero(into: Uint8Array, from: number, to: number): void {
  if (to - from <= 64) {
    for (let i = from; i < to; i++) into[i] = 0;
    return;
  }
  Uint8Array.prototype.fill.call(into, 0, from, to);
}

export interface DecodedOp {
  type: OpType;
  /** Block ops. */
  lba: number;
  count: number;
  version: number;
  expiresAt: number;
  /** Write ops: offset-in-segment of the chunked data; put ops: of the value's crc. */
  dataOffset: number;
  /** kv ops. */
  pool: number;
  key: Buffer;
  valueBytes: number;
}

export interface DecodedRecordHeader {
  seq: number;
  batchSeq: number;
  batchCount: number;
  durableSeq: number;
  kind: RecordKind;
  recordBytes: number;
  metaBytes: number;
  ops: DecodedOp[];
}

export type RecordDecode =
  | { ok: true; record: DecodedRecordHeader }
  | { ok: false; reason: 'no-record' | 'checksum' | 'malformed' };

/**
 * Decodes the header and op descriptors of the record at `offsetInSegment`. `bytes` must
 * start at the record and hold at least its meta bytes; `limit` is the space left in the
 * segment. Data chunks are checked separately (verifyChunks).
 */
export function decodeRecordMeta(
  bytes: Buffer,
  nonce: number,
  offsetInSegment: number,
  sectorBytes: number,
  limit: number,
): RecordDecode {
  if (bytes.length < RECORD_HEADER_BYTES) return { ok: false, reason: 'no-record' };
  if (bytes.readUInt32LE(0) !== RECORD_MAGIC) return { ok: false, reason: 'no-record' };
  const recordBytes = bytes.readUInt32LE(8);
  const metaBytes = bytes.readUInt32LE(12);
  const opCount = bytes.readUInt32LE(40);
  if (metaBytes < RECORD_HEADER_BYTES || metaBytes > recordBytes || recordBytes > limit) {
    return { ok: false, reason: 'malformed' };
  }
  if (metaBytes > bytes.length) return { ok: false, reason: 'malformed' };
  if (bytes.readUInt32LE(4) !== checksumRange(bytes, 8, metaBytes, seedAt(nonce, offsetInSegment))) {
    return { ok: false, reason: 'checksum' };
  }
  const kind = bytes.readUInt16LE(36);
  if (kind !== RecordKind.commit && kind !== RecordKind.relocation) return { ok: false, reason: 'malformed' };
  const ops: DecodedOp[] = [];
  let dataOffset = offsetInSegment + metaBytes;
  let d = RECORD_HEADER_BYTES;
  for (let i = 0; i < opCount; i++) {
    if (d + BLOCK_OP_BYTES > metaBytes) return { ok: false, reason: 'malformed' };
    const type = bytes[d]!;
    const descriptorBytes = bytes.readUInt32LE(d + 4);
    if (isKvOpType(type)) {
      const keyBytes = bytes.readUInt32LE(d + 28);
      if (descriptorBytes !== kvDescriptorBytes(keyBytes) || d + descriptorBytes > metaBytes) {
        return { ok: false, reason: 'malformed' };
      }
      const valueBytes = type === OpType.put ? bytes.readUInt32LE(d + 32) : 0;
      ops.push({
        type,
        lba: 0,
        count: 0,
        version: bytes.readDoubleLE(d + 8),
        expiresAt: bytes.readDoubleLE(d + 16),
        dataOffset,
        pool: bytes.readUInt32LE(d + 24),
        key: Buffer.from(bytes.subarray(d + KV_OP_BYTES, d + KV_OP_BYTES + keyBytes)),
        valueBytes,
      });
      if (type === OpType.put) dataOffset += kvDataBytes(valueBytes);
      d += descriptorBytes;
      continue;
    }
    if ((type !== OpType.write && type !== OpType.trim) || descriptorBytes !== BLOCK_OP_BYTES) {
      return { ok: false, reason: 'malformed' };
    }
    const op: DecodedOp = {
      type,
      lba: bytes.readDoubleLE(d + 8),
      count: bytes.readDoubleLE(d + 16),
      version: bytes.readDoubleLE(d + 24),
      expiresAt: bytes.readDoubleLE(d + 32),
      dataOffset: 0,
      pool: 0,
      key: EMPTY,
      valueBytes: 0,
    };
    if (type === OpType.write) {
      op.dataOffset = dataOffset;
      dataOffset += chunkedBytes(op.count * sectorBytes);
    }
    ops.push(op);
    d += BLOCK_OP_BYTES;
  }
  if (d !== metaBytes) return { ok: false, reason: 'malformed' };
  if (dataOffset - offsetInSegment !== recordBytes) return { ok: false, reason: 'malformed' };
  return {
    ok: true,
    record: {
      seq: bytes.readDoubleLE(16),
      batchSeq: bytes.readDoubleLE(24),
      batchCount: bytes.readUInt32LE(32),
      durableSeq: bytes.readDoubleLE(48),
      kind,
      recordBytes,
      metaBytes,
      ops,
    },
  };
}

const EMPTY = Buffer.alloc(0);

/** Whether a put's data ([crc][value]), read from `dataOffset` of a segment with `nonce`, is intact. */
export function kvDataIntact(data: Buffer, nonce: number, dataOffset: number): boolean {
  if (data.length < CHUNK_CRC_BYTES) return false;
  return checksum(data.subarray(CHUNK_CRC_BYTES), seedAt(nonce, dataOffset)) === data.readUInt32LE(0);
}

/**
 * Checks the chunks in `bytes`, which hold chunked data beginning at chunk boundary
 * `chunkOffsetInSegment`. Returns the offset-in-segment of the first bad chunk, or -1.
 */
export function verifyChunks(bytes: Uint8Array, nonce: number, chunkOffsetInSegment: number): number {
  const view = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length);
  let p = 0;
  while (p < view.length) {
    const dataBytes = Math.min(CHUNK_DATA_BYTES, view.length - p - CHUNK_CRC_BYTES);
    if (dataBytes <= 0) return chunkOffsetInSegment + p;
    const expected = view.readUInt32LE(p);
    const data = view.subarray(p + CHUNK_CRC_BYTES, p + CHUNK_CRC_BYTES + dataBytes);
    if (checksum(data, seedAt(nonce, chunkOffsetInSegment + p)) !== expected) return chunkOffsetInSegment + p;
    p += CHUNK_CRC_BYTES + dataBytes;
  }
  return -1;
}
