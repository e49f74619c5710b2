// The stream face's API behaviour: appends (single, arrays, concurrent: numbers in call
// order), reads, persistence across reopen, trimBefore, retention by count, bytes and age
// (count and bytes riding along in the appends' own commits), followers of the tail
// (abort, close, trimmed records), appendSync under durability 'none', failures that must
// not leave a gap, the reserved pool names, drops and stats.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { DEFAULT_READ_LIMIT, MAX_ATOMIC_OPS, ManualClock, isAtomioError, type OpenOptions, type Store, type StreamRecord } from '../../src/index.js';
import { FaultStore } from '../helpers/store.js';
import { code, outcome } from '../helpers/errors.js';

const MiB = 1024 * 1024;
const SMALL = { capacity: 16 * MiB, segmentSize: 64 * 1024 } as const;

async function withStore(body: (store: Store, reopen: () => Promise<Store>) => Promise<void>, options: Omit<OpenOptions, 'media'> = {}): Promise<void> {
  const fault = await FaultStore.create({ ...SMALL, ...options, capacity: options.capacity ?? SMALL.capacity });
  try {
    await body(fault.store, () => fault.closeAndReopen());
  } finally {
    await fault.dispose();
  }
}

/** A promise's rejection, caught at once (so that it is never unhandled), for a later assert. */
function settledLater(p: Promise<unknown>): Promise<unknown> {
  return p.then(
    () => undefined,
    (error: unknown) => error,
  );
}

const texts = (records: StreamRecord[]): string[] => records.map((r) => r.value.toString('utf8'));
const seqs = (records: StreamRecord[]): number[] => records.map((r) => r.seq);

test('appends get sequence numbers in call order, reads return them in order, reopen continues after the last', async () => {
  await withStore(async (store, reopen) => {
    let s = store.stream('events');
    assert.equal(s.first, 1, 'an empty new stream starts at 1');
    assert.equal(s.last, 0);
    const got = await Promise.all([s.append('a'), s.append(['b', 'c']), s.append(Buffer.from('d')), s.append([]).catch((e: unknown) => e)]);
    assert.deepEqual(got.slice(0, 3), [1, [2, 3], 4], 'numbers follow call order, an array takes consecutive numbers');
    assert.ok(isAtomioError(got[3], 'ERR_ARGUMENT'), 'an empty array is refused');
    // Many concurrent appends over several turns: numbers still follow call order.
    const pending: Promise<number>[] = [];
    for (let i = 0; i < 300; i++) {
      pending.push(s.append(`r${i}`));
      if (i % 37 === 0) await nextTurn();
    }
    assert.deepEqual(await Promise.all(pending), Array.from({ length: 300 }, (_, i) => 5 + i));
    assert.equal(s.last, 304);
    const all = await s.read(0, { limit: 10_000 });
    assert.deepEqual(seqs(all), Array.from({ length: 304 }, (_, i) => i + 1), 'read sees every record, no gap');
    assert.deepEqual(texts(all.slice(0, 4)), ['a', 'b', 'c', 'd']);
    assert.deepEqual(texts(await s.read(100, { limit: 2 })), ['r95', 'r96'], 'read from a number with a limit');
    assert.deepEqual(seqs(s.readSync(303)), [303, 304], 'readSync agrees');
    assert.equal((await s.get(4))?.value.toString(), 'd');
    assert.equal(await s.get(305), undefined);
    assert.ok(Math.abs((await s.get(1))!.time - Date.now()) < 60_000, 'records carry their append time');

    store = await reopen();
    s = store.stream('events');
    assert.deepEqual([s.first, s.last], [1, 304], 'positions survive a reopen');
    assert.equal(await s.append('after'), 305, 'numbering continues after the last record');
    assert.deepEqual(store.streams(), ['events']);
  });
});

