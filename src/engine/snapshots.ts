// Snapshots: read views of the block map and every pool's index at one moment.
//
// Taking one is cheap: the block map and pool indexes are frozen copy-on-write
// (ExtentMap.freeze, KeyIndex.freeze), O(number of leaves) each. The segments the view
// points into are pinned, so neither the cleaner nor reuse can take its data away (DESIGN
// invariant 7). A named snapshot is written into every checkpoint until it is deleted; after
// a reopen it is rebuilt from the checkpoint and pins exactly the segments it points into.

import { EXTENT_FIELDS, ExtentMap } from '../ftl/extent-map.js';
import { KeyIndex, META_FIELDS } from '../ftl/key-index.js';
import type { Engine, PoolReader, SnapshotState } from './engine.js';
import { extentSource, poolSource, type SnapshotImage, type SnapshotSource } from './checkpoint.js';

/** A view of the applied state now, pinning every segment that holds live data. */
export function takeSnapshot(engine: Engine, name: string | undefined): SnapshotState {
  const pools = new Map<string, PoolReader>();
  for (const pool of engine.pools.byId.values()) pools.set(pool.name, { id: pool.id, name: pool.name, index: pool.index.freeze() });
  const map = engine.map.freeze();
  const version = engine.appliedSeq;
  const createdAt = engine.clock.now();
  // A named snapshot outlives this process: pin what it points at, and no more.
  const pin = engine.pin(name === undefined ? undefined : segmentsOf(map, pools, engine.segments.count));
  return { name, version, createdAt, map, pools, pin, released: false };
}

/** The segments a snapshot's extents and keys point into (of a store of `segmentCount`). */
export function segmentsOf(map: ExtentMap, pools: Map<string, PoolReader>, segmentCount: number): Set<number> {
  // Marked in a byte per segment, then listed: a million extents take a few milliseconds
  // this way, against some 25 adding each one's segment to a set.
  const seen = new Uint8Array(segmentCount);
  map.markSegments(seen);
  for (const pool of pools.values()) pool.index.markSegments(seen);
  const segments = new Set<number>();
  for (let s = 0; s < segmentCount; s++) if (seen[s] === 1) segments.add(s);
  return segments;
}

/** A snapshot for a checkpoint: its maps read from their own leaves as the encoding reaches them (they never change). */
export function snapshotSource(s: SnapshotState): SnapshotSource {
  const pools = [...s.pools.values()].map((pool) => poolSource(pool.id, pool.name, pool.index));
  return { name: s.name ?? '', version: s.version, createdAt: s.createdAt, extents: extentSource(s.map), pools };
}

/** About the bytes a snapshot takes in a checkpoint (for reserving room). */
export function snapshotImageBytes(s: SnapshotState): number {
  let bytes = 64 + s.map.size * EXTENT_FIELDS * 8;
  for (const pool of s.pools.values()) bytes += 64 + pool.index.keyBytes + pool.index.size * (4 + META_FIELDS * 8);
  return bytes;
}

/** A named snapshot rebuilt from a checkpoint. */
export function snapshotFromImage(engine: Engine, image: SnapshotImage): SnapshotState {
  const map = new ExtentMap();
  map.importRaw(image.extentsRaw);
  const pools = new Map<string, PoolReader>();
  for (const p of image.pools) pools.set(p.name, { id: p.id, name: p.name, index: KeyIndex.importRaw(p) });
  return { name: image.name, version: image.version, createdAt: image.createdAt, map, pools, pin: engine.pin(segmentsOf(map, pools, engine.segments.count)), released: false };
}
