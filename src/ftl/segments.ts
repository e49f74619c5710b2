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
  /** Zero-filled ahead of its first use, so writing it allocates nothing (not persisted). */
  prefilled: boolean;
}

export class SegmentTable {
  readonly segments: SegmentInfo[];

  constructor(count: number) {
    this.segments = [];
    for (let i = 0; i < count; i++) {
      this.segments.push({
        index: i,
        state: 'free',
        kind: 0,
        nonce: 0,
        openSeq: 0,
        eraseCount: 0,
        maxSeq: 0,
        liveBytes: 0,
        writeOffset: 0,
        readers: 0,
        youngestVersion: 0,
        damaged: false,
        prefilled: false,
      });
    }
  }

  get count(): number {
    return this.segments.length;
  }

  at(index: number): SegmentInfo {
    const s = this.segments[index];
    assert(s !== undefined, `segment ${index} exists`);
    return s;
  }

  freeCount(): number {
    let n = 0;
    for (const s of this.segments) if (s.state === 'free' && s.readers === 0) n++;
    return n;
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
    let waiting = 0;
    let candidate: SegmentInfo | undefined;
    for (const s of this.segments) {
      if (s.state !== 'free' || s.eraseCount !== 0) continue;
      if (s.prefilled) waiting++;
      else if (candidate === undefined && s.readers === 0) candidate = s;
    }
    return waiting < ahead ? candidate : undefined;
  }

  liveBytes(): number {
    let n = 0;
    for (const s of this.segments) n += s.liveBytes;
    return n;
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
