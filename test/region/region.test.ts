// The region face's API behaviour: commits of what changed (found by compare or declared by
// markDirty), versions and views of old ones, retention by count and age, atomic batches
// with kv ops, paged regions far larger than memory, limits, failures that leave pages
// dirty, and the reserved pool names.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MAX_REGION_BUFFER_BYTES, ManualClock, isAtomioError, type OpenOptions, type Store } from '../../src/index.js';
import { makeRandom } from '../../src/media/random.js';
import { code, outcome } from '../helpers/errors.js';
import { replayHint, testSeed } from '../helpers/seed.js';
import { FaultStore } from '../helpers/store.js';

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
const SMALL = { capacity: 16 * MiB, segmentSize: 256 * 1024 } as const;

async function withStore(body: (store: Store, reopen: () => Promise<Store>) => Promise<void>, options: Omit<OpenOptions, 'media'> = {}): Promise<void> {
  const fault = await FaultStore.create({ ...SMALL, ...options, capacity: options.capacity ?? SMALL.capacity });
  try {
    await body(fault.store, () => fault.closeAndReopen());
  } finally {
    await fault.dispose();
  }
}

test('commit writes what changed as a new version; reopen loads the newest; nothing dirty writes nothing', async () => {
  await withStore(async (store, reopen) => {
    let r = await store.region('state', { size: 10_000, pageSize: 4096 });
    assert.deepEqual([r.version, r.pageCount, r.buffer.length], [0, 3, 10_000], 'a new region: zeros, no version');
    assert.equal(await r.commit(), 0, 'nothing to commit: the version stays');
    r.buffer.write('hello', 0);
    r.buffer.write('tail', 9990); // in the partial last page
    assert.equal(await r.commit(), 1);
    assert.deepEqual(
      r.versions().map((v) => [v.version, v.pages]),
      [[1, 2]],
      'version 1 wrote the two pages that changed',
    );
    assert.equal(await r.commit(), 1, 'nothing changed since: no new version');
    r.buffer.write('HELLO', 0);
    assert.equal(await r.commit(), 2);
    assert.equal(r.versions()[1]!.pages, 1);
    const image = Buffer.from(r.buffer);
    store = await reopen();
    r = await store.region('state');
    assert.equal(r.version, 2);
    assert.ok(r.buffer.equals(image), 'the region opens as its newest version');
    assert.deepEqual(store.regions(), ['state']);
    assert.deepEqual(store.pools(), [], 'region pools are not kv pools');
    await assert.rejects(store.region('state', { size: 20_000 }), code('ERR_ARGUMENT'), 'a different size is refused');
    await assert.rejects(store.region('other'), code('ERR_ARGUMENT'), 'a new region needs a size');
  });
});

test("track 'mark' writes only what markDirty() named; commit({ scan: false }) skips the compare", async () => {
  await withStore(async (store, reopen) => {
    let m = await store.region('m', { size: 4 * 4096, track: 'mark' });
    m.buffer.fill(1, 0, 4096);
    m.buffer.fill(2, 4096, 8192);
    m.markDirty(0, 10); // page 0 only
    assert.equal(await m.commit(), 1);
    assert.equal(m.versions()[0]!.pages, 1);
    await assert.rejects(m.commit({ scan: true }), code('ERR_ARGUMENT'), "a 'mark' region keeps no copy to compare with");
    assert.throws(() => m.markDirty(4 * 4096 - 1, 2), code('ERR_ARGUMENT'), 'marks must lie within the region');
    const c = await store.region('c', { size: 4 * 4096 });
    c.buffer.fill(3, 0, 4096);
    c.buffer.fill(4, 8192, 8200);
    c.markDirty(8192, 8);
    assert.equal(await c.commit({ scan: false }), 1);
    assert.equal(c.versions()[0]!.pages, 1, 'without the scan only the marked page is written');
    assert.equal(await c.commit(), 2, 'the scan then finds page 0');
    store = await reopen();
    m = await store.region('m', { track: 'mark' });
    assert.equal(m.buffer[0], 1, 'the marked page was committed');
    assert.equal(m.buffer[4096], 0, 'the page changed without a mark was not');
    const c2 = await store.region('c');
    assert.deepEqual([c2.buffer[0], c2.buffer[8192]], [3, 4]);
  });
});

