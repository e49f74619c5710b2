// How a stream lays itself out in its reserved kv pool ('\u0000stream:NAME').
//
// The records of one append commit are stored together, as one kv entry (a run), so that a
// commit of many appends costs the engine one put and the index one key, whatever its size:
//   key: [the run's first sequence number: u64 big-endian][its record count: u32 big-endian]
//        (12 bytes), so key order is append order, runs never overlap, and the run holding a
//        sequence number is the last key at or below it;
//   value: each record in turn, [append time: ms since the epoch, u48 big-endian]
//        [length: u32 big-endian][the record's bytes];
//   key 0xff (one byte, after every run key): the stream's metadata as JSON (see Meta).
// A trim deletes whole runs; a run it cuts through stays, and the metadata's firstSeq says
// which of its records are gone.

import { assert } from '../base/assert.js';
import { AtomioError } from '../base/errors.js';
import { describe } from '../kv/encoding.js';

const TWO_32 = 2 ** 32;

/** Bytes before a record's own bytes in its run: append time and length. */
export const RECORD_HEADER_BYTES = 10;
export const RUN_KEY_BYTES = 12;
/** The metadata key sorts after every run key (their first byte is at most 0x1f). */
export const META_KEY = Buffer.from([0xff]);
/** Lower and upper bounds of the run keys. */
export const FIRST_KEY = Buffer.from([0x00]);
export const END_KEY = META_KEY;

/** A run's key: its first sequence number and record count. */
export function runKey(first: number, count: number): Buffer {
  assert(count >= 1 && count < TWO_32, 'a run holds at least one record');
  const key = Buffer.allocUnsafe(RUN_KEY_BYTES);
  key.writeUInt32BE(Math.floor(first / TWO_32), 0);
  key.writeUInt32BE(first % TWO_32, 4);
  key.writeUInt32BE(count, 8);
  return key;
}

/**
 * A bound that sorts before the run starting at `seq` and after every run starting below
 * it: the first 8 bytes of its key.
 */
export function seqBound(seq: number): Buffer {
  const key = Buffer.allocUnsafe(8);
  key.writeUInt32BE(Math.floor(seq / TWO_32), 0);
  key.writeUInt32BE(seq % TWO_32, 4);
  return key;
}

export interface Run {
  first: number;
  count: number;
}

export function runOf(key: Uint8Array): Run {
  assert(key.length === RUN_KEY_BYTES, 'a run key is 12 bytes');
  const view = Buffer.from(key.buffer, key.byteOffset, key.length);
  return { first: view.readUInt32BE(0) * TWO_32 + view.readUInt32BE(4), count: view.readUInt32BE(8) };
}

/**
 * Calls `each(index, time, bytes)` for the records of a run's value, in order (bytes are a
 * view into it); ERR_CORRUPT when the value does not hold `count` records exactly.
 */
export function forEachRecord(value: Buffer, count: number, each: (index: number, time: number, bytes: Buffer) => boolean | void): void {
  let at = 0;
  for (let i = 0; i < count; i++) {
    if (at + RECORD_HEADER_BYTES > value.length) throw malformedRun();
    const time = value.readUIntBE(at, 6);
    const length = value.readUInt32BE(at + 6);
    at += RECORD_HEADER_BYTES;
    if (at + length > value.length) throw malformedRun();
    if (each(i, time, value.subarray(at, at + length)) === false) return;
    at += length;
  }
  if (at !== value.length) throw malformedRun();
}

function malformedRun(): AtomioError {
  return new AtomioError('ERR_CORRUPT', 'a stream run does not hold the records its key counts', {});
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
