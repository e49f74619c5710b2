// store.atomic(): kv ops across pools and block ops in one commit, checks that report which
// of them failed, counters inside a batch, limits, and single use.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MAX_ATOMIC_OPS, MAX_CONDITIONS, open, type Store } from '../../src/index.js';
import { FaultMedia } from '../../src/media/fault.js';
import { code } from '../helpers/errors.js';
import { withTempDir } from '../helpers/temp.js';

const MiB = 1024 * 1024;

async function withStore(body: (store: Store) => Promise<void>): Promise<void> {
  await withTempDir(async (dir) => {
    const store = await open(dir, { capacity: 16 * MiB, segmentSize: 256 * 1024, media: new FaultMedia(16 * MiB) });
    try {
      await body(store);
    } finally {
      await store.close();
    }
  });
}

test('an atomic batch lands kv puts in several pools and a block write under one version', async () => {
  await withStore(async (store) => {
    const r = await store
      .atomic()
      .put('a', 'k', 'in a')
      .put('b', 'k', 'in b', { ttl: 60_000 })
      .write(8, Buffer.alloc(512, 7))
      .commit();
    assert.equal(r.ok, true);
    const version = r.ok ? r.version : -1;
    assert.equal(store.kv('a').versionOf('k'), version);
    assert.equal(store.kv('b').versionOf('k'), version);
    assert.equal(store.block.versionOf(8), version);
    assert.equal((await store.block.read(8, 1))[0], 7);
    assert.ok((await store.kv('b').getEntry('k'))!.expiresAt > 0);
  });
});

test('failed checks are all reported and nothing of the batch is written', async () => {
  await withStore(async (store) => {
    const va = await store.kv('acct').put('a', '100');
    const vb = await store.kv('acct').put('b', '100');
    await store.kv('acct').put('a', '90'); // a moves on
    const r = await store
      .atomic()
      .check('acct', 'a', va)
      .check('acct', 'b', vb)
      .check('acct', 'c', null)
      .check('acct', 'b', vb + 1000)
      .put('acct', 'a', '0')
      .put('acct', 'new', 'x')
      .trim(0, 8)
      .commit();
    assert.equal(r.ok, false);
    if (r.ok) return;
    assert.deepEqual(
      r.failed.map((c) => [c.pool, c.key.toString(), c.version]),
      [
        ['acct', 'a', va],
        ['acct', 'b', vb + 1000],
      ],
    );
    assert.equal(store.kv('acct').getSync('a')?.toString(), '90');
    assert.equal(store.kv('acct').has('new'), false);
  });
});

test('checks that hold let the batch through, and null checks for absence', async () => {
  await withStore(async (store) => {
    const va = await store.kv('acct').put('a', '100');
    const r = await store.atomic().check('acct', 'a', va).check('acct', 'z', null).put('acct', 'a', '50').put('acct', 'z', '50').commit();
    assert.ok(r.ok);
    const r2 = await store.atomic().check('acct', 'z', null).put('acct', 'z', 'again').commit();
    assert.equal(r2.ok, false, 'z exists now');
  });
});

test('ops apply in order inside a batch: a counter after a put of the same key, a delete after a put', async () => {
  await withStore(async (store) => {
    const r = await store.atomic().put('c', 'n', '5').incr('c', 'n', 3).put('c', 'gone', 'x').delete('c', 'gone').commit();
    assert.ok(r.ok);
    assert.equal(store.kv('c').getSync('n')?.toString(), '8');
    assert.equal(store.kv('c').has('gone'), false);
  });
});

test('a counter that cannot be updated rejects the whole batch', async () => {
  await withStore(async (store) => {
    await store.kv('c').put('word', 'abc');
    await assert.rejects(store.atomic().put('c', 'x', '1').incr('c', 'word', 1).commit(), code('ERR_ARGUMENT'));
    await assert.rejects(store.atomic().put('c', 'x', '1').incr('c', 'absent', 1).commit(), code('ERR_CONDITION'));
    assert.equal(store.kv('c').has('x'), false);
  });
});

test('a batch refuses bad ops at once and is used once', async () => {
  await withStore(async (store) => {
    const batch = store.atomic();
    assert.throws(() => batch.put('', 'k', 'v'), code('ERR_ARGUMENT'));
    assert.throws(() => batch.put('p', '', 'v'), code('ERR_ARGUMENT'));
    assert.throws(() => batch.write(0, Buffer.alloc(100)), code('ERR_ARGUMENT'));
    assert.throws(() => batch.check('p', 'k', 0), code('ERR_ARGUMENT'));
    for (let i = 0; i < MAX_CONDITIONS; i++) batch.check('p', `k${i}`, null);
    assert.throws(() => batch.check('p', 'one-more', null), code('ERR_LIMIT'));
    const big = store.atomic();
    for (let i = 0; i < MAX_ATOMIC_OPS; i++) big.put('p', `k${i}`, 'v');
    assert.throws(() => big.put('p', 'over', 'v'), code('ERR_LIMIT'));
    const huge = store.atomic().put('p', 'a', Buffer.alloc(store.limits.maxValueBytes));
    assert.throws(() => huge.put('p', 'b', Buffer.alloc(store.limits.maxValueBytes)), code('ERR_LIMIT'), 'two largest values exceed one record');
    const once = store.atomic().put('p', 'k', 'v');
    assert.ok((await once.commit()).ok);
    await assert.rejects(once.commit(), code('ERR_ARGUMENT'));
    assert.throws(() => once.put('p', 'k2', 'v'), code('ERR_ARGUMENT'));
  });
});

test('options that are not an object get ERR_ARGUMENT, not a TypeError: atomic, transaction, snapshot, open, tail', async () => {
  await withStore(async (store) => {
    const bad = null as never;
    assert.throws(() => store.atomic().put('p', 'k', 'v', bad), code('ERR_ARGUMENT'), 'atomic put');
    assert.throws(() => store.atomic().incr('p', 'n', 1, bad), code('ERR_ARGUMENT'), 'atomic incr');
    await assert.rejects(store.transaction(() => undefined, bad), code('ERR_ARGUMENT'), 'transaction');
    await assert.rejects(
      store.transaction((tx) => tx.put('p', 'k', 'v', bad)),
      code('ERR_ARGUMENT'),
      'tx.put',
    );
    await assert.rejects(
      store.transaction((tx) => tx.incr('p', 'n', 1, bad)),
      code('ERR_ARGUMENT'),
      'tx.incr',
    );
    await assert.rejects(store.snapshot(bad), code('ERR_ARGUMENT'), 'snapshot');
    assert.throws(() => store.stream('s').tail(1, bad), code('ERR_ARGUMENT'), 'tail');
  });
  await withTempDir(async (dir) => {
    await assert.rejects(open(dir, null as never), code('ERR_ARGUMENT'), 'open');
  });
});
