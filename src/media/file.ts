// FileMedia: a Media over a regular file or a block device, plus the few small-file helpers
// that the upper layers need (no layer but src/media may touch fs).
//
// Invariants:
// - every access lies inside [0, size), checked by assert before any syscall;
// - a regular file is never preallocated: it is sparse, grows only as it is written, and
//   never past `size`; bytes past its end read as zeros;
// - a block device's size is the device's own; `create` is ignored for it;
// - once close() is called no new access starts, and the fd is closed only after every
//   access in flight has finished, so a recycled fd number is never written by mistake.
//
// I/O goes through callback-style fs calls on a raw fd: FileHandle costs an extra promise
// and object per call, and this is the engine's hottest path.

import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { AtomioError } from '../base/errors.js';
import { assert } from '../base/assert.js';
import type { Media } from './media.js';

const openFd = promisify(fs.open);
const fstatFd = promisify(fs.fstat);
const closeFd = promisify(fs.close);
const fdatasyncFd = promisify(fs.fdatasync);

/** Linux reports block device sizes in sysfs in units of 512 bytes, whatever the sector size. */
const SYSFS_SIZE_UNIT_BYTES = 512;
/**
 * A durable write of more than twice this is cut into pieces of at least this size, written
 * side by side (at most DURABLE_WRITE_PIECES at once, libuv's default thread count): an SSD
 * takes several synchronous writes at once much faster than one large one (a 4 MiB batch
 * as four 1 MiB writes: about 1.5 GB/s rather than 1.0 here).
 */
const DURABLE_PIECE_MIN_BYTES = 256 * 1024;
const DURABLE_WRITE_PIECES = 4;
/** Pieces start at multiples of this (the page size), so no two share a page. */
const DURABLE_PIECE_ALIGN = 4096;

export interface FileMediaOptions {
  /** Bytes addressable. For a block device, at most the device's size (which is then used). */
  size: number;
  /** Create the file if it is missing. Ignored for block devices. */
  create: boolean;
}

/**
 * Opens `path` as a Media: a regular file (sparse, grown on write) or a block device.
 *
 * Rejects with the fs error if the file is missing and `create` is false, and with
 * AtomioError ERR_ARGUMENT if `size` is malformed, exceeds a block device's size, or the path
 * is neither a regular file nor a block device.
 *
 * @example
 * const media = await openFileMedia('/data/store/log', { size: 1 << 30, create: true });
 */
export async function openFileMedia(filePath: string, options: FileMediaOptions): Promise<FileMedia> {
  if (!Number.isSafeInteger(options.size) || options.size < 0) {
    throw new AtomioError('ERR_ARGUMENT', `media size must be a non-negative safe integer, got ${options.size}`, {
      path: filePath,
      size: options.size,
    });
  }
  const flags = fs.constants.O_RDWR | (options.create ? fs.constants.O_CREAT : 0);
  const fd = await openFd(filePath, flags, 0o644);
  try {
    const stat = await fstatFd(fd);
    if (stat.isBlockDevice()) {
      const deviceBytes = await blockDeviceBytes(stat.rdev);
      if (options.size > deviceBytes) {
        throw new AtomioError(
          'ERR_ARGUMENT',
          `media size ${options.size} exceeds block device ${filePath} of ${deviceBytes} bytes; ask for at most that`,
          { path: filePath, size: options.size, deviceBytes },
        );
      }
      return new FileMedia(fd, filePath, deviceBytes, true);
    }
    if (!stat.isFile()) {
      throw new AtomioError('ERR_ARGUMENT', `${filePath} is neither a regular file nor a block device`, {
        path: filePath,
      });
    }
    return new FileMedia(fd, filePath, options.size, false, stat.blocks * 512 >= options.size && options.size > 0);
  } catch (error) {
    await closeFd(fd).catch(() => undefined);
    throw error;
  }
}

/** Splits a Linux dev_t (glibc encoding) into its major and minor numbers. */
export function deviceNumbers(rdev: number | bigint): { major: number; minor: number } {
  const dev = BigInt(rdev);
  const major = ((dev >> 8n) & 0xfffn) | ((dev >> 32n) & ~0xfffn);
  const minor = (dev & 0xffn) | ((dev >> 12n) & ~0xffn);
  return { major: Number(major), minor: Number(minor) };
}

