// store.transaction(): optimistic serializable transactions over kv and block — own writes
// visible to own reads, conflicts re-run the function, exact totals under contention,
// range reads that see phantoms, read-only validation, ERR_CONFLICT after the retries.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { open, type Store } from '../../src/index.js';
import { code } from '../helpers/errors.js';
import { withTempDir } from '../helpers/temp.js';

const MiB = 1024 * 1024;

async function withStore(body: (store: Store) => Promise<void>, durability: 'full' | 'none' = 'full'): Promise<void> {
  await withTempDir(async (dir) => {
    const store = await open(dir, { capacity: 32 * MiB, segmentSize: 256 * 1024, durability });
    try {
      await body(store);
    } finally {
      await store.close();
    }
  });
}

test('32 concurrent transactions each incrementing the same 4 keys 100 times leave exact totals', async () => {
  await withStore(async (store) => {
    const keys = ['a', 'b', 'c', 'd'];
    let runs = 0;
    const worker = async (): Promise<void> => {
      for (let i = 0; i < 100; i++) {
        await store.transaction(
          async (tx) => {
            runs++;
            for (const k of keys) {
              const n = Number((await tx.get('counters', k))?.toString() ?? '0');
              tx.put('counters', k, String(n + 1));
            }
          },
          { retries: 10_000 },
        );
      }
    };
    await Promise.all(Array.from({ length: 32 }, worker));
    for (const k of keys) assert.equal(store.kv('counters').getSync(k)?.toString(), '3200', `key ${k} counts every increment`);
    assert.ok(runs > 3200, 'some transactions conflicted and ran again');
  }, 'none');
});

test('a transaction sees its own writes, deletes and block writes', async () => {
  await withStore(async (store) => {
    await store.kv('p').put('x', 'old');
    await store.block.write(0, Buffer.alloc(1024, 1));
    const result = await store.transaction(async (tx) => {
      tx.put('p', 'x', 'new');
      tx.put('p', 'y', 'made');
      tx.delete('p', 'z');
      tx.write(1, Buffer.alloc(512, 9));
      const seen = {
        x: (await tx.get('p', 'x'))?.toString(),
        y: tx.has('p', 'y'),
        list: (await tx.list('p')).map((e) => `${e.key}=${e.value}`),
        block: [...(await tx.read(0, 2))].filter((_, i) => i % 512 === 0),
      };
      return seen;
    });
    assert.deepEqual(result, { x: 'new', y: true, list: ['x=new', 'y=made'], block: [1, 9] });
    assert.equal(store.kv('p').getSync('x')?.toString(), 'new');
    assert.equal((await store.block.read(1, 1))[0], 9);
  });
});

test('a write between a transaction\'s read and its commit makes it run again, on fresh reads', async () => {
  await withStore(async (store) => {
    await store.kv('p').put('k', '1');
    let runs = 0;
    await store.transaction(async (tx) => {
      runs++;
      const v = (await tx.get('p', 'k'))!.toString();
      if (runs === 1) await store.kv('p').put('k', '10'); // someone else writes in between
      tx.put('p', 'k', String(Number(v) + 1));
    });
    assert.equal(runs, 2);
    assert.equal(store.kv('p').getSync('k')?.toString(), '11');
  });
});

test('a key added to a range a transaction listed is a conflict (no phantoms)', async () => {
  await withStore(async (store) => {
    await store.kv('p').put('item:1', 'x');
    let runs = 0;
    await store.transaction(async (tx) => {
      runs++;
      const items = await tx.list('p', { prefix: 'item:' });
      if (runs === 1) await store.kv('p').put('item:2', 'y');
      tx.put('p', 'count', String(items.length));
    });
    assert.equal(runs, 2);
    assert.equal(store.kv('p').getSync('count')?.toString(), '2');
  });
});

test('a block range read then rewritten by someone else is a conflict', async () => {
  await withStore(async (store) => {
    await store.block.write(0, Buffer.alloc(512, 1));
    let runs = 0;
    await store.transaction(async (tx) => {
      runs++;
      const b = await tx.read(0, 1);
      if (runs === 1) await store.block.write(0, Buffer.alloc(512, 2));
      tx.put('p', 'copy', String(b[0]));
    });
    assert.equal(runs, 2);
    assert.equal(store.kv('p').getSync('copy')?.toString(), '2');
  });
});

test('a read-only transaction writes nothing and re-runs when its reads went stale', async () => {
  await withStore(async (store) => {
    await store.kv('p').put('a', '1');
    const before = store.stats().commits;
    let runs = 0;
    const seen = await store.transaction(async (tx) => {
      runs++;
      const a = (await tx.get('p', 'a'))!.toString();
      if (runs === 1) await store.kv('p').put('a', '2');
      return a;
    });
    assert.equal(seen, '2');
    assert.equal(runs, 2);
    assert.equal(store.stats().commits, before + 1, 'only the outside put committed');
  });
});

test('a transaction that keeps conflicting fails with ERR_CONFLICT and writes nothing', async () => {
  await withStore(async (store) => {
    await store.kv('p').put('k', '0');
    let n = 0;
    await assert.rejects(
      store.transaction(
        async (tx) => {
          await tx.get('p', 'k');
          await store.kv('p').put('k', String(++n));
          tx.put('p', 'mine', 'x');
        },
        { retries: 3 },
      ),
      code('ERR_CONFLICT'),
    );
    assert.equal(n, 4, 'ran once and retried three times');
    assert.equal(store.kv('p').has('mine'), false);
  });
});

test('an error thrown by the function ends the transaction without writing; the tx object is then dead', async () => {
  await withStore(async (store) => {
    let kept: Parameters<Parameters<Store['transaction']>[0]>[0] | undefined;
    await assert.rejects(
      store.transaction(async (tx) => {
        kept = tx;
        tx.put('p', 'k', 'v');
        throw new Error('no thanks');
      }),
      /no thanks/,
    );
    assert.equal(store.kv('p').has('k'), false);
    assert.throws(() => kept!.put('p', 'k', 'v'), code('ERR_ARGUMENT'));
  });
});

test('transactions count with incr, across pools', async () => {
  await withStore(async (store) => {
    await Promise.all(
      Array.from({ length: 20 }, () =>
        store.transaction(
          async (tx) => {
            await tx.incr('stats', 'hits', 1, { initial: 1 });
            tx.put('log', `entry-${Math.random()}`, 'x');
          },
          { retries: 1000 },
        ),
      ),
    );
    assert.equal(store.kv('stats').getSync('hits')?.toString(), '20');
    assert.equal(store.kv('log').count(), 20);
  }, 'none');
});
