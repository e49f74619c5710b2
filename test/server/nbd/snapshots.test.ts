// Named snapshots over NBD: every volume is exported as VOLUME@SNAPSHOT, read-only, reading
// what the volume held when the snapshot was taken, and listed by NBD_OPT_LIST.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ERR, NbdClient, OPT, REP, STATE, handshake, option } from './client.js';
import { MiB, pattern, withServer } from './harness.js';

test('VOLUME@SNAPSHOT reads the volume as the snapshot saw it, refuses writes, and is listed', async () => {
  await withServer(
    async ({ port, store }) => {
      const c = await NbdClient.open(port, { structured: true });
      assert.equal(await c.write(0, pattern(1, 64 * 1024)), 0);
      const other = await NbdClient.open(port, { name: 'vm' });
      assert.equal(await other.write(4096, pattern(2, 4096)), 0);
      await store.snapshot({ name: 'before' });
      assert.equal(await c.write(0, pattern(3, 64 * 1024)), 0);
      assert.equal(await c.trim(32 * 1024, 32 * 1024), 0);

      const snap = await NbdClient.open(port, { structured: true, name: 'default@before' });
      assert.ok((await snap.read(0, 64 * 1024)).data!.equals(pattern(1, 64 * 1024)), 'the snapshot export reads the old data');
      assert.ok((await c.read(0, 32 * 1024)).data!.equals(pattern(3, 64 * 1024).subarray(0, 32 * 1024)), 'the volume moved on');
      assert.equal(await snap.write(0, Buffer.alloc(512)), ERR.EPERM);
      assert.equal(await snap.trim(0, 512), ERR.EPERM);
      const vmSnap = await NbdClient.open(port, { name: 'vm@before' });
      assert.ok((await vmSnap.read(4096, 4096)).data!.equals(pattern(2, 4096)));

      const s = await handshake(port);
      const listed = (await option(s, OPT.LIST)).filter((r) => r.type === REP.SERVER).map((r) => r.data.subarray(4, 4 + r.data.readUInt32BE(0)).toString());
      assert.deepEqual(listed, ['default', 'vm', 'default@before', 'vm@before']);
      s.destroy();

      await assert.rejects(NbdClient.open(port, { name: 'default@nope' }), 'an unknown snapshot is an unknown export');
      for (const x of [c, other, snap, vmSnap]) await x.disconnect();
    },
    { volumes: [{ name: 'vm', size: MiB }] },
  );
});

test('block status works on a VOLUME@SNAPSHOT export: base:allocation shows the holes and data the snapshot saw', async () => {
  await withServer(async ({ port, store }) => {
    const c = await NbdClient.open(port);
    assert.equal(await c.write(64 * 1024, pattern(4, 64 * 1024)), 0);
    await store.snapshot({ name: 'then' });
    assert.equal(await c.trim(0, 16 * MiB), 0);
    // NbdClient.open selects base:allocation for the export it then enters with NBD_OPT_GO.
    const snap = await NbdClient.open(port, { name: 'default@then' });
    const status = await snap.blockStatus(0, 256 * 1024);
    assert.equal(status.error, 0, 'block status on a snapshot export succeeds');
    assert.deepEqual(status.extents, [
      [64 * 1024, STATE.HOLE | STATE.ZERO],
      [64 * 1024, 0],
      [128 * 1024, STATE.HOLE | STATE.ZERO],
    ]);
    for (const x of [c, snap]) await x.disconnect();
  });
});
