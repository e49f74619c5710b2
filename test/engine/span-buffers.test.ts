// The buffers a group commit is laid out in are reused by later commits, but only once the
// write that carried them has settled: a medium that holds each write for a while sees every
// buffer unchanged from the call to the settling, and every acknowledged write reads back.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FaultMedia } from '../../src/media/fault.js';
import { makeRandom, randomSeed } from '../../src/media/random.js';
import { FaultStore } from '../helpers/store.js';

const OPTIONS = { capacity: 32 * 1024 * 1024, segmentSize: 1024 * 1024 } as const;

/** A FaultMedia whose writes take a few ms, checking that their bytes do not change meanwhile. */
class HoldingMedia extends FaultMedia {
  changed = 0;
  held = 0;

  override async write(buffer: Uint8Array, offset: number): Promise<void> {
    await this.hold([buffer]);
    return super.write(buffer, offset);
  }

  override async writeParts(parts: readonly Uint8Array[], offset: number): Promise<void> {
    await this.hold(parts);
    return super.writeParts(parts, offset);
  }

  private async hold(parts: readonly Uint8Array[]): Promise<void> {
    const before = Buffer.concat(parts);
    this.held++;
    await new Promise((resolve) => setTimeout(resolve, 1 + (this.held % 3)));
    if (!Buffer.concat(parts).equals(before)) this.changed++;
  }
}

test('a span buffer is not reused while its write is in flight (64 writers, mixed sizes)', async () => {
  const seed = randomSeed();
  const rnd = makeRandom(seed);
  const media = new HoldingMedia(OPTIONS.capacity, { seed: 3 });
  const fault = await FaultStore.create({ ...OPTIONS, media, inlineWrites: false });
  try {
    const block = fault.store.block;
    const model = new Map<number, Buffer>();
    let next = 0;
    await Promise.all(
      Array.from({ length: 64 }, async () => {
        for (let i = 0; i < 12; i++) {
          const slot = next++;
          const sectors = 1 + Math.floor(rnd() * 24);
          const data = Buffer.alloc(sectors * 512, (slot * 7 + 1) & 0xff);
          data.writeUInt32LE(slot, 0);
          await block.write(slot * 64, data);
          model.set(slot, data);
        }
      }),
    );
    assert.ok(media.held >= 20, `writes went through the holding medium (${media.held}; seed ${seed})`);
    assert.equal(media.changed, 0, `no write's bytes changed before it settled (seed ${seed})`);
    for (const [slot, data] of model) {
      const back = await block.read(slot * 64, data.length / 512);
      assert.ok(back.equals(data), `write ${slot} reads back as acknowledged (seed ${seed})`);
    }
  } finally {
    await fault.dispose();
  }
});
