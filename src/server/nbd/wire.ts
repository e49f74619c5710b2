// Encoders for what the server sends: option replies in the handshake, simple replies and
// structured reply chunks in transmission. Pure functions over Buffers.

import {
  IHAVEOPT,
  NBD_MAGIC,
  NBD_REP_MAGIC,
  NBD_REPLY_FLAG_DONE,
  NBD_REPLY_TYPE_BLOCK_STATUS,
  NBD_REPLY_TYPE_ERROR,
  NBD_REPLY_TYPE_NONE,
  NBD_REPLY_TYPE_OFFSET_DATA,
  NBD_REPLY_TYPE_OFFSET_HOLE,
  NBD_SIMPLE_REPLY_MAGIC,
  NBD_STRUCTURED_REPLY_MAGIC,
  MAX_STRING_BYTES,
  OPTION_REPLY_HEADER_BYTES,
  SIMPLE_REPLY_HEADER_BYTES,
  STRUCTURED_REPLY_HEADER_BYTES,
} from './protocol.js';

/** The server's greeting: NBDMAGIC, IHAVEOPT, handshake flags. */
export function greeting(handshakeFlags: number): Buffer {
  const b = Buffer.alloc(18);
  b.writeBigUInt64BE(NBD_MAGIC, 0);
  b.writeBigUInt64BE(IHAVEOPT, 8);
  b.writeUInt16BE(handshakeFlags, 16);
  return b;
}

/** One fixed-newstyle option reply. */
export function optionReply(option: number, type: number, data: Buffer = EMPTY): Buffer {
  const b = Buffer.allocUnsafe(OPTION_REPLY_HEADER_BYTES + data.length);
  b.writeBigUInt64BE(NBD_REP_MAGIC, 0);
  b.writeUInt32BE(option >>> 0, 8);
  b.writeUInt32BE(type >>> 0, 12);
  b.writeUInt32BE(data.length, 16);
  data.copy(b, OPTION_REPLY_HEADER_BYTES);
  return b;
}

/** A string as the spec allows it on the wire: UTF-8, no NUL, at most 4096 bytes. */
export function wireString(text: string): Buffer {
  const b = Buffer.from(text.replace(/\0/g, ''), 'utf8');
  if (b.length <= MAX_STRING_BYTES) return b;
  // Cut before a character, never inside one: a continuation byte is 0b10xxxxxx.
  let end = MAX_STRING_BYTES;
  while (end > 0 && (b[end]! & 0xc0) === 0x80) end--;
  return b.subarray(0, end);
}

/** Simple reply header (data, if any, follows separately). */
export function simpleReply(cookie: Buffer, error: number): Buffer {
  const b = Buffer.allocUnsafe(SIMPLE_REPLY_HEADER_BYTES);
  b.writeUInt32BE(NBD_SIMPLE_REPLY_MAGIC, 0);
  b.writeUInt32BE(error, 4);
  cookie.copy(b, 8, 0, 8);
  return b;
}

/** Structured chunk header for a payload of `payloadBytes`. */
export function chunkHeader(cookie: Buffer, flags: number, type: number, payloadBytes: number): Buffer {
  const b = Buffer.allocUnsafe(STRUCTURED_REPLY_HEADER_BYTES);
  writeChunkHeader(b, 0, cookie, flags, type, payloadBytes);
  return b;
}

function writeChunkHeader(b: Buffer, at: number, cookie: Buffer, flags: number, type: number, payloadBytes: number): void {
  b.writeUInt32BE(NBD_STRUCTURED_REPLY_MAGIC, at);
  b.writeUInt16BE(flags, at + 4);
  b.writeUInt16BE(type, at + 6);
  cookie.copy(b, at + 8, 0, 8);
  b.writeUInt32BE(payloadBytes, at + 16);
}

/** NBD_REPLY_TYPE_NONE with DONE: success of a structured reply with no content. */
export function noneChunk(cookie: Buffer): Buffer {
  return chunkHeader(cookie, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_NONE, 0);
}

/** Header plus offset of an NBD_REPLY_TYPE_OFFSET_DATA chunk; `dataBytes` of data follow separately. */
export function offsetDataHeader(cookie: Buffer, flags: number, offset: number, dataBytes: number): Buffer {
  const b = Buffer.allocUnsafe(STRUCTURED_REPLY_HEADER_BYTES + 8);
  writeChunkHeader(b, 0, cookie, flags, NBD_REPLY_TYPE_OFFSET_DATA, 8 + dataBytes);
  b.writeBigUInt64BE(BigInt(offset), STRUCTURED_REPLY_HEADER_BYTES);
  return b;
}

export function offsetHoleChunk(cookie: Buffer, flags: number, offset: number, holeBytes: number): Buffer {
  const b = Buffer.allocUnsafe(STRUCTURED_REPLY_HEADER_BYTES + 12);
  writeChunkHeader(b, 0, cookie, flags, NBD_REPLY_TYPE_OFFSET_HOLE, 12);
  b.writeBigUInt64BE(BigInt(offset), STRUCTURED_REPLY_HEADER_BYTES);
  b.writeUInt32BE(holeBytes, STRUCTURED_REPLY_HEADER_BYTES + 8);
  return b;
}

/** NBD_REPLY_TYPE_ERROR with DONE, carrying `message` for a human. */
export function errorChunk(cookie: Buffer, error: number, message: string): Buffer {
  const text = wireString(message);
  const b = Buffer.allocUnsafe(STRUCTURED_REPLY_HEADER_BYTES + 6 + text.length);
  writeChunkHeader(b, 0, cookie, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_ERROR, 6 + text.length);
  b.writeUInt32BE(error, STRUCTURED_REPLY_HEADER_BYTES);
  b.writeUInt16BE(text.length, STRUCTURED_REPLY_HEADER_BYTES + 4);
  text.copy(b, STRUCTURED_REPLY_HEADER_BYTES + 6);
  return b;
}

/** NBD_REPLY_TYPE_BLOCK_STATUS with DONE for one context: descriptors of (length, flags). */
export function blockStatusChunk(cookie: Buffer, contextId: number, descriptors: readonly { length: number; flags: number }[]): Buffer {
  const payload = 4 + 8 * descriptors.length;
  const b = Buffer.allocUnsafe(STRUCTURED_REPLY_HEADER_BYTES + payload);
  writeChunkHeader(b, 0, cookie, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_BLOCK_STATUS, payload);
  let p = STRUCTURED_REPLY_HEADER_BYTES;
  b.writeUInt32BE(contextId, p);
  p += 4;
  for (const d of descriptors) {
    b.writeUInt32BE(d.length, p);
    b.writeUInt32BE(d.flags, p + 4);
    p += 8;
  }
  return b;
}

const EMPTY = Buffer.alloc(0);
