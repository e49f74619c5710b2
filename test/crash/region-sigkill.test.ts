// Crash test of the region face with a real process: face-writer.ts changes 1–12 pages of a
// 48-page region per round and commits, up to three commits in flight (the region keeping
// its newest 6 versions), and is SIGKILLed by the test (a while after its first
// acknowledgement, or while it opens the store) or by itself inside a write. One store
// lives through every round. After each kill the test runs the verifier on the file, opens
// the store and reads the region:
// - acknowledged commits got consecutive versions in round order (from the ACK lines);
// - the region is exactly the state after one round: its version's round, at or after the
//   last acknowledged one and not past the last issued; never a mix of two;
// - every version still kept reads as the state after its round;
// - the next writer opens the region at exactly that version.
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
import { FACE_CAPACITY, FACE_SEGMENT_SIZE, REGION_KEEP, REGION_NAME, REGION_PAGE, REGION_PAGES, parsePage } from './face-writer.js';

const ROUNDS = Number(process.env.ATOMIO_FACE_CRASH_ROUNDS ?? 10);
const THIS_FILE = 'dist/test/crash/region-sigkill.test.js';

test('region: SIGKILL and torn writes leave exactly one committed version, whole', async (t) => {
  const seed = testSeed();
  t.diagnostic(replayHint(seed, THIS_FILE));
  const rng = new Rng(deriveSeed(seed, 77));
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'atomio-region-crash-'));
  let keep = process.env.ATOMIO_CRASH_KEEP === '1';
  /** The verified state: the region's version, and which round last wrote each page. */
  let version = 0;
  let pages = new Array<number>(REGION_PAGES).fill(0);
  /** version → the page rounds it holds (for the versions still kept). */
  const states = new Map<number, number[]>([[0, [...pages]]]);
  let nextId = 1;
  const totals = { rounds: 0, acked: 0, unackedFound: 0, tears: 0, versionsChecked: 0 };
  try {
    await (await open(dir, { capacity: FACE_CAPACITY, segmentSize: FACE_SEGMENT_SIZE })).close();
    for (let round = 1; round <= ROUNDS; round++) {
      const plan = drawPlan(rng);
      const context = `round ${round} (${describePlan(plan)}; seed ${seed}, replay with ATOMIO_SEED=${seed})`;
      const run = await runFaceWriter('region', dir, deriveSeed(seed, 1000 + round), nextId, plan);
      if (run.tear !== undefined) totals.tears++;
      if (run.opened !== undefined) assert.deepEqual(run.opened, { version }, `${context}: the writer opened the region at another version than the one verified`);
      // Each round's commit takes the next version; its state is the last one's with its pages.
      let predicted = version;
      let state = [...pages];
      let lastAcked = version;
      const versionOf = new Map<number, number>();
      for (const f of run.lines) {
        if (f[0] === 'C') {
          const id = Number(f[1]);
          assert.equal(id, nextId + versionOf.size, `${context}: rounds issued out of order`);
          state = [...state];
          for (const p of f.slice(2)) state[Number(p)] = id;
          versionOf.set(id, ++predicted);
          states.set(predicted, state);
        } else if (f[0] === 'A') {
          const v = versionOf.get(Number(f[1]));
          assert.ok(v !== undefined, `${context}: ACK of round ${f[1]}, never issued`);
          assert.equal(Number(f[2]), v, `${context}: round ${f[1]} was acknowledged as version ${f[2]}; in round order it is ${v}`);
          lastAcked = Math.max(lastAcked, v);
          totals.acked++;
        }
      }
      await verifyFile(dir, context);
      const store = await open(dir, { capacity: FACE_CAPACITY, segmentSize: FACE_SEGMENT_SIZE });
      try {
        assert.deepEqual(store.stats().lastRecovery?.corruptions, [], `${context}: a kill is not corruption`);
        const region = await store.region(REGION_NAME, { size: REGION_PAGES * REGION_PAGE, pageSize: REGION_PAGE });
        const found = region.version;
        assert.ok(found >= lastAcked && found <= predicted, `${context}: the region is at version ${found}; acknowledged up to ${lastAcked}, issued up to ${predicted}`);
        const read = (buffer: Buffer, label: string): number[] =>
          Array.from({ length: REGION_PAGES }, (_, p) => {
            const id = parsePage(buffer.subarray(p * REGION_PAGE, (p + 1) * REGION_PAGE), p);
            assert.equal(typeof id, 'number', `${context}: ${label}: ${String(id)}`);
            return id as number;
          });
        assert.deepEqual(read(region.buffer, 'the region'), states.get(found), `${context}: the region is not exactly version ${found} (a mix of versions?)`);
        const kept = region.versions().map((v) => v.version);
        assert.equal(kept[kept.length - 1] ?? 0, found, `${context}: the newest version kept is the region's`);
        assert.ok(kept.length >= Math.min(REGION_KEEP, found), `${context}: only ${kept.length} versions kept; retention keeps ${REGION_KEEP}`);
        for (const v of kept) {
          const view = await region.open({ version: v });
          assert.deepEqual(read(view.buffer, `version ${v}`), states.get(v), `${context}: kept version ${v} does not read as committed`);
          totals.versionsChecked++;
        }
        for (const v of [...states.keys()]) if (v > found || (v < found && !kept.includes(v))) states.delete(v);
        totals.unackedFound += found - lastAcked;
        version = found;
        pages = states.get(found)!;
      } finally {
        await store.close();
      }
      nextId += versionOf.size;
      totals.rounds++;
    }
  } catch (error) {
    keep = true;
    throw new Error(`${(error as Error).message}\n(store kept in ${dir})`, { cause: error });
  } finally {
    if (!keep) await fsp.rm(dir, { recursive: true, force: true });
  }
  t.diagnostic(`seed ${seed}: ${JSON.stringify({ ...totals, version })}`);
});
