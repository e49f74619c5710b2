// FaultMedia: an in-memory Media for tests that models a disk with a volatile write cache,
// so that crash, torn-write, bit-rot and I/O-error cases can be produced on demand and
// replayed from a seed.
//
// Model:
// - two images: `durable` (what survives power loss) and `view` (durable + every completed
//   write); reads see `view`;
// - a completed write is pending until a flush called after it resolves; only then is it
//   copied into `durable`. Writes that complete while a flush is in flight stay pending;
// - crash(mode) builds a new FaultMedia from `durable` plus some of the pending writes,
//   applied in issue order, and records what happened to each in `crashReport`;
// - memory is allocated lazily in 64 KiB pages, for both images; untouched pages read as zeros;
// - an injected failure rejects like a Node fs error and changes nothing;
// - every async call resolves on setImmediate, so calls complete in the order they were made
//   and other work interleaves with them as it would with real I/O.

import { AtomioError } from '../base/errors.js';
import { assert } from '../base/assert.js';
import { MEDIA_SECTOR_BYTES, type Media } from './media.js';
import { makeRandom, randomSeed } from './random.js';

/** The allocation unit of both images. */
export const FAULT_PAGE_BYTES = 64 * 1024;

export type CrashMode = 'lose-all' | 'keep-all' | 'torn';

/** What a crash did to one write that was pending (completed, not yet flushed). */
export interface CrashedWrite {
  offset: number;
  length: number;
  outcome: 'applied' | 'dropped' | 'torn';
  /** For 'torn': the absolute sector numbers (offset / 512) that reached the medium. */
  sectors?: number[];
}

export interface CrashReport {
  mode: CrashMode;
  /** Replays this crash: pass it to crash(mode, seed) on an identical media. */
  seed: number;
  /** One entry per pending write, in issue order. */
  writes: CrashedWrite[];
}

export interface FaultMediaOptions {
  /** Seeds the PRNG that picks crash outcomes; a random one (see `seed`) if absent. */
  seed?: number;
}

interface PendingWrite {
  /** Completion order; a flush covers every write with a lower or equal sequence. */
  sequence: number;
  offset: number;
  data: Uint8Array;
}

type Pages = Map<number, Uint8Array>;

const ERRNO: Readonly<Record<string, { errno: number; text: string }>> = {
  EIO: { errno: -5, text: 'i/o error' },
  ENOSPC: { errno: -28, text: 'no space left on device' },
  EROFS: { errno: -30, text: 'read-only file system' },
  EDQUOT: { errno: -122, text: 'disk quota exceeded' },
};

export class FaultMedia implements Media {
  readonly size: number;
  /** Memory needs no allocation ahead of writes. */
  readonly allocatesOnWrite = false;
  /** The seed this media's PRNG started from; print it to replay a failing run. */
  readonly seed: number;
  private readonly random: () => number;
  private durable: Pages = new Map();
  private view: Pages = new Map();
  private pending: PendingWrite[] = [];
  private completedWrites = 0;
  private writeFailures: string[] = [];
  private flushFailures: string[] = [];
  private closed = false;
  private report: CrashReport | undefined;
  private counters = { bytesWritten: 0, writes: 0, flushes: 0 };

  constructor(size: number, options: FaultMediaOptions = {}) {
    assert(Number.isSafeInteger(size) && size >= 0, `FaultMedia size ${size} is not a non-negative safe integer`);
    this.size = size;
    this.seed = (options.seed ?? randomSeed()) >>> 0;
    this.random = makeRandom(this.seed);
  }

  /** A media whose durable image is a copy of `image` (all-zero pages stay unallocated). */
  static from(image: Uint8Array, options: FaultMediaOptions = {}): FaultMedia {
    const media = new FaultMedia(image.length, options);
    for (let start = 0; start < image.length; start += FAULT_PAGE_BYTES) {
      const chunk = image.subarray(start, start + FAULT_PAGE_BYTES);
      if (chunk.every((byte) => byte === 0)) continue;
      writePages(media.durable, start, chunk);
      writePages(media.view, start, chunk);
    }
    return media;
  }

  /** Bytes accepted by successful writes, since construction. */
  get bytesWritten(): number {
    return this.counters.bytesWritten;
  }
  /** Successful writes, since construction. */
  get writes(): number {
    return this.counters.writes;
  }
  /** Successful flushes, since construction. */
  get flushes(): number {
    return this.counters.flushes;
  }
  /** Completed writes not yet made durable by a flush. */
  get pendingWrites(): number {
    return this.pending.length;
  }
  /** Set on a media made by crash(): what happened to each pending write. */
  get crashReport(): CrashReport | undefined {
    return this.report;
  }
  get isClosed(): boolean {
    return this.closed;
  }

