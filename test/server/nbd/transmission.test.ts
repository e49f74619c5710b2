// Transmission, command by command, with simple and with structured replies: what each
// command does to the volume, and the error the spec names for each way of misusing it.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CHUNK, CMD, CMD_FLAG, ERR, NbdClient, STATE, handshake, infoData, option, OPT, REP, requestBytes } from './client.js';
import { KiB, MiB, pattern, withServer } from './harness.js';

const SIZE = 8 * MiB;

for (const structured of [false, true]) {
  const mode = structured ? 'structured' : 'simple';

  test(`${mode}: write then read back, aligned and unaligned, at the start, middle and end of the export`, async () => {
    await withServer(
      async ({ port }) => {
        const c = await NbdClient.open(port, { structured });
        const cases: [number, number][] = [
          [0, 4096],
          [1, 1],
          [511, 2],
          [1000, 70_000],
          [SIZE - 4096, 4096],
          [SIZE - 3, 3],
          [3 * MiB + 17, 2 * MiB + 5],
        ];
        for (const [i, [offset, length]] of cases.entries()) {
          assert.equal(await c.write(offset, pattern(i, length)), 0, `write ${offset}+${length}`);
          const r = await c.read(offset, length);
          assert.equal(r.error, 0);
          assert.ok(r.data!.equals(pattern(i, length)), `read back ${offset}+${length}`);
          assert.equal(r.simple, !structured, 'reply kind follows negotiation');
        }
        await c.disconnect();
      },
      { defaultSize: SIZE },
    );
  });

  test(`${mode}: reads and writes past the end get EINVAL and ENOSPC; a read-only export answers writes EPERM`, async () => {
    await withServer(
      async ({ port }) => {
        const c = await NbdClient.open(port, { structured });
        assert.equal((await c.read(SIZE - 10, 11)).error, ERR.EINVAL);
        assert.equal((await c.read(SIZE + 512, 512)).error, ERR.EINVAL);
        assert.equal((await c.request(CMD.READ, 0, 2n ** 64n - 512n, 512)).error, ERR.EINVAL, 'offset near 2^64');
        assert.equal(await c.write(SIZE - 10, Buffer.alloc(11)), ERR.ENOSPC);
        assert.equal(await c.trim(SIZE, 1), ERR.EINVAL);
        assert.equal(await c.zero(SIZE - 1, 2), ERR.ENOSPC);
        assert.equal(await c.cache(SIZE, 1), ERR.EINVAL);
        assert.equal((await c.read(SIZE, 0)).error, 0, 'a zero-length read at the end is fine');
        const ro = await NbdClient.open(port, { structured, name: 'ro' });
        assert.equal(await ro.write(0, Buffer.alloc(512, 1)), ERR.EPERM);
        assert.equal(await ro.trim(0, 512), ERR.EPERM);
        assert.equal(await ro.zero(0, 512), ERR.EPERM);
        assert.equal((await ro.read(0, 512)).error, 0);
        assert.equal(await ro.flush(), 0);
        await c.disconnect();
        await ro.disconnect();
      },
      { defaultSize: SIZE, volumes: [{ name: 'ro', size: MiB, readOnly: true }] },
    );
  });

  test(`${mode}: flags a command does not take, and unknown commands, get EINVAL`, async () => {
    await withServer(async ({ port }) => {
      const c = await NbdClient.open(port, { structured });
      const cases: [string, number, number][] = [
        ['READ with NO_HOLE', CMD.READ, CMD_FLAG.NO_HOLE],
        ['READ with REQ_ONE', CMD.READ, CMD_FLAG.REQ_ONE],
        ['WRITE with FAST_ZERO', CMD.WRITE, CMD_FLAG.FAST_ZERO],
        ['TRIM with NO_HOLE', CMD.TRIM, CMD_FLAG.NO_HOLE],
        ['FLUSH with DF', CMD.FLUSH, CMD_FLAG.DF],
        ['CACHE with bit 7', CMD.CACHE, 0x80],
        ['WRITE_ZEROES with DF', CMD.WRITE_ZEROES, CMD_FLAG.DF],
        ['command 8', 8, 0],
        ['command 0xffff', 0xffff, 0],
      ];
      for (const [what, type, flags] of cases) {
        const payload = type === CMD.WRITE ? Buffer.alloc(512) : undefined;
        const r = await c.request(type, flags, 0, type === CMD.FLUSH ? 0 : 512, payload);
        assert.equal(r.error, ERR.EINVAL, what);
        if (structured) assert.ok((r.message ?? '').length > 0, `${what}: structured errors carry a message`);
      }
      if (!structured) {
        assert.equal((await c.read(0, 512, CMD_FLAG.DF)).error, ERR.EINVAL, 'DF needs structured replies');
      }
      assert.equal((await c.request(CMD.FLUSH, 0, 512, 0)).error, ERR.EINVAL, 'a flush with an offset');
      assert.equal((await c.request(CMD.FLUSH, 0, 0, 512)).error, ERR.EINVAL, 'a flush with a length');
      // FUA is valid on every command.
      for (const type of [CMD.READ, CMD.FLUSH, CMD.TRIM, CMD.CACHE, CMD.WRITE_ZEROES]) {
        assert.equal((await c.request(type, CMD_FLAG.FUA, 0, type === CMD.FLUSH ? 0 : 512)).error, 0, `FUA on ${type}`);
      }
      await c.disconnect();
    });
  });

  test(`${mode}: the 32 MiB maximum: larger reads and writes fail (write payloads skipped), 32 MiB works`, async () => {
    await withServer(
      async ({ port }) => {
        const c = await NbdClient.open(port, { structured });
        const over = 32 * MiB + 512;
        assert.equal((await c.read(0, over)).error, structured ? ERR.EOVERFLOW : ERR.EINVAL);
        assert.equal(await c.write(0, Buffer.alloc(over, 9)), ERR.EINVAL, 'oversized write refused');
        assert.equal((await c.read(0, 512)).data!.every((b) => b === 0), true, 'and nothing of it written');
        const max = pattern(5, 32 * MiB);
        assert.equal(await c.write(MiB, max), 0);
        assert.ok((await c.read(MiB, 32 * MiB)).data!.equals(max));
        assert.equal(await c.trim(0, 40 * MiB), 0, 'trims are not limited by the payload maximum');
        assert.equal(await c.zero(0, 40 * MiB), 0, 'nor are zero writes');
        await c.disconnect();
      },
      { defaultSize: 48 * MiB, capacity: 256 * MiB },
    );
  });

  test(`${mode}: TRIM and WRITE_ZEROES read back as zeros; FLUSH and CACHE succeed`, async () => {
    await withServer(async ({ port }) => {
      const c = await NbdClient.open(port, { structured });
      const data = pattern(1, 64 * KiB);
      for (const [what, op] of [
        ['trim', () => c.trim(4096, 8192)],
        ['zero', () => c.zero(4096, 8192)],
        ['zero NO_HOLE', () => c.zero(4096, 8192, CMD_FLAG.NO_HOLE)],
        ['zero FUA', () => c.zero(4096, 8192, CMD_FLAG.FUA)],
        ['trim FUA', () => c.trim(4096, 8192, CMD_FLAG.FUA)],
      ] as const) {
        assert.equal(await c.write(0, data), 0);
        assert.equal(await op(), 0, what);
        const r = (await c.read(0, 64 * KiB)).data!;
        const expected = Buffer.from(data);
        expected.fill(0, 4096, 4096 + 8192);
        assert.ok(r.equals(expected), `${what}: the range reads as zeros, the rest is intact`);
      }
      assert.equal(await c.flush(), 0);
      assert.equal(await c.cache(0, 64 * KiB), 0);
      await c.disconnect();
    });
  });

  test(`${mode}: WRITE_ZEROES at unaligned edges zeroes exactly the range`, async () => {
    await withServer(async ({ port }) => {
      const c = await NbdClient.open(port, { structured });
      for (const [offset, length, flags] of [
        [100, 10, 0],
        [100, 1000, 0],
        [511, 2, 0],
        [700, 5000, CMD_FLAG.NO_HOLE],
        [1, 8190, 0],
      ] as const) {
        const data = pattern(offset, 16 * KiB);
        assert.equal(await c.write(0, data), 0);
        assert.equal(await c.zero(offset, length, flags), 0);
        const expected = Buffer.from(data);
        expected.fill(0, offset, offset + length);
        assert.ok((await c.read(0, 16 * KiB)).data!.equals(expected), `zero ${offset}+${length}`);
      }
      await c.disconnect();
    });
  });

  test(`${mode}: FAST_ZERO: ENOTSUP with NO_HOLE or with no whole sector, and then nothing changed; otherwise zeroes`, async () => {
    await withServer(async ({ port }) => {
      const c = await NbdClient.open(port, { structured });
      const data = pattern(3, 8192);
      assert.equal(await c.write(0, data), 0);
      assert.equal(await c.zero(0, 4096, CMD_FLAG.FAST_ZERO | CMD_FLAG.NO_HOLE), ERR.ENOTSUP);
      assert.equal(await c.zero(100, 300, CMD_FLAG.FAST_ZERO), ERR.ENOTSUP);
      assert.ok((await c.read(0, 8192)).data!.equals(data), 'a failed fast zero leaves the data');
      assert.equal(await c.zero(0, 4096, CMD_FLAG.FAST_ZERO), 0);
      assert.ok((await c.read(0, 4096)).data!.every((b) => b === 0));
      await c.disconnect();
    });
  });

  test(`${mode}: length-0 requests succeed and change nothing`, async () => {
    await withServer(async ({ port }) => {
      const c = await NbdClient.open(port, { structured });
      assert.equal(await c.write(0, pattern(1, 512)), 0);
      assert.equal((await c.read(100, 0)).error, 0);
      assert.equal(await c.write(100, Buffer.alloc(0)), 0);
      assert.equal(await c.trim(0, 0), 0);
      assert.equal(await c.zero(0, 0), 0);
      assert.ok((await c.read(0, 512)).data!.equals(pattern(1, 512)));
      await c.disconnect();
    });
  });
}

