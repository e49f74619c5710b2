// The kv face's API behaviour: reads and writes, conditions, TTL under a manual clock,
// memcached counters, touch, argument and limit errors, ordered listing (ranges, prefix,
// reverse, limit, consistency while writes go on), count, pools and their dropping, stats,
// persistence across reopen, and the cleaner moving live keys.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  MAX_KEY_BYTES,
  ManualClock,
  open,
  type OpenOptions,
  type Store,
} from '../../src/index.js';
import { FaultMedia } from '../../src/media/fault.js';
import { code } from '../helpers/errors.js';
import { withTempDir } from '../helpers/temp.js';

const MiB = 1024 * 1024;
const SMALL = { capacity: 16 * MiB, segmentSize: 64 * 1024 } as const;

async function withStore(body: (store: Store, media: FaultMedia) => Promise<void>, options: OpenOptions = {}): Promise<void> {
  await withTempDir(async (dir) => {
    const media = new FaultMedia(options.capacity ?? SMALL.capacity);
    const store = await open(dir, { ...SMALL, ...options, media });
    try {
      await body(store, media);
    } finally {
      await store.close();
    }
  });
}

const text = (b: Buffer | undefined): string | undefined => b?.toString('utf8');

test('put returns rising versions; get, getSync, getEntry, has and versionOf agree', async () => {
  await withStore(async (store) => {
    const kv = store.kv('users');
    const v1 = await kv.put('alice', 'one');
    const v2 = await kv.put('bob', Buffer.from('two'));
    assert.ok(v2 > v1, 'versions rise');
    assert.equal(text(await kv.get('alice')), 'one');
    assert.equal(text(kv.getSync('bob')), 'two');
    const entry = await kv.getEntry('alice');
    assert.deepEqual({ key: text(entry?.key), value: text(entry?.value), version: entry?.version, expiresAt: entry?.expiresAt }, {
      key: 'alice',
      value: 'one',
      version: v1,
      expiresAt: 0,
    });
    assert.equal(kv.has('alice'), true);
    assert.equal(kv.has('carol'), false);
    assert.equal(kv.versionOf('bob'), v2);
    assert.equal(await kv.get('carol'), undefined);
    assert.equal(kv.getSync('carol'), undefined);
    assert.deepEqual((await kv.getMany(['bob', 'nobody', 'alice'])).map(text), ['two', undefined, 'one']);
    const v3 = await kv.put('alice', 'uno');
    assert.equal(text(kv.getSync('alice')), 'uno');
    assert.equal(kv.versionOf('alice'), v3);
  });
});

test('string and byte keys are the same key when their bytes are equal; a returned value is the caller\'s own copy', async () => {
  await withStore(async (store) => {
    const kv = store.kv();
    await kv.put('é', 'x');
    assert.equal(text(kv.getSync(Buffer.from('é', 'utf8'))), 'x');
    const value = Buffer.from('abc');
    await kv.put(new Uint8Array([0, 255]), value);
    value[0] = 0x7a; // the store keeps its own copy
    const got = kv.getSync(new Uint8Array([0, 255]))!;
    assert.equal(text(got), 'abc');
    got[0] = 0x7a; // and hands out copies
    assert.equal(text(kv.getSync(new Uint8Array([0, 255]))), 'abc');
    assert.deepEqual(store.pools(), ['default']);
  });
});

