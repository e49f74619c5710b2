// Damage where recovery has to trust structure: a flipped bit in a record header inside the
// replay window, in the checkpoint, or in the superblock. Whatever is hit, open never throws
// anything but an AtomioError; when it opens, it reports what it lost and never returns
// bytes that no write produced.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isAtomioError } from '../../src/base/errors.js';
import { makeRandom } from '../../src/media/random.js';
import { FaultMedia } from '../../src/media/fault.js';
import type { Store } from '../../src/index.js';
import { FaultStore } from '../helpers/store.js';
import { tagOf, tagged } from '../helpers/data.js';
import { describe, outcome } from '../helpers/errors.js';
import { currentSuperblock, findRecordHeaders } from '../helpers/image.js';
import { deriveSeed, testSeed } from '../helpers/seed.js';
import { SEGMENTS_OFFSET } from '../../src/log/format.js';

const SEED = testSeed();
const SECTOR = 512;
const SEGMENT = 64 * 1024;
const OPTIONS = { capacity: 4 * 1024 * 1024, segmentSize: SEGMENT, checkpointIntervalBytes: 64 * 1024 * 1024 } as const;
const EXTENT = 16;

interface Setup {
  fault: FaultStore;
  /** Image of the store after a keep-all crash: checkpoint + replay window. */
  image: Uint8Array;
  /** lba → tags written there in order (index 0: before the checkpoint). */
  history: Map<number, number[]>;
  /** Version (= seq) of each write after the checkpoint, with its lba and tag. */
  afterCheckpoint: { seq: number; lba: number; tag: number }[];
}

/**
 * 40 writes, a checkpoint, 30 more writes (some overwriting), then a keep-all crash image.
 * With `churn`, first 400 overwrites on a tiny store with frequent checkpoints, so that old
 * checkpoints and segments have been freed and reused.
 */
async function setup(salt: number, churn = false): Promise<Setup> {
  const random = makeRandom(deriveSeed(SEED, salt));
  const fault = await FaultStore.create(churn ? { capacity: 1024 * 1024, segmentSize: SEGMENT, checkpointIntervalBytes: 64 * 1024 } : OPTIONS);
  const history = new Map<number, number[]>();
  let tag = 1;
  const write = async (lba: number): Promise<number> => {
    const v = await fault.store.block.write(lba, tagged(SECTOR, tag, lba, EXTENT));
    history.set(lba, [...(history.get(lba) ?? []), tag]);
    tag++;
    return v;
  };
  for (let i = 0; i < 40; i++) await write(i * EXTENT);
  if (churn) for (let i = 0; i < 400; i++) await write(Math.floor(random() * 40) * EXTENT);
  await fault.store.checkpoint();
  const afterCheckpoint: Setup['afterCheckpoint'] = [];
  for (let i = 0; i < 30; i++) {
    const lba = Math.floor(random() * 60) * EXTENT;
    const seq = await write(lba);
    afterCheckpoint.push({ seq, lba, tag: tag - 1 });
  }
  const crashed = fault.crashImage('keep-all');
  return { fault, image: crashed.snapshotImage(), history, afterCheckpoint };
}

/** Opens a damaged copy of the image: the store, or the error's code; fails on a non-Atomio error. */
async function openDamaged(s: Setup, damage: (image: Uint8Array) => void, what: string): Promise<Store | string> {
  const image = new Uint8Array(s.image);
  damage(image);
  const result = await outcome(s.fault.reopen(FaultMedia.from(image)));
  if (result.ok) return result.value;
  assert.ok(isAtomioError(result.error), `${what}: open threw a non-Atomio error: ${describe(result.error)}`);
  return result.code;
}

/** Every sector reads as one of the writes made to it (or zeros), or rejects with ERR_CORRUPT. */
async function checkNoInventedBytes(store: Store, s: Setup, what: string): Promise<{ stale: number; corrupt: number }> {
  let stale = 0;
  let corrupt = 0;
  for (const [lba, tags] of s.history) {
    const r = await outcome(store.block.read(lba, EXTENT));
    if (!r.ok) {
      assert.equal(r.code, 'ERR_CORRUPT', `${what}: read of lba ${lba} failed with ${r.code}`);
      corrupt++;
      continue;
    }
    for (let k = 0; k < EXTENT; k++) {
      const got = tagOf(r.value.subarray(k * SECTOR, (k + 1) * SECTOR), lba + k);
      assert.ok(got === 0 || tags.includes(got), `${what}: lba ${lba + k} holds bytes no write produced (tag ${got})`);
      if (got !== tags[tags.length - 1]) stale++;
    }
  }
  return { stale, corrupt };
}

