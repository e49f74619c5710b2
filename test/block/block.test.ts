// The block face's API behaviour: argument and limit errors, the sparse address space, 4 KiB
// sectors, TTL expiry, versions and mapped extents, conditions, group commit, and the store's
// lifecycle errors (locked, not a store, closed) and disposal.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fsp from 'node:fs/promises';
import path from 'node:path';
import {
  DATA_FILE_NAME,
  MAX_ATOMIC_OPS,
  MAX_CONDITIONS,
  ManualClock,
  open,
  type AtomicOp,
  type BlockCondition,
  type Store,
} from '../../src/index.js';
import { FaultMedia } from '../../src/media/fault.js';
import { code } from '../helpers/errors.js';
import { tagged } from '../helpers/data.js';
import { TempDirs, withTempDir } from '../helpers/temp.js';

const MiB = 1024 * 1024;
const SMALL = { capacity: 8 * MiB, segmentSize: 64 * 1024 } as const;

/** A store on a FaultMedia in a temp dir, closed and removed after `body`. */
async function withStore(
  body: (store: Store, media: FaultMedia) => Promise<void>,
  options: Parameters<typeof open>[1] = {},
): Promise<void> {
  await withTempDir(async (dir) => {
    const media = new FaultMedia(options.capacity ?? SMALL.capacity);
    const store = await open(dir, { ...SMALL, ...options, media });
    try {
      await body(store, media);
    } finally {
      await store.close();
    }
  });
}

test('malformed arguments reject with ERR_ARGUMENT and write nothing', async () => {
  await withStore(async (store) => {
    const b = store.block;
    const top = b.sectorCount;
    const sector = Buffer.alloc(512, 1);
    const cases: [string, () => Promise<unknown>][] = [
      ['data of 513 bytes', () => b.write(0, Buffer.alloc(513, 1))],
      ['data of 511 bytes', () => b.write(0, Buffer.alloc(511, 1))],
      ['empty data', () => b.write(0, Buffer.alloc(0))],
      ['data not a Uint8Array', () => b.write(0, 'hello' as unknown as Uint8Array)],
      ['negative lba', () => b.write(-1, sector)],
      ['fractional lba', () => b.write(1.5, sector)],
      ['NaN lba', () => b.write(Number.NaN, sector)],
      ['lba past the address space', () => b.write(top, sector)],
      ['write running past the last lba', () => b.write(top - 1, Buffer.alloc(1024, 1))],
      ['lba 2^53', () => b.write(2 ** 53, sector)],
      ['read of 0 sectors', () => b.read(0, 0)],
      ['read with negative lba', () => b.read(-5, 1)],
      ['read past the last lba', () => b.read(top - 1, 2)],
      ['readParts of 0 sectors', () => b.readParts(0, 0)],
      ['readParts past the last lba', () => b.readParts(top - 1, 2)],
      ['trim of 0 sectors', () => b.trim(0, 0)],
      ['trim with fractional count', () => b.trim(0, 2.5)],
      ['trim past the last lba', () => b.trim(top, 1)],
      ['ttl 0', () => b.write(0, sector, { ttl: 0 })],
      ['negative ttl', () => b.write(0, sector, { ttl: -10 })],
      ['NaN ttl', () => b.write(0, sector, { ttl: Number.NaN })],
      ['infinite ttl', () => b.write(0, sector, { ttl: Infinity })],
      ['string ttl', () => b.write(0, sector, { ttl: '5' as unknown as number })],
      ['ttl beyond 2^40 ms', () => b.write(0, sector, { ttl: 2 ** 41 })],
      ['empty ops', () => b.atomic([])],
      ['ops not an array', () => b.atomic({ write: 0, data: sector } as unknown as AtomicOp[])],
      ['an op that is neither write nor trim', () => b.atomic([{ erase: 0 } as unknown as AtomicOp])],
      ['a null op', () => b.atomic([null as unknown as AtomicOp])],
      ['a bad op after a good one', () => b.atomic([{ write: 0, data: sector }, { write: 1, data: Buffer.alloc(100) }])],
      ['condition {}', () => b.atomic([{ write: 0, data: sector }], { if: {} as BlockCondition })],
      ['condition unwritten not a tuple', () => b.atomic([{ write: 0, data: sector }], { if: { unwritten: 5 } as unknown as BlockCondition })],
      ['condition with count 0', () => b.atomic([{ write: 0, data: sector }], { if: { unwritten: [0, 0] } })],
      ['condition past the last lba', () => b.atomic([{ write: 0, data: sector }], { if: { unwritten: [top, 1] } })],
      ['condition with negative version', () => b.atomic([{ write: 0, data: sector }], { if: { version: [0, 1, -1] } })],
      ['condition with fractional version', () => b.atomic([{ write: 0, data: sector }], { if: { version: [0, 1, 1.5] } })],
      ['null condition', () => b.atomic([{ write: 0, data: sector }], { if: null as unknown as BlockCondition })],
      ['condition list with a bad entry', () => b.atomic([{ write: 0, data: sector }], { if: [{ unwritten: [0, 1] }, { version: 3 } as unknown as BlockCondition] })],
    ];
    for (const [what, call] of cases) await assert.rejects(call(), code('ERR_ARGUMENT', what), what);
    for (const [what, call] of [
      ['exists with negative lba', () => b.exists(-1)],
      ['exists past the last lba', () => b.exists(top)],
      ['mapped with count 0', () => b.mapped(0, 0)],
      ['versionOf past the last lba', () => b.versionOf(top)],
      ['versionOf with fractional lba', () => b.versionOf(0.5)],
    ] as [string, () => unknown][]) {
      assert.throws(call, code('ERR_ARGUMENT', what), what);
    }
    const stats = store.stats();
    assert.equal(stats.commits, 0, 'no rejected call committed anything');
    assert.equal(stats.liveBytes, 0);
    assert.equal(b.exists(0, 16), false);
  });
});

