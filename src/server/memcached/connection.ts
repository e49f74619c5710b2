// One memcached client connection: bytes in, requests run in order, replies out in order.
//
// Invariants:
// - replies go out in the order of the requests (pipelining): a write in flight holds a slot
//   in `queue`, and every reply behind it waits there until it is answered;
// - an exclusive request (one that reads the store) starts only when no write of this
//   connection is in flight, so it sees all of them; nothing of the connection runs beside it;
// - an exclusive request read during an I/O callback runs in the check phase of the same turn
//   of the event loop, after the store started the group commit of the turn's writes
//   (turn.ts): a set never waits for the reads that arrived beside it;
// - memory is bounded: unparsed input holds at most one line (MAX_LINE_BYTES, or
//   MAX_RETRIEVAL_LINE_BYTES for get/gets/gat/gats) or one data block (at most the item size
//   limit; larger ones are discarded as they arrive) plus one socket chunk (plus
//   HOLD_INPUT_BYTES while reads wait for the check phase); at most
//   MAX_IN_FLIGHT_WRITES writes holding MAX_IN_FLIGHT_BYTES of data are in flight; and no
//   request starts while the socket holds more than OUTPUT_HIGH_WATER_BYTES unsent: then the
//   socket is paused, so a client that does not read its replies stops being read;
// - a line with no newline within its limit is answered SERVER_ERROR and the connection
//   closes (the only close the spec allows besides quit); every other mistake is answered
//   and the connection carries on;
// - shutdown() (or the client ending its side) stops reading requests, lets the ones read
//   finish and be answered, then ends the socket; after LINGER_MS it is destroyed.

import type { Socket } from 'node:net';
import { isAtomioError } from '../../base/errors.js';
import { serverErrorLine } from './cache.js';
import { ERR, MAX_KEY_BYTES, MAX_LINE_BYTES, MAX_RETRIEVAL_LINE_BYTES, line } from './protocol.js';
import type { Output, Reply, Request, ServerState } from './request.js';
import { getOne, parseCommand, parseSetLine } from './text.js';

/** Data blocks larger than this are gathered into their own buffer as they arrive. */
const LARGE_DATA_BYTES = 64 * 1024;
/** No request starts while the socket holds more unsent bytes than this. */
export const OUTPUT_HIGH_WATER_BYTES = 4 * 1024 * 1024;
/** Writes one connection may have in flight. */
export const MAX_IN_FLIGHT_WRITES = 256;
/** Data bytes those writes may hold (a lone larger one still runs). */
export const MAX_IN_FLIGHT_BYTES = 16 * 1024 * 1024;
/** Replies gathered in one pump up to this many bytes are copied into one buffer; more go as a vectored write. */
const GATHER_COPY_BYTES = 64 * 1024;
/** Unparsed input beyond this, held for the turn's reads, pauses the socket until they ran. */
const HOLD_INPUT_BYTES = 64 * 1024;
/** How long an ended connection waits for the client to close before destroying the socket. */
export const LINGER_MS = 5_000;

const EMPTY = Buffer.alloc(0);

interface Slot {
  reply: Reply;
  done: boolean;
}

interface Ready {
  request: Request;
  data: Buffer | undefined;
}

interface Collecting {
  request: Request;
  /** Data bytes + 2 (CRLF). */
  need: number;
  target: Buffer | undefined;
  filled: number;
}

export class Connection {
  /** Resolves when the socket has closed. */
  readonly closed: Promise<void>;
  /** Received bytes: [pos, end) are not parsed yet. A received chunk, or our own storage. */
  private buf: Buffer = EMPTY;
  private pos = 0;
  private end = 0;
  /** `buf` is storage this connection allocated (bytes past `end` are garbage). */
  private owned = false;
  /** Bytes after `pos` already searched for a newline without finding one. */
  private scanned = 0;
  private collecting: Collecting | undefined;
  private swallowLeft = 0;
  private ready: Ready | undefined;
  private readonly queue: Slot[] = [];
  private inFlight = 0;
  private inFlightBytes = 0;
  private busy = false;
  /** A read waits for the turn's check phase (ReadTurn). */
  private holding = false;
  private pumping = false;
  private pumpQueued = false;
  /** The server is shutting down (or the connection must close): no new request is read. */
  private stopping = false;
  /** The client ended its side: what it sent is still run, then the connection ends. */
  private inputEnded = false;
  private ended = false;
  private paused = false;
  private waitingDrain = false;
  /** Replies gathered during one pump, written as one buffer when it ends (one system call). */
  private gathered: Buffer[] = [];
  private gatheredBytes = 0;
  private gathering = false;
  private readonly out: Output;