test('ifVersion, ifAbsent and ifPresent guard puts and deletes; a failed one writes nothing', async () => {
  await withStore(async (store) => {
    const kv = store.kv();
    const v1 = await kv.put('k', 'a', { ifAbsent: true });
    await assert.rejects(kv.put('k', 'b', { ifAbsent: true }), code('ERR_CONDITION'));
    await assert.rejects(kv.put('other', 'b', { ifPresent: true }), code('ERR_CONDITION'));
    assert.equal(kv.has('other'), false);
    await assert.rejects(kv.put('k', 'b', { ifVersion: v1 + 100 }), (e: Error & { details?: Record<string, unknown> }) => {
      assert.equal((e as { code?: string }).code, 'ERR_CONDITION');
      assert.equal(e.details?.actualVersion, v1, 'the error says the actual version');
      return true;
    });
    const v2 = await kv.put('k', 'b', { ifVersion: v1 });
    assert.equal(text(kv.getSync('k')), 'b');
    await assert.rejects(kv.delete('k', { ifVersion: v1 }), code('ERR_CONDITION'));
    await assert.rejects(kv.delete('absent', { ifPresent: true }), code('ERR_CONDITION'));
    await kv.delete('absent'); // plain delete of an absent key is fine
    await kv.delete('k', { ifVersion: v2 });
    assert.equal(kv.has('k'), false);
    await assert.rejects(kv.put('k', 'c', { ifAbsent: true, ifPresent: true }), code('ERR_ARGUMENT'));
  });
});

test('conditions see earlier commits of the same group commit', async () => {
  await withStore(async (store) => {
    const kv = store.kv();
    const results = await Promise.allSettled([kv.put('k', '1', { ifAbsent: true }), kv.put('k', '2', { ifAbsent: true }), kv.put('k', '3', { ifAbsent: true })]);
    assert.deepEqual(results.map((r) => r.status), ['fulfilled', 'rejected', 'rejected'], 'only the first of three ifAbsent puts wins');
    assert.equal(text(kv.getSync('k')), '1');
  });
});

test('a key with a TTL reads as absent from the moment it expires, and its space returns', async () => {
  const clock = new ManualClock(1_000_000);
  await withStore(
    async (store) => {
      const kv = store.kv();
      await kv.put('short', 'x'.repeat(1000), { ttl: 1000 });
      await kv.put('long', 'y', { ttl: 100_000 });
      await kv.put('forever', 'z');
      assert.equal((await kv.getEntry('short'))?.expiresAt, 1_001_000);
      clock.advance(999);
      assert.equal(kv.has('short'), true);
      clock.advance(1);
      assert.equal(kv.has('short'), false, 'exact at the deadline');
      assert.equal(await kv.get('short'), undefined);
      assert.equal(kv.getSync('short'), undefined);
      assert.deepEqual([...kv.listSync()].map((e) => text(e.key)), ['forever', 'long']);
      assert.equal(kv.count(), 2);
      const stats = kv.stats();
      assert.equal(stats.expiredKeys, 1);
      assert.equal(stats.keys, 2);
      assert.ok(store.stats().expiredBytesReclaimed >= 1000, 'expired bytes are reclaimed without a copy');
      // An ifAbsent put sees an expired key as absent.
      await kv.put('short', 'again', { ifAbsent: true });
    },
    { clock },
  );
});

test('touch sets a new TTL on a present key and fails on an absent one', async () => {
  const clock = new ManualClock(5_000);
  await withStore(
    async (store) => {
      const kv = store.kv();
      const v = await kv.put('k', 'v', { ttl: 100 });
      await kv.touch('k', 10_000);
      clock.advance(500);
      assert.equal(text(kv.getSync('k')), 'v', 'still there after the old deadline');
      assert.equal(kv.versionOf('k'), v, 'touch keeps the version');
      await kv.touch('k', 0);
      clock.advance(1_000_000);
      assert.equal(kv.has('k'), true, 'ttl 0 means never expires');
      await assert.rejects(kv.touch('nope', 10), code('ERR_CONDITION'));
    },
    { clock },
  );
});

