// The model the crash tests hold the store to after each SIGKILL.
//
// What the engine promises after a crash, in terms the writer's log can check:
//   - durability: every acknowledged batch is there;
//   - atomicity: a batch is all there or not at all;
//   - order: the batches that are there are exactly a prefix, in the order they were handed
//     to the store, of each killed writer's batches (a commit's version is the next
//     sequence number, taken in queue order; a crash loses a tail, never a middle).
// So the store must equal: the state verified last time, then for each writer killed since
// (in order) its first c batches, for some c that covers at least every batch it
// acknowledged and every batch whose pattern is found in the store. The check looks for
// such cutoffs; when there are none it says which sectors differ and, where it can tell,
// which promise was broken.
//
// Versions: a sector's version (as mapped() reports it) must be the version of the batch
// whose data it holds (the acknowledged version, or for an unacknowledged batch the same on
// all its sectors), and versions must grow with batch ids.

import { LBA_RANGE, SECTOR, parseSector, type Batch } from './common.js';

/** What one killed writer reported before it died. */
export interface WriterLog {
  label: string;
  /** In id order (the order they were handed to the store). */
  issued: Batch[];
  /** id → version, for batches whose ACK line was read. */
  acked: Map<number, number>;
}

/** The store's block range as read back after recovery. */
export interface Snapshot {
  /** Per lba: the batch id whose pattern it holds, 0 for zeros, NaN when it holds neither. */
  ids: Float64Array;
  versions: Float64Array;
  /** Sectors that hold neither zeros nor an intact pattern of their lba, and other oddities. */
  problems: string[];
}

export interface Verdict {
  ok: boolean;
  /** Why not (several lines), or a one-line summary of what was found. */
  message: string;
  /** Per writer, how many batches it issued past its last ACK turned out to be there. */
  unackedPresent: number[];
}

export function snapshotFrom(data: Buffer, versions: Float64Array): Snapshot {
  const ids = new Float64Array(LBA_RANGE);
  const problems: string[] = [];
  for (let lba = 0; lba < LBA_RANGE; lba++) {
    const parsed = parseSector(data, lba * SECTOR, lba);
    if (typeof parsed === 'string') {
      ids[lba] = NaN;
      if (problems.length < 10) problems.push(`lba ${lba}: ${parsed}`);
    } else {
      ids[lba] = parsed;
    }
  }
  return { ids, versions, problems };
}

export function applyBatch(state: Float64Array, batch: Batch): void {
  for (const [lba, count, kind] of batch.ops) state.fill(kind === 'w' ? batch.id : 0, lba, lba + count);
}

export class Model {
  /** Per lba, the id of the batch whose data the store holds (0: none). */
  readonly ids = new Float64Array(LBA_RANGE);
  /** id → version of every batch acknowledged or found in the store so far. */
  readonly versions = new Map<number, number>();
  /** The highest version verified so far: every later batch must have a higher one. */
  maxVersion = 0;
  /** The highest batch id verified so far. */
  maxId = 0;

