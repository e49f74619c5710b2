// Zero-fill ahead on a regular file: segments are filled before their first use while
// durable batches are small (the file system's block allocation would otherwise add to each
// flush), and not while batches are large (the zeros would double the bytes written).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { open } from '../../src/index.js';
import { DATA_FILE_NAME } from '../../src/store/store.js';
import { withTempDir } from '../helpers/temp.js';

const MiB = 1024 * 1024;
const OPTIONS = { capacity: 64 * MiB, segmentSize: MiB } as const;

/** Writes `total` bytes in durable writes of `size` (one at a time), closes, and returns the data file's allocated bytes. */
async function allocatedAfter(dir: string, size: number, total: number): Promise<number> {
  const store = await open(dir, OPTIONS);
  const data = Buffer.alloc(size, 0x5a);
  for (let at = 0; at < total; at += size) await store.block.write(at / 512, data);
  await store.close(); // waits for a fill in progress
  return fs.statSync(path.join(dir, DATA_FILE_NAME)).blocks * 512;
}

test('small durable batches get segments zero-filled ahead; large ones do not', async () => {
  await withTempDir(async (root) => {
    const small = await allocatedAfter(path.join(root, 'small'), 4096, 3 * MiB);
    assert.ok(small >= 3 * MiB + MiB, `after 3 MiB of 4 KiB writes at least one segment past the log is filled (${small} bytes allocated)`);
    const large = await allocatedAfter(path.join(root, 'large'), 256 * 1024, 12 * MiB);
    assert.ok(large < 12 * MiB + MiB, `after 12 MiB of 256 KiB writes nothing past the log is filled (${large} bytes allocated)`);
  });
});

test('a new store zero-fills the segment its first commits take before open returns, and a reopened one does not wait for a fill', async () => {
  await withTempDir(async (root) => {
    const dir = path.join(root, 'fresh');
    const dataFile = path.join(dir, DATA_FILE_NAME);
    let store = await open(dir, OPTIONS);
    const atOpen = fs.statSync(dataFile).blocks * 512;
    assert.ok(atOpen >= MiB, `a whole segment is allocated when open returns (${atOpen} bytes)`);
    await store.block.write(0, Buffer.alloc(4096, 1));
    const afterWrite = fs.statSync(dataFile).blocks * 512;
    assert.ok(afterWrite - atOpen < 64 * 1024, `the first commit went into the filled segment: it allocated ${afterWrite - atOpen} bytes`);
    await store.close();
    store = await open(dir, OPTIONS);
    try {
      assert.deepEqual(await store.block.read(0, 8), Buffer.alloc(4096, 1));
    } finally {
      await store.close();
    }
  });
});

test('preallocate: open zero-fills every segment not yet used, keeps what the store holds, and refuses a value that is not a boolean', async () => {
  await withTempDir(async (root) => {
    const dir = path.join(root, 'pre');
    const dataFile = path.join(dir, DATA_FILE_NAME);
    let store = await open(dir, OPTIONS);
    const data = Buffer.alloc(3 * MiB, 0x33);
    for (let at = 0; at < data.length; at += 512 * 1024) await store.block.write(100 + at / 512, data.subarray(at, at + 512 * 1024));
    await store.close();
    const before = fs.statSync(dataFile).blocks * 512;
    assert.ok(before < 16 * MiB, `a store that wrote 3 MiB holds few of its 64 MiB (${before} bytes allocated)`);
    store = await open(dir, { ...OPTIONS, preallocate: true });
    try {
      const after = fs.statSync(dataFile).blocks * 512;
      // Segments already used keep what they hold (the open ones' unwritten tails included).
      assert.ok(after >= 56 * MiB, `preallocate left ${after} bytes allocated of a 64 MiB store`);
      assert.deepEqual(await store.block.read(100, data.length / 512), data, 'the data written before is intact');
      await store.block.write(50_000, Buffer.alloc(4096, 0x44));
    } finally {
      await store.close();
    }
    // Reopened (preallocated or not), it reads back and needs no fill: nothing more is allocated.
    store = await open(dir, { ...OPTIONS, preallocate: true });
    try {
      assert.deepEqual(await store.block.read(50_000, 8), Buffer.alloc(4096, 0x44));
    } finally {
      await store.close();
    }
    await assert.rejects(open(dir, { ...OPTIONS, preallocate: 'yes' as unknown as boolean }), (e: unknown) => (e as { code?: string }).code === 'ERR_ARGUMENT');
  });
});
