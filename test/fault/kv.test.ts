// Faults under the kv face:
//   - bit rot in a stored value: the value's checksum catches it, reads of that key reject
//     with ERR_CORRUPT naming the segment and offset, every other key reads, the key's
//     metadata survives, the cleaner never launders the damage, and `atomio check`'s
//     verifier (checkStore) reports it where it is;
//   - crashes ('torn', 'lose-all') with puts, atomic batches over three pools and counter
//     increments in flight: every acknowledged commit survives, no batch is half there,
//     the commits that survive are a prefix of the commits in issue order;
//   - I/O errors (EIO) on a write or a flush: the commits fail with ERR_IO, the store
//     refuses writes but serves reads, and a reopen shows acknowledged data only.
//
// Randomized tests print their seed; ATOMIO_SEED=<seed> replays one.

import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { isAtomioError, type AtomioError, type Store } from '../../src/index.js';
import { checkStore, type CheckReport } from '../../src/engine/check.js';
import { FaultMedia, type CrashMode } from '../../src/media/fault.js';
import { makeRandom } from '../../src/media/random.js';
import { FaultStore, turns } from '../helpers/store.js';
import { code, describe, outcome } from '../helpers/errors.js';
import { findAll, segmentOf } from '../helpers/image.js';
import { deriveSeed, testSeed } from '../helpers/seed.js';

const SEED = testSeed();
const MiB = 1024 * 1024;
const SEGMENT = 64 * 1024;

const problemsOf = (report: CheckReport): string => JSON.stringify({ problems: report.problems, notes: report.notes }, null, 2);

/** A value no other value contains: `label`, then filler derived from it. */
function distinctive(label: string, bytes: number): Buffer {
  const out = Buffer.alloc(bytes);
  const head = Buffer.from(`${label}|`, 'latin1');
  for (let i = 0; i < bytes; i++) out[i] = head[i % head.length]! ^ ((i / head.length) & 0x3f);
  return out;
}

/** Where the medium holds `value` (exactly once), and a byte inside it to damage. */
function locateValue(image: Uint8Array, value: Buffer, random: () => number): { at: number; segment: number; offsetInSegment: number } {
  const hits = findAll(image, value);
  assert.equal(hits.length, 1, `the value is stored exactly once (found ${hits.length} copies)`);
  const at = hits[0]! + Math.floor(random() * value.length);
  const { segment, offset } = segmentOf(at, SEGMENT);
  return { at, segment, offsetInSegment: offset };
}

/** An ERR_CORRUPT of the kv face that locates the damaged byte: segment, and the [crc][value] span holding it. */
function corruptValueAt(where: { segment: number; offsetInSegment: number }, valueBytes: number, what: string) {
  return (error: unknown): boolean => {
    assert.ok(isAtomioError(error, 'ERR_CORRUPT'), `${what}: expected ERR_CORRUPT, got ${describe(error)}`);
    const d = (error as AtomioError).details as { segment: number; offset: number; pool?: string };
    assert.equal(d.segment, where.segment, `${what}: details.segment`);
    assert.ok(
      d.offset <= where.offsetInSegment && where.offsetInSegment < d.offset + 4 + valueBytes,
      `${what}: details.offset ${d.offset} names the stored value holding byte ${where.offsetInSegment}`,
    );
    assert.match((error as Error).message, new RegExp(`segment ${where.segment}, offset ${d.offset}`), `${what}: the message says where`);
    return true;
  };
}

function fillerValue(pool: string, i: number, round: number): Buffer {
  return distinctive(`${pool}:${i}:${round}`, 900 + ((i * 37) % 700));
}

interface DamagedValue {
  fault: FaultStore;
  /** Where the flipped bit is. */
  where: { at: number; segment: number; offsetInSegment: number };
  victim: Buffer;
  victimVersion: number;
  keys: number;
}

/**
 * A store holding only kv data: 80 keys in pools 'p' and 'q' and, among them, p/victim with
 * a distinctive value. After a clean close (its segment sealed and covered by the
 * checkpoint) one bit of the victim's value is flipped, and the store reopened.
 */
