// Checkpoints that maintenance starts are written behind the commits: commits go on being
// acknowledged while one is encoded, written and flushed. The checkpoint holds the maps as
// they were when it started, read from leases of the maps' leaves across many turns of the
// event loop while those commits change the maps. Checked here: commits are acknowledged
// between a checkpoint's start and its end; what it read of the block map, and each pool's
// view, equals the map at its start; and the store reopens with every acknowledged write.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { open } from '../../src/index.js';
import { AtomioError } from '../../src/base/errors.js';
import { Engine } from '../../src/engine/engine.js';
import { CHECKPOINT_STEP_ENTRIES } from '../../src/engine/checkpoint.js';
import { ExtentMap, type ExtentLease } from '../../src/ftl/extent-map.js';
import { KeyIndex, type KeyLease } from '../../src/ftl/key-index.js';
import { MAX_ATOMIC_OPS } from '../../src/engine/limits.js';
import { makeRandom } from '../../src/media/random.js';
import { deriveSeed, testSeed } from '../helpers/seed.js';
import { joined } from '../helpers/slices.js';
import { withTempDir } from '../helpers/temp.js';

const MiB = 1024 * 1024;
const SEED = testSeed();
const OPTIONS = { capacity: 256 * MiB, segmentSize: MiB, durability: 'none', checkpointIntervalBytes: MiB } as const;

test('commits are acknowledged while a checkpoint is written, and the checkpoint holds the maps as they were when it started', async (t) => {
  t.diagnostic(`seed ${SEED} (replay: ATOMIO_SEED=${SEED})`);
  const random = makeRandom(deriveSeed(SEED, 5));
  await withTempDir(async (dir) => {
    const store = await open(dir, OPTIONS);
    // Every other sector written: each write is an extent of its own, so that encoding the
    // map takes several steps, and so does the pool's.
    const sectors = 3 * CHECKPOINT_STEP_ENTRIES + 100;
    const model = new Map<number, number>();
    const sector = (tag: number): Buffer => Buffer.alloc(512, tag % 251);
    for (let first = 0; first < sectors; first += MAX_ATOMIC_OPS) {
      const ops = [];
      for (let i = first; i < Math.min(sectors, first + MAX_ATOMIC_OPS); i++) {
        ops.push({ write: 2 * i, data: sector(i) });
        model.set(2 * i, i);
      }
      await store.block.atomic(ops);
    }
    const pool = store.kv('behind');
    const keys = 2 * CHECKPOINT_STEP_ENTRIES;
    const values = new Map<string, string>();
    for (let first = 0; first < keys; first += MAX_ATOMIC_OPS) {
      const batch = store.atomic();
      for (let i = first; i < Math.min(keys, first + MAX_ATOMIC_OPS); i++) {
        batch.put('behind', `k${i}`, `v${i}`);
        values.set(`k${i}`, `v${i}`);
      }
      await batch.commit();
    }

    let acked = 0;
    const checkpoints: { ackedAtStart: number; ackedAtEnd: number; ackedWhileRead: number; mapSame: boolean }[] = [];
    const lease = ExtentMap.prototype.lease;
    const keyLease = KeyIndex.prototype.lease;
    // Whether each pool's leased view, when released, was still the pool at its lease.
    const poolChecks: boolean[] = [];
    KeyIndex.prototype.lease = function (this: KeyIndex): KeyLease {
      const before = this.exportRaw();
      const held = keyLease.call(this);
      return {
        view: held.view,
        release: () => {
          const after = held.view.exportRaw();
          poolChecks.push(Buffer.compare(before.keys, after.keys) === 0 && before.ends.every((e, i) => e === after.ends[i]) && before.meta.every((m, i) => m === after.meta[i]));
          held.release();
        },
      };
    };
    ExtentMap.prototype.lease = function (this: ExtentMap): ExtentLease {
      const before = this.exportRaw();
      const ackedAtStart = acked;
      const held = lease.call(this);
      const read: Float64Array[] = [];
      let ackedAtFirstSlice = -1;
      let ackedAtLastSlice = -1;
      return {
        size: held.size,
        // Copies of the slices as the encoding reads them, turns of the event loop apart.
        rawSlices: function* () {
          for (const s of held.rawSlices()) {
            if (ackedAtFirstSlice < 0) ackedAtFirstSlice = acked;
            ackedAtLastSlice = acked;
            read.push(Float64Array.from(s));
            yield s;
          }
        },
        release: () => {
          const got = joined(read);
          const mapSame = got.length === before.length && got.every((x, i) => x === before[i]);
          checkpoints.push({ ackedAtStart, ackedAtEnd: acked, ackedWhileRead: ackedAtLastSlice - ackedAtFirstSlice, mapSame });
          held.release();
        },
      };
    };
    try {
      // Eight writers: one-sector writes over the area, and now and then a put or a delete.
      let issued = 0;
      const writer = async (): Promise<void> => {
        while (checkpoints.filter((c) => c.ackedWhileRead > 0).length < 2 && issued < 200_000) {
          const tag = ++issued + sectors;
          if (random() < 0.2) {
            const k = `k${Math.floor(random() * keys * 1.5)}`;
            if (random() < 0.3) {
              values.delete(k);
              await pool.delete(k);
            } else {
              values.set(k, `w${tag}`);
              await pool.put(k, `w${tag}`);
            }
          } else {
            const lba = Math.floor(random() * 2 * sectors);
            model.set(lba, tag);
            await store.block.write(lba, sector(tag));
          }
          acked++;
        }
      };
      await Promise.all(Array.from({ length: 8 }, writer));
      await store.flush();
    } finally {
      ExtentMap.prototype.lease = lease;
      KeyIndex.prototype.lease = keyLease;
    }
    const during = checkpoints.slice(0, 8).map((c) => `${c.ackedWhileRead} of ${c.ackedAtEnd - c.ackedAtStart}`);
    t.diagnostic(`commits acknowledged while each checkpoint read the map, of those during it: ${during.join(', ')}`);
    const behind = checkpoints.filter((c) => c.ackedWhileRead > 0);
    assert.ok(behind.length >= 2, `commits were acknowledged between the slices of at least two checkpoints (${checkpoints.length} checkpoints: ${during.join(', ')}…) [seed ${SEED}]`);
    for (const [i, c] of checkpoints.entries()) {
      assert.ok(c.mapSame, `checkpoint ${i}: the extents it read are the block map at its start, though ${c.ackedAtEnd - c.ackedAtStart} commits landed meanwhile [seed ${SEED}]`);
    }
    assert.ok(poolChecks.length >= checkpoints.length, `each checkpoint leased the pool (${poolChecks.length} leases)`);
    assert.ok(poolChecks.every(Boolean), `each pool's view stayed the pool at its lease: ${JSON.stringify(poolChecks)} [seed ${SEED}]`);
    await store.close();

    const reopened = await open(dir, OPTIONS);
    try {
      for (const [lba, tag] of model) assert.deepEqual(await reopened.block.read(lba, 1), sector(tag), `sector ${lba} after reopening [seed ${SEED}]`);
      const again = reopened.kv('behind');
      for (let i = 0; i < keys * 1.5; i++) {
        const got = await again.get(`k${i}`);
        assert.equal(got?.toString(), values.get(`k${i}`), `key k${i} after reopening [seed ${SEED}]`);
      }
    } finally {
      await reopened.close();
    }
  });
});