test('incr follows memcached: decimal unsigned 64-bit, wraps up, stops at 0 down, refuses non-numbers', async () => {
  await withStore(async (store) => {
    const kv = store.kv();
    await assert.rejects(kv.incr('n', 1), code('ERR_CONDITION'), 'an absent counter without initial');
    assert.equal((await kv.incr('n', 5, { initial: 10 })).value, 10n, 'initial is the value of a new counter');
    assert.equal((await kv.incr('n', 5)).value, 15n);
    assert.equal(text(kv.getSync('n')), '15');
    assert.equal((await kv.incr('n', -20)).value, 0n);
    await kv.put('max', '18446744073709551615');
    assert.equal((await kv.incr('max', 2)).value, 1n);
    await kv.put('padded', '42   ');
    assert.equal((await kv.incr('padded', 1n)).value, 43n);
    await kv.put('word', 'forty');
    await assert.rejects(kv.incr('word', 1), code('ERR_ARGUMENT'));
    assert.equal(text(kv.getSync('word')), 'forty', 'nothing written');
    await assert.rejects(kv.incr('n', 1.5), code('ERR_ARGUMENT'));
    await assert.rejects(kv.incr('n', 2n ** 64n), code('ERR_ARGUMENT'));
    const all = await Promise.all(Array.from({ length: 50 }, () => kv.incr('c', 1, { initial: 1 })));
    assert.equal(text(kv.getSync('c')), '50', 'concurrent increments all count');
    assert.equal(new Set(all.map((r) => r.value)).size, 50, 'each increment saw a distinct value');
  });
});

test('incr keeps the TTL of an existing counter and gives a new one its ttl', async () => {
  const clock = new ManualClock(0);
  await withStore(
    async (store) => {
      const kv = store.kv();
      await kv.put('n', '1', { ttl: 1000 });
      await kv.incr('n', 1, { ttl: 999_999 });
      assert.equal((await kv.getEntry('n'))?.expiresAt, 1000);
      await kv.incr('m', 1, { initial: 7, ttl: 50 });
      assert.equal((await kv.getEntry('m'))?.expiresAt, 50);
    },
    { clock },
  );
});

test('bad keys, values and options are refused with ERR_ARGUMENT or ERR_LIMIT and nothing is written', async () => {
  await withStore(async (store) => {
    const kv = store.kv();
    await assert.rejects(kv.put('', 'v'), code('ERR_ARGUMENT'));
    await assert.rejects(kv.put('x'.repeat(MAX_KEY_BYTES + 1), 'v'), code('ERR_LIMIT'));
    await kv.put('x'.repeat(MAX_KEY_BYTES), 'v');
    await assert.rejects(kv.put(42 as unknown as string, 'v'), code('ERR_ARGUMENT'));
    await assert.rejects(kv.put('k', { a: 1 } as unknown as string), code('ERR_ARGUMENT'));
    await assert.rejects(kv.put('k', Buffer.alloc(store.limits.maxValueBytes + 1)), code('ERR_LIMIT'));
    await assert.rejects(kv.put('k', 'v', { ttl: -1 }), code('ERR_ARGUMENT'));
    await assert.rejects(kv.put('k', 'v', { ifVersion: 0 }), code('ERR_ARGUMENT'));
    assert.throws(() => kv.getSync(''), code('ERR_ARGUMENT'));
    assert.throws(() => store.kv(''), code('ERR_ARGUMENT'));
    assert.throws(() => store.kv('p'.repeat(300)), code('ERR_LIMIT'));
    assert.equal(kv.has('k'), false);
    assert.throws(() => kv.listSync({ limit: -1 }).next(), code('ERR_ARGUMENT'));
    // Options given as null (or not an object) are refused with a code, not a TypeError.
    const none = null as unknown as Record<string, never>;
    await assert.rejects(kv.put('k', 'v', none), code('ERR_ARGUMENT'));
    await assert.rejects(kv.delete('k', none), code('ERR_ARGUMENT'));
    await assert.rejects(kv.incr('n', 1, none), code('ERR_ARGUMENT'));
    await assert.rejects(kv.update('k', () => 'v', none), code('ERR_ARGUMENT'));
    await assert.rejects(kv.put('k', 'v', 5 as unknown as Record<string, never>), code('ERR_ARGUMENT'));
    assert.equal(kv.has('k'), false);
    assert.equal(kv.has('n'), false);
  });
});