async function storeWithDamagedValue(t: TestContext, random: () => number): Promise<DamagedValue> {
  const fault = await FaultStore.create({ capacity: 4 * MiB, segmentSize: SEGMENT, checkpointIntervalBytes: 512 * 1024 });
  const kv = fault.store.kv('p');
  const keys = 80;
  const victimIndex = 10 + Math.floor(random() * 60);
  const victim = distinctive('kv bit rot victim', 1500 + Math.floor(random() * 1500));
  let victimVersion = 0;
  for (let i = 0; i < keys; i++) {
    if (i === victimIndex) victimVersion = await kv.put('victim', victim);
    await kv.put(`key-${String(i).padStart(3, '0')}`, fillerValue('p', i, 0));
    await fault.store.kv('q').put(`key-${i}`, fillerValue('q', i, 0));
  }
  await fault.store.close();
  const where = locateValue(fault.media.snapshotImage(), victim, random);
  const bit = Math.floor(random() * 8);
  t.diagnostic(`flipping bit ${bit} of the value of p/victim: segment ${where.segment}, offset ${where.offsetInSegment}`);
  await fault.closeAndReopen((media) => media.flipBit(where.at, bit));
  return { fault, where, victim, victimVersion, keys };
}

test('a flipped bit in a stored kv value: every read of that key rejects with ERR_CORRUPT naming segment and offset, other keys and the key\'s version still read, the cleaner never launders it, and a rewrite repairs it', async (t) => {
  t.diagnostic(`seed ${SEED} (replay: ATOMIO_SEED=${SEED})`);
  const random = makeRandom(deriveSeed(SEED, 1));
  const { fault, where, victim, victimVersion, keys } = await storeWithDamagedValue(t, random);
  try {
    const store = fault.store;
    const p = store.kv('p');
    assert.deepEqual(store.stats().lastRecovery?.corruptions, [], 'nothing damaged is replayed at open');

    const corrupt = (what: string) => corruptValueAt(where, victim.length, what);
    await assert.rejects(p.get('victim'), corrupt('get'));
    assert.throws(() => p.getSync('victim'), corrupt('getSync'));
    await assert.rejects(p.getEntry('victim'), corrupt('getEntry'));
    assert.throws(() => p.getEntrySync('victim'), corrupt('getEntrySync'));
    await assert.rejects(p.getMany(['key-000', 'victim']), corrupt('getMany'));
    await assert.rejects(
      (async () => {
        for await (const e of p.list()) void e;
      })(),
      corrupt('list'),
    );
    assert.throws(() => [...p.listSync({ prefix: 'vic' })], corrupt('listSync'));
    await assert.rejects(store.transaction((tx) => tx.get('p', 'victim')), corrupt('a transaction\'s get'));
    // What the index holds is intact: the key, its version, and a listing without values.
    assert.equal(p.has('victim'), true, 'the damaged key is still there');
    assert.equal(p.versionOf('victim'), victimVersion, 'with the version its put returned');
    assert.deepEqual([...p.listSync({ prefix: 'vic', values: false })].map((e) => [e.key.toString(), e.version]), [['victim', victimVersion]]);
    assert.equal(p.count(), keys + 1);
    for (let i = 0; i < keys; i++) {
      assert.deepEqual(await p.get(`key-${String(i).padStart(3, '0')}`), fillerValue('p', i, 0), `p/key-${i} reads`);
      assert.deepEqual(store.kv('q').getSync(`key-${i}`), fillerValue('q', i, 0), `q/key-${i} reads`);
    }

    // Churn every other key until the cleaner has worked through the store many times: the
    // damaged value must keep failing its checksum, never be copied under a fresh one.
    // Each round also adds a few keys that stay: segments keep some live data, so that room
    // is made by cleaning (moving live keys) rather than by freeing dead segments.
    const before = store.stats().segmentsCleaned;
    let round = 1;
    for (; store.stats().segmentsCleaned - before < 40 && round < 400; round++) {
      await Promise.all([
        ...Array.from({ length: keys }, (_, i) =>
          i % 3 === round % 3 ? store.kv('q').put(`key-${i}`, fillerValue('q', i, round)) : p.put(`key-${String(i).padStart(3, '0')}`, fillerValue('p', i, round)),
        ),
        ...Array.from({ length: 4 }, (_, j) => store.kv('sticky').put(`r${round}-${j}`, fillerValue('sticky', j, round))),
      ]);
    }
    const cleaned = store.stats().segmentsCleaned - before;
    t.diagnostic(`the churn made the cleaner clean ${cleaned} segments in ${round} rounds`);
    assert.ok(cleaned >= 40, `the cleaner ran over the store (${cleaned} segments cleaned)`);
    for (let r = 1; r < round; r++) {
      for (let j = 0; j < 4; j++) assert.deepEqual(store.kv('sticky').getSync(`r${r}-${j}`), fillerValue('sticky', j, r), `sticky/r${r}-${j}, moved by the cleaner`);
    }
    await assert.rejects(p.get('victim'), corrupt('get after cleaning'));
    assert.throws(() => p.getSync('victim'), corrupt('getSync after cleaning'));
    assert.equal(p.versionOf('victim'), victimVersion, 'the damaged key keeps its version through cleaning');

    // Through another close and open the damage is still reported, then a rewrite repairs it.
    await fault.closeAndReopen();
    await assert.rejects(fault.store.kv('p').get('victim'), corrupt('get after reopening'));
    const healed = distinctive('healed', 700);
    await fault.store.kv('p').put('victim', healed);
    assert.deepEqual(await fault.store.kv('p').get('victim'), healed, 'a rewrite repairs the key');
    assert.deepEqual(fault.store.kv('p').getSync('victim'), healed);
  } finally {
    await fault.dispose();
  }
});

