// How the commits queued in one turn are cut into batches: shared between the two batches
// that may be written at once (one encoded while the other is written), unless the store
// served reads since the last batch was taken and the queue is a few small commits: then
// the reads keep the CPU busy anyway, and the queue goes as one batch with one flush.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FaultStore } from '../helpers/store.js';

const OPTIONS = { capacity: 8 * 1024 * 1024, segmentSize: 256 * 1024, inlineWrites: false, durability: 'full' } as const;

async function withStore(body: (fault: FaultStore) => Promise<void>): Promise<void> {
  const fault = await FaultStore.create(OPTIONS);
  try {
    await body(fault);
  } finally {
    await fault.dispose();
  }
}

/** Flushes the store made while `n` puts, issued in one turn after `before()`, committed. */
async function flushesFor(fault: FaultStore, n: number, before: () => void): Promise<number> {
  const kv = fault.store.kv('batching');
  await kv.put('warm', 'up');
  const flushes = fault.store.stats().flushes;
  before();
  await Promise.all(Array.from({ length: n }, (_, i) => kv.put(`key ${i}`, `value ${i}`)));
  return fault.store.stats().flushes - flushes;
}

test('a few small commits queued together go as two batches, or as one when reads came in since the last batch', async () => {
  await withStore(async (fault) => {
    const kv = fault.store.kv('batching');
    assert.equal(await flushesFor(fault, 8, () => undefined), 2, 'no reads: eight puts are shared between two batches written side by side');
    assert.equal(
      await flushesFor(fault, 8, () => kv.getSync('warm')),
      1,
      'a read since the last batch: the eight puts go as one batch, one flush',
    );
    assert.equal(await flushesFor(fault, 8, () => undefined), 2, 'the reads counted are those since the last batch was taken');
    assert.equal(await flushesFor(fault, 40, () => kv.getSync('warm')), 2, 'a queue of many commits is shared between two batches even with reads');
  });
});