test('the largest value the store allows round-trips', async () => {
  await withStore(
    async (store) => {
      const big = Buffer.alloc(store.limits.maxValueBytes);
      for (let i = 0; i < big.length; i += 4096) big[i] = i & 0xff;
      await store.kv().put('big', big);
      assert.ok((await store.kv().get('big'))!.equals(big));
      assert.ok(store.kv().getSync('big')!.equals(big));
    },
    { capacity: 64 * MiB, segmentSize: 4 * MiB },
  );
});

test('list and listSync give entries in byte order within prefix, start, end, reverse and limit', async () => {
  await withStore(async (store) => {
    const kv = store.kv();
    const keys = ['a', 'ab', 'abc', 'abd', 'b', 'ba', 'c', '\u00ff'];
    for (const k of keys) await kv.put(k, `v:${k}`);
    await kv.put(Buffer.from([0xff, 0xff]), 'top');
    const listed = async (o: Parameters<typeof kv.list>[0]): Promise<string[]> => {
      const out: string[] = [];
      for await (const e of kv.list(o)) out.push(e.key.toString('latin1'));
      const sync = [...kv.listSync(o)].map((e) => e.key.toString('latin1'));
      assert.deepEqual(sync, out, 'listSync agrees with list');
      return out;
    };
    const utf = (s: string): string => Buffer.from(s, 'utf8').toString('latin1');
    assert.deepEqual(await listed({}), [...keys.map(utf), '\xff\xff'].sort());
    assert.deepEqual(await listed({ prefix: 'ab' }), ['ab', 'abc', 'abd']);
    assert.deepEqual(await listed({ prefix: 'ab', reverse: true }), ['abd', 'abc', 'ab']);
    assert.deepEqual(await listed({ start: 'ab', end: 'b' }), ['ab', 'abc', 'abd']);
    assert.deepEqual(await listed({ start: 'abc', limit: 2 }), ['abc', 'abd']);
    assert.deepEqual(await listed({ end: 'abc', reverse: true, limit: 2 }), ['ab', 'a']);
    assert.deepEqual(await listed({ prefix: Buffer.from([0xff]) }), ['\xff\xff']);
    assert.deepEqual(await listed({ start: 'c', end: 'b' }), []);
    assert.deepEqual(await listed({ prefix: 'zz' }), []);
    const first = (await kv.list({ prefix: 'abc' }).next()).value;
    assert.equal(first?.value.toString(), 'v:abc');
    assert.equal(kv.count(), 9);
    assert.equal(kv.count({ prefix: 'ab' }), 3);
    assert.equal(kv.count({ start: 'b', end: 'c' }), 2);
    const noValues = [...kv.listSync({ prefix: 'a', values: false })];
    assert.ok(noValues.every((e) => e.value.length === 0), 'values: false reads no value');
    assert.deepEqual([...store.kv('nothing').listSync()], []);
  });
});

test('an iteration sees the pool as it was when it started, while writes and deletes go on', async () => {
  await withStore(async (store) => {
    const kv = store.kv();
    const n = 2000;
    for (let i = 0; i < n; i += 100) {
      await Promise.all(Array.from({ length: 100 }, (_, j) => kv.put(`k${String(i + j).padStart(5, '0')}`, `old${i + j}`)));
    }
    const seen: string[] = [];
    let writes: Promise<unknown> | undefined;
    for await (const e of kv.list()) {
      if (seen.length === 10) {
        // Rewrite, delete and add keys all over the pool, and wait for it to land.
        const ops: Promise<unknown>[] = [];
        for (let i = 0; i < n; i += 7) ops.push(kv.put(`k${String(i).padStart(5, '0')}`, `new${i}`));
        for (let i = 3; i < n; i += 11) ops.push(kv.delete(`k${String(i).padStart(5, '0')}`));
        for (let i = 0; i < 50; i++) ops.push(kv.put(`k${String(i).padStart(5, '0')}x`, 'added'));
        writes = Promise.all(ops);
        await writes;
      }
      seen.push(`${e.key.toString()}=${e.value.toString()}`);
    }
    await writes;
    assert.equal(seen.length, n, 'no key added or lost during the iteration');
    for (let i = 0; i < n; i++) assert.equal(seen[i], `k${String(i).padStart(5, '0')}=old${i}`);
    assert.equal(text(kv.getSync('k00007')), 'new7', 'the writes did land');
  });
});