/** The size in bytes of the block device numbered `rdev`, from sysfs (Linux only). */
export async function blockDeviceBytes(rdev: number | bigint): Promise<number> {
  const { major, minor } = deviceNumbers(rdev);
  const sysfsPath = `/sys/dev/block/${major}:${minor}/size`;
  let text: string;
  try {
    text = await fsp.readFile(sysfsPath, 'utf8');
  } catch (error) {
    throw new AtomioError(
      'ERR_ARGUMENT',
      `cannot learn the size of block device ${major}:${minor} (${sysfsPath} unreadable); block devices are supported on Linux only`,
      { major, minor },
      { cause: error },
    );
  }
  const units = Number(text.trim());
  assert(Number.isSafeInteger(units) && units >= 0, `sysfs size of ${major}:${minor} is ${JSON.stringify(text)}`);
  return units * SYSFS_SIZE_UNIT_BYTES;
}

export class FileMedia implements Media {
  readonly size: number;
  readonly path: string;
  readonly isBlockDevice: boolean;
  readonly allocatesOnWrite: boolean;
  private fd: number;
  /** The same file opened O_DSYNC: a write through it and its flush are one system call. */
  private syncFd = -1;
  private closing: Promise<void> | undefined;
  private inFlight = 0;
  private onDrained: (() => void) | undefined;

  /**
   * Use openFileMedia(); the fd becomes owned by this object. `allocated`: a regular file
   * whose blocks already cover `size` (preallocated), where writes allocate nothing.
   */
  constructor(fd: number, filePath: string, size: number, isBlockDevice: boolean, allocated = false) {
    assert(Number.isSafeInteger(fd) && fd >= 0, `bad fd ${fd}`);
    assert(Number.isSafeInteger(size) && size >= 0, `bad media size ${size}`);
    this.fd = fd;
    this.path = filePath;
    this.size = size;
    this.isBlockDevice = isBlockDevice;
    this.allocatesOnWrite = !isBlockDevice && !allocated;
  }

  async read(buffer: Uint8Array, offset: number): Promise<void> {
    const fd = this.begin(buffer.length, offset);
    try {
      await readFully(fd, buffer, offset);
    } finally {
      this.end();
    }
  }

  readSync(buffer: Uint8Array, offset: number): void {
    const fd = this.begin(buffer.length, offset);
    try {
      let done = 0;
      while (done < buffer.length) {
        const n = fs.readSync(fd, buffer, done, buffer.length - done, offset + done);
        if (n === 0) {
          buffer.fill(0, done);
          return;
        }
        done += n;
      }
    } finally {
      this.end();
    }
  }

  async write(buffer: Uint8Array, offset: number): Promise<void> {
    const fd = this.begin(buffer.length, offset);
    try {
      await writeFully(fd, buffer, offset);
    } finally {
      this.end();
    }
  }

  writeSync(buffer: Uint8Array, offset: number): void {
    const fd = this.begin(buffer.length, offset);
    try {
      writeFullySync(fd, buffer, offset);
    } finally {
      this.end();
    }
  }

  writeDurable(buffer: Uint8Array, offset: number): Promise<void> {
    return this.writePartsDurable([buffer], offset);
  }

  writeDurableSync(buffer: Uint8Array, offset: number): void {
    this.begin(buffer.length, offset);
    try {
      writeFullySync(this.durableFd(), buffer, offset);
    } finally {
      this.end();
    }
  }

  async writeParts(parts: readonly Uint8Array[], offset: number): Promise<void> {
    const fd = this.begin(partsBytes(parts), offset);
    try {
      await writevFully(fd, parts, offset);
    } finally {
      this.end();
    }
  }

  /** The O_DSYNC descriptor, opened at first use (synchronously: two callers never race to open it). */
  private durableFd(): number {
    if (this.syncFd < 0) this.syncFd = fs.openSync(this.path, fs.constants.O_RDWR | fs.constants.O_DSYNC, 0o644);
    return this.syncFd;
  }