test('appends of one turn, single and arrays, of many sizes, are stored byte for byte in call order', async () => {
  await withStore(
    async (store, reopen) => {
      let s = store.stream('sizes');
      // Over 64 KiB in one turn (the bytes of a group outgrow their first buffer), mixing single
      // records, arrays, strings and bytes, in two turns: one with nothing in flight (the group,
      // 154 records, at least SPLIT_MIN_RECORDS, is split in two commits) and one behind it.
      const commitsBefore = store.stats().commits;
      const expected: Buffer[] = [];
      const calls: { first: number; count: number; many: boolean }[] = [];
      const pending: Promise<number | number[]>[] = [];
      for (let turn = 0; turn < 2; turn++) {
        for (let i = 0; i < 120; i++) {
          const size = (i * 977 + turn * 31) % 1500;
          const bytes = Buffer.alloc(size, (i + turn) % 251);
          if (i % 7 === 3) {
            const list = [bytes, `text ${i}`, Buffer.alloc(0)];
            calls.push({ first: expected.length + 1, count: 3, many: true });
            expected.push(bytes, Buffer.from(`text ${i}`), Buffer.alloc(0));
            pending.push(s.append(list));
          } else if (i % 5 === 0) {
            calls.push({ first: expected.length + 1, count: 1, many: false });
            expected.push(Buffer.from(`é${'x'.repeat(size)}`));
            pending.push(s.append(`é${'x'.repeat(size)}`));
          } else {
            calls.push({ first: expected.length + 1, count: 1, many: false });
            expected.push(bytes);
            pending.push(s.append(bytes));
          }
        }
        if (turn === 0) await nextTurn();
      }
      const got = await Promise.all(pending);
      assert.ok(store.stats().commits - commitsBefore >= 3, 'the first turn\'s large group went as two commits');
      got.forEach((g, i) => {
        const c = calls[i]!;
        assert.deepEqual(g, c.many ? Array.from({ length: c.count }, (_, j) => c.first + j) : c.first, `append ${i}'s numbers`);
      });
      const check = async (label: string): Promise<void> => {
        const all = await s.read(0, { limit: 10_000 });
        assert.equal(all.length, expected.length, `${label}: every record`);
        all.forEach((r, i) => assert.ok(r.value.equals(expected[i]!), `${label}: record ${i + 1}'s bytes`));
      };
      await check('read back');
      store = await reopen();
      s = store.stream('sizes');
      await check('after reopen');
    },
    { capacity: 64 * MiB, segmentSize: 4 * MiB },
  );
});

test('trimBefore deletes a prefix, never records in flight; an emptied stream keeps its numbering across reopen', async () => {
  await withStore(async (store, reopen) => {
    let s = store.stream('t');
    // One run per append awaited alone: more runs than one trim commit deletes.
    const n = MAX_ATOMIC_OPS * 2 + 50;
    for (let i = 1; i <= n; i++) await s.append(`v${i}`);
    assert.equal(s.last, n);
    assert.equal(await s.trimBefore(10), 10);
    assert.deepEqual([s.first, s.stats().records], [10, n - 9]);
    assert.deepEqual(seqs(await s.read(0, { limit: 2 })), [10, 11], 'a read from before the first starts at the first');
    const inFlight = s.append('late');
    assert.equal(await s.trimBefore(n + 100), n + 1, 'a trim stops after the last acknowledged record');
    assert.equal(await inFlight, n + 1, 'the append in flight landed');
    assert.deepEqual(seqs(await s.read(0)), [n + 1], 'and was not trimmed');
    assert.equal(await s.trimBefore(n + 2), n + 2);
    assert.deepEqual([s.first, s.last, s.stats().records], [n + 2, n + 1, 0], 'empty: first is last + 1');
    store = await reopen();
    s = store.stream('t');
    assert.deepEqual([s.first, s.last], [n + 2, n + 1], 'an emptied stream remembers where it was');
    assert.equal(await s.append('next'), n + 2);
    await assert.rejects(s.trimBefore(-1), code('ERR_ARGUMENT'));
  });
});

