// A crash at every step, for kv commits mixed with block writes: puts (some with a TTL that
// passes meanwhile, so that the sweep and the cleaner drop expired keys), deletes and
// touches over two pools, some in the same commit as a block write. A power loss is taken
// before each write and flush; each image must show the state after some prefix of the
// commits that holds every acknowledged one, in both faces at once.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { open } from '../../src/index.js';
import { ManualClock } from '../../src/base/clock.js';
import { makeRandom } from '../../src/media/random.js';
import { tagged, tagOf } from '../helpers/data.js';
import { describe } from '../helpers/errors.js';
import { deriveSeed, testSeed } from '../helpers/seed.js';
import { SteppedMedia } from '../helpers/stepped-media.js';
import { TempDirs } from '../helpers/temp.js';

const SEED = testSeed();
const SECTOR = 512;
const CAPACITY = 1024 * 1024;
const AREA = 256;
const KEYS = 24;
const POOLS = ['a', 'b'] as const;
const COMMITS = Number(process.env.ATOMIO_EVERY_STEP_BATCHES ?? 120);

/** Per pool and key: the value's tag (0 = absent) and its deadline (0 = never). */
interface State {
  tags: Int32Array;
  deadlines: Float64Array;
  sectors: Int32Array;
}

const slot = (pool: number, key: number): number => pool * KEYS + key;
const keyName = (key: number): string => `key:${key}`;
/** A value that names its commit and key, of a length that varies with both. */
function valueOf(tag: number, pool: number, key: number): Buffer {
  const head = `${tag}:${pool}:${key}:`;
  return Buffer.concat([Buffer.from(head), Buffer.alloc((tag * 337 + key * 11) % 9000, tag % 251)]);
}
function tagOfValue(value: Buffer | undefined, pool: number, key: number): number {
  if (value === undefined) return 0;
  const tag = Number(value.toString('latin1').split(':')[0]);
  return Number.isInteger(tag) && tag > 0 && valueOf(tag, pool, key).equals(value) ? tag : -1;
}