  async writePartsDurable(parts: readonly Uint8Array[], offset: number): Promise<void> {
    const bytes = partsBytes(parts);
    this.begin(bytes, offset);
    try {
      const fd = this.durableFd();
      if (bytes < 2 * DURABLE_PIECE_MIN_BYTES) {
        await writevFully(fd, parts, offset);
      } else {
        await settleThenThrow(pieceCuts(bytes, offset).map(([from, end]) => writevFully(fd, sliceParts(parts, from, end), offset + from)));
      }
    } finally {
      this.end();
    }
  }

  async flush(): Promise<void> {
    const fd = this.begin(0, 0);
    try {
      await fdatasyncFd(fd);
    } finally {
      this.end();
    }
  }

  /** Waits for accesses in flight, then closes the fd. Idempotent. */
  close(): Promise<void> {
    this.closing ??= this.closeWhenDrained();
    return this.closing;
  }

  private async closeWhenDrained(): Promise<void> {
    if (this.inFlight > 0) await new Promise<void>((resolve) => (this.onDrained = resolve));
    const fd = this.fd;
    this.fd = -1;
    if (this.syncFd >= 0) await closeFd(this.syncFd).catch(() => undefined);
    this.syncFd = -1;
    await closeFd(fd);
  }

  private begin(length: number, offset: number): number {
    if (this.closing !== undefined) {
      throw new AtomioError('ERR_CLOSED', `media ${this.path} is closed`, { path: this.path });
    }
    assert(
      Number.isSafeInteger(offset) && offset >= 0 && offset + length <= this.size,
      `media access [${offset}, ${offset + length}) outside [0, ${this.size}) of ${this.path}`,
    );
    this.inFlight++;
    return this.fd;
  }

  private end(): void {
    this.inFlight--;
    if (this.inFlight === 0 && this.onDrained !== undefined) {
      const resolve = this.onDrained;
      this.onDrained = undefined;
      resolve();
    }
  }
}

/** Reads until `buffer` is full; what lies past end of file reads as zeros. */
function readFully(fd: number, buffer: Uint8Array, position: number): Promise<void> {
  return new Promise((resolve, reject) => {
    let done = 0;
    const step = (): void => {
      if (done === buffer.length) return resolve();
      fs.read(fd, buffer, done, buffer.length - done, position + done, (error, bytesRead) => {
        if (error) return reject(error);
        if (bytesRead === 0) {
          buffer.fill(0, done);
          return resolve();
        }
        done += bytesRead;
        step();
      });
    };
    step();
  });
}

/** writeFully, blocking. */
function writeFullySync(fd: number, buffer: Uint8Array, position: number): void {
  let done = 0;
  while (done < buffer.length) {
    const n = fs.writeSync(fd, buffer, done, buffer.length - done, position + done);
    if (n === 0) throw stuckWriteError();
    done += n;
  }
}

/** Writes all of `buffer`; a short write (signal, quota edge) continues where it stopped. */
function writeFully(fd: number, buffer: Uint8Array, position: number): Promise<void> {
  return writeAll(buffer.length, (done, callback) => fs.write(fd, buffer, done, buffer.length - done, position + done, callback));
}

/** Writes all of `parts` back to back, as writeFully does one buffer. */
function writevFully(fd: number, parts: readonly Uint8Array[], position: number): Promise<void> {
  const total = partsBytes(parts);
  return writeAll(total, (done, callback) => fs.writev(fd, done === 0 ? (parts as Uint8Array[]) : sliceParts(parts, done, total), position + done, callback));
}

/** Issues writes until `total` bytes are written, each continuing where the last stopped. */
function writeAll(total: number, issue: (done: number, callback: (error: Error | null, bytesWritten: number) => void) => void): Promise<void> {
  return new Promise((resolve, reject) => {
    let done = 0;
    const step = (): void => {
      if (done === total) return resolve();
      issue(done, (error, bytesWritten) => {
        if (error) return reject(error);
        if (bytesWritten === 0) return reject(stuckWriteError());
        done += bytesWritten;
        step();
      });
    };
    step();
  });
}

/** A zero-byte write would loop forever; the kernel only does it when the device is stuck. */
function stuckWriteError(): Error {
  return Object.assign(new Error('EIO: i/o error, write (wrote 0 bytes)'), { code: 'EIO', errno: -5 });
}

