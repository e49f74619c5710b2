// `atomio serve` with memcached, as a user runs it (a child process): where it listens, a
// graceful stop that answers what was sent, the flags, their environment variables, usage
// errors, --help, and what happens when the default port is taken.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import path from 'node:path';
import { runChild } from '../nbd/child.js';
import { McClient } from '../../server/memcached/harness.js';
import { withTempDir } from '../../helpers/temp.js';
import { startMemcachedServe } from './child.js';

test('serve: memcached where --memcached says, flags applied, SIGTERM answers what was sent and closes the store', async () => {
  await withTempDir(async (dir) => {
    const data = path.join(dir, 'store');
    const child = await startMemcachedServe(
      ['--data', data, '--memcached', '127.0.0.1:0', '--capacity', '256M', '--max-item-size', '2K', '--max-connections', '3', '--idle-timeout', '60'],
    );
    try {
      assert.match(child.out(), /serving memcached on 127\.0\.0\.1:\d+ \(items in kv pool 'memcached', max item size 2\.0 KiB\)/);
      assert.match(child.out(), new RegExp(`data in ${data.replace(/[/.]/g, '\\$&')}`));
      const c = await McClient.connect(child.port);
      assert.equal(await c.call('set a 0 0 2049\r\n' + 'x'.repeat(2049) + '\r\n'), 'SERVER_ERROR object too large for cache\r\n');
      const settings = await c.call('stats settings\r\n');
      assert.match(settings, /STAT maxconns 3\r\n/);
      assert.match(settings, /STAT idle_time 60\r\n/);
      assert.match(settings, /STAT item_size_max 2048\r\n/);
      c.write('set b 0 0 1\r\ny\r\n'.repeat(20));
      await new Promise((r) => setTimeout(r, 20));
      child.proc.kill('SIGTERM');
      const replies = await c.untilClosed();
      assert.equal(replies, 'STORED\r\n'.repeat(replies.length / 8), 'whole replies, then a close');
      assert.deepEqual(await child.exited, { code: 0, signal: null });
      assert.match(child.out(), /stopped; the store is closed/);
    } finally {
      child.proc.kill('SIGKILL');
    }
    const again = await startMemcachedServe(['--data', data], { ATOMIO_MEMCACHED: '127.0.0.1:0', ATOMIO_MAX_ITEM_SIZE: '4K' });
    try {
      const c = await McClient.connect(again.port);
      assert.equal(await c.call('get b\r\n'), 'VALUE b 0 1\r\ny\r\nEND\r\n', 'the data stayed');
      assert.match(await c.call('stats settings\r\n'), /STAT item_size_max 4096\r\n/, 'environment variables are read');
      again.proc.kill('SIGINT');
      assert.equal((await again.exited).code, 0);
    } finally {
      again.proc.kill('SIGKILL');
    }
  });
});

test('serve: an explicit memcached address taken is an error; the default one taken is a note, and NBD goes on', async () => {
  await withTempDir(async (dir) => {
    const blocker = net.createServer();
    await new Promise<void>((resolve) => blocker.listen({ host: '127.0.0.1', port: 0 }, resolve));
    const port = (blocker.address() as net.AddressInfo).port;
    try {
      const taken = await runChild(['serve', '--data', path.join(dir, 'a'), '--nbd', 'off', '--memcached', `127.0.0.1:${port}`]);
      assert.equal(taken.code, 1);
      assert.match(taken.err, /EADDRINUSE/);
      const off = await runChild(['serve', '--data', path.join(dir, 'b'), '--nbd', 'off', '--memcached', 'off', '--max-item-size', 'x']);
      assert.equal(off.code, 2);
      assert.match(off.err, /--max-item-size takes a positive number/);
    } finally {
      blocker.close();
    }
    // The default address: held here for the test (or by someone else already).
    const held = net.createServer();
    const got = await new Promise<boolean>((resolve) => {
      held.once('error', () => resolve(false));
      held.listen({ host: '127.0.0.1', port: 11211 }, () => resolve(true));
    });
    try {
      const child = await startNbdOnly(path.join(dir, 'c'));
      assert.match(child.err, /127\.0\.0\.1:11211 is in use \(another memcached\?\); memcached is off: give --memcached HOST:PORT/);
      assert.match(child.out, /atomio: serving NBD on/, 'NBD is served all the same');
      assert.equal(child.code, 0, `stopped cleanly (${got ? 'the test held 11211' : '11211 was already taken'})`);
    } finally {
      if (got) held.close();
    }
  });
});

/** serve with NBD on a free port and memcached at its default; stopped with SIGTERM once up. */
async function startNbdOnly(data: string): Promise<{ code: number | null; out: string; err: string }> {
  const { startServe } = await import('../nbd/child.js');
  const child = await startServe(['--data', data, '--nbd', '127.0.0.1:0', '--capacity', '128M']);
  child.proc.kill('SIGTERM');
  const exit = await child.exited;
  return { code: exit.code, out: child.out(), err: child.err() };
}

test('serve: memcached usage errors exit 2 and say what is wrong; --help documents every memcached flag', async () => {
  const cases: [string[], RegExp][] = [
    [['serve', '--memcached', 'nowhere'], /--memcached takes HOST:PORT/],
    [['serve', '--max-connections', '0'], /--max-connections takes a whole number >= 1/],
    [['serve', '--idle-timeout', 'soon'], /--idle-timeout takes a whole number >= 0/],
  ];
  for (const [args, message] of cases) {
    const r = await runChild(args);
    assert.equal(r.code, 2, args.join(' '));
    assert.match(r.err, message);
  }
  await withTempDir(async (dir) => {
    const remote = await runChild(['serve', '--data', path.join(dir, 's'), '--nbd', 'off', '--memcached', '0.0.0.0:0']);
    assert.equal(remote.code, 1);
    assert.match(remote.err, /not a loopback address.*--memcached-allow-remote/);
  });
  const help = await runChild(['serve', '--help']);
  assert.equal(help.code, 0);
  for (const flag of ['--memcached HOST:PORT|off', '--memcached-allow-remote', '--max-item-size', '--max-connections', '--idle-timeout', 'ATOMIO_MEMCACHED']) {
    assert.ok(help.out.includes(flag), `--help mentions ${flag}`);
  }
});
