// Record encoding: the gathered form (large write data referred to, not copied) is the same
// bytes as the copied form, and decodes and checks as a record.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { Gather, OpType, RecordKind, decodeRecordMeta, encodeRecord, recordBytesFor, resyncAfter, verifyChunks, type LogOp } from '../../src/log/format.js';

const SECTOR = 512;

function ops(): LogOp[] {
  return [
    { type: OpType.write, lba: 8, count: 1, version: 5, expiresAt: 0, data: randomBytes(SECTOR) },
    { type: OpType.put, pool: 1, key: Buffer.from('key'), version: 5, expiresAt: 0, value: randomBytes(100) },
    { type: OpType.write, lba: 1000, count: 129, version: 5, expiresAt: 0, data: randomBytes(129 * SECTOR) },
    { type: OpType.trim, lba: 0, count: 4, version: 5, expiresAt: 0 },
  ];
}

test('a record encoded with its large write data referred to is the same bytes as one copied whole', () => {
  const list = ops();
  const fields = { seq: 5, batchSeq: 5, batchCount: 1, durableSeq: 4, kind: RecordKind.commit, ops: list };
  const bytes = recordBytesFor(list, SECTOR);
  const nonce = 0x1234567;
  const at = 4096;

  const whole = Buffer.alloc(bytes + 16, 0xee);
  const copiedOffsets: number[] = [];
  const copied = new Gather(whole, 16);
  assert.equal(encodeRecord(fields, SECTOR, nonce, at, copied, copiedOffsets), bytes);
  assert.equal(copied.finish().length, 1, 'nothing referred to: one part');

  const large = (list[2] as { data: Uint8Array }).data;
  const gathered = new Gather(Buffer.alloc(bytes - large.length));
  const gatheredOffsets: number[] = [];
  assert.equal(encodeRecord(fields, SECTOR, nonce, at, gathered, gatheredOffsets, 32 * 1024), bytes);
  const parts = gathered.finish();
  assert.ok(parts.some((p) => p.buffer === large.buffer), 'the large write is sent from its own buffer');
  assert.ok(!parts.some((p) => p.buffer === (list[0] as { data: Uint8Array }).data.buffer), 'the small one is copied');
  const joined = Buffer.concat(parts);
  assert.deepEqual(joined, whole.subarray(16));
  assert.deepEqual(gatheredOffsets, copiedOffsets);

  const decoded = decodeRecordMeta(joined, nonce, at, SECTOR, bytes);
  assert.ok(decoded.ok);
  const write = decoded.record.ops[2]!;
  const from = write.dataOffset - at;
  assert.equal(verifyChunks(joined.subarray(from, from + 129 * SECTOR + 17 * 4), nonce, write.dataOffset), -1, 'its chunks check');
});

test('a scan that finds no record resyncs past every whole zero block at once, and only past zeros', () => {
  const alignment = 512;
  const segment = Buffer.alloc(1024 * 1024);
  // Log up to 700, zeros to the end of its block and for many blocks after, then more log
  // at 300 KiB + 512 (not on a 64 KiB boundary), then zeros to the end.
  segment.fill(7, 0, 700);
  const more = 300 * 1024 + 512;
  segment.fill(9, more + 40, more + 90);
  assert.equal(resyncAfter(segment, 700, 700, alignment), more, 'from padding to the block holding the next bytes');
  assert.equal(resyncAfter(segment, 600, 600, alignment), 608, 'inside a block that is not zero: the next record position');
  assert.equal(resyncAfter(segment, more + 100, more + 100, alignment), segment.length, 'to the end, past the unwritten tail');
  // A view of part of a segment (recovery scans from a head's offset): offsets in the segment, positions in the view.
  const from = 4096;
  const view = segment.subarray(from);
  assert.equal(resyncAfter(view, 700, from + 700, alignment), more, 'from the same zeros, seen through a view that starts at 4 KiB');
});