test('too many ops, too many data bytes, too many conditions and too big a read reject with ERR_LIMIT', async () => {
  await withStore(async (store) => {
    const b = store.block;
    const sector = Buffer.alloc(512, 2);
    const ops: AtomicOp[] = [];
    for (let i = 0; i <= MAX_ATOMIC_OPS; i++) ops.push(i % 64 === 0 ? { write: i, data: sector } : { trim: i, count: 1 });
    await assert.rejects(b.atomic(ops), code('ERR_LIMIT', `${ops.length} ops`));
    // Exactly the limit is accepted (the data is small).
    const atLimit = ops.slice(0, MAX_ATOMIC_OPS);
    assert.ok((await b.atomic(atLimit)) > 0);

    // 64 KiB segments: one commit carries at most the segment's payload minus 4 KiB.
    assert.ok(b.maxAtomicBytes < 64 * 1024, `maxAtomicBytes ${b.maxAtomicBytes} follows the small segment size`);
    const tooBig = Buffer.alloc(Math.ceil((b.maxAtomicBytes + 1) / 512) * 512, 3);
    await assert.rejects(b.write(5000, tooBig), code('ERR_LIMIT', 'one write over maxAtomicBytes'));
    const half = Buffer.alloc(Math.ceil((b.maxAtomicBytes / 2 + 512) / 512) * 512, 4);
    await assert.rejects(
      b.atomic([{ write: 5000, data: half }, { write: 9000, data: half }]),
      code('ERR_LIMIT', 'two writes whose sum is over maxAtomicBytes'),
    );
    const fits = Buffer.alloc(Math.floor(b.maxAtomicBytes / 512) * 512, 5);
    const v = await b.write(5000, fits);
    assert.deepEqual(await b.read(5000, fits.length / 512), fits, 'a write of exactly maxAtomicBytes (rounded to sectors) works');
    assert.equal(b.versionOf(5000), v);

    const conditions: BlockCondition[] = [];
    for (let i = 0; i <= MAX_CONDITIONS; i++) conditions.push({ unwritten: [100000 + i, 1] });
    await assert.rejects(b.atomic([{ write: 100000, data: sector }], { if: conditions }), code('ERR_LIMIT', 'conditions'));
    assert.equal(b.exists(100000), false);
    await assert.rejects(b.read(0, (256 * MiB) / 512 + 1), code('ERR_LIMIT', 'read over 256 MiB'));
  });
});

