// Bit rot in data: a flipped bit in a written sector is caught by its chunk's checksum. The
// store opens, reads of the damaged chunk reject with ERR_CORRUPT naming the segment and the
// offset, every other sector reads fine, and the cleaner never copies the damage into a
// fresh, valid-looking checksum.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isAtomioError, type AtomioError } from '../../src/base/errors.js';
import { makeRandom } from '../../src/media/random.js';
import { FaultStore } from '../helpers/store.js';
import { sectorBytes, tagged } from '../helpers/data.js';
import { describe } from '../helpers/errors.js';
import { findAll, segmentOf } from '../helpers/image.js';
import { deriveSeed, testSeed } from '../helpers/seed.js';

const SEED = testSeed();
const SECTOR = 512;
const SEGMENT = 64 * 1024;
const OPTIONS = { capacity: 8 * 1024 * 1024, segmentSize: SEGMENT } as const;
/** Sectors per 4 KiB data chunk: a flipped bit spoils reads of its whole chunk. */
const CHUNK_SECTORS = 4096 / SECTOR;

/** Where the media holds the sector (tag, lba), and the bit to flip in it. */
function locate(fault: FaultStore, tag: number, lba: number): { at: number; segment: number; offsetInSegment: number } {
  const image = fault.media.snapshotImage();
  const hits = findAll(image, sectorBytes(SECTOR, tag, lba));
  assert.equal(hits.length, 1, `the sector (tag ${tag}, lba ${lba}) is stored exactly once`);
  const at = hits[0]! + 100;
  const { segment, offset } = segmentOf(at, SEGMENT);
  return { at, segment, offsetInSegment: offset };
}

function corruptAt(segment: number, offsetInSegment: number, what: string) {
  return (error: unknown): boolean => {
    assert.ok(isAtomioError(error, 'ERR_CORRUPT'), `${what}: expected ERR_CORRUPT, got ${describe(error)}`);
    const d = (error as AtomioError).details as { segment: number; offset: number };
    assert.equal(d.segment, segment, `${what}: details.segment`);
    // The offset names the damaged chunk: [crc 4][data 4096] holding the flipped byte.
    assert.ok(d.offset <= offsetInSegment && offsetInSegment < d.offset + 4100, `${what}: details.offset ${d.offset} names the chunk holding byte ${offsetInSegment}`);
    return true;
  };
}

