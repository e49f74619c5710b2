// The reply builders' number formatting: decimalDigits and writeDecimal against String(n),
// at every power of ten and its neighbours up to the largest safe integer.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { decimalDigits, writeDecimal } from '../../../src/server/memcached/protocol.js';

test('decimalDigits and writeDecimal agree with String(n)', () => {
  const numbers = [0, 1, 7, 2 ** 32 - 1, 2 ** 32, Number.MAX_SAFE_INTEGER];
  for (let p = 1; p <= 1e15; p *= 10) numbers.push(p - 1, p, p + 1, 3 * p);
  const out = Buffer.alloc(40, 0x2e);
  for (const n of numbers) {
    const text = String(n);
    assert.equal(decimalDigits(n), text.length, `digits of ${text}`);
    out.fill(0x2e);
    const end = writeDecimal(out, 3, n);
    assert.equal(end, 3 + text.length, `end after ${text}`);
    assert.equal(out.toString('latin1', 0, end + 1), `...${text}.`, `bytes of ${text}`);
  }
});
