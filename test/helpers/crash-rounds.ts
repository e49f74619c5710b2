// Crash rounds: many rounds of concurrent atomic batches (not awaited) on a FaultMedia, a crash
// at a random moment, a reopen of the crashed image, and a check that
//   - every acknowledged batch (resolved before the crash) is there, whole;
//   - every other batch is all-or-nothing: all of its ranges show it, or none does;
//   - nothing outside the round's batches changed.
// The store recovered from one crash is the one the next round writes to (and crashes again).
//
// Each batch writes a tag of its own (see data.ts) over 1–4 disjoint ranges, some of which are
// trims; within a round no two batches touch the same sector, so each sector of a batch can
// only show that batch or what it held before the round.

import assert from 'node:assert/strict';
import type { TestContext } from 'node:test';
import type { AtomicOp } from '../../src/index.js';
import { ManualClock } from '../../src/base/clock.js';
import type { CrashMode } from '../../src/media/fault.js';
import { makeRandom } from '../../src/media/random.js';
import { tagOf, tagged } from './data.js';
import { describe } from './errors.js';
import { deriveSeed } from './seed.js';
import { FaultStore, turns } from './store.js';

/** A round's commits must all settle within this when nothing crashes (a stuck store fails here). */
const SETTLE_MS = 10_000;

export interface CrashRoundsOptions {
  mode: CrashMode;
  /** The run's seed (ATOMIO_SEED); every random choice and every crash derives from it. */
  seed: number;
  /** Distinguishes the random streams of several calls in one run. */
  salt: number;
  rounds: number;
  capacity?: number;
  segmentSize?: number;
  /** Sectors of the area the batches write in (from lba 0). */
  area?: number;
  checkpointIntervalBytes?: number;
  /** 512 (default) or 4096: with 4096 a group commit spans eight media sectors that tear apart. */
  sectorSize?: 512 | 4096;
  /**
   * 'none': commits resolve before any flush, so only those resolved before a store.flush()
   * that resolved must survive; the rest must still be all or nothing. Default 'full'.
   */
  durability?: 'full' | 'none';
  /** The longest range a batch writes or trims, in sectors (default 24). */
  rangeSectors?: number;
  /** Give some batches a TTL and move a manual clock, so that data expires between crashes. */
  ttl?: boolean;
}

export interface CrashRoundsSummary {
  rounds: number;
  batches: number;
  acknowledged: number;
  /** Unacknowledged batches found whole after the crash. */
  unackedApplied: number;
  /** Unacknowledged batches found absent after the crash. */
  unackedDropped: number;
  /** Pending writes the crashes tore (some sectors landed, some did not). */
  tornWrites: number;
  /** Pending writes the crashes dropped or applied whole. */
  droppedWrites: number;
  appliedWrites: number;
  recordsDropped: number;
  checkpoints: number;
  segmentsCleaned: number;
}

interface Range {
  lba: number;
  count: number;
  trim: boolean;
}

interface Batch {
  tag: number;
  ranges: Range[];
  /** Resolved before the crash (and, with durability 'none', before a flush that resolved). */
  acked: boolean;
  resolved: boolean;
  /** The TTL in ms (0 = none) and the bounds of its deadline: the engine fixes it when the batch is written, between the call and the crash. */
  ttl: number;
  expiresFrom: number;
  expiresBy: number;
  failed: unknown;
  promise: Promise<number>;
}