test('a flipped bit in an old segment: open succeeds, the damaged chunk reads ERR_CORRUPT with its location, all else reads fine, and cleaning never launders it', async (t) => {
  t.diagnostic(`seed ${SEED} (replay: ATOMIO_SEED=${SEED})`);
  const random = makeRandom(deriveSeed(SEED, 1));
  const fault = await FaultStore.create(OPTIONS);
  try {
    // 200 writes of 32 sectors (4 chunks each), spread over many segments, then a clean close:
    // every segment is covered by the checkpoint, none is replayed.
    const writes = 200;
    for (let i = 0; i < writes; i++) await fault.store.block.write(i * 32, tagged(SECTOR, i + 1, i * 32, 32));
    const victim = 20 + Math.floor(random() * 150);
    const chunk = Math.floor(random() * 4);
    const lba = victim * 32 + chunk * CHUNK_SECTORS + Math.floor(random() * CHUNK_SECTORS);
    await fault.store.close();
    const where = locate(fault, victim + 1, lba);
    const bit = Math.floor(random() * 8);
    t.diagnostic(`flipping bit ${bit} of lba ${lba} (write ${victim}): segment ${where.segment}, offset ${where.offsetInSegment}`);
    await fault.closeAndReopen((media) => media.flipBit(where.at, bit));
    const store = fault.store;
    assert.deepEqual(store.stats().lastRecovery?.corruptions, [], 'nothing damaged is replayed at open');

    const chunkStart = victim * 32 + chunk * CHUNK_SECTORS;
    for (let s = chunkStart; s < chunkStart + CHUNK_SECTORS; s++) {
      await assert.rejects(store.block.read(s, 1), corruptAt(where.segment, where.offsetInSegment, `read of lba ${s}`));
    }
    await assert.rejects(store.block.read(victim * 32 - 4, 40), corruptAt(where.segment, where.offsetInSegment, 'a read spanning good and bad sectors'));
    // readParts hands out views of the chunks it read: the same check guards them.
    await assert.rejects(store.block.readParts(victim * 32, 32), corruptAt(where.segment, where.offsetInSegment, 'readParts of the damaged write'));
    // The same write's other chunks and every other write read back.
    for (let c = 0; c < 4; c++) {
      if (c === chunk) continue;
      const from = victim * 32 + c * CHUNK_SECTORS;
      assert.deepEqual(await store.block.read(from, CHUNK_SECTORS), tagged(SECTOR, victim + 1, from, CHUNK_SECTORS), `chunk ${c} of the damaged write`);
    }
    for (let i = 0; i < writes; i++) {
      if (i !== victim) assert.deepEqual(await store.block.read(i * 32, 32), tagged(SECTOR, i + 1, i * 32, 32), `write ${i}`);
    }
    assert.equal(store.block.exists(lba), true, 'the damaged sector is still mapped');

    // Churn the rest of the store until the cleaner has worked through it many times.
    const before = store.stats().segmentsCleaned;
    let tag = 10_000;
    // Partial overwrites leave segments partly live, so the cleaner has to copy data out.
    const expected = new Map<number, number>(); // lba → tag, for what the churn rewrote
    for (let round = 0; store.stats().segmentsCleaned - before < 100 && round < 6000; round++) {
      const i = Math.floor(random() * writes);
      if (i === victim) continue;
      const from = i * 32 + Math.floor(random() * 24);
      await store.block.write(from, tagged(SECTOR, tag, from, 8));
      for (let k = 0; k < 8; k++) expected.set(from + k, tag);
      tag++;
    }
    const cleaned = store.stats().segmentsCleaned - before;
    t.diagnostic(`the churn made the cleaner copy ${cleaned} segments`);
    assert.ok(cleaned >= 100, `the cleaner ran over the store (${cleaned} segments cleaned)`);
    for (let i = 0; i < writes; i++) {
      if (i === victim) continue;
      const got = await store.block.read(i * 32, 32);
      for (let k = 0; k < 32; k++) {
        const at = i * 32 + k;
        assert.deepEqual(got.subarray(k * SECTOR, (k + 1) * SECTOR), sectorBytes(SECTOR, expected.get(at) ?? i + 1, at), `lba ${at} after cleaning`);
      }
    }
    await assert.rejects(store.block.read(lba, 1), corruptAt(where.segment, where.offsetInSegment, 'after cleaning'));

    // Through another close and open, the damage is still reported, not turned into data.
    await fault.closeAndReopen();
    await assert.rejects(fault.store.block.read(lba, 1), corruptAt(where.segment, where.offsetInSegment, 'after reopen'));
    // Rewriting the damaged sectors repairs them.
    await fault.store.block.write(chunkStart, tagged(SECTOR, 99_999, chunkStart, CHUNK_SECTORS));
    assert.deepEqual(await fault.store.block.read(chunkStart, CHUNK_SECTORS), tagged(SECTOR, 99_999, chunkStart, CHUNK_SECTORS));
  } finally {
    await fault.dispose();
  }
});

test('a flipped bit in a data chunk of a record replayed at open: open succeeds and reports the corruption with its location; the chunk reads ERR_CORRUPT', async (t) => {
  t.diagnostic(`seed ${SEED} (replay: ATOMIO_SEED=${SEED})`);
  const random = makeRandom(deriveSeed(SEED, 2));
  const fault = await FaultStore.create({ ...OPTIONS, checkpointIntervalBytes: 64 * 1024 * 1024 });
  try {
    await fault.store.block.write(0, tagged(SECTOR, 1, 0, 32));
    await fault.store.checkpoint();
    // Twenty acknowledged writes after the checkpoint: recovery replays them.
    for (let i = 1; i <= 20; i++) await fault.store.block.write(i * 32, tagged(SECTOR, i + 1, i * 32, 32));
    const victim = 1 + Math.floor(random() * 15); // not the last: later records vouch for it
    const lba = victim * 32 + Math.floor(random() * 32);
    const where = locate(fault, victim + 1, lba);
    const crashed = fault.crashImage('keep-all');
    crashed.flipBit(where.at, Math.floor(random() * 8));
    await fault.reopen(crashed);
    const report = fault.store.stats().lastRecovery!;
    t.diagnostic(`recovery: ${JSON.stringify(report)}`);
    assert.ok(
      report.corruptions.some((c) => c.segment === where.segment && c.offset <= where.offsetInSegment && where.offsetInSegment < c.offset + 4100),
      `the corruption at segment ${where.segment}, offset ${where.offsetInSegment} is reported: ${JSON.stringify(report.corruptions)}`,
    );
    await assert.rejects(fault.store.block.read(lba, 1), corruptAt(where.segment, where.offsetInSegment, 'replayed damaged chunk'));
    for (let i = 0; i <= 20; i++) {
      if (i === victim) continue;
      assert.deepEqual(await fault.store.block.read(i * 32, 32), tagged(SECTOR, i + 1, i * 32, 32), `write ${i}`);
    }
  } finally {
    await fault.dispose();
  }
});
