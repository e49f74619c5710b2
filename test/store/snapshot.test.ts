// store.snapshot(): read-only views of kv and block at one moment; the cleaner keeps what a
// live snapshot needs; named snapshots survive reopen and a crash until deleted; released
// and deleted snapshots give their space back and refuse reads.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { open, type Snapshot, type Store } from '../../src/index.js';
import { makeRandom } from '../../src/media/random.js';
import { FaultMedia } from '../../src/media/fault.js';
import { AtomioError } from '../../src/base/errors.js';
import { Engine } from '../../src/engine/engine.js';
import { code } from '../helpers/errors.js';
import { replayHint, testSeed } from '../helpers/seed.js';
import { SteppedMedia } from '../helpers/stepped-media.js';
import { FaultStore, turns } from '../helpers/store.js';
import { withTempDir } from '../helpers/temp.js';

const MiB = 1024 * 1024;
const SMALL = { capacity: 6 * MiB, segmentSize: 64 * 1024, checkpointIntervalBytes: 512 * 1024 } as const;

async function withStore(body: (store: Store) => Promise<void>): Promise<void> {
  await withTempDir(async (dir) => {
    const store = await open(dir, { ...SMALL, media: new FaultMedia(SMALL.capacity) });
    try {
      await body(store);
    } finally {
      await store.close();
    }
  });
}

const value = (slot: number, round: number): Buffer => Buffer.from(`${slot}@${round}:`.padEnd(1500, '#'));

/** Four writers, each committing `put(writer, n)` one after another until stop(); counts acknowledged commits. */
function startWriters(put: (writer: number, n: number) => Promise<unknown>): { acked: () => number; stop: () => Promise<void> } {
  let acked = 0;
  let writing = true;
  const writers = Array.from({ length: 4 }, async (_, w) => {
    for (let n = 0; writing; n++) {
      await put(w, n);
      acked++;
    }
  });
  return {
    acked: () => acked,
    stop: async () => {
      writing = false;
      await Promise.all(writers);
    },
  };
}

/** Waits (a bounded number of turns) until `writers` have `more` acknowledged commits beyond `from`. */
async function ackedBeyond(writers: { acked: () => number }, from: number, more: number): Promise<void> {
  for (let spins = 0; writers.acked() < from + more && spins < 2000; spins++) await turns(1);
}

test('a snapshot reads kv and block as they were when it was taken, while writes go on', async () => {
  await withStore(async (store) => {
    await store.kv('p').put('a', 'A1');
    await store.kv('p').put('b', 'B1');
    await store.block.write(0, Buffer.alloc(512, 1));
    const snap = await store.snapshot();
    await store.kv('p').put('a', 'A2');
    await store.kv('p').delete('b');
    await store.kv('p').put('c', 'C2');
    await store.kv('q').put('x', 'new pool');
    await store.block.write(0, Buffer.alloc(512, 2));
    await store.block.write(1, Buffer.alloc(512, 2));
    assert.equal(snap.kv('p').getSync('a')?.toString(), 'A1');
    assert.equal((await snap.kv('p').get('b'))?.toString(), 'B1');
    assert.equal(snap.kv('p').has('c'), false);
    assert.deepEqual([...snap.kv('p').listSync()].map((e) => `${e.key}=${e.value}`), ['a=A1', 'b=B1']);
    assert.equal(snap.kv('p').count(), 2);
    assert.deepEqual(snap.pools(), ['p']);
    assert.equal((await snap.block.read(0, 1))[0], 1);
    assert.equal(snap.block.exists(1), false);
    assert.ok(snap.version < store.block.versionOf(1));
    assert.equal(store.kv('p').getSync('a')?.toString(), 'A2', 'the store itself moved on');
    await assert.rejects(snap.kv('p').put('a', 'no'), code('ERR_ARGUMENT'));
    await assert.rejects(snap.block.write(0, Buffer.alloc(512)), code('ERR_ARGUMENT'));
    snap.release();
    assert.throws(() => snap.kv('p').getSync('a'), code('ERR_CLOSED'));
    await assert.rejects(snap.block.read(0, 1), code('ERR_CLOSED'));
  });
});

