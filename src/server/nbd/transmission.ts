// The transmission phase: requests in, replies out, many in flight at once.
//
// One loop reads requests; each is handled on its own and replies when done, so replies go
// out in completion order (the cookie tells the client which is which).
//
// Invariants:
// - memory per connection is bounded: before a request is read on, its payload or reply
//   bytes (a read's data, a block status reply's descriptors) are reserved against MAX_IN_FLIGHT_BYTES and it counts against
//   MAX_IN_FLIGHT_REQUESTS; the reservation is returned only once the reply has been handed
//   to the socket, so a client that stops reading replies stops being read from; large
//   payload and read buffers are reused (BufferPool), each given back only once its reply is
//   handed to the socket, with at most MAX_IDLE_BYTES kept idle;
// - every request gets exactly one reply (a simple reply, or structured chunks ending with
//   NBD_REPLY_FLAG_DONE), except NBD_CMD_DISC, which has none;
// - a reply is sent only after what it acknowledges is done: a write's reply after the block
//   face resolved it; a FUA write's or FLUSH's after the Flusher resolved;
// - a request the server cannot parse (bad magic) ends the connection; every other mistake
//   is answered with an error and the connection carries on;
// - no exception escapes a request: failures become NBD errors (internal ones are logged);
// - the socket is corked only while the loop answers reads it has already received, never
//   while it waits or while any other request starts.

import type { Socket } from 'node:net';
import { assert } from '../../base/assert.js';
import { isAtomioError } from '../../base/errors.js';
import type { VolumeDisk } from './disk.js';
import type { Flusher } from './flush.js';
import { InputEnded, type ByteInput } from './input.js';
import { BufferPool, MIN_POOLED_BYTES } from './pool.js';
import {
  BASE_ALLOCATION_ID,
  MAX_BLOCK_STATUS_DESCRIPTORS,
  MAX_REQUEST_BYTES,
  NBD_CMD_BLOCK_STATUS,
  NBD_CMD_CACHE,
  NBD_CMD_DISC,
  NBD_CMD_FLAG_DF,
  NBD_CMD_FLAG_FAST_ZERO,
  NBD_CMD_FLAG_FUA,
  NBD_CMD_FLAG_NO_HOLE,
  NBD_CMD_FLAG_REQ_ONE,
  NBD_CMD_FLUSH,
  NBD_CMD_READ,
  NBD_CMD_TRIM,
  NBD_CMD_WRITE,
  NBD_CMD_WRITE_ZEROES,
  NBD_EINVAL,
  NBD_EIO,
  NBD_ENOSPC,
  NBD_ENOTSUP,
  NBD_EOVERFLOW,
  NBD_EPERM,
  NBD_ESHUTDOWN,
  NBD_REPLY_FLAG_DONE,
  NBD_REQUEST_MAGIC,
  NBD_STATE_HOLE,
  NBD_STATE_ZERO,
  REQUEST_HEADER_BYTES,
  STRUCTURED_REPLY_HEADER_BYTES,
} from './protocol.js';
import { blockStatusChunk, errorChunk, noneChunk, offsetDataHeader, offsetHoleChunk, simpleReply } from './wire.js';

/** Payload and reply bytes one connection may have in flight (a lone larger request still runs). */
export const MAX_IN_FLIGHT_BYTES = 48 * 1024 * 1024;
/** Requests one connection may have in flight. */
export const MAX_IN_FLIGHT_REQUESTS = 256;

export interface TransmissionIo {
  input: ByteInput;
  socket: Socket;
  disk: VolumeDisk;
  flusher: Flusher;
  structured: boolean;
  /** base:allocation was selected for this export. */
  baseAllocation: boolean;
  log(message: string): void;
}

export type TransmissionEnd =
  | { kind: 'disc' }
  | { kind: 'ended'; reason: string }
  | { kind: 'disconnect'; reason: string };

interface Request {
  flags: number;
  type: number;
  /** 8 bytes, echoed in the reply. */
  cookie: Buffer;
  offset: number;
  length: number;
  /** WRITE only. */
  data: Buffer | undefined;
  /** Bytes reserved for this request. */
  reserved: number;
  /** A pooled buffer this request holds (its payload, or what its read was read into), given back when it is answered. */
  held: Buffer | undefined;
}