test('checkStore reports a flipped bit in a live kv value of a sealed, checkpointed segment as a problem (kind chunk) at its segment and offset, not as harmless', async (t) => {
  t.diagnostic(`seed ${SEED} (replay: ATOMIO_SEED=${SEED})`);
  const random = makeRandom(deriveSeed(SEED, 1));
  const { fault, where, victim } = await storeWithDamagedValue(t, random);
  try {
    await assert.rejects(fault.store.kv('p').get('victim'), corruptValueAt(where, victim.length, 'get'));
    await fault.store.close();
    // The same damage, found by the verifier without the engine (what `atomio check` runs).
    const report = await checkStore(FaultMedia.from(fault.media.snapshotImage()));
    const found = report.problems.find((pr) => pr.segment === where.segment && pr.offset <= where.offsetInSegment && where.offsetInSegment < pr.offset + 4 + victim.length);
    assert.ok(found, `checkStore reports a problem at segment ${where.segment} around offset ${where.offsetInSegment} (the key is live and reads ERR_CORRUPT):\n${problemsOf(report)}`);
    assert.equal(found.kind, 'chunk', problemsOf(report));
  } finally {
    await fault.dispose();
  }
});

test('a flipped bit in a kv value of a record replayed at open: recovery reports the corruption where it is, the key reads ERR_CORRUPT, the rest reads, and checkStore agrees', async (t) => {
  t.diagnostic(`seed ${SEED} (replay: ATOMIO_SEED=${SEED})`);
  const random = makeRandom(deriveSeed(SEED, 2));
  const fault = await FaultStore.create({ capacity: 8 * MiB, segmentSize: SEGMENT, checkpointIntervalBytes: 64 * MiB });
  try {
    const kv = fault.store.kv('p');
    await kv.put('before-checkpoint', 'x');
    await fault.store.checkpoint();
    // Twenty acknowledged puts after the checkpoint: recovery replays them.
    const values = Array.from({ length: 20 }, (_, i) => distinctive(`replayed ${i}`, 200 + Math.floor(random() * 3000)));
    for (let i = 0; i < 20; i++) await kv.put(`k${i}`, values[i]!);
    const victim = 1 + Math.floor(random() * 15); // not the last: later records vouch it was flushed
    const where = locateValue(fault.media.snapshotImage(), values[victim]!, random);
    const crashed = fault.crashImage('keep-all');
    crashed.flipBit(where.at, Math.floor(random() * 8));
    const report = await checkStore(crashed);
    assert.ok(
      report.problems.some((pr) => pr.kind === 'chunk' && pr.segment === where.segment && pr.offset <= where.offsetInSegment && where.offsetInSegment < pr.offset + 4 + values[victim]!.length),
      `checkStore reports the damaged value:\n${problemsOf(report)}`,
    );
    await fault.reopen(crashed);
    const recovery = fault.store.stats().lastRecovery!;
    t.diagnostic(`recovery: ${JSON.stringify(recovery)}`);
    assert.ok(
      recovery.corruptions.some((c) => c.segment === where.segment && c.offset <= where.offsetInSegment && where.offsetInSegment < c.offset + 4 + values[victim]!.length),
      `recovery reports the corruption at segment ${where.segment}, offset ${where.offsetInSegment}: ${JSON.stringify(recovery.corruptions)}`,
    );
    const p = fault.store.kv('p');
    await assert.rejects(p.get(`k${victim}`), corruptValueAt(where, values[victim]!.length, 'get of the replayed damaged value'));
    for (let i = 0; i < 20; i++) if (i !== victim) assert.deepEqual(await p.get(`k${i}`), values[i], `k${i}`);
    assert.deepEqual(p.getSync('before-checkpoint'), Buffer.from('x'));
  } finally {
    await fault.dispose();
  }
});

