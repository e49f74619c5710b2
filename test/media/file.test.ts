// FileMedia and the small-file helpers against a real file system, in temp directories.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import {
  deviceNumbers,
  ensureDirectory,
  fileExists,
  openFileMedia,
  readSmallFile,
  writeSmallFileDurably,
} from '../../src/media/file.js';
import { InvariantError } from '../../src/base/assert.js';
import { isAtomioError } from '../../src/base/errors.js';

async function withTempDir(body: (dir: string) => Promise<void>): Promise<void> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'atomio-file-'));
  try {
    await body(dir);
  } finally {
    await fsp.rm(dir, { recursive: true, force: true });
  }
}

function pattern(length: number, salt: number): Uint8Array {
  const bytes = new Uint8Array(length);
  for (let i = 0; i < length; i++) bytes[i] = (i * 31 + salt) & 0xff;
  return bytes;
}

test('read past the end of the file fills zeros, over stale buffer contents', async () => {
  await withTempDir(async (dir) => {
    const media = await openFileMedia(path.join(dir, 'log'), { size: 1 << 20, create: true });
    try {
      await media.write(pattern(100, 1), 0);
      const buffer = new Uint8Array(300).fill(0xee);
      await media.read(buffer, 0);
      assert.deepEqual(buffer.subarray(0, 100), pattern(100, 1));
      assert.ok(buffer.subarray(100).every((b) => b === 0), 'bytes past EOF are zero');
      const far = new Uint8Array(4096).fill(0xee);
      await media.read(far, (1 << 20) - 4096);
      assert.ok(far.every((b) => b === 0), 'a read wholly past EOF is zero');
    } finally {
      await media.close();
    }
  });
});

test('writes round-trip through read, across a close and reopen', async () => {
  await withTempDir(async (dir) => {
    const file = path.join(dir, 'log');
    const media = await openFileMedia(file, { size: 4 << 20, create: true });
    const writes: [number, Uint8Array][] = [
      [0, pattern(512, 2)],
      [4096 + 7, pattern(10_000, 3)],
      [(4 << 20) - 1000, pattern(1000, 4)],
    ];
    for (const [offset, data] of writes) await media.write(data, offset);
    await media.flush();
    await media.close();
    const reopened = await openFileMedia(file, { size: 4 << 20, create: false });
    try {
      for (const [offset, data] of writes) {
        const buffer = new Uint8Array(data.length);
        await reopened.read(buffer, offset);
        assert.deepEqual(buffer, data, `bytes at ${offset}`);
      }
    } finally {
      await reopened.close();
    }
  });
});

test('large durable writes (cut into pieces written side by side) land whole, at any offset', async () => {
  await withTempDir(async (dir) => {
    const file = path.join(dir, 'log');
    const media = await openFileMedia(file, { size: 16 << 20, create: true });
    // Below the cut, just above it, unaligned starts and lengths, and more pieces than run at once.
    const writes: Array<[number, Uint8Array]> = [
      [0, pattern((512 << 10) - 1, 11)],
      [1 << 20, pattern(512 << 10, 12)],
      [(2 << 20) + 1000, pattern((3 << 20) + 777, 13)],
      [(6 << 20) + 512, pattern(8 << 20, 14)],
    ];
    try {
      for (const [offset, data] of writes) await media.writeDurable(data, offset);
      for (const [offset, data] of writes) {
        const buffer = new Uint8Array(data.length);
        await media.read(buffer, offset);
        assert.ok(Buffer.from(buffer).equals(data), `the ${data.length} bytes written durably at ${offset} read back`);
      }
      const gap = new Uint8Array(1000);
      await media.read(gap, 2 << 20);
      assert.ok(gap.every((b) => b === 0), 'nothing was written before the unaligned start');
    } finally {
      await media.close();
    }
  });
});

test('readSync returns written bytes and zero-fills past the end of the file', async () => {
  await withTempDir(async (dir) => {
    const media = await openFileMedia(path.join(dir, 'log'), { size: 65536, create: true });
    try {
      await media.write(pattern(1000, 5), 24);
      const buffer = new Uint8Array(2048).fill(0xaa);
      media.readSync(buffer, 0);
      assert.ok(buffer.subarray(0, 24).every((b) => b === 0), 'hole before the write reads as zeros');
      assert.deepEqual(buffer.subarray(24, 1024), pattern(1000, 5));
      assert.ok(buffer.subarray(1024).every((b) => b === 0), 'past EOF reads as zeros');
    } finally {
      await media.close();
    }
  });
});

