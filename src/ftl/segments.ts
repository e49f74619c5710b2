// Per-segment state: what each segment holds and how worn it is.
//
// Invariants:
// - a free segment has no live bytes, no reader, and every record it held is covered by the
//   durable checkpoint (so dropping its trims and overwritten data cannot resurrect anything);
// - liveBytes counts mapped, unexpired sectors only; the cleaner's victims are sealed segments;
// - erase counts only grow: a segment's count rises each time it is opened for writing.

import { assert } from '../base/assert.js';
import type { SegmentKind } from '../log/format.js';

export type SegmentState = 'free' | 'open' | 'sealed' | 'checkpoint';

export interface SegmentInfo {
  readonly index: number;
  state: SegmentState;
  kind: SegmentKind | 0;
  nonce: number;
  openSeq: number;
  eraseCount: number;
  /** Highest record seq written into the segment; 0 when none. */
  maxSeq: number;
  liveBytes: number;
  /** Next byte to write, for open segments; end of the last record for sealed ones. */
  writeOffset: number;
  /** Reads in flight; a segment is not reused while it has any. */
  readers: number;
  /**
   * Newest version of any data written into it (relocated data keeps its old version): the
   * cleaner's measure of how cold the segment is. Not persisted; after an open it is maxSeq.
   */
  youngestVersion: number;
  /** A live chunk failed its checksum here: never clean it, so reads keep reporting it. */
  damaged: boolean;
  /** Zero-filled ahead of its first use, so writing it allocates nothing (not persisted; once set, stays set). */
  prefilled: boolean;
  /** The table's epoch when the segment last left the free state (see SegmentTable.epoch). */
  readonly allocatedAt: number;
}

// What the table counts of a segment, as bits: the engine asks after them on every batch,
// so they are kept up to date as fields change rather than found by a scan (a 1 TiB store has
// 65,536 segments).
/** Free and not being read: allocation may take it. */
const FREE = 1;
/** Sealed with nothing live: reclaimEmpty's candidates. */
const EMPTY_SEALED = 2;
/** Free, never used, and zero-filled. */
const FILLED_WAITING = 4;

/** A segment's state; the fields the table counts by are accessors that tell it of changes. */
class Segment implements SegmentInfo {
  kind: SegmentKind | 0 = 0;
  nonce = 0;
  openSeq = 0;
  maxSeq = 0;
  writeOffset = 0;
  youngestVersion = 0;
  damaged = false;
  private stateNow: SegmentState = 'free';
  private liveNow = 0;
  private readersNow = 0;
  private eraseNow = 0;
  private prefilledNow = false;
  allocatedAt = 0;

  constructor(
    readonly index: number,
    private readonly table: SegmentTable,
  ) {}

  /** The table's counts this segment is in (FREE, EMPTY_SEALED, FILLED_WAITING). */
  bits(): number {
    const s = this.stateNow;
    if (s === 'free') return (this.readersNow === 0 ? FREE : 0) | (this.eraseNow === 0 && this.prefilledNow ? FILLED_WAITING : 0);
    return s === 'sealed' && this.liveNow === 0 ? EMPTY_SEALED : 0;
  }

  get state(): SegmentState {
    return this.stateNow;
  }

  set state(value: SegmentState) {
    const before = this.bits();
    if (this.stateNow === 'free' && value !== 'free') this.allocatedAt = this.table.nextEpoch();
    this.stateNow = value;
    this.table.moved(this, before);
  }

  get liveBytes(): number {
    return this.liveNow;
  }

  set liveBytes(value: number) {
    const before = this.bits();
    this.table.addLive(value - this.liveNow);
    this.liveNow = value;
    if (this.bits() !== before) this.table.moved(this, before);
  }

  get readers(): number {
    return this.readersNow;
  }

  set readers(value: number) {
    const before = this.bits();
    this.readersNow = value;
    if (this.bits() !== before) this.table.moved(this, before);
  }

  get eraseCount(): number {
    return this.eraseNow;
  }

  set eraseCount(value: number) {
    const before = this.bits();
    this.eraseNow = value;
    this.table.moved(this, before);
  }

  get prefilled(): boolean {
    return this.prefilledNow;
  }

