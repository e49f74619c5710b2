// Durability through a real process death: `atomio serve` in a child process answers STORED
// (DELETED, a counter's value, TOUCHED), is SIGKILLed right after, and a new child on the same
// directory serves every acknowledged item back with its flags, its TTL and its CAS unique.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { McClient } from '../../server/memcached/harness.js';
import { withTempDir } from '../../helpers/temp.js';
import { startMemcachedServe } from './child.js';

test('SIGKILL right after STORED: items, flags, TTLs and CAS uniques are there after a restart', async () => {
  await withTempDir(async (dir) => {
    const args = ['--data', path.join(dir, 'store'), '--memcached', '127.0.0.1:0', '--capacity', '256M'];
    const first = await startMemcachedServe(args);
    const cas = new Map<string, string>();
    let acknowledged = 0;
    try {
      const c = await McClient.connect(first.port);
      assert.equal(await c.call('set flagged 4294967295 0 5\r\nhello\r\n'), 'STORED\r\n');
      assert.equal(await c.call('set ttl 7 3600 3\r\nttl\r\n'), 'STORED\r\n');
      assert.equal(await c.call('set counter 0 0 2\r\n40\r\nincr counter 2\r\n'), 'STORED\r\n42\r\n');
      assert.equal(await c.call('set doomed 0 0 1\r\nx\r\ndelete doomed\r\n'), 'STORED\r\nDELETED\r\n');
      assert.equal(await c.call('set log 0 0 1\r\na\r\nappend log 0 0 1\r\nb\r\n'), 'STORED\r\nSTORED\r\n');
      assert.equal(await c.call('ms meta 4 F9 T7200 I\r\nmeta\r\nmd meta I\r\n'), 'HD\r\nHD\r\n');
      // CAS values chosen by clients (meta E) are kept with the item, not handed out again.
      assert.equal(await c.call('ms chosen 6 F5 E18446744073709551615 c\r\nchosen\r\n'), 'HD c18446744073709551615\r\n');
      assert.equal(await c.call('ma hits N0 J7 E42 c\r\n'), 'HD c42\r\n');
      for (const key of ['flagged', 'ttl', 'counter', 'log']) {
        const m = /^VALUE \S+ \d+ \d+ (\d+)\r\n/.exec(await c.call(`gets ${key}\r\n`));
        cas.set(key, m![1]!);
      }
      // Many writes in flight from a second client: every one acknowledged must survive.
      const p = await McClient.connect(first.port);
      p.write(Array.from({ length: 300 }, (_, i) => `set bulk${i} ${i} 0 ${String(i).length}\r\n${i}\r\n`).join(''));
      const got = await p.until((b) => b.toString('latin1').split('STORED\r\n').length > 150);
      acknowledged = got.toString('latin1').split('STORED\r\n').length - 1;
      // The last reply, then the kill: nothing in between.
      c.write('set last 3 0 4\r\nlast\r\n');
      await c.until((b) => b.toString('latin1') === 'STORED\r\n');
      first.proc.kill('SIGKILL');
    } finally {
      first.proc.kill('SIGKILL');
    }
    assert.equal((await first.exited).signal, 'SIGKILL');

    const second = await startMemcachedServe(args);
    try {
      const c = await McClient.connect(second.port);
      assert.equal(await c.call('get flagged last\r\n'), 'VALUE flagged 4294967295 5\r\nhello\r\nVALUE last 3 4\r\nlast\r\nEND\r\n');
      for (const [key, unique] of cas) assert.match(await c.call(`gets ${key}\r\n`), new RegExp(`^VALUE ${key} \\d+ \\d+ ${unique}\\r\\n`), `${key} kept its CAS unique`);
      assert.match(await c.call('mg ttl t f v\r\n'), /^VA 3 t(\d+) f7\r\nttl\r\n$/);
      const ttl = Number(/ t(\d+)/.exec(await c.call('mg ttl t\r\n'))![1]);
      assert.ok(ttl > 3500 && ttl <= 3600, `the TTL survived (${ttl} s left)`);
      assert.equal(await c.call('get counter doomed log\r\n'), 'VALUE counter 0 2\r\n42\r\nVALUE log 0 2\r\nab\r\nEND\r\n');
      assert.match(await c.call('mg meta v f t\r\n'), /^VA 4 f9 t\d+ X W\r\nmeta\r\n$/, 'flags, TTL and the stale mark survived');
      assert.equal(await c.call('gets chosen hits\r\n'), 'VALUE chosen 5 6 18446744073709551615\r\nchosen\r\nVALUE hits 0 1 42\r\n7\r\nEND\r\n', 'explicit CAS values survived');
      assert.equal(await c.call('cas chosen 5 0 3 18446744073709551615\r\nnew\r\nma hits C42 v\r\n'), 'STORED\r\nVA 1\r\n8\r\n', 'and are compared after it');
      assert.equal(await c.call(`cas flagged 1 0 3 ${cas.get('flagged')!}\r\nnew\r\n`), 'STORED\r\n', 'gets before the crash, cas after it');
      for (let i = 0; i < acknowledged; i++) {
        assert.equal(await c.call(`get bulk${i}\r\n`), `VALUE bulk${i} ${i} ${String(i).length}\r\n${i}\r\nEND\r\n`, `acknowledged set ${i} survived`);
      }
      second.proc.kill('SIGTERM');
      assert.equal((await second.exited).code, 0);
    } finally {
      second.proc.kill('SIGKILL');
    }
  });
});

test('flush_all with a delay survives a restart, and runs at the next start when its deadline passed meanwhile', async () => {
  await withTempDir(async (dir) => {
    const args = ['--data', path.join(dir, 'store'), '--memcached', '127.0.0.1:0', '--capacity', '128M'];
    const first = await startMemcachedServe(args);
    try {
      const c = await McClient.connect(first.port);
      assert.equal(await c.call('set a 0 0 1\r\nx\r\nflush_all 1\r\n'), 'STORED\r\nOK\r\n');
      first.proc.kill('SIGKILL');
    } finally {
      first.proc.kill('SIGKILL');
    }
    await first.exited;
    await new Promise((r) => setTimeout(r, 1100));
    const second = await startMemcachedServe(args);
    try {
      const c = await McClient.connect(second.port);
      assert.equal(await c.call('get a\r\n'), 'END\r\n', 'the flush happened at start');
      assert.equal(await c.call('set b 0 0 1\r\ny\r\nget b\r\n'), 'STORED\r\nVALUE b 0 1\r\ny\r\nEND\r\n');
      second.proc.kill('SIGTERM');
      await second.exited;
    } finally {
      second.proc.kill('SIGKILL');
    }
  });
});
