// ByteInput: the bytes a client sent, taken in exact-sized pieces by one reader at a time.
//
// Invariants:
// - at most one take() or skip() is pending; the connection reads its socket in one loop;
// - bytes held here (not yet taken) stay under `highWaterBytes` plus one socket chunk: the
//   socket is paused at the mark and resumed when a reader needs more;
// - a take() larger than SMALL_TAKE_BYTES, or given a buffer to fill, is filled straight into
//   that buffer as bytes arrive, so a 32 MiB write payload is held once, not twice;
// - skip() discards without holding what it discards;
// - after end (the client closed, the socket failed, or close() was called) every pending
//   and later take/skip rejects with InputEnded.

import type { Socket } from 'node:net';
import { assert } from '../../base/assert.js';

const SMALL_TAKE_BYTES = 64 * 1024;

/** The input ended (or was closed) before the bytes a reader asked for arrived. */
export class InputEnded extends Error {
  constructor(reason: string) {
    super(reason);
    this.name = 'InputEnded';
  }
}

interface Waiter {
  need: number;
  /** For large takes: the buffer being filled. */
  target: Buffer | undefined;
  filled: number;
  /** skip(): count down, keep nothing. */
  discard: boolean;
  resolve: (b: Buffer) => void;
  reject: (e: Error) => void;
}

export class ByteInput {
  private chunks: Buffer[] = [];
  /** Offset of the first unread byte in chunks[0]. */
  private head = 0;
  private buffered = 0;
  private waiter: Waiter | undefined;
  private endReason: string | undefined;
  private paused = false;

  constructor(
    private readonly socket: Socket,
    private readonly highWaterBytes: number,
  ) {
    assert(highWaterBytes >= SMALL_TAKE_BYTES, 'the high-water mark holds at least one small take');
    socket.on('data', this.onData);
    socket.on('end', this.onEnd);
    socket.on('close', this.onClose);
    socket.on('error', this.onError);
  }

  private readonly onData = (chunk: Buffer): void => this.push(chunk);
  private readonly onEnd = (): void => this.end('the client closed the connection');
  private readonly onClose = (): void => this.end('the connection closed');
  private readonly onError = (error: Error): void => this.end(`socket error: ${error.message}`);

  /**
   * Stops listening to the socket (so that another reader, a TLS layer, can take it over)
   * and ends this input. Returns how many received bytes were not yet taken: they are lost.
   */
  detach(reason: string): number {
    const left = this.buffered;
    this.socket.off('data', this.onData);
    this.socket.off('end', this.onEnd);
    this.socket.off('close', this.onClose);
    this.socket.off('error', this.onError);
    this.end(reason);
    this.chunks = [];
    this.head = 0;
    this.buffered = 0;
    return left;
  }

  /** Bytes received and not yet taken. */
  get bufferedBytes(): number {
    return this.buffered;
  }

  get ended(): boolean {
    return this.endReason !== undefined;
  }

  /**
   * Exactly `n` bytes (n >= 0). The buffer may be a view of a received chunk: the caller owns
   * it. With `into` (of exactly n bytes) the bytes are copied there, and `into` is returned.
   */
  take(n: number, into?: Buffer): Promise<Buffer> {
    assert(Number.isSafeInteger(n) && n >= 0, `take(${n})`);
    assert(this.waiter === undefined, 'one reader at a time');
    assert(into === undefined || into.length === n, 'a target of the size taken');
    if (this.buffered >= n) {
      let out: Buffer;
      if (into === undefined) out = this.consume(n);
      else {
        this.copyOut(into, 0, n);
        out = into;
      }
      this.maybeResume();
      return Promise.resolve(out);
    }
    if (this.endReason !== undefined) return Promise.reject(new InputEnded(this.endReason));
    return new Promise<Buffer>((resolve, reject) => {
      const waiter: Waiter = { need: n, target: undefined, filled: 0, discard: false, resolve, reject };
      if (into !== undefined || n > SMALL_TAKE_BYTES) {
        waiter.target = into ?? Buffer.allocUnsafe(n);
        waiter.filled = this.buffered;
        this.copyOut(waiter.target, 0, this.buffered);
      }
      this.waiter = waiter;
      this.resume();
    });
  }

  /** Discards exactly `n` bytes without holding them. */
  async skip(n: number): Promise<void> {
    assert(Number.isSafeInteger(n) && n >= 0, `skip(${n})`);
    assert(this.waiter === undefined, 'one reader at a time');
    const now = Math.min(n, this.buffered);
    this.drop(now);
    if (now === n) {
      this.maybeResume();
      return;
    }
    if (this.endReason !== undefined) throw new InputEnded(this.endReason);
    await new Promise<Buffer>((resolve, reject) => {
      this.waiter = { need: n, target: undefined, filled: now, discard: true, resolve, reject };
      this.resume();
    });
  }

  /**
   * Stops reading: pending and later reads reject, bytes held are dropped, and whatever the
   * client still sends is read and discarded (so that closing the socket later does not
   * reset it and lose replies on their way to the client).
   */
  close(reason: string): void {
    this.end(reason);
    this.chunks = [];
    this.head = 0;
    this.buffered = 0;
    this.resume();
  }

  private push(chunk: Buffer): void {
    if (this.endReason !== undefined) return;
    let rest = chunk;
    const w = this.waiter;
    if (w !== undefined && (w.target !== undefined || w.discard)) {
      const n = Math.min(rest.length, w.need - w.filled);
      if (w.target !== undefined) rest.copy(w.target, w.filled, 0, n);
      w.filled += n;
      rest = rest.subarray(n);
      if (w.filled === w.need) {
        this.waiter = undefined;
        w.resolve(w.target ?? EMPTY);
      }
    }
    if (rest.length > 0) {
      this.chunks.push(rest);
      this.buffered += rest.length;
    }
    const s = this.waiter;
    if (s !== undefined && s.target === undefined && !s.discard && this.buffered >= s.need) {
      this.waiter = undefined;
      s.resolve(this.consume(s.need));
    }
    if (this.buffered >= this.highWaterBytes && this.waiter === undefined) this.pause();
  }

  private end(reason: string): void {
    if (this.endReason !== undefined) return;
    this.endReason = reason;
    const w = this.waiter;
    this.waiter = undefined;
    w?.reject(new InputEnded(reason));
  }

  /** Takes n <= buffered bytes off the front. */
  private consume(n: number): Buffer {
    if (n === 0) return EMPTY;
    const first = this.chunks[0]!;
    if (first.length - this.head >= n) {
      const out = first.subarray(this.head, this.head + n);
      this.advance(n);
      return out;
    }
    const out = Buffer.allocUnsafe(n);
    this.copyOut(out, 0, n);
    return out;
  }

  /** Moves n <= buffered bytes from the front into `into` at `at`. */
  private copyOut(into: Buffer, at: number, n: number): void {
    let done = 0;
    while (done < n) {
      const first = this.chunks[0]!;
      const take = Math.min(n - done, first.length - this.head);
      first.copy(into, at + done, this.head, this.head + take);
      done += take;
      this.advance(take);
    }
  }

  private drop(n: number): void {
    let left = n;
    while (left > 0) {
      const first = this.chunks[0]!;
      const take = Math.min(left, first.length - this.head);
      left -= take;
      this.advance(take);
    }
  }

  private advance(n: number): void {
    this.head += n;
    this.buffered -= n;
    if (this.head === this.chunks[0]!.length) {
      this.chunks.shift();
      this.head = 0;
    }
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

  private maybeResume(): void {
    if (this.buffered < this.highWaterBytes) this.resume();
  }
}

const EMPTY = Buffer.alloc(0);