test('readParts hands out what read returns: one extent, several, holes between and around, trimmed and overwritten sectors', async () => {
  await withStore(async (store) => {
    const b = store.block;
    await b.write(0, tagged(512, 1, 0, 256)); // one extent of 128 KiB (many 4 KiB chunks)
    await b.write(300, tagged(512, 2, 300, 9));
    await b.write(320, tagged(512, 3, 320, 40));
    await b.write(330, tagged(512, 4, 330, 3)); // overwrites the middle of the one before
    await b.trim(100, 20);
    const ranges: [number, number][] = [
      [0, 256],
      [1, 7],
      [5, 250],
      [90, 40],
      [250, 120],
      [400, 16],
      [299, 11],
      [7, 1],
    ];
    for (const [lba, count] of ranges) {
      const parts = await b.readParts(lba, count);
      assert.ok(parts.length >= 1 && parts.every((p) => p.length > 0), `[${lba}, +${count}): non-empty parts`);
      assert.deepEqual(Buffer.concat(parts), await b.read(lba, count), `[${lba}, +${count}): the parts are the read`);
    }
  }, { capacity: 32 * MiB, segmentSize: MiB });
});

test('sparse lbas at the very top of the 2^53-byte space write, read back and survive a reopen', async () => {
  await withTempDir(async (dir) => {
    const top = 2 ** 53 / 512 - 1;
    const store = await open(dir, SMALL);
    assert.equal(store.block.sectorCount, 2 ** 53 / 512);
    const atTop = tagged(512, 1, top, 1);
    const nearTop = tagged(512, 2, top - 20, 8);
    const v1 = await store.block.write(top, atTop);
    const v2 = await store.block.write(top - 20, nearTop);
    await store.block.write(0, tagged(512, 3, 0, 1));
    assert.deepEqual(await store.block.read(top, 1), atTop);
    assert.deepEqual(await store.block.read(top - 20, 8), nearTop);
    assert.deepEqual(await store.block.read(top - 12, 12), Buffer.alloc(12 * 512), 'the gap between reads as zeros');
    assert.equal(store.block.exists(top - 11, 11), false);
    assert.equal(store.block.exists(top - 11, 12), true);
    assert.deepEqual(store.block.mapped(top - 100, 101), [
      { lba: top - 20, count: 8, version: v2 },
      { lba: top, count: 1, version: v1 },
    ]);
    assert.equal(store.stats().liveBytes, 10 * 512, 'only written sectors take space');
    await store.close();

    const again = await open(dir);
    try {
      assert.deepEqual(await again.block.read(top, 1), atTop);
      assert.deepEqual(await again.block.read(top - 20, 8), nearTop);
      assert.equal(again.block.versionOf(top), v1);
      await again.block.trim(top - 20, 21);
      assert.equal(again.block.exists(top - 20, 21), false);
      assert.deepEqual(await again.block.read(0, 1), tagged(512, 3, 0, 1));
    } finally {
      await again.close();
    }
  });
});

test('a 4096-byte-sector store takes only whole 4 KiB sectors, spans 2^53 bytes and keeps its sector size on reopen', async () => {
  await withTempDir(async (dir) => {
    const store = await open(dir, { capacity: 16 * MiB, segmentSize: 256 * 1024, sectorSize: 4096 });
    const b = store.block;
    assert.equal(b.sectorSize, 4096);
    assert.equal(b.sectorCount, 2 ** 53 / 4096);
    await assert.rejects(b.write(0, Buffer.alloc(512, 1)), code('ERR_ARGUMENT', '512 bytes on a 4 KiB store'));
    await assert.rejects(b.write(0, Buffer.alloc(4096 + 512, 1)), code('ERR_ARGUMENT', '4608 bytes on a 4 KiB store'));
    const data = tagged(4096, 7, 10, 3);
    const top = tagged(4096, 8, b.sectorCount - 1, 1);
    const v = await b.write(10, data);
    await b.write(b.sectorCount - 1, top);
    assert.deepEqual(await b.read(9, 5), Buffer.concat([Buffer.alloc(4096), data, Buffer.alloc(4096)]));
    assert.deepEqual(b.mapped(0, 100), [{ lba: 10, count: 3, version: v }]);
    assert.equal(store.stats().liveBytes, 4 * 4096);
    await store.close();

    const again = await open(dir, { sectorSize: 512 });
    try {
      assert.equal(again.block.sectorSize, 4096, 'the sector size is fixed at creation');
      assert.deepEqual(await again.block.read(10, 3), data);
      assert.deepEqual(await again.block.read(again.block.sectorCount - 1, 1), top);
    } finally {
      await again.close();
    }
  });
});