test('a trim that cuts through a run hides its older records, across reopen; appends of one turn share a run', async () => {
  await withStore(async (store, reopen) => {
    let s = store.stream('cut');
    const commits = store.stats().commits;
    const seqsOf = await Promise.all(Array.from({ length: 10 }, (_, i) => s.append(`r${i + 1}`)));
    assert.deepEqual(seqsOf, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    assert.ok(store.stats().commits - commits <= 2, 'appends made in one turn go to the store as one or two commits');
    await s.append(['r11', 'r12']);
    assert.equal(await s.trimBefore(5), 5);
    const check = async (label: string): Promise<void> => {
      assert.deepEqual([s.first, s.last, s.stats().records], [5, 12, 8], `${label}: first, last, records`);
      assert.deepEqual(texts(await s.read(0, { limit: 3 })), ['r5', 'r6', 'r7'], `${label}: a read starts at the first kept record`);
      assert.deepEqual(texts(s.readSync(11)), ['r11', 'r12'], `${label}: a read from inside the last run`);
      assert.equal(await s.get(4), undefined, `${label}: a trimmed record of a kept run is gone`);
      assert.equal((await s.get(9))?.value.toString(), 'r9', `${label}: get finds a record inside a run`);
      assert.equal(await s.get(13), undefined, `${label}: nothing past the last`);
    };
    await check('after the trim');
    store = await reopen();
    s = store.stream('cut');
    await check('after reopen');
    assert.equal(await s.trimBefore(11), 11, 'a trim that drops the cut run');
    assert.deepEqual(texts(await s.read(0)), ['r11', 'r12']);
  });
});

test('the trim commit that deletes the newest run also moves firstSeq, so numbering survives a crash after it', async () => {
  await withStore(async (store, reopen) => {
    let s = store.stream('edge');
    // Exactly as many runs as one trim commit deletes.
    for (let i = 1; i < MAX_ATOMIC_OPS; i++) await s.append(`v${i}`);
    const commits = store.stats().commits;
    assert.equal(await s.trimBefore(MAX_ATOMIC_OPS), MAX_ATOMIC_OPS);
    assert.equal(store.stats().commits - commits, 1, 'one commit: the deletes and firstSeq together');
    store = await reopen();
    s = store.stream('edge');
    assert.deepEqual([s.first, s.last], [MAX_ATOMIC_OPS, MAX_ATOMIC_OPS - 1]);
    assert.equal(await s.append('next'), MAX_ATOMIC_OPS, 'no number is given twice');
  });
});

test('retention by count and by bytes runs after appends and on retain(); settings persist', async () => {
  await withStore(async (store, reopen) => {
    let s = store.stream('r');
    for (let i = 1; i <= 100; i++) await s.append(`record ${i}`);
    await s.retain({ count: 30 });
    assert.deepEqual([s.first, s.last], [71, 100], 'retain() applies a count limit at once');
    for (let i = 0; i < 20; i++) await s.append(`more ${i}`);
    await s.retain();
    assert.deepEqual([s.first, s.last], [91, 120], 'retention keeps applying as appends go on');
    const per = s.stats().bytes / s.stats().records;
    await s.retain({ count: 0, bytes: Math.floor(per * 10) });
    assert.equal(s.stats().records, 10, 'a byte limit keeps the newest records that fit');
    assert.ok(s.stats().bytes <= per * 10);
    assert.deepEqual(s.retention(), { count: 0, bytes: Math.floor(per * 10), age: 0 });
    store = await reopen();
    s = store.stream('r');
    assert.deepEqual(s.retention(), { count: 0, bytes: Math.floor(per * 10), age: 0 }, 'retention settings survive a reopen');
    for (let i = 0; i < 5; i++) await s.append(`again ${i}`);
    await s.retain();
    assert.equal(s.stats().records, 10);
    assert.equal(s.last, 125);
    await assert.rejects(s.retain({ count: -1 }), code('ERR_ARGUMENT'));
  });
});

test('count and bytes limits apply after appends, without a call to retain()', async () => {
  await withStore(async (store) => {
    const s = store.stream('background');
    await s.retain({ count: 10 });
    for (let i = 1; i <= 40; i++) await s.append(`record ${i}`);
    // Background retention runs a turn after the commit that went past the limit, then commits.
    for (let turn = 0; turn < 1000 && s.first !== 31; turn++) await nextTurn();
    assert.deepEqual([s.first, s.last], [31, 40], 'the newest 10 records are kept');
    const per = s.stats().bytes / s.stats().records;
    await s.retain({ count: 0, bytes: Math.floor(per * 5) });
    for (let i = 41; i <= 60; i++) await s.append(`record ${i}`);
    for (let turn = 0; turn < 1000 && s.first !== 56; turn++) await nextTurn();
    assert.deepEqual([s.first, s.last], [56, 60], 'the newest records that fit the byte limit are kept');
  });
});

test('a stream at its count limit trims in its appends’ own commits: one commit per group, the limit exact when they resolve', async () => {
  await withStore(async (store, reopen) => {
    let s = store.stream('steady');
    await s.retain({ count: 300 });
    const group = (n: number, tag: string): Promise<number[]> => Promise.all(Array.from({ length: n }, (_, i) => s.append(`${tag}.${i}`)));
    for (let g = 0; g < 8; g++) await group(64, `fill${g}`);
    const before = store.stats().commits;
    for (let g = 0; g < 20; g++) {
      const got = await group(64, `g${g}`);
      assert.equal(got.length, 64);
      assert.deepEqual([s.first, s.last], [s.last - 299, got[63]], `after group ${g}: the newest 300 records are kept, trimmed in the same commit`);
    }
    // Retention in commits of its own would double this (and, at 64 appends in flight, send
    // every write to a thread: two commits queued together never go inline).
    assert.equal(store.stats().commits - before, 20, 'one commit per group of appends, retention included');
    const last = s.last;
    const records = await s.read(0, { limit: 1000 });
    assert.deepEqual(seqs(records), Array.from({ length: 300 }, (_, i) => last - 299 + i), 'reads see exactly first … last');
    store = await reopen();
    s = store.stream('steady');
    assert.deepEqual([s.first, s.last], [last - 299, last], 'the cut survives a reopen');
    assert.deepEqual(seqs(await s.read(0, { limit: 1000 })), seqs(records));
  });
});

test('records of the largest size still fit their commit when retention rides along with it', async () => {
  await withStore(async (store) => {
    const s = store.stream('full-size');
    const over = await outcome(s.append(Buffer.alloc(store.limits.maxValueBytes + 1)));
    assert.ok(!over.ok && over.code === 'ERR_LIMIT');
    const limit = (over.error as { details: { limit: number } }).details.limit;
    for (let i = 1; i <= 3; i++) await s.append(Buffer.alloc(limit, i));
    await s.retain({ count: 1 });
    assert.deepEqual([s.first, s.last], [3, 3]);
    for (let i = 4; i <= 12; i++) {
      // Each commit carries the run of one record of the limit, the delete of the run before and the metadata.
      assert.equal(await s.append(Buffer.alloc(limit, i)), i, `a record of the stated limit, ${limit} bytes, is taken with retention at count 1`);
      assert.deepEqual([s.first, s.last], [i, i]);
    }
    assert.equal((await s.get(12))?.value.length, limit);
  });
});

test('retention riding along with many runs in flight (groups split in two) keeps first … last whole and within a byte limit', async () => {
  await withStore(async (store, reopen) => {
    let s = store.stream('split');
    for (let i = 0; i < 50; i++) await s.append(`warm ${i}`);
    const per = s.stats().bytes / s.stats().records;
    const limit = Math.floor(per * 1000);
    await s.retain({ bytes: limit });
    for (let g = 0; g < 12; g++) {
      // 300 appends in one turn: a group of 128 records or more goes as several commits, in flight together.
      const got = await Promise.all(Array.from({ length: 300 }, (_, i) => s.append(`g${g} r${i} ${'x'.repeat(i % 7)}`)));
      assert.equal(got[299], s.last);
      const records = await s.read(0, { limit: 5000 });
      assert.deepEqual(seqs(records), Array.from({ length: s.last - s.first + 1 }, (_, i) => s.first + i), `after group ${g}: first … last with no gap`);
    }
    await s.retain();
    assert.ok(s.stats().bytes <= limit, `kept ${s.stats().bytes} bytes, limit ${limit}`);
    const kept = [s.first, s.last];
    store = await reopen();
    s = store.stream('split');
    assert.deepEqual([s.first, s.last], kept, 'first and last survive a reopen');
    assert.equal((await s.read(0, { limit: 5000 })).length, kept[1]! - kept[0]! + 1);
  });
});

test('retention by age follows the store clock', async () => {
  const clock = new ManualClock();
  await withStore(
    async (store) => {
      const s = store.stream('aged');
      for (let i = 0; i < 10; i++) {
        await s.append(`t${i}`);
        clock.advance(1000);
      }
      // Records appended at 0, 1000, …, 9000 ms; now is 10000.
      await s.retain({ age: 4500 });
      assert.deepEqual(seqs(await s.read(0)), [7, 8, 9, 10], 'records older than the age limit (appended before 5500 ms) are gone');
      clock.advance(100_000);
      await s.retain();
      assert.deepEqual([s.first, s.last, s.stats().records], [11, 10, 0], 'all records aged out');
      assert.equal(await s.append('fresh'), 11);
    },
    { clock },
  );
});

test('retention by age keeps a record appended exactly age ms ago, as a region keeps such a version', async () => {
  const clock = new ManualClock();
  await withStore(
    async (store) => {
      const s = store.stream('edge');
      await s.append('old');
      clock.advance(1000);
      await s.append('new');
      await s.retain({ age: 1000 });
      assert.deepEqual(seqs(await s.read(0)), [1, 2], 'appended 1000 ms ago: at most age ago, kept');
      clock.advance(1);
      await s.retain();
      assert.deepEqual(seqs(await s.read(0)), [2], 'one ms later it goes');
      const r = await store.region('edge', { size: 4096 });
      r.buffer[0] = 1;
      await r.commit();
      clock.advance(1000);
      r.buffer[0] = 2;
      await r.commit();
      await r.retain({ age: 1000 });
      assert.deepEqual(r.versions().map((v) => v.version), [1, 2], 'the region keeps its version of that age too');
    },
    { clock },
  );
});

test('a tail follower sees old and new records in order, skips trimmed ones, and ends on abort or close', async () => {
  await withStore(async (store) => {
    const s = store.stream('f');
    await s.append(['1', '2', '3']);
    const controller = new AbortController();
    const seen: number[] = [];
    const follower = settledLater(
      (async () => {
        for await (const r of s.tail(2, { signal: controller.signal })) {
          seen.push(r.seq);
          if (r.seq === 8) controller.abort();
        }
      })(),
    );
    for (let i = 4; i <= 9; i++) {
      await s.append(String(i));
      await nextTurn();
    }
    assert.equal((await follower as Error | undefined)?.name, 'AbortError', 'abort ends the loop with an AbortError');
    assert.deepEqual(seen, [2, 3, 4, 5, 6, 7, 8]);

    // Records trimmed before the follower reached them are skipped.
    const late: number[] = [];
    await s.trimBefore(6);
    for await (const r of s.tail(1)) {
      late.push(r.seq);
      if (r.seq === 9) break;
    }
    assert.deepEqual(late, [6, 7, 8, 9], 'a follower starts at the oldest kept record');

    // A follower waiting for records ends with ERR_CLOSED when the store closes.
    const waiting = settledLater(
      (async () => {
        for await (const r of s.tail(s.last + 1)) void r;
      })(),
    );
    await nextTurn();
    await store.close();
    assert.ok(isAtomioError(await waiting, 'ERR_CLOSED'), 'a waiting follower ends with ERR_CLOSED when the store closes');
  });
});

test('appendSync hands out numbers at once on durability none, and is refused on full', async () => {
  await withStore(async (store) => {
    assert.throws(() => store.stream('x').appendSync('a'), code('ERR_ARGUMENT'));
  });
  await withStore(
    async (store, reopen) => {
      let s = store.stream('fast');
      const got: (number | number[])[] = [];
      for (let i = 0; i < 50; i++) got.push(s.appendSync(`s${i}`));
      got.push(s.appendSync(['x', 'y']));
      const asyncSeq = s.append('async');
      got.push(s.appendSync('z'));
      assert.deepEqual(got, [...Array.from({ length: 50 }, (_, i) => i + 1), [51, 52], 54]);
      assert.equal(await asyncSeq, 53, 'append and appendSync share one numbering in call order');
      await s.flush();
      assert.deepEqual(seqs(await s.read(0)), Array.from({ length: 54 }, (_, i) => i + 1));
      store = await reopen();
      s = store.stream('fast');
      assert.equal(s.last, 54, 'flushed appends survive');
    },
    { durability: 'none', flushIntervalMs: 60_000 },
  );
});

test('an append that fails takes those queued behind it down: acknowledged numbers never skip one', async () => {
  await withStore(
    async (store) => {
      const s = store.stream('tight');
      await s.append('first');
      // Fill the store until a large record no longer fits but small ones still would.
      const filler = store.kv('filler');
      const chunk = Buffer.alloc(20_000, 1);
      for (let i = 0; ; i++) {
        const r = await outcome(filler.put(`k${i}`, chunk));
        if (!r.ok) break;
      }
      const stats = store.stats();
      const room = stats.usableBytes - stats.liveBytes;
      assert.ok(room > 2000 && room < 50_000, `the store is nearly full, with room for small records (${room} bytes of room)`);
      // Three appends in three turns: separate commits queued together.
      const big = s.append(Buffer.alloc(room + 1000, 2));
      await Promise.resolve();
      const small1 = s.append('small 1');
      await Promise.resolve();
      const small2 = s.append('small 2');
      const results = await Promise.all([outcome(big), outcome(small1), outcome(small2)]);
      assert.equal(results[0].ok ? 'ok' : results[0].code, 'ERR_NO_SPACE', 'the large append does not fit');
      for (const r of results.slice(1)) {
        assert.equal(r.ok ? 'ok' : r.code, 'ERR_NO_SPACE', 'appends queued behind a failed one fail with its code');
      }
      assert.match((results[1] as { error: Error }).error.message, /queued behind it fail too/);
      assert.deepEqual(seqs(await s.read(0)), [1], 'nothing after the failed append was written');
      assert.equal(await s.append('small 3'), 2, 'numbering resumes after the last record written');
      assert.deepEqual(texts(await s.read(0)), ['first', 'small 3']);
    },
    { capacity: 4 * MiB },
  );
});

test('stream pools are reserved: kv, atomic batches and pools() cannot see or touch them', async () => {
  await withStore(async (store) => {
    await store.stream('hidden').append('x');
    await store.kv('visible').put('k', 'v');
    assert.deepEqual(store.pools(), ['visible'], 'pools() lists kv pools only');
    assert.deepEqual(store.streams(), ['hidden']);
    assert.throws(() => store.kv('\u0000stream:hidden'), code('ERR_ARGUMENT'));
    assert.throws(() => store.atomic().put('\u0000stream:hidden', 'k', 'v'), code('ERR_ARGUMENT'));
    await assert.rejects(store.dropPool('\u0000stream:hidden'), code('ERR_ARGUMENT'));
    const snap = await store.snapshot();
    assert.deepEqual(snap.pools(), ['visible'], 'a snapshot lists kv pools only');
    snap.release();
    assert.throws(() => store.stream(''), code('ERR_ARGUMENT'));
    assert.throws(() => store.stream('x'.repeat(300)), code('ERR_LIMIT'));
  });
});

test('append limits, stats and dropStream', async () => {
  await withStore(async (store) => {
    const s = store.stream('d');
    await assert.rejects(s.append(Array.from({ length: MAX_ATOMIC_OPS + 1 }, () => 'r')), code('ERR_LIMIT'));
    await assert.rejects(s.append(Buffer.alloc(store.limits.maxValueBytes)), code('ERR_LIMIT'));
    await assert.rejects(s.append(42 as unknown as string), code('ERR_ARGUMENT'));
    assert.equal(await s.append('ok'), 1, 'refused appends take no number');
    await s.append(['a', 'b']);
    const stats = s.stats();
    assert.deepEqual({ first: stats.first, last: stats.last, records: stats.records, inFlight: stats.inFlight }, { first: 1, last: 3, records: 3, inFlight: 0 });
    assert.equal(stats.bytes, 2 * 12 + 3 * 10 + 4, 'bytes: a key per run (two appends), time and length per record, record bytes');
    assert.ok(stats.appendRate > 0, 'the append rate counts recent appends');
    await s.append(Array.from({ length: MAX_ATOMIC_OPS }, () => 'x'));
    assert.equal((await s.read(0)).length, DEFAULT_READ_LIMIT, 'a read without a limit returns at most DEFAULT_READ_LIMIT records');
    const follower = settledLater(
      (async () => {
        for await (const r of s.tail(s.last + 1)) void r;
      })(),
    );
    await nextTurn();
    await store.dropStream('d');
    assert.ok(isAtomioError(await follower, 'ERR_CLOSED'), 'followers of a dropped stream end with ERR_CLOSED');
    assert.throws(() => s.stats(), code('ERR_CLOSED'));
    assert.deepEqual(store.streams(), []);
    const again = store.stream('d');
    assert.equal(await again.append('new'), 1, 'a dropped stream starts again from 1');
  });
});

test('an append made after dropStream() was called is never acknowledged and then dropped; the name is new once the drop resolves', async () => {
  await withStore(async (store, reopen) => {
    const s = store.stream('d');
    const before = s.append(['a', 'b', 'c']);
    const drop = store.dropStream('d');
    const viaHandle = outcome(s.append('on the old handle'));
    const viaName = outcome(Promise.resolve().then(() => store.stream('d').append('by name, during the drop')));
    await drop;
    assert.deepEqual(await before, [1, 2, 3], 'appends made before the call settle as usual');
    for (const [what, result] of [['the old handle', await viaHandle], ['store.stream()', await viaName]] as const) {
      assert.ok(!result.ok && result.code === 'ERR_CLOSED', `an append through ${what} during the drop is refused, not acknowledged as ${result.ok ? String(result.value) : result.code}`);
    }
    const again = store.stream('d');
    assert.equal(await again.append('new'), 1, 'the stream starts again from 1');
    store = await reopen();
    assert.deepEqual(texts(await store.stream('d').read(0)), ['new']);
  });
});

test('a follower aborted from inside its loop gets no more records, even of those already read', async () => {
  await withStore(async (store) => {
    const s = store.stream('a');
    await s.append(Array.from({ length: 10 }, (_, i) => String(i + 1)));
    const controller = new AbortController();
    const seen: number[] = [];
    const ended = await settledLater(
      (async () => {
        for await (const r of s.tail(1, { signal: controller.signal })) {
          seen.push(r.seq);
          if (r.seq === 3) controller.abort();
        }
      })(),
    );
    assert.equal((ended as Error | undefined)?.name, 'AbortError');
    assert.deepEqual(seen, [1, 2, 3], 'nothing after the abort');
  });
});

test('the record size limit an append states is the one it applies (stores whose atomic limit is below the value limit too)', async () => {
  // 16 MiB segments: maxValueBytes is about 16 MiB, one commit (and so one run) holds 8 MiB.
  await withStore(
    async (store) => {
      const s = store.stream('big');
      const { maxValueBytes, maxAtomicBytes } = store.limits;
      assert.ok(maxAtomicBytes < maxValueBytes, 'a store where the two limits differ');
      const over = await outcome(s.append(Buffer.alloc(maxValueBytes - 6)));
      assert.ok(!over.ok && over.code === 'ERR_LIMIT');
      const limit = (over.error as { details: { limit: number } }).details.limit;
      assert.equal(limit, Math.min(maxAtomicBytes, maxValueBytes) - 10, 'the limit is the smaller one less a record header');
      const refused = await outcome(s.append(Buffer.alloc(limit + 1)));
      assert.ok(!refused.ok && refused.code === 'ERR_LIMIT' && (refused.error as { details: { limit: number } }).details.limit === limit, 'one byte more: the same limit stated');
      assert.equal(await s.append(Buffer.alloc(limit, 1)), 1, 'a record of exactly the stated limit is taken');
      assert.equal((await s.get(1))?.value.length, limit);
    },
    { capacity: 256 * MiB, segmentSize: 16 * MiB },
  );
});