/** An error answered to the client with `errno`. */
class NbdError extends Error {
  constructor(
    readonly errno: number,
    message: string,
  ) {
    super(message);
  }
}

/** `parts`, once it is sure they hold exactly `length` bytes: a reply's header promises that many. */
function whole(parts: Buffer[], length: number): Buffer[] {
  let bytes = 0;
  for (const p of parts) bytes += p.length;
  assert(bytes === length, `a read's parts hold ${bytes} bytes, not ${length}`);
  return parts;
}

/** The most bytes a block status reply to `r` can take: a descriptor per sector it touches, within the cap. */
function statusReplyBytes(r: Request, sectorSize: number): number {
  const sectors = Math.ceil((r.offset + r.length) / sectorSize) - Math.floor(r.offset / sectorSize);
  const descriptors = (r.flags & NBD_CMD_FLAG_REQ_ONE) !== 0 ? 1 : Math.min(MAX_BLOCK_STATUS_DESCRIPTORS, Math.max(1, sectors));
  return STRUCTURED_REPLY_HEADER_BYTES + 4 + 8 * descriptors;
}

const COMMAND_NAMES: Record<number, string> = {
  [NBD_CMD_READ]: 'READ',
  [NBD_CMD_WRITE]: 'WRITE',
  [NBD_CMD_DISC]: 'DISC',
  [NBD_CMD_FLUSH]: 'FLUSH',
  [NBD_CMD_TRIM]: 'TRIM',
  [NBD_CMD_CACHE]: 'CACHE',
  [NBD_CMD_WRITE_ZEROES]: 'WRITE_ZEROES',
  [NBD_CMD_BLOCK_STATUS]: 'BLOCK_STATUS',
};

export class Transmission {
  private inFlightBytes = 0;
  private inFlightCount = 0;
  private wake: (() => void) | undefined;
  private idleWaiters: (() => void)[] = [];
  /** The most payload and reply bytes this connection has held at once. */
  peakInFlightBytes = 0;
  /** Large payload and read buffers, reused from request to request. */
  private readonly pool = new BufferPool();
  /** The socket is corked while the loop answers reads already received (see corkForRead). */
  private corked = false;

  constructor(private readonly io: TransmissionIo) {}

  /** Requests being handled or whose replies are not yet handed to the socket. */
  get inFlight(): number {
    return this.inFlightCount;
  }

  /** Payload and reply bytes reserved by the requests in flight. */
  get inFlightBytesNow(): number {
    return this.inFlightBytes;
  }

  /** Reads and starts requests until the client disconnects, the input is closed, or a request cannot be parsed. */
  async run(): Promise<TransmissionEnd> {
    const { input } = this.io;
    try {
      for (;;) {
        if (input.bufferedBytes < REQUEST_HEADER_BYTES) this.uncorkSoon();
        const header = await input.take(REQUEST_HEADER_BYTES);
        if (header.readUInt32BE(0) !== NBD_REQUEST_MAGIC) {
          return { kind: 'disconnect', reason: `a request with magic 0x${header.readUInt32BE(0).toString(16)}` };
        }
        const request: Request = {
          flags: header.readUInt16BE(4),
          type: header.readUInt16BE(6),
          cookie: Buffer.from(header.subarray(8, 16)),
          offset: header.readUInt32BE(16) * 2 ** 32 + header.readUInt32BE(20),
          length: header.readUInt32BE(24),
          data: undefined,
          reserved: 0,
          held: undefined,
        };
        if (request.type === NBD_CMD_DISC) return { kind: 'disc' };
        if (request.type === NBD_CMD_READ) this.corkForRead();
        else this.uncork();
        if (request.type === NBD_CMD_WRITE) {
          if (request.length > MAX_REQUEST_BYTES) {
            // Skipped unread; answered EINVAL below.
            await input.skip(request.length);
            await this.reserve(request, 0);
          } else {
            await this.reserve(request, request.length);
            try {
              const into = request.length >= MIN_POOLED_BYTES ? this.pool.take(request.length) : undefined;
              request.held = into;
              request.data = await input.take(request.length, into?.subarray(0, request.length));
            } catch (error) {
              this.inFlightBytes -= request.reserved;
              throw error;
            }
          }
        } else if (request.type === NBD_CMD_READ) {
          await this.reserve(request, Math.min(request.length, MAX_REQUEST_BYTES));
        } else if (request.type === NBD_CMD_BLOCK_STATUS) {
          await this.reserve(request, statusReplyBytes(request, this.io.disk.sectorSize));
        } else {
          await this.reserve(request, 0);
        }
        this.start(request);
      }
    } catch (error) {
      if (error instanceof InputEnded) return { kind: 'ended', reason: error.message };
      throw error;
    } finally {
      this.uncork();
    }
  }