test('structured reads: holes come as one OFFSET_HOLE chunk, data as one OFFSET_DATA chunk; DF forces data', async () => {
  await withServer(async ({ port }) => {
    const c = await NbdClient.open(port);
    const hole = await c.read(MiB, 64 * KiB);
    assert.deepEqual(hole.chunks.map((x) => x.type), [CHUNK.OFFSET_HOLE]);
    assert.ok(hole.data!.every((b) => b === 0));
    const df = await c.read(MiB, 64 * KiB, CMD_FLAG.DF);
    assert.deepEqual(df.chunks.map((x) => x.type), [CHUNK.OFFSET_DATA], 'DF: one content chunk, zeros spelled out');
    assert.equal(df.chunks[0]!.payload.length, 8 + 64 * KiB);
    await c.write(MiB + 100, Buffer.from('hello'));
    const mixed = await c.read(MiB, 4096);
    assert.deepEqual(mixed.chunks.map((x) => x.type), [CHUNK.OFFSET_DATA]);
    assert.equal(mixed.data!.subarray(100, 105).toString(), 'hello');
    assert.ok(mixed.chunks.every((x, i, all) => ((x.flags & 1) === 1) === (i === all.length - 1)), 'DONE on the last chunk only');
    const zero = await c.read(0, 0);
    assert.deepEqual(zero.chunks.map((x) => x.type), [CHUNK.NONE], 'a zero-length read ends with NONE');
    await c.disconnect();
  });
});