// ---------------------------------------------------------------------------------------
// Crashes with kv commits in flight

const BATCH_POOLS = ['x', 'y', 'z'] as const;

interface Commit {
  /** Issue order. */
  index: number;
  what: string;
  acked: boolean;
  /** Its result when it settled before the crash. */
  result: { ok: true; value: unknown } | { ok: false; code: string; error: unknown } | undefined;
}

/** A value carrying `tag`, of a length that makes records span several sectors. */
function tagged(tag: number, bytes: number): Buffer {
  const out = Buffer.alloc(bytes, tag % 251);
  out.write(`tag=${tag};`, 0, 'latin1');
  return out;
}

function tagOf(value: Buffer | undefined): number {
  if (value === undefined) return 0;
  const m = /^tag=(\d+);/.exec(value.toString('latin1', 0, 24));
  assert.ok(m, `a value no commit wrote: ${value.toString('latin1', 0, 24)}…`);
  const tag = Number(m[1]);
  assert.ok(value.equals(tagged(tag, value.length)), `the value of tag ${tag} is intact`);
  return tag;
}

interface CrashSummary {
  rounds: number;
  commits: number;
  acknowledged: number;
  unackedApplied: number;
  unackedLost: number;
  tornWrites: number;
  droppedWrites: number;
  recordsDropped: number;
  segmentsCleaned: number;
  checkpoints: number;
}

/**
 * Rounds of concurrent kv commits (not awaited), each round ended by a crash in `mode` at a
 * random moment and a reopen of the crashed image; the recovered store is the next round's.
 * Per round the commits touch distinct keys (each key's fate shows its commit's), of:
 *   - atomic batches putting one tag into the same key of pools x, y and z (or deleting it
 *     from all three), so that the three pools always agree;
 *   - single puts into pool 's';
 *   - increments of one counter, whose value counts the increments that survived.
 */