test('the cleaner keeps what a live snapshot reads, and the space returns when it is released', async () => {
  await withStore(async (store) => {
    const slots = 300;
    for (let i = 0; i < slots; i++) await store.kv().put(`k${i}`, value(i, 0));
    for (let i = 0; i < 64; i++) await store.block.write(i * 8, Buffer.alloc(4096, i));
    const snap = await store.snapshot();
    const freeWith = [];
    for (let round = 1; round <= 6; round++) {
      await Promise.all(Array.from({ length: slots }, (_, i) => store.kv().put(`k${i}`, value(i, round))));
      await store.block.trim(0, 64 * 8);
      freeWith.push(store.stats().freeSegments);
    }
    for (let i = 0; i < slots; i++) assert.ok(snap.kv().getSync(`k${i}`)!.equals(value(i, 0)), `key ${i} as the snapshot saw it`);
    for (let i = 0; i < 64; i++) assert.equal((await snap.block.read(i * 8, 8))[4095], i);
    for (let i = 0; i < slots; i++) assert.ok(store.kv().getSync(`k${i}`)!.equals(value(i, 6)));
    snap.release();
    for (let round = 7; round <= 9; round++) {
      await Promise.all(Array.from({ length: slots }, (_, i) => store.kv().put(`k${i}`, value(i, round))));
    }
    await store.checkpoint();
    assert.ok(store.stats().freeSegments > freeWith[freeWith.length - 1]!, 'segments held for the snapshot come back');
  });
});

test('a named snapshot survives close, reopen and a crash, then goes away when deleted', async () => {
  const fs = await FaultStore.create({ ...SMALL });
  try {
    let store = fs.store;
    await store.kv('p').put('a', 'before');
    await store.block.write(3, Buffer.alloc(512, 3));
    const snap = await store.snapshot({ name: 'nightly' });
    assert.equal(snap.name, 'nightly');
    await assert.rejects(store.snapshot({ name: 'nightly' }), code('ERR_ARGUMENT'));
    await store.kv('p').put('a', 'after');
    await store.dropPool('p');
    await store.block.trim(3, 1);
    for (let round = 1; round <= 5; round++) {
      await Promise.all(Array.from({ length: 200 }, (_, i) => store.kv('churn').put(`k${i}`, value(i, round))));
    }
    store = await fs.closeAndReopen();
    assert.deepEqual(store.snapshots().map((s) => s.name), ['nightly']);
    let reopened = store.openSnapshot('nightly');
    assert.equal(reopened.kv('p').getSync('a')?.toString(), 'before');
    assert.equal((await reopened.block.read(3, 1))[0], 3);
    assert.equal(store.kv('p').has('a'), false);
    for (let round = 6; round <= 8; round++) {
      await Promise.all(Array.from({ length: 200 }, (_, i) => store.kv('churn').put(`k${i}`, value(i, round))));
    }
    store = await fs.reopen(fs.crashImage('lose-all'));
    reopened = store.openSnapshot('nightly');
    assert.equal((await reopened.kv('p').get('a'))?.toString(), 'before', 'after a crash');
    await store.deleteSnapshot('nightly');
    assert.throws(() => reopened.kv('p').getSync('a'), code('ERR_CLOSED'));
    assert.deepEqual(store.snapshots(), []);
    assert.throws(() => store.openSnapshot('nightly'), code('ERR_ARGUMENT'));
    await assert.rejects(store.deleteSnapshot('nightly'), code('ERR_ARGUMENT'));
    store = await fs.closeAndReopen();
    assert.deepEqual(store.snapshots(), [], 'the deletion is durable');
  } finally {
    await fs.dispose();
  }
});

test('an iteration over a snapshot needs no pin of its own and sees expiry as of now', async () => {
  await withStore(async (store) => {
    for (let i = 0; i < 50; i++) await store.kv().put(`k${String(i).padStart(2, '0')}`, `v${i}`);
    using snap = await store.snapshot();
    await Promise.all(Array.from({ length: 50 }, (_, i) => store.kv().delete(`k${String(i).padStart(2, '0')}`)));
    const listed: string[] = [];
    for await (const e of snap.kv().list({ reverse: true, limit: 3 })) listed.push(e.value.toString());
    assert.deepEqual(listed, ['v49', 'v48', 'v47']);
  });
});

