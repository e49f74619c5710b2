// How a memcached item is kept in a kv pool: the key is the item's key (its bytes), the
// value is a small header followed by the item's data. The kv entry's version is the item's
// CAS unique (unless the item carries an explicit one, set by a meta command's E flag) and
// its expiry the item's exptime, so both survive restarts with the value.
//
//   byte 0      HEADER_MAGIC (0xAC): marks a value written by this server
//   byte 1      state bits: STALE (marked invalid by md I / ms I, served with the X flag),
//               CAS (an explicit CAS value follows the header)
//   bytes 2..5  client flags, unsigned 32-bit big-endian
//   bytes 6..9  when the item was written, unix seconds, unsigned 32-bit big-endian
//   [8 bytes]   with CAS only: the explicit CAS value, unsigned 64-bit big-endian
//   then        the data
//
// A value without the magic (written to the pool some other way) reads as flags 0, all data.
// Values written before the CAS bit existed have it clear, and read as they always did.

export const HEADER_BYTES = 10;
/** The explicit CAS value's bytes, after the header. */
export const CAS_BYTES = 8;
/** The longest header: with an explicit CAS. */
export const MAX_HEADER_BYTES = HEADER_BYTES + CAS_BYTES;
export const HEADER_MAGIC = 0xac;
export const STATE_STALE = 0x01;
export const STATE_CAS = 0x02;

export interface Item {
  flags: number;
  stale: boolean;
  /** Unix seconds when it was written (0 when unknown). */
  writtenAt: number;
  /** The CAS value a meta E flag gave the item; undefined: its CAS is its kv version. */
  cas: bigint | undefined;
  /** A view of the stored value: valid as long as that buffer is. */
  data: Buffer;
}

/**
 * Header + data as one new buffer. `cas`: an explicit CAS value to keep with it (meta E);
 * `extra`: more data after it, or before it with `extraFirst` (append, prepend).
 */
export function encodeItem(flags: number, data: Uint8Array, nowMs: number, cas?: bigint, stale = false, extra?: Uint8Array, extraFirst = false): Buffer {
  const extraBytes = extra?.length ?? 0;
  const head = cas === undefined ? HEADER_BYTES : MAX_HEADER_BYTES;
  const out = Buffer.allocUnsafe(head + data.length + extraBytes);
  out[0] = HEADER_MAGIC;
  out[1] = (stale ? STATE_STALE : 0) | (cas === undefined ? 0 : STATE_CAS);
  out.writeUInt32BE(flags >>> 0, 2);
  out.writeUInt32BE(Math.floor(nowMs / 1000) >>> 0, 6);
  if (cas !== undefined) out.writeBigUInt64BE(cas, HEADER_BYTES);
  if (extra !== undefined && extraFirst) {
    out.set(extra, head);
    out.set(data, head + extraBytes);
  } else {
    out.set(data, head);
    if (extra !== undefined) out.set(extra, head + data.length);
  }
  return out;
}

export function decodeItem(value: Buffer): Item {
  const from = dataStart(value);
  if (from === 0) return { flags: 0, stale: false, writtenAt: 0, cas: undefined, data: value };
  return {
    flags: value.readUInt32BE(2),
    stale: (value[1]! & STATE_STALE) !== 0,
    writtenAt: value.readUInt32BE(6),
    cas: from === MAX_HEADER_BYTES ? value.readBigUInt64BE(HEADER_BYTES) : undefined,
    data: value.subarray(from),
  };
}

/** Where the data of a stored value starts: after the header (and explicit CAS), or at 0 for a value without one. */
export function dataStart(value: Buffer): number {
  if (value.length < HEADER_BYTES || value[0] !== HEADER_MAGIC) return 0;
  return (value[1]! & STATE_CAS) !== 0 && value.length >= MAX_HEADER_BYTES ? MAX_HEADER_BYTES : HEADER_BYTES;
}

/** The client flags of a stored value (0 for a value without a header). */
export function flagsOf(value: Buffer): number {
  return value.length >= HEADER_BYTES && value[0] === HEADER_MAGIC ? value.readUInt32BE(2) : 0;
}

/** The data of a stored value without decoding the rest. */
export function dataOf(value: Buffer): Buffer {
  return value.subarray(dataStart(value));
}

/** The explicit CAS value of a stored value, or undefined when its CAS is its version. */
export function explicitCasOf(value: Buffer): bigint | undefined {
  return dataStart(value) === MAX_HEADER_BYTES ? value.readBigUInt64BE(HEADER_BYTES) : undefined;
}

