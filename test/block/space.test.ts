// Bounded space: a small store under overwrite churn cleans instead of failing, never grows its
// data file past capacity, and refuses writes with ERR_NO_SPACE only when live data plus the
// write would really exceed usableBytes; when full, reads and overwrites keep working, and
// trimming makes room again.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { DATA_FILE_NAME, open, type Store } from '../../src/index.js';
import { isAtomioError } from '../../src/base/errors.js';
import { makeRandom } from '../../src/media/random.js';
import { tagOf, tagged } from '../helpers/data.js';
import { describe } from '../helpers/errors.js';
import { deriveSeed, testSeed } from '../helpers/seed.js';
import { withTempDir } from '../helpers/temp.js';

const SEED = testSeed();
const SECTOR = 512;
const MiB = 1024 * 1024;
const CAPACITY = 4 * MiB;
const GEOMETRY = { capacity: CAPACITY, segmentSize: 64 * 1024 } as const;

/** What each written sector holds (tag), for reading everything back. */
class Written {
  readonly tags = new Map<number, number>();
  record(lba: number, count: number, tag: number): void {
    for (let i = 0; i < count; i++) this.tags.set(lba + i, tag);
  }
  forget(lba: number, count: number): void {
    for (let i = 0; i < count; i++) this.tags.delete(lba + i);
  }
  async verify(store: Store, lbas: Iterable<number>, msg: (m: string) => string): Promise<void> {
    const sorted = [...lbas].sort((a, b) => a - b);
    for (let i = 0; i < sorted.length; ) {
      // Read runs of consecutive lbas in one call.
      let j = i + 1;
      while (j < sorted.length && sorted[j] === sorted[j - 1]! + 1 && j - i < 256) j++;
      const lba = sorted[i]!;
      const bytes = await store.block.read(lba, j - i);
      for (let k = 0; k < j - i; k++) {
        const want = this.tags.get(lba + k) ?? 0;
        const got = tagOf(bytes.subarray(k * SECTOR, (k + 1) * SECTOR), lba + k);
        assert.equal(got, want, msg(`sector ${lba + k} holds tag ${got}, expected ${want}`));
      }
      i = j;
    }
  }
}

async function fileSize(dir: string): Promise<number> {
  return (await fsp.stat(path.join(dir, DATA_FILE_NAME))).size;
}

test('overwrite churn on a working set of half the usable space never fails with ERR_NO_SPACE, cleans segments, and keeps the file within capacity', { timeout: 60_000 }, async (t) => {
  t.diagnostic(`seed ${SEED} (replay: ATOMIO_SEED=${SEED})`);
  const random = makeRandom(deriveSeed(SEED, 1));
  const int = (n: number): number => Math.floor(random() * n);
  let round = 0;
  const msg = (m: string): string => `${m} [seed ${SEED}, round ${round}; replay with ATOMIO_SEED=${SEED}]`;
  await withTempDir(async (dir) => {
    const store = await open(dir, GEOMETRY);
    try {
      const usable = store.stats().usableBytes;
      const workingSectors = Math.floor(usable / 2 / SECTOR);
      const written = new Written();
      let tag = 1;
      let bytesWritten = 0;
      // Five times the capacity in overwrites, 8 commits at a time.
      for (round = 0; bytesWritten < 5 * CAPACITY; round++) {
        const group: Promise<number>[] = [];
        const plans: [number, number, number][] = [];
        for (let i = 0; i < 8; i++) {
          const count = 1 + int(32);
          const lba = int(workingSectors - count + 1);
          plans.push([lba, count, tag]);
          group.push(store.block.write(lba, tagged(SECTOR, tag, lba, count)));
          tag++;
          bytesWritten += count * SECTOR;
        }
        const results = await Promise.allSettled(group);
        results.forEach((r, i) => {
          assert.equal(r.status, 'fulfilled', msg(`a write failed: ${r.status === 'rejected' ? describe(r.reason) : ''}`));
          const [lba, count, wtag] = plans[i]!;
          written.record(lba, count, wtag);
        });
        assert.ok((await fileSize(dir)) <= CAPACITY, msg('the data file grew past capacity'));
      }
      const stats = store.stats();
      t.diagnostic(`churn: ${JSON.stringify({ usable, live: stats.liveBytes, cleaned: stats.segmentsCleaned, wa: stats.writeAmplification, erase: stats.eraseCounts })}`);
      assert.ok(stats.segmentsCleaned > 0, msg('the cleaner ran'));
      assert.ok(stats.liveBytes <= workingSectors * SECTOR, msg(`liveBytes ${stats.liveBytes} within the working set`));
      assert.equal(stats.liveBytes, written.tags.size * SECTOR, msg('liveBytes counts exactly the written sectors'));
      await written.verify(store, written.tags.keys(), msg);
    } finally {
      await store.close();
    }
    assert.ok((await fileSize(dir)) <= CAPACITY, 'the data file stays within capacity after close');
  });
});

