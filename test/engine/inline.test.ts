// Inline writes: a lone commit, made while nothing else reaches the store, is written on the
// event loop's thread, and so is a small batch while no other is being written, durable or
// not; larger concurrent commits, reads during writes, slow writes and the option
// `inlineWrites: false` keep writes on I/O threads; a failed inline write fails its commit.
// Reads go inline while they are fast (page-cache hits), to threads after slow ones, and
// always to threads with `inlineReads: false`; a failed inline read rejects its read.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AtomioError } from '../../src/index.js';
import {
  INLINE_BUSY_MAX_BYTES,
  INLINE_BUSY_SLOW_MS,
  INLINE_LOOK_EVERY,
  INLINE_LOOK_MAX,
  INLINE_MAX_BYTES,
  INLINE_QUIET_WRITES,
  INLINE_READ_MAX_BYTES,
  INLINE_READ_SKIP,
  INLINE_READ_SLOW_MS,
  INLINE_SLOW_MS,
  InlineReads,
  InlineWrites,
} from '../../src/engine/inline.js';
import { FaultMedia } from '../../src/media/fault.js';
import { FaultStore } from '../helpers/store.js';

const OPTIONS = { capacity: 8 * 1024 * 1024, segmentSize: 256 * 1024 } as const;

/** A FaultMedia that counts the writes and reads made inline. */
class CountingMedia extends FaultMedia {
  inlineWrites = 0;
  inlineReads = 0;
  threadReads = 0;
  /** The next inline write fails with EIO (writes on a thread go on). */
  failNextInline = false;
  /** The next inline read throws this. */
  failNextInlineRead: Error | undefined;
  override readSync(buffer: Uint8Array, offset: number): void {
    this.inlineReads++;
    const error = this.failNextInlineRead;
    this.failNextInlineRead = undefined;
    if (error !== undefined) throw error;
    super.readSync(buffer, offset);
  }
  override read(buffer: Uint8Array, offset: number): Promise<void> {
    this.threadReads++;
    return super.read(buffer, offset);
  }
  override writeSync(buffer: Uint8Array, offset: number): void {
    this.inlineWrites++;
    if (this.failNextInline) {
      this.failNextInline = false;
      this.failNextWrites(1, 'EIO');
    }
    super.writeSync(buffer, offset);
  }
}

/** Runs `body` on a store over a CountingMedia. */
async function withStore(options: { inlineWrites?: boolean; inlineReads?: boolean; durability?: 'full' | 'none'; cacheSize?: number }, body: (fault: FaultStore, media: CountingMedia) => Promise<void>): Promise<void> {
  const media = new CountingMedia(OPTIONS.capacity, { seed: 7 });
  const fault = await FaultStore.create({ ...OPTIONS, ...options, media });
  try {
    await body(fault, media);
  } finally {
    await fault.dispose();
  }
}

/** Larger than a small batch, which goes inline however busy the store is. */
const LONE = 2 * INLINE_BUSY_MAX_BYTES;

test('the policy: quiet writes on a thread first, then inline ones, with a look on a thread every so often', () => {
  const policy = new InlineWrites(true);
  assert.equal(policy.choose(LONE, true, true), false, 'no quiet writes seen yet');
  for (let i = 0; i < INLINE_QUIET_WRITES; i++) policy.threadWriteDone(policy.threadWriteStarted());
  assert.equal(policy.choose(LONE, true, false), false, 'a batch that is not alone stays on a thread');
  assert.equal(policy.choose(INLINE_MAX_BYTES + 1, true, true), false, 'a large batch stays on a thread');
  let inline = 0;
  for (let i = 0; i < INLINE_LOOK_EVERY; i++) if (policy.choose(LONE, true, true)) inline++;
  assert.equal(inline, INLINE_LOOK_EVERY, 'lone batches go inline');
  assert.equal(policy.choose(LONE, true, true), false, `after ${INLINE_LOOK_EVERY} in a row one goes to a thread to look`);
  assert.equal(policy.choose(LONE, true, true), true, 'then inline again');
});

