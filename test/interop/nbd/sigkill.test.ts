// Durability through a real process death: `atomio serve` in a child process acknowledges
// writes with FUA, or writes followed by an acknowledged FLUSH; the child is SIGKILLed; a new
// child on the same directory serves them back. Run with durability full and none (with
// 'none' only FUA and FLUSH make the promise). The last check goes through nbdsh.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { CMD_FLAG, NbdClient } from '../../server/nbd/client.js';
import { MiB, pattern } from '../../server/nbd/harness.js';
import { withTempDir } from '../../helpers/temp.js';
import { startServe } from './child.js';
import { missing, nbdsh } from './tools.js';

for (const durability of ['full', 'none'] as const) {
  test(`durability ${durability}: FUA writes and flushed writes survive SIGKILL of the server`, async () => {
    await withTempDir(async (dir) => {
      const data = path.join(dir, 'store');
      const args = ['--data', data, '--nbd', '127.0.0.1:0', '--volume-size', '64M', '--capacity', '256M', '--durability', durability];
      const first = await startServe(args);
      try {
        const c = await NbdClient.open(first.port);
        const writes: Promise<number>[] = [];
        // FUA writes, unaligned ones among them, many in flight.
        for (let i = 0; i < 64; i++) writes.push(c.write(i * 65536 + (i % 7) * 3, pattern(i, 65536 - 100), CMD_FLAG.FUA));
        assert.deepEqual(await Promise.all(writes), Array(64).fill(0));
        // Plain writes, then one FLUSH acknowledged after them.
        for (let i = 0; i < 16; i++) assert.equal(await c.write(8 * MiB + i * 4096, pattern(1000 + i, 4096)), 0);
        assert.equal(await c.flush(), 0);
      } finally {
        first.proc.kill('SIGKILL');
      }
      assert.equal((await first.exited).signal, 'SIGKILL');

      const second = await startServe(args);
      try {
        const c = await NbdClient.open(second.port);
        for (let i = 0; i < 64; i++) {
          const got = (await c.read(i * 65536 + (i % 7) * 3, 65536 - 100)).data!;
          assert.ok(got.equals(pattern(i, 65536 - 100)), `FUA write ${i} survived`);
        }
        const flushed = (await c.read(8 * MiB, 16 * 4096)).data!;
        for (let i = 0; i < 16; i++) assert.ok(flushed.subarray(i * 4096, (i + 1) * 4096).equals(pattern(1000 + i, 4096)), `flushed write ${i} survived`);
        await c.disconnect();
      } finally {
        second.proc.kill('SIGTERM');
        await second.exited;
      }
    });
  });
}

test('nbdsh: a FUA write and a flushed write survive SIGKILL', async (t) => {
  const why = missing('nbdsh');
  if (why !== undefined) return t.skip(why);
  await withTempDir(async (dir) => {
    const args = ['--data', path.join(dir, 'store'), '--nbd', '127.0.0.1:0', '--volume-size', '16M', '--capacity', '128M', '--durability', 'none'];
    const first = await startServe(args);
    try {
      const r = await nbdsh(
        `nbd://127.0.0.1:${first.port}/`,
        'h.pwrite(b"fua!" * 1000, 12345, nbd.CMD_FLAG_FUA)\nh.pwrite(b"flsh" * 1000, 99999)\nh.flush()\nprint("written")',
      );
      assert.match(r.stdout, /written/, r.stderr);
    } finally {
      first.proc.kill('SIGKILL');
    }
    await first.exited;
    const second = await startServe(args);
    try {
      const r = await nbdsh(
        `nbd://127.0.0.1:${second.port}/`,
        'assert h.pread(4000, 12345) == b"fua!" * 1000\nassert h.pread(4000, 99999) == b"flsh" * 1000\nprint("survived")',
      );
      assert.match(r.stdout, /survived/, r.stderr);
    } finally {
      second.proc.kill('SIGTERM');
      await second.exited;
    }
  });
});