test('access outside [0, size) throws InvariantError and writes nothing', async () => {
  await withTempDir(async (dir) => {
    const file = path.join(dir, 'log');
    const media = await openFileMedia(file, { size: 4096, create: true });
    try {
      await assert.rejects(media.write(new Uint8Array(2), 4095), InvariantError);
      await assert.rejects(media.read(new Uint8Array(1), 4096), InvariantError);
      await assert.rejects(media.read(new Uint8Array(1), -1), InvariantError);
      await assert.rejects(media.read(new Uint8Array(1), 0.5), InvariantError);
      assert.throws(() => media.readSync(new Uint8Array(4097), 0), InvariantError);
      assert.equal((await fsp.stat(file)).size, 0);
    } finally {
      await media.close();
    }
  });
});

test('the file is sparse: it grows only as written and never past size', async () => {
  await withTempDir(async (dir) => {
    const file = path.join(dir, 'log');
    const size = 8 << 20;
    const media = await openFileMedia(file, { size, create: true });
    try {
      assert.equal((await fsp.stat(file)).size, 0, 'not preallocated');
      await media.write(pattern(512, 6), 1 << 20);
      assert.equal((await fsp.stat(file)).size, (1 << 20) + 512);
      await media.write(pattern(512, 7), size - 512);
      const stat = await fsp.stat(file);
      assert.equal(stat.size, size);
      assert.ok(stat.blocks * 512 < size, `holes stay unallocated (${stat.blocks} blocks)`);
    } finally {
      await media.close();
    }
  });
});

test('a closed FileMedia rejects access with ERR_CLOSED after finishing writes in flight', async () => {
  await withTempDir(async (dir) => {
    const file = path.join(dir, 'log');
    const media = await openFileMedia(file, { size: 1 << 20, create: true });
    const inFlight = media.write(pattern(65536, 8), 0);
    const closed = media.close();
    await assert.rejects(media.read(new Uint8Array(1), 0), (e) => isAtomioError(e, 'ERR_CLOSED'));
    assert.throws(() => media.readSync(new Uint8Array(1), 0), (e) => isAtomioError(e, 'ERR_CLOSED'));
    await inFlight;
    await closed;
    await media.close(); // idempotent
    assert.deepEqual(new Uint8Array(await fsp.readFile(file)), pattern(65536, 8));
  });
});

test('openFileMedia without create rejects a missing file with ENOENT', async () => {
  await withTempDir(async (dir) => {
    await assert.rejects(openFileMedia(path.join(dir, 'missing'), { size: 4096, create: false }), { code: 'ENOENT' });
    assert.equal(await fileExists(path.join(dir, 'missing')), false);
  });
});

test('openFileMedia rejects a character device and a malformed size with ERR_ARGUMENT', async (t) => {
  await withTempDir(async (dir) => {
    await assert.rejects(openFileMedia(path.join(dir, 'x'), { size: -1, create: true }), (e) =>
      isAtomioError(e, 'ERR_ARGUMENT'),
    );
  });
  if (!fs.existsSync('/dev/null')) return t.skip('no /dev/null');
  await assert.rejects(openFileMedia('/dev/null', { size: 4096, create: false }), (e) =>
    isAtomioError(e, 'ERR_ARGUMENT'),
  );
});

test('deviceNumbers decodes rdev into the major:minor that sysfs reports', async (t) => {
  const classDir = '/sys/class/block';
  if (!fs.existsSync(classDir)) return t.skip('no sysfs');
  let checked = 0;
  for (const name of await fsp.readdir(classDir)) {
    const devicePath = path.join('/dev', name);
    let stat: fs.Stats;
    try {
      stat = await fsp.stat(devicePath);
    } catch {
      continue;
    }
    if (!stat.isBlockDevice()) continue;
    const expected = (await fsp.readFile(path.join(classDir, name, 'dev'), 'utf8')).trim();
    const { major, minor } = deviceNumbers(stat.rdev);
    assert.equal(`${major}:${minor}`, expected, devicePath);
    checked++;
  }
  if (checked === 0) return t.skip('no block device visible in /dev');
  // The wide encoding: major 259 (NVMe), minor 300 overflow the low 8-bit fields.
  const wide = (259n & 0xfffn) << 8n | (300n & 0xffn) | ((300n & ~0xffn) << 12n);
  assert.deepEqual(deviceNumbers(wide), { major: 259, minor: 300 });
});