test('the policy: looks that find the store quiet come less often, down to one in INLINE_LOOK_MAX; an arrival starts over', () => {
  const policy = new InlineWrites(true);
  for (let i = 0; i < INLINE_QUIET_WRITES; i++) policy.threadWriteDone(policy.threadWriteStarted());
  /** Lone batches go inline until one goes to a thread to look (which sees `arrivals` commits or reads arrive); returns the inline ones. */
  const untilLook = (arrivals = 0): number => {
    let inline = 0;
    while (policy.choose(LONE, true, true)) inline++;
    const token = policy.threadWriteStarted();
    for (let i = 0; i < arrivals; i++) policy.arrived();
    policy.threadWriteDone(token);
    return inline;
  };
  const runs = [untilLook(), untilLook(), untilLook()];
  assert.deepEqual(runs, [INLINE_LOOK_EVERY, 2 * INLINE_LOOK_EVERY, 4 * INLINE_LOOK_EVERY], 'each quiet look doubles the inline writes before the next');
  for (let i = 0; i < 10; i++) untilLook();
  assert.equal(untilLook(), INLINE_LOOK_MAX, 'capped');
  untilLook(1);
  assert.equal(policy.choose(LONE, true, true), false, 'a look that saw an arrival: quiet writes on threads first');
  for (let i = 0; i < INLINE_QUIET_WRITES; i++) policy.threadWriteDone(policy.threadWriteStarted());
  assert.equal(untilLook(), INLINE_LOOK_EVERY, 'and looks as often as at first');
  untilLook();
  const busy = policy.threadWriteStarted();
  policy.arrived();
  policy.threadWriteDone(busy);
  for (let i = 0; i < INLINE_QUIET_WRITES; i++) policy.threadWriteDone(policy.threadWriteStarted());
  assert.equal(untilLook(), INLINE_LOOK_EVERY, 'any write on a thread that saw an arrival starts over');
});

test('the policy: a small batch goes inline when no other is being written, busy or not, unless small ones were slow', () => {
  const policy = new InlineWrites(true);
  const SLOW = INLINE_BUSY_SLOW_MS + 0.5;
  assert.ok(SLOW <= INLINE_SLOW_MS, 'slow for a small write, not for a lone one');
  assert.equal(policy.small(INLINE_BUSY_MAX_BYTES), true);
  assert.equal(policy.small(INLINE_BUSY_MAX_BYTES + 1), false);
  assert.equal(policy.choose(INLINE_BUSY_MAX_BYTES, true, false), true, 'no quiet writes needed');
  const token = policy.threadWriteStarted();
  policy.arrived();
  policy.threadWriteDone(token);
  assert.equal(policy.choose(512, true, false), true, 'arrivals meanwhile do not matter');
  assert.equal(policy.choose(512, false, false), false, 'another batch is being written');
  assert.equal(policy.choose(INLINE_BUSY_MAX_BYTES + 1, true, false), false, 'a larger batch that is not alone');
  policy.inlineWriteDone(SLOW, LONE);
  assert.equal(policy.small(512), true, 'a slow large write does not count');
  /** How many small batches go to a thread, after a slow small write, before one goes inline again. */
  const skipped = (): number => {
    policy.inlineWriteDone(SLOW, 512);
    let n = 0;
    while (!policy.choose(512, true, false)) n++;
    return n;
  };
  assert.equal(skipped(), INLINE_QUIET_WRITES);
  assert.equal(skipped(), 2 * INLINE_QUIET_WRITES, 'a second slow one: twice as many');
  assert.equal(skipped(), 4 * INLINE_QUIET_WRITES);
  for (let i = 0; i < 8; i++) policy.inlineWriteDone(INLINE_BUSY_SLOW_MS, 512);
  assert.equal(skipped(), 4 * INLINE_QUIET_WRITES, 'eight fast ones undo a doubling');
  for (let i = 0; i < 1000; i++) policy.inlineWriteDone(0.1, 512);
  assert.equal(skipped(), INLINE_QUIET_WRITES, 'many fast ones undo them all');
  assert.equal(new InlineWrites(false).choose(512, true, true), false, 'disabled: never inline');
  assert.equal(new InlineWrites(false).small(512), false, 'disabled: not even small ones');
});

