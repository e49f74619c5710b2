// CRC32C (Castagnoli), hardware-accelerated through @node-rs/crc32.
//
// Every checksum in atomio is seeded with a value bound to where the bytes live (the
// segment's random nonce and the offset inside the segment). A sector left behind by an
// earlier use of the same segment then fails its check even though its own checksum was
// once valid: that is how torn writes over reused space are caught.

import { crc32c } from '@node-rs/crc32';

export function checksum(bytes: Uint8Array, seed: number): number {
  return crc32c(bytes as Buffer, seed) >>> 0;
}

/** The seed for bytes at `offsetInSegment` of a segment opened with `nonce`. */
export function seedAt(nonce: number, offsetInSegment: number): number {
  return (nonce ^ Math.imul(offsetInSegment | 0, 0x9e3779b1)) >>> 0;
}
