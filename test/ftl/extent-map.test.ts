import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ExtentMap, type Extent } from '../../src/ftl/extent-map.js';
import { makeRandom } from '../../src/media/random.js';
import { testSeed } from '../helpers/seed.js';
import { joined } from '../helpers/slices.js';

// A sector-by-sector model: lba → [version, segment, dataOffset, op sector].
type Cell = [version: number, segment: number, dataOffset: number, opSector: number];

function extent(lba: number, count: number, version: number): Extent {
  return { lba, count, version, segment: version % 7, dataOffset: version * 8, opSectors: count, firstSector: 0, expiresAt: 0 };
}

function modelOf(map: ExtentMap): Map<number, Cell> {
  const cells = new Map<number, Cell>();
  let lastEnd = -1;
  for (const e of map.all()) {
    assert.ok(e.lba >= lastEnd && e.count > 0, `extents sorted and disjoint at lba ${e.lba}`);
    lastEnd = e.lba + e.count;
    for (let i = 0; i < e.count; i++) cells.set(e.lba + i, [e.version, e.segment, e.dataOffset, e.firstSector + i]);
  }
  return cells;
}

test('extent map matches a per-sector model under random sets and clears (seeded)', (t) => {
  const seed = testSeed();
  t.diagnostic(`seed ${seed}`);
  const random = makeRandom(seed);
  const map = new ExtentMap();
  const model = new Map<number, Cell>();
  const span = 4000;
  for (let step = 1; step <= 6000; step++) {
    const lba = Math.floor(random() * span);
    const count = 1 + Math.floor(random() * (random() < 0.1 ? 400 : 12));
    if (random() < 0.75) {
      const displaced = map.set(extent(lba, count, step));
      let displacedSectors = 0;
      for (const d of displaced) displacedSectors += d.count;
      let expected = 0;
      for (let i = 0; i < count; i++) {
        if (model.has(lba + i)) expected++;
        model.set(lba + i, [step, step % 7, step * 8, i]);
      }
      assert.equal(displacedSectors, expected, `seed ${seed} step ${step}: displaced sectors of set`);
    } else {
      const displaced = map.clear(lba, count);
      let displacedSectors = 0;
      for (const d of displaced) {
        displacedSectors += d.count;
        for (let i = 0; i < d.count; i++) assert.equal(model.get(d.lba + i)?.[0], d.version, `seed ${seed}: displaced piece is what was there`);
      }
      let expected = 0;
      for (let i = 0; i < count; i++) if (model.delete(lba + i)) expected++;
      assert.equal(displacedSectors, expected, `seed ${seed} step ${step}: displaced sectors of clear`);
    }
    if (step % 500 === 0) {
      assert.deepEqual(modelOf(map), model, `seed ${seed} step ${step}: whole map`);
      for (const [lba, cell] of model) {
        const found = map.piecesIn(lba, 1);
        assert.equal(found.length === 1 && found[0]!.version, cell[0], `seed ${seed} step ${step}: lookup of lba ${lba}`);
      }
      const probe = Math.floor(random() * span);
      const pieces = map.piecesIn(probe, 50);
      let covered = 0;
      for (const p of pieces) {
        assert.ok(p.lba >= probe && p.lba + p.count <= probe + 50, 'pieces are clipped to the range');
        covered += p.count;
      }
      let expected = 0;
      for (let i = 0; i < 50; i++) if (model.has(probe + i)) expected++;
      assert.equal(covered, expected, `seed ${seed}: piecesIn covers the mapped sectors`);
    }
  }
  assert.equal(map.size, [...map.all()].length, 'size counts the extents');
});

test('exportRaw and importRaw round-trip a large map and keep it editable', () => {
  const map = new ExtentMap();
  for (let i = 0; i < 50_000; i++) map.set(extent(i * 3, 2, i + 1));
  const copy = new ExtentMap();
  let sectors = 0;
  copy.importRaw(map.exportRaw(), (_segment, n) => (sectors += n));
  assert.equal(sectors, 100_000, 'import reports every extent');
  assert.equal(copy.size, 50_000);
  assert.deepEqual([...copy.all()], [...map.all()], 'same extents after the round trip');
  copy.clear(0, 150_000);
  assert.equal(copy.size, 0, 'clearing everything empties the imported tree');
  copy.set(extent(5, 1, 9));
  assert.deepEqual(copy.piecesIn(0, 10).map((p) => p.lba), [5], 'the emptied tree takes new extents');
});

test('sparse lbas near 2^44 and huge clears stay exact', () => {
  const map = new ExtentMap();
  const top = 2 ** 44 - 10;
  map.set(extent(top, 10, 1));
  map.set(extent(0, 1, 2));
  assert.deepEqual(map.piecesIn(top - 5, 20).map((p) => [p.lba, p.count]), [[top, 10]]);
  const displaced = map.clear(1, 2 ** 44 - 1);
  assert.deepEqual(displaced.map((p) => p.count), [10], 'the clear displaced the far extent');
  assert.equal(map.size, 1);
});