test('a listSync iterator kept across awaits sees the pool as it was when it started', async () => {
  await withStore(async (store) => {
    const kv = store.kv();
    const n = 1000;
    await Promise.all(Array.from({ length: n }, (_, i) => kv.put(`k${String(i).padStart(5, '0')}`, `old${i}`)));
    for (const reverse of [false, true]) {
      const iterator = kv.listSync({ reverse });
      const seen: string[] = [];
      for (let i = 0; i < 10; i++) {
        const r = iterator.next();
        assert.ok(r.done !== true);
        seen.push(`${r.value.key.toString()}=${r.value.value.toString()}`);
      }
      const ops: Promise<unknown>[] = [];
      for (let i = 0; i < n; i += 7) ops.push(kv.put(`k${String(i).padStart(5, '0')}`, `new${i}`));
      for (let i = 3; i < n; i += 11) ops.push(kv.delete(`k${String(i).padStart(5, '0')}`));
      for (let i = 0; i < 50; i++) ops.push(kv.put(`k${String(i).padStart(5, '0')}x`, 'added'));
      await Promise.all(ops);
      for (const e of iterator) seen.push(`${e.key.toString()}=${e.value.toString()}`);
      const want = Array.from({ length: n }, (_, i) => `k${String(i).padStart(5, '0')}=old${i}`);
      assert.deepEqual(seen, reverse ? want.reverse() : want, `reverse ${reverse}: no key added, lost or changed during the iteration`);
      // Put the pool back as it was for the next pass.
      await Promise.all(Array.from({ length: n }, (_, i) => kv.put(`k${String(i).padStart(5, '0')}`, `old${i}`)));
      await Promise.all(Array.from({ length: 50 }, (_, i) => kv.delete(`k${String(i).padStart(5, '0')}x`)));
    }
  });
});

test('an iteration stays readable while the cleaner reuses space under it', async () => {
  await withStore(
    async (store) => {
      const kv = store.kv();
      const value = (i: number, round: number): string => `${round}:${i}:`.padEnd(900, '.');
      for (let i = 0; i < 400; i++) await kv.put(`k${String(i).padStart(4, '0')}`, value(i, 0));
      const iterator = kv.list();
      const first = await iterator.next();
      assert.equal(first.value?.value.toString(), value(0, 0));
      for (let round = 1; round <= 12; round++) {
        await Promise.all(Array.from({ length: 400 }, (_, i) => kv.put(`k${String(i).padStart(4, '0')}`, value(i, round))));
      }
      assert.ok(store.stats().segmentsCleaned > 0 || store.stats().checkpoints > 0, 'the cleaner ran');
      let i = 1;
      for (let r = await iterator.next(); !r.done; r = await iterator.next(), i++) {
        assert.equal(r.value.value.toString(), value(i, 0), `key ${i} reads as it was when the iteration began`);
      }
      assert.equal(i, 400);
    },
    { capacity: 8 * MiB, segmentSize: 64 * 1024, checkpointIntervalBytes: 256 * 1024 },
  );
});

