// `atomio serve` and `atomio volume` as a user runs them (child processes through the
// test-only entry): flags, what serve prints, a graceful stop on SIGTERM and SIGINT, volume
// commands, ERR_LOCKED while a server runs, and usage errors.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { parseListen, parseSize } from '../../../src/cli/serve.js';
import { UsageError } from '../../../src/cli/output.js';
import { DATA_FILE_NAME } from '../../../src/store/store.js';
import { runChild, startServe } from '../../interop/nbd/child.js';
import { withTempDir } from '../../helpers/temp.js';
import { NbdClient, handshake, infoData, option, OPT, REP } from './client.js';
import { MiB, pattern } from './harness.js';

test('parseSize takes bytes with K/M/G/T/P suffixes; parseListen HOST:PORT, [v6]:PORT or off', () => {
  assert.equal(parseSize('512', 'x'), 512);
  assert.equal(parseSize('64G', 'x'), 64 * 2 ** 30);
  assert.equal(parseSize('1t', 'x'), 2 ** 40);
  assert.equal(parseSize('16MiB', 'x'), 16 * MiB);
  assert.equal(parseSize('4K', 'x'), 4096);
  for (const bad of ['', '0', '-1', '1.5G', 'G', '12X', '99999999P']) assert.throws(() => parseSize(bad, 'x'), UsageError, bad);
  assert.deepEqual(parseListen('127.0.0.1:10809'), { host: '127.0.0.1', port: 10809 });
  assert.deepEqual(parseListen('[::1]:0'), { host: '::1', port: 0 });
  assert.deepEqual(parseListen('localhost:1'), { host: 'localhost', port: 1 });
  assert.equal(parseListen('off'), undefined);
  for (const bad of ['127.0.0.1', ':80', '1.2.3.4:99999', '::1:80', 'host:port']) assert.throws(() => parseListen(bad), UsageError, bad);
});

test('serve: listens where told, prints it, serves the default volume, and stops cleanly on SIGTERM', async () => {
  await withTempDir(async (dir) => {
    const data = path.join(dir, 'store');
    const child = await startServe(['--data', data, '--nbd', '127.0.0.1:0', '--volume-size', '16M', '--capacity', '128M']);
    try {
      assert.match(child.out(), new RegExp(`data in ${data.replace(/[/.]/g, '\\$&')} \\(capacity 128 MiB, durability full\\)`));
      const c = await NbdClient.open(child.port);
      assert.equal(c.size, 16 * MiB);
      assert.equal(await c.write(100, pattern(1, 5000)), 0);
      await c.disconnect();

      const locked = await runChild(['volume', 'list', '--data', data]);
      assert.equal(locked.code, 1);
      assert.match(locked.err, /ERR_LOCKED.*atomio serve/s, 'the volume command says why');
    } finally {
      child.proc.kill('SIGTERM');
    }
    const exit = await child.exited;
    assert.deepEqual(exit, { code: 0, signal: null }, child.err());
    assert.match(child.out(), /SIGTERM: finishing the requests in flight/);
    assert.match(child.out(), /stopped; the store is closed/);

    const again = await startServe(['--data', data, '--nbd', '127.0.0.1:0', '--volume-size', '32M', '--preallocate']);
    try {
      assert.match(again.err(), /--volume-size sizes the default volume only when it is created/);
      const allocated = fs.statSync(path.join(data, DATA_FILE_NAME)).blocks * 512;
      assert.ok(allocated >= 96 * MiB, `--preallocate filled the 128 MiB store's unused segments (${allocated} bytes allocated)`);
      const c = await NbdClient.open(again.port);
      assert.equal(c.size, 16 * MiB, 'the size from the first start stays');
      assert.ok((await c.read(100, 5000)).data!.equals(pattern(1, 5000)), 'data kept across restarts');
      await c.disconnect();
    } finally {
      again.proc.kill('SIGINT');
    }
    assert.equal((await again.exited).code, 0);
  });
});

test('volume create/list/resize/remove manage the exports a later serve offers', async () => {
  await withTempDir(async (dir) => {
    const data = path.join(dir, 'store');
    const none = await runChild(['volume', 'list', '--data', data]);
    assert.equal(none.code, 1);
    assert.match(none.err, /holds no atomio store/);
    await assert.rejects(fsp.stat(data), 'listing did not create a store');

    const created = await runChild(['volume', 'create', 'vm1', '--size', '64G', '--data', data]);
    assert.equal(created.code, 0, created.err);
    assert.match(created.out, /created volume 'vm1': 64 GiB, slot 1/);
    const ro = await runChild(['volume', 'create', 'ro', '--size', '1M', '--read-only', '--data', data]);
    assert.equal(ro.code, 0, ro.err);
    const dup = await runChild(['volume', 'create', 'vm1', '--size', '1M', '--data', data]);
    assert.equal(dup.code, 1);
    assert.match(dup.err, /ERR_ARGUMENT.*exists already/);

    const list = await runChild(['volume', 'list', '--data', data, '--json']);
    assert.equal(list.code, 0, list.err);
    assert.deepEqual(
      (JSON.parse(list.out) as { name: string; size: number; readOnly: boolean }[]).map((v) => [v.name, v.size, v.readOnly]),
      [
        ['default', 2 ** 40, false],
        ['vm1', 64 * 2 ** 30, false],
        ['ro', MiB, true],
      ],
    );
    const text = await runChild(['volume', 'list', '--data', data]);
    assert.match(text.out, /vm1\s+64 GiB \(68719476736 bytes\), slot 1/);

    const child = await startServe(['--data', data, '--nbd', '127.0.0.1:0']);
    try {
      const s = await handshake(child.port);
      const names = (await option(s, OPT.LIST)).filter((r) => r.type === REP.SERVER).map((r) => r.data.subarray(4, 4 + r.data.readUInt32BE(0)).toString());
      assert.deepEqual(names, ['default', 'vm1', 'ro']);
      s.destroy();
    } finally {
      child.proc.kill('SIGTERM');
      await child.exited;
    }
    const resized = await runChild(['volume', 'resize', 'vm1', '--size', '128G', '--data', data]);
    assert.equal(resized.code, 0, resized.err);
    assert.match(resized.out, /resized volume 'vm1': 64 GiB -> 128 GiB/);
    const after = JSON.parse((await runChild(['volume', 'list', '--data', data, '--json'])).out) as { name: string; size: number }[];
    assert.equal(after.find((v) => v.name === 'vm1')?.size, 128 * 2 ** 30, 'the new size is in the table');
    const removed = await runChild(['volume', 'remove', 'vm1', '--data', data]);
    assert.equal(removed.code, 0, removed.err);
    assert.doesNotMatch((await runChild(['volume', 'list', '--data', data])).out, /vm1/);
  });
});

