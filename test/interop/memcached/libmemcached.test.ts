// Interop with libmemcached's command-line tools (Debian's libmemcached-tools): memcp, memcat,
// memexist, memtouch, memrm, memflush, memstat, memslap and memcapable's ASCII protocol suite,
// each against a fresh server.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { withServer } from '../../server/memcached/harness.js';
import { missingTools, run, tool } from './tools.js';

test('memcp, memcat, memexist, memtouch, memrm, memflush, memstat: files in, files out, gone', async (t) => {
  const why = missingTools('memcp', 'memcat', 'memexist', 'memtouch', 'memrm', 'memflush', 'memstat');
  if (why !== undefined) return t.skip(why);
  await withServer(async (h) => {
    const servers = `--servers=127.0.0.1:${h.port}`;
    const files = [['one.txt', 'hello, memcached\n'], ['two.bin', Buffer.from([0, 1, 2, 255, 13, 10, 13, 10]).toString('latin1')]] as const;
    for (const [name, content] of files) fs.writeFileSync(path.join(h.dir, name), content, 'latin1');
    const cp = await run(tool('memcp')!, [servers, '--flag=77', ...files.map(([n]) => path.join(h.dir, n))]);
    assert.equal(cp.code, 0, cp.stderr);
    const c = await h.connect();
    assert.equal(await c.call('get one.txt\r\n'), `VALUE one.txt 77 ${files[0][1].length}\r\n${files[0][1]}\r\nEND\r\n`, 'stored with its flags');
    const cat = await run(tool('memcat')!, [servers, 'one.txt']);
    assert.equal(cat.code, 0, cat.stderr);
    assert.equal(cat.stdout.trimEnd(), files[0][1].trimEnd());
    assert.equal((await run(tool('memexist')!, [servers, 'two.bin'])).code, 0);
    assert.notEqual((await run(tool('memexist')!, [servers, 'three'])).code, 0, 'memexist fails for a missing key');
    assert.equal((await run(tool('memtouch')!, [servers, '--expire=100', 'two.bin'])).code, 0);
    assert.match(await c.call('mg two.bin t\r\n'), /^HD t100\r\n$/, 'memtouch set the exptime');
    assert.equal((await run(tool('memrm')!, [servers, 'one.txt'])).code, 0);
    assert.notEqual((await run(tool('memcat')!, [servers, 'one.txt'])).code, 0, 'memcat fails once removed');
    const stat = await run(tool('memstat')!, [servers]);
    assert.equal(stat.code, 0, stat.stderr);
    assert.match(stat.stdout, new RegExp(`pid: ${process.pid}`));
    assert.match(stat.stdout, /version: 1\.6\.0/);
    assert.match(stat.stdout, /atomio_version: /);
    assert.equal((await run(tool('memflush')!, [servers])).code, 0);
    assert.equal(await c.call('get two.bin\r\n'), 'END\r\n', 'memflush emptied the server');
  });
});

test('memslap: sets and gets from 4 concurrent clients all succeed', async (t) => {
  const why = missingTools('memslap');
  if (why !== undefined) return t.skip(why);
  await withServer(
    async (h) => {
      const r = await run(tool('memslap')!, [`--servers=127.0.0.1:${h.port}`, '--concurrency=4', '--execute-number=200']);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /Time to set\s+800 keys by\s+4 threads/);
      assert.ok(h.server.cache.usage().items >= 1, 'memslap left its keys');
      const g = await run(tool('memslap')!, [`--servers=127.0.0.1:${h.port}`, '--concurrency=4', '--execute-number=200', '--test=get']);
      assert.equal(g.code, 0, g.stderr);
    },
    { media: 'file', capacity: 256 * 1024 * 1024 },
  );
});

test('memcapable -a: libmemcached\'s ASCII protocol conformance suite passes', async (t) => {
  const why = missingTools('memcapable');
  if (why !== undefined) return t.skip(why);
  await withServer(async (h) => {
    const r = await run(tool('memcapable')!, ['-h', '127.0.0.1', '-p', String(h.port), '-a']);
    assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
    assert.match(r.stdout, /All tests passed/);
    assert.doesNotMatch(r.stdout, /\[fail\]/);
  });
});