  /**
   * Checks the store (as `snap`) after `logs` (the writers killed since the last check, in
   * order). On success the model becomes the store's state.
   */
  check(logs: WriterLog[], snap: Snapshot): Verdict {
    const fail = (message: string): Verdict => ({ ok: false, message, unackedPresent: [] });
    if (snap.problems.length > 0) return fail(`integrity: sectors hold neither zeros nor their own pattern:\n  ${snap.problems.join('\n  ')}`);

    const batchById = new Map<number, Batch>();
    const ackedVersion = new Map<number, number>();
    for (const log of logs) {
      for (const b of log.issued) batchById.set(b.id, b);
      for (const [id, v] of log.acked) {
        if (!batchById.has(id)) return fail(`protocol: ${log.label} acknowledged batch ${id}, which it never issued`);
        ackedVersion.set(id, v);
      }
    }
    const describe = (id: number): string => {
      if (id === 0) return 'nothing (zeros)';
      const v = ackedVersion.get(id) ?? this.versions.get(id);
      if (ackedVersion.has(id)) return `batch ${id} (acknowledged, version ${v})`;
      if (batchById.has(id)) return `batch ${id} (issued, not acknowledged)`;
      if (v !== undefined) return `batch ${id} (from an earlier round, version ${v})`;
      return `batch ${id} (never issued)`;
    };

    // Versions: each sector's versionOf against the batch whose data it holds.
    const found = new Map<number, number>();
    const versionProblems: string[] = [];
    for (let lba = 0; lba < LBA_RANGE; lba++) {
      const id = snap.ids[lba]!;
      const v = snap.versions[lba]!;
      if (id === 0) {
        if (v !== 0) versionProblems.push(`lba ${lba} reads zeros but versionOf says ${v}`);
        continue;
      }
      const known = ackedVersion.get(id) ?? this.versions.get(id) ?? found.get(id);
      if (known === undefined) found.set(id, v);
      else if (v !== known) {
        const what = ackedVersion.has(id) ? `was acknowledged with version ${known}` : `shows version ${known} elsewhere`;
        versionProblems.push(`lba ${lba} holds ${describe(id)} but versionOf says ${v}; the batch ${what}`);
      }
      if (versionProblems.length >= 10) break;
    }
    if (versionProblems.length > 0) return fail(`versions:\n  ${versionProblems.join('\n  ')}`);

    // Order: among this check's batches, a later id has a later version, and all are newer
    // than anything verified before.
    const ordered = [...new Map([...found, ...ackedVersion]).entries()]
      .filter(([id]) => batchById.has(id))
      .sort((a, b) => a[0] - b[0]);
    for (let i = 0; i < ordered.length; i++) {
      const [id, v] = ordered[i]!;
      const prev = ordered[i - 1];
      if (prev !== undefined && v <= prev[1]) {
        return fail(`order: batch ${id} was handed to the store after batch ${prev[0]} but has version ${v} <= ${prev[1]}`);
      }
      if (v <= this.maxVersion) return fail(`order: batch ${id} has version ${v}, not newer than version ${this.maxVersion} of an earlier round`);
    }

    // Direct checks with plain messages: sectors that no later issued batch touched must show
    // an acknowledged batch (durability) and every batch found anywhere (atomicity).
    const lastToucher = new Float64Array(LBA_RANGE);
    for (const log of logs) for (const b of log.issued) for (const [lba, count] of b.ops) lastToucher.fill(b.id, lba, lba + count);
    const presentIds = new Set<number>();
    for (const id of snap.ids) if (batchById.has(id)) presentIds.add(id);
    const direct: string[] = [];
    for (const log of logs) {
      for (const b of log.issued) {
        const acked = ackedVersion.has(b.id);
        if (!acked && !presentIds.has(b.id)) continue;
        const effect = new Map<number, number>();
        for (const [lba, count, kind] of b.ops) for (let s = lba; s < lba + count; s++) effect.set(s, kind === 'w' ? b.id : 0);
        for (const [lba, want] of effect) {
          if (lastToucher[lba] !== b.id || snap.ids[lba] === want) continue;
          const promise = acked ? 'durability: an acknowledged batch is not all there' : 'atomicity: a batch is half there';
          direct.push(`${promise}: lba ${lba} should hold ${describe(want)} (last op of ${describe(b.id)}; no later batch touched it) but holds ${describe(snap.ids[lba]!)}`);
          break;
        }
        if (direct.length >= 8) break;
      }
    }
    if (direct.length > 0) return fail(direct.join('\n'));

    // The exact check: the store is the last verified state plus a prefix of each writer's
    // batches, each prefix covering its acknowledged and found batches.
    const minCut = logs.map((log) => {
      let c = 0;
      log.issued.forEach((b, i) => {
        if (ackedVersion.has(b.id) || presentIds.has(b.id)) c = i + 1;
      });
      return c;
    });
    // touchedAfter[j]: lbas some batch of a later writer may change (not comparable at level j).
    const touchedAfter: Uint8Array[] = logs.map(() => new Uint8Array(LBA_RANGE));
    for (let j = logs.length - 2; j >= 0; j--) {
      touchedAfter[j]!.set(touchedAfter[j + 1]!);
      for (const b of logs[j + 1]!.issued) for (const [lba, count] of b.ops) touchedAfter[j]!.fill(1, lba, lba + count);
    }
    let nodes = 0;
    const cuts: number[] = [];
    const search = (j: number, from: Float64Array): Float64Array | undefined => {
      const log = logs[j]!;
      const state = from.slice();
      for (let i = 0; i < minCut[j]!; i++) applyBatch(state, log.issued[i]!);
      for (let c = minCut[j]!; c <= log.issued.length; c++) {
        if (c > minCut[j]!) applyBatch(state, log.issued[c - 1]!);
        if (++nodes > 200_000) return undefined;
        if (!matches(state, snap.ids, touchedAfter[j]!)) continue;
        cuts[j] = c;
        if (j === logs.length - 1) return state;
        const done = search(j + 1, state);
        if (done !== undefined) return done;
      }
      return undefined;
    };
    const result = logs.length === 0 ? (matches(this.ids, snap.ids, new Uint8Array(LBA_RANGE)) ? this.ids.slice() : undefined) : search(0, this.ids);
    if (result === undefined) {
      // Explain with the smallest cutoffs: acknowledged and found batches, nothing more.
      const expected = this.ids.slice();
      logs.forEach((log, j) => log.issued.slice(0, minCut[j]).forEach((b) => applyBatch(expected, b)));
      const diffs: string[] = [];
      const holes = new Set<number>();
      for (let lba = 0; lba < LBA_RANGE; lba++) {
        const want = expected[lba]!;
        if (want === snap.ids[lba]) continue;
        if (diffs.length < 12) diffs.push(`lba ${lba}: holds ${describe(snap.ids[lba]!)}, expected ${describe(want)}`);
        if (batchById.has(want) && !presentIds.has(want) && !ackedVersion.has(want)) holes.add(want);
      }
      const why = nodes > 200_000 ? ' (search gave up: too many cutoffs)' : '';
      const hole =
        holes.size > 0
          ? `\n  batches ${[...holes].slice(0, 8).join(', ')} are nowhere in the store though batches issued after them are: ` +
            'a hole in the log (a crash may only lose its tail)'
          : '';
      return fail(
        `state: the store is not the last verified state plus a prefix of each writer's batches${why}; ` +
          `with every acknowledged and found batch applied in order, sectors differ:\n  ${diffs.join('\n  ')}${hole}`,
      );
    }

    // Success: the store's state becomes the model.
    this.ids.set(result);
    for (const [id, v] of ackedVersion) this.versions.set(id, v);
    for (const [id, v] of found) this.versions.set(id, v);
    for (const [, v] of ordered) this.maxVersion = Math.max(this.maxVersion, v);
    for (const log of logs) for (const b of log.issued) this.maxId = Math.max(this.maxId, b.id);
    const unackedPresent = logs.map((log, j) => {
      let last = 0;
      log.issued.forEach((b, i) => {
        if (ackedVersion.has(b.id)) last = i + 1;
      });
      return cuts[j]! - last;
    });
    return { ok: true, message: `cutoffs ${cuts.join(',')}`, unackedPresent };
  }
}

function matches(state: Float64Array, store: Float64Array, skip: Uint8Array): boolean {
  for (let lba = 0; lba < LBA_RANGE; lba++) if (skip[lba] === 0 && state[lba] !== store[lba]) return false;
  return true;
}