  constructor(
    private readonly socket: Socket,
    private readonly state: ServerState,
    private readonly log: (line: string) => void,
  ) {
    this.closed = new Promise((resolve) => socket.once('close', () => resolve()));
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('end', () => {
      this.inputEnded = true;
      this.pump();
    });
    socket.on('error', () => undefined);
    socket.on('close', () => {
      this.stopping = true;
      this.ended = true;
    });
    if (state.idleTimeoutMs > 0) {
      socket.setTimeout(state.idleTimeoutMs, () => {
        if (this.inFlight > 0 || this.busy) return;
        state.idleKicks++;
        socket.destroy();
      });
    }
    this.out = {
      write: (bytes) => this.send(bytes),
      full: () => this.unsentBytes > OUTPUT_HIGH_WATER_BYTES,
      drained: () => this.drained(),
    };
  }

  /** Unparsed input bytes held now. */
  get bufferedBytes(): number {
    return this.end - this.pos + (this.collecting?.target === undefined ? 0 : this.collecting.filled);
  }

  /** Reply bytes made and not yet sent. */
  get outputBytes(): number {
    return this.unsentBytes;
  }

  private get unsentBytes(): number {
    return this.socket.writableLength + this.gatheredBytes;
  }

  /** Stops reading requests; those already read are answered, then the socket ends. */
  shutdown(): void {
    this.stopping = true;
    this.pump();
  }

  destroy(): void {
    this.stopping = true;
    this.ended = true;
    this.socket.destroy();
  }

  private onData(chunk: Buffer): void {
    this.state.bytesRead += chunk.length;
    if (this.stopping) return;
    this.append(chunk);
    this.pump();
  }

  /**
   * Adds a chunk after the unparsed bytes, in amortized O(1) per byte however the input is
   * cut: storage grows to twice what it must hold, and is compacted only when at least half
   * of it is free, so a line or value arriving a byte at a time is never copied over and over.
   */
  private append(chunk: Buffer): void {
    if (this.pos >= this.end) {
      this.buf = chunk;
      this.pos = 0;
      this.end = chunk.length;
      this.owned = false;
      return;
    }
    const unread = this.end - this.pos;
    const need = unread + chunk.length;
    if (this.owned && this.buf.length - this.end >= chunk.length) {
      chunk.copy(this.buf, this.end);
      this.end += chunk.length;
      return;
    }
    if (this.owned && need <= this.buf.length / 2) {
      this.buf.copyWithin(0, this.pos, this.end);
    } else {
      const grown = Buffer.allocUnsafe(Math.max(4096, 2 * need));
      this.buf.copy(grown, 0, this.pos, this.end);
      this.buf = grown;
      this.owned = true;
    }
    chunk.copy(this.buf, unread);
    this.pos = 0;
    this.end = need;
  }

  /** Runs every request it can; stops when it must wait (input, a write, the socket). */
  private pump(): void {
    if (this.pumping || this.ended) return;
    this.pumping = true;
    this.gathering = true;
    try {
      this.flushQueue();
      while (!this.ended && !this.busy) {
        if (this.unsentBytes > OUTPUT_HIGH_WATER_BYTES) {
          this.waitForDrain();
          break;
        }
        const reads = this.state.reads.open;
        if (this.ready === undefined && this.inFlight === 0 && this.queue.length === 0) {
          if (reads ? this.getOneNow() : this.getNext()) {
            if (reads) continue;
            this.holdReads();
            break;
          }
        }
        const next = this.ready ?? this.parse();
        if (next === undefined) {
          if (this.stopping || this.inputEnded) this.finishWhenIdle();
          else this.resume();
          break;
        }
        if (next.request.exclusive && !reads && this.inFlight === 0) {
          this.ready = next;
          this.holdReads();
          break;
        }
        const bytes = next.data?.length ?? 0;
        const wait = next.request.exclusive
          ? this.inFlight > 0
          : this.inFlight >= MAX_IN_FLIGHT_WRITES || (this.inFlight > 0 && this.inFlightBytes + bytes > MAX_IN_FLIGHT_BYTES);
        if (wait) {
          this.ready = next;
          this.pause();
          break;
        }
        this.ready = undefined;
        this.execute(next);
      }
    } finally {
      this.pumping = false;
      this.gathering = false;
      this.flushGathered();
    }
  }

