// Model-based randomized test of the stream face: groups of concurrent appends (single
// records and arrays, issued over several turns), reads checked against a plain model (an
// array of records by sequence number), trims, retention by count, bytes and age under a
// ManualClock, a tail follower running through it all, and now and then a crash
// ('lose-all', 'keep-all', 'torn') with appends in flight, or a clean reopen.
//
// What must hold:
// - acknowledged appends get consecutive numbers in issue order (no gap, no reorder);
// - reads return exactly the model's records from the requested number on;
// - after a crash every acknowledged record is there; the stream holds first … last with
//   no gap, last at or after the last acknowledged record, and the records past it are
//   the appends that were in flight, in issue order, whole (an array all or nothing);
// - the follower sees increasing numbers, each record once, with the model's bytes, and
//   skips only records that were trimmed.
//
// ATOMIO_SEED replays a run; ATOMIO_STREAM_MODEL_OPS sets the number of appends (default 2500).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ManualClock, type Store, type Stream } from '../../src/index.js';
import type { CrashMode } from '../../src/media/fault.js';
import { makeRandom } from '../../src/media/random.js';
import { describe } from '../helpers/errors.js';
import { replayHint, testSeed } from '../helpers/seed.js';
import { FaultStore, turns } from '../helpers/store.js';

const MiB = 1024 * 1024;
const OPS = Number(process.env.ATOMIO_STREAM_MODEL_OPS ?? 2500);
const MODES: readonly CrashMode[] = ['lose-all', 'keep-all', 'torn'];
const NAME = 'model';

interface Issued {
  values: Buffer[];
  /** The numbers it got (acknowledged), or undefined. */
  first: number | undefined;
  failed: unknown;
  /** Settled before the crash (if any) was decided. */
  settled: boolean;
}