function partsBytes(parts: readonly Uint8Array[]): number {
  let bytes = 0;
  for (const p of parts) bytes += p.length;
  return bytes;
}

/** The bytes [from, end) of the concatenation of `parts`, as views. */
function sliceParts(parts: readonly Uint8Array[], from: number, end: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  let pos = 0;
  for (const p of parts) {
    const next = pos + p.length;
    if (next > from && pos < end) out.push(pos >= from && next <= end ? p : p.subarray(Math.max(0, from - pos), Math.min(p.length, end - pos)));
    pos = next;
    if (pos >= end) break;
  }
  return out;
}

/** True if something exists at `filePath`; other errors than "missing" reject. */
export async function fileExists(filePath: string): Promise<boolean> {
  try {
    await fsp.stat(filePath);
    return true;
  } catch (error) {
    if (errorCode(error) === 'ENOENT') return false;
    throw error;
  }
}

/** Creates `dirPath` and its parents if missing. */
export async function ensureDirectory(dirPath: string): Promise<void> {
  await fsp.mkdir(dirPath, { recursive: true });
}

/** The whole file, or undefined if it does not exist. */
export async function readSmallFile(filePath: string): Promise<Buffer | undefined> {
  try {
    return await fsp.readFile(filePath);
  } catch (error) {
    if (errorCode(error) === 'ENOENT') return undefined;
    throw error;
  }
}

let temporaryCounter = 0;

/**
 * Replaces `filePath` with `data` so that after a crash it holds either the old or the new
 * content, never a mix: write a temporary file, fsync it, rename it over, fsync the directory.
 */
export async function writeSmallFileDurably(filePath: string, data: Uint8Array): Promise<void> {
  const temporary = `${filePath}.tmp-${process.pid}-${temporaryCounter++}`;
  try {
    const handle = await fsp.open(temporary, 'w', 0o644);
    try {
      await handle.writeFile(data);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await fsp.rename(temporary, filePath);
  } catch (error) {
    await fsp.rm(temporary, { force: true });
    throw error;
  }
  await syncDirectory(path.dirname(filePath));
}

/** Makes a rename or create in `dirPath` durable. */
export async function syncDirectory(dirPath: string): Promise<void> {
  const handle = await fsp.open(dirPath, 'r');
  try {
    await handle.sync();
  } catch (error) {
    // Some file systems refuse fsync on a directory; they order metadata themselves.
    const code = errorCode(error);
    if (code !== 'EINVAL' && code !== 'EISDIR' && code !== 'EPERM') throw error;
  } finally {
    await handle.close();
  }
}

/**
 * Where a durable write of `bytes` at `position` is cut: up to DURABLE_WRITE_PIECES pieces
 * of at least DURABLE_PIECE_MIN_BYTES, as [from, end) within the write, cut at page
 * boundaries of the medium (not of the buffer): the first piece ends on one.
 */
function pieceCuts(bytes: number, position: number): [number, number][] {
  const pieces = Math.min(DURABLE_WRITE_PIECES, Math.floor(bytes / DURABLE_PIECE_MIN_BYTES));
  const step = Math.ceil(bytes / pieces / DURABLE_PIECE_ALIGN) * DURABLE_PIECE_ALIGN;
  const cuts: [number, number][] = [];
  let from = 0;
  while (from < bytes) {
    const end = Math.min(bytes, from === 0 ? step - (position % DURABLE_PIECE_ALIGN) : from + step);
    cuts.push([from, end]);
    from = end;
  }
  return cuts;
}

/**
 * Settles only when every one of `ios` has (so that no I/O is still in flight when the
 * caller hears of a failure), and then rejects with the first failure if any.
 */
async function settleThenThrow(ios: Promise<void>[]): Promise<void> {
  const results = await Promise.allSettled(ios);
  for (const r of results) if (r.status === 'rejected') throw r.reason;
}

function errorCode(error: unknown): string | undefined {
  return typeof error === 'object' && error !== null && 'code' in error && typeof error.code === 'string'
    ? error.code
    : undefined;
}