test('pools are separate, listed, and dropped with their keys and space', async () => {
  await withStore(async (store) => {
    await store.kv('b').put('k', 'in b');
    await store.kv('a').put('k', 'in a');
    for (let i = 0; i < 100; i++) await store.kv('big').put(`k${i}`, Buffer.alloc(4000, i));
    assert.deepEqual(store.pools(), ['a', 'b', 'big']);
    assert.equal(text(store.kv('a').getSync('k')), 'in a');
    const live = store.stats().liveBytes;
    await store.dropPool('big');
    assert.deepEqual(store.pools(), ['a', 'b']);
    assert.equal(store.kv('big').has('k1'), false);
    assert.ok(store.stats().liveBytes < live - 400_000, 'the dropped pool\'s space returns');
    await store.kv('big').put('k1', 'new');
    assert.equal(store.kv('big').count(), 1, 'a pool of the same name starts empty');
    await store.dropPool('never-existed');
    const stats = store.kv('a').stats();
    assert.equal(stats.keys, 1);
    assert.equal(stats.liveBytes, 1 + 4);
    assert.ok(stats.indexBytes > 0);
  });
});

test('keys, pools, versions and TTLs survive close and reopen, with and without a checkpoint', async () => {
  await withTempDir(async (dir) => {
    const clock = new ManualClock(1000);
    let store = await open(dir, { ...SMALL, clock });
    const v = await store.kv('p').put('a', 'A', { ttl: 5000 });
    await store.kv('q').put('b', 'B');
    await store.kv('q').incr('n', 3, { initial: 3 });
    await store.kv('gone').put('x', 'x');
    await store.dropPool('gone');
    await store.checkpoint();
    await store.kv('p').put('c', 'C');
    await store.kv('q').delete('b');
    await store.close();
    store = await open(dir, { clock });
    assert.deepEqual(store.pools(), ['p', 'q']);
    assert.equal(text(store.kv('p').getSync('a')), 'A');
    assert.equal(store.kv('p').versionOf('a'), v);
    assert.equal((await store.kv('p').getEntry('a'))?.expiresAt, 6000);
    assert.equal(text(store.kv('p').getSync('c')), 'C');
    assert.equal(store.kv('q').has('b'), false);
    assert.equal(text(store.kv('q').getSync('n')), '3');
    clock.advance(5000);
    assert.equal(store.kv('p').has('a'), false);
    const next = await store.kv('p').put('d', 'D');
    assert.ok(next > v, 'versions keep rising after a reopen');
    await store.close();
  });
});

test('the cleaner moves live keys and the store stays within capacity under kv churn', async () => {
  await withStore(
    async (store) => {
      const kv = store.kv();
      const slots = 1500; // about 2 MB live: half the store
      const latest = new Map<number, number>();
      for (let round = 0; round < 12; round++) {
        // Most slots change each round, some stay: segments end up partly live.
        const writes: Promise<number>[] = [];
        for (let i = 0; i < slots; i++) {
          if (round > 0 && (i * 7 + round) % 5 === 0) continue;
          if (round > 0 && i % 10 === 0) continue;
          latest.set(i, round);
          writes.push(kv.put(`slot${i}`, Buffer.alloc(1000 + (i % 7) * 100, round)));
        }
        await Promise.all(writes);
      }
      const stats = store.stats();
      assert.ok(stats.segmentsCleaned > 0, 'the cleaner ran');
      for (let i = 0; i < slots; i++) {
        const v = kv.getSync(`slot${i}`)!;
        assert.equal(v.length, 1000 + (i % 7) * 100);
        assert.equal(v[0], latest.get(i));
      }
    },
    { capacity: 4 * MiB, segmentSize: 64 * 1024, checkpointIntervalBytes: 256 * 1024 },
  );
});