export async function crashRounds(t: TestContext, o: CrashRoundsOptions): Promise<CrashRoundsSummary> {
  const random = makeRandom(deriveSeed(o.seed, o.salt));
  const int = (n: number): number => Math.floor(random() * n);
  const area = o.area ?? 1536;
  const SECTOR = o.sectorSize ?? 512;
  const none = o.durability === 'none';
  const clock = o.ttl ? new ManualClock() : undefined;
  const fault = await FaultStore.create({
    capacity: o.capacity ?? 2 * 1024 * 1024,
    segmentSize: o.segmentSize ?? 64 * 1024,
    checkpointIntervalBytes: o.checkpointIntervalBytes ?? 256 * 1024,
    mediaSeed: deriveSeed(o.seed, o.salt + 1),
    ...(o.sectorSize === undefined ? {} : { sectorSize: o.sectorSize }),
    ...(none ? { durability: 'none' as const, flushIntervalMs: 3_600_000 } : {}),
    ...(clock === undefined ? {} : { clock }),
  });
  const known = new Int32Array(area); // tag per sector after the last recovery (0 = zeros)
  // Bounds of each sector's deadline (0 = never).
  const knownFrom = new Float64Array(area);
  const knownBy = new Float64Array(area);
  /** Whether a sector that holds `tag` with a deadline in [from, by] may read as `observed` now. */
  const shows = (observed: number, tag: number, from: number, by: number): boolean => {
    if (from === 0 || clock === undefined) return observed === tag;
    const now = clock.now();
    if (now < from) return observed === tag;
    if (now >= by) return observed === 0;
    return observed === tag || observed === 0;
  };
  const summary: CrashRoundsSummary = {
    rounds: 0,
    batches: 0,
    acknowledged: 0,
    unackedApplied: 0,
    unackedDropped: 0,
    tornWrites: 0,
    droppedWrites: 0,
    appliedWrites: 0,
    recordsDropped: 0,
    checkpoints: 0,
    segmentsCleaned: 0,
  };
  let nextTag = 1;
  let round = 0;
  const msg = (m: string): string => `${m} [mode ${o.mode}, seed ${o.seed}, round ${round}; replay with ATOMIO_SEED=${o.seed}]`;

  try {
    for (round = 1; round <= o.rounds; round++) {
      const claimed = new Uint8Array(area);
      const batches: Batch[] = [];
      const pickRange = (): Range | undefined => {
        for (let attempt = 0; attempt < 30; attempt++) {
          const count = 1 + int(o.rangeSectors ?? 24);
          const lba = int(area - count + 1);
          let free = true;
          for (let i = lba; i < lba + count && free; i++) if (claimed[i] !== 0) free = false;
          if (!free) continue;
          claimed.fill(1, lba, lba + count);
          return { lba, count, trim: random() < 0.2 };
        }
        return undefined;
      };
      const store = fault.store;
      let crashed = false;
      const waves = 1 + int(4);
      for (let w = 0; w < waves; w++) {
        const n = 1 + int(12);
        for (let i = 0; i < n; i++) {
          const ranges: Range[] = [];
          const want = 1 + int(4);
          for (let k = 0; k < want; k++) {
            const r = pickRange();
            if (r !== undefined) ranges.push(r);
          }
          if (ranges.length === 0) break;
          const ttl = clock !== undefined && random() < 0.4 ? 1 + int(60) : 0;
          const expiresFrom = ttl === 0 ? 0 : clock!.now() + ttl;
          const batch: Batch = { tag: nextTag++, ranges, acked: false, resolved: false, ttl, expiresFrom, expiresBy: expiresFrom, failed: undefined, promise: Promise.resolve(0) };
          const ops: AtomicOp[] = ranges.map((r) =>
            r.trim ? { trim: r.lba, count: r.count } : { write: r.lba, data: tagged(SECTOR, batch.tag, r.lba, r.count) },
          );
          batch.promise = ttl === 0 ? store.block.atomic(ops) : store.block.atomic(ops, { ttl });
          batch.promise.then(
            () => {
              if (crashed) return;
              batch.resolved = true;
              if (!none) batch.acked = true;
            },
            (error: unknown) => {
              if (!crashed) batch.failed = error;
            },
          );
          batches.push(batch);
        }
        await turns(int(10));
        clock?.advance(int(25));
        if (none && random() < 0.3) {
          const resolved = batches.filter((b) => b.resolved);
          void store.flush().then(
            () => {
              if (!crashed) for (const b of resolved) b.acked = true;
            },
            () => undefined,
          );
        }
      }
      // When to pull the plug: after everything settled (all must be acknowledged, and in
      // bounded time), at a random moment, or while writes sit unflushed in the cache.
      const when = random();
      const promises = batches.map((b) => b.promise);
      if (when < 0.2) {
        const settled = await settleWithin(promises, SETTLE_MS);
        assert.ok(settled, msg(`${batches.length} batches did not settle within ${SETTLE_MS} ms: the store is stuck`));
        for (const b of batches) assert.ok(b.resolved, msg(`batch ${b.tag} was not acknowledged: ${describe(b.failed)}`));
        if (none && random() < 0.5) {
          await store.flush();
          for (const b of batches) b.acked = true;
        }
      } else if (when < 0.5) {
        await turns(int(40));
      } else {
        let sightings = int(4);
        for (let i = 0; i < 400; i++) {
          if (fault.media.pendingWrites > 0 && sightings-- === 0) break;
          await turns(1);
        }
      }
      const stats = fault.store.stats();
      summary.checkpoints += stats.checkpoints;
      summary.segmentsCleaned += stats.segmentsCleaned;
      crashed = true;
      if (clock !== undefined) for (const b of batches) if (b.ttl > 0) b.expiresBy = clock.now() + b.ttl;
      const report = await fault.crashAndReopen(o.mode, deriveSeed(o.seed, o.salt * 1000 + round));
      for (const w of report.writes) {
        if (w.outcome === 'torn') summary.tornWrites++;
        else if (w.outcome === 'dropped') summary.droppedWrites++;
        else summary.appliedWrites++;
      }
      const recovery = fault.store.stats().lastRecovery!;
      summary.recordsDropped += recovery.recordsDropped;
      assert.deepEqual(recovery.corruptions, [], msg(`a crash is not corruption: ${JSON.stringify(recovery)} after ${JSON.stringify(report)}`));

      let image: Buffer;
      try {
        image = await fault.store.block.read(0, area);
      } catch (error) {
        assert.fail(msg(`reading the area after the crash failed: ${describe(error)}`));
      }
      const observed = new Int32Array(area);
      for (let lba = 0; lba < area; lba++) {
        const tag = tagOf(image.subarray(lba * SECTOR, (lba + 1) * SECTOR), lba);
        assert.ok(tag >= 0, msg(`sector ${lba} holds bytes that no write produced`));
        observed[lba] = tag;
      }
      for (const b of batches) {
        assert.equal(b.failed, undefined, msg(`batch ${b.tag} failed before the crash: ${describe(b.failed)}`));
        let allNew = true;
        let allOld = true;
        for (const r of b.ranges) {
          for (let lba = r.lba; lba < r.lba + r.count; lba++) {
            if (r.trim ? observed[lba] !== 0 : !shows(observed[lba]!, b.tag, b.expiresFrom, b.expiresBy)) allNew = false;
            if (!shows(observed[lba]!, known[lba]!, knownFrom[lba]!, knownBy[lba]!)) allOld = false;
          }
        }
        const shape = JSON.stringify(b.ranges);
        if (b.acked) {
          summary.acknowledged++;
          assert.ok(allNew, msg(`acknowledged batch ${b.tag} ${shape} is not all there: ${rangesSeen(b, observed)}`));
        } else {
          assert.ok(allNew || allOld, msg(`batch ${b.tag} ${shape} is partly there: ${rangesSeen(b, observed)} (before: ${rangesSeen(b, known)})`));
          if (allNew && !allOld) summary.unackedApplied++;
          else if (allOld && !allNew) summary.unackedDropped++;
        }
      }
      for (let lba = 0; lba < area; lba++) {
        if (claimed[lba] === 0) {
          assert.ok(shows(observed[lba]!, known[lba]!, knownFrom[lba]!, knownBy[lba]!), msg(`sector ${lba}, untouched this round, changed: ${known[lba]} -> ${observed[lba]}`));
        }
      }
      for (const b of batches) {
        for (const r of b.ranges) {
          for (let lba = r.lba; lba < r.lba + r.count; lba++) {
            if (observed[lba] !== b.tag) continue;
            knownFrom[lba] = b.expiresFrom;
            knownBy[lba] = b.expiresBy;
          }
        }
      }
      for (let lba = 0; lba < area; lba++) {
        if (observed[lba] === 0) knownFrom[lba] = knownBy[lba] = 0;
      }
      known.set(observed);
      summary.batches += batches.length;
      summary.rounds++;
    }
  } finally {
    await fault.dispose();
  }
  t.diagnostic(`seed ${o.seed} (${o.mode}, part ${o.salt}): ${JSON.stringify(summary)}`);
  return summary;
}

/** True when every promise settled within `ms`. */
async function settleWithin(promises: Promise<unknown>[], ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<false>((resolve) => {
    timer = setTimeout(() => resolve(false), ms);
  });
  try {
    return await Promise.race([Promise.allSettled(promises).then(() => true), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

function rangesSeen(b: Batch, tags: Int32Array): string {
  return b.ranges.map((r) => `[${r.lba}+${r.count}${r.trim ? ' trim' : ''}: ${Array.from(tags.subarray(r.lba, r.lba + r.count)).join(',')}]`).join(' ');
}