test('block status: holes and data after writes, trims and zeroes; REQ_ONE gives one extent within the length', async () => {
  await withServer(
    async ({ port }) => {
      const c = await NbdClient.open(port);
      const H = STATE.HOLE | STATE.ZERO;
      assert.deepEqual((await c.blockStatus(0, 4 * MiB)).extents, [[4 * MiB, H]], 'a new volume is one hole');
      await c.write(0, pattern(1, MiB));
      await c.write(2 * MiB, pattern(2, MiB));
      assert.deepEqual((await c.blockStatus(0, 4 * MiB)).extents, [
        [MiB, 0],
        [MiB, H],
        [MiB, 0],
        [MiB, H],
      ]);
      await c.trim(256 * KiB, 256 * KiB);
      await c.zero(2 * MiB, 4096); // joins the hole before it
      await c.zero(2 * MiB + 8192, 4096, CMD_FLAG.NO_HOLE);
      assert.deepEqual((await c.blockStatus(0, 3 * MiB)).extents, [
        [256 * KiB, 0],
        [256 * KiB, H],
        [512 * KiB, 0],
        [MiB + 4096, H],
        [MiB - 4096, 0],
      ]);
      assert.deepEqual((await c.blockStatus(100, 1000)).extents, [[1000, 0]], 'an unaligned query is clipped to itself');
      assert.deepEqual((await c.blockStatus(MiB - 100, 200)).extents, [
        [100, 0],
        [100, H],
      ]);
      const one = await c.blockStatus(0, 3 * MiB, CMD_FLAG.REQ_ONE);
      assert.deepEqual(one.extents, [[256 * KiB, 0]]);
      const small = await c.blockStatus(MiB, 1000, CMD_FLAG.REQ_ONE);
      assert.deepEqual(small.extents, [[1000, H]], 'REQ_ONE never exceeds the length asked');
      assert.equal(one.id, 1, 'the context id SET_META_CONTEXT gave');
      assert.equal((await c.blockStatus(0, 0)).error, ERR.EINVAL, 'length 0');
      assert.equal((await c.blockStatus(7 * MiB, 2 * MiB)).error, ERR.EINVAL, 'past the end');
      await c.disconnect();
    },
    { defaultSize: 8 * MiB },
  );
});

