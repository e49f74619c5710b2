// Interop with an npm memcached client that speaks the text protocol: `memcached` (3site's
// node-memcached, the most used one). It keeps a value's type in the client flags (string,
// number, JSON, Buffer), so flags must round-trip for values to come back as they went in.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import Memcached from 'memcached';
import { withServer } from '../../server/memcached/harness.js';

/** Promisifies one client call (the client is callback-based). */
function call<T>(fn: (cb: (error: unknown, result: T) => void) => void): Promise<T> {
  return new Promise((resolve, reject) => fn((error, result) => (error ? reject(error instanceof Error ? error : new Error(String(error))) : resolve(result))));
}

test('npm memcached: typed values, multi-get, gets/cas, add/replace, append/prepend, incr/decr, touch, del, flush, stats', async () => {
  await withServer(async (h) => {
    const mc = new Memcached(`127.0.0.1:${h.port}`, { retries: 0, timeout: 5000, idle: 0 });
    try {
      const json = { name: 'atomio', list: [1, 2, 3], nested: { ok: true } };
      const bytes = Buffer.from([0, 1, 2, 250, 13, 10]);
      assert.equal(await call((cb) => mc.set('str', 'hello', 0, cb)), true);
      assert.equal(await call((cb) => mc.set('json', json, 100, cb)), true);
      assert.equal(await call((cb) => mc.set('num', 42, 0, cb)), true);
      assert.equal(await call((cb) => mc.set('buf', bytes, 0, cb)), true);
      assert.equal(await call<unknown>((cb) => mc.get('str', cb)), 'hello');
      assert.deepEqual(await call<unknown>((cb) => mc.get('json', cb)), json, 'JSON comes back as an object: the flags held');
      assert.equal(await call<unknown>((cb) => mc.get('num', cb)), 42);
      assert.deepEqual(await call<unknown>((cb) => mc.get('buf', cb)), bytes);
      assert.deepEqual(await call<Record<string, unknown>>((cb) => mc.getMulti(['str', 'num', 'missing'], cb)), { str: 'hello', num: 42 });

      const g = await call<{ cas: string; str: unknown }>((cb) => mc.gets('str', cb as (e: unknown, r: unknown) => void));
      assert.equal(g.str, 'hello');
      assert.equal(Number(g.cas), h.server.cache.pool.versionOf('str'), 'the CAS is the kv version');
      assert.equal(await call((cb) => mc.cas('str', 'bye', g.cas, 0, cb)), true);
      assert.equal(await call((cb) => mc.cas('str', 'again', g.cas, 0, cb)), false, 'a stale CAS is refused');
      assert.equal(await call<unknown>((cb) => mc.get('str', cb)), 'bye');

      assert.equal(await call((cb) => mc.add('new', 'a', 0, cb)), true);
      await assert.rejects(call((cb) => mc.add('new', 'b', 0, cb)), 'add of a present key fails (NOT_STORED)');
      assert.equal(await call((cb) => mc.replace('new', 'c', 0, cb)), true);
      await assert.rejects(call((cb) => mc.replace('absent', 'c', 0, cb)));
      assert.equal(await call((cb) => mc.append('new', 'd', cb)), true);
      assert.equal(await call((cb) => mc.prepend('new', 'b', cb)), true);
      assert.equal(await call<unknown>((cb) => mc.get('new', cb)), 'bcd');

      assert.equal(await call((cb) => mc.set('count', '10', 0, cb)), true);
      assert.equal(await call<unknown>((cb) => mc.incr('count', 5, cb)), 15);
      assert.equal(await call<unknown>((cb) => mc.decr('count', 20, cb)), 0);
      assert.equal(await call<unknown>((cb) => mc.incr('nocount', 1, cb)), false, 'incr of a missing key');

      await new Promise<void>((resolve, reject) => mc.touch('json', 500, (error) => (error ? reject(error instanceof Error ? error : new Error(String(error))) : resolve())));
      assert.match(await (await h.connect()).call('mg json t\r\n'), /^HD t500\r\n$/);
      assert.equal(await call((cb) => mc.del('num', cb)), true);
      assert.equal(await call<unknown>((cb) => mc.get('num', cb)), undefined);

      const stats = await call<{ pid?: number; curr_items?: number }[]>((cb) => mc.stats(cb as (e: unknown, r: unknown) => void));
      assert.equal(stats[0]!.pid, process.pid);
      const version = await call<{ version: string }[]>((cb) => mc.version(cb as (e: unknown, r: unknown) => void));
      assert.equal(version[0]!.version, '1.6.0');
      await new Promise<void>((resolve, reject) => mc.flush((error) => (error ? reject(error instanceof Error ? error : new Error(String(error))) : resolve())));
      assert.equal(await call<unknown>((cb) => mc.get('json', cb)), undefined, 'flush emptied the server');
    } finally {
      mc.end();
    }
  });
});