// ---------------------------------------------------------------------------------------
// A seeded model: snapshots taken at random moments must keep reading exactly what the
// store held then, through churn (cleaning, checkpoints), TTL expiry, pool drops, block
// writes, reopens and crashes (named ones), until released or deleted.

type Model = Map<string, Map<string, string>>; // pool → key → value
interface Taken {
  snap: Snapshot;
  named: boolean;
  pools: Model;
  blocks: Map<number, number>; // lba → fill byte
}

function copyModel(m: Model): Model {
  return new Map([...m].map(([p, keys]) => [p, new Map(keys)]));
}

async function checkSnapshot(t: Taken, what: string): Promise<void> {
  for (const [pool, keys] of t.pools) {
    const listed = [...t.snap.kv(pool).listSync()].map((e) => [e.key.toString(), e.value.toString()]);
    assert.deepEqual(listed, [...keys].sort(([a], [b]) => Buffer.compare(Buffer.from(a), Buffer.from(b))), `${what}: pool ${pool}`);
  }
  for (const pool of t.snap.pools()) assert.ok(t.pools.has(pool) && t.pools.get(pool)!.size > 0, `${what}: pool ${pool} is in the snapshot's model`);
  for (const [lba, fill] of t.blocks) {
    const got = await t.snap.block.read(lba, 1);
    assert.equal(got[0], fill, `${what}: lba ${lba}`);
  }
}

test('model: snapshots read what the store held when taken, through churn, drops, reopens and crashes', async (t) => {
  const seed = testSeed();
  t.diagnostic(replayHint(seed, 'dist/test/store/snapshot.test.js'));
  const random = makeRandom(seed);
  const int = (n: number): number => Math.floor(random() * n);
  const fs = await FaultStore.create({ ...SMALL, capacity: 8 * MiB });
  const model: Model = new Map();
  const blocks = new Map<number, number>();
  let taken: Taken[] = [];
  let named = 0;
  let maintenance = 0; // segments cleaned and checkpoints written, over every open
  try {
    for (let step = 0; step < 400; step++) {
      const store = fs.store;
      const r = random();
      if (r < 0.55) {
        const pool = `p${int(3)}`;
        const writes = Array.from({ length: 1 + int(20) }, () => [`k${int(60)}`, `${step}:`.padEnd(200 + int(1500), 'x')] as const);
        await Promise.all(writes.map(([k, v]) => store.kv(pool).put(k, v)));
        const keys = model.get(pool) ?? new Map<string, string>();
        for (const [k, v] of writes) keys.set(k, v);
        model.set(pool, keys);
      } else if (r < 0.65) {
        const pool = `p${int(3)}`;
        const key = `k${int(60)}`;
        await store.kv(pool).delete(key);
        model.get(pool)?.delete(key);
      } else if (r < 0.7) {
        const pool = `p${int(3)}`;
        await store.dropPool(pool);
        model.delete(pool);
      } else if (r < 0.8) {
        const lba = int(32) * 8;
        const fill = 1 + int(250);
        await store.block.write(lba, Buffer.alloc(4096, fill));
        blocks.set(lba, fill);
      } else if (r < 0.88) {
        const isNamed = random() < 0.4;
        const snap = await store.snapshot(isNamed ? { name: `s${named++}` } : {});
        taken.push({ snap, named: isNamed, pools: copyModel(model), blocks: new Map(blocks) });
      } else if (r < 0.93 && taken.length > 0) {
        const i = int(taken.length);
        const gone = taken[i]!;
        if (gone.named) await store.deleteSnapshot(gone.snap.name!);
        else gone.snap.release();
        taken.splice(i, 1);
      } else if (r < 0.96) {
        const crash = random() < 0.5;
        maintenance += store.stats().segmentsCleaned + store.stats().checkpoints;
        const store2 = crash ? await fs.reopen(fs.crashImage('lose-all')) : await fs.closeAndReopen();
        // Unnamed snapshots live in one process only; named ones come back.
        taken = taken.filter((x) => x.named).map((x) => ({ ...x, snap: store2.openSnapshot(x.snap.name!) }));
        assert.deepEqual(store2.snapshots().map((s) => s.name).sort(), taken.map((x) => x.snap.name!).sort(), `seed ${seed}: named snapshots after ${crash ? 'a crash' : 'a reopen'}`);
      }
      if (step % 40 === 39) for (const x of taken) await checkSnapshot(x, `seed ${seed}, step ${step}, snapshot ${x.snap.name ?? '(unnamed)'}`);
    }
    for (const x of taken) await checkSnapshot(x, `seed ${seed}, the end, snapshot ${x.snap.name ?? '(unnamed)'}`);
    maintenance += fs.store.stats().segmentsCleaned + fs.store.stats().checkpoints;
    assert.ok(maintenance > 0, 'the store cleaned or checkpointed under the snapshots');
  } finally {
    await fs.dispose();
  }
});