test('ttl: data reads back until its deadline, then reads as zeros, is not mapped, and its space returns without cleaning', async () => {
  const clock = new ManualClock();
  await withStore(
    async (store) => {
      const b = store.block;
      const idle = store.stats();
      const keep = tagged(512, 1, 0, 8);
      await b.write(0, keep);
      // 1 MiB of expiring data: enough to fill many 64 KiB segments.
      const expiring: Buffer[] = [];
      for (let i = 0; i < 32; i++) {
        const data = tagged(512, 100 + i, 1000 + i * 64, 64);
        expiring.push(data);
        await b.write(1000 + i * 64, data, { ttl: 1000 });
      }
      const vShort = await b.write(50000, tagged(512, 200, 50000, 4), { ttl: 10 });
      const full = store.stats();
      assert.equal(full.liveBytes, (8 + 32 * 64 + 4) * 512);
      assert.ok(full.freeSegments <= idle.freeSegments - 16, `the ttl data took segments: ${full.freeSegments} free`);
      clock.advance(9);
      assert.equal(b.versionOf(50000), vShort);
      assert.deepEqual(await b.read(50000, 4), tagged(512, 200, 50000, 4), 'readable 1 ms before its deadline');
      clock.advance(1);
      assert.deepEqual(await b.read(50000, 4), Buffer.alloc(4 * 512), 'zeros at the deadline');
      assert.equal(b.exists(50000, 4), false);
      assert.equal(b.versionOf(50000), 0);
      assert.deepEqual(b.mapped(50000, 4), []);
      assert.deepEqual(await b.read(1000, 64), expiring[0], 'the 1 s data is still there');
      assert.equal(b.exists(1000, 32 * 64), true);

      clock.advance(990);
      assert.deepEqual(await b.read(1000, 32 * 64), Buffer.alloc(32 * 64 * 512));
      assert.equal(b.exists(1000, 32 * 64), false);
      assert.deepEqual(await b.read(0, 8), keep, 'data without a ttl stays');
      // A commit sweeps the expired data out of the map; a checkpoint lets emptied segments go free.
      await b.write(8, tagged(512, 2, 8, 1));
      const swept = store.stats();
      assert.equal(swept.liveBytes, 9 * 512, 'expired bytes no longer count as live');
      assert.equal(swept.expiredBytesReclaimed, (32 * 64 + 4) * 512);
      await store.checkpoint();
      const after = store.stats();
      assert.equal(after.segmentsCleaned, 0, 'no segment was cleaned (copied) to reclaim expired data');
      assert.ok(after.freeSegments >= idle.freeSegments - 3, `segments returned: ${after.freeSegments} free, ${full.freeSegments} before expiry, ${idle.freeSegments} when empty`);
      assert.equal(after.cleanerAmplification, 1, 'the cleaner copied nothing');
    },
    { clock },
  );
});

test('ttl: an overwrite before the deadline is not expired by the older write', async () => {
  const clock = new ManualClock();
  await withStore(
    async (store) => {
      const b = store.block;
      await b.write(0, tagged(512, 1, 0, 8), { ttl: 100 });
      const v2 = await b.write(2, tagged(512, 2, 2, 2));
      const v3 = await b.write(5, tagged(512, 3, 5, 1), { ttl: 5000 });
      clock.advance(100);
      const read = await b.read(0, 8);
      assert.deepEqual(
        read,
        Buffer.concat([Buffer.alloc(1024), tagged(512, 2, 2, 2), Buffer.alloc(512), tagged(512, 3, 5, 1), Buffer.alloc(1024)]),
      );
      assert.deepEqual(b.mapped(0, 8), [
        { lba: 2, count: 2, version: v2 },
        { lba: 5, count: 1, version: v3 },
      ]);
      await b.write(100, tagged(512, 4, 100, 1)); // sweeps
      assert.deepEqual(await b.read(2, 2), tagged(512, 2, 2, 2));
      assert.equal(store.stats().liveBytes, 4 * 512);
      clock.advance(4900);
      assert.equal(b.exists(5), false);
      assert.deepEqual(b.mapped(0, 8), [{ lba: 2, count: 2, version: v2 }]);
    },
    { clock },
  );
});

