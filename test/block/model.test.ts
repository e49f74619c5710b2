// Model-based randomized test of the block face: random writes, trims, atomics, conditions and
// TTL writes run against the store and against a plain in-memory model (lba → tag, version,
// expiresAt). After each group of ops every outcome (value or error code) and the state of the
// touched ranges (read, exists, mapped, versionOf) must match the model. Periodic close+reopen
// and crash ('keep-all') + reopen must preserve the state exactly. Small segments make the
// cleaner and checkpoints run many times.
//
// The seed comes from ATOMIO_SEED or is random; it is printed, and every assertion message
// carries it. ATOMIO_MODEL_OPS sets the number of ops (default 3000) for longer soaks.

import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { ManualClock, open, type AtomicOp, type BlockCondition, type Store } from '../../src/index.js';
import { isAtomioError } from '../../src/base/errors.js';
import { makeRandom } from '../../src/media/random.js';
import { FaultStore, turns } from '../helpers/store.js';
import { TempDirs } from '../helpers/temp.js';
import { deriveSeed, testSeed } from '../helpers/seed.js';
import { tagOf, tagged } from '../helpers/data.js';
import { describe } from '../helpers/errors.js';

const SECTOR = 512;
const MiB = 1024 * 1024;
const SECTOR_COUNT = 2 ** 53 / SECTOR;
/** Hot ranges: overwrites are common; one sits at the very top of the address space. */
const HOT: readonly [start: number, length: number][] = [
  [0, 1536],
  [70_000, 768],
  [2 ** 40, 512],
  [SECTOR_COUNT - 640, 640],
];
/** Written only now and then, with long TTLs, never overwritten: its data lives long enough to be moved by the cleaner before it expires. */
const COLD: readonly [start: number, length: number] = [3_000_000, 256];
const PENDING = Infinity;

interface Cell {
  tag: number;
  version: number;
  /** 0: never. */
  expiresAt: number;
}

type PlannedOp = { write: number; count: number; tag: number } | { trim: number; count: number };

interface Planned {
  ops: PlannedOp[];
  conditions: BlockCondition[];
  ttl: number | undefined;
  expectOk: boolean;
  promise: Promise<number>;
  what: string;
}

interface Harness {
  store(): Store;
  closeAndReopen(): Promise<void>;
  /** Undefined when the medium cannot crash (a real file). */
  crashAndReopen?: () => Promise<void>;
}

class Model {
  readonly cells = new Map<number, Cell>();

  /** The live cell at lba as seen through a group's overlay (pending changes), or undefined. */
  live(lba: number, now: number, overlay?: Map<number, Cell | null>): Cell | undefined {
    const cell = overlay?.has(lba) ? overlay.get(lba) : this.cells.get(lba);
    if (cell === undefined || cell === null) return undefined;
    return cell.expiresAt === 0 || cell.expiresAt > now ? cell : undefined;
  }

  rangeState(lba: number, count: number, now: number, overlay?: Map<number, Cell | null>): { mapped: boolean; version: number } {
    let mapped = false;
    let version = 0;
    for (let i = lba; i < lba + count; i++) {
      const c = this.live(i, now, overlay);
      if (c === undefined) continue;
      mapped = true;
      version = Math.max(version, c.version);
    }
    return { mapped, version };
  }

  /** Runs of consecutive live sectors with one version: what BlockDevice.mapped returns. */
  mapped(lba: number, count: number, now: number): { lba: number; count: number; version: number }[] {
    const out: { lba: number; count: number; version: number }[] = [];
    for (let i = lba; i < lba + count; i++) {
      const c = this.live(i, now);
      if (c === undefined) continue;
      const last = out[out.length - 1];
      if (last !== undefined && last.version === c.version && last.lba + last.count === i) last.count++;
      else out.push({ lba: i, count: 1, version: c.version });
    }
    return out;
  }

  expected(lba: number, count: number, now: number): Buffer {
    const out = Buffer.alloc(count * SECTOR);
    for (let i = 0; i < count; i++) {
      const c = this.live(lba + i, now);
      if (c !== undefined) tagged(SECTOR, c.tag, lba + i, 1).copy(out, i * SECTOR);
    }
    return out;
  }

