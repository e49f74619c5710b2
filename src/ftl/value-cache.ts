// Copies of recently written or read kv values, so that hot reads (getSync above all) need
// no system call.
//
// A ring of bytes addressed by absolute position: add() appends a value at the ring's head
// and returns where it went; a copy at position p is intact while p is within the last
// `capacity` bytes appended, because the ring only ever overwrites its oldest bytes. The
// index keeps that position beside each key (cacheAt), so the cache needs no table, no
// object per value and no invalidation: a stale position simply falls out of the window.
//
// The ring is made of slabs allocated as it first fills, so a small store pays for the
// values it has, not for the capacity.
//
// Invariants:
// - a value never straddles two slabs (a value that does not fit the current slab's rest
//   starts the next slab, and the skipped tail counts as appended);
// - `head` only grows.

const SLAB_BYTES = 1024 * 1024;
/** Values up to this long are copied by a loop; longer ones by a native copy (measured: it wins from about 48 bytes). */
const LOOP_COPY_BYTES = 48;

export class ValueCache {
  /** Values larger than this are not kept (they would push out many small hot ones). */
  readonly maxValueBytes: number;
  private readonly slabs: Buffer[] = [];
  private readonly slabCount: number;
  /** Absolute position of the next byte to append. */
  private head = 0;

  constructor(capacityBytes: number) {
    this.slabCount = Math.floor(capacityBytes / SLAB_BYTES);
    this.maxValueBytes = this.slabCount === 0 ? 0 : Math.min(64 * 1024, SLAB_BYTES);
  }

  get capacity(): number {
    return this.slabCount * SLAB_BYTES;
  }

  /** Bytes of memory the slabs hold. */
  memoryBytes(): number {
    return this.slabs.length * SLAB_BYTES;
  }

  /** Keeps a copy of `value`; returns its position, or -1 when it is not kept. */
  add(value: Uint8Array): number {
    const n = value.length;
    if (n > this.maxValueBytes || n === 0) return -1;
    let inSlab = this.head % SLAB_BYTES;
    if (inSlab + n > SLAB_BYTES) {
      this.head += SLAB_BYTES - inSlab;
      inSlab = 0;
    }
    const slabIndex = Math.floor(this.head / SLAB_BYTES) % this.slabCount;
    let slab = this.slabs[slabIndex];
    if (slab === undefined) {
      slab = Buffer.allocUnsafe(SLAB_BYTES);
      this.slabs[slabIndex] = slab;
    }
    slab.set(value, inSlab);
    const at = this.head;
    this.head += n;
    return at;
  }

  /** A fresh copy of the `length` bytes kept at `at`, or undefined when they were overwritten. */
  get(at: number, length: number): Buffer | undefined {
    if (!this.holds(at)) return undefined;
    // Whole-number arithmetic (no floating-point remainder), and a small-integer offset.
    const slabNumber = Math.floor(at / SLAB_BYTES);
    const slab = this.slabs[slabNumber % this.slabCount]!;
    const from = (at - slabNumber * SLAB_BYTES) | 0;
    const out = Buffer.allocUnsafe(length);
    if (length <= LOOP_COPY_BYTES) {
      for (let i = 0; i < length; i++) out[i] = slab[from + i]!;
    } else {
      slab.copy(out, 0, from, from + length);
    }
    return out;
  }

  /** Whether the copy at `at` is still intact. */
  holds(at: number): boolean {
    return at >= 0 && at >= this.head - this.capacity;
  }
}
