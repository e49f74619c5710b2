// BufferPool: the large buffers of one connection's requests (write payloads, read chunks),
// reused. Touching a fresh megabyte costs several times more than filling it (page faults,
// then its unmapping when collected); a reused one costs only the copy.
//
// Invariants:
// - a buffer is held by one request at a time and given back only when nothing reads or
//   writes it any more (its reply handed to the socket, its write settled);
// - buffers come in power-of-two sizes from MIN_POOLED_BYTES to MAX_POOLED_BYTES; other
//   sizes are allocated as asked and never kept;
// - at most MAX_IDLE_BYTES are kept idle.

import { assert } from '../../base/assert.js';

/** Smaller buffers come from Node's allocator as asked: their first touch is cheap. */
export const MIN_POOLED_BYTES = 128 * 1024;
/** Larger requests are rare (32 MiB is the protocol's most): their buffers are not kept. */
export const MAX_POOLED_BYTES = 4 * 1024 * 1024;
/** Idle bytes one pool keeps (enough for QD16 of 1 MiB requests). */
export const MAX_IDLE_BYTES = 24 * 1024 * 1024;

export class BufferPool {
  private readonly free = new Map<number, Buffer[]>();
  private idle = 0;

  /** Bytes kept idle now. */
  get idleBytes(): number {
    return this.idle;
  }

  /** A buffer of at least `bytes` (exactly `bytes` when it is not a pooled size). */
  take(bytes: number): Buffer {
    assert(Number.isSafeInteger(bytes) && bytes >= 0, `take(${bytes})`);
    const size = pooledSize(bytes);
    if (size === undefined) return Buffer.allocUnsafe(bytes);
    const list = this.free.get(size);
    const kept = list?.pop();
    if (kept === undefined) return Buffer.allocUnsafe(size);
    this.idle -= size;
    return kept;
  }

  /** Gives back a buffer from take() that nothing uses any more. */
  give(buffer: Buffer): void {
    const size = buffer.length;
    if (pooledSize(size) !== size || buffer.byteOffset !== 0 || this.idle + size > MAX_IDLE_BYTES) return;
    let list = this.free.get(size);
    if (list === undefined) this.free.set(size, (list = []));
    assert(!list.includes(buffer), 'a buffer is given back once');
    list.push(buffer);
    this.idle += size;
  }
}

/** The pooled size for a request of `bytes`, or undefined when such buffers are not pooled. */
function pooledSize(bytes: number): number | undefined {
  if (bytes < MIN_POOLED_BYTES || bytes > MAX_POOLED_BYTES) return undefined;
  let size = MIN_POOLED_BYTES;
  while (size < bytes) size *= 2;
  return size;
}