  /** Applies one op (as the engine does, later ops winning) into `cells`. */
  static apply(cells: Map<number, Cell | null>, op: PlannedOp, version: number, expiresAt: number, trimAsNull: boolean): void {
    if ('write' in op) {
      for (let i = 0; i < op.count; i++) cells.set(op.write + i, { tag: op.tag, version, expiresAt });
    } else {
      for (let i = 0; i < op.count; i++) {
        if (trimAsNull) cells.set(op.trim + i, null);
        else cells.delete(op.trim + i);
      }
    }
  }
}

async function runModel(t: TestContext, runSeed: number, salt: number, opsWanted: number, harness: Harness, clock: ManualClock): Promise<void> {
  const seed = runSeed;
  const random = makeRandom(deriveSeed(runSeed, salt));
  const int = (n: number): number => Math.floor(random() * n);
  const chance = (p: number): boolean => random() < p;
  const model = new Model();
  let nextTag = 1;
  let opIndex = 0;
  let where = '';
  const totals = { segmentsCleaned: 0, checkpoints: 0, commits: 0, conditionFailures: 0, ttlWrites: 0, reopens: 0, crashes: 0 };
  const msg = (m: string): string => `${m} [seed ${seed}, op ${opIndex}${where ? `, ${where}` : ''}; replay with ATOMIO_SEED=${seed}]`;

  const hotRange = (maxCount: number): [number, number] => {
    const [start, length] = HOT[int(HOT.length)]!;
    const count = 1 + int(maxCount);
    const lba = start + int(length - count + 1);
    return [lba, count];
  };

  const checkRange = async (lba: number, count: number): Promise<void> => {
    const store = harness.store();
    const now = clock.now();
    const got = await store.block.read(lba, count);
    const want = model.expected(lba, count, now);
    if (!got.equals(want)) {
      for (let i = 0; i < count; i++) {
        const g = got.subarray(i * SECTOR, (i + 1) * SECTOR);
        const w = want.subarray(i * SECTOR, (i + 1) * SECTOR);
        if (!g.equals(w)) {
          assert.fail(msg(`read(${lba}, ${count}): sector ${lba + i} holds tag ${tagOf(g, lba + i)}, model says ${tagOf(w, lba + i)}`));
        }
      }
    }
    const state = model.rangeState(lba, count, now);
    assert.equal(store.block.exists(lba, count), state.mapped, msg(`exists(${lba}, ${count})`));
    assert.deepEqual(store.block.mapped(lba, count), model.mapped(lba, count, now), msg(`mapped(${lba}, ${count})`));
    for (let k = 0; k < 3; k++) {
      const at = lba + int(count);
      assert.equal(store.block.versionOf(at), model.rangeState(at, 1, now).version, msg(`versionOf(${at})`));
    }
  };

  const checkAll = async (): Promise<void> => {
    for (const [start, length] of [...HOT, COLD]) await checkRange(start, length);
    const stats = harness.store().stats();
    let live = 0;
    for (const [lba] of model.cells) if (model.live(lba, clock.now()) !== undefined) live++;
    // Expired sectors count until a sweep (the next commit) unmaps them: bound, not equality.
    assert.ok(stats.liveBytes >= live * SECTOR, msg(`liveBytes ${stats.liveBytes} < ${live} live sectors`));
    let mapped = 0;
    for (const [lba] of model.cells) if (lba >= 0) mapped++;
    assert.ok(stats.liveBytes <= mapped * SECTOR, msg(`liveBytes ${stats.liveBytes} > ${mapped} mapped sectors`));
  };

  const collect = (): void => {
    const s = harness.store().stats();
    totals.segmentsCleaned += s.segmentsCleaned;
    totals.checkpoints += s.checkpoints;
    totals.commits += s.commits;
  };

  /** Plans one commit against the model seen through `overlay`, issues it, returns the plan. */
  const issue = (overlay: Map<number, Cell | null>, now: number): Planned => {
    const store = harness.store();
    const ops: PlannedOp[] = [];
    const kind = random();
    let what: string;
    let coldTtl = false;
    if (kind < 0.03) {
      const count = 1 + int(16);
      ops.push({ write: COLD[0] + int(COLD[1] - count + 1), count, tag: nextTag++ });
      what = 'cold write';
      coldTtl = true;
    } else if (kind < 0.45) {
      const [lba, count] = hotRange(16);
      ops.push({ write: lba, count, tag: nextTag++ });
      what = 'write';
    } else if (kind < 0.6) {
      const [lba, count] = hotRange(32);
      ops.push({ trim: lba, count });
      what = 'trim';
    } else {
      const n = 2 + int(4);
      for (let i = 0; i < n; i++) {
        // Stay near the first op now and then so that ops of one commit overlap.
        const [lba, count] = i > 0 && chance(0.3) ? nearby(ops[0]!, 8) : hotRange(16);
        ops.push(chance(0.7) ? { write: lba, count, tag: nextTag++ } : { trim: lba, count });
      }
      what = 'atomic';
    }
    const conditions: BlockCondition[] = [];
    if (!coldTtl && chance(0.3)) {
      const n = 1 + int(3);
      for (let i = 0; i < n; i++) {
        const first = ops[0]!;
        const [lba, count] = chance(0.5) ? ['write' in first ? first.write : first.trim, first.count] : hotRange(24);
        if (chance(0.4)) {
          conditions.push({ unwritten: [lba, count] });
        } else {
          const actual = model.rangeState(lba, count, now, overlay).version;
          const before = model.rangeState(lba, count, now).version;
          const r = random();
          const v = r < 0.6 ? (actual === PENDING ? before : actual) : r < 0.8 ? before + 1 : r < 0.9 ? 0 : Math.max(0, before - 1 - int(5));
          conditions.push({ version: [lba, count, v] });
        }
      }
      what += ` if ${JSON.stringify(conditions)}`;
    }
    const hasWrite = ops.some((op) => 'write' in op);
    let ttl: number | undefined;
    if (coldTtl) {
      ttl = 5000 + int(40_000);
      totals.ttlWrites++;
    } else if (hasWrite && chance(0.15)) {
      // Short TTLs expire between groups; long ones outlive cleaning and checkpoints first.
      const r = random();
      ttl = r < 0.1 ? 0.5 + int(800) : r < 0.7 ? 1 + int(1500) : 2000 + int(20_000);
      totals.ttlWrites++;
    }
    let expectOk = true;
    for (const c of conditions) {
      if ('unwritten' in c) {
        if (model.rangeState(c.unwritten[0], c.unwritten[1], now, overlay).mapped) expectOk = false;
      } else if (model.rangeState(c.version[0], c.version[1], now, overlay).version !== c.version[2]) {
        expectOk = false;
      }
    }
    if (expectOk && ttl !== undefined) {
      for (const op of ops) if ('write' in op) recentTtl.push([op.write, op.count]);
      if (recentTtl.length > 50) recentTtl.splice(0, recentTtl.length - 50);
    }
    if (expectOk) {
      const expiresAt = ttl === undefined ? 0 : now + Math.ceil(ttl);
      for (const op of ops) Model.apply(overlay, op, PENDING, expiresAt, true);
    }
    const atomicOps: AtomicOp[] = ops.map((op) =>
      'write' in op ? { write: op.write, data: tagged(SECTOR, op.tag, op.write, op.count) } : { trim: op.trim, count: op.count },
    );
    const options = { ...(ttl === undefined ? {} : { ttl }), ...(conditions.length > 0 ? { if: conditions } : {}) };
    const first = ops[0]!;
    let promise: Promise<number>;
    if ((what === 'write' || coldTtl) && 'write' in first && chance(0.5)) {
      promise = store.block.write(first.write, tagged(SECTOR, first.tag, first.write, first.count), ttl === undefined ? {} : { ttl });
    } else if (what === 'trim' && 'trim' in first && chance(0.5)) {
      promise = store.block.trim(first.trim, first.count);
    } else {
      promise = store.block.atomic(atomicOps, options);
    }
    what += ` ${JSON.stringify(ops)}${ttl === undefined ? '' : ` ttl ${ttl}`}`;
    return { ops, conditions, ttl, expectOk, promise, what };
  };

  const nearby = (op: PlannedOp, maxCount: number): [number, number] => {
    const base = 'write' in op ? op.write : op.trim;
    const count = 1 + int(maxCount);
    const lba = Math.min(SECTOR_COUNT - count, Math.max(0, base - 4 + int(op.count + 8)));
    return [lba, count];
  };

  /** Ranges written with a TTL lately: checked when the clock moves. */
  const recentTtl: [number, number][] = [];
  const reopenEvery = 500;
  const crashEvery = 700;
  let nextReopen = reopenEvery;
  let nextCrash = harness.crashAndReopen ? crashEvery + int(100) : Infinity;

  while (opIndex < opsWanted) {
    // Time passes between groups, sometimes past TTL deadlines.
    if (chance(0.25)) {
      clock.advance(int(chance(0.2) ? 2000 : chance(0.1) ? 20_000 : 300));
      // Look before any commit sweeps the expired data out of the map: expiry is a matter
      // of the clock, not of housekeeping.
      where = 'after the clock moved';
      for (const [lba, count] of recentTtl.slice(-3)) await checkRange(lba, count);
      await checkRange(...hotRange(64));
      where = '';
    }
    const now = clock.now();
    const overlay = new Map<number, Cell | null>();
    const groupSize = chance(0.5) ? 1 : 2 + int(7);
    const planned: Planned[] = [];
    // Reads issued alongside the writes must see, per sector, the state before the group or
    // the effect of one of its commits: never anything else.
    const concurrentReads: { lba: number; count: number; promise: Promise<Buffer> }[] = [];
    for (let i = 0; i < groupSize; i++) {
      planned.push(issue(overlay, now));
      if (chance(0.2)) {
        const [lba, count] = hotRange(64);
        concurrentReads.push({ lba, count, promise: harness.store().block.read(lba, count) });
      }
    }
    const results = await Promise.allSettled(planned.map((p) => p.promise));
    const reads = await Promise.allSettled(concurrentReads.map((r) => r.promise));
    // The model still holds the state before the group here.
    where = 'concurrent reads';
    for (let i = 0; i < concurrentReads.length; i++) {
      const { lba, count } = concurrentReads[i]!;
      const r = reads[i]!;
      assert.equal(r.status, 'fulfilled', msg(`read(${lba}, ${count}) failed: ${r.status === 'rejected' ? describe(r.reason) : ''}`));
      const got = (r as PromiseFulfilledResult<Buffer>).value;
      for (let s = 0; s < count; s++) {
        const at = lba + s;
        const tag = tagOf(got.subarray(s * SECTOR, (s + 1) * SECTOR), at);
        assert.ok(tag >= 0, msg(`concurrent read(${lba}, ${count}): sector ${at} holds bytes no write produced`));
        const allowed = new Set<number>([model.live(at, now)?.tag ?? 0]);
        planned.forEach((p, k) => {
          if (results[k]!.status !== 'fulfilled') return;
          for (const op of p.ops) {
            if ('write' in op && at >= op.write && at < op.write + op.count) allowed.add(op.tag);
            if ('trim' in op && at >= op.trim && at < op.trim + op.count) allowed.add(0);
          }
        });
        assert.ok(allowed.has(tag), msg(`concurrent read: sector ${at} holds tag ${tag}, allowed ${[...allowed].join(',')}`));
      }
    }
    let lastVersion = 0;
    for (let i = 0; i < planned.length; i++) {
      const p = planned[i]!;
      const r = results[i]!;
      where = p.what;
      if (p.expectOk) {
        assert.equal(r.status, 'fulfilled', msg(`expected success, got ${r.status === 'rejected' ? describe(r.reason) : ''}`));
        const version = (r as PromiseFulfilledResult<number>).value;
        assert.ok(Number.isSafeInteger(version) && version > lastVersion, msg(`version ${version} after ${lastVersion}`));
        lastVersion = version;
        const expiresAt = p.ttl === undefined ? 0 : now + Math.ceil(p.ttl);
        for (const op of p.ops) Model.apply(model.cells as Map<number, Cell | null>, op, version, expiresAt, false);
      } else {
        assert.equal(r.status, 'rejected', msg('expected ERR_CONDITION, the commit succeeded'));
        const reason = (r as PromiseRejectedResult).reason as unknown;
        assert.ok(isAtomioError(reason, 'ERR_CONDITION'), msg(`expected ERR_CONDITION, got ${describe(reason)}`));
        totals.conditionFailures++;
      }
      opIndex++;
    }
    where = '';
    // Check what the group touched, plus one random range.
    for (const p of planned) {
      for (const op of p.ops) await checkRange('write' in op ? op.write : op.trim, op.count);
      for (const c of p.conditions) await checkRange(...(('unwritten' in c ? c.unwritten : c.version.slice(0, 2)) as [number, number]));
    }
    await checkRange(...hotRange(256));

    if (opIndex >= nextReopen) {
      nextReopen += reopenEvery;
      collect();
      where = 'close + reopen';
      await harness.closeAndReopen();
      totals.reopens++;
      const report = harness.store().stats().lastRecovery!;
      assert.deepEqual(report.corruptions, [], msg('a clean reopen reports no corruption'));
      assert.equal(report.recordsReplayed, 0, msg('a clean close checkpoints everything'));
      await checkAll();
      where = '';
    }
    if (opIndex >= nextCrash && harness.crashAndReopen) {
      nextCrash += crashEvery;
      collect();
      where = 'crash keep-all + reopen';
      // Land the crash at different points of the background work (cleaning, checkpoints).
      await turns(int(6));
      await harness.crashAndReopen();
      totals.crashes++;
      const report = harness.store().stats().lastRecovery!;
      assert.deepEqual(report.corruptions, [], msg(`a crash leaves no corruption: ${JSON.stringify(report)}`));
      await checkAll();
      where = '';
    }
    if (opIndex % 1000 < groupSize) await checkAll();
  }
  collect();
  await checkAll();
  t.diagnostic(`seed ${seed}: ${JSON.stringify(totals)}`);
  assert.ok(totals.segmentsCleaned > 0, msg(`the cleaner ran (${totals.segmentsCleaned} segments cleaned)`));
  assert.ok(totals.checkpoints > totals.reopens, msg(`checkpoints were written while running (${totals.checkpoints})`));
  assert.ok(totals.conditionFailures > 0 && totals.ttlWrites > 0, msg('conditions failed and ttl writes happened'));
}

