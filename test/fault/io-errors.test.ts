// I/O errors from the medium: a failed write or flush fails the commits it carried with
// ERR_IO, and the store then refuses writes (ERR_IO) until reopened, while reads keep
// working. Whatever was acknowledged before survives a crash. Failures during background
// work (checkpoints) and close are reported as ERR_IO too, never as a raw fs error or a
// crashed process.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FaultMedia, type CrashMode } from '../../src/media/fault.js';
import { FaultStore } from '../helpers/store.js';
import { tagOf, tagged } from '../helpers/data.js';
import { code, describe, outcome } from '../helpers/errors.js';
import { deriveSeed, testSeed } from '../helpers/seed.js';

const SEED = testSeed();
const SECTOR = 512;
const CAPACITY = 4 * 1024 * 1024;
const OPTIONS = { capacity: CAPACITY, segmentSize: 64 * 1024 } as const;

/** Ten acknowledged 8-sector writes at lbas 0, 8, … 72 (tags 1..10). */
async function acknowledged(fault: FaultStore): Promise<void> {
  for (let i = 0; i < 10; i++) await fault.store.block.write(i * 8, tagged(SECTOR, i + 1, i * 8, 8));
}

async function assertAcknowledgedThere(fault: FaultStore, what: string): Promise<void> {
  for (let i = 0; i < 10; i++) {
    assert.deepEqual(await fault.store.block.read(i * 8, 8), tagged(SECTOR, i + 1, i * 8, 8), `${what}: acknowledged write ${i}`);
  }
}

/** A failed commit that wrote `tag` over [lba, lba+count) is there whole or not at all. */
async function assertAllOrNothing(fault: FaultStore, lba: number, count: number, tag: number, before: number, what: string): Promise<string> {
  const bytes = await fault.store.block.read(lba, count);
  const tags = new Set<number>();
  for (let k = 0; k < count; k++) tags.add(tagOf(bytes.subarray(k * SECTOR, (k + 1) * SECTOR), lba + k));
  assert.ok(tags.size === 1 && (tags.has(tag) || tags.has(before)), `${what}: the failed commit is all-or-nothing, sectors hold ${[...tags].join(',')}`);
  return tags.has(tag) ? 'present' : 'absent';
}

/** The refusals expected of a failed store, and that reads still work. */
async function assertFailedButReadable(fault: FaultStore, what: string): Promise<void> {
  const b = fault.store.block;
  await assert.rejects(b.write(500, tagged(SECTOR, 77, 500, 1)), code('ERR_IO', `${what}: a later write`));
  await assert.rejects(b.trim(0, 8), code('ERR_IO', `${what}: a later trim`));
  await assert.rejects(b.atomic([{ write: 501, data: tagged(SECTOR, 78, 501, 1) }], { if: { unwritten: [501, 1] } }), code('ERR_IO', `${what}: a later atomic`));
  await assert.rejects(fault.store.checkpoint(), code('ERR_IO', `${what}: a checkpoint`));
  await assertAcknowledgedThere(fault, `${what}, before reopening`);
  assert.equal(b.exists(0, 80), true);
  assert.ok(b.versionOf(0) > 0);
  assert.equal(b.exists(500), false);
}

