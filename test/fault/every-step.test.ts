// A crash at every step: while a store commits atomic batches, checkpoints and cleans, a
// power loss is simulated before each write and each flush the engine makes (lost, kept or
// torn pending writes), and every such image is opened. Recovery keeps a prefix of the
// commits, so each image must equal the state after the first k batches, for some k no
// smaller than the number acknowledged when the image was taken: every acknowledged batch
// is there, no batch is half there, and nothing is invented.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { open, type AtomicOp } from '../../src/index.js';
import { ManualClock } from '../../src/base/clock.js';
import { type CrashMode } from '../../src/media/fault.js';
import { makeRandom } from '../../src/media/random.js';
import { tagged, tagOf } from '../helpers/data.js';
import { describe } from '../helpers/errors.js';
import { deriveSeed, testSeed } from '../helpers/seed.js';
import { SteppedMedia } from '../helpers/stepped-media.js';
import { TempDirs } from '../helpers/temp.js';

const SEED = testSeed();
const SECTOR = 512;
const CAPACITY = 1024 * 1024;
const AREA = 640;
const BATCHES = Number(process.env.ATOMIO_EVERY_STEP_BATCHES ?? 120);
const GEOMETRY = { capacity: CAPACITY, segmentSize: 64 * 1024, checkpointIntervalBytes: 64 * 1024 };

interface Range {
  lba: number;
  count: number;
  trim: boolean;
}

const RUNS: { mode: CrashMode; ttl: boolean }[] = [
  { mode: 'torn', ttl: false },
  { mode: 'lose-all', ttl: false },
  { mode: 'keep-all', ttl: false },
  { mode: 'torn', ttl: true },
];

