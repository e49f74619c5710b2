// The access tracker behind mg's h, l, W and Z flags and me's fetch= and la=: an item is
// tracked at one version; keys that share a version (one commit wrote them) stay apart; a
// full table forgets the items accessed longest ago, never a recent one.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AccessTracker, MAX_TRACKED_ITEMS } from '../../../src/server/memcached/cache.js';

const k = (text: string): Buffer => Buffer.from(text, 'latin1');

test('tracker: fetched and token sent, per key and version', () => {
  const t = new AccessTracker(64);
  assert.equal(t.get(k('a'), 5), undefined);
  t.fetched(k('a'), 5, 1000);
  assert.deepEqual(t.get(k('a'), 5), { version: 5, fetched: true, lastAccessMs: 1000, tokenSent: false });
  assert.equal(t.get(k('a'), 6), undefined, 'another version of the item is not tracked');
  assert.equal(t.get(k('b'), 5), undefined, 'another key at the same version is not tracked');
  t.tokenSent(k('a'), 5, 2000);
  assert.deepEqual(t.get(k('a'), 5), { version: 5, fetched: true, lastAccessMs: 1000, tokenSent: true }, 'a token does not count as an access');
  t.fetched(k('a'), 5, 3000);
  assert.equal(t.get(k('a'), 5)?.lastAccessMs, 3000);
  t.tokenSent(k('c'), 7, 4000);
  assert.deepEqual(t.get(k('c'), 7), { version: 7, fetched: false, lastAccessMs: 4000, tokenSent: true });
  assert.equal(t.size, 2);
});

test('tracker: keys written by one commit share a version and stay apart', () => {
  const t = new AccessTracker(64);
  const keys = Array.from({ length: 6 }, (_, i) => k(`key:${i}`));
  for (const [i, key] of keys.entries()) if (i % 2 === 0) t.fetched(key, 42, 100 + i);
  for (const [i, key] of keys.entries()) {
    if (i % 2 === 0) assert.equal(t.get(key, 42)?.lastAccessMs, 100 + i, `key ${i}`);
    else assert.equal(t.get(key, 42), undefined, `key ${i}`);
  }
});

test('tracker: a full table forgets the items accessed longest ago', () => {
  const slots = 1024;
  const t = new AccessTracker(slots);
  // Ten times more items than slots, each fetched once at a rising time; one item is fetched
  // again after every insert, so it stays the most recent in its window.
  const hot = k('hot');
  t.fetched(hot, 1, 0);
  for (let v = 2; v < 10 * slots; v++) {
    t.fetched(k(`key:${v}`), v, v);
    t.fetched(hot, 1, v);
  }
  assert.equal(t.get(hot, 1)?.lastAccessMs, 10 * slots - 1, 'the item in use is kept');
  assert.ok(t.size <= slots);
  let recent = 0;
  for (let v = 10 * slots - 64; v < 10 * slots; v++) if (t.get(k(`key:${v}`), v) !== undefined) recent++;
  let old = 0;
  for (let v = 2; v < 2 + 64; v++) if (t.get(k(`key:${v}`), v) !== undefined) old++;
  assert.ok(recent >= 60, `the latest items are tracked (${recent} of 64)`);
  assert.equal(old, 0, 'the earliest items are forgotten');
});

test('tracker: the table size is a power of two', () => {
  assert.equal(MAX_TRACKED_ITEMS & (MAX_TRACKED_ITEMS - 1), 0);
  assert.throws(() => new AccessTracker(1000), { code: 'ERR_ARGUMENT' });
});