test('usage errors exit 2 and say what is wrong; a non-loopback address needs --nbd-allow-remote', async () => {
  await withTempDir(async (dir) => {
    const data = path.join(dir, 'store');
    for (const [args, pattern_] of [
      [['serve', '--nbd', 'nowhere'], /--nbd takes HOST:PORT/],
      [['serve', '--durability', 'maybe'], /--durability is full or none/],
      [['serve', '--volume-size', '12X'], /--volume-size takes a positive number/],
      [['serve', '--bogus'], /Unknown option '--bogus'/],
      [['volume'], /create, list, resize or remove/],
      [['volume', 'resize', 'x', '--data', data], /--size BYTES is required/],
      [['volume', 'create', 'x', '--data', data], /--size BYTES is required/],
      [['volume', 'grow', 'x'], /unknown subcommand 'grow'/],
      [['volume', 'list', '--size', '1M'], /--size does not apply/],
      [['volume', 'remove'], /give one NAME/],
    ] as const) {
      const r = await runChild([...args]);
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.err}`);
      assert.match(r.err, pattern_, args.join(' '));
    }
    const remote = await runChild(['serve', '--data', data, '--nbd', '0.0.0.0:0']);
    assert.equal(remote.code, 1);
    assert.match(remote.err, /not a loopback address.*--nbd-allow-remote/);
    const help = await runChild(['serve', '--help']);
    assert.equal(help.code, 0);
    assert.match(help.out, /--volume-size BYTES/);
    const allowed = await startServe(['--data', data, '--nbd', '0.0.0.0:0', '--nbd-allow-remote']);
    allowed.proc.kill('SIGTERM');
    assert.equal((await allowed.exited).code, 0);
  });
});

test('serve --tls: usage errors, --help documents it, and --tls require --tls-psk serves a non-loopback address to PSK clients only', async () => {
  await withTempDir(async (dir) => {
    const data = path.join(dir, 'store');
    const pskFile = path.join(dir, 'keys.psk');
    const key = crypto.randomBytes(32);
    await fsp.writeFile(pskFile, `carol:${key.toString('hex')}\n`);
    await fsp.writeFile(path.join(dir, 'bad.psk'), 'carol:nothex\n');
    for (const [args, pattern_] of [
      [['serve', '--tls', 'maybe'], /--tls is off, on or require/],
      [['serve', '--tls', 'on'], /needs --tls-psk FILE or --tls-cert FILE --tls-key FILE/],
      [['serve', '--tls-psk', pskFile], /--tls-psk needs --tls on or --tls require/],
      [['serve', '--tls', 'on', '--tls-cert', pskFile], /--tls-cert and --tls-key go together/],
      [['serve', '--tls', 'on', '--tls-psk', path.join(dir, 'missing.psk')], /--tls-psk .*missing\.psk/],
      [['serve', '--tls', 'on', '--tls-psk', path.join(dir, 'bad.psk')], /PSK file line 1/],
    ] as const) {
      const r = await runChild([...args, '--data', data]);
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.err}`);
      assert.match(r.err, pattern_, args.join(' '));
    }
    const help = await runChild(['serve', '--help']);
    for (const flag of ['--tls off|on|require', '--tls-psk FILE', '--tls-cert FILE', '--tls-key FILE']) assert.ok(help.out.includes(flag), flag);
    const child = await startServe(['--data', data, '--nbd', '0.0.0.0:0', '--tls', 'require', '--tls-psk', pskFile, '--volume-size', '1M']);
    try {
      assert.match(child.out(), /TLS required/);
      // nbd-uri.md: a server that insists on TLS is reached by an nbds:// URI; nbd:// ones go in the clear.
      assert.match(child.out(), /serving NBD on nbds:\/\/0\.0\.0\.0:\d+\//, 'the printed URI is one a client can use');
      const plain = await handshake(child.port);
      assert.deepEqual((await option(plain, OPT.GO, infoData(''))).map((x) => x.type), [REP.ERR_TLS_REQD], 'GO before TLS');
      assert.deepEqual((await option(plain, OPT.STARTTLS)).map((x) => x.type), [REP.ACK]);
      const s = await plain.startTls({ ciphers: 'PSK', checkServerIdentity: () => undefined, pskCallback: () => ({ identity: 'carol', psk: key }) });
      const c = await NbdClient.negotiate(s);
      assert.equal(c.size, MiB);
      await c.disconnect();
    } finally {
      child.proc.kill('SIGTERM');
      assert.equal((await child.exited).code, 0);
    }
  });
});
