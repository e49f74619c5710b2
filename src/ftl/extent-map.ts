// The block face's map: which log location holds each mapped sector.
//
// Invariants:
// - extents never overlap and never have count 0;
// - an extent's sectors are sectors [firstSector, firstSector + count) of one write op whose
//   chunked data starts at `dataOffset` of `segment` and holds `opSectors` sectors;
// - every mutation reports the pieces it displaced, so the caller can keep per-segment live
//   byte counts exact.

import sortedBtree from 'sorted-btree';
import { assert } from '../base/assert.js';

// sorted-btree is CommonJS with `exports.default`: under NodeNext the class is `.default`.
const BTree = sortedBtree.default;
type Tree = InstanceType<typeof BTree<number, Extent>>;

export interface Extent {
  readonly lba: number;
  readonly count: number;
  readonly version: number;
  readonly segment: number;
  readonly dataOffset: number;
  readonly opSectors: number;
  readonly firstSector: number;
  /** Milliseconds since the epoch; 0 = never expires. */
  readonly expiresAt: number;
}

/** The part of `e` covering [lba, lba + count), which must lie inside it. */
export function slice(e: Extent, lba: number, count: number): Extent {
  assert(lba >= e.lba && lba + count <= e.lba + e.count && count > 0, 'slice lies inside its extent');
  if (lba === e.lba && count === e.count) return e;
  return {
    lba,
    count,
    version: e.version,
    segment: e.segment,
    dataOffset: e.dataOffset,
    opSectors: e.opSectors,
    firstSector: e.firstSector + (lba - e.lba),
    expiresAt: e.expiresAt,
  };
}

export class ExtentMap {
  private tree: Tree = new BTree<number, Extent>();

  get size(): number {
    return this.tree.size;
  }

  /** Calls `visit` with each extent overlapping [lba, lba + count), clipped to the range, in lba order. */
  forEachIn(lba: number, count: number, visit: (piece: Extent) => void): void {
    const end = lba + count;
    const before = this.tree.getPairOrNextLower(lba);
    if (before !== undefined && before[0] < lba) {
      const e = before[1];
      if (e.lba + e.count > lba) visit(slice(e, lba, Math.min(end, e.lba + e.count) - lba));
    }
    this.tree.forRange(lba, end, false, (_k: number, e: Extent) => {
      visit(slice(e, e.lba, Math.min(end, e.lba + e.count) - e.lba));
    });
  }

  /** Extents overlapping the range, clipped. */
  piecesIn(lba: number, count: number): Extent[] {
    const pieces: Extent[] = [];
    this.forEachIn(lba, count, (p) => pieces.push(p));
    return pieces;
  }

  /** Unmaps [lba, lba + count); returns the displaced pieces. */
  clear(lba: number, count: number): Extent[] {
    const end = lba + count;
    const displaced: Extent[] = [];
    const before = this.tree.getPairOrNextLower(lba);
    if (before !== undefined && before[0] < lba) {
      const e = before[1];
      const eEnd = e.lba + e.count;
      if (eEnd > lba) {
        displaced.push(slice(e, lba, Math.min(end, eEnd) - lba));
        this.tree.set(e.lba, slice(e, e.lba, lba - e.lba));
        if (eEnd > end) this.tree.set(end, slice(e, end, eEnd - end));
      }
    }
    const inside: Extent[] = [];
    this.tree.forRange(lba, end, false, (_k: number, e: Extent) => {
      inside.push(e);
    });
    for (const e of inside) {
      const eEnd = e.lba + e.count;
      this.tree.delete(e.lba);
      displaced.push(slice(e, e.lba, Math.min(end, eEnd) - e.lba));
      if (eEnd > end) this.tree.set(end, slice(e, end, eEnd - end));
    }
    return displaced;
  }

  /** Maps `extent`, replacing whatever it overlaps; returns the displaced pieces. */
  set(extent: Extent): Extent[] {
    assert(extent.count > 0, 'extent maps at least one sector');
    const displaced = this.clear(extent.lba, extent.count);
    this.tree.set(extent.lba, extent);
    return displaced;
  }

  /** Inserts without checking overlap; for loading a checkpoint in lba order. */
  loadInOrder(extent: Extent): void {
    this.tree.set(extent.lba, extent);
  }

  /** Iterates all extents in lba order. */
  *all(): IterableIterator<Extent> {
    for (const [, e] of this.tree.entries()) yield e;
  }
}
