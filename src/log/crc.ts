// CRC32C (Castagnoli), hardware-accelerated through @node-rs/crc32.
//
// Every checksum in atomio is seeded with a value bound to where the bytes live (the
// segment's random nonce and the offset inside the segment). A sector left behind by an
// earlier use of the same segment then fails its check even though its own checksum was
// once valid: that is how torn writes over reused space are caught.
//
// Short ranges (a record's header and op descriptors, the common small commit's) are summed
// here in JavaScript, eight bytes a step: a native call costs about 0.4 µs whatever the
// length, more than the table lookups below take for up to SMALL_CRC_BYTES bytes. Both give
// the same value (test/log/crc.test.ts compares them).

import { crc32c } from '@node-rs/crc32';

/** Ranges up to this long are summed in JavaScript (measured: it wins up to about 200 bytes). */
export const SMALL_CRC_BYTES = 128;

/** Slice-by-8 tables for the reflected polynomial 0x82f63b78: table t at [t × 256, t × 256 + 256). */
const TABLE = makeTable();

function makeTable(): Int32Array {
  const t = new Int32Array(8 * 256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    t[n] = c;
  }
  for (let n = 0; n < 256; n++) {
    for (let k = 1; k < 8; k++) {
      const prev = t[(k - 1) * 256 + n]!;
      t[k * 256 + n] = (prev >>> 8) ^ t[prev & 0xff]!;
    }
  }
  return t;
}

export function checksum(bytes: Uint8Array, seed: number): number {
  if (bytes.length <= SMALL_CRC_BYTES) return smallChecksum(bytes, 0, bytes.length, seed);
  return crc32c(bytes as Buffer, seed) >>> 0;
}

/** checksum(bytes.subarray(from, to), seed), without the view for a short range. */
export function checksumRange(bytes: Uint8Array, from: number, to: number, seed: number): number {
  if (to - from <= SMALL_CRC_BYTES) return smallChecksum(bytes, from, to, seed);
  return crc32c(bytes.subarray(from, to) as Buffer, seed) >>> 0;
}

/** The CRC32C of bytes[from, to), continuing from `seed`, by table. */
export function smallChecksum(b: Uint8Array, from: number, to: number, seed: number): number {
  const t = TABLE;
  let c = ~seed;
  let i = from;
  for (; i + 8 <= to; i += 8) {
    const lo = c ^ (b[i]! | (b[i + 1]! << 8) | (b[i + 2]! << 16) | (b[i + 3]! << 24));
    c =
      t[1792 + (lo & 0xff)]! ^
      t[1536 + ((lo >>> 8) & 0xff)]! ^
      t[1280 + ((lo >>> 16) & 0xff)]! ^
      t[1024 + (lo >>> 24)]! ^
      t[768 + b[i + 4]!]! ^
      t[512 + b[i + 5]!]! ^
      t[256 + b[i + 6]!]! ^
      t[b[i + 7]!]!;
  }
  for (; i < to; i++) c = t[(c ^ b[i]!) & 0xff]! ^ (c >>> 8);
  return ~c >>> 0;
}

/** The seed for bytes at `offsetInSegment` of a segment opened with `nonce`. */
export function seedAt(nonce: number, offsetInSegment: number): number {
  return (nonce ^ Math.imul(offsetInSegment | 0, 0x9e3779b1)) >>> 0;
}
