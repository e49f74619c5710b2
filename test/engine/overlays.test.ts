// Conditions and space checks see the commits of batches still being written: a batch
// admitted while an earlier one is on its way to the medium sees that one's block writes
// and trims as if applied (the overlays), even though most batches never look at them.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FaultMedia } from '../../src/media/fault.js';
import { FaultStore } from '../helpers/store.js';
import { code } from '../helpers/errors.js';

const OPTIONS = { capacity: 16 * 1024 * 1024, segmentSize: 1024 * 1024 } as const;

/** A FaultMedia whose writes wait while the gate is shut. */
class GatedMedia extends FaultMedia {
  shut = false;
  waiting = 0;
  private opened: (() => void)[] = [];

  override async write(buffer: Uint8Array, offset: number): Promise<void> {
    await this.pass();
    return super.write(buffer, offset);
  }

  override async writeParts(parts: readonly Uint8Array[], offset: number): Promise<void> {
    await this.pass();
    return super.writeParts(parts, offset);
  }

  open(): void {
    this.shut = false;
    for (const resolve of this.opened.splice(0)) resolve();
  }

  private async pass(): Promise<void> {
    if (!this.shut) return;
    this.waiting++;
    await new Promise<void>((resolve) => this.opened.push(resolve));
    this.waiting--;
  }
}

/** Turns of the event loop until `condition` holds (a bounded number, so a bug fails rather than hangs). */
async function until(condition: () => boolean, what: string): Promise<void> {
  for (let turn = 0; !condition(); turn++) {
    if (turn === 100_000) assert.fail(`never came about: ${what}`);
    await new Promise((resolve) => setImmediate(resolve));
  }
}

function sector(fill: number): Buffer {
  return Buffer.alloc(512, fill);
}

test('conditions see the writes and trims of a batch still being written', async () => {
  const media = new GatedMedia(OPTIONS.capacity, { seed: 5 });
  const fault = await FaultStore.create({ ...OPTIONS, media, inlineWrites: false });
  try {
    const b = fault.store.block;
    const base = await b.write(16, sector(1));
    await b.write(24, sector(2));

    // The first batch, one commit: held at the medium.
    media.shut = true;
    const first = b.atomic([
      { write: 0, data: sector(3) },
      { write: 16, data: sector(4) },
      { trim: 24, count: 1 },
    ]);
    await until(() => media.waiting === 1, 'the first batch reaches the medium');

    // The second batch is admitted while the first is written.
    const second = Promise.allSettled([
      b.atomic([{ write: 0, data: sector(5) }], { if: { unwritten: [0, 1] } }),
      b.atomic([{ write: 8, data: sector(6) }], { if: { unwritten: [8, 1] } }),
      b.atomic([{ write: 16, data: sector(7) }], { if: { version: [16, 1, base] } }),
      b.atomic([{ write: 24, data: sector(8) }], { if: { unwritten: [24, 1] } }),
    ]);
    await until(() => media.waiting === 2, 'the second batch reaches the medium while the first is held');
    media.open();
    const version = await first;
    const results = await second;
    assert.deepEqual(
      results.map((r) => r.status),
      ['rejected', 'fulfilled', 'rejected', 'fulfilled'],
    );
    for (const r of results) if (r.status === 'rejected') code('ERR_CONDITION')(r.reason);
    assert.deepEqual(await b.read(0, 1), sector(3));
    assert.deepEqual(await b.read(8, 1), sector(6));
    assert.deepEqual(await b.read(16, 1), sector(4));
    assert.deepEqual(await b.read(24, 1), sector(8));
    assert.equal(b.versionOf(16), version);
  } finally {
    media.open();
    await fault.dispose();
  }
});