test('a torn crash before any write or flush of kv commits with TTLs, deletes and touches, mixed with block writes, leaves a prefix of the commits holding every acknowledged one', async (t) => {
  t.diagnostic(`seed ${SEED} (replay: ATOMIO_SEED=${SEED})`);
  const random = makeRandom(deriveSeed(SEED, 40));
  const int = (n: number): number => Math.floor(random() * n);
  const clock = new ManualClock();
  const options = { capacity: CAPACITY, segmentSize: 64 * 1024, checkpointIntervalBytes: 64 * 1024, clock };
  const dirs = new TempDirs('atomio-steps-kv-');
  const media = new SteppedMedia(CAPACITY, { seed: deriveSeed(SEED, 41) });
  const states: State[] = [{ tags: new Int32Array(POOLS.length * KEYS), deadlines: new Float64Array(POOLS.length * KEYS), sectors: new Int32Array(AREA) }];
  const alive = (s: State, i: number): number => (s.deadlines[i] !== 0 && s.deadlines[i]! <= clock.now() ? 0 : s.tags[i]!);
  let acked = 0;
  let step = 0;
  let images = 0;
  let dropped = 0;
  let failure: unknown;
  const store = await open(await dirs.make(), { ...options, media, inlineWrites: false });
  const verify = async (): Promise<void> => {
    step++;
    const image = media.crash('torn', deriveSeed(SEED, 5000 + step));
    const ackedNow = acked;
    images++;
    const reopened = await open(await dirs.make(), { ...options, media: image });
    try {
      const seenKeys = new Int32Array(POOLS.length * KEYS);
      for (let p = 0; p < POOLS.length; p++) {
        for (let k = 0; k < KEYS; k++) {
          let value: Buffer | undefined;
          try {
            value = await reopened.kv(POOLS[p]!).get(keyName(k));
          } catch (error) {
            assert.fail(`step ${step}: reading ${POOLS[p]}/${keyName(k)} failed: ${describe(error)} [seed ${SEED}]`);
          }
          const tag = tagOfValue(value, p, k);
          assert.ok(tag >= 0, `step ${step}: ${POOLS[p]}/${keyName(k)} holds a value no put made [seed ${SEED}]`);
          seenKeys[slot(p, k)] = tag;
        }
      }
      const bytes = await reopened.block.read(0, AREA);
      const seenSectors = new Int32Array(AREA);
      for (let lba = 0; lba < AREA; lba++) seenSectors[lba] = tagOf(bytes.subarray(lba * SECTOR, (lba + 1) * SECTOR), lba);
      let match = -1;
      for (let n = states.length - 1; n >= ackedNow && match < 0; n--) {
        const s = states[n]!;
        let same = true;
        for (let i = 0; i < seenKeys.length && same; i++) same = alive(s, i) === seenKeys[i];
        for (let lba = 0; lba < AREA && same; lba++) same = s.sectors[lba] === seenSectors[lba];
        if (same) match = n;
      }
      assert.ok(match >= 0, `step ${step}: the image is no prefix of the ${states.length - 1} commits issued holding the ${ackedNow} acknowledged; ${nearest(seenKeys, seenSectors, ackedNow)} [seed ${SEED}]`);
      if (match < states.length - 1) dropped++;
      assert.deepEqual(reopened.stats().lastRecovery?.corruptions, [], `step ${step}: a crash is not corruption [seed ${SEED}]`);
    } finally {
      await reopened.close();
    }
  };
  /** The prefix the image is closest to, and where they differ: what a failure needs to say. */
  const nearest = (seenKeys: Int32Array, seenSectors: Int32Array, from: number): string => {
    let best = '';
    let bestCount = Infinity;
    for (let n = from; n < states.length; n++) {
      const s = states[n]!;
      const diffs: string[] = [];
      for (let i = 0; i < seenKeys.length; i++) {
        if (alive(s, i) !== seenKeys[i]) diffs.push(`${POOLS[Math.floor(i / KEYS)]}/${keyName(i % KEYS)} holds ${seenKeys[i]}, not ${alive(s, i)} (deadline ${s.deadlines[i]})`);
      }
      for (let lba = 0; lba < AREA; lba++) if (s.sectors[lba] !== seenSectors[lba]) diffs.push(`sector ${lba} holds ${seenSectors[lba]}, not ${s.sectors[lba]}`);
      if (diffs.length < bestCount) {
        bestCount = diffs.length;
        best = `nearest: after commit ${n}, where ${diffs.slice(0, 6).join(', ')}${diffs.length > 6 ? ` and ${diffs.length - 6} more` : ''} (clock at ${clock.now()})`;
      }
    }
    return best;
  };
  // A failed check is kept and thrown at the end: thrown inside the medium, it would fail the
  // store under test instead, and hide its message.
  media.before = async () => {
    if (failure !== undefined) return;
    try {
      await verify();
    } catch (error) {
      failure = error;
    }
  };
  try {
    const inFlight: Promise<unknown>[] = [];
    for (let c = 1; c <= COMMITS && failure === undefined; c++) {
      const prev = states[states.length - 1]!;
      const next: State = { tags: new Int32Array(prev.tags), deadlines: new Float64Array(prev.deadlines), sectors: new Int32Array(prev.sectors) };
      const batch = store.atomic();
      const touched = new Set<number>();
      for (let n = 1 + int(4); n > 0; n--) {
        const p = int(POOLS.length);
        const k = int(KEYS);
        const i = slot(p, k);
        if (touched.has(i)) continue;
        touched.add(i);
        const roll = random();
        const ttl = random() < 0.4 ? 1 + int(40) : 0;
        if (roll < 0.6) {
          batch.put(POOLS[p]!, keyName(k), valueOf(c, p, k), ttl === 0 ? {} : { ttl });
          next.tags[i] = c;
          next.deadlines[i] = ttl === 0 ? 0 : clock.now() + ttl;
        } else if (roll < 0.8 || alive(prev, i) === 0) {
          batch.delete(POOLS[p]!, keyName(k));
          next.tags[i] = 0;
          next.deadlines[i] = 0;
        } else {
          // A touch of a live key: a new deadline, or none (ttl 0).
          batch.touch(POOLS[p]!, keyName(k), ttl);
          next.deadlines[i] = ttl === 0 ? 0 : clock.now() + ttl;
        }
      }
      if (random() < 0.4) {
        const count = 1 + int(8);
        const lba = int(AREA - count + 1);
        batch.write(lba, tagged(SECTOR, c, lba, count));
        next.sectors.fill(c, lba, lba + count);
      }
      states.push(next);
      inFlight.push(
        batch.commit().then(
          (result) => {
            if (!result.ok) failure ??= new Error(`commit ${c} failed its checks: ${JSON.stringify(result.failed)}`);
            assert.equal(acked, c - 1, 'commits resolve in order');
            acked = c;
          },
          (error: unknown) => {
            failure ??= new Error(`commit ${c} failed: ${describe(error)}`);
          },
        ),
      );
      if (int(4) === 0) {
        await Promise.all(inFlight.splice(0));
        // Moved only while no commit is in flight, so each deadline is the call's time + its TTL,
        // and no check is under way (one may run in a checkpoint's write, behind the commits).
        await media.idle();
        clock.advance(int(20));
      }
    }
    await Promise.all(inFlight);
    if (failure !== undefined) throw failure;
    const s = store.stats();
    t.diagnostic(`${images} crash images; ${JSON.stringify({ checkpoints: s.checkpoints, cleaned: s.segmentsCleaned, dropped, expired: s.expiredBytesReclaimed })}`);
    assert.ok(s.checkpoints > 2 && s.segmentsCleaned > 0, `checkpoints (${s.checkpoints}) and cleaning (${s.segmentsCleaned}) happened [seed ${SEED}]`);
  } finally {
    media.before = undefined;
    await store.close();
    await dirs.removeAll();
  }
});
