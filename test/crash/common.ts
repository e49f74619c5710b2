// Shared by the crash writer (a child process) and the crash tests: the sector pattern, the
// line protocol on the writer's stdout, a seeded PRNG and the store geometry.
//
// Every 512-byte sector a batch writes holds
//   [0, 8)   the batch id (f64 LE)     [8, 16)  the sector's lba (f64 LE)
//   [16, 512) one byte derived from both,
// so a sector read back after a crash names the batch that wrote it and proves it sits at
// the right lba. Batch ids are never 0, so an all-zero sector is "no data".
//
// Protocol, one line each, written with fs.writeSync so that a line is in the pipe before
// what it reports goes on:
//   SEED <seed>                     first line
//   OPENING                         before open()
//   OPENED <json>                   after open(): { recovery, stats }
//   ISSUE <id> <ops json>           before the batch is handed to store.block.atomic()
//   ACK <id> <version> <ops json>   after its promise resolved (it is durable)
//   STATS <json>                    now and then: checkpoints, segments cleaned, …
//   TEAR <offset> <length> <kept> <how>   the writer kills itself inside a write of `length` bytes
//                                   at `offset` of which the first `kept` reached the file;
//                                   `how` names the medium's call (write, durable, parts, sync, …)
//   FAIL <id> <message>             a batch or checkpoint failed; the writer exits 1
// ops json: [[lba, count, "w" | "t"], …] in op order (later ops win where they overlap).

import fs from 'node:fs';

export const SECTOR = 512;
/** Store geometry: small, so that checkpoints and the cleaner run during a short test. */
export const CAPACITY = 16 * 1024 * 1024;
export const SEGMENT_SIZE = 256 * 1024;
/** Writes land in lbas [0, LBA_RANGE): 4 MiB of live data at most, overwritten over and over. */
export const LBA_RANGE = 8192;
/** Part of the writes go to this many lbas at the start, so that in-flight batches overlap. */
export const HOT_RANGE = 256;
export const MAX_IN_FLIGHT = 32;
/** A killed process's write stops at a page boundary: the kernel copies page by page. */
export const PAGE = 4096;

export type OpKind = 'w' | 't';
export type OpDesc = [lba: number, count: number, kind: OpKind];

export interface Batch {
  id: number;
  ops: OpDesc[];
}

/** mulberry32: same seed, same sequence. */
export class Rng {
  private state: number;
  constructor(seed: number) {
    this.state = seed >>> 0;
  }
  next(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  /** An integer in [lo, hi]. */
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.next() * (hi - lo + 1));
  }
}

/** A seed derived from another (so that one seed replays every round). */
export function deriveSeed(seed: number, salt: number): number {
  let x = (seed ^ Math.imul(salt + 1, 0x9e3779b1)) >>> 0;
  x = Math.imul(x ^ (x >>> 16), 0x85ebca6b) >>> 0;
  x = Math.imul(x ^ (x >>> 13), 0xc2b2ae35) >>> 0;
  return (x ^ (x >>> 16)) >>> 0;
}

function fillByte(id: number, lba: number): number {
  return (Math.imul(id, 131) + Math.imul(lba, 29) + 7) & 0xff;
}

/** Writes the pattern of batch `id` for sectors lba.. into `into` at `at`. */
export function fillPattern(id: number, lba: number, count: number, into: Buffer = Buffer.alloc(count * SECTOR), at = 0): Buffer {
  for (let i = 0; i < count; i++) {
    const p = at + i * SECTOR;
    into.fill(fillByte(id, lba + i), p + 16, p + SECTOR);
    into.writeDoubleLE(id, p);
    into.writeDoubleLE(lba + i, p + 8);
  }
  return into;
}

/**
 * What a sector read back holds: 0 for all zeros, the batch id for an intact pattern of
 * that lba, or a string saying what is wrong with it.
 */
export function parseSector(buf: Buffer, at: number, lba: number): number | string {
  const id = buf.readDoubleLE(at);
  if (id === 0) {
    for (let i = at; i < at + SECTOR; i++) if (buf[i] !== 0) return `not all zeros though its batch id field is 0 (byte ${i - at} is ${buf[i]})`;
    return 0;
  }
  if (!Number.isSafeInteger(id) || id < 0) return `garbage: batch id field reads ${id}`;
  const stamped = buf.readDoubleLE(at + 8);
  if (stamped !== lba) return `batch ${id}'s sector for lba ${stamped} sits at lba ${lba}`;
  const b = fillByte(id, lba);
  for (let i = at + 16; i < at + SECTOR; i++) if (buf[i] !== b) return `batch ${id}'s sector is damaged at byte ${i - at}`;
  return id;
}

/** Writes a whole line to fd 1 synchronously (retrying on EAGAIN and short writes). */
export function writeLine(line: string): void {
  const bytes = Buffer.from(line + '\n');
  let done = 0;
  while (done < bytes.length) {
    try {
      done += fs.writeSync(1, bytes, done, bytes.length - done);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EAGAIN') throw error;
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 1);
    }
  }
}