test('stream: random appends, reads, trims, retention and crashes agree with a model', async (t) => {
  const seed = testSeed();
  t.diagnostic(replayHint(seed, 'dist/test/stream/model.test.js'));
  const random = makeRandom(seed);
  const int = (n: number): number => Math.floor(random() * n);
  const clock = new ManualClock();
  const fault = await FaultStore.create({ capacity: 12 * MiB, segmentSize: 64 * 1024, checkpointIntervalBytes: 512 * 1024, clock, mediaSeed: seed });
  /** The model: records[seq] = bytes, times[seq] = append time; records below `first` are gone. */
  const records = new Map<number, Buffer>();
  const times = new Map<number, number>();
  let first = 1;
  let last = 0;
  const msg = (m: string): string => `${m} [seed ${seed}; replay with ATOMIO_SEED=${seed}]`;
  const stats = { appends: 0, crashes: 0, reopens: 0, trims: 0, retained: 0, followed: 0, unackedFound: 0 };

  let store: Store = fault.store;
  let stream: Stream = store.stream(NAME);
  // The follower: reads the tail from the start, checks every record against the model.
  // What it sees is checked against the model once the model knows those records.
  let follower: { stop: AbortController; done: Promise<void>; seen: number; error: unknown } | undefined;
  let unchecked: { seq: number; value: Buffer }[] = [];
  const follow = (from: number): void => {
    const stop = new AbortController();
    const f = { stop, done: Promise.resolve(), seen: from - 1, error: undefined as unknown };
    f.done = (async () => {
      try {
        for await (const r of stream.tail(from, { signal: stop.signal })) {
          assert.ok(r.seq > f.seen, msg(`the follower saw ${r.seq} after ${f.seen}`));
          // A jump is allowed only over records that were trimmed.
          for (let s = f.seen + 1; s < r.seq; s++) assert.ok(s < first, msg(`the follower skipped record ${s}, which is kept (first ${first})`));
          f.seen = r.seq;
          unchecked.push({ seq: r.seq, value: r.value });
          stats.followed++;
        }
      } catch (error) {
        if (!(error instanceof Error && error.name === 'AbortError')) f.error = error;
      }
    })();
    follower = f;
  };
  const checkFollower = (): void => {
    if (follower?.error !== undefined) throw follower.error;
    const later: typeof unchecked = [];
    for (const u of unchecked) {
      if (u.seq > last) {
        later.push(u);
        continue;
      }
      const want = records.get(u.seq);
      // Records trimmed since the follower read them are no longer in the model.
      if (u.seq >= first) assert.ok(want !== undefined && want.equals(u.value), msg(`the follower read record ${u.seq} unlike the model`));
    }
    unchecked = later;
  };
  const stopFollower = async (): Promise<void> => {
    if (follower === undefined) return;
    follower.stop.abort();
    await follower.done;
    checkFollower();
    follower = undefined;
  };
  follow(1);

  const checkAll = async (label: string): Promise<void> => {
    assert.equal(stream.last, last, msg(`${label}: last`));
    assert.equal(stream.first, first, msg(`${label}: first`));
    const got = await stream.read(0, { limit: 1_000_000 });
    assert.equal(got.length, last - first + 1, msg(`${label}: ${got.length} records read, the model has ${last - first + 1}`));
    for (const r of got) {
      assert.ok(records.get(r.seq)?.equals(r.value), msg(`${label}: record ${r.seq} differs from the model`));
      assert.equal(r.time, times.get(r.seq), msg(`${label}: record ${r.seq}'s append time`));
    }
  };

  try {
    let appended = 0;
    while (appended < OPS) {
      const group: Issued[] = [];
      const n = 1 + int(24);
      for (let i = 0; i < n; i++) {
        const count = random() < 0.2 ? 1 + int(20) : 1;
        const values = Array.from({ length: count }, () => Buffer.alloc(1 + int(random() < 0.1 ? 3000 : 120), int(256)));
        const issued: Issued = { values, first: undefined, failed: undefined, settled: false };
        const p = count === 1 && random() < 0.5 ? stream.append(values[0]!).then((s) => [s]) : stream.append(values);
        p.then(
          (seqs) => {
            issued.first = seqs[0];
            issued.settled = true;
          },
          (error: unknown) => {
            issued.failed = error;
            issued.settled = true;
          },
        );
        group.push(issued);
        appended += count;
        if (random() < 0.3) await turns(int(3));
      }
      // The last group crashes if none did before: a run without a crash would test less.
      const fate = appended >= OPS && stats.crashes === 0 ? 0 : random();
      if (fate < 0.08) {
        // Power loss with the group in flight: at a random moment, or while writes sit unflushed.
        if (random() < 0.5) {
          await turns(int(8));
        } else {
          for (let i = 0; i < 100 && fault.media.pendingWrites === 0; i++) await turns(1);
        }
        const mode = MODES[int(MODES.length)]!;
        await stopFollower();
        // What was acknowledged when the power went (the abandoned store may settle more later).
        const acked = group.map((g) => g.settled);
        for (const g of group) if (g.settled) assert.equal(g.failed, undefined, msg(`an append failed: ${describe(g.failed)}`));
        await fault.crashAndReopen(mode, int(2 ** 31));
        stats.crashes++;
        store = fault.store;
        stream = store.stream(NAME);
        // The acknowledged appends took consecutive numbers in issue order; those in flight
        // would have taken the next ones: the store may hold any prefix of them.
        let next = last + 1;
        let lastAcked = last;
        for (const [i, g] of group.entries()) {
          if (acked[i]) {
            assert.equal(g.first, next, msg(`acknowledged append got ${g.first}, expected ${next}`));
            lastAcked = next + g.values.length - 1;
          }
          g.values.forEach((v, j) => {
            records.set(next + j, v);
          });
          next += g.values.length;
        }
        const found = stream.last;
        assert.ok(found >= lastAcked && found < next, msg(`after a ${mode} crash the stream ends at ${found}; acknowledged up to ${lastAcked}, issued up to ${next - 1}`));
        // Whole appends only: the end falls on an append's boundary.
        let boundary = last;
        const ends = new Set([boundary]);
        for (const g of group) ends.add((boundary += g.values.length));
        assert.ok(ends.has(found), msg(`after a crash the stream ends at ${found}, inside an append (a torn array)`));
        for (let s = found + 1; s < next; s++) records.delete(s);
        stats.unackedFound += found - lastAcked;
        last = found;
        // A trim or retention pass in flight may have gone further; never below the model's first.
        assert.ok(stream.first >= first, msg(`after a crash first is ${stream.first}, below ${first}`));
        first = stream.first;
        const got = await stream.read(0, { limit: 1_000_000 });
        for (const r of got) times.set(r.seq, r.time);
        await checkAll(`after a ${mode} crash`);
        follow(first);
        continue;
      }
      await stream.flush();
      let next = last + 1;
      for (const g of group) {
        assert.ok(g.settled, msg('an append did not settle'));
        assert.equal(g.failed, undefined, msg(`an append failed: ${describe(g.failed)}`));
        assert.equal(g.first, next, msg(`append got ${g.first}, expected ${next}: numbers follow issue order with no gap`));
        g.values.forEach((v, j) => records.set(next + j, v));
        next += g.values.length;
      }
      stats.appends += group.length;
      checkFollower();
      // Append times: every record of the group was appended at the clock's current time.
      for (let s = last + 1; s < next; s++) times.set(s, clock.now());
      last = next - 1;

      const action = random();
      if (action < 0.15) {
        const to = first + int(Math.max(1, last - first + 3));
        const expect = Math.max(first, Math.min(to, last + 1));
        // The model moves first; the follower may see the records go before trimBefore resolves.
        const before = first;
        first = expect;
        assert.equal(await stream.trimBefore(to), expect, msg(`trimBefore(${to})`));
        for (let s = before; s < expect; s++) records.delete(s);
        stats.trims++;
      } else if (action < 0.25) {
        const kind = int(3);
        const limits = kind === 0 ? { count: 1 + int(400), bytes: 0, age: 0 } : kind === 1 ? { count: 0, bytes: 2000 + int(60_000), age: 0 } : { count: 0, bytes: 0, age: 1000 + int(20_000) };
        let cut = first;
        if (limits.count > 0) cut = Math.max(cut, last - limits.count + 1);
        if (limits.bytes > 0) {
          // Retention by bytes drops whole runs (the appends of one commit), which the model
          // does not see: it keeps no more than fits even at the cheapest (10 bytes of time
          // and length a record, no run keys), and what it keeps fits the limit.
          let total = 0;
          for (let s = first; s <= last; s++) total += 10 + records.get(s)!.length;
          while (total > limits.bytes && cut <= last) total -= 10 + records.get(cut++)!.length;
        }
        if (limits.age > 0) while (cut <= last && times.get(cut)! <= clock.now() - limits.age) cut++;
        const before = first;
        first = cut;
        await stream.retain(limits);
        if (limits.bytes > 0) {
          assert.ok(stream.first >= cut && stream.first <= last + 1, msg(`retain(bytes ${limits.bytes}): first ${stream.first}, not in [${cut}, ${last + 1}]`));
          assert.ok(stream.stats().bytes <= limits.bytes, msg(`retain(bytes ${limits.bytes}) kept ${stream.stats().bytes} bytes`));
          first = cut = stream.first;
        }
        for (let s = before; s < cut; s++) records.delete(s);
        await stream.retain({ count: 0, bytes: 0, age: 0 });
        stats.retained++;
      } else if (action < 0.3) {
        await stopFollower();
        store = await fault.closeAndReopen();
        stream = store.stream(NAME);
        stats.reopens++;
        follow(first);
      }
      if (random() < 0.3) clock.advance(int(3000));
      // A read from a random place.
      const from = int(last + 3);
      const limit = int(50);
      const got = await stream.read(from, { limit });
      const want: number[] = [];
      for (let s = Math.max(from, first); s <= last && want.length < limit; s++) want.push(s);
      assert.deepEqual(
        got.map((r) => r.seq),
        want,
        msg(`read(${from}, ${limit})`),
      );
      for (const r of got) assert.ok(records.get(r.seq)!.equals(r.value), msg(`read: record ${r.seq} differs`));
      if (random() < 0.05) await checkAll('check');
    }
    await checkAll('at the end');
    // The follower catches up with everything kept.
    for (let i = 0; i < 200 && follower !== undefined && follower.seen < last; i++) await turns(5);
    assert.equal(follower?.seen, last, msg('the follower reached the last record'));
    await stopFollower();
  } finally {
    await stopFollower().catch(() => undefined);
    await fault.dispose();
  }
  t.diagnostic(`seed ${seed}: ${JSON.stringify(stats)}`);
  assert.ok(stats.crashes > 0 || OPS < 1000, 'the run crashed the store at least once');
});
