// The cleaner and the space it promises: relocated data is packed into the room left in
// segments (splitting extents where needed), so a store really holds usableBytes of live data;
// when it cannot make room it says ERR_NO_SPACE promptly instead of copying data in circles.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isAtomioError } from '../../src/base/errors.js';
import { CLEANER_RESERVE_SEGMENTS, WEAR_SPREAD_LIMIT } from '../../src/engine/limits.js';
import { FaultMedia } from '../../src/media/fault.js';
import { open, type Store } from '../../src/index.js';
import { tagged } from '../helpers/data.js';
import { describe } from '../helpers/errors.js';
import { withTempDir } from '../helpers/temp.js';

const SECTOR = 512;
const CAPACITY = 4 * 1024 * 1024;

interface Filled {
  store: Store;
  /** Extents written and still mapped (every odd one; the even ones are trimmed again). */
  kept: number[];
  live: number;
  usable: number;
  error: unknown;
}

/**
 * Writes `sectors`-sector extents at fresh lbas, trimming every other one again so that the
 * segments users fill are left half live, until a write fails.
 */
async function fill(store: Store, sectors: number): Promise<Omit<Filled, 'store'>> {
  const kept: number[] = [];
  for (let n = 0; n < 100_000; n++) {
    const before = store.stats();
    try {
      await store.block.write(n * sectors, tagged(SECTOR, n + 1, n * sectors, sectors));
      if (n % 2 === 1) {
        await store.block.trim((n - 1) * sectors, sectors);
        kept.push(n);
      }
    } catch (error) {
      assert.ok(isAtomioError(error, 'ERR_NO_SPACE'), `expected ERR_NO_SPACE, got ${describe(error)}`);
      if (n % 2 === 1) kept.push(n - 1); // its write went in, the trim did not
      return { kept, live: before.liveBytes, usable: before.usableBytes, error };
    }
  }
  assert.fail('the store never filled up');
}

async function checkKept(store: Store, sectors: number, kept: number[]): Promise<void> {
  for (const n of kept) {
    assert.deepEqual(await store.block.read(n * sectors, sectors), tagged(SECTOR, n + 1, n * sectors, sectors), `extent ${n}`);
  }
}

for (const sectors of [80, 16]) {
  test(`a store filled with half-trimmed ${(sectors * SECTOR) / 1024} KiB extents takes live data up to usableBytes before ERR_NO_SPACE`, { timeout: 60_000 }, async (t) => {
    await withTempDir(async (dir) => {
      const store = await open(dir, { capacity: CAPACITY, segmentSize: 64 * 1024, media: new FaultMedia(CAPACITY) });
      try {
        const full = await fill(store, sectors);
        t.diagnostic(`full at ${full.live} live of ${full.usable} usable, ${store.stats().segmentsCleaned} segments cleaned`);
        assert.ok(store.stats().segmentsCleaned > 0, 'the cleaner had to compact the half-live segments');
        assert.ok(full.live + sectors * SECTOR > full.usable, `ERR_NO_SPACE at ${full.live} live bytes of ${full.usable} usable: ${(full.error as Error).message}`);
        await checkKept(store, sectors, full.kept);
      } finally {
        await store.close();
      }
    });
  });
}