const SEED = testSeed();
const OPS = Number(process.env.ATOMIO_MODEL_OPS ?? 3000);
const GEOMETRY = { capacity: 4 * MiB, segmentSize: 64 * 1024 } as const;

test('model: writes, trims, atomics, conditions and TTL writes on a FaultMedia match an in-memory model through cleaning, checkpoints, reopens and keep-all crashes', async (t) => {
  t.diagnostic(`seed ${SEED} (replay: ATOMIO_SEED=${SEED})`);
  const clock = new ManualClock();
  const fault = await FaultStore.create({ ...GEOMETRY, clock, mediaSeed: deriveSeed(SEED, 3) });
  try {
    await runModel(t, SEED, 1, OPS, {
      store: () => fault.store,
      closeAndReopen: async () => void (await fault.closeAndReopen()),
      crashAndReopen: async () => void (await fault.crashAndReopen('keep-all')),
    }, clock);
  } finally {
    await fault.dispose();
  }
});

test('model: the same random ops on a real data file match the model through cleaning, checkpoints and close + reopen', async (t) => {
  t.diagnostic(`seed ${SEED} (replay: ATOMIO_SEED=${SEED})`);
  const clock = new ManualClock();
  const dirs = new TempDirs('atomio-model-');
  const dir = await dirs.make();
  let store = await open(dir, { ...GEOMETRY, clock });
  try {
    await runModel(t, SEED, 2, Math.ceil(OPS / 2), {
      store: () => store,
      closeAndReopen: async () => {
        await store.close();
        store = await open(dir, { clock });
      },
    }, clock);
  } finally {
    await store.close();
    await dirs.removeAll();
  }
});
