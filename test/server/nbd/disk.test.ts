// VolumeDisk in-process: byte ranges onto sectors. Unaligned writes as atomic read-modify-
// writes that never lose a concurrent writer's bytes (checked against a serializability
// model), zeroing and trimming at the edges, commit-unit splitting, block status, and
// 4 KiB sectors.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { open, type Store } from '../../../src/index.js';
import { FaultMedia } from '../../../src/media/fault.js';
import { makeRandom } from '../../../src/media/random.js';
import { VolumeDisk, commitUnitBytes } from '../../../src/server/nbd/disk.js';
import { Volumes, SLOT_SECTORS } from '../../../src/server/volumes.js';
import { replayHint, testSeed, deriveSeed } from '../../helpers/seed.js';
import { withTempDir } from '../../helpers/temp.js';
import { MiB, pattern } from './harness.js';

const FILE = 'dist/test/server/nbd/disk.test.js';

async function withDisk(
  body: (disk: VolumeDisk, store: Store) => Promise<void>,
  o: { sectorSize?: 512 | 4096; capacity?: number; segmentSize?: number } = {},
): Promise<void> {
  await withTempDir(async (dir) => {
    const capacity = o.capacity ?? 64 * MiB;
    const store = await open(dir, {
      capacity,
      sectorSize: o.sectorSize ?? 512,
      segmentSize: o.segmentSize ?? MiB,
      media: new FaultMedia(capacity),
    });
    try {
      const volumes = await Volumes.load(store, dir, { defaultSize: 16 * MiB });
      const vol = await volumes.create('t', { size: 16 * MiB });
      await body(new VolumeDisk(store.block, vol), store);
    } finally {
      await store.close();
    }
  });
}

interface Write {
  offset: number;
  data: Buffer;
}

/**
 * Holds `final` to the writes: every byte belongs to a write that covers it (or is zero if
 * none does), and some order of the writes explains every byte (no write half-applied, none
 * lost). Returns a description of the first violation, or undefined.
 */
function serializable(final: Buffer, writes: Write[]): string | undefined {
  // after[i] = writes that must come after write i.
  const after = writes.map(() => new Set<number>());
  for (let pos = 0; pos < final.length; pos++) {
    const covering = writes.flatMap((w, i) => (pos >= w.offset && pos < w.offset + w.data.length ? [i] : []));
    if (covering.length === 0) {
      if (final[pos] !== 0) return `byte ${pos} is ${final[pos]} but no write covers it`;
      continue;
    }
    const winners = covering.filter((i) => writes[i]!.data[pos - writes[i]!.offset] === final[pos]);
    if (winners.length === 0) return `byte ${pos} = ${final[pos]} matches none of the writes covering it (${covering.join(',')})`;
    // With distinct fills exactly one write matches; it came after the others covering the byte.
    const w = winners[0]!;
    for (const i of covering) if (i !== w) after[i]!.add(w);
  }
  // A cycle in "must come after" means no order explains the bytes: a torn or lost write.
  const state = writes.map(() => 0);
  const visit = (i: number): boolean => {
    if (state[i] === 1) return false;
    if (state[i] === 2) return true;
    state[i] = 1;
    for (const j of after[i]!) if (!visit(j)) return false;
    state[i] = 2;
    return true;
  };
  for (let i = 0; i < writes.length; i++) if (!visit(i)) return `writes ${i} and others cannot be put in any order`;
  return undefined;
}

test('concurrent unaligned writers to the same sectors: no byte lost, every write whole (serializable)', async (t) => {
  const seed = testSeed();
  t.diagnostic(replayHint(seed, FILE));
  for (const sectorSize of [512, 4096] as const) {
    await withDisk(
      async (disk) => {
        const span = 3 * sectorSize;
        for (let round = 0; round < 25; round++) {
          const random = makeRandom(deriveSeed(seed, round * 2 + (sectorSize === 512 ? 0 : 1)));
          const base = round * 4 * sectorSize;
          const writes: Write[] = [];
          const n = 2 + Math.floor(random() * 10);
          for (let i = 0; i < n; i++) {
            const offset = Math.floor(random() * span);
            const length = 1 + Math.floor(random() * Math.min(span - offset, sectorSize + 100));
            writes.push({ offset, data: Buffer.alloc(length, i + 1) });
          }
          // All in one tick: they race for the same sectors inside one group commit.
          await Promise.all(writes.map((w) => disk.write(base + w.offset, w.data)));
          const final = await disk.read(base, span);
          const problem = serializable(final, writes);
          assert.equal(problem, undefined, `round ${round}, ${sectorSize}-byte sectors: ${problem}; ${replayHint(seed, FILE)}`);
        }
      },
      { sectorSize },
    );
  }
});

