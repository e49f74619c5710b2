// Recovery across repeated crashes: a torn group commit that one open drops must not turn into
// a "lost flushed data" report at the next open; acknowledged data survives both crashes.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FaultStore, turns } from '../helpers/store.js';
import { tagged } from '../helpers/data.js';
import { deriveSeed, testSeed } from '../helpers/seed.js';

const SEED = testSeed();
const SECTOR = 512;
const OPTIONS = { capacity: 4 * 1024 * 1024, segmentSize: 64 * 1024 } as const;

test('a torn group commit dropped by one recovery is not reported as corruption by the next one', async (t) => {
  t.diagnostic(`seed ${SEED} (replay: ATOMIO_SEED=${SEED})`);
  const fault = await FaultStore.create({ ...OPTIONS, mediaSeed: deriveSeed(SEED, 1) });
  try {
    for (let i = 0; i < 10; i++) await fault.store.block.write(i * 8, tagged(SECTOR, i + 1, i * 8, 8));
    // A group of commits in one batch: wait until its write completed but is not yet flushed.
    const group = [0, 1, 2, 3, 4, 5].map((i) => fault.store.block.write(1000 + i * 16, tagged(SECTOR, 100 + i, 1000 + i * 16, 16)));
    for (const p of group) p.catch(() => undefined);
    for (let i = 0; i < 100 && fault.media.pendingWrites === 0; i++) await turns(1);
    assert.ok(fault.media.pendingWrites > 0, 'the group commit reached the cache');
    // Crash images for many seeds, all taken now (the abandoned store would go on flushing):
    // find one whose tear leaves records that recovery finds and drops.
    const images = Array.from({ length: 200 }, (_, i) => fault.crashImage('torn', deriveSeed(SEED, 1000 + i)));
    let dropped = 0;
    for (const image of images) {
      await fault.reopen(image);
      dropped = fault.store.stats().lastRecovery!.recordsDropped;
      if (dropped > 0) break;
      await fault.store.close();
    }
    assert.ok(dropped > 0, 'some torn crash left part of the group commit behind, which recovery dropped');
    assert.deepEqual(fault.store.stats().lastRecovery!.corruptions, []);
    t.diagnostic(`first recovery: ${JSON.stringify(fault.store.stats().lastRecovery)}`);

    // New acknowledged commits, then a crash with nothing in flight.
    for (let i = 0; i < 10; i++) await fault.store.block.write(2000 + i * 8, tagged(SECTOR, 200 + i, 2000 + i * 8, 8));
    await fault.reopen(fault.media.crash('keep-all'));
    const report = fault.store.stats().lastRecovery!;
    t.diagnostic(`second recovery: ${JSON.stringify(report)}`);
    assert.deepEqual(report.corruptions, [], 'the seqs of the dropped records are not reported as lost flushed records');
    for (let i = 0; i < 10; i++) {
      assert.deepEqual(await fault.store.block.read(i * 8, 8), tagged(SECTOR, i + 1, i * 8, 8));
      assert.deepEqual(await fault.store.block.read(2000 + i * 8, 8), tagged(SECTOR, 200 + i, 2000 + i * 8, 8));
    }
    // And the versions handed out after the first recovery are newer than any before it.
    assert.ok(fault.store.block.versionOf(2000) > fault.store.block.versionOf(72));
  } finally {
    await fault.dispose();
  }
});