  /**
   * pump() once the current microtasks have run: writes whose commits landed together settle
   * in one run of microtasks, and their replies then leave in one write.
   */
  private pumpSoon(): void {
    if (this.pumpQueued) return;
    this.pumpQueued = true;
    queueMicrotask(this.queuedPump);
  }

  private readonly queuedPump = (): void => {
    this.pumpQueued = false;
    // A write landed: the store's next step (the next landing, or the next group commit) goes
    // before the reads held this turn.
    this.state.reads.afterStore();
    this.pump();
  };

  /** Leaves the next request, a read, to the turn's check phase (see turn.ts). */
  private holdReads(): void {
    // Input held past a few lines stops being read until the reads run: memory stays bounded.
    if (this.end - this.pos > HOLD_INPUT_BYTES) this.pause();
    if (this.holding) return;
    this.holding = true;
    this.state.reads.hold(this.runHeld);
  }

  private readonly runHeld = (): void => {
    this.holding = false;
    this.pump();
  };

  private flushGathered(): void {
    const parts = this.gathered;
    const n = parts.length;
    if (n === 0) return;
    const bytes = this.gatheredBytes;
    this.gatheredBytes = 0;
    const alive = !this.socket.destroyed && !this.ended;
    if (n === 1) {
      const only = parts[0]!;
      parts.length = 0;
      if (alive) this.socket.write(only);
      return;
    }
    // One reply (the common case) leaves the array to be reused; several take a fresh one.
    this.gathered = [];
    if (!alive) return;
    if (bytes <= GATHER_COPY_BYTES) {
      this.socket.write(Buffer.concat(parts, bytes));
      return;
    }
    this.socket.cork();
    for (const p of parts) this.socket.write(p);
    this.socket.uncork();
  }

  private execute({ request, data }: Ready): void {
    let result: Reply | Promise<Reply>;
    try {
      result = request.run(data, this.out);
    } catch (error) {
      // A store error (a damaged value, a closed store) is the client's SERVER_ERROR; anything
      // else is a bug here, logged with its stack.
      if (isAtomioError(error)) this.log(`memcached: store error: ${error.code} ${error.message}`);
      else this.log(`memcached: internal error: ${(error as Error).stack ?? String(error)}`);
      result = line(serverErrorLine(error));
    }
    if (request.exclusive) {
      if (result instanceof Promise) {
        this.busy = true;
        result.then(
          (reply) => this.exclusiveDone(request, reply),
          (error: unknown) => this.exclusiveDone(request, line(serverErrorLine(error))),
        );
      } else {
        this.exclusiveDone(request, result);
      }
      return;
    }
    if (!(result instanceof Promise)) {
      if (this.queue.length === 0) this.send(result);
      else this.queue.push({ reply: result, done: true });
      return;
    }
    this.state.reads.afterStore();
    const slot: Slot = { reply: null, done: false };
    const bytes = data?.length ?? 0;
    this.queue.push(slot);
    this.inFlight++;
    this.inFlightBytes += bytes;
    const settle = (reply: Reply): void => {
      slot.reply = reply;
      slot.done = true;
      this.inFlight--;
      this.inFlightBytes -= bytes;
      this.pumpSoon();
    };
    result.then(settle, (error: unknown) => settle(line(serverErrorLine(error))));
  }

  private exclusiveDone(request: Request, reply: Reply): void {
    this.busy = false;
    if (this.ended) return;
    this.send(reply);
    if (request.close) {
      this.stopping = true;
      this.ready = undefined;
      this.finish();
      return;
    }
    this.pump();
  }

  private flushQueue(): void {
    while (this.queue.length > 0 && this.queue[0]!.done) this.send(this.queue.shift()!.reply);
  }

  private send(reply: Reply): void {
    if (reply === null || this.socket.destroyed || this.ended) return;
    this.state.bytesWritten += reply.length;
    if (this.gathering) {
      this.gathered.push(reply);
      this.gatheredBytes += reply.length;
    } else {
      this.socket.write(reply);
    }
  }

