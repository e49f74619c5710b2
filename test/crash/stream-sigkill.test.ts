// Crash test of the stream face with a real process: face-writer.ts keeps 16 appends in
// flight on one stream (retention keeping its newest 4000 records) and is SIGKILLed, by the
// test (a while after its first acknowledgement, or while it opens the store) or by itself
// inside a write (a torn write, at a page boundary). One store lives through every round.
// After each kill the test runs the verifier on the file, opens the store and reads the
// stream whole:
// - acknowledged appends got consecutive numbers in issue order (checked from the ACK lines);
// - the stream holds first … last with no gap; every acknowledged record is there (unless
//   retention trimmed it: first never passes last - 4000 + 1), with its bytes;
// - records after the last acknowledged one are the appends in flight, in issue order,
//   whole: nothing after a torn record, no half of an array;
// - the next writer opens the store at exactly that state.
//
//   ATOMIO_FACE_CRASH_ROUNDS   rounds (default 10)
//   ATOMIO_SEED                replays the writers' choices and the kill plans

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { open } from '../../src/index.js';
import { deriveSeed, replayHint, testSeed } from '../helpers/seed.js';
import { Rng } from './common.js';
import { describePlan, drawPlan } from './child.js';
import { runFaceWriter, verifyFile } from './face-run.js';
import { FACE_CAPACITY, FACE_SEGMENT_SIZE, STREAM_KEEP, STREAM_NAME, recordValue } from './face-writer.js';

const ROUNDS = Number(process.env.ATOMIO_FACE_CRASH_ROUNDS ?? 10);
const THIS_FILE = 'dist/test/crash/stream-sigkill.test.js';

test('stream: SIGKILL and torn writes keep every acknowledged append, in order, with no gap', async (t) => {
  const seed = testSeed();
  t.diagnostic(replayHint(seed, THIS_FILE));
  const rng = new Rng(seed);
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'atomio-stream-crash-'));
  let keep = process.env.ATOMIO_CRASH_KEEP === '1';
  /** The stream as last verified: [first, last] and which record each number holds. */
  let first = 1;
  let last = 0;
  const holds = new Map<number, [id: number, j: number]>();
  let nextId = 1;
  const totals = { rounds: 0, acked: 0, unackedFound: 0, tears: 0, trimmed: 0 };
  try {
    // Made before the writers (a kill inside the very first format is the engine's own test).
    await (await open(dir, { capacity: FACE_CAPACITY, segmentSize: FACE_SEGMENT_SIZE })).close();
    for (let round = 1; round <= ROUNDS; round++) {
      const plan = drawPlan(rng);
      const writerSeed = deriveSeed(seed, round);
      const context = `round ${round} (${describePlan(plan)}; seed ${seed}, replay with ATOMIO_SEED=${seed})`;
      const run = await runFaceWriter('stream', dir, writerSeed, nextId, plan);
      if (run.tear !== undefined) totals.tears++;
      if (run.opened !== undefined) {
        assert.deepEqual(run.opened, { first, last }, `${context}: the writer opened the stream at another state than the one verified`);
      }
      // Issue order and acknowledgements: ACKed appends took consecutive numbers in issue order.
      const issued: { id: number; count: number; first: number; acked: boolean }[] = [];
      const byId = new Map<number, (typeof issued)[number]>();
      let predicted = last + 1;
      for (const f of run.lines) {
        if (f[0] === 'I') {
          const a = { id: Number(f[1]), count: Number(f[2]), first: predicted, acked: false };
          assert.equal(a.id, nextId + issued.length, `${context}: appends issued out of order`);
          predicted += a.count;
          issued.push(a);
          byId.set(a.id, a);
        } else if (f[0] === 'A') {
          const a = byId.get(Number(f[1]));
          assert.ok(a !== undefined, `${context}: ACK of append ${f[1]}, never issued`);
          assert.equal(Number(f[2]), a.first, `${context}: append ${a.id} was acknowledged as number ${f[2]}; in issue order with no gap it is ${a.first}`);
          a.acked = true;
        }
      }
      let lastAcked = last;
      for (const a of issued) if (a.acked) lastAcked = Math.max(lastAcked, a.first + a.count - 1);

      await verifyFile(dir, context);

      const store = await open(dir, { capacity: FACE_CAPACITY, segmentSize: FACE_SEGMENT_SIZE });
      try {
        assert.deepEqual(store.stats().lastRecovery?.corruptions, [], `${context}: a kill is not corruption`);
        const stream = store.stream(STREAM_NAME);
        const records = await stream.read(0, { limit: 10_000_000 });
        const [s0, s1] = [stream.first, stream.last];
        assert.ok(s1 >= lastAcked, `${context}: the stream ends at ${s1}, before the last acknowledged record ${lastAcked}`);
        assert.ok(s1 < predicted, `${context}: the stream ends at ${s1}, after every record issued (${predicted - 1})`);
        const ends = new Set([last, ...issued.map((a) => a.first + a.count - 1)]);
        assert.ok(ends.has(s1), `${context}: the stream ends at ${s1}, inside an append (half an array)`);
        assert.ok(s0 >= first, `${context}: first went back from ${first} to ${s0}`);
        assert.ok(s0 <= Math.max(first, s1 - STREAM_KEEP + 1), `${context}: first is ${s0}: retention trimmed more than the newest ${STREAM_KEEP} records allow`);
        assert.equal(records.length, s1 - s0 + 1, `${context}: ${records.length} records read between ${s0} and ${s1}: a gap`);
        for (const a of issued) for (let j = 0; j < a.count; j++) holds.set(a.first + j, [a.id, j]);
        for (let i = 0; i < records.length; i++) {
          const r = records[i]!;
          assert.equal(r.seq, s0 + i, `${context}: record ${i} read has number ${r.seq}, expected ${s0 + i}`);
          const at = holds.get(r.seq);
          assert.ok(at !== undefined, `${context}: record ${r.seq} was never appended`);
          assert.ok(recordValue(at[0], at[1]).equals(r.value), `${context}: record ${r.seq} is not record ${at[1]} of append ${at[0]}`);
        }
        totals.acked += issued.filter((a) => a.acked).length;
        totals.unackedFound += s1 - lastAcked;
        totals.trimmed += s0 - first;
        for (let s = first; s < s0; s++) holds.delete(s);
        for (let s = s1 + 1; s < predicted; s++) holds.delete(s);
        first = s0;
        last = s1;
      } finally {
        await store.close();
      }
      nextId += issued.length;
      totals.rounds++;
    }
  } catch (error) {
    keep = true;
    throw new Error(`${(error as Error).message}\n(store kept in ${dir})`, { cause: error });
  } finally {
    if (!keep) await fsp.rm(dir, { recursive: true, force: true });
  }
  t.diagnostic(`seed ${seed}: ${JSON.stringify({ ...totals, first, last })}`);
});
