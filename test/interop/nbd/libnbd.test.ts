// libnbd's tools against atomio: nbdinfo (size, flags, block sizes, --map after trims),
// nbdcopy in and out over several connections, and an nbdsh script that runs every command
// and checks the errors the server returns.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { NbdClient } from '../../server/nbd/client.js';
import { MiB, pattern, withServer } from '../../server/nbd/harness.js';
import { missing, nbdsh, run } from './tools.js';

interface MapEntry {
  offset: number;
  length: number;
  type: number;
  description: string;
}

test('nbdinfo: size, flags and block sizes; --map shows holes after trims and zeroes', async (t) => {
  const why = missing('nbdinfo');
  if (why !== undefined) return t.skip(why);
  await withServer(
    async ({ port }) => {
      const uri = `nbd://127.0.0.1:${port}/`;
      const info = await run('nbdinfo', ['--json', uri]);
      assert.equal(info.code, 0, info.stderr);
      const parsed = JSON.parse(info.stdout) as { protocol: string; exports: Record<string, unknown>[] };
      assert.equal(parsed.protocol, 'newstyle-fixed');
      const e = parsed.exports[0]!;
      assert.equal(e['export-size'], 16 * MiB);
      for (const f of ['can_cache', 'can_df', 'can_fast_zero', 'can_flush', 'can_fua', 'can_multi_conn', 'can_trim', 'can_zero']) {
        assert.equal(e[f], true, f);
      }
      assert.equal(e.is_read_only, false);
      assert.equal(e.block_size_minimum, 1);
      assert.equal(e.block_size_preferred, 4096);
      assert.equal(e.block_size_maximum, 32 * MiB);
      assert.deepEqual(e.contexts, ['base:allocation']);

      const ro = JSON.parse((await run('nbdinfo', ['--json', `nbd://127.0.0.1:${port}/ro`])).stdout) as typeof parsed;
      assert.equal(ro.exports[0]!.is_read_only, true);
      assert.equal(ro.exports[0]!.can_trim, false);

      const size = await run('nbdinfo', ['--size', `nbd://127.0.0.1:${port}/ro`]);
      assert.equal(size.stdout.trim(), String(MiB));

      const c = await NbdClient.open(port);
      await c.write(0, pattern(1, 4 * MiB));
      await c.trim(MiB, MiB);
      await c.zero(3 * MiB, 4096);
      await c.disconnect();
      const map = await run('nbdinfo', ['--map', '--json', uri]);
      assert.equal(map.code, 0, map.stderr);
      const entries = (JSON.parse(map.stdout) as MapEntry[]).map((m) => [m.offset, m.length, m.description]);
      assert.deepEqual(entries, [
        [0, MiB, 'data'],
        [MiB, MiB, 'hole,zero'],
        [2 * MiB, MiB, 'data'],
        [3 * MiB, 4096, 'hole,zero'],
        [3 * MiB + 4096, MiB - 4096, 'data'],
        [4 * MiB, 12 * MiB, 'hole,zero'],
      ]);
      const list = await run('nbdinfo', ['--list', '--json', uri]);
      assert.deepEqual(
        (JSON.parse(list.stdout) as typeof parsed).exports.map((x) => x['export-name']),
        ['default', 'ro'],
      );
    },
    { media: 'file', capacity: 128 * MiB, defaultSize: 16 * MiB, volumes: [{ name: 'ro', size: MiB, readOnly: true }] },
  );
});

test('nbdcopy: a file into a volume and back out, over 4 connections, byte for byte', async (t) => {
  const why = missing('nbdcopy');
  if (why !== undefined) return t.skip(why);
  await withServer(
    async ({ port, dir }) => {
      const uri = `nbd://127.0.0.1:${port}/copy`;
      const src = path.join(dir, 'in.raw');
      const data = Buffer.alloc(20 * MiB);
      pattern(1, 7 * MiB + 5).copy(data, 1);
      pattern(2, 3 * MiB).copy(data, 12 * MiB);
      await fsp.writeFile(src, data);
      const into = await run('nbdcopy', ['--connections=4', '--requests=16', '--flush', src, uri]);
      assert.equal(into.code, 0, into.stderr);
      const out = path.join(dir, 'out.raw');
      const back = await run('nbdcopy', ['--connections=4', uri, out]);
      assert.equal(back.code, 0, back.stderr);
      assert.ok((await fsp.readFile(out)).equals(data), 'the copy came back byte for byte');
      const c = await NbdClient.open(port, { name: 'copy' });
      assert.equal((await c.blockStatus(16 * MiB, 4 * MiB)).extents[0]![1] & 1, 1, 'zeros past the data stayed holes');
      await c.disconnect();
    },
    { media: 'file', capacity: 256 * MiB, volumes: [{ name: 'copy', size: 20 * MiB }] },
  );
});