  /** Resolves once every started request has been answered (its reply handed to the socket). */
  idle(): Promise<void> {
    if (this.inFlightCount === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /**
   * Reads the loop answers one after another, from requests already received, mostly come
   * from the page cache at once: their replies go out together, in one system call rather
   * than one each (on loopback each send also runs the client's side of TCP). The cork
   * holds only while the loop works through what it has: it is taken off before any other
   * request starts (a write's reply must not wait behind the writes after it) and before the
   * loop waits for anything, as a reply still corked would never call back to make room.
   */
  private corkForRead(): void {
    if (this.corked || this.io.input.bufferedBytes < REQUEST_HEADER_BYTES) return;
    this.corked = true;
    this.io.socket.cork();
  }

  private uncork(): void {
    if (!this.corked) return;
    this.corked = false;
    this.io.socket.uncork();
  }

  /** Uncorks after the replies of requests just started (settled, their callbacks queued) are written. */
  private uncorkSoon(): void {
    if (this.corked) queueMicrotask(this.uncorkNow);
  }

  private readonly uncorkNow = (): void => this.uncork();

  /** Waits for room for `bytes` more in flight, then takes it (and one request slot). */
  private async reserve(request: Request, bytes: number): Promise<void> {
    while (
      this.inFlightCount >= MAX_IN_FLIGHT_REQUESTS ||
      (this.inFlightBytes > 0 && this.inFlightBytes + bytes > MAX_IN_FLIGHT_BYTES)
    ) {
      this.uncorkSoon();
      await new Promise<void>((resolve) => (this.wake = resolve));
    }
    this.inFlightBytes += bytes;
    if (this.inFlightBytes > this.peakInFlightBytes) this.peakInFlightBytes = this.inFlightBytes;
    request.reserved = bytes;
  }

  private start(request: Request): void {
    this.inFlightCount++;
    try {
      this.handle(request);
    } catch (error) {
      this.answer(request, () => this.errorReply(request, error));
    }
  }

  /**
   * Replies to `r` once `work` settles: with build(value), or with the error it rejected with.
   *
   * The reply is sent from the callback attached to `work` itself, in the first microtask that
   * sees it settle. That matters: the engine resolves a batch's commits together and resumes
   * its pipeline a microtask or two later, where it encodes the next batch synchronously
   * (about 0.8 ms per MiB). A reply behind a longer chain of awaits goes out only after that
   * encode, and the client's next requests wait for it.
   */
  private after<T>(r: Request, work: Promise<T>, build: (value: T) => Buffer[]): void {
    work.then(
      (value) => this.answer(r, () => build(value)),
      (error: unknown) => this.answer(r, () => this.errorReply(r, error)),
    );
  }

  /** Sends the reply `build` makes; building an error reply cannot fail, and if it did the connection is beyond saving. */
  private answer(r: Request, build: () => Buffer[]): void {
    let parts: Buffer[];
    try {
      parts = build();
    } catch (error) {
      try {
        parts = this.errorReply(r, error);
      } catch (inner) {
        this.io.log(`nbd: internal error answering a request: ${String(inner)}`);
        this.io.socket.destroy();
        this.finish(r);
        return;
      }
    }
    this.send(parts, () => this.finish(r));
  }

  private finish(request: Request): void {
    if (request.held !== undefined) this.pool.give(request.held);
    request.held = undefined;
    this.inFlightBytes -= request.reserved;
    this.inFlightCount--;
    const wake = this.wake;
    this.wake = undefined;
    wake?.();
    if (this.inFlightCount === 0) for (const resolve of this.idleWaiters.splice(0)) resolve();
  }

  /** Queues reply parts on the socket; `done` runs once they are handed over (or the socket is gone). */
  private send(parts: Buffer[], done: () => void): void {
    const socket = this.io.socket;
    if (socket.destroyed || !socket.writable) {
      done();
      return;
    }
    if (parts.length === 1) {
      socket.write(parts[0]!, () => done());
      return;
    }
    socket.cork();
    for (let i = 0; i < parts.length - 1; i++) socket.write(parts[i]!);
    socket.write(parts[parts.length - 1]!, () => done());
    socket.uncork();
  }

  /**
   * Starts the request; its reply is sent when it is done (see after()). Throws NbdError (or
   * an AtomioError) for a request answered with an error at once.
   */
  private handle(r: Request): void {
    const { disk, flusher, structured } = this.io;
    switch (r.type) {
      case NBD_CMD_READ: {
        this.checkFlags(r, NBD_CMD_FLAG_FUA | (structured ? NBD_CMD_FLAG_DF : 0));
        if (r.length > MAX_REQUEST_BYTES) {
          throw new NbdError(structured ? NBD_EOVERFLOW : NBD_EINVAL, `a read is at most ${MAX_REQUEST_BYTES} bytes`);
        }
        this.checkBounds(r, NBD_EINVAL);
        const allocate = (bytes: number): Buffer => this.hold(r, bytes);
        if (!structured) {
          this.after(r, disk.readParts(r.offset, r.length, allocate), (parts) => [simpleReply(r.cookie, 0), ...whole(parts, r.length)]);
        } else if (r.length === 0) {
          this.answer(r, () => [noneChunk(r.cookie)]);
        } else if ((r.flags & NBD_CMD_FLAG_DF) === 0 && disk.isHole(r.offset, r.length)) {
          this.answer(r, () => [offsetHoleChunk(r.cookie, NBD_REPLY_FLAG_DONE, r.offset, r.length)]);
        } else {
          // The data is in hand when the reply is built, so no error can follow it: this chunk can be the last.
          this.after(r, disk.readParts(r.offset, r.length, allocate), (parts) => [offsetDataHeader(r.cookie, NBD_REPLY_FLAG_DONE, r.offset, r.length), ...whole(parts, r.length)]);
        }
        return;
      }
      case NBD_CMD_WRITE: {
        this.checkFlags(r, NBD_CMD_FLAG_FUA);
        if (r.length > MAX_REQUEST_BYTES) throw new NbdError(NBD_EINVAL, `a write is at most ${MAX_REQUEST_BYTES} bytes`);
        this.checkWritable();
        this.checkBounds(r, NBD_ENOSPC);
        this.after(r, this.fua(r, disk.write(r.offset, r.data!)), () => this.ok(r));
        return;
      }
      case NBD_CMD_FLUSH: {
        this.checkFlags(r, NBD_CMD_FLAG_FUA);
        if (r.offset !== 0 || r.length !== 0) throw new NbdError(NBD_EINVAL, 'a flush has offset and length 0');
        this.after(r, flusher.flush(), () => this.ok(r));
        return;
      }
      case NBD_CMD_TRIM: {
        this.checkFlags(r, NBD_CMD_FLAG_FUA);
        this.checkWritable();
        this.checkBounds(r, NBD_EINVAL);
        this.after(r, this.fua(r, disk.trim(r.offset, r.length)), () => this.ok(r));
        return;
      }
      case NBD_CMD_CACHE: {
        // Nothing to warm: the maps are in memory and reads go to the medium. Bounds still hold.
        this.checkFlags(r, NBD_CMD_FLAG_FUA);
        this.checkBounds(r, NBD_EINVAL);
        this.answer(r, () => this.ok(r));
        return;
      }
      case NBD_CMD_WRITE_ZEROES: {
        this.checkFlags(r, NBD_CMD_FLAG_FUA | NBD_CMD_FLAG_NO_HOLE | NBD_CMD_FLAG_FAST_ZERO);
        this.checkWritable();
        this.checkBounds(r, NBD_ENOSPC);
        const noHole = (r.flags & NBD_CMD_FLAG_NO_HOLE) !== 0;
        if ((r.flags & NBD_CMD_FLAG_FAST_ZERO) !== 0 && (noHole || !disk.canZeroFast(r.offset, r.length))) {
          // Decided before touching anything, so the export is unchanged.
          throw new NbdError(NBD_ENOTSUP, noHole ? 'zeroing with NO_HOLE writes zeros: not faster than a write' : 'no whole sector to trim: not faster than a write');
        }
        this.after(r, this.fua(r, disk.writeZeroes(r.offset, r.length, noHole)), () => this.ok(r));
        return;
      }
      case NBD_CMD_BLOCK_STATUS: {
        this.checkFlags(r, NBD_CMD_FLAG_FUA | NBD_CMD_FLAG_REQ_ONE);
        if (!this.io.baseAllocation) throw new NbdError(NBD_EINVAL, 'no metadata context was selected (NBD_OPT_SET_META_CONTEXT base:allocation)');
        if (r.length === 0) throw new NbdError(NBD_EINVAL, 'a block status query of length 0');
        this.checkBounds(r, NBD_EINVAL);
        const max = (r.flags & NBD_CMD_FLAG_REQ_ONE) !== 0 ? 1 : MAX_BLOCK_STATUS_DESCRIPTORS;
        const extents = disk.blockStatus(r.offset, r.length, max);
        const descriptors = extents.map((e) => ({ length: e.length, flags: e.hole ? NBD_STATE_HOLE | NBD_STATE_ZERO : 0 }));
        this.answer(r, () => [blockStatusChunk(r.cookie, BASE_ALLOCATION_ID, descriptors)]);
        return;
      }
      default:
        throw new NbdError(NBD_EINVAL, `unknown command ${r.type}`);
    }
  }

  /** A buffer of `bytes` for `r` to read into; pooled (and given back when `r` is answered) when large. */
  private hold(r: Request, bytes: number): Buffer {
    if (bytes < MIN_POOLED_BYTES || r.held !== undefined) return Buffer.allocUnsafe(bytes);
    r.held = this.pool.take(bytes);
    return r.held.subarray(0, bytes);
  }

  private ok(r: Request): Buffer[] {
    return [simpleReply(r.cookie, 0)];
  }

  /** `done`, followed by a flush when the request carries FUA (`done` itself otherwise, so no microtask is added). */
  private fua(r: Request, done: Promise<unknown>): Promise<unknown> {
    if ((r.flags & NBD_CMD_FLAG_FUA) === 0) return done;
    return done.then(() => this.io.flusher.flush());
  }

  private checkFlags(r: Request, allowed: number): void {
    const extra = r.flags & ~allowed;
    if (extra !== 0) throw new NbdError(NBD_EINVAL, `flags 0x${extra.toString(16)} are not valid on ${COMMAND_NAMES[r.type] ?? r.type}`);
  }

  private checkWritable(): void {
    if (this.io.disk.readOnly) throw new NbdError(NBD_EPERM, 'the export is read-only');
  }

  private checkBounds(r: Request, errno: number): void {
    const size = this.io.disk.size;
    if (r.offset > size || r.length > size - r.offset) {
      throw new NbdError(errno, `[${r.offset}, +${r.length}) runs past the end of the export (${size} bytes)`);
    }
  }

  private errorReply(r: Request, error: unknown): Buffer[] {
    const { errno, message } = this.describe(r, error);
    if (this.io.structured) return [errorChunk(r.cookie, errno, message)];
    return [simpleReply(r.cookie, errno)];
  }

  private describe(r: Request, error: unknown): { errno: number; message: string } {
    if (error instanceof NbdError) return { errno: error.errno, message: error.message };
    if (isAtomioError(error)) {
      switch (error.code) {
        case 'ERR_NO_SPACE':
          return { errno: NBD_ENOSPC, message: error.message };
        case 'ERR_ARGUMENT':
        case 'ERR_LIMIT':
          return { errno: NBD_EINVAL, message: error.message };
        case 'ERR_CLOSED':
          return { errno: NBD_ESHUTDOWN, message: error.message };
        default:
          // ERR_CORRUPT, ERR_IO, ERR_CONDITION (an RMW that kept losing), and the rest.
          return { errno: NBD_EIO, message: `${error.code}: ${error.message}` };
      }
    }
    this.io.log(`nbd: ${COMMAND_NAMES[r.type] ?? r.type} at ${r.offset} +${r.length} failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`);
    return { errno: NBD_EIO, message: 'internal server error' };
  }
}
