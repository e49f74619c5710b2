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
// every so often one goes to a thread again to look. A slow inline write (a busy disk)
// doubles the quiet writes needed before the next one, so a slow medium rarely blocks the
// event loop.

import { assert } from '../base/assert.js';

/** Writes seen quiet (nothing arrived while they were on a thread) before one goes inline. */
export const INLINE_QUIET_WRITES = 4;
/** At most this many inline writes in a row; then one goes to a thread to look again. */
export const INLINE_LOOK_EVERY = 32;
/** Larger batches are written on a thread: they block for long and overlap well. */
export const INLINE_MAX_BYTES = 256 * 1024;
/** An inline write that took longer than this makes inline writes rarer. */
export const INLINE_SLOW_MS = 2;
/** The most quiet writes ever asked for (after many slow inline writes). */
const INLINE_MAX_QUIET_WRITES = 1024;

export class InlineWrites {
  /** Commits and reads the engine has been asked for. */
  private arrivals = 0;
  private quietWrites = 0;
  private quietNeeded = INLINE_QUIET_WRITES;
  private streak = 0;

  constructor(private readonly enabled: boolean) {}

  /** A commit or a read arrived. */
  arrived(): void {
    this.arrivals++;
  }

  /**
   * Whether a batch of `bytes` goes inline. `alone`: it is one commit, with no other batch
   * being written and none queued behind it.
   */
  choose(bytes: number, alone: boolean): boolean {
    if (!this.enabled || !alone || bytes > INLINE_MAX_BYTES || this.quietWrites < this.quietNeeded) return false;
    if (this.streak >= INLINE_LOOK_EVERY) {
      this.streak = 0;
      return false;
    }
    this.streak++;
    return true;
  }

  /** A write goes to a thread: the token to pass to `threadWriteDone`. */
  threadWriteStarted(): number {
    return this.arrivals;
  }

  /** A write on a thread completed: was it quiet? */
  threadWriteDone(token: number): void {
    assert(token <= this.arrivals, 'arrivals only grow');
    if (token === this.arrivals) this.quietWrites++;
    else this.quietWrites = 0;
  }

  /** An inline write completed after `ms`. */
  inlineWriteDone(ms: number): void {
    if (ms <= INLINE_SLOW_MS) {
      this.quietNeeded = INLINE_QUIET_WRITES;
      return;
    }
    this.quietWrites = 0;
    this.streak = 0;
    this.quietNeeded = Math.min(INLINE_MAX_QUIET_WRITES, this.quietNeeded * 2);
  }
}