test('open({ version }) gives a read-only copy of an older version; retain keeps the newest count or age', async () => {
  const clock = new ManualClock();
  await withStore(
    async (store, reopen) => {
      let r = await store.region('v', { size: 8 * 1024, pageSize: 1024 });
      const images: Buffer[] = [Buffer.alloc(8 * 1024)];
      for (let v = 1; v <= 6; v++) {
        r.buffer.fill(v, (v % 8) * 1024, (v % 8) * 1024 + 1024);
        r.buffer[0] = v;
        assert.equal(await r.commit(), v);
        images.push(Buffer.from(r.buffer));
        clock.advance(1000);
      }
      for (let v = 1; v <= 6; v++) {
        const view = await r.open({ version: v });
        assert.ok(view.buffer.equals(images[v]!), `version ${v} reads as it was committed`);
        assert.ok((await view.readPage(1)).equals(images[v]!.subarray(1024, 2048)));
      }
      const view = await r.open({ version: 2 });
      view.buffer.fill(9);
      assert.ok((await r.open({ version: 2 })).buffer.equals(images[2]!), 'changing a view changes nothing stored');
      await assert.rejects(r.open({ version: 99 }), code('ERR_ARGUMENT'));
      const before = r.stats().storedPages;
      await r.retain({ count: 3 });
      assert.deepEqual(r.versions().map((v) => v.version), [4, 5, 6], 'the newest three are kept');
      assert.ok(r.stats().storedPages < before, 'pages only older versions needed are gone');
      await assert.rejects(r.open({ version: 2 }), code('ERR_ARGUMENT'));
      for (const v of [4, 5, 6]) assert.ok((await r.open({ version: v })).buffer.equals(images[v]!), `kept version ${v} is whole`);
      // Age: now is 6000 ms after version 1; versions 4, 5, 6 were committed at 3000, 4000, 5000.
      await r.retain({ count: 0, age: 1500 });
      assert.deepEqual(r.versions().map((v) => v.version), [6], 'older than 1.5 s: gone, but the newest stays');
      r.buffer[100] = 42;
      assert.equal(await r.commit(), 7);
      clock.advance(10_000);
      r.buffer[101] = 43;
      await r.commit();
      assert.deepEqual(r.versions().map((v) => v.version), [8], 'retention runs as commits go on');
      assert.deepEqual(r.retention(), { count: 0, age: 1500 });
      const image = Buffer.from(r.buffer);
      store = await reopen();
      r = await store.region('v');
      assert.deepEqual(r.retention(), { count: 0, age: 1500 }, 'the policy survives a reopen');
      assert.ok(r.buffer.equals(image));
      assert.equal(r.stats().storedPages, 7, 'one stored version of each page written (0 … 6) is left');
    },
    { clock },
  );
});

test('retention riding on commits deletes exactly the page versions no kept version needs (randomized)', async (t) => {
  const seed = testSeed();
  t.diagnostic(replayHint(seed, 'dist/test/region/region.test.js'));
  const random = makeRandom(seed);
  const int = (n: number): number => Math.floor(random() * n);
  const msg = (m: string): string => `${m} [seed ${seed}; replay with ATOMIO_SEED=${seed}]`;
  const clock = new ManualClock();
  const pageSize = 512;
  const pages = 32;
  await withStore(
    async (store) => {
      const r = await store.region('kept', { size: pages * pageSize, pageSize });
      const images = new Map<number, Buffer>();
      for (let step = 0; step < 300; step++) {
        if (step % 40 === 0) await r.retain(random() < 0.5 ? { count: 1 + int(5), age: 0 } : { count: int(4), age: 500 + int(3000) });
        for (let i = 1 + int(6); i > 0; i--) {
          const at = int(pages) * pageSize;
          if (random() < 0.2) r.buffer.fill(0, at, at + pageSize);
          else r.buffer.fill(1 + int(255), at + int(pageSize), at + pageSize);
        }
        r.buffer[int(pages) * pageSize + int(pageSize)]! ^= 0xff; // something always changes
        const version = await r.commit();
        assert.equal(version, step + 1);
        images.set(version, Buffer.from(r.buffer));
        // At the commit's time, a sweep of every page version finds nothing the commit left
        // (with the background sweep it started, once the clock steps back: see below).
        if (step >= 150) {
          await new Promise((resolve) => setImmediate(resolve));
          await r.settled();
        }
        const stored = r.stats().storedPages;
        const kept = r.versions().map((v) => v.version);
        await r.retain();
        assert.deepEqual(r.versions().map((v) => v.version), kept, msg(`step ${step}: the commit applied the policy`));
        assert.equal(r.stats().storedPages, stored, msg(`step ${step}: the commit's retention left page versions no kept version needs`));
        if (step % 10 === 9) {
          for (const v of kept) assert.ok((await r.open({ version: v })).buffer.equals(images.get(v)!), msg(`step ${step}: kept version ${v} is whole`));
        }
        // In the second half the clock now and then steps back: age then drops versions out of
        // order, leaving gaps in the list (whose pages a background sweep deletes).
        clock.advance(step >= 150 && random() < 0.1 ? -int(2000) : int(400));
      }
    },
    { clock },
  );
});