  /**
   * The hot path: when the next input is a whole "get <key>" line (one valid key, single
   * spaces, CRLF or LF), answers it at once, without the line's text, tokens or a Request.
   * The caller makes sure no write of the connection is in flight (get is exclusive). Anything
   * else, whole or not, is left to parse(); false then.
   */
  private getOneNow(): boolean {
    if (this.stopping || this.collecting !== undefined || this.swallowLeft > 0 || this.state.verbosity > 1) return false;
    const b = this.buf;
    const p = this.pos;
    const end = this.end;
    if (end - p < 6 || b[p] !== 0x67 || b[p + 1] !== 0x65 || b[p + 2] !== 0x74 || b[p + 3] !== 0x20) return false;
    const keyStart = p + 4;
    const limit = Math.min(end, keyStart + MAX_KEY_BYTES + 1);
    let i = keyStart;
    while (i < limit && b[i]! > 0x20 && b[i] !== 0x7f) i++;
    const keyEnd = i;
    if (keyEnd === keyStart || keyEnd - keyStart > MAX_KEY_BYTES || i >= end) return false;
    if (b[i] === 0x0d) i++;
    if (i >= end || b[i] !== 0x0a) return false;
    this.pos = i + 1;
    this.scanned = 0;
    let reply: Buffer;
    try {
      reply = getOne(scratchKey(b, keyStart, keyEnd), false, this.state.cache);
    } catch (error) {
      this.log(isAtomioError(error) ? `memcached: store error: ${error.code} ${error.message}` : `memcached: internal error: ${(error as Error).stack ?? String(error)}`);
      reply = line(serverErrorLine(error));
    }
    this.send(reply);
    return true;
  }

  /** Whether the next input starts a "get " line (held for the turn's reads, see getOneNow). */
  private getNext(): boolean {
    if (this.stopping || this.collecting !== undefined || this.swallowLeft > 0) return false;
    const b = this.buf;
    const p = this.pos;
    return this.end - p >= 4 && b[p] === 0x67 && b[p + 1] === 0x65 && b[p + 2] === 0x74 && b[p + 3] === 0x20;
  }

  /** The next request whose line and data block are complete, or undefined. */
  private parse(): Ready | undefined {
    if (this.stopping) return undefined;
    for (;;) {
      const avail = this.end - this.pos;
      if (avail === 0) return undefined;
      if (this.swallowLeft > 0) {
        const n = Math.min(avail, this.swallowLeft);
        this.pos += n;
        this.swallowLeft -= n;
        if (this.swallowLeft > 0) return undefined;
        continue;
      }
      const c = this.collecting;
      if (c !== undefined) {
        const b = this.buf;
        const at = this.pos;
        const target = c.target;
        if (target === undefined) {
          if (avail < c.need) return undefined;
          this.pos += c.need;
          this.collecting = undefined;
          if (b[at + c.need - 2] !== 0x0d || b[at + c.need - 1] !== 0x0a) return badChunk(c.request);
          // A copy: the storage under a view may be reused while the request is in flight.
          return { request: c.request, data: Buffer.from(b.subarray(at, at + c.need - 2)) };
        }
        const n = Math.min(avail, c.need - c.filled);
        b.copy(target, c.filled, at, at + n);
        this.pos += n;
        c.filled += n;
        if (c.filled < c.need) return undefined;
        this.collecting = undefined;
        if (target[c.need - 2] !== 0x0d || target[c.need - 1] !== 0x0a) return badChunk(c.request);
        return { request: c.request, data: target.subarray(0, c.need - 2) };
      }
      const view = this.owned ? this.buf.subarray(0, this.end) : this.buf;
      const nl = view.indexOf(0x0a, this.pos + this.scanned);
      const lineBytes = nl < 0 ? avail : nl - this.pos;
      if (lineBytes > this.lineLimit()) return this.lineTooLong();
      if (nl < 0) {
        this.scanned = avail;
        return undefined;
      }
      const end = nl > this.pos && this.buf[nl - 1] === 0x0d ? nl - 1 : nl;
      const verbose = this.state.verbosity > 1;
      let request = verbose ? undefined : parseSetLine(this.buf, this.pos, end, this.state.cache);
      if (request === undefined) {
        const text = this.buf.toString('latin1', this.pos, end);
        if (verbose) this.log(`memcached: <${text}`);
        request = parseCommand(text, this.state);
      }
      this.pos = nl + 1;
      this.scanned = 0;
      if (request.dataBytes < 0) return { request, data: undefined };
      const need = request.dataBytes + 2;
      if (request.swallow) {
        this.swallowLeft = need;
        return { request, data: undefined };
      }
      this.collecting = { request, need, target: need > LARGE_DATA_BYTES ? Buffer.allocUnsafe(need) : undefined, filled: 0 };
    }
  }