test('the policy: an arrival during a write on a thread, or a slow inline write, stops inline writes', () => {
  const policy = new InlineWrites(true);
  for (let i = 0; i < INLINE_QUIET_WRITES; i++) policy.threadWriteDone(policy.threadWriteStarted());
  assert.equal(policy.choose(LONE, true, true), true);
  const token = policy.threadWriteStarted();
  policy.arrived();
  policy.threadWriteDone(token);
  assert.equal(policy.choose(LONE, true, true), false, 'a read or commit arrived while a write was on a thread');

  for (let i = 0; i < INLINE_QUIET_WRITES; i++) policy.threadWriteDone(policy.threadWriteStarted());
  assert.equal(policy.choose(LONE, true, true), true);
  /** After a slow inline write, how many lone batches go to a thread before one goes inline again. */
  const skipped = (): number => {
    policy.inlineWriteDone(INLINE_SLOW_MS + 1, LONE);
    let n = 0;
    while (!policy.choose(LONE, true, true)) {
      policy.threadWriteDone(policy.threadWriteStarted());
      n++;
    }
    return n;
  };
  assert.equal(skipped(), 1, 'a slow inline write sends the next lone batch to a thread');
  assert.deepEqual([skipped(), skipped(), skipped()], [2, 4, 8], 'each slow one in a row: twice as many');
  policy.inlineWriteDone(INLINE_SLOW_MS, LONE);
  assert.equal(skipped(), 1, 'a fast inline write starts over');
  assert.equal(new InlineWrites(false).choose(LONE, true, true), false, 'disabled: never inline');
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

for (const durability of ['none', 'full'] as const) {
  test(`durability ${durability}: small commits made together, among reads, go inline as one batch, and read back after reopen`, async () => {
    await withStore({ durability }, async (fault, media) => {
      const pool = fault.store.kv('p');
      const value = Buffer.alloc(100, 7);
      let inline = 0;
      for (let round = 0; round < 20; round++) {
        const before = media.inlineWrites;
        const writes = media.writes;
        await Promise.all(Array.from({ length: 8 }, async (_, i) => {
          await pool.get(`k${round - 1}.${i}`);
          await pool.put(`k${round}.${i}`, value);
        }));
        // An inline write that took over INLINE_BUSY_SLOW_MS (this process descheduled on a
        // busy machine) rightly sends the next few rounds to a thread, in two writes.
        if (media.inlineWrites === before) continue;
        inline++;
        assert.equal(media.inlineWrites - before, 1, `round ${round}: one inline write`);
        assert.equal(media.writes - writes, 1, `round ${round}: the 8 puts went in that one write`);
      }
      assert.ok(inline >= 3, `rounds went inline (${inline} of 20)`);
      const store = await fault.closeAndReopen();
      for (let round = 0; round < 20; round++) for (let i = 0; i < 8; i++) assert.deepEqual(await store.kv('p').get(`k${round}.${i}`), value);
    });
  });
}

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
    assert.ok(media.inlineWrites > 0, 'the store writes inline by now');
    // After a slow inline write (a busy machine) the next few go to a thread: write on until
    // one goes inline, and fail that one.
    media.failNextInline = true;
    let failed: number | undefined;
    for (let lba = 1000; lba < 1000 + 8 * 64 && failed === undefined; lba += 8) {
      try {
        await fault.store.block.write(lba, Buffer.alloc(4096, 4));
      } catch (error) {
        assert.ok(error instanceof AtomioError && error.code === 'ERR_IO', `the failed write rejects with ERR_IO, not ${String(error)}`);
        failed = lba;
      }
    }
    assert.ok(failed !== undefined && !media.failNextInline, 'a write went inline, and failed');
    await assert.rejects(fault.store.block.write(failed + 8, Buffer.alloc(4096, 5)), (error: unknown) => error instanceof AtomioError && error.code === 'ERR_IO');
    const store = await fault.closeAndReopen();
    assert.deepEqual(await store.block.read(0, 8), Buffer.alloc(4096, 3), 'acknowledged writes survive');
    assert.deepEqual(await store.block.read(failed, 8), Buffer.alloc(4096), 'the failed write left nothing');
  });
});