test('after a reopen, retention riding on commits still deletes exactly the page versions no kept version needs', async () => {
  const pageSize = 512;
  const pages = 8;
  await withStore(async (first, reopen) => {
    let store = first;
    let r = await store.region('again', { size: pages * pageSize, pageSize });
    await r.retain({ count: 2 });
    const images = new Map<number, Buffer>();
    // Each step rewrites a different mix of pages: some that the last version wrote, some it did not.
    const step = async (n: number): Promise<void> => {
      for (let p = 0; p < pages; p++) if ((n * 7 + p * 3) % 5 < 2) r.buffer.fill(n, p * pageSize, (p + 1) * pageSize);
      r.buffer[(n % pages) * pageSize] = 200 + (n % 50);
      const version = await r.commit();
      images.set(version, Buffer.from(r.buffer));
      const stored = r.stats().storedPages;
      await r.retain(); // a full sweep: it must find nothing the commit left
      assert.equal(r.stats().storedPages, stored, `version ${version}: the commit's retention left page versions no kept version needs`);
      for (const v of r.versions()) assert.ok((await r.open({ version: v.version })).buffer.equals(images.get(v.version)!), `version ${v.version} is whole`);
    };
    for (let n = 1; n <= 6; n++) await step(n);
    store = await reopen();
    r = await store.region('again');
    for (let n = 7; n <= 14; n++) await step(n);
  });
});

test('after the clock stepped back, the pages of versions that retention let go out of order are deleted once the commit lands', async () => {
  const clock = new ManualClock(10_000);
  await withStore(
    async (store) => {
      const r = await store.region('back', { size: 4 * 4096 });
      await r.retain({ count: 3, age: 1000 });
      const commitAt = async (time: number, page: number, value: number): Promise<number> => {
        clock.set(time);
        r.buffer[page * 4096] = value;
        return r.commit();
      };
      assert.equal(await commitAt(10_000, 0, 1), 1);
      assert.equal(await commitAt(4_000, 0, 2), 2, 'the clock stepped back');
      assert.equal(await commitAt(10_500, 1, 3), 3);
      assert.deepEqual(r.versions().map((v) => v.version), [1, 3], 'age let version 2 go before version 1');
      assert.equal(await commitAt(10_600, 2, 4), 4);
      // Count now lets version 1 go: its page 0 is needed by no kept version (3 and on see
      // version 2's), which the commit cannot tell from the list: a background sweep can.
      assert.equal(await commitAt(10_700, 3, 5), 5);
      await new Promise((resolve) => setImmediate(resolve));
      await r.settled();
      assert.deepEqual(r.versions().map((v) => v.version), [3, 4, 5]);
      const stored = r.stats().storedPages;
      await r.retain(); // a full sweep
      assert.equal(r.stats().storedPages, 4, 'page 0 of version 2 and pages 1, 2, 3');
      assert.equal(stored, 4, 'the sweep the commit started had already deleted page 0 of version 1');
    },
    { clock },
  );
});

