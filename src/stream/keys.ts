// How a stream lays itself out in its reserved kv pool ('\u0000stream:NAME').
//
//   key: the record's sequence number, 8 bytes big-endian (1 … 2^53 - 1), so key order is
//        append order and a read from a sequence number is a range of keys;
//   value: [append time: ms since the epoch, 6 bytes big-endian][the record's bytes];
//   key 0xff (one byte, after every record key): the stream's metadata as JSON (see Meta).

import { AtomioError } from '../base/errors.js';
import { describe } from '../kv/encoding.js';

/** Bytes before a record's own bytes in its stored value: the append time. */
const TWO_32 = 2 ** 32;

export const RECORD_HEADER_BYTES = 6;
export const SEQ_KEY_BYTES = 8;
/** The metadata key sorts after every record key (their first byte is at most 0x1f). */
export const META_KEY = Buffer.from([0xff]);
/** Lower and upper bounds of the record keys. */
export const FIRST_KEY = seqKey(0);
export const END_KEY = META_KEY;


export function seqKey(seq: number): Buffer {
  const key = Buffer.allocUnsafe(SEQ_KEY_BYTES);
  key.writeUInt32BE(Math.floor(seq / TWO_32), 0);
  key.writeUInt32BE(seq % TWO_32, 4);
  return key;
}

export function seqOf(key: Buffer): number {
  return key.readUInt32BE(0) * TWO_32 + key.readUInt32BE(4);
}

export function isSeqKey(key: Buffer): boolean {
  return key.length === SEQ_KEY_BYTES;
}

/** What is persisted under META_KEY. */
export interface Meta {
  /** Every record before it was trimmed: the first sequence number when the stream is empty. */
  firstSeq: number;
  retention: Retention;
}

/** Limits on what a stream keeps; 0 means no limit. */
export interface Retention {
  /** Keep at most this many records (the newest). */
  count: number;
  /** Keep at most this many bytes of records (key, time and record bytes; the newest). */
  bytes: number;
  /** Keep records appended at most this many milliseconds ago. */
  age: number;
}

export const NO_RETENTION: Retention = { count: 0, bytes: 0, age: 0 };

export function encodeMeta(meta: Meta): Buffer {
  return Buffer.from(JSON.stringify({ v: 1, firstSeq: meta.firstSeq, retention: meta.retention }), 'utf8');
}

export function decodeMeta(bytes: Buffer | undefined): Meta {
  if (bytes === undefined) return { firstSeq: 1, retention: { ...NO_RETENTION } };
  let parsed: unknown;
  try {
    parsed = JSON.parse(bytes.toString('utf8'));
  } catch {
    parsed = undefined;
  }
  const m = parsed as { v?: unknown; firstSeq?: unknown; retention?: Partial<Retention> } | undefined;
  if (m === undefined || m.v !== 1 || typeof m.firstSeq !== 'number' || typeof m.retention !== 'object' || m.retention === null) {
    throw new AtomioError('ERR_FORMAT', 'a stream\'s metadata is not in a format this atomio reads', {});
  }
  return {
    firstSeq: m.firstSeq,
    retention: { count: m.retention.count ?? 0, bytes: m.retention.bytes ?? 0, age: m.retention.age ?? 0 },
  };
}

/** A retention setting given by the user: a non-negative safe integer, or undefined (keep). */
export function checkLimit(value: unknown, what: string): number | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) {
    throw new AtomioError('ERR_ARGUMENT', `retention ${what} is a non-negative integer (0: no limit), not ${describe(value)}`, {});
  }
  return value;
}

export function checkSeq(seq: unknown, what: string): number {
  if (typeof seq !== 'number' || !Number.isSafeInteger(seq) || seq < 0) {
    throw new AtomioError('ERR_ARGUMENT', `${what} is a sequence number (an integer >= 0), not ${describe(seq)}`, {});
  }
  return seq;
}