test('the read policy: reads inline while fast, to threads after a slow one, twice as many after each, forgiven by fast ones', () => {
  const policy = new InlineReads(true);
  assert.equal(policy.choose(4096), true, 'a small read goes inline at once');
  assert.equal(policy.choose(INLINE_READ_MAX_BYTES), true);
  assert.equal(policy.choose(INLINE_READ_MAX_BYTES + 1), false, 'a large read goes to a thread');
  const SLOW = INLINE_READ_SLOW_MS * 2;
  /** How many reads go to a thread, after a slow inline read, before one goes inline again. */
  const skipped = (): number => {
    policy.inlineReadDone(SLOW);
    let n = 0;
    while (!policy.choose(4096)) n++;
    return n;
  };
  assert.equal(skipped(), INLINE_READ_SKIP);
  assert.equal(skipped(), 2 * INLINE_READ_SKIP, 'a second slow one: twice as many');
  assert.equal(skipped(), 4 * INLINE_READ_SKIP);
  for (let i = 0; i < 8; i++) policy.inlineReadDone(INLINE_READ_SLOW_MS);
  assert.equal(skipped(), 4 * INLINE_READ_SKIP, 'eight fast ones undo a doubling');
  for (let i = 0; i < 1000; i++) policy.inlineReadDone(0.005);
  assert.equal(skipped(), INLINE_READ_SKIP, 'many fast ones undo them all');
  for (let i = 0; i < 20; i++) skipped();
  let n = 0;
  policy.inlineReadDone(SLOW);
  while (!policy.choose(4096)) n++;
  assert.ok(n >= 1000 && n <= 1024, `a medium always slow reads on threads but for one look in about a thousand (${n})`);
  assert.equal(new InlineReads(false).choose(4096), false, 'disabled: never inline');
});

test('block reads and uncached kv reads are made inline, and on threads with inlineReads: false', async () => {
  for (const inlineReads of [true, false]) {
    await withStore({ inlineReads, cacheSize: 0 }, async (fault, media) => {
      for (let i = 0; i < 20; i++) await fault.store.block.write(i * 8, Buffer.alloc(4096, i + 1));
      await fault.store.kv('p').put('k', Buffer.alloc(300, 9));
      const inlineBefore = media.inlineReads;
      const threadBefore = media.threadReads;
      for (let i = 0; i < 100; i++) assert.deepEqual(await fault.store.block.read((i % 20) * 8, 8), Buffer.alloc(4096, (i % 20) + 1));
      for (let i = 0; i < 20; i++) assert.deepEqual(await fault.store.kv('p').get('k'), Buffer.alloc(300, 9));
      const inline = media.inlineReads - inlineBefore;
      const threads = media.threadReads - threadBefore;
      if (inlineReads) {
        // A read slower than INLINE_READ_SLOW_MS (this process descheduled on a busy machine)
        // rightly sends the next few to threads: 4, then 8, then 16 after three such.
        assert.ok(inline >= 60, `most of the 120 reads went inline (${inline} inline, ${threads} on threads)`);
      } else {
        assert.equal(inline, 0, 'no read inline');
        assert.ok(threads >= 120, `every read on a thread (${threads})`);
      }
    });
  }
});

test('a failed inline read rejects that read alone', async () => {
  await withStore({}, async (fault, media) => {
    await fault.store.block.write(0, Buffer.alloc(4096, 5));
    media.failNextInlineRead = new Error('EIO: the medium failed a read');
    let rejected = false;
    // The first read that goes inline fails (a slow one before it may send a few to threads).
    for (let i = 0; i < 64 && !rejected; i++) {
      const reading = fault.store.block.read(0, 8);
      assert.ok(reading instanceof Promise, 'the failure comes as a rejection, not a throw');
      await reading.then(
        (data) => assert.deepEqual(data, Buffer.alloc(4096, 5)),
        (error: unknown) => {
          assert.match(String(error), /EIO/);
          rejected = true;
        },
      );
    }
    assert.ok(rejected, 'an inline read failed and its read rejected');
    assert.deepEqual(await fault.store.block.read(0, 8), Buffer.alloc(4096, 5), 'the next read succeeds');
  });
});
