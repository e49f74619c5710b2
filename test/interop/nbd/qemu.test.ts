// QEMU's own NBD client against atomio: qemu-img info/convert/compare round trips of a
// generated image through nbd://127.0.0.1:PORT/NAME, and qemu-io writing and reading
// patterns at unaligned offsets, discarding and writing zeroes.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { NbdClient, STATE } from '../../server/nbd/client.js';
import { MiB, pattern, withServer } from '../../server/nbd/harness.js';
import { missing, run } from './tools.js';

const IMAGE_BYTES = 24 * MiB;

/** A raw image with data, zeros and holes at odd places. */
function image(): Buffer {
  const b = Buffer.alloc(IMAGE_BYTES);
  pattern(1, 3 * MiB + 777).copy(b, 0);
  pattern(2, 12345).copy(b, 5 * MiB + 3);
  pattern(3, 2 * MiB).copy(b, 10 * MiB);
  b.fill(0xee, 17 * MiB + 1, 17 * MiB + 4097);
  pattern(4, 4096).copy(b, IMAGE_BYTES - 4096);
  return b;
}

test('qemu-img: info shows the volume size; convert in and out and compare round-trip an image', async (t) => {
  const why = missing('qemu-img');
  if (why !== undefined) return t.skip(why);
  await withServer(
    async ({ port, dir }) => {
      const uri = `nbd://127.0.0.1:${port}/img`;
      const info = await run('qemu-img', ['info', '--output=json', uri]);
      assert.equal(info.code, 0, info.stderr);
      assert.equal((JSON.parse(info.stdout) as { 'virtual-size': number })['virtual-size'], IMAGE_BYTES);

      const src = path.join(dir, 'src.raw');
      const data = image();
      await fsp.writeFile(src, data);
      const into = await run('qemu-img', ['convert', '-n', '-f', 'raw', '-O', 'raw', src, uri]);
      assert.equal(into.code, 0, into.stderr);
      const cmp = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', src, uri]);
      assert.equal(cmp.code, 0, `${cmp.stdout}${cmp.stderr}`);
      assert.match(cmp.stdout, /Images are identical/);

      const out = path.join(dir, 'out.raw');
      const back = await run('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', uri, out]);
      assert.equal(back.code, 0, back.stderr);
      assert.ok((await fsp.readFile(out)).equals(data), 'the image came back byte for byte');

      // And qemu-img compare notices a difference (so "identical" above means something).
      const c = await NbdClient.open(port, { name: 'img' });
      assert.equal(await c.write(20 * MiB + 5, Buffer.from([1])), 0);
      await c.disconnect();
      const differ = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', src, uri]);
      assert.equal(differ.code, 1, differ.stdout);
      assert.match(differ.stdout, /Content mismatch at offset 20971520/);
    },
    { media: 'file', capacity: 256 * MiB, volumes: [{ name: 'img', size: IMAGE_BYTES }] },
  );
});

test('qemu-img convert leaves the zero regions of a sparse image as holes', async (t) => {
  const why = missing('qemu-img');
  if (why !== undefined) return t.skip(why);
  await withServer(
    async ({ port, dir }) => {
      const src = path.join(dir, 'sparse.raw');
      const data = Buffer.alloc(IMAGE_BYTES);
      pattern(7, MiB).copy(data, 8 * MiB);
      await fsp.writeFile(src, data);
      const into = await run('qemu-img', ['convert', '-n', '-f', 'raw', '-O', 'raw', src, `nbd://127.0.0.1:${port}/img`]);
      assert.equal(into.code, 0, into.stderr);
      const c = await NbdClient.open(port, { name: 'img' });
      const H = STATE.HOLE | STATE.ZERO;
      assert.deepEqual((await c.blockStatus(0, IMAGE_BYTES)).extents, [
        [8 * MiB, H],
        [MiB, 0],
        [15 * MiB, H],
      ]);
      await c.disconnect();
    },
    { media: 'file', capacity: 256 * MiB, volumes: [{ name: 'img', size: IMAGE_BYTES }] },
  );
});

test('qemu-io: write -P / read -P at unaligned offsets, discard then zeros, write -z', async (t) => {
  const why = missing('qemu-io');
  if (why !== undefined) return t.skip(why);
  await withServer(
    async ({ port }) => {
      const uri = `nbd://127.0.0.1:${port}/`;
      const io = async (...commands: string[]): Promise<string> => {
        const r = await run('qemu-io', ['-f', 'raw', ...commands.flatMap((c) => ['-c', c]), uri]);
        assert.equal(r.code, 0, `${commands.join('; ')}: ${r.stdout}${r.stderr}`);
        assert.doesNotMatch(r.stdout + r.stderr, /fail|error/i, commands.join('; '));
        return r.stdout;
      };
      await io('write -P 0xab 1001 3333', 'write -P 0xcd 4334 1', 'write -P 0x11 65535 70001');
      await io('read -P 0xab 1001 3333', 'read -P 0xcd 4334 1', 'read -P 0x11 65535 70001', 'read -P 0 0 1001', 'read -P 0 4335 61200');
      // The bytes are there for our own client too: qemu's unaligned requests were honoured exactly.
      const c = await NbdClient.open(port);
      const got = (await c.read(1000, 3336)).data!;
      assert.equal(got[0], 0);
      assert.ok(got.subarray(1, 3334).every((b) => b === 0xab));
      assert.equal(got[3334], 0xcd);
      assert.equal(got[3335], 0);
      await io('discard 65536 65536', 'read -P 0 65536 65536', 'read -P 0x11 65535 1', 'read -P 0x11 131072 4464');
      await io('write -z 1001 2000', 'read -P 0 1001 2000', 'read -P 0xab 3001 1333');
      await io('write -z -u 0 16384', 'read -P 0 0 16384');
      const bad = await run('qemu-io', ['-f', 'raw', '-c', 'read -P 0x77 1001 10', uri]);
      assert.match(bad.stdout + bad.stderr, /Pattern verification failed/, 'a wrong pattern is noticed');
      await c.disconnect();
    },
    { media: 'file', capacity: 128 * MiB, defaultSize: 16 * MiB },
  );
});