test('a full store refuses a put with ERR_NO_SPACE, keeps every key, and takes puts again after deletes', async () => {
  await withStore(
    async (store) => {
      const kv = store.kv();
      let n = 0;
      let error: unknown;
      for (;;) {
        try {
          await kv.put(`k${n}`, Buffer.alloc(8000, n & 0xff));
          n++;
        } catch (e) {
          error = e;
          break;
        }
      }
      assert.equal((error as { code?: string }).code, 'ERR_NO_SPACE');
      assert.ok(n > 100, `took ${n} puts of 8 KB before filling up`);
      for (let i = 0; i < n; i++) assert.equal(kv.getSync(`k${i}`)![0], i & 0xff);
      for (let i = 0; i < n; i += 2) await kv.delete(`k${i}`);
      for (let i = 0; i < n / 4; i++) await kv.put(`again${i}`, Buffer.alloc(8000, 1));
    },
    { capacity: 4 * MiB, segmentSize: 64 * 1024 },
  );
});

test('a closed store refuses kv calls with ERR_CLOSED', async () => {
  await withTempDir(async (dir) => {
    const store = await open(dir, SMALL);
    const kv = store.kv();
    await kv.put('k', 'v');
    await store.close();
    await assert.rejects(kv.put('k', 'v'), code('ERR_CLOSED'));
    assert.throws(() => kv.getSync('k'), code('ERR_CLOSED'));
    await assert.rejects(kv.get('k'), code('ERR_CLOSED'));
  });
});

test('update replaces a value with what a function makes of it, atomically, and a throwing function writes nothing', async () => {
  const clock = new ManualClock(0);
  await withStore(
    async (store) => {
      const kv = store.kv();
      const appends = await Promise.all(
        Array.from({ length: 20 }, (_, i) => kv.update('log', (cur) => Buffer.concat([cur ?? Buffer.alloc(0), Buffer.from(`${i},`)]))),
      );
      assert.equal(new Set(appends).size, 20, 'each update is its own commit');
      const parts = kv.getSync('log')!.toString().split(',').filter(Boolean).map(Number).sort((a, b) => a - b);
      assert.deepEqual(parts, Array.from({ length: 20 }, (_, i) => i), 'no update lost another');
      await kv.put('t', 'x', { ttl: 500 });
      await kv.update('t', (cur) => `${cur}y`);
      assert.equal((await kv.getEntry('t'))?.expiresAt, 500, 'the key keeps its TTL');
      await kv.update('t', (cur) => `${cur}z`, { ttl: 900 });
      assert.equal((await kv.getEntry('t'))?.expiresAt, 900);
      await assert.rejects(
        kv.update('t', () => {
          throw new Error('nope');
        }),
        /nope/,
      );
      await assert.rejects(kv.update('t', () => 42 as unknown as string), code('ERR_ARGUMENT'));
      assert.equal(kv.getSync('t')?.toString(), 'xyz', 'a refused update writes nothing');
      await kv.put('after', 'fine');
      assert.equal(kv.getSync('after')?.toString(), 'fine', 'the store goes on after a throwing update');
    },
    { clock },
  );
});

test('a store of few segments filled to the brim still takes deletes, and room comes back', async () => {
  await withStore(
    async (store) => {
      const kv = store.kv();
      const value = Buffer.alloc(60_000, 1);
      let n = 0;
      for (;; n++) {
        try {
          await kv.put(`k${n}`, value);
        } catch (error) {
          assert.equal((error as { code?: string }).code, 'ERR_NO_SPACE');
          break;
        }
      }
      // Every segment but the reserve is nearly full: a delete's small record still needs a
      // fresh head segment, which commits that free space may take from the reserve.
      let deleted = 0;
      let stored = false;
      for (; deleted < n && !stored; deleted++) {
        await kv.delete(`k${deleted}`);
        try {
          await kv.put('again', value);
          stored = true;
        } catch (error) {
          assert.equal((error as { code?: string }).code, 'ERR_NO_SPACE');
        }
      }
      assert.ok(stored && deleted < n / 2, `a put fit after ${deleted} of ${n} items were deleted`);
    },
    { capacity: 40 * MiB, segmentSize: 4 * MiB },
  );
});
