// The handshake, byte by byte against the spec: greeting and flags, every option this server
// knows and its errors, unknown options, and the cases where the spec lets the server hang up.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isUtf8 } from 'node:buffer';
import {
  CMD,
  INFO,
  OPT,
  REP,
  RawSocket,
  TFLAG,
  handshake,
  infoData,
  metaData,
  option,
  optionBytes,
  readGreeting,
  readOptionReply,
  requestBytes,
  u32,
} from './client.js';
import { MiB, withServer } from './harness.js';

test('the greeting is NBDMAGIC, IHAVEOPT and FIXED_NEWSTYLE|NO_ZEROES', async () => {
  await withServer(async ({ port }) => {
    const s = await RawSocket.connect(port);
    assert.equal(await readGreeting(s), 0b11);
    s.destroy();
  });
});

test('unknown client flags make the server drop the connection', async () => {
  await withServer(async ({ port }) => {
    const s = await handshake(port, 0b111);
    assert.ok(await s.hungUp(), 'closed after client flag bit 2');
  });
});

test('NBD_OPT_EXPORT_NAME answers size and flags, with 124 zero bytes unless NO_ZEROES was negotiated', async () => {
  await withServer(
    async ({ port }) => {
      for (const [flags, padding] of [
        [3, 0],
        [1, 124],
        [0, 124],
      ] as const) {
        const s = await handshake(port, flags);
        s.send(optionBytes(OPT.EXPORT_NAME, Buffer.from('')));
        const b = await s.read(10 + padding);
        assert.equal(Number(b.readBigUInt64BE(0)), 8 * MiB, `size (client flags ${flags})`);
        const tflags = b.readUInt16BE(8);
        assert.equal(tflags & TFLAG.HAS_FLAGS, TFLAG.HAS_FLAGS);
        assert.equal(tflags & TFLAG.SEND_DF, 0, 'no DF without structured replies');
        assert.ok(b.subarray(10).every((x) => x === 0), 'padding is zeros');
        // Nothing more arrives: the next bytes would be replies to requests.
        assert.equal(await s.readToEnd(200), undefined, 'connection stays open in transmission');
        assert.equal(s.bufferedBytes, 0, `exactly ${10 + padding} bytes of reply (client flags ${flags})`);
        s.destroy();
      }
    },
    { defaultSize: 8 * MiB },
  );
});

test('NBD_OPT_EXPORT_NAME of an unknown export ends the session (it cannot answer an error)', async () => {
  await withServer(async ({ port }) => {
    const s = await handshake(port);
    s.send(optionBytes(OPT.EXPORT_NAME, Buffer.from('nope')));
    assert.ok(await s.hungUp());
  });
});

test('the default volume answers to "" and to "default"; named volumes by name', async () => {
  await withServer(
    async ({ port }) => {
      const s = await handshake(port);
      for (const [name, size] of [
        ['', 8 * MiB],
        ['default', 8 * MiB],
        ['data', 2 * MiB],
      ] as const) {
        const r = await option(s, OPT.INFO, infoData(name, [INFO.NAME]));
        assert.equal(r.at(-1)!.type, REP.ACK, `INFO ${name}`);
        const exp = r.find((x) => x.data.readUInt16BE(0) === INFO.EXPORT)!;
        assert.equal(Number(exp.data.readBigUInt64BE(2)), size);
        const nm = r.find((x) => x.data.readUInt16BE(0) === INFO.NAME)!;
        assert.equal(nm.data.subarray(2).toString(), name === '' ? 'default' : name, 'canonical name');
      }
      s.destroy();
    },
    { defaultSize: 8 * MiB, volumes: [{ name: 'data', size: 2 * MiB }] },
  );
});