async function kvCrashRounds(t: TestContext, mode: CrashMode, salt: number, rounds: number): Promise<CrashSummary> {
  const random = makeRandom(deriveSeed(SEED, salt));
  const int = (n: number): number => Math.floor(random() * n);
  const fault = await FaultStore.create({ capacity: 4 * MiB, segmentSize: SEGMENT, checkpointIntervalBytes: 256 * 1024, mediaSeed: deriveSeed(SEED, salt + 1) });
  const batchKeys = 120;
  const singleKeys = 120;
  /** Tag per batch key (0: absent), the same in x, y and z; tag per single key; the counter. */
  const known = { batch: new Array<number>(batchKeys).fill(0), single: new Array<number>(singleKeys).fill(0), counter: 0n };
  const summary: CrashSummary = { rounds: 0, commits: 0, acknowledged: 0, unackedApplied: 0, unackedLost: 0, tornWrites: 0, droppedWrites: 0, recordsDropped: 0, segmentsCleaned: 0, checkpoints: 0 };
  let nextTag = 1;
  let round = 0;
  const msg = (m: string): string => `${m} [mode ${mode}, seed ${SEED}, round ${round}; replay with ATOMIO_SEED=${SEED}]`;
  try {
    for (round = 1; round <= rounds; round++) {
      const store = fault.store;
      const claimedBatch = new Set<number>();
      const claimedSingle = new Set<number>();
      const commits: Commit[] = [];
      type Plan =
        | { kind: 'batch'; key: number; tag: number; deleted: boolean; commit: Commit }
        | { kind: 'single'; key: number; tag: number; commit: Commit }
        | { kind: 'incr'; commit: Commit };
      const plans: Plan[] = [];
      let crashed = false;
      const track = (commit: Commit, promise: Promise<unknown>): void => {
        void outcome(promise).then((r) => {
          if (crashed) return;
          commit.result = r;
          commit.acked = r.ok;
        });
      };
      const waves = 1 + int(4);
      for (let w = 0; w < waves; w++) {
        const n = 1 + int(14);
        for (let i = 0; i < n; i++) {
          const commit: Commit = { index: commits.length, what: '', acked: false, result: undefined };
          const r = random();
          if (r < 0.5) {
            const key = int(batchKeys);
            if (claimedBatch.has(key)) continue;
            claimedBatch.add(key);
            const tag = nextTag++;
            const deleted = known.batch[key] !== 0 && random() < 0.15;
            const bytes = 100 + int(3000);
            const batch = store.atomic();
            for (const pool of BATCH_POOLS) {
              if (deleted) batch.delete(pool, `b${key}`);
              else batch.put(pool, `b${key}`, tagged(tag, bytes));
            }
            commit.what = `batch ${tag} ${deleted ? 'deleting' : 'putting'} b${key} in x, y, z`;
            track(commit, batch.commit());
            plans.push({ kind: 'batch', key, tag, deleted, commit });
          } else if (r < 0.85) {
            const key = int(singleKeys);
            if (claimedSingle.has(key)) continue;
            claimedSingle.add(key);
            const tag = nextTag++;
            commit.what = `put ${tag} into s/s${key}`;
            track(commit, store.kv('s').put(`s${key}`, tagged(tag, 50 + int(4000))));
            plans.push({ kind: 'single', key, tag, commit });
          } else {
            commit.what = 'incr c/n';
            track(commit, store.kv('c').incr('n', 1, { initial: 1 }));
            plans.push({ kind: 'incr', commit });
          }
          commits.push(commit);
        }
        if (w < waves - 1) await turns(int(5));
      }
      // Pull the plug after everything settled, at a random moment, or while writes sit unflushed.
      const when = random();
      if (when < 0.15) {
        for (let i = 0; i < 5000 && commits.some((c) => c.result === undefined); i++) await turns(1);
        assert.ok(commits.every((c) => c.acked), msg(`every commit is acknowledged once settled: ${commits.filter((c) => !c.acked).map((c) => `${c.what}: ${c.result?.ok === false ? describe(c.result.error) : 'pending'}`).join('; ')}`));
      } else if (when < 0.5) {
        await turns(int(20));
      } else {
        let sightings = int(2);
        for (let i = 0; i < 400; i++) {
          if (fault.media.pendingWrites > 0 && sightings-- === 0) break;
          await turns(1);
        }
      }
      const stats = store.stats();
      summary.segmentsCleaned += stats.segmentsCleaned;
      summary.checkpoints += stats.checkpoints;
      crashed = true;
      const image = fault.crashImage(mode, deriveSeed(SEED, salt * 1000 + round));
      for (const w of image.crashReport!.writes) {
        if (w.outcome === 'torn') summary.tornWrites++;
        else if (w.outcome === 'dropped') summary.droppedWrites++;
      }
      // The verifier sees a torn tail at most, never a problem, before recovery touches it.
      const check = await checkStore(image);
      assert.deepEqual(check.problems, [], msg(`checkStore after the crash:\n${problemsOf(check)}`));
      await fault.reopen(image);
      const recovery = fault.store.stats().lastRecovery!;
      summary.recordsDropped += recovery.recordsDropped;
      assert.deepEqual(recovery.corruptions, [], msg(`a crash is not corruption: ${JSON.stringify(recovery)}`));

      // What each commit's keys show: 'applied', 'absent' (the state before), or 'unknown'.
      const kv = (pool: string): ReturnType<Store['kv']> => fault.store.kv(pool);
      const counter = kv('c').getSync('n');
      const counterNow = counter === undefined ? 0n : BigInt(counter.toString('latin1'));
      const increments = plans.filter((p) => p.kind === 'incr');
      const incrementsApplied = Number(counterNow - known.counter);
      assert.ok(incrementsApplied >= 0 && incrementsApplied <= increments.length, msg(`the counter moved from ${known.counter} to ${counterNow} with ${increments.length} increments issued`));
      const fates = new Map<Commit, 'applied' | 'absent' | 'unknown'>();
      increments.forEach((p, i) => fates.set(p.commit, i < incrementsApplied ? 'applied' : 'absent'));
      for (const p of plans) {
        if (p.kind === 'batch') {
          const tags = BATCH_POOLS.map((pool) => tagOf(kv(pool).getSync(`b${p.key}`)));
          const want = p.deleted ? 0 : p.tag;
          assert.ok(tags.every((tg) => tg === tags[0]), msg(`${p.commit.what}: half applied, x/y/z hold tags ${tags.join(', ')} (before: ${known.batch[p.key]})`));
          assert.ok(tags[0] === want || tags[0] === known.batch[p.key], msg(`${p.commit.what}: b${p.key} holds tag ${tags[0]}, neither ${want} nor ${known.batch[p.key]} from before`));
          fates.set(p.commit, tags[0] === want ? 'applied' : 'absent');
          known.batch[p.key] = tags[0]!;
        } else if (p.kind === 'single') {
          const tag = tagOf(kv('s').getSync(`s${p.key}`));
          assert.ok(tag === p.tag || tag === known.single[p.key], msg(`${p.commit.what}: s${p.key} holds tag ${tag}, neither ${p.tag} nor ${known.single[p.key]} from before`));
          fates.set(p.commit, tag === p.tag ? 'applied' : 'absent');
          known.single[p.key] = tag;
        }
      }
      known.counter = counterNow;
      let lost: Commit | undefined;
      for (const c of commits) {
        summary.commits++;
        const fate = fates.get(c)!;
        if (c.acked) {
          summary.acknowledged++;
          assert.equal(fate, 'applied', msg(`${c.what} was acknowledged, and is lost after the crash`));
        } else if (c.result !== undefined) {
          assert.fail(msg(`${c.what} failed before the crash: ${c.result.ok ? '' : describe(c.result.error)}`));
        } else if (fate === 'applied') summary.unackedApplied++;
        else summary.unackedLost++;
        if (fate === 'absent') lost ??= c;
        else assert.equal(lost, undefined, msg(`${c.what} (commit ${c.index}) survived though an earlier one (${lost?.what}, commit ${lost?.index}) was lost: not a prefix of the log`));
      }
      // Acknowledged increments returned distinct values up to what the counter holds now.
      const ackedValues = increments.filter((p) => p.commit.acked && p.commit.result?.ok).map((p) => (p.commit.result as { value: { value: bigint } }).value.value);
      for (const v of ackedValues) assert.ok(v <= counterNow, msg(`an acknowledged increment returned ${v}, above the counter's ${counterNow} after the crash`));
      assert.equal(new Set(ackedValues).size, ackedValues.length, msg('acknowledged increments returned distinct values'));
      summary.rounds++;
    }
  } finally {
    await fault.dispose();
  }
  t.diagnostic(`seed ${SEED} (${mode}): ${JSON.stringify(summary)}`);
  return summary;
}