test('rewriting exactly the same range replaces the extent in place and reports the old one', () => {
  const map = new ExtentMap();
  for (let i = 0; i < 1000; i++) map.set(extent(i * 8, 8, i + 1));
  const displaced = map.set(extent(400, 8, 5000));
  assert.deepEqual(displaced.map((d) => [d.lba, d.count, d.version]), [[400, 8, 51]], 'the old extent is displaced');
  assert.equal(map.size, 1000, 'no extent added or lost');
  assert.deepEqual(map.piecesIn(396, 16).map((p) => [p.lba, p.count, p.version]), [
    [396, 4, 50],
    [400, 8, 5000],
    [408, 4, 52],
  ]);
});

test('reset empties a one-leaf map for reuse, and leaves a map with inner nodes untouched', () => {
  const small = new ExtentMap();
  for (let i = 0; i < 20; i++) small.set(extent(i * 8, 8, i + 1));
  assert.equal(small.reset(), true, 'a single leaf resets');
  assert.equal(small.size, 0, 'nothing left after reset');
  assert.deepEqual(small.piecesIn(0, 1000), [], 'no extent reads back after reset');
  small.set(extent(16, 8, 99));
  assert.deepEqual(small.piecesIn(0, 1000).map((p) => [p.lba, p.count, p.version]), [[16, 8, 99]], 'the reset map works again');

  const large = new ExtentMap();
  for (let i = 0; i < 1000; i++) large.set(extent(i * 8, 8, i + 1));
  assert.equal(large.reset(), false, 'a map with inner nodes does not reset');
  assert.equal(large.size, 1000, 'and keeps every extent');
});

test('setCounting reports per segment exactly the sectors set() displaces, and leaves the same map (seeded)', (t) => {
  const seed = testSeed();
  t.diagnostic(`seed ${seed}`);
  const random = makeRandom(seed);
  const byList = new ExtentMap();
  const byCount = new ExtentMap();
  for (let step = 1; step <= 4000; step++) {
    // Same-range overwrites (the in-place path) as well as overlapping and fresh ranges.
    const lba = 8 * Math.floor(random() * 300) + (random() < 0.3 ? Math.floor(random() * 8) : 0);
    const count = random() < 0.5 ? 8 : 1 + Math.floor(random() * 30);
    const e = extent(lba, count, step);
    const wanted = new Map<number, number>();
    for (const d of byList.set(e)) wanted.set(d.segment, (wanted.get(d.segment) ?? 0) + d.count);
    const told = new Map<number, number>();
    byCount.setCounting(e, (segment, sectors) => told.set(segment, (told.get(segment) ?? 0) + sectors));
    assert.deepEqual(told, wanted, `seed ${seed} step ${step}: displaced sectors by segment`);
  }
  assert.deepEqual(modelOf(byCount), modelOf(byList), `seed ${seed}: the two maps agree`);
});

test('rawSlices hands out every extent in lba order as views of the leaves, and a change between two slices fails an assertion', () => {
  const map = new ExtentMap();
  for (let i = 0; i < 1000; i++) map.set(extent(3 * i, 2, i + 1));
  const slices = [...map.rawSlices()];
  assert.ok(slices.length > 1, `a map of 1000 extents spans several leaves (${slices.length} slices)`);
  const joined = new Float64Array(slices.reduce((n, s) => n + s.length, 0));
  let at = 0;
  for (const s of slices) {
    joined.set(s, at);
    at += s.length;
  }
  assert.deepEqual(joined, map.exportRaw(), 'the slices together are exactly exportRaw');
  const first = map.rawSlices().next().value!;
  const lba0 = first[0];
  map.set(extent(0, 2, 5000)); // same range: rewritten in place, in the leaf the view shows
  assert.equal(first[0], lba0, 'the lba is unchanged');
  assert.equal(first[2], 5000, 'a view, not a copy: it shows the new version');

  const reading = map.rawSlices();
  reading.next();
  map.set(extent(1, 1, 6000));
  assert.throws(() => reading.next(), /not changed while its raw slices are read/, 'a change between two slices is caught');

  const notYetRead = map.rawSlices();
  map.clear(0, 1);
  assert.throws(() => notYetRead.next(), /not changed while its raw slices are read/, 'a change after the call, before the first slice, is caught');
});

/** `n` random changes over lbas [0, 6200): small sets, clears that empty leaves now and then, and overwrites across several leaves. */
function churn(map: ExtentMap, int: (n: number) => number, versions: { last: number }, n: number): void {
  for (let k = 0; k < n; k++) {
    const lba = int(6200);
    const what = int(10);
    if (what < 6) map.set(extent(lba, 1 + int(4), ++versions.last));
    else if (what < 9) map.clear(lba, 1 + int(300));
    else map.set(extent(lba, 1 + int(900), ++versions.last));
  }
}