test('block status without a selected context (or with it for another export) gets EINVAL', async () => {
  await withServer(
    async ({ port }) => {
      const a = await NbdClient.open(port, { meta: false });
      assert.equal((await a.blockStatus(0, 4096)).error, ERR.EINVAL);
      await a.disconnect();
      const s = await handshake(port);
      await option(s, OPT.STRUCTURED_REPLY);
      await option(s, OPT.SET_META, Buffer.concat([Buffer.from([0, 0, 0, 5]), Buffer.from('other'), Buffer.from([0, 0, 0, 1, 0, 0, 0, 15]), Buffer.from('base:allocation')]));
      const go = await option(s, OPT.GO, infoData(''));
      assert.equal(go.at(-1)!.type, REP.ACK);
      s.send(requestBytes(CMD.BLOCK_STATUS, 0, 1n, 0, 4096));
      const h = await s.read(20);
      assert.equal(h.readUInt16BE(6), CHUNK.ERROR);
      const payload = await s.read(h.readUInt32BE(16));
      assert.equal(payload.readUInt32BE(0), ERR.EINVAL);
      s.destroy();
    },
    { volumes: [{ name: 'other', size: MiB }] },
  );
});

test('NBD_OPT_EXPORT_NAME after structured replies and SET_META_CONTEXT keeps both', async () => {
  await withServer(async ({ port }) => {
    const c = await NbdClient.open(port, { exportName: true });
    assert.equal((await c.blockStatus(0, 4096)).error, 0);
    assert.deepEqual((await c.read(0, 512)).chunks.map((x) => x.type), [CHUNK.OFFSET_HOLE]);
    await c.disconnect();
  });
});

test('requests are answered out of order: a small read overtakes a large write queued before it', async () => {
  await withServer(
    async ({ port }) => {
      const c = await NbdClient.open(port);
      const order: string[] = [];
      const big = c.write(0, pattern(1, 32 * MiB)).then(() => order.push('write'));
      const small = c.read(40 * MiB, 512).then(() => order.push('read'));
      await Promise.all([big, small]);
      assert.deepEqual(order, ['read', 'write']);
      await c.disconnect();
    },
    { defaultSize: 48 * MiB, capacity: 256 * MiB },
  );
});

test('NBD_CMD_DISC: requests sent before it are answered, then the server closes', async () => {
  await withServer(async ({ port }) => {
    const c = await NbdClient.open(port);
    const writes = Array.from({ length: 20 }, (_, i) => c.write(i * 4096, pattern(i, 4096)));
    const closing = c.disconnect();
    assert.deepEqual(await Promise.all(writes), Array(20).fill(0));
    await closing;
    const d = await NbdClient.open(port);
    for (let i = 0; i < 20; i++) assert.ok((await d.read(i * 4096, 4096)).data!.equals(pattern(i, 4096)));
    await d.disconnect();
  });
});

test('a request with bad magic ends that connection only; the others keep working', async () => {
  await withServer(async ({ port }) => {
    const a = await NbdClient.open(port);
    const b = await NbdClient.open(port);
    await a.write(0, pattern(1, 4096));
    const bad = requestBytes(CMD.READ, 0, 99n, 0, 512);
    bad.writeUInt32BE(0x12345678, 0);
    a.raw.send(bad);
    assert.ok(await a.raw.hungUp());
    assert.ok((await b.read(0, 4096)).data!.equals(pattern(1, 4096)));
    await b.disconnect();
  });
});

test('server close waits for requests in flight and answers them', async () => {
  await withServer(
    async ({ port, server, store }) => {
      const c = await NbdClient.open(port);
      const writes = Array.from({ length: 32 }, (_, i) => c.write(i * MiB, pattern(i, MiB)));
      const settled = Promise.allSettled(writes);
      // Close the moment the server has a request in hand and not yet answered.
      while (server.stats().requests === 0) await new Promise((r) => setImmediate(r));
      const inFlight = server.stats().requests;
      await server.close();
      const results = await settled;
      const answered = results.flatMap((r, i) => (r.status === 'fulfilled' ? [[i, r.value] as const] : []));
      assert.ok(answered.length >= inFlight, `the ${inFlight} request(s) in flight at close were answered (${answered.length} were)`);
      for (const [i, error] of answered) {
        assert.equal(error, 0, `write ${i} succeeded`);
        assert.ok((await store.block.read((i * MiB) / 512, MiB / 512)).equals(pattern(i, MiB)), `write ${i} is in the store`);
      }
      assert.ok(c.raw.isClosed);
    },
    { defaultSize: 48 * MiB, capacity: 256 * MiB },
  );
});
