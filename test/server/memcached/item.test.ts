// The item encoding: values written before explicit CAS values existed read as they did, and
// an explicit CAS is kept apart from the data.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { dataOf, dataStart, decodeItem, encodeItem, explicitCasOf, flagsOf } from '../../../src/server/memcached/item.js';

test('a value in the old layout (no CAS bit) decodes to its flags and data, with no explicit CAS', () => {
  // Bytes as every earlier version wrote them: magic, state STALE, flags 7, written at 1000 s, "hi".
  const old = Buffer.from([0xac, 0x01, 0, 0, 0, 7, 0, 0, 0x03, 0xe8, 0x68, 0x69]);
  assert.deepEqual(decodeItem(old), { flags: 7, stale: true, writtenAt: 1000, cas: undefined, data: Buffer.from('hi') });
  assert.equal(explicitCasOf(old), undefined);
  assert.equal(dataStart(old), 10);
  assert.ok(encodeItem(7, Buffer.from('hi'), 1_000_000, undefined, true).equals(old), 'without E an item is written as before');
});

test('an explicit CAS sits between header and data; appended data and flags are unaffected', () => {
  const v = encodeItem(0xffffffff, Buffer.from('ab'), 5000, 2n ** 64n - 1n, false, Buffer.from('cd'), true);
  const item = decodeItem(v);
  assert.equal(item.cas, 2n ** 64n - 1n);
  assert.equal(item.data.toString(), 'cdab');
  assert.equal(item.flags, 0xffffffff);
  assert.equal(item.stale, false);
  assert.equal(flagsOf(v), 0xffffffff);
  assert.equal(dataOf(v).toString(), 'cdab');
  assert.equal(explicitCasOf(v), 2n ** 64n - 1n);
  assert.equal(decodeItem(encodeItem(0, Buffer.alloc(0), 0, 0n, true)).cas, 0n, 'a CAS of 0 is a CAS');
  assert.deepEqual(decodeItem(Buffer.from('raw')), { flags: 0, stale: false, writtenAt: 0, cas: undefined, data: Buffer.from('raw') }, 'a value without a header');
});