  async read(buffer: Uint8Array, offset: number): Promise<void> {
    this.checkAccess(buffer.length, offset);
    await tick();
    readPages(this.view, offset, buffer);
  }

  readSync(buffer: Uint8Array, offset: number): void {
    this.checkAccess(buffer.length, offset);
    readPages(this.view, offset, buffer);
  }

  async write(buffer: Uint8Array, offset: number): Promise<void> {
    this.checkAccess(buffer.length, offset);
    const failure = this.writeFailures.shift();
    // Copy now: the caller may reuse its buffer once the promise resolves, and a crash
    // replays the bytes as they were when written.
    const data = new Uint8Array(buffer);
    await tick();
    if (failure !== undefined) throw ioError(failure, 'write');
    writePages(this.view, offset, data);
    this.pending.push({ sequence: ++this.completedWrites, offset, data });
    this.counters.writes++;
    this.counters.bytesWritten += data.length;
  }

  /** write, at once: the engine's inline writes (src/engine/inline.ts) take this path. */
  writeSync(buffer: Uint8Array, offset: number): void {
    this.checkAccess(buffer.length, offset);
    const failure = this.writeFailures.shift();
    if (failure !== undefined) throw ioError(failure, 'write');
    const data = new Uint8Array(buffer);
    writePages(this.view, offset, data);
    this.pending.push({ sequence: ++this.completedWrites, offset, data });
    this.counters.writes++;
    this.counters.bytesWritten += data.length;
  }

  /** As write() of the parts joined (joined now, like write()'s copy). */
  writeParts(parts: readonly Uint8Array[], offset: number): Promise<void> {
    return this.write(Buffer.concat(parts), offset);
  }

  async flush(): Promise<void> {
    this.checkOpen();
    const failure = this.flushFailures.shift();
    const covered = this.completedWrites;
    await tick();
    if (failure !== undefined) throw ioError(failure, 'fdatasync');
    let made = 0;
    while (made < this.pending.length && this.pending[made]!.sequence <= covered) {
      const write = this.pending[made]!;
      writePages(this.durable, write.offset, write.data);
      made++;
    }
    this.pending.splice(0, made);
    this.counters.flushes++;
  }

  /** Marks the media closed; calls already made still complete. Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    // setImmediate runs in order, so this resolves after every call made before close().
    await tick();
  }

  /** The next `count` writes reject with an fs-style error of `code` and change nothing. */
  failNextWrites(count = 1, code = 'EIO'): void {
    assert(Number.isSafeInteger(count) && count >= 0, `failNextWrites count ${count}`);
    for (let i = 0; i < count; i++) this.writeFailures.push(code);
  }

  /** The next `count` flushes reject with an fs-style error of `code`; pending writes stay pending. */
  failNextFlushes(count = 1, code = 'EIO'): void {
    assert(Number.isSafeInteger(count) && count >= 0, `failNextFlushes count ${count}`);
    for (let i = 0; i < count; i++) this.flushFailures.push(code);
  }

  /** Flips one bit in both images, as bit rot would; allowed on a closed media. */
  flipBit(byteOffset: number, bit: number): void {
    assert(Number.isSafeInteger(byteOffset) && byteOffset >= 0 && byteOffset < this.size, `flipBit offset ${byteOffset}`);
    assert(Number.isInteger(bit) && bit >= 0 && bit < 8, `flipBit bit ${bit}`);
    for (const pages of [this.durable, this.view]) {
      const page = pageFor(pages, Math.floor(byteOffset / FAULT_PAGE_BYTES));
      page[byteOffset % FAULT_PAGE_BYTES]! ^= 1 << bit;
    }
  }

  /** A copy of what reads see now (durable + pending). Allocates `size` bytes; allowed when closed. */
  snapshotImage(): Uint8Array {
    const image = new Uint8Array(this.size);
    for (const [index, page] of this.view) {
      const start = index * FAULT_PAGE_BYTES;
      image.set(page.subarray(0, Math.min(FAULT_PAGE_BYTES, this.size - start)), start);
    }
    return image;
  }