test('NBD_OPT_INFO and NBD_OPT_GO: EXPORT always; NAME, DESCRIPTION, BLOCK_SIZE when asked; same answers for both', async () => {
  await withServer(
    async ({ port }) => {
      const s = await handshake(port);
      assert.equal((await option(s, OPT.STRUCTURED_REPLY)).at(-1)!.type, REP.ACK);
      const asked = [INFO.NAME, INFO.DESCRIPTION, INFO.BLOCK_SIZE, 999];
      const info = await option(s, OPT.INFO, infoData('default', asked));
      const go = await option(s, OPT.GO, infoData('default', asked));
      for (const replies of [info, go]) {
        assert.equal(replies.at(-1)!.type, REP.ACK);
        const infos = replies.slice(0, -1);
        assert.ok(infos.every((r) => r.type === REP.INFO));
        const byType = new Map(infos.map((r) => [r.data.readUInt16BE(0), r.data]));
        assert.deepEqual([...byType.keys()].sort(), [0, 1, 2, 3], 'unknown request 999 ignored');
        const exp = byType.get(INFO.EXPORT)!;
        assert.equal(exp.length, 12);
        const flags = exp.readUInt16BE(10);
        for (const f of ['HAS_FLAGS', 'SEND_FLUSH', 'SEND_FUA', 'SEND_TRIM', 'SEND_WRITE_ZEROES', 'SEND_DF', 'CAN_MULTI_CONN', 'SEND_CACHE', 'SEND_FAST_ZERO'] as const) {
          assert.equal(flags & TFLAG[f], TFLAG[f], f);
        }
        assert.equal(flags & TFLAG.READ_ONLY, 0);
        assert.equal(flags & TFLAG.ROTATIONAL, 0);
        const bs = byType.get(INFO.BLOCK_SIZE)!;
        assert.equal(bs.length, 14);
        assert.deepEqual([bs.readUInt32BE(2), bs.readUInt32BE(6), bs.readUInt32BE(10)], [1, 4096, 32 * MiB], 'min, preferred, max');
        assert.match(byType.get(INFO.DESCRIPTION)!.subarray(2).toString(), /default/);
      }
      assert.deepEqual(
        info.map((r) => r.data.toString('hex')),
        go.map((r) => r.data.toString('hex')),
        'GO repeats INFO exactly',
      );
      // In transmission now: a flush gets a simple reply.
      s.send(requestBytes(CMD.FLUSH, 0, 7n, 0, 0));
      const reply = await s.read(16);
      assert.equal(reply.readUInt32BE(0), 0x67446698);
      assert.equal(reply.readUInt32BE(4), 0);
      assert.equal(reply.readBigUInt64BE(8), 7n, 'cookie echoed');
      s.destroy();
    },
    { defaultSize: 8 * MiB },
  );
});

test('a read-only volume has READ_ONLY and no TRIM/WRITE_ZEROES flags', async () => {
  await withServer(
    async ({ port }) => {
      const s = await handshake(port);
      const r = await option(s, OPT.INFO, infoData('ro'));
      const flags = r[0]!.data.readUInt16BE(10);
      assert.equal(flags & TFLAG.READ_ONLY, TFLAG.READ_ONLY);
      assert.equal(flags & (TFLAG.SEND_TRIM | TFLAG.SEND_WRITE_ZEROES | TFLAG.SEND_FAST_ZERO), 0);
      s.destroy();
    },
    { volumes: [{ name: 'ro', size: MiB, readOnly: true }] },
  );
});

test('malformed NBD_OPT_INFO/GO data gets NBD_REP_ERR_INVALID, an unknown export NBD_REP_ERR_UNKNOWN, and haggling goes on', async () => {
  await withServer(async ({ port }) => {
    const s = await handshake(port);
    const good = infoData('default', [INFO.NAME]);
    const cases: [string, Buffer, number][] = [
      ['too short', Buffer.alloc(5), REP.ERR_INVALID],
      ['name length past the data', Buffer.concat([u32(100), Buffer.alloc(2)]), REP.ERR_INVALID],
      ['name length 0xffffffff', Buffer.concat([u32(0xffffffff), Buffer.alloc(2)]), REP.ERR_INVALID],
      ['one request short', good.subarray(0, good.length - 1), REP.ERR_INVALID],
      ['a trailing byte', Buffer.concat([good, Buffer.alloc(1)]), REP.ERR_INVALID],
      ['a NUL in the name', infoData('de\0fault'), REP.ERR_INVALID],
      ['invalid UTF-8', Buffer.concat([u32(2), Buffer.from([0xc3, 0x28]), Buffer.alloc(2)]), REP.ERR_INVALID],
      ['unknown export', infoData('nope'), REP.ERR_UNKNOWN],
      ['name longer than 4096 bytes', infoData('x'.repeat(5000)), REP.ERR_INVALID],
    ];
    for (const opt of [OPT.INFO, OPT.GO]) {
      for (const [what, data, expected] of cases) {
        const r = await option(s, opt, data);
        assert.equal(r.length, 1, `${what}: no INFO replies before the error`);
        assert.equal(r[0]!.type, expected, `${what} (option ${opt})`);
        assert.ok(r[0]!.data.length > 0, 'errors carry a message');
      }
    }
    assert.equal((await option(s, OPT.INFO, good)).at(-1)!.type, REP.ACK, 'still negotiating');
    s.destroy();
  });
});