for (const mode of ['torn', 'lose-all', 'keep-all'] as CrashMode[]) {
  test(`a failed write (EIO) rejects its whole group commit with ERR_IO, the store refuses writes but reads, and after a ${mode} crash every acknowledged write is there`, async (t) => {
    t.diagnostic(`seed ${SEED} (replay: ATOMIO_SEED=${SEED})`);
    const fault = await FaultStore.create({ ...OPTIONS, mediaSeed: deriveSeed(SEED, 1) });
    try {
      await acknowledged(fault);
      fault.media.failNextWrites(1);
      // Five commits in one tick share one batch: the failed write fails all of them.
      const group = [0, 1, 2, 3, 4].map((i) => fault.store.block.write(200 + i * 64, tagged(SECTOR, 100 + i, 200 + i * 64, 64)));
      const results = await Promise.all(group.map((p) => outcome(p)));
      for (const r of results) assert.ok(!r.ok && r.code === 'ERR_IO', `each commit of the group fails with ERR_IO, got ${r.ok ? 'success' : describe(r.error)}`);
      await assertFailedButReadable(fault, 'after a failed write');
      assert.equal(fault.store.block.exists(200, 5 * 64), false, 'the failed commits were not applied');

      await fault.crashAndReopen(mode, deriveSeed(SEED, 2));
      assert.deepEqual(fault.store.stats().lastRecovery?.corruptions, []);
      await assertAcknowledgedThere(fault, `after the ${mode} crash`);
      for (let i = 0; i < 5; i++) await assertAllOrNothing(fault, 200 + i * 64, 64, 100 + i, 0, `failed commit ${i}`);
      // The reopened store takes writes again.
      await fault.store.block.write(500, tagged(SECTOR, 5, 500, 1));
    } finally {
      await fault.dispose();
    }
  });

  test(`a failed flush (EIO) rejects its commits with ERR_IO, the store refuses writes but reads, and after a ${mode} crash every acknowledged write is there`, async (t) => {
    t.diagnostic(`seed ${SEED} (replay: ATOMIO_SEED=${SEED})`);
    const fault = await FaultStore.create({ ...OPTIONS, mediaSeed: deriveSeed(SEED, 3) });
    try {
      await acknowledged(fault);
      fault.media.failNextFlushes(1);
      const group = [0, 1, 2].map((i) => fault.store.block.write(i * 8, tagged(SECTOR, 100 + i, i * 8, 8)));
      const results = await Promise.all(group.map((p) => outcome(p)));
      for (const r of results) assert.ok(!r.ok && r.code === 'ERR_IO', `each commit fails with ERR_IO, got ${r.ok ? 'success' : describe(r.error)}`);
      // Overwrites of acknowledged data that were never flushed are not visible.
      await assertFailedButReadable(fault, 'after a failed flush');

      await fault.crashAndReopen(mode, deriveSeed(SEED, 4));
      assert.deepEqual(fault.store.stats().lastRecovery?.corruptions, []);
      // The failed commits overwrote writes 0..2: each shows its old or its new content, whole.
      const fates: string[] = [];
      for (let i = 0; i < 3; i++) fates.push(await assertAllOrNothing(fault, i * 8, 8, 100 + i, i + 1, `failed commit ${i}`));
      // Issued in this order, those that came back are a prefix of them. Even after
      // 'lose-all' some may come back: a batch written alongside the failed one may have been
      // flushed, which makes every write before it durable; a failed commit's outcome is
      // unknown, never half.
      assert.ok(
        fates.every((f, i) => f === 'absent' || fates.slice(0, i).every((g) => g === 'present')),
        `the failed commits that came back are a prefix of the group: ${fates.join(', ')}`,
      );
      t.diagnostic(`${mode}: the failed commits are ${fates.join(', ')} after the crash`);
      for (let i = 3; i < 10; i++) assert.deepEqual(await fault.store.block.read(i * 8, 8), tagged(SECTOR, i + 1, i * 8, 8));
    } finally {
      await fault.dispose();
    }
  });
}

test('after a failure, close() resolves, closes the medium and releases the lock', async () => {
  const fault = await FaultStore.create(OPTIONS);
  try {
    await acknowledged(fault);
    fault.media.failNextWrites(1);
    await assert.rejects(fault.store.block.write(300, tagged(SECTOR, 50, 300, 1)), code('ERR_IO'));
    const dir = fault.store.directory;
    const media = fault.media;
    await fault.store.close();
    assert.equal(media.isClosed, true, 'the medium is closed');
    // The lock is gone: the same directory opens (here on what the medium holds).
    await fault.reopen(FaultMedia.from(media.snapshotImage()), dir);
    await assertAcknowledgedThere(fault, 'after close and reopen');
  } finally {
    await fault.dispose();
  }
});