test('a named snapshot is written behind the commits that follow it, is durable when it resolves, and so is its deletion', async () => {
  const media = new SteppedMedia(SMALL.capacity);
  const fs = await FaultStore.create({ ...SMALL, media });
  try {
    let store = fs.store;
    const pool = store.kv('p');
    for (let i = 0; i < 50; i++) await pool.put(`k${i}`, 'before');
    const churn = store.kv('churn');
    // The superblock write that makes each snapshot's checkpoint current waits until eight
    // more commits have been acknowledged: they cannot be, if commits wait for it.
    let holdFrom: number | undefined;
    let held = 0;
    media.before = async (offset?: number) => {
      if (holdFrom === undefined || offset === undefined || offset >= 8192) return;
      held++;
      await ackedBeyond(writers, holdFrom, 8);
    };
    const writers = startWriters((w, n) => churn.put(`w${w}`, `${n}`));
    await turns(20);
    holdFrom = writers.acked();
    const snap = await store.snapshot({ name: 'beside' });
    const ackedDuring = writers.acked() - holdFrom;
    holdFrom = undefined;
    await writers.stop();
    assert.ok(held > 0, 'the snapshot wrote a superblock');
    assert.ok(ackedDuring >= 8, `commits were acknowledged while the snapshot's checkpoint was written (${ackedDuring})`);
    for (let i = 0; i < 50; i++) await pool.put(`k${i}`, 'after');
    for (let i = 0; i < 50; i++) assert.equal(snap.kv('p').getSync(`k${i}`)?.toString(), 'before', `k${i} in the snapshot`);

    // Durable when it resolved: a power loss right after keeps it.
    store = await fs.reopen(fs.crashImage('lose-all'));
    assert.deepEqual(store.snapshots().map((s) => s.name), ['beside'], 'the snapshot survives a crash right after it resolved');
    for (let i = 0; i < 50; i++) assert.equal(store.openSnapshot('beside').kv('p').getSync(`k${i}`)?.toString(), 'before', `k${i} after the crash`);
    await store.deleteSnapshot('beside');
    store = await fs.reopen(fs.crashImage('lose-all'));
    assert.deepEqual(store.snapshots(), [], 'the deletion survives a crash right after it resolved');
  } finally {
    await fs.dispose();
  }
});