  /** How long the line at the read position may be: retrieval lines may name many keys. */
  private lineLimit(): number {
    const b = this.buf;
    const p = this.pos;
    if (this.end - p < 3) return MAX_LINE_BYTES;
    if (b[p] === 0x67 && (b[p + 1] === 0x65 || b[p + 1] === 0x61) && b[p + 2] === 0x74) return MAX_RETRIEVAL_LINE_BYTES; // get, gets, gat, gats
    return MAX_LINE_BYTES;
  }

  private lineTooLong(): Ready {
    this.buf = EMPTY;
    this.pos = 0;
    this.end = 0;
    this.owned = false;
    this.scanned = 0;
    this.stopping = true;
    this.log(`memcached: ${this.socket.remoteAddress ?? '?'}:${this.socket.remotePort ?? '?'}: a line without a newline past its limit; closing`);
    return {
      request: { dataBytes: -1, swallow: false, exclusive: true, close: true, badChunk: null, run: () => line(ERR.lineTooLong) },
      data: undefined,
    };
  }

  private pause(): void {
    if (this.paused) return;
    this.paused = true;
    this.socket.pause();
  }

  private resume(): void {
    if (!this.paused) return;
    this.paused = false;
    this.socket.resume();
  }

  private waitForDrain(): void {
    this.pause();
    if (this.waitingDrain) return;
    this.waitingDrain = true;
    void this.drained().then(() => {
      this.waitingDrain = false;
      this.pump();
    });
  }

  private drained(): Promise<void> {
    if (this.socket.destroyed || this.socket.writableLength === 0) return Promise.resolve();
    return new Promise((resolve) => {
      const done = (): void => {
        this.socket.off('drain', done);
        this.socket.off('close', done);
        resolve();
      };
      this.socket.on('drain', done);
      this.socket.on('close', done);
    });
  }

  private finishWhenIdle(): void {
    if (this.inFlight === 0 && !this.busy && this.ready === undefined && this.queue.length === 0) this.finish();
  }

  /** Ends our side once everything queued is written; destroys the socket if the client lingers. */
  private finish(): void {
    if (this.ended) return;
    this.gathering = false;
    this.flushGathered();
    this.ended = true;
    this.buf = EMPTY;
    this.pos = 0;
    this.end = 0;
    this.owned = false;
    this.scanned = 0;
    // Keep reading (and dropping) what the client still sends, so that closing does not reset
    // the connection and lose replies on their way.
    this.socket.removeAllListeners('data');
    this.socket.on('data', () => undefined);
    this.socket.resume();
    const timer = setTimeout(() => this.socket.destroy(), LINGER_MS);
    timer.unref();
    this.socket.once('close', () => clearTimeout(timer));
    this.socket.end();
  }
}

/** A data block that does not end with CRLF: the request's bad-chunk reply instead of its run. */
function badChunk(request: Request): Ready {
  const bad = request.badChunk;
  return { request: { dataBytes: -1, swallow: false, exclusive: false, close: false, badChunk: null, run: () => bad }, data: undefined };
}

/** A get's key is copied here and looked up through a view made once per length: a get allocates no key. */
const KEY_SCRATCH = Buffer.allocUnsafe(MAX_KEY_BYTES);
const KEY_VIEWS: Buffer[] = [];

/** Bytes [start, end) of `b` (at most MAX_KEY_BYTES) as a view of KEY_SCRATCH, valid until the next call. */
function scratchKey(b: Buffer, start: number, end: number): Buffer {
  const n = end - start;
  for (let i = 0; i < n; i++) KEY_SCRATCH[i] = b[start + i]!;
  return (KEY_VIEWS[n] ??= KEY_SCRATCH.subarray(0, n));
}