test('torn crashes with kv puts, three-pool atomic batches and counter increments in flight: acknowledged commits survive, no batch is half there, survivors are a prefix, across 40 rounds', async (t) => {
  t.diagnostic(`seed ${SEED} (replay: ATOMIO_SEED=${SEED})`);
  const s = await kvCrashRounds(t, 'torn', 10, 40);
  assert.ok(s.acknowledged > 0, `some commits were acknowledged before a crash [seed ${SEED}]`);
  assert.ok(s.tornWrites > 0, `the crashes tore some writes [seed ${SEED}]`);
  assert.ok(s.unackedLost > 0, `some unacknowledged commits were lost whole [seed ${SEED}]`);
});

test('lose-all crashes with kv puts, three-pool atomic batches and counter increments in flight: acknowledged commits survive, unflushed ones vanish whole, across 40 rounds', async (t) => {
  t.diagnostic(`seed ${SEED} (replay: ATOMIO_SEED=${SEED})`);
  const s = await kvCrashRounds(t, 'lose-all', 20, 40);
  assert.ok(s.acknowledged > 0, `some commits were acknowledged before a crash [seed ${SEED}]`);
  assert.ok(s.droppedWrites > 0 && s.unackedLost > 0, `the crashes dropped pending writes and lost unacknowledged commits [seed ${SEED}]`);
  assert.equal(s.tornWrites, 0);
});

