// The crash model (model.ts) on made-up stores: it must accept every state a correct engine
// can leave after a kill and name the broken promise for each state it cannot.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { LBA_RANGE, SECTOR, fillPattern, type Batch } from './common.js';
import { Model, applyBatch, snapshotFrom, type WriterLog } from './model.js';

const batches: Batch[] = [
  { id: 11, ops: [[0, 4, 'w'], [100, 2, 'w']] },
  { id: 12, ops: [[2, 4, 'w']] },
  { id: 13, ops: [[200, 3, 'w'], [0, 1, 't']] },
  { id: 14, ops: [[300, 2, 'w'], [100, 1, 'w']] },
];

/** A store image that holds `present` (in order), with each batch's version = 1000 + id. */
function image(present: Batch[], tamper?: (data: Buffer, versions: Float64Array) => void): ReturnType<typeof snapshotFrom> {
  const ids = new Float64Array(LBA_RANGE);
  for (const b of present) applyBatch(ids, b);
  const data = Buffer.alloc(LBA_RANGE * SECTOR);
  const versions = new Float64Array(LBA_RANGE);
  ids.forEach((id, lba) => {
    if (id === 0) return;
    fillPattern(id, lba, 1, data, lba * SECTOR);
    versions[lba] = 1000 + id;
  });
  tamper?.(data, versions);
  return snapshotFrom(data, versions);
}

function log(acked: number[]): WriterLog {
  return { label: 'writer', issued: batches, acked: new Map(acked.map((id) => [id, 1000 + id])) };
}

test('a prefix that covers every acknowledged batch passes, with or without unacknowledged ones', () => {
  for (const n of [2, 3, 4]) {
    const verdict = new Model().check([log([11, 12])], image(batches.slice(0, n)));
    assert.ok(verdict.ok, verdict.message);
    assert.deepEqual(verdict.unackedPresent, [n - 2]);
  }
});

test('a lost acknowledged batch is a durability failure', () => {
  const verdict = new Model().check([log([11, 12, 13])], image(batches.slice(0, 2)));
  assert.ok(!verdict.ok);
  assert.match(verdict.message, /durability: an acknowledged batch is not all there: lba 200/);
});

test('half a batch is an atomicity failure', () => {
  const half = image(batches.slice(0, 3), (data, versions) => {
    data.fill(0, 201 * SECTOR, 203 * SECTOR);
    versions.fill(0, 201, 203);
  });
  const verdict = new Model().check([log([11, 12])], half);
  assert.ok(!verdict.ok);
  assert.match(verdict.message, /atomicity: a batch is half there: lba 201/);
});

test('a batch missing before a later one that is there is a hole in the log', () => {
  const verdict = new Model().check([log([11])], image([batches[0]!, batches[1]!, batches[3]!]));
  assert.ok(!verdict.ok);
  assert.match(verdict.message, /batches 13 are nowhere in the store though batches issued after them are/);
});

test('older data where an acknowledged batch overwrote it is caught', () => {
  const stale = image(batches.slice(0, 2), (data, versions) => {
    fillPattern(11, 2, 2, data, 2 * SECTOR);
    versions.fill(1011, 2, 4);
  });
  const verdict = new Model().check([log([11, 12])], stale);
  assert.ok(!verdict.ok);
  assert.match(verdict.message, /durability: .* lba 2 should hold batch 12 .* but holds batch 11/);
});

test('wrong versions and damaged sectors are caught', () => {
  const wrongVersion = image(batches.slice(0, 2), (_data, versions) => versions.fill(999, 2, 3));
  assert.match(new Model().check([log([11, 12])], wrongVersion).message, /versions:\n {2}lba 2 holds batch 12 .* versionOf says 999/);
  const reordered = image(batches.slice(0, 2), (_data, versions) => versions.fill(1005, 2, 6));
  assert.match(new Model().check([log([11])], reordered).message, /order: batch 12 was handed to the store after batch 11 but has version 1005/);
  const damaged = image(batches.slice(0, 2), (data) => {
    data.writeUInt8(data.readUInt8(2 * SECTOR + 100) ^ 1, 2 * SECTOR + 100);
  });
  assert.match(new Model().check([log([11, 12])], damaged).message, /integrity: [^]*lba 2: batch 12's sector is damaged at byte 100/);
  const misplaced = image(batches.slice(0, 2), (data) => fillPattern(12, 7, 1, data, 6 * SECTOR));
  assert.match(new Model().check([log([11, 12])], misplaced).message, /integrity: [^]*sector for lba 7 sits at lba 6/);
});

test('the model carries the verified state into the next check', () => {
  const model = new Model();
  assert.ok(model.check([log([11, 12])], image(batches.slice(0, 3))).ok);
  const next: WriterLog = { label: 'next', issued: [{ id: 21, ops: [[500, 1, 'w']] }], acked: new Map([[21, 2000]]) };
  const after = image([...batches.slice(0, 3), ...next.issued], (_data, versions) => versions.fill(2000, 500, 501));
  assert.ok(model.check([next], after).ok);
  // Batch 13 was found last time: losing it now is caught even though nobody acknowledged it.
  const lost = image([...batches.slice(0, 2), ...next.issued], (_data, versions) => versions.fill(2000, 500, 501));
  const model2 = new Model();
  assert.ok(model2.check([log([11, 12])], image(batches.slice(0, 3))).ok);
  assert.ok(!model2.check([next], lost).ok);
});
