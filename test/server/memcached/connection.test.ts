// Connections: pipelining with replies in order, requests split across packets, backpressure
// on a client that does not read, the connection limit, the idle timeout, endless lines and
// huge lengths, graceful shutdown, and many clients racing on the same keys.

import { EventEmitter } from 'node:events';
import type { Socket } from 'node:net';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { makeRandom } from '../../../src/media/random.js';
import { Connection } from '../../../src/server/memcached/connection.js';
import { OUTPUT_HIGH_WATER_BYTES } from '../../../src/server/memcached/index.js';
import type { ServerState } from '../../../src/server/memcached/request.js';
import { ReadTurn } from '../../../src/server/memcached/turn.js';
import { deriveSeed, replayHint, testSeed } from '../../helpers/seed.js';
import { KiB, MiB, McClient, withServer } from './harness.js';

const FILE = 'dist/test/server/memcached/connection.test.js';

/** A pipeline of sets, gets, appends and counters, and the replies it must get, in order. */
function pipeline(n: number): { request: Buffer; expected: string } {
  const parts: string[] = [];
  const want: string[] = [];
  const model = new Map<string, string>();
  const flags = new Map<string, number>();
  for (let i = 0; i < n; i++) {
    const key = `k${i % 37}`;
    const value = `v${i}-${'x'.repeat(i % 50)}`;
    switch (i % 4) {
      case 0:
        parts.push(`set ${key} ${i} 0 ${value.length}\r\n${value}\r\n`);
        want.push('STORED\r\n');
        model.set(key, value);
        flags.set(key, i);
        break;
      case 1: {
        parts.push(`get ${key}\r\n`);
        const v = model.get(key);
        want.push(v === undefined ? 'END\r\n' : `VALUE ${key} ${flags.get(key)!} ${v.length}\r\n${v}\r\nEND\r\n`);
        break;
      }
      case 2:
        parts.push(`append ${key} 0 0 1 noreply\r\n!\r\nincr c${i % 3} 1\r\n`);
        if (model.has(key)) model.set(key, `${model.get(key)!}!`);
        want.push(model.has(`c${i % 3}`) ? `${Number(model.get(`c${i % 3}`)) + 1}\r\n` : 'NOT_FOUND\r\n');
        if (model.has(`c${i % 3}`)) model.set(`c${i % 3}`, String(Number(model.get(`c${i % 3}`)) + 1));
        break;
      default:
        parts.push(`add c${i % 3} 0 0 1\r\n0\r\ndelete gone${i}\r\n`);
        want.push(model.has(`c${i % 3}`) ? 'NOT_STORED\r\n' : 'STORED\r\n', 'NOT_FOUND\r\n');
        if (!model.has(`c${i % 3}`)) model.set(`c${i % 3}`, '0');
    }
  }
  return { request: Buffer.from(parts.join(''), 'latin1'), expected: want.join('') };
}

test('pipelining: 2000 mixed requests in one write are answered in order, each seeing the ones before it', async () => {
  await withServer(async (h) => {
    const { request, expected } = pipeline(2000);
    const c = await h.connect();
    assert.equal(await c.call(request), expected);
  });
});

test('split packets: the same pipeline cut at random points (and a 300 KiB value) gives the same replies', async (t) => {
  const seed = testSeed();
  t.diagnostic(replayHint(seed, FILE));
  const random = makeRandom(deriveSeed(seed, 1));
  await withServer(async (h) => {
    const { request, expected } = pipeline(400);
    const big = Buffer.alloc(300 * KiB, 'b');
    const all = Buffer.concat([request, Buffer.from(`set big 1 0 ${big.length}\r\n`), big, Buffer.from('\r\nget big\r\nmn\r\n')]);
    const c = await h.connect();
    for (let at = 0; at < all.length; ) {
      const n = random() < 0.5 ? 1 + Math.floor(random() * 3) : 1 + Math.floor(random() * 20_000);
      c.write(all.subarray(at, at + n));
      at += n;
      if (random() < 0.2) await new Promise((r) => setImmediate(r));
    }
    const want = `${expected}STORED\r\nVALUE big 1 ${big.length}\r\n${big.toString('latin1')}\r\nEND\r\nMN\r\n`;
    const got = await c.read(want.length);
    assert.equal(got.toString('latin1'), want, replayHint(seed, FILE));
  });
});