test('a store filled with 512-byte extents refuses growth with ERR_NO_SPACE in bounded time, keeps every byte, takes overwrites, and takes writes again after trims', { timeout: 60_000 }, async (t) => {
  await withTempDir(async (dir) => {
    const store = await open(dir, { capacity: CAPACITY, segmentSize: 64 * 1024, media: new FaultMedia(CAPACITY) });
    try {
      const full = await fill(store, 1);
      t.diagnostic(`full at ${full.live} live of ${full.usable} usable (${((100 * full.live) / full.usable).toFixed(1)}%): ${(full.error as Error).message}`);
      assert.ok(full.live + SECTOR > full.usable, `${full.live} live bytes of ${full.usable} usable when full`);
      await checkKept(store, 1, full.kept);
      // Overwrites add no live data: they go on working on a full store.
      for (let i = 0; i < 300; i++) {
        const n = full.kept[(i * 7919) % full.kept.length]!;
        await store.block.write(n, tagged(SECTOR, n + 1, n, 1));
      }
      // Trim a quarter of what is kept: writes of that much fresh data go in again.
      const freed = full.kept.filter((_, i) => i % 4 === 0);
      for (const n of freed) await store.block.trim(n, 1);
      for (let i = 0; i < freed.length / 2; i++) await store.block.write(1_000_000 + i, tagged(SECTOR, 7, 1_000_000 + i, 1));
      await checkKept(store, 1, full.kept.filter((_, i) => i % 4 !== 0));
    } finally {
      await store.close();
    }
  });
});

test('usableBytes is reachable with 512-byte extents (their descriptors and checksums are taken off it)', { timeout: 60_000 }, async () => {
  await withTempDir(async (dir) => {
    const store = await open(dir, { capacity: CAPACITY, segmentSize: 64 * 1024, media: new FaultMedia(CAPACITY) });
    try {
      const full = await fill(store, 1);
      assert.ok(full.live + SECTOR > full.usable, `ERR_NO_SPACE at ${full.live} live bytes of ${full.usable} usable`);
    } finally {
      await store.close();
    }
  });
});

test('the cleaner asks for a checkpoint when the segment it would rather clean is newer than the last one', { timeout: 60_000 }, async () => {
  await withTempDir(async (dir) => {
    const options = { capacity: CAPACITY, segmentSize: 64 * 1024, durability: 'none' as const, checkpointIntervalBytes: 1024 * CAPACITY };
    let store = await open(dir, options);
    // Cold data: half of each extent trimmed again, so its segments stay half live; close
    // checkpoints it.
    const cold = Math.floor((0.6 * store.stats().usableBytes) / (16 * SECTOR));
    for (let n = 0; n < cold; n++) {
      await store.block.write(n * 32, tagged(SECTOR, n + 1, n * 32, 32));
      await store.block.trim(n * 32 + 16, 16);
    }
    await store.close();
    store = await open(dir, options);
    try {
      // Hot data: one small range written over and over. Segments filled since the checkpoint
      // die whole, and are better victims than the half-live cold ones the checkpoint covers.
      const hotLba = cold * 32;
      for (let i = 0; i < CAPACITY / (8 * SECTOR); i++) await store.block.write(hotLba + (i % 4) * 8, tagged(SECTOR, 5000 + i, hotLba + (i % 4) * 8, 8));
      const s = store.stats();
      assert.ok(s.segmentsCleaned + s.checkpoints > 0, 'the overwrites needed cleaning');
      assert.ok(s.checkpoints > 0, 'the cleaner asked for checkpoints (the interval never came due)');
      // Without these checkpoints the cleaner copies half-live cold segments while dead hot ones
      // wait: cleanerAmplification 1.75 here; with them about 1.09 (cold ones are still compacted
      // to keep the free segments the background cleaner aims for).
      assert.ok(s.cleanerAmplification < 1.3, `the cleaner took dead hot segments instead of copying cold ones: cleanerAmplification ${s.cleanerAmplification.toFixed(3)}`);
      for (let n = 0; n < cold; n += 7) assert.deepEqual(await store.block.read(n * 32, 16), tagged(SECTOR, n + 1, n * 32, 16), `cold extent ${n}`);
    } finally {
      await store.close();
    }
  });
});

