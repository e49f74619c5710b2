// BufferPool, and the server's reuse of large buffers: a buffer goes back to the pool only
// once nothing reads or writes it, so many large requests in flight never see each other's bytes.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BufferPool, MAX_IDLE_BYTES, MAX_POOLED_BYTES, MIN_POOLED_BYTES } from '../../../src/server/nbd/pool.js';
import { NbdClient } from './client.js';
import { MiB, pattern, withServer } from './harness.js';

test('the pool hands back a given buffer for a request of its size class, and keeps no more than its cap', () => {
  const pool = new BufferPool();
  const a = pool.take(MiB);
  assert.equal(a.length, MiB);
  pool.give(a);
  assert.equal(pool.idleBytes, MiB);
  assert.equal(pool.take(MiB - 1000), a, 'reused for a request that rounds up to the same size');
  assert.equal(pool.idleBytes, 0);
  assert.equal(pool.take(MiB + 1).length, 2 * MiB, 'sizes go up in powers of two');
  const small = pool.take(MIN_POOLED_BYTES - 1);
  assert.equal(small.length, MIN_POOLED_BYTES - 1);
  pool.give(small);
  const large = pool.take(MAX_POOLED_BYTES + 1);
  assert.equal(large.length, MAX_POOLED_BYTES + 1);
  pool.give(large);
  assert.equal(pool.idleBytes, 0, 'buffers outside the pooled sizes are not kept');
  const many = Array.from({ length: MAX_IDLE_BYTES / MiB + 4 }, () => pool.take(MiB));
  for (const b of many) pool.give(b);
  assert.equal(pool.idleBytes, MAX_IDLE_BYTES, 'idle bytes stop at the cap');
});

test('many 1 MiB writes and reads in flight at once, through a real file: every read returns what was written there', async () => {
  await withServer(
    async ({ port }) => {
      const c = await NbdClient.open(port, { structured: true });
      const slots = 16;
      const writeRound = (round: number): Promise<number[]> =>
        Promise.all(Array.from({ length: slots }, (_, i) => c.write(i * MiB, pattern(round * 100 + i, MiB))));
      assert.deepEqual(await writeRound(1), new Array(slots).fill(0));
      for (let round = 2; round <= 4; round++) {
        // Reads of the last round go out among the writes of this one, which overwrite other slots first.
        const reads = Array.from({ length: slots }, (_, i) => c.read(((i + slots / 2) % slots) * MiB, MiB));
        const writes = writeRound(round);
        const replies = await Promise.all(reads);
        assert.deepEqual(await writes, new Array(slots).fill(0));
        for (const [i, r] of replies.entries()) {
          const slot = (i + slots / 2) % slots;
          assert.equal(r.error, 0);
          const ok = r.data!.equals(pattern((round - 1) * 100 + slot, MiB)) || r.data!.equals(pattern(round * 100 + slot, MiB));
          assert.ok(ok, `round ${round}: slot ${slot} reads as one of its writes`);
        }
      }
      for (let i = 0; i < slots; i++) {
        const r = await c.read(i * MiB, MiB);
        assert.ok(r.data!.equals(pattern(400 + i, MiB)), `slot ${i} holds the last write`);
      }
      await c.disconnect();
    },
    { media: 'file', capacity: 256 * MiB, defaultSize: 32 * MiB, durability: 'none' },
  );
});
