// Durability 'none': the engine flushes the medium in the background every few MiB of log,
// so that a checkpoint's own flush (which every commit waits for) finds little left to write.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setImmediate as tick } from 'node:timers/promises';
import { open } from '../../src/index.js';
import { FaultMedia } from '../../src/media/fault.js';
import { withTempDir } from '../helpers/temp.js';

const MiB = 1024 * 1024;

test("durability 'none' flushes in the background as the log grows, with no timer or checkpoint due", async () => {
  await withTempDir(async (dir) => {
    const capacity = 256 * MiB;
    const media = new FaultMedia(capacity);
    const store = await open(dir, { capacity, media, durability: 'none', flushIntervalMs: 3_600_000, checkpointIntervalBytes: 1024 * MiB });
    try {
      const opened = media.flushes;
      const data = Buffer.alloc(MiB, 0x5a);
      for (let i = 0; i < 4; i++) await store.block.write(i * 2048, data);
      for (let i = 0; i < 5; i++) await tick();
      assert.equal(media.flushes, opened, 'a few MiB of log: no flush yet');
      for (let i = 4; i < 40; i++) await store.block.write(i * 2048, data);
      for (let i = 0; i < 5; i++) await tick();
      assert.ok(media.flushes >= opened + 3, `40 MiB of log: flushed along the way (${media.flushes - opened} flushes)`);
      assert.ok(media.pendingWrites < 16, `most writes are durable (${media.pendingWrites} pending)`);
    } finally {
      await store.close();
    }
  });
});
