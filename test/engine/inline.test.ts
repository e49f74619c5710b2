// Inline writes: a lone commit, made while nothing else reaches the store, is written on the
// event loop's thread; concurrent commits, reads during writes, slow writes and the option
// `inlineWrites: false` keep writes on I/O threads; a failed inline write fails its commit.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AtomioError } from '../../src/index.js';
import { INLINE_LOOK_EVERY, INLINE_MAX_BYTES, INLINE_QUIET_WRITES, INLINE_SLOW_MS, InlineWrites } from '../../src/engine/inline.js';
import { FaultMedia } from '../../src/media/fault.js';
import { FaultStore } from '../helpers/store.js';

const OPTIONS = { capacity: 8 * 1024 * 1024, segmentSize: 256 * 1024 } as const;

/** A FaultMedia that counts the writes made inline. */
class CountingMedia extends FaultMedia {
  inlineWrites = 0;
  override writeSync(buffer: Uint8Array, offset: number): void {
    this.inlineWrites++;
    super.writeSync(buffer, offset);
  }
}

/** Runs `body` on a store over a CountingMedia. */
async function withStore(options: { inlineWrites?: boolean }, body: (fault: FaultStore, media: CountingMedia) => Promise<void>): Promise<void> {
  const media = new CountingMedia(OPTIONS.capacity, { seed: 7 });
  const fault = await FaultStore.create({ ...OPTIONS, ...options, media });
  try {
    await body(fault, media);
  } finally {
    await fault.dispose();
  }
}

test('the policy: quiet writes on a thread first, then inline ones, with a look on a thread every so often', () => {
  const policy = new InlineWrites(true);
  assert.equal(policy.choose(4096, true), false, 'no quiet writes seen yet');
  for (let i = 0; i < INLINE_QUIET_WRITES; i++) policy.threadWriteDone(policy.threadWriteStarted());
  assert.equal(policy.choose(4096, false), false, 'a batch that is not alone stays on a thread');
  assert.equal(policy.choose(INLINE_MAX_BYTES + 1, true), false, 'a large batch stays on a thread');
  let inline = 0;
  for (let i = 0; i < INLINE_LOOK_EVERY; i++) if (policy.choose(4096, true)) inline++;
  assert.equal(inline, INLINE_LOOK_EVERY, 'lone small batches go inline');
  assert.equal(policy.choose(4096, true), false, `after ${INLINE_LOOK_EVERY} in a row one goes to a thread to look`);
  assert.equal(policy.choose(4096, true), true, 'then inline again');
});

test('the policy: an arrival during a write on a thread, or a slow inline write, stops inline writes', () => {
  const policy = new InlineWrites(true);
  for (let i = 0; i < INLINE_QUIET_WRITES; i++) policy.threadWriteDone(policy.threadWriteStarted());
  assert.equal(policy.choose(4096, true), true);
  const token = policy.threadWriteStarted();
  policy.arrived();
  policy.threadWriteDone(token);
  assert.equal(policy.choose(4096, true), false, 'a read or commit arrived while a write was on a thread');

  for (let i = 0; i < INLINE_QUIET_WRITES; i++) policy.threadWriteDone(policy.threadWriteStarted());
  assert.equal(policy.choose(4096, true), true);
  policy.inlineWriteDone(INLINE_SLOW_MS + 1);
  for (let i = 0; i < INLINE_QUIET_WRITES; i++) policy.threadWriteDone(policy.threadWriteStarted());
  assert.equal(policy.choose(4096, true), false, 'after a slow inline write, twice the quiet writes are needed');
  for (let i = 0; i < INLINE_QUIET_WRITES; i++) policy.threadWriteDone(policy.threadWriteStarted());
  assert.equal(policy.choose(4096, true), true);
  assert.equal(new InlineWrites(false).choose(4096, true), false, 'disabled: never inline');
});

test('commits made one after another are written inline, and read back after reopen', async () => {
  await withStore({}, async (fault, media) => {
    const pool = fault.store.kv('p');
    for (let i = 0; i < 100; i++) await pool.put(`k${i}`, `v${i}`);
    assert.ok(media.inlineWrites >= 80, `at least 80 of 100 lone commits went inline (${media.inlineWrites})`);
    const store = await fault.closeAndReopen();
    for (let i = 0; i < 100; i++) assert.equal((await store.kv('p').get(`k${i}`))?.toString(), `v${i}`);
  });
});

test('concurrent commits stay on I/O threads', async () => {
  await withStore({}, async (fault, media) => {
    const data = Buffer.alloc(4096, 1);
    await Promise.all(Array.from({ length: 8 }, async (_, w) => {
      for (let i = 0; i < 25; i++) await fault.store.block.write((w * 25 + i) * 8, data);
    }));
    assert.equal(media.inlineWrites, 0, 'no batch of 8 concurrent writers was alone');
  });
});

test('inlineWrites: false keeps every write on an I/O thread; a bad value is refused', async () => {
  await withStore({ inlineWrites: false }, async (fault, media) => {
    for (let i = 0; i < 50; i++) await fault.store.block.write(i * 8, Buffer.alloc(4096, 2));
    assert.equal(media.inlineWrites, 0);
  });
  await assert.rejects(
    FaultStore.create({ ...OPTIONS, inlineWrites: 'yes' as unknown as boolean }),
    (error: unknown) => error instanceof AtomioError && error.code === 'ERR_ARGUMENT' && /inlineWrites/.test(error.message),
  );
});

test('a failed inline write rejects its commit and fails the store, as a failed write on a thread does', async () => {
  await withStore({}, async (fault, media) => {
    for (let i = 0; i < 20; i++) await fault.store.block.write(i * 8, Buffer.alloc(4096, 3));
    const before = media.inlineWrites;
    assert.ok(before > 0, 'the store writes inline by now');
    media.failNextWrites(1, 'EIO');
    await assert.rejects(fault.store.block.write(1000, Buffer.alloc(4096, 4)), (error: unknown) => error instanceof AtomioError && error.code === 'ERR_IO');
    assert.equal(media.inlineWrites, before + 1, 'the failed write was the inline one');
    await assert.rejects(fault.store.block.write(1008, Buffer.alloc(4096, 5)), (error: unknown) => error instanceof AtomioError && error.code === 'ERR_IO');
    const store = await fault.closeAndReopen();
    assert.deepEqual(await store.block.read(0, 8), Buffer.alloc(4096, 3), 'acknowledged writes survive');
    assert.deepEqual(await store.block.read(1000, 8), Buffer.alloc(4096), 'the failed write left nothing');
  });
});