// ---------------------------------------------------------------------------------------
// I/O errors

/** Ten acknowledged keys in pool 'a' (a0..a9 = 'old i') and a counter. */
async function acknowledgedKv(fault: FaultStore): Promise<void> {
  for (let i = 0; i < 10; i++) await fault.store.kv('a').put(`a${i}`, `old ${i}`);
  await fault.store.kv('a').incr('n', 1, { initial: 5 });
}

async function assertAcknowledgedKv(fault: FaultStore, what: string): Promise<void> {
  const a = fault.store.kv('a');
  for (let i = 0; i < 10; i++) assert.equal(a.getSync(`a${i}`)?.toString(), `old ${i}`, `${what}: acknowledged a${i}`);
  assert.equal((await a.get('n'))?.toString(), '5', `${what}: the counter`);
  assert.deepEqual([...a.listSync({ prefix: 'a' })].map((e) => e.key.toString()), Array.from({ length: 10 }, (_, i) => `a${i}`), `${what}: the listing`);
}

/** Every kind of kv write a failed store must refuse with ERR_IO. */
async function assertRefusesKvWrites(store: Store, what: string): Promise<void> {
  const a = store.kv('a');
  await assert.rejects(a.put('later', 'x'), code('ERR_IO', `${what}: a later put`));
  await assert.rejects(a.delete('a0'), code('ERR_IO', `${what}: a later delete`));
  await assert.rejects(a.incr('n', 1), code('ERR_IO', `${what}: a later incr`));
  await assert.rejects(a.touch('a0', 1000), code('ERR_IO', `${what}: a later touch`));
  await assert.rejects(store.atomic().put('a', 'later', 'x').commit(), code('ERR_IO', `${what}: a later atomic batch`));
  await assert.rejects(store.transaction((tx) => tx.put('a', 'later', 'x')), code('ERR_IO', `${what}: a later transaction`));
  await assert.rejects(store.dropPool('a'), code('ERR_IO', `${what}: a later dropPool`));
  assert.equal(a.has('later'), false, `${what}: nothing refused was applied`);
}