test('filling the store: ERR_NO_SPACE comes only when live data + the write exceeds usableBytes; reads and overwrites still work when full; trimming makes room', { timeout: 60_000 }, async (t) => {
  t.diagnostic(`seed ${SEED} (replay: ATOMIO_SEED=${SEED})`);
  const random = makeRandom(deriveSeed(SEED, 2));
  const int = (n: number): number => Math.floor(random() * n);
  let phase = 'fill';
  const msg = (m: string): string => `${m} [seed ${SEED}, ${phase}; replay with ATOMIO_SEED=${SEED}]`;
  await withTempDir(async (dir) => {
    const store = await open(dir, GEOMETRY);
    try {
      const written = new Written();
      let tag = 1;
      // Start from a churned store: a working set of a third of the space, overwritten a while.
      const start = store.stats().usableBytes;
      const base = Math.floor(start / 3 / SECTOR);
      for (let i = 0; i < 300; i++) {
        const count = 1 + int(16);
        const lba = int(base - count + 1);
        await store.block.write(lba, tagged(SECTOR, tag, lba, count));
        written.record(lba, count, tag++);
      }
      // Grow: fresh 8 KiB extents, with overwrites mixed in, until the store says it is full.
      let next = base;
      let full: { live: number; usable: number; needed: number; error: unknown } | undefined;
      for (let i = 0; i < 10_000 && full === undefined; i++) {
        const fresh = random() < 0.7;
        const count = fresh ? 16 : 1 + int(16);
        const lba = fresh ? next : int(next - count + 1);
        const before = store.stats();
        // The churn left holes below `next`: an overwrite grows live data by the sectors it
        // writes for the first time.
        let growth = 0;
        for (let k = 0; k < count; k++) if (!written.tags.has(lba + k)) growth += SECTOR;
        try {
          await store.block.write(lba, tagged(SECTOR, tag, lba, count));
          written.record(lba, count, tag++);
          if (fresh) next += count;
        } catch (error) {
          assert.ok(isAtomioError(error, 'ERR_NO_SPACE'), msg(`expected ERR_NO_SPACE, got ${describe(error)}`));
          full = { live: before.liveBytes, usable: before.usableBytes, needed: growth, error };
        }
      }
      assert.ok(full !== undefined, msg('the store filled up'));
      t.diagnostic(`full: ${JSON.stringify({ live: full.live, usable: full.usable, needed: full.needed, message: (full.error as Error).message, details: (full.error as { details?: unknown }).details })}`);
      assert.ok(full.live + full.needed > full.usable, msg(`ERR_NO_SPACE with ${full.live} live + ${full.needed} new bytes <= ${full.usable} usable`));
      assert.ok(full.live >= full.usable - 64 * 1024, msg(`liveBytes ${full.live} is near usableBytes ${full.usable} when full`));
      assert.ok((await fileSize(dir)) <= CAPACITY, msg('the data file grew past capacity'));

      phase = 'full: reads';
      await written.verify(store, written.tags.keys(), msg);
      phase = 'full: overwrites';
      // Overwrites do not grow live data: they must go on working when the store is full.
      const lbas = [...written.tags.keys()];
      for (let i = 0; i < 300; i++) {
        const lba = lbas[int(lbas.length)]!;
        const count = Math.min(1 + int(8), next - lba);
        try {
          await store.block.write(lba, tagged(SECTOR, tag, lba, count));
        } catch (error) {
          // An overwrite of sectors not all written yet may grow live data a little.
          const growth = [...Array(count).keys()].filter((k) => !written.tags.has(lba + k)).length;
          assert.ok(growth > 0 && isAtomioError(error, 'ERR_NO_SPACE'), msg(`overwrite ${i} of ${lba}+${count} failed: ${describe(error)}`));
          continue;
        }
        written.record(lba, count, tag++);
      }
      await written.verify(store, written.tags.keys(), msg);

      phase = 'after trimming half';
      for (let lba = 0; lba < next; lba += 64) {
        await store.block.trim(lba, Math.min(32, next - lba));
        written.forget(lba, Math.min(32, next - lba));
      }
      const trimmed = store.stats();
      assert.ok(trimmed.liveBytes < full.usable * 0.6, msg(`trimming half freed space: ${trimmed.liveBytes} live`));
      const room = Math.floor((trimmed.usableBytes - trimmed.liveBytes) / 2 / (16 * SECTOR));
      for (let i = 0; i < room; i++) {
        await store.block.write(next, tagged(SECTOR, tag, next, 16));
        written.record(next, 16, tag++);
        next += 16;
      }
      await written.verify(store, written.tags.keys(), msg);
      assert.ok((await fileSize(dir)) <= CAPACITY, msg('the data file grew past capacity'));
    } finally {
      await store.close();
    }
    const again = await open(dir);
    try {
      assert.ok(again.stats().liveBytes > 0);
    } finally {
      await again.close();
    }
  });
});

