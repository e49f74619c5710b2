// Which versions of a region a retention policy keeps, and which stored pages they need.
//
// Page p as of version k is the newest stored version of p at or below k. So a stored page
// version pv, followed (for that page) by the next stored version nv (or by nothing), is
// needed exactly when some kept version k has pv <= k < nv. Dropping versions makes page
// versions unneeded only where no kept version remains in such an interval; the newest
// version is always kept, so the newest page versions always stay.

import type { Retention, VersionRecord } from './keys.js';

/** The versions `retention` keeps of `versions` (ascending), as of `now`; always the newest. */
export function keptVersions(versions: readonly VersionRecord[], retention: Retention, now: number): VersionRecord[] {
  const n = versions.length;
  return versions.filter((v, i) => {
    if (i === n - 1) return true;
    if (retention.count > 0 && i < n - retention.count) return false;
    if (retention.age > 0 && v.committedAt < now - retention.age) return false;
    return true;
  });
}

/** The smallest element of `sorted` (ascending) that is >= `value`, or undefined. */
export function ceiling(sorted: ArrayLike<number>, value: number): number | undefined {
  let lo = 0;
  let hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (sorted[mid]! < value) lo = mid + 1;
    else hi = mid;
  }
  return lo < sorted.length ? sorted[lo] : undefined;
}

/** Whether page version `pv`, followed by `next` (Infinity: none), is needed by a version in `kept`. */
export function pageVersionNeeded(kept: readonly number[], pv: number, next: number): boolean {
  const k = ceiling(kept, pv);
  return k !== undefined && k < next;
}

/**
 * The page versions that dropping `dropped` leaves unneeded, found without walking every
 * page: a page version loses its last keeper only when the next version of its page lies
 * between a dropped version and the next kept one, so only the pages those versions wrote
 * are looked at. `older(page, below)` gives the newest stored version of `page` below
 * `below`. Returns [page, version] pairs.
 */
export function unneededAfterDrop(
  dropped: readonly number[],
  kept: readonly number[],
  pagesOf: (version: number) => Iterable<number> | undefined,
  older: (page: number, below: number) => number | undefined,
  between: (after: number, upTo: number) => Iterable<number>,
): [number, number][] {
  const out: [number, number][] = [];
  // One dropped version visits each (page, version) once: only several can meet one twice.
  const seen = dropped.length > 1 ? new Set<string>() : undefined;
  for (const d of dropped) {
    const next = ceiling(kept, d + 1);
    if (next === undefined) continue;
    for (const u of between(d, next)) {
      const pages = pagesOf(u);
      if (pages === undefined) continue;
      for (const page of pages) {
        const pv = older(page, u);
        if (pv === undefined || pageVersionNeeded(kept, pv, u)) continue;
        if (seen !== undefined) {
          const id = `${page}:${pv}`;
          if (seen.has(id)) continue;
          seen.add(id);
        }
        out.push([page, pv]);
      }
    }
  }
  return out;
}
