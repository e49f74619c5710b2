// Model-based randomized test of the region face: random changes to the buffer (byte
// ranges, whole pages through writePage, zeros), markDirty, commits (awaited or up to three
// in flight, plain or inside store.atomic() with a kv put naming the version), views of
// kept versions, retention by count and age under a ManualClock, and now and then a crash
// ('lose-all', 'keep-all', 'torn') with commits in flight, or a clean reopen. A plain model
// keeps the image each version must hold.
//
// What must hold:
// - versions are numbered 1, 2, 3 … in call order; each holds exactly the buffer as its
//   commit() captured it ('compare': the whole buffer; 'mark' or scan: false: the previous
//   version plus the marked pages);
// - a view of any kept version equals its image; versions() after retain() is what the
//   policy keeps;
// - after a crash the region is exactly one version's image (never a mix): the newest
//   acknowledged one or one of those in flight; the kv key written in the same atomic
//   batches names the newest version committed through a batch.
//
// ATOMIO_SEED replays a run; ATOMIO_REGION_MODEL_STEPS sets the number of steps (default 800).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ManualClock, type Region, type RegionOptions, type Store } from '../../src/index.js';
import type { CrashMode } from '../../src/media/fault.js';
import { makeRandom } from '../../src/media/random.js';
import { describe } from '../helpers/errors.js';
import { replayHint, testSeed } from '../helpers/seed.js';
import { FaultStore, turns } from '../helpers/store.js';

const MiB = 1024 * 1024;
const STEPS = Number(process.env.ATOMIO_REGION_MODEL_STEPS ?? 800);
const MODES: readonly CrashMode[] = ['lose-all', 'keep-all', 'torn'];
const PAGE = 1024;
const SIZE = 20 * PAGE + 300; // a partial last page
const PAGES = Math.ceil(SIZE / PAGE);

interface Pending {
  version: number;
  image: Buffer;
  at: number;
  viaBatch: boolean;
  acked: boolean;
  failed: unknown;
  settled: Promise<unknown>;
}