test('a checkpoint that finds no room is tried again once per interval of log, not after every batch', async () => {
  const interval = 64 * 1024;
  const proto = Engine.prototype as unknown as { takeCheckpointSegments(bytes: number): unknown };
  const take = proto.takeCheckpointSegments;
  let refusing = true;
  let tries = 0;
  proto.takeCheckpointSegments = function (this: Engine, bytes: number) {
    if (!refusing) return take.call(this, bytes);
    tries++;
    throw new AtomioError('ERR_NO_SPACE', 'no free segment left for a checkpoint (test)', {});
  };
  try {
    await withTempDir(async (dir) => {
      const store = await open(dir, { capacity: 16 * MiB, segmentSize: 256 * 1024, checkpointIntervalBytes: interval });
      try {
        const pool = store.kv('p');
        const value = Buffer.alloc(1000, 7);
        // About ten intervals of log, one commit (one batch, one maintenance) at a time.
        const commits = Math.ceil((10 * interval) / value.length);
        for (let i = 0; i < commits; i++) await pool.put(`k${i % 50}`, value);
        assert.ok(tries >= 1, 'maintenance tried a checkpoint');
        // Once per interval, and again when reclaiming frees a segment (17 here; every batch was 613).
        assert.ok(tries <= 40, `a refused checkpoint was tried ${tries} times over ${commits} commits (about 10 intervals)`);
        refusing = false;
        const before = store.stats().checkpoints;
        for (let i = 0; i < commits / 5; i++) await pool.put(`k${i % 50}`, value);
        assert.ok(store.stats().checkpoints > before, 'with room again, a checkpoint lands');
      } finally {
        await store.close();
      }
      const again = await open(dir);
      try {
        assert.equal(again.kv('p').getSync('k0')?.length, 1000);
      } finally {
        await again.close();
      }
    });
  } finally {
    proto.takeCheckpointSegments = take;
  }
});