test('a lease keeps the extents as they were while the map goes on changing: sets, clears, splits and emptied leaves (seeded)', (t) => {
  const seed = testSeed();
  t.diagnostic(`seed ${seed}`);
  const random = makeRandom(seed);
  const int = (n: number): number => Math.floor(random() * n);
  const map = new ExtentMap();
  for (let i = 0; i < 3000; i++) map.set(extent(2 * i, 1, i + 1));
  const versions = { last: 10_000 };
  for (let round = 0; round < 4; round++) {
    const before = map.exportRaw();
    const lease = map.lease();
    assert.equal(lease.size, before.length / 6, `round ${round}: the lease counts the extents at lease()`);
    const reading = lease.rawSlices()[Symbol.iterator]();
    const read: Float64Array[] = [];
    // Read a slice, change the map, read on: what a checkpoint does across its pauses.
    for (let step = 0; ; step++) {
      const next = reading.next();
      if (next.done === true) break;
      read.push(Float64Array.from(next.value));
      churn(map, int, versions, 40);
    }
    assert.deepEqual(joined(read), before, `round ${round}: the slices read across changes are the map at lease() [seed ${seed}]`);
    assert.deepEqual(joined(lease.rawSlices()), before, `round ${round}: and read again after them [seed ${seed}]`);
    lease.release();
    assert.throws(() => lease.release(), /released once/, 'a second release is a bug');
    // The live map is whole: sorted, disjoint, and exactly its own export.
    modelOf(map);
    assert.equal(joined(map.rawSlices()).length, map.size * 6, `round ${round}: the map's own slices cover its extents`);
  }
});

test('after its release the map writes its leaves in place again, and a new lease still sees its own moment', () => {
  const map = new ExtentMap();
  for (let i = 0; i < 500; i++) map.set(extent(2 * i, 1, i + 1));
  const first = map.rawSlices().next().value!;
  const lease = map.lease();
  map.set(extent(0, 1, 7000)); // same range: in place, but the leaf is shared, so copied first
  assert.equal(first[2], 1, 'the leased leaf data keeps the old version');
  assert.equal([...map.all()][0]!.version, 7000, 'the map has the new one');
  lease.release();
  const copied = map.rawSlices().next().value!;
  map.set(extent(0, 1, 7001));
  assert.equal(copied[2], 7001, 'with no lease held, the same leaf is written in place');
  const second = map.lease();
  map.set(extent(0, 1, 7002));
  assert.equal(joined(second.rawSlices())[2], 7001, 'a second lease sees the map at its own lease()');
  second.release();
});

test('frozen maps keep the extents of their moment while the map goes on changing, frozen with and without a lease held (seeded)', (t) => {
  const seed = testSeed();
  t.diagnostic(`seed ${seed}`);
  const random = makeRandom(seed);
  const int = (n: number): number => Math.floor(random() * n);
  const map = new ExtentMap();
  for (let i = 0; i < 2000; i++) map.set(extent(3 * i, 2, i + 1));
  const versions = { last: 10_000 };
  const frozen: { map: ExtentMap; model: Map<number, Cell>; raw: Float64Array }[] = [];
  const freeze = (): void => {
    frozen.push({ map: map.freeze(), model: modelOf(map), raw: map.exportRaw() });
    assert.equal(frozen[frozen.length - 1]!.map.size, map.size, 'the frozen map counts the extents');
  };
  for (let round = 0; round < 8; round++) {
    if (round % 2 === 0) {
      // No lease held: only the freeze keeps the map from writing shared leaves.
      freeze();
      churn(map, int, versions, 300);
    } else {
      // Frozen under a lease, which is then released: the freeze must outlast it.
      const lease = map.lease();
      freeze();
      churn(map, int, versions, 150);
      lease.release();
      churn(map, int, versions, 300);
    }
    for (const [i, g] of frozen.entries()) {
      assert.deepEqual(modelOf(g.map), g.model, `round ${round}: frozen map ${i} keeps its moment [seed ${seed}]`);
      assert.deepEqual(g.map.exportRaw(), g.raw, `round ${round}: frozen map ${i} exports as the map did [seed ${seed}]`);
      // Lookups go through the frozen map's own keys: each sector of a range is found as it was.
      const lba = int(6200);
      const found = new Map<number, number>();
      for (const p of g.map.piecesIn(lba, 64)) for (let k = 0; k < p.count; k++) found.set(p.lba + k, p.version);
      for (let k = lba; k < lba + 64; k++) assert.equal(found.get(k), g.model.get(k)?.[0], `round ${round}: frozen map ${i} at lba ${k} [seed ${seed}]`);
    }
  }
  modelOf(map);
});