test('store.atomic().region() commits dirty pages with kv ops in one record; a failed check leaves them dirty', async () => {
  await withStore(async (store, reopen) => {
    let r = await store.region('acct', { size: 4096 * 4 });
    r.buffer.writeUInt32LE(100, 0);
    const v0 = await store.kv('meta').put('balance', '100');
    r.buffer.writeUInt32LE(90, 0);
    const res = await store.atomic().check('meta', 'balance', v0).put('meta', 'balance', '90').region(r).commit();
    assert.ok(res.ok);
    assert.equal(r.version, 1, 'the region got a version from the batch');
    r.buffer.writeUInt32LE(80, 4096);
    const failed = await store.atomic().check('meta', 'balance', v0).put('meta', 'balance', '80').region(r).commit();
    assert.equal(failed.ok, false, 'the stale check fails the batch');
    assert.equal(r.version, 1, 'and the region did not move');
    assert.equal(await r.commit(), 2, 'its pages are still dirty and commit on their own');
    assert.equal(r.versions()[1]!.pages, 1);
    assert.throws(() => store.atomic().region(r).region(r), code('ERR_ARGUMENT'));
    store = await reopen();
    r = await store.region('acct');
    assert.deepEqual([r.buffer.readUInt32LE(0), r.buffer.readUInt32LE(4096), (await store.kv('meta').get('balance'))?.toString()], [90, 80, '90']);
  });
});

test("store.atomic().region() refuses a region of another store and what is not a region; the region's own store keeps its versions", async () => {
  const other = await FaultStore.create({ ...SMALL });
  try {
    await withStore(async (store, reopen) => {
      let r = await store.region('mine', { size: 4096 });
      r.buffer[0] = 7;
      assert.throws(() => other.store.atomic().put('p', 'k', 'v').region(r), code('ERR_ARGUMENT'), "another store's batch");
      for (const bad of [undefined, {}, await r.open()]) {
        assert.throws(() => store.atomic().region(bad as never), code('ERR_ARGUMENT'), `${String(bad)} is not a region`);
      }
      assert.deepEqual(other.store.regions(), [], 'nothing of the region went to the other store');
      assert.equal(await r.commit(), 1, 'the page is still dirty and commits to its own store');
      store = await reopen();
      r = await store.region('mine');
      assert.deepEqual([r.version, r.buffer[0]], [1, 7]);
    });
  } finally {
    await other.dispose();
  }
});

test('open() refuses a version that is not a whole number, saying so, rather than calling it not kept', async () => {
  await withStore(async (store) => {
    const r = await store.region('v', { size: 4096 });
    r.buffer[0] = 1;
    assert.equal(await r.commit(), 1);
    for (const bad of ['1', 1.5, -1, Number.NaN]) {
      const result = await outcome(r.open({ version: bad as never }));
      assert.ok(!result.ok && result.code === 'ERR_ARGUMENT', `version ${String(bad)} is refused with ERR_ARGUMENT`);
      assert.match((result.error as Error).message, /is an integer >= 0/, `the message says what a version is (${String(bad)})`);
    }
    await assert.rejects(r.open(null as never), code('ERR_ARGUMENT'), 'options that are not an object');
    await assert.rejects(r.open({ version: 2 }), code('ERR_ARGUMENT'), 'a version never committed');
    assert.equal((await r.open({ version: 1 })).buffer[0], 1);
  });
});

test('a paged region of 64 GiB costs only the pages written', async () => {
  await withStore(async (store, reopen) => {
    await assert.rejects(store.region('huge', { size: MAX_REGION_BUFFER_BYTES + 1 }), code('ERR_LIMIT'), 'too large for a buffer');
    let p = await store.region('huge', { size: 64 * GiB, mode: 'paged' });
    assert.throws(() => p.buffer, code('ERR_ARGUMENT'));
    assert.equal(p.pageCount, 16 * 1024 * 1024);
    const last = p.pageCount - 1;
    p.writePage(0, Buffer.alloc(4096, 1));
    p.writePage(last, Buffer.alloc(4096, 2));
    assert.equal((await p.readPage(last))[0], 2, 'a staged page reads back before the commit');
    assert.equal(await p.commit(), 1);
    p.writePage(0, Buffer.alloc(4096, 3));
    assert.equal(await p.commit(), 2);
    assert.ok(p.stats().bytes < 20_000, `three page versions stored: ${p.stats().bytes} bytes`);
    assert.throws(() => p.writePage(last + 1, Buffer.alloc(4096)), code('ERR_ARGUMENT'));
    assert.throws(() => p.writePage(1, Buffer.alloc(100)), code('ERR_ARGUMENT'));
    store = await reopen();
    p = await store.region('huge', { mode: 'paged' });
    assert.deepEqual([(await p.readPage(0))[0], (await p.readPage(last))[0], (await p.readPage(12345))[0]], [3, 2, 0]);
    const v1 = await p.open({ version: 1 });
    assert.equal((await v1.readPage(0))[0], 1, 'an old version of a paged region reads page by page');
    await p.retain({ count: 1 });
    await assert.rejects(v1.readPage(0), code('ERR_ARGUMENT'), 'a view of a version let go fails');
  });
});