for (const track of ['compare', 'mark'] as const) {
  test(`region (${track}): random changes, commits, views, retention and crashes agree with a model`, async (t) => {
    const seed = testSeed();
    t.diagnostic(replayHint(seed, 'dist/test/region/model.test.js'));
    const random = makeRandom(seed ^ (track === 'mark' ? 0x9e3779b9 : 0));
    const int = (n: number): number => Math.floor(random() * n);
    const clock = new ManualClock();
    const fault = await FaultStore.create({ capacity: 16 * MiB, segmentSize: 64 * 1024, checkpointIntervalBytes: 256 * 1024, clock, mediaSeed: seed });
    const options: RegionOptions = { size: SIZE, pageSize: PAGE, track };
    const msg = (m: string): string => `${m} [${track}, seed ${seed}; replay with ATOMIO_SEED=${seed}]`;
    /** images[v] = what version v holds; times[v] = when it was committed. */
    const images = new Map<number, Buffer>([[0, Buffer.alloc(SIZE)]]);
    const times = new Map<number, number>();
    let kept: number[] = [];
    let policy = { count: 0, age: 0 };
    let committed = 0;
    /** The newest version issued (acknowledged or in flight) and its image. */
    let issued = 0;
    let marks = new Set<number>();
    let batchVersion = 0;
    const stats = { commits: 0, batches: 0, noops: 0, crashes: 0, reopens: 0, retains: 0, views: 0, unackedFound: 0 };

    let store: Store = fault.store;
    let region: Region = await store.region('m', options);

    const keepModel = (list: number[], now: number): number[] => {
      const n = list.length;
      return list.filter((v, i) => i === n - 1 || ((policy.count === 0 || i >= n - policy.count) && (policy.age === 0 || times.get(v)! >= now - policy.age)));
    };

    const checkKept = async (label: string): Promise<void> => {
      assert.deepEqual(
        region.versions().map((v) => v.version),
        kept,
        msg(`${label}: versions kept`),
      );
      for (const v of kept.length > 4 ? [kept[0]!, kept[kept.length - 1]!, kept[int(kept.length)]!] : kept) {
        const view = await region.open({ version: v });
        assert.ok(view.buffer.equals(images.get(v)!), msg(`${label}: version ${v} does not read as committed`));
        stats.views++;
      }
    };

    const issue = (inBatch: boolean): Pending | undefined => {
      const prev = images.get(issued)!;
      const scan = track === 'compare';
      let image: Buffer;
      if (scan) {
        image = Buffer.from(region.buffer);
      } else {
        image = Buffer.from(prev);
        for (const p of marks) region.buffer.copy(image, p * PAGE, p * PAGE, Math.min(SIZE, (p + 1) * PAGE));
      }
      const nothing = marks.size === 0 && (!scan || image.equals(prev));
      marks = new Set();
      const now = clock.now();
      if (nothing) {
        stats.noops++;
        if (!inBatch) {
          const expect = issued;
          void region.commit().then((v) => assert.equal(v, expect, msg('a commit with nothing dirty resolves with the current version')));
        }
        return undefined;
      }
      const version = ++issued;
      images.set(version, image);
      times.set(version, now);
      const pending: Pending = { version, image, at: now, viaBatch: inBatch, acked: false, failed: undefined, settled: Promise.resolve() };
      const done = (v: number): void => {
        if (!inBatch) assert.equal(v, version, msg(`commit resolved with ${v}, expected ${version}: versions follow call order`));
        pending.acked = true;
      };
      const failed = (error: unknown): void => {
        pending.failed = error;
      };
      if (inBatch) {
        stats.batches++;
        pending.settled = store
          .atomic()
          .put('kv', 'batch', String(version))
          .region(region)
          .commit()
          .then((r) => {
            assert.ok(r.ok, msg('the batch has no checks'));
            done(version);
          }, failed);
      } else {
        pending.settled = region.commit().then(done, failed);
      }
      return pending;
    };

    const mutate = (): void => {
      const kind = int(4);
      if (kind === 0) {
        const at = int(SIZE);
        const len = Math.min(SIZE - at, 1 + int(3 * PAGE));
        region.buffer.fill(int(256), at, at + len);
        if (track === 'mark' || random() < 0.3) {
          region.markDirty(at, len);
          for (let p = Math.floor(at / PAGE); p <= Math.floor((at + len - 1) / PAGE); p++) marks.add(p);
        }
      } else if (kind === 1) {
        const p = int(PAGES);
        const bytes = Math.min(PAGE, SIZE - p * PAGE);
        region.writePage(p, Buffer.alloc(bytes, int(256)));
        marks.add(p);
      } else if (kind === 2) {
        const p = int(PAGES);
        region.buffer.fill(0, p * PAGE, Math.min(SIZE, (p + 1) * PAGE));
        if (track === 'mark') {
          region.markDirty(p * PAGE, Math.min(PAGE, SIZE - p * PAGE));
          marks.add(p);
        }
      } else {
        // A change that is undone before the commit: the compare finds nothing there.
        const at = int(SIZE - 8);
        const old = Buffer.from(region.buffer.subarray(at, at + 8));
        region.buffer.fill(0xee, at, at + 8);
        old.copy(region.buffer, at);
      }
    };

    try {
      let inFlight: Pending[] = [];
      for (let step = 0; step < STEPS; step++) {
        const n = 1 + int(4);
        for (let i = 0; i < n; i++) mutate();
        const pending = issue(random() < 0.3);
        if (pending !== undefined) inFlight.push(pending);
        // The last step crashes if none did before: a run without a crash would test less.
        const fate = step === STEPS - 1 && stats.crashes === 0 ? 0 : random();
        if (fate < 0.015) {
          // Power loss, maybe with commits in flight.
          if (random() < 0.5) await turns(int(6));
          else for (let i = 0; i < 60 && fault.media.pendingWrites === 0; i++) await turns(1);
          const acked = inFlight.filter((p) => p.acked).map((p) => p.version);
          for (const p of inFlight) if (p.acked || p.failed !== undefined) assert.equal(p.failed, undefined, msg(`a commit failed: ${describe(p.failed)}`));
          const lastAcked = Math.max(committed, ...acked);
          await fault.crashAndReopen(MODES[int(MODES.length)]!, int(2 ** 31));
          stats.crashes++;
          store = fault.store;
          region = await store.region('m', options);
          const found = region.version;
          assert.ok(found >= lastAcked && found <= issued, msg(`after a crash the region is at version ${found}; acknowledged ${lastAcked}, issued ${issued}`));
          assert.ok(region.buffer.equals(images.get(found)!), msg(`after a crash the region is not exactly version ${found}: a mix of versions`));
          stats.unackedFound += found - lastAcked;
          for (const p of inFlight) if (p.version <= found && !kept.includes(p.version)) kept.push(p.version);
          for (let v = found + 1; v <= issued; v++) {
            images.delete(v);
            times.delete(v);
          }
          const batchFound = [...inFlight].reverse().find((p) => p.viaBatch && p.version <= found)?.version ?? batchVersion;
          batchVersion = batchFound;
          assert.equal((await store.kv('kv').get('batch'))?.toString() ?? '0', String(batchVersion), msg('the kv key of the atomic batches names the newest version committed through one'));
          committed = issued = found;
          marks = new Set();
          inFlight = [];
          await region.retain();
          kept = keepModel(kept, clock.now());
          await checkKept('after a crash');
          continue;
        }
        if (inFlight.length >= 3 || random() < 0.6) {
          await Promise.all(inFlight.map((p) => p.settled));
          for (const p of inFlight) {
            assert.equal(p.failed, undefined, msg(`commit of version ${p.version} failed: ${describe(p.failed)}`));
            assert.ok(p.acked, msg(`commit of version ${p.version} did not settle`));
            kept.push(p.version);
            if (p.viaBatch) batchVersion = p.version;
            stats.commits++;
          }
          committed = issued;
          inFlight = [];
          assert.equal(region.version, committed, msg('region.version'));
          const action = random();
          if (action < 0.1) {
            let next = random() < 0.5 ? { count: 1 + int(6), age: 0 } : { count: 0, age: 1000 + int(8000) };
            if (random() < 0.3) next = { count: 0, age: 0 };
            await region.retain();
            kept = keepModel(kept, clock.now());
            policy = next;
            await region.retain(policy);
            kept = keepModel(kept, clock.now());
            stats.retains++;
            await checkKept('after retain');
          } else if (action < 0.12) {
            await region.retain();
            kept = keepModel(kept, clock.now());
            marks = new Set();
            store = await fault.closeAndReopen();
            region = await store.region('m', options);
            stats.reopens++;
            assert.ok(region.buffer.equals(images.get(committed)!), msg('after a reopen the region is its newest version'));
            await checkKept('after a reopen');
          } else if (action < 0.3) {
            // Retention runs as commits go: the region keeps a subset of the model's list
            // (with the newest), which the next retain() makes equal.
            const have = region.versions().map((x) => x.version);
            assert.ok(have.every((x) => kept.includes(x)) && (have[have.length - 1] ?? 0) === committed, msg(`versions kept ${have.join(',')} are not a subset of ${kept.join(',')} ending at ${committed}`));
            const v = have[int(have.length)];
            if (v !== undefined) {
              const view = await region.open({ version: v });
              assert.ok(view.buffer.equals(images.get(v)!), msg(`version ${v} does not read as committed`));
              stats.views++;
            }
          }
        }
        if (random() < 0.2) clock.advance(int(2000));
      }
    } finally {
      await fault.dispose();
    }
    t.diagnostic(`seed ${seed} (${track}): ${JSON.stringify(stats)}`);
    assert.ok(stats.crashes > 0 || STEPS < 500, 'the run crashed the store at least once');
  });
}

