// How a memcached item is kept in a kv pool: the key is the item's key (its bytes), the
// value is a small header followed by the item's data. The kv entry's version is the item's
// CAS unique and its expiry the item's exptime, so both survive restarts with the value.
//
//   byte 0      HEADER_MAGIC (0xAC): marks a value written by this server
//   byte 1      state bits: STALE (marked invalid by md I / ms I, served with the X flag)
//   bytes 2..5  client flags, unsigned 32-bit big-endian
//   bytes 6..9  when the item was written, unix seconds, unsigned 32-bit big-endian
//   bytes 10..  the data
//
// A value without the magic (written to the pool some other way) reads as flags 0, all data.

export const HEADER_BYTES = 10;
export const HEADER_MAGIC = 0xac;
export const STATE_STALE = 0x01;

export interface Item {
  flags: number;
  stale: boolean;
  /** Unix seconds when it was written (0 when unknown). */
  writtenAt: number;
  /** A view of the stored value: valid as long as that buffer is. */
  data: Buffer;
}

/** Header + data as one new buffer. */
export function encodeItem(flags: number, data: Uint8Array, nowMs: number, stale = false, extra?: Uint8Array, extraFirst = false): Buffer {
  const extraBytes = extra?.length ?? 0;
  const out = Buffer.allocUnsafe(HEADER_BYTES + data.length + extraBytes);
  out[0] = HEADER_MAGIC;
  out[1] = stale ? STATE_STALE : 0;
  out.writeUInt32BE(flags >>> 0, 2);
  out.writeUInt32BE(Math.floor(nowMs / 1000) >>> 0, 6);
  if (extra !== undefined && extraFirst) {
    out.set(extra, HEADER_BYTES);
    out.set(data, HEADER_BYTES + extraBytes);
  } else {
    out.set(data, HEADER_BYTES);
    if (extra !== undefined) out.set(extra, HEADER_BYTES + data.length);
  }
  return out;
}

export function decodeItem(value: Buffer): Item {
  if (value.length < HEADER_BYTES || value[0] !== HEADER_MAGIC) return { flags: 0, stale: false, writtenAt: 0, data: value };
  return {
    flags: value.readUInt32BE(2),
    stale: (value[1]! & STATE_STALE) !== 0,
    writtenAt: value.readUInt32BE(6),
    data: value.subarray(HEADER_BYTES),
  };
}

/** Where the data of a stored value starts: after the header, or at 0 for a value without one. */
export function dataStart(value: Buffer): number {
  return value.length >= HEADER_BYTES && value[0] === HEADER_MAGIC ? HEADER_BYTES : 0;
}

/** The client flags of a stored value (0 for a value without a header). */
export function flagsOf(value: Buffer): number {
  return value.length >= HEADER_BYTES && value[0] === HEADER_MAGIC ? value.readUInt32BE(2) : 0;
}

/** The data of a stored value without decoding the rest. */
export function dataOf(value: Buffer): Buffer {
  return value.length >= HEADER_BYTES && value[0] === HEADER_MAGIC ? value.subarray(HEADER_BYTES) : value;
}
