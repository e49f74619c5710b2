// The segment table's counts (free segments, live bytes, empty sealed segments, zero-filled
// segments waiting) are kept as fields change, not found by scans: checked here against a
// scan after every change of a long random sequence, and pickUnfilled against its meaning.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SegmentTable, type SegmentInfo, type SegmentState } from '../../src/ftl/segments.js';
import { makeRandom } from '../../src/media/random.js';
import { replayHint, testSeed } from '../helpers/seed.js';

const FILE = 'dist/test/ftl/segments.test.js';
const STATES: SegmentState[] = ['free', 'open', 'sealed', 'checkpoint'];

function scanned(table: SegmentTable): { free: number; live: number; emptySealed: number[] } {
  const all = table.segments;
  return {
    free: all.filter((s) => s.state === 'free' && s.readers === 0).length,
    live: all.reduce((n, s) => n + s.liveBytes, 0),
    emptySealed: all.filter((s) => s.state === 'sealed' && s.liveBytes === 0).map((s) => s.index),
  };
}

/** pickUnfilled as its comment defines it, by a scan. */
function unfilledByScan(table: SegmentTable, ahead: number): SegmentInfo | undefined {
  const neverUsedFree = table.segments.filter((s) => s.state === 'free' && s.eraseCount === 0);
  if (neverUsedFree.filter((s) => s.prefilled).length >= ahead) return undefined;
  return neverUsedFree.find((s) => !s.prefilled && s.readers === 0);
}

test('the segment table keeps its counts equal to a scan through random changes of state, live bytes, readers, erase counts and fills', (t) => {
  const seed = testSeed();
  t.diagnostic(replayHint(seed, FILE));
  const random = makeRandom(seed);
  const int = (n: number): number => Math.floor(random() * n);
  const table = new SegmentTable(64);
  let lastEpoch = table.epoch;
  for (let step = 0; step < 20_000; step++) {
    const s = table.at(int(64));
    const wasFree = s.state === 'free';
    switch (int(6)) {
      case 0:
        s.state = STATES[int(4)]!;
        break;
      case 1:
        s.liveBytes = int(3) === 0 ? 0 : s.liveBytes + int(5000) - 1000 > 0 ? s.liveBytes + int(5000) - 1000 : 0;
        break;
      case 2:
        s.readers = s.readers > 0 && int(2) === 0 ? s.readers - 1 : s.readers + (int(3) === 0 ? 1 : 0);
        break;
      case 3:
        if (int(8) === 0) s.eraseCount++;
        break;
      case 4:
        if (int(4) === 0) s.prefilled = true; // the mark is only ever set
        break;
      case 5: {
        const ahead = 1 + int(3);
        assert.equal(table.pickUnfilled(ahead), unfilledByScan(table, ahead), `step ${step}: pickUnfilled(${ahead}) ${replayHint(seed, FILE)}`);
        break;
      }
    }
    if (wasFree && s.state !== 'free') {
      assert.ok(s.allocatedAt > lastEpoch, `step ${step}: a segment leaving the free state takes a new epoch`);
      lastEpoch = s.allocatedAt;
    }
    const want = scanned(table);
    assert.equal(table.freeCount(), want.free, `step ${step}: freeCount ${replayHint(seed, FILE)}`);
    assert.equal(table.liveBytes(), want.live, `step ${step}: liveBytes ${replayHint(seed, FILE)}`);
    assert.deepEqual(table.emptySealedSegments().map((e) => e.index).sort((a, b) => a - b), want.emptySealed, `step ${step}: empty sealed segments ${replayHint(seed, FILE)}`);
  }
});

test('pickUnfilled takes never-used segments in index order and stops once enough filled ones wait', () => {
  const table = new SegmentTable(8);
  table.at(0).eraseCount = 1; // used once: never zero-filled again
  table.at(1).state = 'open';
  table.at(1).eraseCount = 1;
  assert.equal(table.pickUnfilled(2)?.index, 2);
  table.at(2).readers++; // being filled
  assert.equal(table.pickUnfilled(2)?.index, 3, 'a segment being filled is passed over');
  table.at(2).readers--;
  table.at(2).prefilled = true;
  assert.equal(table.pickUnfilled(2)?.index, 3);
  table.at(3).prefilled = true;
  assert.equal(table.pickUnfilled(2), undefined, 'two filled segments already wait');
  table.at(2).state = 'open';
  table.at(2).eraseCount = 1;
  assert.equal(table.pickUnfilled(2)?.index, 4, 'one taken into use: filling goes on');
});