test('a request dripping in small pieces (a long get line, a 60 KiB value) is parsed once it is whole', async () => {
  await withServer(async (h) => {
    const c = await h.connect();
    const value = Buffer.alloc(60 * KiB, 'd');
    const keys = Array.from({ length: 10_000 }, (_, i) => `drip${i}`).join(' ');
    const all = Buffer.concat([Buffer.from(`set drip9999 0 0 ${value.length}\r\n`), value, Buffer.from(`\r\nget ${keys}\r\nmn\r\n`)]);
    for (let at = 0; at < all.length; at += 512) {
      c.write(all.subarray(at, at + 512));
      if ((at / 512) % 4 === 0) await new Promise((r) => setImmediate(r));
    }
    const want = `STORED\r\nVALUE drip9999 0 ${value.length}\r\n${value.toString('latin1')}\r\nEND\r\nMN\r\n`;
    assert.equal((await c.read(want.length)).toString('latin1'), want);
  });
});

test('backpressure: a client that stops reading stops being read; the server holds bounded bytes for it', async () => {
  await withServer(async (h) => {
    const c = await h.connect();
    const value = 'v'.repeat(100 * KiB);
    assert.equal(await c.call(`set big 0 0 ${value.length}\r\n${value}\r\n`), 'STORED\r\n');
    c.socket.pause();
    const requests = 600; // 60 MB of replies
    c.write('get big\r\n'.repeat(requests));
    let peakOut = 0;
    let peakIn = 0;
    for (let i = 0; i < 20; i++) {
      await new Promise((r) => setTimeout(r, 25));
      const s = h.server.stats();
      peakOut = Math.max(peakOut, s.maxOutputBytes);
      peakIn = Math.max(peakIn, s.inputBytes);
    }
    assert.ok(peakOut <= OUTPUT_HIGH_WATER_BYTES + 2 * value.length, `unsent reply bytes stayed bounded (${peakOut})`);
    assert.ok(peakIn <= 64 * KiB + requests * 9, `unparsed input stayed bounded (${peakIn})`);
    const other = await h.connect();
    assert.equal(await other.call('get nope\r\n'), 'END\r\n', 'other clients are served meanwhile');
    c.socket.resume();
    const one = `VALUE big 0 ${value.length}\r\n${value}\r\nEND\r\n`;
    const got = await c.read(one.length * requests);
    assert.equal(got.length, one.length * requests);
    assert.equal(got.subarray(got.length - one.length).toString('latin1'), one);
  });
});

test('a client that sends without reading cannot make the server queue writes without bound', async () => {
  await withServer(async (h) => {
    const c = await h.connect();
    c.socket.pause();
    const value = 'w'.repeat(10 * KiB);
    const chunk = Buffer.from(`set k 0 0 ${value.length}\r\n${value}\r\n`.repeat(100));
    for (let i = 0; i < 50; i++) c.write(chunk); // 50 MB of sets
    await new Promise((r) => setTimeout(r, 300));
    assert.ok(h.server.stats().inputBytes <= 2 * MiB, `input held: ${h.server.stats().inputBytes}`);
    c.socket.resume();
    const got = await c.read('STORED\r\n'.length * 5000);
    assert.equal(got.toString('latin1'), 'STORED\r\n'.repeat(5000));
  });
});

test('the connection limit: one client too many is told "ERROR Too many open connections" and closed', async () => {
  await withServer(
    async (h) => {
      const a = await h.connect();
      const b = await h.connect();
      await a.call('mn\r\n');
      await b.call('mn\r\n');
      const c = await McClient.connect(h.port);
      assert.equal(await c.untilClosed(), 'ERROR Too many open connections\r\n');
      a.destroy();
      await a.done;
      for (let i = 0; i < 50 && h.server.connections() > 1; i++) await new Promise((r) => setTimeout(r, 20));
      const d = await h.connect();
      assert.equal(await d.call('get x\r\n'), 'END\r\n', 'a slot that frees up is used again');
      assert.match(await d.call('stats\r\n'), /STAT rejected_connections 1\r\n/);
    },
    { maxConnections: 2 },
  );
});