for (const failure of ['write', 'flush'] as const) {
  for (const mode of ['lose-all', 'torn'] as CrashMode[]) {
    test(`a failed ${failure} (EIO) during kv puts rejects them with ERR_IO, the store refuses every kv write but serves reads, and after a ${mode} crash only acknowledged data is there (failed commits whole or not at all)`, async (t) => {
      t.diagnostic(`seed ${SEED} (replay: ATOMIO_SEED=${SEED})`);
      const fault = await FaultStore.create({ capacity: 4 * MiB, segmentSize: SEGMENT, mediaSeed: deriveSeed(SEED, 30) });
      try {
        await acknowledgedKv(fault);
        if (failure === 'write') fault.media.failNextWrites(1);
        else fault.media.failNextFlushes(1);
        // One group commit: new keys, overwrites of acknowledged ones, a batch over two pools.
        const group: { what: string; promise: Promise<unknown> }[] = [
          { what: 'put of a new key', promise: fault.store.kv('a').put('new0', 'fresh 0') },
          { what: 'overwrite of a0', promise: fault.store.kv('a').put('a0', 'overwritten') },
          { what: 'incr of the counter', promise: fault.store.kv('a').incr('n', 10) },
          { what: 'atomic batch over a and b', promise: fault.store.atomic().put('a', 'new1', 'fresh 1').put('b', 'new1', 'fresh 1').delete('a', 'a1').commit() },
          { what: 'put creating pool d', promise: fault.store.kv('d').put('k', Buffer.alloc(3000, 7)) },
        ];
        for (const g of group) {
          const r = await outcome(g.promise);
          assert.ok(!r.ok && r.code === 'ERR_IO', `the ${g.what} fails with ERR_IO, got ${r.ok ? 'success' : describe(r.error)}`);
        }
        await assertRefusesKvWrites(fault.store, `after a failed ${failure}`);
        // Reads go on, and show none of the failed commits.
        await assertAcknowledgedKv(fault, `after a failed ${failure}, before reopening`);
        assert.equal(fault.store.kv('a').has('new0'), false);
        assert.deepEqual(fault.store.pools(), ['a'], 'the failed put did not create pool d');

        await fault.crashAndReopen(mode, deriveSeed(SEED, 31));
        assert.deepEqual(fault.store.stats().lastRecovery?.corruptions, [], 'the failure left no corruption');
        const a = fault.store.kv('a');
        for (let i = 2; i < 10; i++) assert.equal(a.getSync(`a${i}`)?.toString(), `old ${i}`, `acknowledged a${i} after the crash`);
        // Each failed commit is whole or absent.
        const fates = {
          new0: a.getSync('new0')?.toString() === 'fresh 0',
          a0: a.getSync('a0')?.toString() === 'overwritten',
          n: a.getSync('n')?.toString() === '15',
          batch: a.getSync('new1')?.toString() === 'fresh 1',
          d: fault.store.kv('d').has('k'),
        };
        assert.equal(a.getSync('a0')?.toString(), fates.a0 ? 'overwritten' : 'old 0');
        assert.equal(a.getSync('n')?.toString(), fates.n ? '15' : '5');
        assert.equal(fault.store.kv('b').getSync('new1')?.toString(), fates.batch ? 'fresh 1' : undefined, 'the batch is whole or absent (pool b)');
        assert.equal(a.getSync('a1')?.toString(), fates.batch ? undefined : 'old 1', 'the batch is whole or absent (its delete)');
        t.diagnostic(`${failure} failure, ${mode} crash: failed commits present after reopen: ${JSON.stringify(fates)}`);
        // They were issued in this order: those that came back are a prefix of them.
        const order = [fates.new0, fates.a0, fates.n, fates.batch, fates.d];
        assert.ok(order.every((present, i) => !present || order.slice(0, i).every(Boolean)), `the failed commits that came back are a prefix of the group: ${JSON.stringify(fates)}`);
        // A failed write leaves a hole that recovery stops at. A failed flush does not: a batch
        // written alongside may have flushed the failed one's writes along with its own.
        if (failure === 'write') {
          assert.deepEqual(fates, { new0: false, a0: false, n: false, batch: false, d: false }, 'only acknowledged data is there');
          assert.deepEqual(fault.store.pools(), ['a']);
        }
        // The reopened store takes writes again.
        await fault.store.kv('a').put('later', 'works');
        assert.equal(fault.store.kv('a').getSync('later')?.toString(), 'works');
      } finally {
        await fault.dispose();
      }
    });
  }
}