test('error messages stay valid UTF-8 of at most 4096 bytes when they quote a long non-ASCII name or query', async () => {
  await withServer(async ({ port }) => {
    const s = await handshake(port);
    assert.equal((await option(s, OPT.STRUCTURED_REPLY)).at(-1)!.type, REP.ACK);
    // 2048 two-byte characters: a legal 4096-byte name that no export has.
    const name = 'é'.repeat(2048);
    const cases: [string, number, Buffer][] = [
      ['INFO of an unknown export', OPT.INFO, infoData(name)],
      ['GO of an unknown export', OPT.GO, infoData(name)],
      ['LIST_META_CONTEXT of an unknown export', OPT.LIST_META, metaData(name, ['base:'])],
      ['a query without a namespace', OPT.LIST_META, metaData('', ['é'.repeat(2047) + 'x'])],
    ];
    for (const [what, opt, data] of cases) {
      const r = await option(s, opt, data);
      const last = r.at(-1)!;
      assert.ok(last.type >= 0x80000000, `${what}: an error`);
      assert.ok(last.data.length > 0 && last.data.length <= 4096, `${what}: a message of at most 4096 bytes`);
      assert.ok(isUtf8(last.data), `${what}: the message is valid UTF-8`);
    }
    s.destroy();
  });
});

test('NBD_OPT_LIST lists every volume with a description; data makes it NBD_REP_ERR_INVALID', async () => {
  await withServer(
    async ({ port }) => {
      const s = await handshake(port);
      const r = await option(s, OPT.LIST);
      assert.equal(r.at(-1)!.type, REP.ACK);
      const names = r.slice(0, -1).map((x) => {
        assert.equal(x.type, REP.SERVER);
        const n = x.data.readUInt32BE(0);
        assert.ok(n <= x.data.length - 4);
        assert.match(x.data.subarray(4 + n).toString(), /atomio volume/);
        return x.data.subarray(4, 4 + n).toString();
      });
      assert.deepEqual(names, ['default', 'a', 'b']);
      const bad = await option(s, OPT.LIST, Buffer.from('x'));
      assert.deepEqual(bad.map((x) => x.type), [REP.ERR_INVALID]);
      s.destroy();
    },
    { volumes: [{ name: 'a', size: MiB }, { name: 'b', size: MiB, readOnly: true }] },
  );
});

test('NBD_OPT_ABORT is acknowledged (its data ignored) and the server closes', async () => {
  await withServer(async ({ port }) => {
    const s = await handshake(port);
    const r = await option(s, OPT.ABORT, Buffer.from('ignored'));
    assert.deepEqual(r.map((x) => x.type), [REP.ACK]);
    assert.ok(await s.hungUp());
  });
});

test('NBD_OPT_ABORT with more data than the server reads is still acknowledged, and the server closes', async () => {
  await withServer(async ({ port }) => {
    const s = await handshake(port);
    // The spec: the server MUST reply NBD_REP_ACK and SHOULD ignore any data, however long.
    const r = await option(s, OPT.ABORT, Buffer.alloc(100 * 1024, 1));
    assert.deepEqual(r.map((x) => x.type), [REP.ACK]);
    assert.ok(await s.hungUp());
  });
});

test('NBD_OPT_STRUCTURED_REPLY: ACK (again on repeat), NBD_REP_ERR_INVALID with data', async () => {
  await withServer(async ({ port }) => {
    const s = await handshake(port);
    assert.deepEqual((await option(s, OPT.STRUCTURED_REPLY, Buffer.from('x'))).map((x) => x.type), [REP.ERR_INVALID]);
    assert.deepEqual((await option(s, OPT.STRUCTURED_REPLY)).map((x) => x.type), [REP.ACK]);
    assert.deepEqual((await option(s, OPT.STRUCTURED_REPLY)).map((x) => x.type), [REP.ACK]);
    s.destroy();
  });
});

