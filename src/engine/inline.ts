// When a batch is written on the event loop's own thread.
//
// A write handed to an I/O thread costs two cross-thread wake-ups, there and back: tens of
// microseconds on a virtual machine, as much as a small O_DSYNC write itself. Overlapping the
// write with other work pays for them, but a caller that waits for each commit before making
// the next one (one client of a disk, a region committing, an append at a time) has no other
// work: the event loop only idles until the write is done. Then the write is made inline,
// blocking, and both wake-ups are saved.
//
// The engine cannot see the application's other work; it sees its own calls. So a write goes
// inline only after several written on a thread saw no commit or read arrive meanwhile, and
// every so often one goes to a thread again to look. A look that finds the store quiet
// doubles the inline writes before the next (up to INLINE_LOOK_MAX), since each look costs
// the lone caller the two wake-ups again (a 16-page region commit took 0.23 ms at p50 on a
// thread against 0.16 inline on a fast disk); a write on a thread that sees work arrive
// starts over. A slow inline write (a busy disk) sends the next lone batch to a thread, twice
// as many after each slow one in a row, so a slow medium rarely blocks the event loop; a fast
// inline write starts over at one. An isolated stall of the disk then costs one write on a
// thread, not the quiet writes of a fresh start (a fast disk stalled once in about 500
// region commits, and the eight writes on threads after each took 3.7% of the time).
//
// A busy store (a server answering reads between small writes) has other work, but a small
// batch (INLINE_BUSY_MAX_BYTES) with no other batch being written also goes inline, durable
// or not. A write on a thread is seen done only when the loop next polls, after the turn's
// other work, and on a machine whose cores are busy the thread that made it waits to be
// scheduled before it can say so: its callers wait that, where inline they wait the write
// itself. Under a memcached load on 2 cores, 4 KiB O_DSYNC writes that took 0.23 ms inline
// took 0.6 ms at p50 and 4 to 5 ms at p99 on a thread; inline, the loop stalls for the
// write but a set's commit took 0.36 ms at p50 against 1 ms, and the server spent less CPU
// per request (each thread write costs two wake-ups). With durability 'none' the write is a
// copy into the page cache. A small inline write slower than INLINE_BUSY_SLOW_MS (a slow
// disk, or the OS throttling dirty pages) sends the next ones to a thread, twice as many
// after each slow one, half as many again after each INLINE_BUSY_FORGIVE fast ones, so a
// medium often slow keeps them on threads and off the event loop.
//
// Reads go inline by the same reasoning, without the quiet condition: a read from the page
// cache is a copy (3 to 6 µs for 4 to 128 KiB here, 50 µs at p99.9), and the hand-off to a
// thread and back costs more than that on a virtual machine. Served inline, random 4 KiB
// reads through the NBD server ran at 15 200 – 15 500 a second at queue depth 1 against
// 9 600 – 9 800 on threads, and 33 100 – 34 700 against 20 400 – 20 900 at depth 32. A read
// that has to reach the device is slower, and blocking the loop for it would also give up
// the thread pool's reads in parallel: an inline read slower than INLINE_READ_SLOW_MS sends
// the next ones to threads, twice as many after each slow one (as for small writes), so a
// store much larger than the page cache reads on threads but for a rare look.

import { assert } from '../base/assert.js';

/** Writes seen quiet (nothing arrived while they were on a thread) before one goes inline. */
export const INLINE_QUIET_WRITES = 4;
/** At most this many inline writes in a row at first; then one goes to a thread to look again. */
export const INLINE_LOOK_EVERY = 32;
/** The most inline writes in a row, after many looks found the store quiet. */
export const INLINE_LOOK_MAX = 1024;
/** Larger batches are written on a thread: they block for long and overlap well. */
export const INLINE_MAX_BYTES = 256 * 1024;
/** An inline write that took longer than this sends the next lone batches to a thread. */
export const INLINE_SLOW_MS = 2;
/** The most batches ever sent to threads after a slow inline write (of many in a row). */
const INLINE_MAX_SKIP = 1024;
/** A batch this small goes inline when no other is being written, however busy the store is. */
export const INLINE_BUSY_MAX_BYTES = 4096;
/** A small inline write slower than this sends the next small ones to a thread. */
export const INLINE_BUSY_SLOW_MS = 1;
/** Fast small inline writes that undo one doubling after a slow one. */
const INLINE_BUSY_FORGIVE = 8;
const FORGIVE_FACTOR = 2 ** (-1 / INLINE_BUSY_FORGIVE);

/**
 * How many of the next batches (or reads) go to a thread after slow inline ones: `floor`
 * after one slow, twice as many after each slow one more (up to `max`); each fast one
 * multiplies the count for the next slow one by `forgive` (0: back to `floor` at once).
 */
class SlowBackoff {
  /** Still to send to a thread. */
  private skip = 0;
  /** To send after the next slow one. */
  private next: number;

  constructor(
    private readonly floor: number,
    private readonly max: number,
    private readonly forgive: number,
  ) {
    this.next = floor;
  }