test('a group of concurrent overwrites larger than the free space commits: the group is not refused as a whole', { timeout: 30_000 }, async () => {
  await withTempDir(async (dir) => {
    const store = await open(dir, { capacity: MiB, segmentSize: 64 * 1024 });
    try {
      // Each 48 KiB write alone fits easily; together they are more than the whole store.
      const writes: Promise<number>[] = [];
      for (let i = 0; i < 24; i++) writes.push(store.block.write(0, tagged(SECTOR, i + 1, 0, 96)));
      const results = await Promise.allSettled(writes);
      assert.deepEqual(
        results.map((r) => (r.status === 'fulfilled' ? 'ok' : describe(r.reason))),
        results.map(() => 'ok'),
      );
      assert.deepEqual(await store.block.read(0, 96), tagged(SECTOR, 24, 0, 96), 'the last write wins');
      assert.equal(store.stats().liveBytes, 96 * SECTOR);
    } finally {
      await store.close();
    }
  });
});

// Small overwrites split extents, and every extent costs room in the log and in the next
// checkpoint. A full store takes such overwrites while the map's headroom lasts, then refuses
// them with ERR_NO_SPACE; it never refuses trims or overwrites of whole extents, and it never
// wedges: the cleaner keeps enough free segments for both.
for (const geometry of [
  { capacity: MiB, segmentSize: 64 * 1024, overwrites: 2000 },
  { capacity: 16 * MiB, segmentSize: 256 * 1024, overwrites: 6000 },
  { capacity: 16 * MiB, segmentSize: 64 * 1024, overwrites: 6000 },
]) {
  const shape = `${geometry.capacity / MiB} MiB in ${geometry.segmentSize / 1024} KiB segments`;
  test(`a full store of small split extents keeps taking trims and whole-extent overwrites, and never wedges (${shape})`, { timeout: 120_000 }, async (t) => {
    t.diagnostic(`seed ${SEED} (replay: ATOMIO_SEED=${SEED})`);
    const random = makeRandom(deriveSeed(SEED, 7));
    const int = (n: number): number => Math.floor(random() * n);
    let phase = 'fill';
    const msg = (m: string): string => `${m} [seed ${SEED}, ${shape}, ${phase}; replay with ATOMIO_SEED=${SEED}]`;
    await withTempDir(async (dir) => {
      const store = await open(dir, { capacity: geometry.capacity, segmentSize: geometry.segmentSize, durability: 'none' });
      try {
        const written = new Written();
        let tag = 1;
        let end = 0;
        for (;;) {
          try {
            await store.block.write(end, tagged(SECTOR, tag, end, 16));
          } catch (error) {
            assert.ok(isAtomioError(error, 'ERR_NO_SPACE'), msg(`filling stops with ERR_NO_SPACE, not ${describe(error)}`));
            break;
          }
          written.record(end, 16, tag++);
          end += 16;
        }
        const extents = end / 16;
        assert.ok(extents > 32, msg(`the store took ${extents} writes before it was full`));

        phase = 'splitting overwrites';
        // 1-8 sector overwrites inside the first half; the second half's extents stay whole.
        const half = Math.floor(extents / 2) * 16;
        let committed = 0;
        let refused = 0;
        for (let i = 0; i < geometry.overwrites; i++) {
          const count = 1 + int(8);
          const lba = int(half - count + 1);
          try {
            await store.block.write(lba, tagged(SECTOR, tag, lba, count));
          } catch (error) {
            assert.ok(isAtomioError(error, 'ERR_NO_SPACE'), msg(`overwrite ${i} of ${lba}+${count} failed: ${describe(error)}`));
            refused++;
            continue;
          }
          written.record(lba, count, tag++);
          committed++;
        }
        t.diagnostic(`${committed} splitting overwrites committed, ${refused} refused; ${JSON.stringify(store.stats().freeSegments)} free segments`);
        // Each split adds at most two extents: the headroom of 1024 takes at least 512 of them.
        assert.ok(committed >= Math.min(512, geometry.overwrites), msg(`only ${committed} overwrites committed before the store refused them`));

        phase = 'whole-extent overwrites';
        for (let i = 0; i < 400; i++) {
          const lba = half + 16 * int(extents - half / 16);
          await store.block.write(lba, tagged(SECTOR, tag, lba, 16));
          written.record(lba, 16, tag++);
        }

        phase = 'trims';
        for (let lba = 0; lba < end; lba += 64) {
          const count = Math.min(32, end - lba);
          await store.block.trim(lba, count);
          written.forget(lba, count);
        }
        await written.verify(store, written.tags.keys(), msg);

        phase = 'writes after trims';
        // Half the store is trimmed: writes of a quarter of it must fit again.
        for (let i = 0; i < extents / 4; i++) {
          const lba = 64 * int(end / 64) + 32;
          await store.block.write(lba, tagged(SECTOR, tag, lba, 16));
          written.record(lba, 16, tag++);
        }
        await written.verify(store, written.tags.keys(), msg);
        assert.ok((await fileSize(dir)) <= geometry.capacity, msg('the data file grew past capacity'));
      } finally {
        await store.close();
      }
      phase = 'reopen';
      const again = await open(dir);
      try {
        assert.ok(again.stats().liveBytes > 0, msg('the reopened store has data'));
      } finally {
        await again.close();
      }
    });
  });
}