test('zero pages are stored empty; a commit over the size limit fails and leaves the pages dirty', async () => {
  await withStore(
    async (store) => {
      const r = await store.region('z', { size: 64 * 4096 });
      r.buffer.fill(7);
      const big = await outcome(r.commit());
      assert.equal(big.ok ? 'ok' : big.code, 'ERR_LIMIT', '256 KiB of pages do not fit one commit of a store with 64 KiB segments');
      assert.equal(r.version, 0);
      r.buffer.fill(0, 8 * 4096);
      assert.equal(await r.commit(), 1, 'once fewer pages changed the commit goes through');
      assert.equal(r.versions()[0]!.pages, 8);
      r.buffer.fill(0);
      assert.equal(await r.commit(), 2);
      const bytes = r.stats().bytes;
      assert.equal(r.versions()[1]!.pages, 8, 'the zeroed pages are written');
      await r.retain({ count: 1 });
      assert.ok(r.stats().bytes < bytes && r.stats().bytes < 1000, `zero pages take no value bytes (${r.stats().bytes} bytes)`);
      assert.ok((await r.open()).buffer.every((b) => b === 0));
    },
    { capacity: 8 * MiB, segmentSize: 64 * 1024 },
  );
});

test('after a commit that failed, a commit with nothing dirty resolves with the version instead of repeating the old error', async () => {
  await withStore(
    async (store) => {
      const r = await store.region('undo', { size: 64 * 4096 });
      r.buffer.fill(1, 0, 4096);
      assert.equal(await r.commit(), 1);
      const committed = Buffer.from(r.buffer);
      r.buffer.fill(7);
      const big = await outcome(r.commit());
      assert.equal(big.ok ? 'ok' : big.code, 'ERR_LIMIT', 'too many pages for one commit');
      committed.copy(r.buffer); // the application undoes its change
      assert.equal(await r.commit(), 1, 'nothing differs from version 1: nothing to write, no error');
      assert.equal(await r.commit(), 1);
      r.buffer[5] = 2;
      assert.equal(await r.commit(), 2);
    },
    { capacity: 8 * MiB, segmentSize: 64 * 1024 },
  );
});

test('commits in flight each capture the buffer when called; a failure makes the later ones fail too and their pages dirty again', async () => {
  await withStore(
    async (store) => {
      const r = await store.region('p', { size: 16 * 4096 });
      // Pipelined commits: each sees the buffer as it was when called.
      const images: Buffer[] = [];
      const commits: Promise<number>[] = [];
      for (let i = 1; i <= 5; i++) {
        r.buffer.fill(i, (i - 1) * 4096, i * 4096);
        images.push(Buffer.from(r.buffer));
        commits.push(r.commit());
      }
      assert.deepEqual(await Promise.all(commits), [1, 2, 3, 4, 5]);
      for (let v = 1; v <= 5; v++) assert.ok((await r.open({ version: v })).buffer.equals(images[v - 1]!), `version ${v} holds the buffer of its call`);
      // Fill the store, then make a commit that does not fit with two queued behind it.
      const filler = store.kv('filler');
      for (let i = 0; ; i++) if (!(await outcome(filler.put(`k${i}`, Buffer.alloc(20_000, 1)))).ok) break;
      const room = store.stats().usableBytes - store.stats().liveBytes;
      const pages = Math.min(15, Math.ceil((room + 8192) / 4096));
      for (let p = 0; p < pages; p++) r.buffer.fill(100 + p, p * 4096, (p + 1) * 4096);
      const big = r.commit();
      r.buffer[15 * 4096] = 1;
      const small = r.commit();
      const results = await Promise.all([outcome(big), outcome(small)]);
      assert.deepEqual(results.map((x) => (x.ok ? 'ok' : x.code)), ['ERR_NO_SPACE', 'ERR_NO_SPACE'], 'the commit behind the failed one fails with its code');
      assert.equal(r.version, 5);
      await store.dropPool('filler');
      assert.equal(await r.commit(), 6, 'numbering resumes after the last version that landed');
      assert.ok((await r.open({ version: 6 })).buffer.equals(r.buffer), 'every page of the failed commits was written');
    },
    { capacity: 4 * MiB, segmentSize: 64 * 1024 },
  );
});