test("overwrites on a full store leave cleaning until only the checkpoint's part of the reserve is free", { timeout: 60_000 }, async () => {
  await withTempDir(async (dir) => {
    const store = await open(dir, { capacity: CAPACITY, segmentSize: 64 * 1024, durability: 'none', media: new FaultMedia(CAPACITY) });
    try {
      const s0 = store.stats();
      // Free segments beyond the checkpoint's part of the reserve (which grows with the maps).
      const spare = (): number => {
        const s = store.stats();
        return s.freeSegments - (s.reserveSegments - CLEANER_RESERVE_SEGMENTS);
      };
      const blocks = Math.floor((0.8 * s0.usableBytes) / (8 * SECTOR));
      const tags = new Array<number>(blocks).fill(1);
      for (let b = 0; b < blocks; b++) await store.block.write(b * 8, tagged(SECTOR, 1, b * 8, 8));
      // 4 KiB overwrites, 80% of them to a fifth of the blocks (a fixed xorshift sequence).
      let x = 0x9e3779b9;
      const next = (): number => {
        x ^= x << 13;
        x ^= x >>> 17;
        x ^= x << 5;
        return (x >>> 0) / 2 ** 32;
      };
      const hot = Math.floor(blocks / 5);
      let fewest = Infinity;
      // 32 writers that keep a write waiting, as a busy user would: with no commit waiting,
      // the background cleaner keeps more segments free than the writes need.
      let made = 0;
      const writer = async (): Promise<void> => {
        while (made < 3 * blocks) {
          const k = made++;
          const b = next() < 0.8 ? Math.floor(next() * hot) : hot + Math.floor(next() * (blocks - hot));
          tags[b] = k + 2; // commits land in the order they were made
          await store.block.write(b * 8, tagged(SECTOR, k + 2, b * 8, 8));
          fewest = Math.min(fewest, spare());
        }
      };
      await Promise.all(Array.from({ length: 32 }, writer));
      assert.ok(store.stats().segmentsCleaned > 0, 'the overwrites needed cleaning');
      // Keeping one more segment free all along (the cleaner's last one) costs this store 7%
      // more copying (cleanerAmplification 1.66 rather than 1.62).
      assert.equal(fewest, 0, 'the fewest free segments beyond the checkpoint\'s part');
      for (let b = 0; b < blocks; b += 5) assert.deepEqual(await store.block.read(b * 8, 8), tagged(SECTOR, tags[b]!, b * 8, 8), `block ${b}`);
    } finally {
      await store.close();
    }
  });
});

test('static wear levelling: cold segments give up their data once the hot ones wear far ahead', { timeout: 60_000 }, async () => {
  await withTempDir(async (dir) => {
    const options = { capacity: CAPACITY, segmentSize: 64 * 1024, durability: 'none' as const };
    const store = await open(dir, options);
    try {
      // Cold data written once: about half the store, in segments that no overwrite empties.
      const cold = Math.floor((0.5 * store.stats().usableBytes) / (8 * SECTOR));
      for (let n = 0; n < cold; n++) await store.block.write(n * 8, tagged(SECTOR, n + 1, n * 8, 8));
      // Hot data: one small range written over and over, emptying whole segments: the store
      // never needs the cleaner to pick a victim, so only wear levelling moves the cold data.
      const hotLba = cold * 8;
      for (let i = 0; i < (40 * CAPACITY) / (8 * SECTOR); i++) await store.block.write(hotLba + (i % 4) * 8, tagged(SECTOR, 9000 + i, hotLba + (i % 4) * 8, 8));
      const wear = store.stats().eraseCounts;
      // The hot segments went through some 40 erases each beyond the cold ones' one.
      assert.ok(wear.max > WEAR_SPREAD_LIMIT + 4, `the hot segments wore (max erase count ${wear.max})`);
      assert.ok(wear.max - wear.min <= WEAR_SPREAD_LIMIT + 2, `erase counts stay within the wear spread limit: ${JSON.stringify(wear)}`);
      for (let n = 0; n < cold; n += 5) assert.deepEqual(await store.block.read(n * 8, 8), tagged(SECTOR, n + 1, n * 8, 8), `cold extent ${n} after it moved`);
    } finally {
      await store.close();
    }
  });
});
