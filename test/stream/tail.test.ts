// Followers of a stream's tail across 100,000 appends: eight producers append concurrently
// (single records and arrays), one follower starts at the beginning, another joins midway
// at the end of what exists, a third starts before and is aborted on the way. Each must see
// every record from where it started exactly once, in order, with the bytes its append
// acknowledged.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setImmediate as nextTurn } from 'node:timers/promises';
import type { Stream, StreamRecord } from '../../src/index.js';
import { makeRandom } from '../../src/media/random.js';
import { replayHint, testSeed } from '../helpers/seed.js';
import { FaultStore } from '../helpers/store.js';

const RECORDS = 100_000;
const PRODUCERS = 8;

/** Follows `stream` from `from` until it has seen `until`; returns what it saw. */
async function follow(stream: Stream, from: number, until: () => number, signal?: AbortSignal): Promise<StreamRecord[]> {
  const seen: StreamRecord[] = [];
  try {
    for await (const r of stream.tail(from, { signal })) {
      seen.push(r);
      if (r.seq >= until()) break;
    }
  } catch (error) {
    if (!(error instanceof Error && error.name === 'AbortError')) throw error;
  }
  return seen;
}

test('tail followers see each of 100,000 appended records exactly once, in order', async (t) => {
  const seed = testSeed();
  t.diagnostic(replayHint(seed, 'dist/test/stream/tail.test.js'));
  const random = makeRandom(seed);
  const fault = await FaultStore.create({ capacity: 96 * 1024 * 1024, mediaSeed: seed });
  try {
    const stream = fault.store.stream('tail');
    /** seq → the value its append was acknowledged with. */
    const acked = new Map<number, Buffer>();
    let produced = 0;
    // Followers stop at the last record, whose number is known in advance (numbers have no gap).
    const untilEnd = (): number => RECORDS;

    const fromStart = follow(stream, 1, untilEnd);
    let midway: Promise<StreamRecord[]> | undefined;
    let midwayFrom = 0;
    const stop = new AbortController();
    const aborted = follow(stream, 1, untilEnd, stop.signal);

    const producer = async (id: number): Promise<void> => {
      let n = 0;
      while (produced < RECORDS) {
        const count = Math.min(RECORDS - produced, random() < 0.3 ? 1 + Math.floor(random() * 40) : 1);
        produced += count;
        const values = Array.from({ length: count }, () => Buffer.from(`${id}:${n++}:${'x'.repeat(Math.floor(random() * 60))}`));
        const seqs = count === 1 && random() < 0.5 ? [await stream.append(values[0]!)] : await stream.append(values);
        seqs.forEach((s, i) => acked.set(s, values[i]!));
        if (midway === undefined && produced >= RECORDS / 2) {
          midwayFrom = stream.last + 1;
          midway = follow(stream, midwayFrom, untilEnd);
        }
        if (!stop.signal.aborted && produced >= RECORDS / 4) stop.abort();
        if (random() < 0.01) await nextTurn();
      }
    };
    await Promise.all(Array.from({ length: PRODUCERS }, (_, id) => producer(id)));
    const total = stream.last;
    assert.equal(total, RECORDS, 'every record got a number, from 1 with no gap');
    assert.equal(acked.size, RECORDS);

    const check = (seen: StreamRecord[], from: number, label: string): void => {
      assert.equal(seen.length, total - from + 1, `${label}: saw ${seen.length} records, expected ${total - from + 1}`);
      for (let i = 0; i < seen.length; i++) {
        const r = seen[i]!;
        assert.equal(r.seq, from + i, `${label}: record ${i} has number ${r.seq}, expected ${from + i} (exactly once, in order)`);
        assert.ok(acked.get(r.seq)!.equals(r.value), `${label}: record ${r.seq} holds other bytes than its append`);
      }
    };
    check(await fromStart, 1, 'follower from the start');
    assert.ok(midway !== undefined);
    check(await midway, midwayFrom, 'follower that joined midway');
    const early = await aborted;
    assert.ok(early.length < RECORDS, 'the aborted follower stopped early');
    early.forEach((r, i) => assert.equal(r.seq, 1 + i, 'the aborted follower saw a prefix, in order'));
    t.diagnostic(`seed ${seed}: midway follower from ${midwayFrom}, aborted follower saw ${early.length}; ${JSON.stringify({ commits: fault.store.stats().commits, flushes: fault.store.stats().flushes })}`);
  } finally {
    await fault.dispose();
  }
});