test('a block device takes its size from the device (opt-in: ATOMIO_TEST_BLOCK_DEVICE, destroys its data)', async (t) => {
  const device = process.env.ATOMIO_TEST_BLOCK_DEVICE;
  if (device === undefined) return t.skip('set ATOMIO_TEST_BLOCK_DEVICE to a scratch block device');
  const media = await openFileMedia(device, { size: 0, create: false });
  try {
    assert.ok(media.isBlockDevice);
    assert.ok(media.size > 0);
    await media.write(pattern(4096, 9), 0);
    const buffer = new Uint8Array(4096);
    await media.read(buffer, 0);
    assert.deepEqual(buffer, pattern(4096, 9));
  } finally {
    await media.close();
  }
  await assert.rejects(openFileMedia(device, { size: media.size + 512, create: false }), (e) =>
    isAtomioError(e, 'ERR_ARGUMENT'),
  );
});

test('writeSmallFileDurably replaces content whole and leaves no temporary file', async () => {
  await withTempDir(async (dir) => {
    const nested = path.join(dir, 'a', 'b');
    await ensureDirectory(nested);
    await ensureDirectory(nested); // idempotent
    const file = path.join(nested, 'meta.json');
    assert.equal(await readSmallFile(file), undefined);
    assert.equal(await fileExists(file), false);
    await writeSmallFileDurably(file, new TextEncoder().encode('first'));
    await writeSmallFileDurably(file, new TextEncoder().encode('second, longer'));
    assert.equal((await readSmallFile(file))?.toString('utf8'), 'second, longer');
    assert.equal(await fileExists(file), true);
    assert.deepEqual(await fsp.readdir(nested), ['meta.json']);
  });
});

test('writeDurable writes through the O_DSYNC descriptor: read back at once and after a reopen, and closed with the media', async () => {
  await withTempDir(async (dir) => {
    const file = path.join(dir, 'log');
    const media = await openFileMedia(file, { size: 1 << 20, create: true });
    await media.write(pattern(4096, 5), 0);
    await media.writeDurable(pattern(8192, 6), 4096);
    const back = new Uint8Array(8192);
    await media.read(back, 4096);
    assert.deepEqual(back, pattern(8192, 6), 'the plain descriptor sees the durable write');
    const fdsOpen = fs.readdirSync('/proc/self/fd').length;
    await media.close();
    assert.equal(fs.readdirSync('/proc/self/fd').length, fdsOpen - 2, 'both descriptors are closed');
    await assert.rejects(media.writeDurable(pattern(512, 1), 0), (e: unknown) => isAtomioError(e, 'ERR_CLOSED'));
    const reopened = await openFileMedia(file, { size: 1 << 20, create: false });
    try {
      const again = new Uint8Array(8192);
      await reopened.read(again, 4096);
      assert.deepEqual(again, pattern(8192, 6));
    } finally {
      await reopened.close();
    }
  });
});

test('writeParts and writePartsDurable write the parts back to back, as one buffer would be written', async () => {
  await withTempDir(async (dir) => {
    const file = path.join(dir, 'log');
    const media = await openFileMedia(file, { size: 8 << 20, create: true });
    try {
      // More parts than one pwritev takes (1024), of odd sizes, so that the durable write's
      // pieces (cut at page boundaries of the medium) fall inside parts.
      const whole = pattern(1500 * 1003, 7);
      const parts: Uint8Array[] = [];
      for (let at = 0; at < whole.length; at += 1003) parts.push(whole.subarray(at, at + 1003));
      await media.writeParts(parts, 100);
      const back = new Uint8Array(whole.length);
      await media.read(back, 100);
      assert.deepEqual(back, whole);
      const other = pattern(whole.length, 9);
      const otherParts: Uint8Array[] = [];
      for (let at = 0; at < other.length; at += 1003) otherParts.push(other.subarray(at, at + 1003));
      await media.writePartsDurable(otherParts, 4096 * 100 + 100);
      await media.read(back, 4096 * 100 + 100);
      assert.deepEqual(back, other);
      const before = new Uint8Array(100);
      await media.read(before, 4096 * 100);
      assert.deepEqual(before, whole.subarray(4096 * 100 - 100, 4096 * 100), 'the bytes before the durable write are the first write\'s');
    } finally {
      await media.close();
    }
    await assert.rejects(media.writeParts([pattern(512, 1)], 0), (e: unknown) => isAtomioError(e, 'ERR_CLOSED'));
  });
});