test('ttl deadlines survive close and reopen', async () => {
  const clock = new ManualClock();
  await withTempDir(async (dir) => {
    const store = await open(dir, { ...SMALL, clock });
    await store.block.write(0, tagged(512, 1, 0, 4), { ttl: 60_000 });
    await store.block.write(4, tagged(512, 2, 4, 4));
    await store.close();
    clock.advance(30_000);
    let again = await open(dir, { clock });
    assert.deepEqual(await again.block.read(0, 8), Buffer.concat([tagged(512, 1, 0, 4), tagged(512, 2, 4, 4)]));
    await again.close();
    clock.advance(30_000);
    again = await open(dir, { clock });
    try {
      assert.deepEqual(await again.block.read(0, 8), Buffer.concat([Buffer.alloc(2048), tagged(512, 2, 4, 4)]));
      assert.equal(again.stats().liveBytes, 4 * 512);
    } finally {
      await again.close();
    }
  });
});

test('versionOf and mapped report the commit that last wrote each sector; one atomic commit has one version', async () => {
  await withStore(async (store) => {
    const b = store.block;
    assert.equal(b.versionOf(10), 0);
    assert.deepEqual(b.mapped(0, 1000), []);
    const v1 = await b.write(10, tagged(512, 1, 10, 4));
    const v2 = await b.write(12, tagged(512, 2, 12, 4));
    assert.ok(v2 > v1 && v1 > 0, `versions rise: ${v1}, ${v2}`);
    assert.deepEqual(b.mapped(0, 1000), [
      { lba: 10, count: 2, version: v1 },
      { lba: 12, count: 4, version: v2 },
    ]);
    assert.deepEqual(b.mapped(11, 2), [
      { lba: 11, count: 1, version: v1 },
      { lba: 12, count: 1, version: v2 },
    ]);
    assert.equal(b.versionOf(9), 0);
    assert.equal(b.versionOf(11), v1);
    assert.equal(b.versionOf(15), v2);
    const v3 = await b.trim(11, 2);
    assert.ok(v3 > v2);
    assert.deepEqual(b.mapped(0, 1000), [
      { lba: 10, count: 1, version: v1 },
      { lba: 13, count: 3, version: v2 },
    ]);
    const v4 = await b.atomic([
      { write: 20, data: tagged(512, 4, 20, 2) },
      { write: 22, data: tagged(512, 5, 22, 2) },
      { write: 30, data: tagged(512, 6, 30, 1) },
      { trim: 13, count: 1 },
    ]);
    assert.deepEqual(b.mapped(13, 30), [
      { lba: 14, count: 2, version: v2 },
      { lba: 20, count: 4, version: v4 },
      { lba: 30, count: 1, version: v4 },
    ]);
    // Later ops of one commit win where they overlap.
    const v5 = await b.atomic([
      { write: 40, data: tagged(512, 7, 40, 4) },
      { trim: 41, count: 1 },
      { write: 43, data: tagged(512, 8, 43, 1) },
    ]);
    assert.deepEqual(await b.read(40, 4), Buffer.concat([tagged(512, 7, 40, 1), Buffer.alloc(512), tagged(512, 7, 42, 1), tagged(512, 8, 43, 1)]));
    assert.deepEqual(b.mapped(40, 4), [
      { lba: 40, count: 1, version: v5 },
      { lba: 42, count: 2, version: v5 },
    ]);
  });
});