  set prefilled(value: boolean) {
    assert(value || !this.prefilledNow, 'a zero-filled mark is never taken back (pickUnfilled relies on it)');
    const before = this.bits();
    this.prefilledNow = value;
    this.table.moved(this, before);
  }
}

export class SegmentTable {
  readonly segments: SegmentInfo[];
  private free: number;
  private live = 0;
  private filledWaiting = 0;
  /** Sealed segments with nothing live, by index. */
  private readonly emptySealed = new Set<number>();
  /** Below it every segment has been used or zero-filled: where pickUnfilled starts looking. */
  private unfilledFrom = 0;
  /**
   * Counts segments leaving the free state. A segment in use with allocatedAt <= an epoch
   * read earlier has been in use since then: what a pin of "everything in use now" holds.
   */
  epoch = 0;

  constructor(count: number) {
    const segments: Segment[] = [];
    for (let i = 0; i < count; i++) segments.push(new Segment(i, this));
    this.segments = segments;
    this.free = count;
  }

  get count(): number {
    return this.segments.length;
  }

  at(index: number): SegmentInfo {
    const s = this.segments[index];
    assert(s !== undefined, `segment ${index} exists`);
    return s;
  }

  /** @internal A segment's counted bits were `before`; it tells the table after a change. */
  moved(s: Segment, before: number): void {
    const after = s.bits();
    const changed = before ^ after;
    if (changed === 0) return;
    if (changed & FREE) this.free += after & FREE ? 1 : -1;
    if (changed & FILLED_WAITING) this.filledWaiting += after & FILLED_WAITING ? 1 : -1;
    if (changed & EMPTY_SEALED) {
      if (after & EMPTY_SEALED) this.emptySealed.add(s.index);
      else this.emptySealed.delete(s.index);
    }
  }

  /** @internal */
  nextEpoch(): number {
    return ++this.epoch;
  }

  /** @internal */
  addLive(delta: number): void {
    this.live += delta;
  }

  /** Free segments that are not being read. */
  freeCount(): number {
    return this.free;
  }

  /** Sealed segments with no live bytes, in no particular order (a copy: callers may change them). */
  emptySealedSegments(): SegmentInfo[] {
    return [...this.emptySealed].map((i) => this.segments[i]!);
  }

  /**
   * The free segment with the lowest erase count (wear levelling), or undefined. Among
   * never-used segments, one already zero-filled comes first.
   */
  pickFree(): SegmentInfo | undefined {
    let best: SegmentInfo | undefined;
    for (const s of this.segments) {
      if (s.state !== 'free' || s.readers !== 0) continue;
      if (best === undefined || s.eraseCount < best.eraseCount) best = s;
      else if (s.eraseCount === best.eraseCount && s.prefilled && !best.prefilled) best = s;
    }
    return best;
  }

  /**
   * A never-used free segment that is not zero-filled yet, or undefined when `ahead` filled
   * ones are already waiting for use (filling further ahead only competes with the writes).
   */
  pickUnfilled(ahead: number): SegmentInfo | undefined {
    if (this.filledWaiting >= ahead) return undefined;
    // Segments below unfilledFrom were used or filled; neither becomes a candidate again
    // (erase counts only grow, and the mark is only set) until the table is made anew.
    const all = this.segments;
    while (this.unfilledFrom < all.length) {
      const s = all[this.unfilledFrom]!;
      if (s.eraseCount === 0 && !s.prefilled) break;
      this.unfilledFrom++;
    }
    for (let i = this.unfilledFrom; i < all.length; i++) {
      const s = all[i]!;
      if (s.state === 'free' && s.eraseCount === 0 && !s.prefilled && s.readers === 0) return s;
    }
    return undefined;
  }

  /** Live bytes of every segment. */
  liveBytes(): number {
    return this.live;
  }

  eraseCounts(): { min: number; mean: number; max: number } {
    let min = Infinity;
    let max = 0;
    let sum = 0;
    for (const s of this.segments) {
      min = Math.min(min, s.eraseCount);
      max = Math.max(max, s.eraseCount);
      sum += s.eraseCount;
    }
    return { min: this.segments.length === 0 ? 0 : min, mean: sum / Math.max(1, this.segments.length), max };
  }
}