test('concurrent writers of disjoint bytes inside shared sectors all land', async (t) => {
  const seed = testSeed();
  t.diagnostic(replayHint(seed, FILE));
  await withDisk(async (disk) => {
    const random = makeRandom(seed);
    const span = 4096;
    const cuts = new Set<number>([0, span]);
    while (cuts.size < 40) cuts.add(Math.floor(random() * span));
    const points = [...cuts].sort((a, b) => a - b);
    const writes = points.slice(0, -1).map((at, i) => ({ offset: at + 100, data: pattern(i + 1, points[i + 1]! - at) }));
    await Promise.all(writes.map((w) => disk.write(w.offset, w.data)));
    const got = await disk.read(100, span);
    for (const w of writes) {
      assert.ok(got.subarray(w.offset - 100, w.offset - 100 + w.data.length).equals(w.data), `bytes at ${w.offset}; ${replayHint(seed, FILE)}`);
    }
  });
});

test('writes longer than one commit unit are split at sector boundaries and read back whole, unaligned too', async () => {
  await withDisk(
    async (disk) => {
      assert.ok(disk.unitBytes < 2 * MiB, 'a small store has small commit units');
      const u = disk.unitBytes;
      for (const [offset, length] of [
        [0, 3 * u],
        [4 * u + 1, 2 * u + 700],
        [9 * u - 3, u + 6],
      ] as const) {
        const data = pattern(offset + length, length);
        await disk.write(offset, data);
        assert.ok((await disk.read(offset, length)).equals(data), `${offset}+${length}`);
        assert.equal((await disk.read(offset + length, 1))[0], 0, 'nothing past the end');
        if (offset > 0) assert.equal((await disk.read(offset - 1, 1))[0], 0, 'nothing before the start');
      }
      await disk.writeZeroes(5, 3 * u, true);
      assert.ok((await disk.read(5, 3 * u)).every((b) => b === 0), 'zero writes of several units');
      assert.ok((await disk.read(0, 5)).equals(pattern(3 * u, 3 * u).subarray(0, 5)), 'bytes before the zeroes kept');
      assert.ok(disk.blockStatus(0, 4096, 10).every((e) => !e.hole), 'NO_HOLE zeros are allocated');
    },
    { segmentSize: MiB },
  );
});

test('commitUnitBytes fits every store geometry with room for the log checksums', () => {
  for (const [max, sector] of [
    [8 * MiB, 512],
    [8 * MiB - 4608, 512],
    [60_928, 512],
    [57_344, 4096],
    [8 * MiB, 4096],
  ] as const) {
    const unit = commitUnitBytes(max, sector);
    assert.ok(unit % sector === 0 && unit % 4096 === 0 && unit > 0, `${max}/${sector}`);
    assert.ok(unit + Math.ceil(unit / 4096) * 4 + 4096 <= max + 4096, `${max}/${sector}: ${unit} leaves room`);
  }
});

test('trim only drops whole sectors inside the range; writeZeroes without NO_HOLE trims them and zeroes the edges', async () => {
  await withDisk(async (disk) => {
    const data = pattern(9, 8192);
    await disk.write(0, data);
    await disk.trim(100, 2000);
    const after = await disk.read(0, 8192);
    const expected = Buffer.from(data);
    expected.fill(0, 512, 2048);
    assert.ok(after.equals(expected), 'sectors 1..3 trimmed, partial sectors 0 and 4 untouched');
    await disk.writeZeroes(3000, 4000, false);
    expected.fill(0, 3000, 7000);
    assert.ok((await disk.read(0, 8192)).equals(expected));
    const status = disk.blockStatus(0, 8192, 100).map((e) => [e.length, e.hole]);
    assert.deepEqual(status, [
      [512, false],
      [1536, true],
      [1024, false],
      [3584, true],
      [1536, false],
    ]);
  });
});

test('block status stops at maxExtents with extents that cover a prefix of the range', async () => {
  await withDisk(async (disk) => {
    for (let i = 0; i < 50; i++) await disk.write(i * 2048, Buffer.alloc(512, 1));
    const all = disk.blockStatus(0, 100 * 1024, 1000);
    assert.equal(all.length, 100);
    assert.equal(all.reduce((s, e) => s + e.length, 0), 100 * 1024);
    const some = disk.blockStatus(0, 100 * 1024, 7);
    assert.equal(some.length, 7);
    assert.deepEqual(some, all.slice(0, 7));
  });
});

test('volumes are disjoint: a write at the end of one volume never shows in the next slot', async () => {
  await withTempDir(async (dir) => {
    const store = await open(dir, { capacity: 64 * MiB, segmentSize: MiB, media: new FaultMedia(64 * MiB) });
    try {
      const volumes = await Volumes.load(store, dir, { defaultSize: 2 ** 36 * 512 });
      const b = await volumes.create('b', { size: MiB });
      const a = new VolumeDisk(store.block, volumes.get('')!);
      const bd = new VolumeDisk(store.block, b);
      await a.write(a.size - 1000, Buffer.alloc(1000, 7));
      assert.equal(b.firstLba, SLOT_SECTORS);
      assert.ok((await bd.read(0, 4096)).every((x) => x === 0));
      assert.ok(store.block.exists(SLOT_SECTORS - 2, 2) && !store.block.exists(SLOT_SECTORS, 8));
      await assert.rejects(a.read(a.size - 10, 11), /outside/, 'the disk asserts its bounds');
    } finally {
      await store.close();
    }
  });
});