test('unknown options and NBD_OPT_STARTTLS get NBD_REP_ERR_UNSUP; STARTTLS with data NBD_REP_ERR_INVALID', async () => {
  await withServer(async ({ port }) => {
    const s = await handshake(port);
    for (const opt of [0, 4, 11, 12, 0x7fffffff, 0xffffffff]) {
      const r = await option(s, opt, Buffer.from('some data'));
      assert.deepEqual(r.map((x) => x.type), [REP.ERR_UNSUP], `option ${opt}`);
    }
    assert.deepEqual((await option(s, OPT.STARTTLS)).map((x) => x.type), [REP.ERR_UNSUP]);
    assert.deepEqual((await option(s, OPT.STARTTLS, Buffer.from('x'))).map((x) => x.type), [REP.ERR_INVALID]);
    assert.equal((await option(s, OPT.GO, infoData(''))).at(-1)!.type, REP.ACK, 'then GO still works');
    s.destroy();
  });
});

test('LIST_META_CONTEXT: all contexts for no query, base:allocation for base: and base:allocation, nothing for others', async () => {
  await withServer(async ({ port }) => {
    const s = await handshake(port);
    const names = (r: { type: number; data: Buffer }[]): string[] =>
      r.filter((x) => x.type === REP.META_CONTEXT).map((x) => {
        assert.equal(x.data.readUInt32BE(0), 0, 'LIST gives id 0');
        return x.data.subarray(4).toString();
      });
    for (const [queries, expected] of [
      [[], ['base:allocation']],
      [['base:'], ['base:allocation']],
      [['base:allocation', 'base:allocation'], ['base:allocation']],
      [['base:other'], []],
      [['qemu:dirty-bitmap:x', 'x-foo:bar'], []],
    ] as const) {
      const r = await option(s, OPT.LIST_META, metaData('', [...queries]));
      assert.equal(r.at(-1)!.type, REP.ACK, JSON.stringify(queries));
      assert.deepEqual(names(r), expected, JSON.stringify(queries));
    }
    s.destroy();
  });
});

test('SET_META_CONTEXT needs structured replies, selects base:allocation with an id, and replaces the selection', async () => {
  await withServer(async ({ port }) => {
    const s = await handshake(port);
    assert.deepEqual((await option(s, OPT.SET_META, metaData('', ['base:allocation']))).map((x) => x.type), [REP.ERR_INVALID]);
    await option(s, OPT.STRUCTURED_REPLY);
    const r = await option(s, OPT.SET_META, metaData('', ['base:allocation', 'x-other:thing']));
    assert.deepEqual(r.map((x) => x.type), [REP.META_CONTEXT, REP.ACK]);
    assert.notEqual(r[0]!.data.readUInt32BE(0), 0, 'a real context id');
    assert.equal(r[0]!.data.subarray(4).toString(), 'base:allocation');
    assert.deepEqual((await option(s, OPT.SET_META, metaData('', ['base:']))).map((x) => x.type), [REP.ACK], 'base: selects nothing');
    assert.deepEqual((await option(s, OPT.SET_META, metaData('', []))).map((x) => x.type), [REP.ACK], 'no query selects nothing');
    s.destroy();
  });
});

test('malformed LIST/SET_META_CONTEXT data gets NBD_REP_ERR_INVALID; unknown export UNKNOWN; too many queries TOO_BIG', async () => {
  await withServer(async ({ port }) => {
    const s = await handshake(port);
    await option(s, OPT.STRUCTURED_REPLY);
    const good = metaData('', ['base:allocation']);
    const cases: [string, Buffer, number][] = [
      ['empty', Buffer.alloc(0), REP.ERR_INVALID],
      ['name past the data', Buffer.concat([u32(50), u32(0)]), REP.ERR_INVALID],
      ['no query count', u32(0), REP.ERR_INVALID],
      ['query count past the data', Buffer.concat([u32(0), u32(1_000_000)]), REP.ERR_INVALID],
      ['query length past the data', Buffer.concat([u32(0), u32(1), u32(100), Buffer.from('base:')]), REP.ERR_INVALID],
      ['a trailing byte', Buffer.concat([good, Buffer.alloc(1)]), REP.ERR_INVALID],
      ['one byte short', good.subarray(0, good.length - 1), REP.ERR_INVALID],
      ['a query without a colon', metaData('', ['allocation']), REP.ERR_INVALID],
      ['unknown export', metaData('nope', ['base:allocation']), REP.ERR_UNKNOWN],
      ['300 queries', metaData('', Array.from({ length: 300 }, () => 'base:')), REP.ERR_TOO_BIG],
    ];
    for (const opt of [OPT.LIST_META, OPT.SET_META]) {
      for (const [what, data, expected] of cases) {
        assert.deepEqual((await option(s, opt, data)).map((x) => x.type), [expected], `${what} (option ${opt})`);
      }
    }
    assert.equal((await option(s, OPT.SET_META, good)).at(-1)!.type, REP.ACK);
    s.destroy();
  });
});