test('regions are reserved pools; dropRegion removes every version; bad options are refused', async () => {
  await withStore(async (store) => {
    const r = await store.region('gone', { size: 4096 });
    r.buffer[0] = 1;
    await r.commit();
    assert.throws(() => store.kv('\u0000region:gone'), code('ERR_ARGUMENT'));
    assert.strictEqual(await store.region('gone'), r, 'one object per name');
    await assert.rejects(store.region('gone', { mode: 'paged' }), code('ERR_ARGUMENT'), 'the open region has other options');
    await store.dropRegion('gone');
    assert.throws(() => r.buffer[0] === 1 && r.versions(), code('ERR_CLOSED'));
    assert.deepEqual(store.regions(), []);
    const again = await store.region('gone', { size: 4096 });
    assert.deepEqual([again.version, again.buffer[0]], [0, 0], 'a dropped region starts anew');
    for (const bad of [{ size: 0 }, { size: 4096, pageSize: 1000 }, { size: 4096, pageSize: 256 }, { size: 4096, mode: 'x' }, { size: 4096, track: 'y' }]) {
      const result = await outcome(store.region('bad', bad as never));
      assert.ok(!result.ok && isAtomioError(result.error, 'ERR_ARGUMENT'), `${JSON.stringify(bad)} is refused`);
    }
  });
});

test('store.region() called while dropRegion() of that name is under way gets a new region, never the dropped one', async () => {
  await withStore(async (store, reopen) => {
    const old = await store.region('q', { size: 2 * 4096 });
    old.buffer.fill(5);
    assert.equal(await old.commit(), 1);
    const drop = store.dropRegion('q');
    const again = store.region('q', { size: 2 * 4096 });
    await drop;
    const r = await again;
    assert.notStrictEqual(r, old);
    assert.deepEqual([r.version, r.buffer[0], r.buffer[4096]], [0, 0, 0], 'the new region starts from zeros');
    r.buffer[0] = 6;
    assert.equal(await r.commit(), 1);
    store = await reopen();
    const back = await store.region('q', { size: 2 * 4096 });
    assert.deepEqual([back.version, back.buffer[0], back.buffer[4096]], [1, 6, 0], 'reopened: exactly the version committed after the drop');
  });
});

test("a 'buffer' region's commits leave the value cache to hot kv values", async () => {
  // A 2 MiB cache; the region commits 4 MiB of pages: were the pages cached, they would push the kv values out.
  const fault = await FaultStore.create({ capacity: 256 * MiB, segmentSize: 16 * MiB, cacheSize: 2 * MiB });
  try {
    const store = fault.store;
    const kv = store.kv('hot');
    for (let i = 0; i < 64; i++) await kv.put(`k${i}`, Buffer.alloc(1024, i));
    const region = await store.region('r', { size: 4 * MiB });
    region.buffer.fill(7);
    await region.commit();
    let reads = 0;
    const media = fault.media;
    const read = media.read.bind(media);
    const readSync = media.readSync.bind(media);
    media.read = (buffer, offset) => (reads++, read(buffer, offset));
    media.readSync = (buffer, offset) => (reads++, readSync(buffer, offset));
    for (let i = 0; i < 64; i++) assert.ok(kv.getSync(`k${i}`)?.equals(Buffer.alloc(1024, i)));
    assert.equal(reads, 0, 'every hot kv value was still cached after the region commit');
  } finally {
    await fault.dispose();
  }
});
