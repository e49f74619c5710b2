// Finding things in a raw store image (a FaultMedia snapshot), to damage them on purpose.

import { SEGMENTS_OFFSET, decodeSuperblock, SUPERBLOCK_BYTES, type Superblock } from '../../src/log/format.js';

const RECORD_MAGIC = Buffer.from('AREC', 'latin1');

/** Every offset where `needle` occurs in the image. */
export function findAll(image: Uint8Array, needle: Uint8Array): number[] {
  const hay = Buffer.from(image.buffer, image.byteOffset, image.length);
  const found: number[] = [];
  for (let at = hay.indexOf(needle); at >= 0; at = hay.indexOf(needle, at + 1)) found.push(at);
  return found;
}

/** Segment index and offset inside it of an absolute image offset. */
export function segmentOf(offset: number, segmentBytes: number): { segment: number; offset: number } {
  const rel = offset - SEGMENTS_OFFSET;
  return { segment: Math.floor(rel / segmentBytes), offset: rel % segmentBytes };
}

export interface RecordHeaderAt {
  /** Absolute offset in the image. */
  offset: number;
  seq: number;
  metaBytes: number;
}

/** Record headers (by magic, at aligned offsets; not checked further) in the segment area. */
export function findRecordHeaders(image: Uint8Array, alignment = 512): RecordHeaderAt[] {
  const b = Buffer.from(image.buffer, image.byteOffset, image.length);
  const out: RecordHeaderAt[] = [];
  for (let at = SEGMENTS_OFFSET; at + 64 <= b.length; at += alignment) {
    if (b[at] !== RECORD_MAGIC[0] || !b.subarray(at, at + 4).equals(RECORD_MAGIC)) continue;
    out.push({ offset: at, seq: b.readDoubleLE(at + 16), metaBytes: b.readUInt32LE(at + 12) });
  }
  return out;
}

/** The newest valid superblock copy and its offset. */
export function currentSuperblock(image: Uint8Array): { superblock: Superblock; offset: number } {
  const b = Buffer.from(image.buffer, image.byteOffset, image.length);
  let best: { superblock: Superblock; offset: number } | undefined;
  for (let i = 0; i < 2; i++) {
    const d = decodeSuperblock(b.subarray(i * SUPERBLOCK_BYTES, (i + 1) * SUPERBLOCK_BYTES));
    if (d.ok && (best === undefined || d.superblock.generation > best.superblock.generation)) {
      best = { superblock: d.superblock, offset: i * SUPERBLOCK_BYTES };
    }
  }
  if (best === undefined) throw new Error('no valid superblock in the image');
  return best;
}

/** Flips bit `bit` of byte `offset` of the image in place. */
export function flip(image: Uint8Array, offset: number, bit: number): void {
  image[offset]! ^= 1 << bit;
}