/** A FaultMedia that fails the next write of a checkpoint (a segment header of kind 3) once armed. */
class CheckpointFailingMedia extends FaultMedia {
  armed = false;
  failedCheckpointWrites = 0;
  override write(buffer: Uint8Array, offset: number): Promise<void> {
    const b = Buffer.from(buffer.buffer, buffer.byteOffset, buffer.length);
    if (this.armed && b.length >= 64 && b.readUInt32LE(0) === 0x47455341 && b.readUInt32LE(12) === 3) {
      this.armed = false;
      this.failedCheckpointWrites++;
      this.failNextWrites(1);
    }
    return super.write(buffer, offset);
  }
}

test('a write failure in a background checkpoint fails the store with ERR_IO (no crash of the process), and acknowledged writes survive a crash', async () => {
  const media = new CheckpointFailingMedia(CAPACITY, { seed: deriveSeed(SEED, 5) });
  const fault = await FaultStore.create({ ...OPTIONS, media, checkpointIntervalBytes: 256 * 1024 });
  try {
    media.armed = true;
    const written: number[] = [];
    let failure: unknown;
    for (let i = 0; i < 200 && failure === undefined; i++) {
      try {
        await fault.store.block.write(i * 16, tagged(SECTOR, i + 1, i * 16, 16));
        written.push(i);
      } catch (error) {
        failure = error;
      }
    }
    assert.equal(media.failedCheckpointWrites, 1, 'a background checkpoint was written and failed');
    code('ERR_IO', 'the next write after the failed checkpoint')(failure);
    await assert.rejects(fault.store.block.write(5000, tagged(SECTOR, 1, 5000, 1)), code('ERR_IO'));
    for (const i of written) assert.deepEqual(await fault.store.block.read(i * 16, 16), tagged(SECTOR, i + 1, i * 16, 16));
    await fault.crashAndReopen('torn', deriveSeed(SEED, 6));
    for (const i of written) assert.deepEqual(await fault.store.block.read(i * 16, 16), tagged(SECTOR, i + 1, i * 16, 16), `write ${i} after the crash`);
  } finally {
    await fault.dispose();
  }
});

test('store.checkpoint() that hits a write failure rejects with ERR_IO, an AtomioError', async () => {
  const media = new CheckpointFailingMedia(CAPACITY);
  const fault = await FaultStore.create({ ...OPTIONS, media });
  try {
    await acknowledged(fault);
    media.armed = true;
    await assert.rejects(fault.store.checkpoint(), code('ERR_IO', 'store.checkpoint()'));
    await assertAcknowledgedThere(fault, 'after the failed checkpoint');
    await fault.crashAndReopen('lose-all');
    await assertAcknowledgedThere(fault, 'after a crash');
  } finally {
    await fault.dispose();
  }
});

test('close() whose final checkpoint hits a write failure rejects with ERR_IO, still closes the medium and releases the lock; acknowledged writes survive', async () => {
  const media = new CheckpointFailingMedia(CAPACITY);
  const fault = await FaultStore.create({ ...OPTIONS, media });
  try {
    await acknowledged(fault);
    media.armed = true;
    const dir = fault.store.directory;
    const closing = await outcome(fault.store.close());
    assert.ok(closing.ok || closing.code === 'ERR_IO', `close resolves or rejects with ERR_IO, got ${closing.ok ? 'success' : describe(closing.error)}`);
    assert.equal(media.failedCheckpointWrites, 1);
    assert.equal(media.isClosed, true, 'the medium is closed');
    await fault.reopen(media.crash('torn', deriveSeed(SEED, 7)), dir);
    await assertAcknowledgedThere(fault, 'after reopen');
  } finally {
    await fault.dispose();
  }
});