for (const { mode, ttl } of RUNS) {
  const what = ttl ? 'commits (some with a TTL that passes meanwhile, so that expired data is dropped)' : 'commits';
  test(`a ${mode} crash before any write or flush of ${what}, checkpoints and cleaning leaves a prefix of the commits that holds every acknowledged one`, async (t) => {
    t.diagnostic(`seed ${SEED} (replay: ATOMIO_SEED=${SEED})`);
    const salt = RUNS.findIndex((r) => r.mode === mode && r.ttl === ttl);
    // Moved only while no commit is in flight, so each deadline is the call's time + its TTL.
    const clock = ttl ? new ManualClock() : undefined;
    const options = clock === undefined ? GEOMETRY : { ...GEOMETRY, clock };
    const random = makeRandom(deriveSeed(SEED, 20 + salt));
    const int = (n: number): number => Math.floor(random() * n);
    const dirs = new TempDirs('atomio-steps-');
    const media = new SteppedMedia(CAPACITY, { seed: deriveSeed(SEED, 30 + salt) });
    // states[k]: the tag of each sector after the first k batches, and its deadline (0 = never).
    const states: Int32Array[] = [new Int32Array(AREA)];
    const deadlines: Float64Array[] = [new Float64Array(AREA)];
    const visible = (k: number, lba: number): number => {
      const at = deadlines[k]![lba]!;
      return at !== 0 && clock !== undefined && at <= clock.now() ? 0 : states[k]![lba]!;
    };
    let acked = 0;
    let images = 0;
    let step = 0;
    const counts = { dropped: 0 };
    const store = await open(await dirs.make(), { ...options, media, inlineWrites: false });
    const verify = async (): Promise<void> => {
      step++;
      const image = media.crash(mode, deriveSeed(SEED, 1000 + step));
      const ackedNow = acked;
      images++;
      const reopened = await open(await dirs.make(), { ...options, media: image });
      try {
        let bytes: Buffer;
        try {
          bytes = await reopened.block.read(0, AREA);
        } catch (error) {
          assert.fail(`step ${step}: reading the area after the crash failed: ${describe(error)} [${mode}, seed ${SEED}]`);
        }
        const seen = new Int32Array(AREA);
        for (let lba = 0; lba < AREA; lba++) {
          const tag = tagOf(bytes.subarray(lba * SECTOR, (lba + 1) * SECTOR), lba);
          assert.ok(tag >= 0, `step ${step}: sector ${lba} holds bytes no write produced [${mode}, seed ${SEED}]`);
          seen[lba] = tag;
        }
        let match = -1;
        for (let k = states.length - 1; k >= ackedNow && match < 0; k--) {
          let same = true;
          for (let lba = 0; lba < AREA && same; lba++) same = visible(k, lba) === seen[lba];
          if (same) match = k;
        }
        assert.ok(
          match >= 0,
          `step ${step}: the image is no prefix of the ${states.length - 1} batches issued holding the ${ackedNow} acknowledged [${mode}, seed ${SEED}]`,
        );
        if (match < states.length - 1) counts.dropped++;
        assert.deepEqual(reopened.stats().lastRecovery?.corruptions, [], `step ${step}: a crash is not corruption [${mode}, seed ${SEED}]`);
      } finally {
        await reopened.close();
      }
    };
    // A failed check is kept and thrown at the end: thrown inside the medium, it would fail
    // the store under test instead, and hide its message.
    let failure: unknown;
    media.before = async () => {
      if (failure !== undefined) return;
      try {
        await verify();
      } catch (error) {
        failure = error;
      }
    };
    try {
      let tag = 1;
      const inFlight: Promise<unknown>[] = [];
      for (let b = 0; b < BATCHES; b++) {
        const ranges: Range[] = [];
        for (let n = 1 + int(3); n > 0; n--) {
          const count = 1 + int(16);
          ranges.push({ lba: int(AREA - count + 1), count, trim: random() < 0.15 });
        }
        const my = tag++;
        const ttlMs = clock !== undefined && random() < 0.4 ? 1 + int(40) : 0;
        const next = new Int32Array(states[states.length - 1]!);
        const nextDeadlines = new Float64Array(deadlines[deadlines.length - 1]!);
        for (const r of ranges) {
          next.fill(r.trim ? 0 : my, r.lba, r.lba + r.count);
          nextDeadlines.fill(r.trim || ttlMs === 0 ? 0 : clock!.now() + ttlMs, r.lba, r.lba + r.count);
        }
        states.push(next);
        deadlines.push(nextDeadlines);
        const ops: AtomicOp[] = ranges.map((r) => (r.trim ? { trim: r.lba, count: r.count } : { write: r.lba, data: tagged(SECTOR, my, r.lba, r.count) }));
        const index = states.length - 1;
        inFlight.push(
          store.block.atomic(ops, ttlMs === 0 ? {} : { ttl: ttlMs }).then(
            () => {
              assert.equal(acked, index - 1, 'batches resolve in order');
              acked = index;
            },
            (error: unknown) => {
              failure ??= new Error(`batch ${index} failed: ${describe(error)}`);
            },
          ),
        );
        if (int(4) === 0) {
          await Promise.all(inFlight.splice(0));
          // Not while a check is under way (one may run in a checkpoint's write, behind the batches).
          await media.idle();
          clock?.advance(int(20));
        }
        if (failure !== undefined) break;
      }
      await Promise.all(inFlight);
      if (failure !== undefined) throw failure;
      const s = store.stats();
      t.diagnostic(`${images} crash images; ${JSON.stringify({ checkpoints: s.checkpoints, cleaned: s.segmentsCleaned, dropped: counts.dropped, expired: s.expiredBytesReclaimed })}`);
      if (ttl) assert.ok(s.expiredBytesReclaimed > 0, `expired data was dropped [seed ${SEED}]`);
      assert.ok(s.checkpoints > 2 && s.segmentsCleaned > 0, `checkpoints (${s.checkpoints}) and cleaning (${s.segmentsCleaned}) happened [seed ${SEED}]`);
    } finally {
      media.before = undefined;
      await store.close();
      await dirs.removeAll();
    }
  });
}