test('option data over 64 KiB is skipped unread (TOO_BIG for known options, UNSUP for unknown), over 16 MiB ends the session', async () => {
  await withServer(async ({ port }) => {
    const s = await handshake(port);
    const big = Buffer.alloc(100 * 1024, 7);
    assert.deepEqual((await option(s, OPT.INFO, big)).map((x) => x.type), [REP.ERR_TOO_BIG]);
    assert.deepEqual((await option(s, 77, big)).map((x) => x.type), [REP.ERR_UNSUP]);
    assert.equal((await option(s, OPT.INFO, infoData(''))).at(-1)!.type, REP.ACK, 'the stream is still in step');
    s.send(optionBytes(OPT.LIST, Buffer.alloc(0), 0xffffffff));
    assert.ok(await s.hungUp(), 'a 4 GiB option is not waited for');
  });
});

test('an option without the IHAVEOPT magic ends the session', async () => {
  await withServer(async ({ port }) => {
    const s = await handshake(port);
    const b = optionBytes(OPT.LIST);
    b[0] = b[0]! ^ 1;
    s.send(b);
    assert.ok(await s.hungUp());
  });
});

test('a client that stops mid-option, or goes away, leaves the server serving others', async () => {
  await withServer(async ({ port, server }) => {
    const a = await handshake(port);
    a.send(optionBytes(OPT.INFO, infoData('')).subarray(0, 20));
    const b = await RawSocket.connect(port);
    b.destroy();
    const c = await handshake(port);
    assert.equal((await option(c, OPT.INFO, infoData(''))).at(-1)!.type, REP.ACK);
    a.destroy();
    c.destroy();
    await Promise.all([a.closed, c.closed]);
    for (let i = 0; i < 500 && server.connections() > 0; i++) await new Promise((r) => setTimeout(r, 10));
    assert.equal(server.connections(), 0, 'every connection let go');
  });
});

test('while the server shuts down, options get NBD_REP_ERR_SHUTDOWN or the connection closes', async () => {
  await withServer(async ({ port, server }) => {
    const s = await handshake(port);
    assert.equal((await option(s, OPT.LIST)).at(-1)!.type, REP.ACK);
    const closing = server.close();
    assert.ok(await s.hungUp(), 'a connection in the handshake is closed');
    await closing;
    await assert.rejects(RawSocket.connect(port), 'no longer accepting');
  });
});

test('replies to options queue behind a client that does not read them, without losing any', async () => {
  await withServer(async ({ port }) => {
    const s = await handshake(port);
    const n = 2000;
    const all = Buffer.concat(Array.from({ length: n }, () => optionBytes(OPT.LIST)));
    s.send(all);
    let acks = 0;
    for (let i = 0; i < n * 2; i++) {
      const r = await readOptionReply(s);
      if (r.type === REP.ACK) acks++;
    }
    assert.equal(acks, n);
    s.destroy();
  });
});

test('a client that does not choose an export within the handshake timeout is disconnected; one that does stays', async () => {
  await withServer(
    async ({ port, logs }) => {
      const idle = await handshake(port);
      const quick = await handshake(port);
      assert.equal((await option(quick, OPT.GO, infoData(''))).at(-1)!.type, REP.ACK);
      assert.ok(await idle.hungUp(10_000), 'the idle client was dropped');
      assert.ok(logs.some((l) => /no export chosen within 1000 ms/.test(l)));
      assert.equal(await quick.hungUp(500), false, 'the client in transmission was not');
      quick.destroy();
    },
    { handshakeTimeoutMs: 1000 },
  );
});
