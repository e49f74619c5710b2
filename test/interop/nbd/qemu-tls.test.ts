// QEMU's NBD client over TLS (NBD_OPT_STARTTLS) with a pre-shared key, as a VM's disk would
// connect to a server that requires TLS: qemu-io writes and reads patterns through a
// tls-creds-psk object; a client without TLS, or with another key, gets nothing.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { MiB, withServer } from '../../server/nbd/harness.js';
import { missing, run } from './tools.js';

/** qemu's --object for a PSK client whose keys.psk (psktool format) lives in `dir`. */
function pskObject(dir: string): string {
  return `tls-creds-psk,id=tls0,endpoint=client,dir=${dir},username=nbdtest`;
}

function imageOpts(port: number, exportName: string): string {
  return `driver=nbd,host=127.0.0.1,port=${port},export=${exportName},tls-creds=tls0`;
}

test('qemu-io over TLS with a PSK: writes and reads patterns at unaligned offsets; without TLS or with a wrong key it is refused', async (t) => {
  const why = missing('qemu-io');
  if (why !== undefined) return t.skip(why);
  const key = crypto.randomBytes(32);
  await withServer(
    async ({ port, dir }) => {
      const keys = path.join(dir, 'psk');
      await fsp.mkdir(keys, { mode: 0o700 });
      await fsp.writeFile(path.join(keys, 'keys.psk'), `nbdtest:${key.toString('hex')}\n`, { mode: 0o600 });

      const io = (commands: string[]) =>
        run('qemu-io', ['--object', pskObject(keys), '--image-opts', imageOpts(port, 'disk'), ...commands.flatMap((c) => ['-c', c])]);
      const wrote = await io(['write -P 0x5a 1000 70000', 'write -P 0xa5 3145727 2']);
      assert.equal(wrote.code, 0, `${wrote.stdout}${wrote.stderr}`);
      assert.match(wrote.stdout, /wrote 70000\/70000 bytes at offset 1000/);
      assert.match(wrote.stdout, /wrote 2\/2 bytes at offset 3145727/);
      const read = await io(['read -P 0x5a 1000 70000', 'read -P 0xa5 3145727 2', 'read -P 0 0 1000', 'read -P 0 71000 4096']);
      assert.equal(read.code, 0, `${read.stdout}${read.stderr}`);
      assert.doesNotMatch(read.stdout + read.stderr, /Pattern verification failed|error/i, 'the patterns read back over TLS');
      assert.match(read.stdout, /read 70000\/70000 bytes at offset 1000/);
      // The same check fails on wrong data, so the reads above mean something.
      const wrongPattern = await io(['read -P 0x11 1000 16']);
      assert.match(wrongPattern.stdout + wrongPattern.stderr, /Pattern verification failed/);

      const clear = await run('qemu-io', ['-f', 'raw', '-c', 'read 0 512', `nbd://127.0.0.1:${port}/disk`]);
      assert.notEqual(clear.code, 0, 'a client without TLS is refused');
      await fsp.writeFile(path.join(keys, 'keys.psk'), `nbdtest:${crypto.randomBytes(32).toString('hex')}\n`, { mode: 0o600 });
      const wrongKey = await io(['read 0 512']);
      assert.notEqual(wrongKey.code, 0, 'a wrong key is refused');
    },
    { media: 'file', capacity: 64 * MiB, volumes: [{ name: 'disk', size: 4 * MiB }], tls: { mode: 'required', psk: [{ identity: 'nbdtest', key }] } },
  );
});