test('the idle timeout closes a silent client and counts it; an active one stays', async () => {
  await withServer(
    async (h) => {
      const idle = await h.connect();
      const busy = await h.connect();
      for (let i = 0; i < 8; i++) {
        assert.equal(await busy.call('get x\r\n'), 'END\r\n');
        await new Promise((r) => setTimeout(r, 50));
      }
      await idle.untilClosed(2000);
      assert.match(await busy.call('stats\r\n'), /STAT idle_kicks 1\r\n/);
      assert.match(await busy.call('stats settings\r\n'), /STAT idle_time 0\r\n/, 'whole seconds');
    },
    { idleTimeoutMs: 200 },
  );
});

test('an endless line is answered SERVER_ERROR and closed; a long multi-get line is fine', async () => {
  await withServer(async (h) => {
    const c = await h.connect();
    c.write('x'.repeat(3000));
    assert.equal(await c.untilClosed(), 'SERVER_ERROR line too long; closing the connection\r\n');
    const g = await h.connect();
    g.write(`get ${'k '.repeat(300 * 1024)}`);
    assert.equal(await g.untilClosed(), 'SERVER_ERROR line too long; closing the connection\r\n');
    const ok = await h.connect();
    const keys = Array.from({ length: 20_000 }, (_, i) => `key${i}`).join(' ');
    await ok.call('set key19999 0 0 1\r\nz\r\n');
    assert.equal(await ok.call(`get ${keys}\r\n`), 'VALUE key19999 0 1\r\nz\r\nEND\r\n', 'a 170 KB get line');
    assert.ok(h.logs.some((l) => /line without a newline/.test(l)));
  });
});

test('a 4 GB length is a bad command line; a 2 GB one is too large and its bytes are dropped as they come', async () => {
  await withServer(async (h) => {
    const c = await h.connect();
    assert.equal(await c.call('set a 0 0 4294967296\r\n'), 'CLIENT_ERROR bad command line format\r\n');
    assert.equal(await c.call('ms a 4294967296 T0\r\n'), 'CLIENT_ERROR bad command line format\r\n');
    const huge = await h.connect();
    huge.write('set a 0 0 2147483647\r\n');
    assert.equal((await huge.until((b) => b.includes('\r\n'))).toString(), 'SERVER_ERROR object too large for cache\r\n');
    const junk = Buffer.alloc(MiB, 'j');
    for (let i = 0; i < 20; i++) huge.write(junk);
    await new Promise((r) => setTimeout(r, 200));
    assert.ok(h.server.stats().inputBytes < MiB, `the swallowed bytes are not held (${h.server.stats().inputBytes})`);
    assert.equal(await c.call('get a\r\n'), 'END\r\n', 'others are undisturbed');
  });
});

test('shutdown: requests already read are answered, then connections close; a half-closed client gets every reply', async () => {
  await withServer(async (h) => {
    const half = await h.connect();
    half.write('set a 0 0 1\r\nx\r\n'.repeat(50) + 'get a\r\n');
    half.end();
    const got = await half.untilClosed();
    assert.equal(got, `${'STORED\r\n'.repeat(50)}VALUE a 0 1\r\nx\r\nEND\r\n`);
    const c = await h.connect();
    c.write('set b 0 0 1\r\ny\r\n'.repeat(100));
    await new Promise((r) => setTimeout(r, 5));
    const closing = h.server.close();
    const replies = await c.untilClosed();
    await closing;
    assert.ok(replies.length > 0 && replies === 'STORED\r\n'.repeat(replies.length / 8), `whole replies only: ${replies.length} bytes`);
    assert.equal(h.server.connections(), 0);
  });
});

test('many clients at once: counters and CAS loops from 20 connections lose no update', async () => {
  await withServer(async (h) => {
    const c0 = await h.connect();
    await c0.call('set n 0 0 1\r\n0\r\nset cas 0 0 1\r\n0\r\n');
    const clients = await Promise.all(Array.from({ length: 20 }, () => h.connect()));
    await Promise.all(
      clients.map(async (c) => {
        await c.call('incr n 1\r\n'.repeat(50));
        for (let i = 0; i < 5; i++) {
          for (;;) {
            const m = /^VALUE cas 0 \d+ (\d+)\r\n(\d+)\r\nEND\r\n$/.exec(await c.call('gets cas\r\n'))!;
            const next = String(Number(m[2]) + 1);
            if ((await c.call(`cas cas 0 0 ${next.length} ${m[1]}\r\n${next}\r\n`)) === 'STORED\r\n') break;
          }
        }
      }),
    );
    assert.equal(await c0.call('get n cas\r\n'), 'VALUE n 0 4\r\n1000\r\nVALUE cas 0 3\r\n100\r\nEND\r\n');
  });
});