test('conditions: unwritten and version checks pass or fail with ERR_CONDITION, and a failed commit writes nothing', async () => {
  await withStore(async (store) => {
    const b = store.block;
    const v1 = await b.atomic([{ write: 0, data: tagged(512, 1, 0, 4) }], { if: { unwritten: [0, 8] } });
    await assert.rejects(b.atomic([{ write: 6, data: tagged(512, 2, 6, 1) }], { if: { unwritten: [3, 4] } }), (error: unknown) => {
      code('ERR_CONDITION')(error);
      assert.equal((error as { details: { index: number } }).details.index, 0);
      return true;
    });
    assert.equal(b.exists(6), false, 'the failed commit wrote nothing');
    await assert.rejects(b.atomic([{ trim: 0, count: 4 }], { if: { version: [0, 4, v1 + 1] } }), code('ERR_CONDITION'));
    assert.deepEqual(await b.read(0, 4), tagged(512, 1, 0, 4), 'the failed trim trimmed nothing');
    await assert.rejects(b.atomic([{ write: 9, data: tagged(512, 2, 9, 1) }], { if: { version: [4, 4, v1] } }), code('ERR_CONDITION'), 'nothing mapped: the version is 0');
    const v2 = await b.atomic([{ write: 9, data: tagged(512, 3, 9, 1) }], { if: { version: [4, 4, 0] } });
    // The newest version among the mapped sectors counts.
    await assert.rejects(b.atomic([{ write: 20, data: tagged(512, 4, 20, 1) }], { if: { version: [0, 10, v1] } }), code('ERR_CONDITION'));
    const v3 = await b.atomic([{ write: 20, data: tagged(512, 5, 20, 1) }], { if: { version: [0, 10, v2] } });
    // Several conditions: all must hold; the failing one is named.
    await assert.rejects(
      b.atomic([{ write: 30, data: tagged(512, 6, 30, 1) }], { if: [{ unwritten: [30, 1] }, { version: [20, 1, v2] }] }),
      (error: unknown) => {
        code('ERR_CONDITION')(error);
        assert.equal((error as { details: { index: number } }).details.index, 1);
        return true;
      },
    );
    await b.atomic([{ write: 30, data: tagged(512, 7, 30, 1) }], { if: [{ unwritten: [30, 1] }, { version: [20, 1, v3] }] });
    // A trimmed range counts as unwritten again.
    await b.trim(0, 4);
    await b.atomic([{ write: 0, data: tagged(512, 8, 0, 1) }], { if: { unwritten: [0, 4] } });
  });
});

test('conditions see commits queued before them in the same group commit', async () => {
  await withStore(async (store) => {
    const b = store.block;
    const base = await b.write(500, tagged(512, 1, 500, 1));
    // Issued in one tick, so they share a batch: only the first of each pair can pass.
    const results = await Promise.allSettled([
      b.atomic([{ write: 0, data: tagged(512, 2, 0, 2) }], { if: { unwritten: [0, 2] } }),
      b.atomic([{ write: 1, data: tagged(512, 3, 1, 2) }], { if: { unwritten: [1, 1] } }),
      b.atomic([{ write: 500, data: tagged(512, 4, 500, 1) }], { if: { version: [500, 1, base] } }),
      b.atomic([{ write: 500, data: tagged(512, 5, 500, 1) }], { if: { version: [500, 1, base] } }),
      b.atomic([{ trim: 0, count: 1 }]),
      b.atomic([{ write: 0, data: tagged(512, 6, 0, 1) }], { if: { unwritten: [0, 1] } }),
    ]);
    assert.deepEqual(
      results.map((r) => r.status),
      ['fulfilled', 'rejected', 'fulfilled', 'rejected', 'fulfilled', 'fulfilled'],
    );
    for (const r of results) if (r.status === 'rejected') code('ERR_CONDITION')(r.reason);
    assert.deepEqual(await b.read(0, 3), Buffer.concat([tagged(512, 6, 0, 1), tagged(512, 2, 1, 1), Buffer.alloc(512)]));
    assert.deepEqual(await b.read(500, 1), tagged(512, 4, 500, 1));
    assert.ok(store.stats().commitsPerFlush > 1, 'they did share a flush');
  });
});

test('64 concurrent writes share flushes (commitsPerFlush > 1) and each gets its own version', async () => {
  await withTempDir(async (dir) => {
    const store = await open(dir, SMALL);
    try {
      const before = store.stats();
      const writes: Promise<number>[] = [];
      for (let i = 0; i < 64; i++) writes.push(store.block.write(i * 8, tagged(512, i + 1, i * 8, 8)));
      const versions = await Promise.all(writes);
      assert.equal(new Set(versions).size, 64, 'every commit has its own version');
      const after = store.stats();
      const commits = after.commits - before.commits;
      const flushes = after.flushes - before.flushes;
      assert.equal(commits, 64);
      assert.ok(flushes < 32, `64 commits took ${flushes} flushes`);
      assert.ok(after.commitsPerFlush > 1, `commitsPerFlush ${after.commitsPerFlush}`);
      for (let i = 0; i < 64; i++) {
        assert.deepEqual(await store.block.read(i * 8, 8), tagged(512, i + 1, i * 8, 8));
        assert.equal(store.block.versionOf(i * 8), versions[i]);
      }
    } finally {
      await store.close();
    }
  });
});

