// The table CRC used for short ranges must give the native CRC32C's value for every length,
// offset and seed: records written by either are checked by the other.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { crc32c } from '@node-rs/crc32';
import { SMALL_CRC_BYTES, checksum, checksumRange, smallChecksum } from '../../src/log/crc.js';

test('the table CRC gives the check value of CRC32C', () => {
  assert.equal(smallChecksum(Buffer.from('123456789', 'latin1'), 0, 9, 0), 0xe3069283);
  assert.equal(checksum(Buffer.from('123456789', 'latin1'), 0), 0xe3069283);
});

test('the table CRC equals the native one for every short length, offset and seed', () => {
  const bytes = randomBytes(4 * SMALL_CRC_BYTES);
  const seeds = [0, 1, 0xffffffff, 0x80000000, 0x12345678];
  for (let i = 0; i < 64; i++) seeds.push(randomBytes(4).readUInt32LE(0));
  for (let length = 0; length <= 2 * SMALL_CRC_BYTES; length++) {
    for (const from of [0, 1, 3, 7, 8, 13]) {
      const seed = seeds[(length * 7 + from) % seeds.length]!;
      const native = crc32c(bytes.subarray(from, from + length), seed) >>> 0;
      assert.equal(smallChecksum(bytes, from, from + length, seed), native, `length ${length} from ${from} seed ${seed}`);
      assert.equal(checksumRange(bytes, from, from + length, seed), native, `checksumRange, length ${length}`);
      assert.equal(checksum(bytes.subarray(from, from + length), seed), native, `checksum, length ${length}`);
    }
  }
});

test('a flipped bit anywhere in a short range changes its CRC', () => {
  const bytes = randomBytes(96);
  const before = smallChecksum(bytes, 0, bytes.length, 7);
  for (let bit = 0; bit < bytes.length * 8; bit++) {
    bytes[bit >> 3]! ^= 1 << (bit & 7);
    assert.notEqual(smallChecksum(bytes, 0, bytes.length, 7), before, `bit ${bit}`);
    bytes[bit >> 3]! ^= 1 << (bit & 7);
  }
});
