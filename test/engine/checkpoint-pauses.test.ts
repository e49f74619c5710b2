// A checkpoint of a large map is encoded in steps, with the event loop turning between them:
// the encoding of a million extents takes tens of milliseconds, and reads and a server's
// replies should not wait for all of it. Counted here in turns of the event loop between
// the checkpoint's start on the map and its first write; nothing is timed.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { open } from '../../src/index.js';
import { CHECKPOINT_STEP_ENTRIES } from '../../src/engine/checkpoint.js';
import { ExtentMap } from '../../src/ftl/extent-map.js';
import { MAX_ATOMIC_OPS } from '../../src/engine/limits.js';
import { FileMedia } from '../../src/media/file.js';
import { withTempDir } from '../helpers/temp.js';

const MiB = 1024 * 1024;

test('a checkpoint of a large map lets the event loop turn while it encodes, and the store reopens from it', async () => {
  await withTempDir(async (dir) => {
    const store = await open(dir, { capacity: 256 * MiB, segmentSize: MiB, durability: 'none' });
    // Every other sector written: each write is an extent of its own.
    const extents = 3 * CHECKPOINT_STEP_ENTRIES + 100;
    const sector = (i: number): Buffer => Buffer.alloc(512, i % 251);
    for (let first = 0; first < extents; first += MAX_ATOMIC_OPS) {
      const ops = [];
      for (let i = first; i < Math.min(extents, first + MAX_ATOMIC_OPS); i++) ops.push({ write: 2 * i, data: sector(i) });
      await store.block.atomic(ops);
    }

    let turns = 0;
    let spinning = true;
    const spin = (): void => {
      turns++;
      if (spinning) setImmediate(spin);
    };
    setImmediate(spin);
    let atExport: number | undefined; // when the checkpoint began to read the map
    let atFirstWrite: number | undefined;
    const lease = ExtentMap.prototype.lease;
    const write = FileMedia.prototype.write;
    ExtentMap.prototype.lease = function (this: ExtentMap) {
      atExport ??= turns;
      return lease.call(this);
    };
    FileMedia.prototype.write = function (this: FileMedia, ...args: Parameters<FileMedia['write']>) {
      if (atExport !== undefined) atFirstWrite ??= turns;
      return write.apply(this, args);
    };
    try {
      await store.checkpoint();
    } finally {
      ExtentMap.prototype.lease = lease;
      FileMedia.prototype.write = write;
      spinning = false;
    }
    assert.ok(atExport !== undefined && atFirstWrite !== undefined, 'the checkpoint read the map, then wrote');
    assert.ok(
      atFirstWrite - atExport >= 3,
      `${extents} extents: the event loop turned ${atFirstWrite - atExport} times between reading the map and the first write (3 pauses expected)`,
    );
    await store.close();

    const reopened = await open(dir, { capacity: 256 * MiB, segmentSize: MiB, durability: 'none' });
    try {
      for (const i of [0, CHECKPOINT_STEP_ENTRIES - 1, CHECKPOINT_STEP_ENTRIES, 2 * CHECKPOINT_STEP_ENTRIES + 7, extents - 1]) {
        assert.deepEqual(await reopened.block.read(2 * i, 1), sector(i), `sector ${2 * i} after reopening`);
        assert.equal(reopened.block.exists(2 * i + 1), false, `sector ${2 * i + 1} was never written`);
      }
    } finally {
      await reopened.close();
    }
  });
});