test("a named snapshot whose checkpoint finds no room is taken back, and a deletion whose checkpoint finds none is undone", async () => {
  const fs = await FaultStore.create({ ...SMALL });
  // The next checkpoint finds no free segment, as on a store too full for it.
  const proto = Engine.prototype as unknown as { takeCheckpointSegments(bytes: number): unknown };
  const take = proto.takeCheckpointSegments;
  let refuse = 0;
  let store = fs.store;
  let openedMeanwhile: Snapshot | undefined;
  proto.takeCheckpointSegments = function (this: Engine, bytes: number) {
    if (refuse > 0) {
      refuse--;
      // A handle on the snapshot, opened while its checkpoint is under way.
      if (store.snapshots().some((s) => s.name === 'full')) openedMeanwhile = store.openSnapshot('full');
      throw new AtomioError('ERR_NO_SPACE', 'no free segment left for a checkpoint (test)', {});
    }
    return take.call(this, bytes);
  };
  try {
    await store.kv('p').put('a', 'before');
    refuse = 1;
    await assert.rejects(store.snapshot({ name: 'full' }), code('ERR_NO_SPACE'), 'the snapshot fails with its checkpoint');
    assert.deepEqual(store.snapshots(), [], 'and is not kept');
    assert.ok(openedMeanwhile !== undefined, 'a handle was opened while the checkpoint was under way');
    // Its segments are no longer pinned: the handle must refuse to read, not read what the cleaner reused.
    assert.throws(() => openedMeanwhile!.kv('p').getSync('a'), code('ERR_CLOSED'), 'a handle opened meanwhile refuses reads');
    await store.kv('p').put('a', 'after');
    await store.checkpoint(); // the next checkpoint, with room, must not bring it back
    store = await fs.closeAndReopen();
    assert.deepEqual(store.snapshots(), [], 'nor written into a later checkpoint');

    const snap = await store.snapshot({ name: 'kept' });
    refuse = 1;
    await assert.rejects(store.deleteSnapshot('kept'), code('ERR_NO_SPACE'), 'the deletion fails with its checkpoint');
    assert.deepEqual(store.snapshots().map((s) => s.name), ['kept'], 'and the snapshot is still there');
    assert.equal(snap.kv('p').getSync('a')?.toString(), 'after', 'and still readable');
    await store.checkpoint();
    store = await fs.closeAndReopen();
    assert.deepEqual(store.snapshots().map((s) => s.name), ['kept'], 'across a later checkpoint and a reopen');
    await store.deleteSnapshot('kept');
    assert.deepEqual(store.snapshots(), []);
  } finally {
    proto.takeCheckpointSegments = take;
    await fs.dispose();
  }
});

test('two calls for one snapshot name: one takes it, the other is refused, and nothing stays pinned for it', async () => {
  const fs = await FaultStore.create({ ...SMALL });
  try {
    let store = fs.store;
    await store.kv('p').put('a', 'one');
    // Both pass the check made at the call; the second must be refused when its turn comes.
    const results = await Promise.allSettled([store.snapshot({ name: 'twice' }), store.snapshot({ name: 'twice' })]);
    assert.deepEqual(results.map((r) => r.status).sort(), ['fulfilled', 'rejected'], 'one call takes the name');
    const refused = results.find((r) => r.status === 'rejected') as PromiseRejectedResult;
    assert.ok(refused.reason instanceof AtomioError && refused.reason.code === 'ERR_ARGUMENT', `the other is refused as a duplicate: ${String(refused.reason)}`);
    assert.deepEqual(store.snapshots().map((s) => s.name), ['twice']);
    await store.deleteSnapshot('twice');
    const pins = (store as unknown as { engine: { pins: Set<unknown> } }).engine.pins;
    assert.equal(pins.size, 0, 'no pin is left once the snapshot is deleted');
    store = await fs.closeAndReopen();
    assert.deepEqual(store.snapshots(), [], 'and none comes back after a reopen');
  } finally {
    await fs.dispose();
  }
});

test('a named snapshot asked for while maintenance writes a checkpoint waits for it without stopping the commits', async () => {
  const media = new SteppedMedia(SMALL.capacity);
  const fs = await FaultStore.create({ ...SMALL, media });
  try {
    const store = fs.store;
    // At the first superblock write (a checkpoint maintenance started behind the commits),
    // a named snapshot is asked for; the write is then held until eight more commits are
    // acknowledged. They cannot be if the snapshot's job stops the commits to wait for it.
    let snapshot: Promise<Snapshot> | undefined;
    let ackedAfterAsking = -1;
    media.before = async (offset?: number) => {
      if (snapshot !== undefined || offset === undefined || offset >= 8192) return;
      snapshot = store.snapshot({ name: 'asked' });
      const from = writers.acked();
      await ackedBeyond(writers, from, 8);
      ackedAfterAsking = writers.acked() - from;
    };
    const writers = startWriters((w, n) => store.kv('churn').put(`w${w}:${n % 64}`, value(w, n)));
    for (let spins = 0; snapshot === undefined && spins < 100_000; spins++) await turns(1);
    assert.ok(snapshot !== undefined, 'maintenance wrote a checkpoint');
    const snap = await snapshot;
    await writers.stop();
    assert.ok(ackedAfterAsking >= 8, `commits were acknowledged while the snapshot waited for the checkpoint under way (${ackedAfterAsking})`);
    assert.deepEqual(store.snapshots().map((s) => s.name), ['asked']);
    snap.release();
  } finally {
    await fs.dispose();
  }
});