  /**
   * A new, open media holding what a power loss now could leave behind. This media is left
   * as it was. `seed` replays a crash; by default it is drawn from this media's PRNG.
   */
  crash(mode: CrashMode, seed: number = Math.floor(this.random() * 4294967296)): FaultMedia {
    // A distinct seed for the new media, so its own crashes do not echo this one's draws.
    const crashed = new FaultMedia(this.size, { seed: (seed ^ 0x9e3779b9) >>> 0 });
    const random = makeRandom(seed);
    crashed.durable = clonePages(this.durable);
    const writes: CrashedWrite[] = [];
    for (const write of this.pending) {
      writes.push(applyAfterCrash(crashed.durable, write, mode, random));
    }
    crashed.view = clonePages(crashed.durable);
    crashed.report = { mode, seed: seed >>> 0, writes };
    return crashed;
  }

  private checkOpen(): void {
    if (this.closed) throw new AtomioError('ERR_CLOSED', 'FaultMedia is closed');
  }

  private checkAccess(length: number, offset: number): void {
    this.checkOpen();
    assert(
      Number.isSafeInteger(offset) && offset >= 0 && offset + length <= this.size,
      `media access [${offset}, ${offset + length}) outside [0, ${this.size})`,
    );
  }
}

/** Decides the fate of one pending write and applies the surviving part to `pages`. */
function applyAfterCrash(pages: Pages, write: PendingWrite, mode: CrashMode, random: () => number): CrashedWrite {
  const { offset, data } = write;
  const entry = { offset, length: data.length };
  if (mode === 'lose-all') return { ...entry, outcome: 'dropped' };
  if (mode === 'keep-all') {
    writePages(pages, offset, data);
    return { ...entry, outcome: 'applied' };
  }
  const firstSector = Math.floor(offset / MEDIA_SECTOR_BYTES);
  const sectorCount = data.length === 0 ? 0 : Math.floor((offset + data.length - 1) / MEDIA_SECTOR_BYTES) - firstSector + 1;
  const roll = random();
  // A write within one sector cannot tear: the medium writes sectors whole.
  if (sectorCount < 2 || roll < 1 / 3) {
    const applied = sectorCount < 2 ? roll < 0.5 : false;
    if (applied) writePages(pages, offset, data);
    return { ...entry, outcome: applied ? 'applied' : 'dropped' };
  }
  if (roll < 2 / 3) {
    writePages(pages, offset, data);
    return { ...entry, outcome: 'applied' };
  }
  const keep = Array.from({ length: sectorCount }, () => random() < 0.5);
  // Torn means some but not all sectors landed; nudge an all-or-nothing draw into that.
  if (keep.every((k) => k === keep[0])) {
    const index = Math.floor(random() * sectorCount);
    keep[index] = !keep[index];
  }
  const sectors: number[] = [];
  for (let i = 0; i < sectorCount; i++) {
    if (!keep[i]) continue;
    const sector = firstSector + i;
    const start = Math.max(offset, sector * MEDIA_SECTOR_BYTES);
    const end = Math.min(offset + data.length, (sector + 1) * MEDIA_SECTOR_BYTES);
    writePages(pages, start, data.subarray(start - offset, end - offset));
    sectors.push(sector);
  }
  return { ...entry, outcome: 'torn', sectors };
}

function pageFor(pages: Pages, index: number): Uint8Array {
  let page = pages.get(index);
  if (page === undefined) {
    page = new Uint8Array(FAULT_PAGE_BYTES);
    pages.set(index, page);
  }
  return page;
}

function writePages(pages: Pages, offset: number, data: Uint8Array): void {
  let done = 0;
  while (done < data.length) {
    const at = offset + done;
    const index = Math.floor(at / FAULT_PAGE_BYTES);
    const within = at - index * FAULT_PAGE_BYTES;
    const count = Math.min(FAULT_PAGE_BYTES - within, data.length - done);
    pageFor(pages, index).set(data.subarray(done, done + count), within);
    done += count;
  }
}

function readPages(pages: Pages, offset: number, buffer: Uint8Array): void {
  let done = 0;
  while (done < buffer.length) {
    const at = offset + done;
    const index = Math.floor(at / FAULT_PAGE_BYTES);
    const within = at - index * FAULT_PAGE_BYTES;
    const count = Math.min(FAULT_PAGE_BYTES - within, buffer.length - done);
    const page = pages.get(index);
    if (page === undefined) buffer.fill(0, done, done + count);
    else buffer.set(page.subarray(within, within + count), done);
    done += count;
  }
}

function clonePages(pages: Pages): Pages {
  const copy: Pages = new Map();
  for (const [index, page] of pages) copy.set(index, new Uint8Array(page));
  return copy;
}

function tick(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

function ioError(code: string, syscall: string): Error {
  const known = ERRNO[code] ?? { errno: -5, text: 'i/o error' };
  return Object.assign(new Error(`${code}: ${known.text}, ${syscall}`), { code, errno: known.errno, syscall });
}