test('a flipped bit in a record header in the replay window: open succeeds, reports the damage, and every other acknowledged write is intact', async (t) => {
  t.diagnostic(`seed ${SEED} (replay: ATOMIO_SEED=${SEED})`);
  const random = makeRandom(deriveSeed(SEED, 10));
  const s = await setup(11);
  try {
    const lastSeq = s.afterCheckpoint[s.afterCheckpoint.length - 1]!.seq;
    const headers = findRecordHeaders(s.image).filter((h) => s.afterCheckpoint.some((w) => w.seq === h.seq) && h.seq !== lastSeq);
    assert.ok(headers.length >= 20, `found the replay window's record headers (${headers.length})`);
    for (let trial = 0; trial < 12; trial++) {
      const h = headers[Math.floor(random() * headers.length)]!;
      const byte = Math.floor(random() * h.metaBytes);
      const bit = Math.floor(random() * 8);
      const what = `record ${h.seq}, header byte ${byte}, bit ${bit} [seed ${SEED}]`;
      const store = await openDamaged(s, (image) => void (image[h.offset + byte]! ^= 1 << bit), what);
      assert.ok(typeof store !== 'string', `${what}: the store opens (got ${String(store)})`);
      const report = store.stats().lastRecovery!;
      assert.ok(report.corruptions.length > 0, `${what}: the lost record is reported: ${JSON.stringify(report)}`);
      // Only the damaged record may be missing: every other write after the checkpoint is there.
      const damaged = s.afterCheckpoint.find((w) => w.seq === h.seq)!;
      for (const w of s.afterCheckpoint) {
        const later = s.afterCheckpoint.some((x) => x.lba === w.lba && x.seq > w.seq);
        if (w.seq === h.seq || later) continue;
        const got = await store.block.read(w.lba, EXTENT);
        assert.deepEqual(got, tagged(SECTOR, w.tag, w.lba, EXTENT), `${what}: write ${w.seq} at lba ${w.lba}`);
      }
      const { stale } = await checkNoInventedBytes(store, s, what);
      assert.ok(stale <= EXTENT, `${what}: at most the damaged record's ${EXTENT} sectors (lba ${damaged.lba}) are stale, ${stale} are`);
      await store.close();
    }
  } finally {
    await s.fault.dispose();
  }
});

test('a flipped bit in the checkpoint: open fails with ERR_CORRUPT or opens without inventing data, never a non-Atomio error', async (t) => {
  t.diagnostic(`seed ${SEED} (replay: ATOMIO_SEED=${SEED})`);
  const random = makeRandom(deriveSeed(SEED, 20));
  const s = await setup(21);
  try {
    const { superblock } = currentSuperblock(s.image);
    const first = superblock.checkpoint.firstSegment;
    assert.ok(first >= 0, 'the store has a checkpoint');
    const start = SEGMENTS_OFFSET + first * SEGMENT;
    const seen = new Map<string, number>();
    for (let trial = 0; trial < 16; trial++) {
      // Half the flips hit the checkpoint segment's header, half its payload.
      const offset = trial % 2 === 0 ? start + Math.floor(random() * 64) : start + 512 + Math.floor(random() * superblock.checkpoint.payloadBytes);
      const bit = Math.floor(random() * 8);
      const what = `checkpoint byte ${offset - start}, bit ${bit} [seed ${SEED}]`;
      const store = await openDamaged(s, (image) => void (image[offset]! ^= 1 << bit), what);
      if (typeof store === 'string') {
        assert.equal(store, 'ERR_CORRUPT', `${what}: a damaged checkpoint is reported as ERR_CORRUPT`);
        seen.set(store, (seen.get(store) ?? 0) + 1);
        continue;
      }
      seen.set('opened', (seen.get('opened') ?? 0) + 1);
      await checkNoInventedBytes(store, s, what);
      await store.close();
    }
    t.diagnostic(`checkpoint flips: ${JSON.stringify(Object.fromEntries(seen))}`);
    const errors = await outcome(s.fault.reopen(FaultMedia.from(s.image)));
    assert.ok(errors.ok, 'the undamaged image opens');
    if (errors.ok) await errors.value.close();
  } finally {
    await s.fault.dispose();
  }
});

test('a flipped bit in the newest superblock copy of a churned store: open never throws a non-Atomio error and never returns bytes no write produced', async (t) => {
  t.diagnostic(`seed ${SEED} (replay: ATOMIO_SEED=${SEED})`);
  const random = makeRandom(deriveSeed(SEED, 30));
  const s = await setup(31, true);
  try {
    const { offset } = currentSuperblock(s.image);
    const seen = new Map<string, number>();
    for (let trial = 0; trial < 8; trial++) {
      const byte = Math.floor(random() * 128);
      const bit = Math.floor(random() * 8);
      const what = `superblock byte ${byte}, bit ${bit} [seed ${SEED}]`;
      const store = await openDamaged(s, (image) => void (image[offset + byte]! ^= 1 << bit), what);
      if (typeof store === 'string') {
        seen.set(store, (seen.get(store) ?? 0) + 1);
        continue;
      }
      const { stale, corrupt } = await checkNoInventedBytes(store, s, what);
      seen.set(`opened (stale ${stale}, corrupt ${corrupt})`, (seen.get(`opened (stale ${stale}, corrupt ${corrupt})`) ?? 0) + 1);
      await store.close();
    }
    t.diagnostic(`superblock flips: ${JSON.stringify(Object.fromEntries(seen))}`);
  } finally {
    await s.fault.dispose();
  }
});