// The same for a paged region far larger than memory: whole pages written at scattered
// indexes (writePage), read back through readPage (staged, in flight or stored), commits in
// flight, views of kept versions page by page, retention and crashes. The model keeps, per
// version, the pages that differ from zeros.
test('region (paged): scattered pages of a 64 GiB region agree with a model through commits, views and crashes', async (t) => {
  const seed = testSeed();
  t.diagnostic(replayHint(seed, 'dist/test/region/model.test.js'));
  const random = makeRandom(seed ^ 0x51ed270b);
  const int = (n: number): number => Math.floor(random() * n);
  const fault = await FaultStore.create({ capacity: 16 * MiB, segmentSize: 64 * 1024, checkpointIntervalBytes: 256 * 1024, mediaSeed: seed });
  const size = 64 * 1024 * MiB;
  const page = 4096;
  const spots = Array.from({ length: 40 }, (_, i) => (i === 0 ? 0 : i === 1 ? size / page - 1 : Math.floor(random() * (size / page))));
  const msg = (m: string): string => `${m} [paged, seed ${seed}; replay with ATOMIO_SEED=${seed}]`;
  /** versions[v] = page → fill byte (absent: zeros). */
  const versions = new Map<number, Map<number, number>>([[0, new Map()]]);
  let current = new Map<number, number>(); // the region as written (staged included)
  let issued = 0;
  let committed = 0;
  let dirty = false;
  const stats = { commits: 0, crashes: 0, views: 0, retains: 0 };
  const open = (): Promise<Region> => fault.store.region('p', { size, pageSize: page, mode: 'paged' });
  let region = await open();
  const expectPage = async (read: Promise<Buffer>, fill: number | undefined, label: string): Promise<void> => {
    const got = await read;
    assert.ok(got.length === page && got.every((b) => b === (fill ?? 0)), msg(`${label}: expected bytes ${fill ?? 0}, got ${got[0]}…`));
  };
  try {
    let inFlight: { version: number; acked: boolean; settled: Promise<unknown> }[] = [];
    for (let step = 0; step < 300; step++) {
      for (let i = 1 + int(4); i > 0; i--) {
        const p = spots[int(spots.length)]!;
        const fill = random() < 0.15 ? 0 : 1 + int(255);
        region.writePage(p, Buffer.alloc(page, fill));
        current = new Map(current);
        if (fill === 0) current.delete(p);
        else current.set(p, fill);
        dirty = true;
      }
      const probe = spots[int(spots.length)]!;
      await expectPage(region.readPage(probe), current.get(probe), `readPage(${probe}) of the region as written`);
      if (dirty) {
        const version = ++issued;
        versions.set(version, current);
        dirty = false;
        const entry = { version, acked: false, settled: Promise.resolve() as Promise<unknown> };
        entry.settled = region.commit().then((v) => {
          assert.equal(v, version, msg('paged versions follow call order'));
          entry.acked = true;
        });
        inFlight.push(entry);
      }
      if (random() < 0.04) {
        await turns(int(6));
        const lastAcked = Math.max(committed, ...inFlight.filter((e) => e.acked).map((e) => e.version));
        await fault.crashAndReopen(MODES[int(MODES.length)]!, int(2 ** 31));
        stats.crashes++;
        region = await open();
        const found = region.version;
        assert.ok(found >= lastAcked && found <= issued, msg(`after a crash the region is at ${found}; acknowledged ${lastAcked}, issued ${issued}`));
        for (const p of spots.slice(0, 10)) await expectPage(region.readPage(p), versions.get(found)!.get(p), `after a crash, page ${p} of version ${found}`);
        for (let v = found + 1; v <= issued; v++) versions.delete(v);
        committed = issued = found;
        current = versions.get(found)!;
        inFlight = [];
        continue;
      }
      if (inFlight.length >= 3 || random() < 0.5) {
        await Promise.all(inFlight.map((e) => e.settled));
        committed = issued;
        inFlight = [];
        const kept = region.versions().map((v) => v.version);
        assert.equal(kept[kept.length - 1] ?? 0, committed, msg('the newest version is kept'));
        const v = kept[int(kept.length)];
        if (v !== undefined) {
          const view = await region.open({ version: v });
          const p = spots[int(spots.length)]!;
          await expectPage(view.readPage(p), versions.get(v)!.get(p), `version ${v}, page ${p}`);
          stats.views++;
        }
        if (random() < 0.05) {
          await region.retain({ count: 1 + int(4) });
          stats.retains++;
        }
      }
      stats.commits = committed;
    }
  } finally {
    await fault.dispose();
  }
  t.diagnostic(`seed ${seed} (paged): ${JSON.stringify(stats)}`);
});