/** A socket that records what is written: each write outside cork(), or each cork()..uncork(), is one send. */
class RecordingSocket extends EventEmitter {
  writableLength = 0;
  destroyed = false;
  remoteAddress = '127.0.0.1';
  remotePort = 1;
  sends: string[] = [];
  paused = false;
  private corked: string[] | undefined;
  setNoDelay(): void {}
  setTimeout(): void {}
  pause(): void {
    this.paused = true;
  }
  resume(): void {
    this.paused = false;
  }
  end(): void {}
  destroy(): void {
    this.destroyed = true;
  }
  cork(): void {
    this.corked = [];
  }
  uncork(): void {
    this.sends.push(this.corked!.join(''));
    this.corked = undefined;
  }
  write(b: Buffer): boolean {
    if (this.corked !== undefined) this.corked.push(b.toString('latin1'));
    else this.sends.push(b.toString('latin1'));
    return true;
  }
}

test('pipelined writes are answered one send per batch of commits the store lands, not one per write', async () => {
  await withServer(async (h) => {
    const state = { cache: h.server.cache, reads: new ReadTurn(), verbosity: 0, idleTimeoutMs: 0, bytesRead: 0, bytesWritten: 0 } as unknown as ServerState;
    const socket = new RecordingSocket();
    new Connection(socket as unknown as Socket, state, () => undefined);
    const sets = Array.from({ length: 10 }, (_, i) => `set k${i} ${i} 0 2\r\nv${i}\r\n`).join('');
    socket.emit('data', Buffer.from(`${sets}delete nope\r\nincr nope 1\r\n`, 'latin1'));
    const want = `${'STORED\r\n'.repeat(10)}NOT_FOUND\r\nNOT_FOUND\r\n`;
    for (let i = 0; i < 1000 && socket.sends.join('').length < want.length; i++) await new Promise((resolve) => setImmediate(resolve));
    assert.equal(socket.sends.join(''), want);
    // The store lands these 12 commits in one or two group commits (the first may start alone).
    assert.ok(socket.sends.length <= 2, `sends: ${JSON.stringify(socket.sends)}`);
  });
});

test('a set arriving in the same turn as a get is handed to the store before the get is answered', async () => {
  await withServer(async (h) => {
    const state = { cache: h.server.cache, reads: new ReadTurn(), verbosity: 0, idleTimeoutMs: 0, bytesRead: 0, bytesWritten: 0 } as unknown as ServerState;
    const events: string[] = [];
    const cache = h.server.cache;
    const store = cache.store.bind(cache);
    cache.store = (r) => {
      events.push(`store ${r.key.toString()}`);
      return store(r);
    };
    const reader = new RecordingSocket();
    const writer = new RecordingSocket();
    const write = reader.write.bind(reader);
    reader.write = (b: Buffer): boolean => {
      events.push(`reply ${b.toString('latin1').trim()}`);
      return write(b);
    };
    new Connection(reader as unknown as Socket, state, () => undefined);
    new Connection(writer as unknown as Socket, state, () => undefined);
    reader.emit('data', Buffer.from('get a\r\n', 'latin1'));
    writer.emit('data', Buffer.from('set b 0 0 1\r\nx\r\n', 'latin1'));
    assert.deepEqual(events, ['store b']);
    for (let i = 0; i < 1000 && writer.sends.length === 0; i++) await new Promise((resolve) => setImmediate(resolve));
    assert.deepEqual(events, ['store b', 'reply END']);
    assert.deepEqual(writer.sends, ['STORED\r\n']);
  });
});

test('a client that sends many reads in one turn is paused until they run, then read again', async () => {
  await withServer(async (h) => {
    const state = { cache: h.server.cache, reads: new ReadTurn(), verbosity: 0, idleTimeoutMs: 0, bytesRead: 0, bytesWritten: 0 } as unknown as ServerState;
    const socket = new RecordingSocket();
    new Connection(socket as unknown as Socket, state, () => undefined);
    const n = 20_000; // 140 KB of get lines
    socket.emit('data', Buffer.from('get nope\r\n'.repeat(n), 'latin1'));
    assert.equal(socket.paused, true);
    assert.deepEqual(socket.sends, []);
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(socket.paused, false);
    assert.equal(socket.sends.join(''), 'END\r\n'.repeat(n));
  });
});