test('a second open of an open store fails with ERR_LOCKED; after close it opens', async () => {
  await withTempDir(async (dir) => {
    const store = await open(dir, SMALL);
    await store.block.write(0, tagged(512, 1, 0, 1));
    await assert.rejects(open(dir, SMALL), code('ERR_LOCKED'));
    await assert.rejects(open(path.join(dir, '.'), SMALL), code('ERR_LOCKED', 'same dir by another spelling'));
    assert.deepEqual(await store.block.read(0, 1), tagged(512, 1, 0, 1), 'the failed open did not disturb the owner');
    await store.close();
    const again = await open(dir);
    try {
      assert.deepEqual(await again.block.read(0, 1), tagged(512, 1, 0, 1));
    } finally {
      await again.close();
    }
  });
});

test('opening a non-empty directory that is not a store, or a garbage data file, fails with ERR_FORMAT and leaves no lock', async () => {
  await withTempDir(async (dir) => {
    const other = path.join(dir, 'other');
    await fsp.mkdir(other);
    await fsp.writeFile(path.join(other, 'notes.txt'), 'not a store');
    await assert.rejects(open(other, SMALL), code('ERR_FORMAT', 'non-empty directory'));
    assert.deepEqual(await fsp.readdir(other), ['notes.txt'], 'nothing was created in it');

    const garbage = path.join(dir, 'garbage');
    await fsp.mkdir(garbage);
    const junk = Buffer.alloc(64 * 1024);
    for (let i = 0; i < junk.length; i++) junk[i] = (i * 7919 + 13) & 0xff;
    await fsp.writeFile(path.join(garbage, DATA_FILE_NAME), junk);
    await assert.rejects(open(garbage, SMALL), code('ERR_FORMAT', 'garbage data file'));
    // The failed open released its lock: a second try fails the same way, not with ERR_LOCKED.
    await assert.rejects(open(garbage, SMALL), code('ERR_FORMAT', 'garbage data file, second open'));
    assert.deepEqual(await fsp.readFile(path.join(garbage, DATA_FILE_NAME)), junk, 'the garbage was not overwritten');
  });
});

test('after close every call fails with ERR_CLOSED; close is idempotent', async () => {
  await withTempDir(async (dir) => {
    const store = await open(dir, SMALL);
    await store.block.write(0, tagged(512, 1, 0, 1));
    await store.close();
    await store.close();
    const b = store.block;
    await assert.rejects(b.write(0, Buffer.alloc(512)), code('ERR_CLOSED', 'write'));
    await assert.rejects(b.read(0, 1), code('ERR_CLOSED', 'read'));
    await assert.rejects(b.trim(0, 1), code('ERR_CLOSED', 'trim'));
    await assert.rejects(b.atomic([{ trim: 0, count: 1 }]), code('ERR_CLOSED', 'atomic'));
    await assert.rejects(store.checkpoint(), code('ERR_CLOSED', 'checkpoint'));
    assert.throws(() => b.exists(0), code('ERR_CLOSED', 'exists'));
    assert.throws(() => b.mapped(0, 1), code('ERR_CLOSED', 'mapped'));
    assert.throws(() => b.versionOf(0), code('ERR_CLOSED', 'versionOf'));
  });
});

test('close waits for commits still queued: each resolves and is there after reopen', async () => {
  await withTempDir(async (dir) => {
    const store = await open(dir, SMALL);
    const writes: Promise<number>[] = [];
    for (let i = 0; i < 20; i++) writes.push(store.block.write(i * 4, tagged(512, i + 1, i * 4, 4)));
    await store.close();
    const versions = await Promise.all(writes);
    assert.equal(versions.length, 20);
    const again = await open(dir);
    try {
      for (let i = 0; i < 20; i++) assert.deepEqual(await again.block.read(i * 4, 4), tagged(512, i + 1, i * 4, 4));
    } finally {
      await again.close();
    }
  });
});

test('await using closes the store at the end of its block (Symbol.asyncDispose), releasing the lock', async () => {
  const dirs = new TempDirs();
  try {
    const dir = await dirs.make();
    let escaped: Store | undefined;
    {
      await using store = await open(dir, SMALL);
      escaped = store;
      await store.block.write(7, tagged(512, 9, 7, 1));
      assert.equal(typeof store[Symbol.asyncDispose], 'function');
    }
    assert.throws(() => escaped.block.exists(7), code('ERR_CLOSED', 'disposed store'));
    await using again = await open(dir);
    assert.deepEqual(await again.block.read(7, 1), tagged(512, 9, 7, 1));
  } finally {
    await dirs.removeAll();
  }
});