const script = (roUri: string): string => `
import errno
import nbd

def expect(code, what, fn, *args):
    try:
        fn(*args)
    except nbd.Error as e:
        assert e.errnum == code, "%s: errno %s (%s), expected %s" % (what, e.errnum, e.string, code)
        return
    raise AssertionError("%s: succeeded, expected errno %s" % (what, code))

size = h.get_size()
assert size == 16 * 1024 * 1024, size
for can in ("flush", "fua", "trim", "zero", "fast_zero", "cache", "multi_conn", "df"):
    assert getattr(h, "can_" + can)(), can
assert h.can_meta_context("base:allocation")
assert not h.is_read_only()

buf = bytes(range(256)) * 20
h.pwrite(buf, 777, nbd.CMD_FLAG_FUA)
assert h.pread(len(buf), 777) == buf
assert h.pread(4096, 777 + len(buf))  == bytes(4096)
h.flush()
h.cache(8192, 0)

h.pwrite(b"\\xff" * 65536, 65536)
h.trim(4096, 65536)
assert h.pread(4096, 65536) == bytes(4096)
h.zero(100, 70000)
assert h.pread(100, 70000) == bytes(100)
h.zero(5000, 80000, nbd.CMD_FLAG_NO_HOLE)
assert h.pread(5000, 80000) == bytes(5000)
h.zero(4096, 90112, nbd.CMD_FLAG_FAST_ZERO)
assert h.pread(4096, 90112) == bytes(4096)

extents = []
def collect(context, offset, entries, err):
    assert context == "base:allocation"
    extents.extend(entries)
    return 0
h.block_status(65536, 65536, collect)
assert extents[0:2] == [4096, 3], extents
one = []
h.block_status(65536, 65536, lambda c, o, e, err: one.extend(e) or 0, nbd.CMD_FLAG_REQ_ONE)
assert len(one) == 2 and one[0] <= 65536, one

# Let the server judge what libnbd would refuse on its own.
h.set_strict_mode(0)
expect(errno.EINVAL, "read past the end", h.pread, 10, size - 5)
expect(errno.ENOSPC, "write past the end", h.pwrite, b"x" * 10, size - 5)
expect(errno.EINVAL, "trim past the end", h.trim, 10, size)
expect(errno.ENOTSUP, "fast zero with NO_HOLE", h.zero, 4096, 0, nbd.CMD_FLAG_FAST_ZERO | nbd.CMD_FLAG_NO_HOLE)
expect(errno.EINVAL, "read with REQ_ONE", h.pread, 512, 0, nbd.CMD_FLAG_REQ_ONE)
expect(errno.EOVERFLOW, "read over 32 MiB", h.pread, 32 * 1024 * 1024 + 512, 0)

ro = nbd.NBD()
ro.set_strict_mode(0)
ro.connect_uri("${roUri}")
assert ro.is_read_only()
expect(errno.EPERM, "write to a read-only export", ro.pwrite, b"x" * 512, 0)
expect(errno.EPERM, "trim a read-only export", ro.trim, 512, 0)
assert ro.pread(512, 0) == bytes(512)
ro.shutdown()

print("ALL OK")
`;

test('nbdsh: every command and the errors the server returns for their misuse', async (t) => {
  const why = missing('nbdsh');
  if (why !== undefined) return t.skip(why);
  await withServer(
    async ({ port }) => {
      const r = await nbdsh(`nbd://127.0.0.1:${port}`, script(`nbd://127.0.0.1:${port}/ro`));
      assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
      assert.match(r.stdout, /ALL OK/);
      const failing = await nbdsh(`nbd://127.0.0.1:${port}`, 'assert h.pread(1, 0) == b"\\x01", "zero byte read back"');
      assert.notEqual(failing.code, 0, 'a failing nbdsh assertion fails the run (so ALL OK above means something)');
    },
    { media: 'file', capacity: 128 * MiB, defaultSize: 16 * MiB, volumes: [{ name: 'ro', size: MiB, readOnly: true }] },
  );
});

test('nbdinfo over TLS with a PSK file (psktool format): size and flags through nbds://; without TLS it is refused', async (t) => {
  const why = missing('nbdinfo');
  if (why !== undefined) return t.skip(why);
  const key = crypto.randomBytes(32);
  await withServer(
    async ({ port, dir }) => {
      const pskFile = path.join(dir, 'keys.psk');
      await fsp.writeFile(pskFile, `nbdtest:${key.toString('hex')}\n`, { mode: 0o600 });
      const info = await run('nbdinfo', ['--json', `nbds://nbdtest@127.0.0.1:${port}/?tls-psk-file=${pskFile}`]);
      assert.equal(info.code, 0, info.stderr);
      const e = (JSON.parse(info.stdout) as { exports: Record<string, unknown>[] }).exports[0]!;
      assert.equal(e['export-size'], 4 * MiB);
      assert.equal(e.can_trim, true);
      const clear = await run('nbdinfo', ['--size', `nbd://127.0.0.1:${port}/`]);
      assert.notEqual(clear.code, 0, 'a client without TLS gets nothing');
      assert.match(clear.stderr, /TLS/);
      await fsp.writeFile(pskFile, `nbdtest:${crypto.randomBytes(32).toString('hex')}\n`);
      const wrong = await run('nbdinfo', ['--size', `nbds://nbdtest@127.0.0.1:${port}/?tls-psk-file=${pskFile}`]);
      assert.notEqual(wrong.code, 0, 'a wrong key is refused');
    },
    { defaultSize: 4 * MiB, tls: { mode: 'required', psk: [{ identity: 'nbdtest', key }] } },
  );
});