  /** Nothing is to be sent to a thread now. */
  get clear(): boolean {
    return this.skip === 0;
  }

  /** Whether this one goes to a thread: counts it off when it does. */
  skipOne(): boolean {
    if (this.skip === 0) return false;
    this.skip--;
    return true;
  }

  slow(): void {
    this.skip = Math.round(this.next);
    this.next = Math.min(this.max, this.next * 2);
  }

  fast(): void {
    this.next = Math.max(this.floor, this.next * this.forgive);
  }
}

/** What a write on a thread started from: the arrivals then, and whether it is a look. */
export interface ThreadWrite {
  arrivals: number;
  look: boolean;
}

export class InlineWrites {
  /** Commits and reads the engine has been asked for. */
  private arrivals = 0;
  private quietWrites = 0;
  /** Lone batches sent to a thread after slow inline writes: one, forgiven by one fast write. */
  private readonly loneBackoff = new SlowBackoff(1, INLINE_MAX_SKIP, 0);
  private streak = 0;
  /** Inline writes in a row before the next look (INLINE_LOOK_EVERY, doubled by quiet looks). */
  private lookEvery = INLINE_LOOK_EVERY;
  /** The batch just refused is a look: the thread write that follows tells what it saw. */
  private looking = false;
  /** Small batches sent to a thread after slow small inline writes. */
  private readonly busyBackoff = new SlowBackoff(INLINE_QUIET_WRITES, INLINE_MAX_SKIP, FORGIVE_FACTOR);

  constructor(private readonly enabled: boolean) {}

  /** A commit or a read arrived. */
  arrived(): void {
    this.arrivals++;
  }

  /** Whether a batch of `bytes`, with no other batch being written, would go inline as a small one. */
  small(bytes: number): boolean {
    return this.enabled && bytes <= INLINE_BUSY_MAX_BYTES && this.busyBackoff.clear;
  }

  /**
   * Whether a batch of `bytes` goes inline. `free`: no other batch is being written. `alone`:
   * besides, it is one commit and none is queued behind it.
   */
  choose(bytes: number, free: boolean, alone: boolean): boolean {
    assert(free || !alone, 'a lone batch has none beside it');
    if (!this.enabled || !free) return false;
    if (bytes <= INLINE_BUSY_MAX_BYTES && !this.busyBackoff.skipOne()) return true;
    if (!alone || bytes > INLINE_MAX_BYTES || this.quietWrites < INLINE_QUIET_WRITES) return false;
    if (this.loneBackoff.skipOne()) return false;
    if (this.streak >= this.lookEvery) {
      this.streak = 0;
      this.looking = true;
      return false;
    }
    this.streak++;
    return true;
  }

  /** A write goes to a thread: the token to pass to `threadWriteDone`. */
  threadWriteStarted(): ThreadWrite {
    const token = { arrivals: this.arrivals, look: this.looking };
    this.looking = false;
    return token;
  }

  /** A write on a thread completed: was it quiet? */
  threadWriteDone(token: ThreadWrite): void {
    assert(token.arrivals <= this.arrivals, 'arrivals only grow');
    if (token.arrivals === this.arrivals) {
      this.quietWrites++;
      if (token.look) this.lookEvery = Math.min(INLINE_LOOK_MAX, this.lookEvery * 2);
    } else {
      this.quietWrites = 0;
      this.lookEvery = INLINE_LOOK_EVERY;
    }
  }

  /** An inline write of `bytes` completed after `ms`. */
  inlineWriteDone(ms: number, bytes: number): void {
    if (bytes <= INLINE_BUSY_MAX_BYTES) {
      if (ms <= INLINE_BUSY_SLOW_MS) this.busyBackoff.fast();
      else this.busyBackoff.slow();
    }
    if (ms <= INLINE_SLOW_MS) this.loneBackoff.fast();
    else this.loneBackoff.slow();
  }
}

/** Reads of at most this many bytes may be made on the event loop's thread. */
export const INLINE_READ_MAX_BYTES = 128 * 1024;
/** An inline read slower than this did not come from the page cache: the next reads go to threads. */
export const INLINE_READ_SLOW_MS = 0.05;
/** Reads sent to threads after the first slow inline read; twice as many after each more. */
export const INLINE_READ_SKIP = 4;
/** The most reads ever sent to threads before the next look inline. */
const INLINE_READ_MAX_SKIP = 1024;

/** When a read of the medium is made on the event loop's thread (see the top of this file). */
export class InlineReads {
  /** Reads sent to threads after slow inline reads. */
  private readonly backoff = new SlowBackoff(INLINE_READ_SKIP, INLINE_READ_MAX_SKIP, FORGIVE_FACTOR);

  constructor(private readonly enabled: boolean) {}

  /** Whether a read of `bytes` goes inline. */
  choose(bytes: number): boolean {
    return this.enabled && bytes <= INLINE_READ_MAX_BYTES && !this.backoff.skipOne();
  }

  /** An inline read completed after `ms`. */
  inlineReadDone(ms: number): void {
    if (ms <= INLINE_READ_SLOW_MS) this.backoff.fast();
    else this.backoff.slow();
  }
}
