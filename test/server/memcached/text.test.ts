// The text protocol over a raw socket, command by command: every reply line and error line
// of ../shared/specs/memcached-protocol.txt, flags, exptimes, CAS uniques and noreply.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { McClient, withServer, type Harness } from './harness.js';

const DAY_S = 24 * 60 * 60;

/** The CAS unique `gets` shows for `key`. */
async function casOf(h: Harness, key: string): Promise<string> {
  const c = await h.connect();
  const r = await c.call(`gets ${key}\r\n`);
  const m = /^VALUE \S+ \d+ \d+ (\d+)\r\n/.exec(r);
  assert.ok(m, `gets ${key} found the item: ${r}`);
  return m[1]!;
}

test('set, get and gets: flags round-trip as 32-bit, gets adds the CAS, misses are left out', async () => {
  await withServer(async (h) => {
    const c = await h.connect();
    assert.equal(await c.call('set a 4294967295 0 5\r\nhello\r\n'), 'STORED\r\n');
    assert.equal(await c.call('set b 0 0 0\r\n\r\n'), 'STORED\r\n', 'an empty value');
    assert.equal(await c.call('set c 7 0 4\r\n\r\n\r\n\r\n'), 'STORED\r\n', 'CRLF inside the data is data');
    assert.equal(await c.call('get a\r\n'), 'VALUE a 4294967295 5\r\nhello\r\nEND\r\n');
    assert.equal(await c.call('get nope\r\n'), 'END\r\n');
    assert.equal(await c.call('get a nope b c\r\n'), 'VALUE a 4294967295 5\r\nhello\r\nVALUE b 0 0\r\n\r\nVALUE c 7 4\r\n\r\n\r\n\r\nEND\r\n');
    const gets = await c.call('gets a b\r\n');
    const m = /^VALUE a 4294967295 5 (\d+)\r\nhello\r\nVALUE b 0 0 (\d+)\r\n\r\nEND\r\n$/.exec(gets);
    assert.ok(m, gets);
    assert.equal(Number(m[1]), h.server.cache.pool.versionOf('a'), 'the CAS unique is the kv version');
    assert.notEqual(m[1], m[2], 'CAS uniques differ between items');
    assert.equal(await c.call('set a 1 0 2\r\nhi\r\n'), 'STORED\r\n');
    assert.ok(Number(await casOf(h, 'a')) > Number(m[1]), 'a new write gets a higher CAS');
    const key = 'k'.repeat(250);
    assert.equal(await c.call(`set ${key} 0 0 1\r\nx\r\nget ${key}\r\n`), `STORED\r\nVALUE ${key} 0 1\r\nx\r\nEND\r\n`, 'a 250-byte key');
  });
});

test('add, replace, append, prepend: their conditions, and append/prepend keep flags and TTL', async () => {
  await withServer(async (h) => {
    const c = await h.connect();
    assert.equal(await c.call('add a 3 0 1\r\nx\r\n'), 'STORED\r\n');
    assert.equal(await c.call('add a 4 0 1\r\ny\r\n'), 'NOT_STORED\r\n');
    assert.equal(await c.call('replace b 0 0 1\r\ny\r\n'), 'NOT_STORED\r\n');
    assert.equal(await c.call('replace a 5 100 1\r\nz\r\n'), 'STORED\r\n');
    assert.equal(await c.call('append a 9 0 2\r\n12\r\n'), 'STORED\r\n');
    assert.equal(await c.call('prepend a 9 0 2\r\n00\r\n'), 'STORED\r\n');
    assert.equal(await c.call('get a\r\n'), 'VALUE a 5 5\r\n00z12\r\nEND\r\n', 'append/prepend ignore their flags');
    assert.equal(await c.call('append nope 0 0 1\r\nx\r\n'), 'NOT_STORED\r\n');
    assert.equal(await c.call('prepend nope 0 0 1\r\nx\r\n'), 'NOT_STORED\r\n');
    h.clock.advance(99_000);
    assert.match(await c.call('get a\r\n'), /^VALUE a 5 5\r\n/, 'still there before its exptime');
    h.clock.advance(1_000);
    assert.equal(await c.call('get a\r\n'), 'END\r\n', 'the TTL of replace held through append/prepend');
  });
});

test('cas: STORED with the current unique, EXISTS after a change, NOT_FOUND when absent; survives a reopen of the value', async () => {
  await withServer(async (h) => {
    const c = await h.connect();
    await c.call('set a 0 0 1\r\nx\r\n');
    const cas = await casOf(h, 'a');
    assert.equal(await c.call(`cas a 2 0 1 ${cas}\r\ny\r\n`), 'STORED\r\n');
    assert.equal(await c.call(`cas a 3 0 1 ${cas}\r\nz\r\n`), 'EXISTS\r\n', 'the unique moved on');
    assert.equal(await c.call('get a\r\n'), 'VALUE a 2 1\r\ny\r\nEND\r\n');
    assert.equal(await c.call(`cas nope 0 0 1 ${cas}\r\nz\r\n`), 'NOT_FOUND\r\n');
    assert.equal(await c.call('cas a 0 0 1 0\r\nz\r\n'), 'EXISTS\r\n', 'unique 0 matches nothing');
    assert.equal(await c.call('cas a 0 0 1 18446744073709551615\r\nz\r\n'), 'EXISTS\r\n');
    assert.equal(await c.call('cas a 0 0 1 18446744073709551616\r\nz\r\n'), 'CLIENT_ERROR bad command line format\r\n', 'over 64 bits');
    assert.equal(await c.call('cas a 0 0 1\r\nz\r\n'), 'CLIENT_ERROR bad command line format\r\n', 'no unique: the data is swallowed');
    const now = await casOf(h, 'a');
    assert.equal(await c.call(`cas a 0 -1 1 ${now}\r\nz\r\nget a\r\n`), 'STORED\r\nEND\r\n', 'a cas with a negative exptime removes the item');
  });
});

test('delete: DELETED, NOT_FOUND, the old "0" argument, and a usage error for anything else', async () => {
  await withServer(async (h) => {
    const c = await h.connect();
    await c.call('set a 0 0 1\r\nx\r\nset b 0 0 1\r\nx\r\n');
    assert.equal(await c.call('delete a\r\n'), 'DELETED\r\n');
    assert.equal(await c.call('delete a\r\n'), 'NOT_FOUND\r\n');
    assert.equal(await c.call('delete b 0\r\n'), 'DELETED\r\n');
    assert.equal(await c.call('delete b 5\r\n'), 'CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]\r\n');
    assert.equal(await c.call('delete\r\n'), 'CLIENT_ERROR bad command line format\r\n');
    assert.equal(await c.call('get a b\r\n'), 'END\r\n');
  });
});

test('incr/decr: unsigned 64-bit, wrap on incr, floor 0 on decr, flags and TTL kept, errors', async () => {
  await withServer(async (h) => {
    const c = await h.connect();
    assert.equal(await c.call('set n 42 100 2\r\n10\r\n'), 'STORED\r\n');
    assert.equal(await c.call('incr n 5\r\n'), '15\r\n');
    assert.equal(await c.call('decr n 6\r\n'), '9\r\n');
    assert.equal(await c.call('get n\r\n'), 'VALUE n 42 1\r\n9\r\nEND\r\n', 'the length follows the number; flags kept');
    assert.equal(await c.call('decr n 100\r\n'), '0\r\n', 'decr stops at 0');
    assert.equal(await c.call('set m 0 0 20\r\n18446744073709551615\r\n'), 'STORED\r\n');
    assert.equal(await c.call('incr m 2\r\n'), '1\r\n', 'incr wraps at 2^64');
    assert.equal(await c.call('incr m 18446744073709551615\r\n'), '0\r\n');
    assert.equal(await c.call('incr nope 1\r\n'), 'NOT_FOUND\r\n');
    assert.equal(await c.call('decr nope 1\r\n'), 'NOT_FOUND\r\n');
    assert.equal(await c.call('set t 0 0 3\r\nabc\r\n'), 'STORED\r\n');
    assert.equal(await c.call('incr t 1\r\n'), 'CLIENT_ERROR cannot increment or decrement non-numeric value\r\n');
    assert.equal(await c.call('set t 0 0 21\r\n184467440737095516150\r\nincr t 1\r\n'), 'STORED\r\nCLIENT_ERROR cannot increment or decrement non-numeric value\r\n');
    assert.equal(await c.call('incr n abc\r\n'), 'CLIENT_ERROR invalid numeric delta argument\r\n');
    assert.equal(await c.call('incr n -1\r\n'), 'CLIENT_ERROR invalid numeric delta argument\r\n');
    assert.equal(await c.call('incr n 18446744073709551616\r\n'), 'CLIENT_ERROR invalid numeric delta argument\r\n');
    assert.equal(await c.call('incr n\r\n'), 'CLIENT_ERROR bad command line format\r\n');
    const before = await casOf(h, 'n');
    assert.equal(await c.call('incr n 1\r\n'), '1\r\n');
    assert.ok(Number(await casOf(h, 'n')) > Number(before), 'a counter change is a new CAS');
    h.clock.advance(100_000);
    assert.equal(await c.call('get n\r\n'), 'END\r\n', 'incr kept the TTL');
  });
});

test('touch, gat, gats: a new exptime without a new CAS; NOT_FOUND and misses', async () => {
  await withServer(async (h) => {
    const c = await h.connect();
    await c.call('set a 1 10 1\r\nx\r\nset b 2 0 1\r\ny\r\n');
    const cas = await casOf(h, 'a');
    assert.equal(await c.call('touch a 100\r\n'), 'TOUCHED\r\n');
    assert.equal(await c.call('touch nope 100\r\n'), 'NOT_FOUND\r\n');
    assert.equal(await casOf(h, 'a'), cas, 'touch keeps the CAS');
    h.clock.advance(50_000);
    assert.equal(await c.call('get a\r\n'), 'VALUE a 1 1\r\nx\r\nEND\r\n', 'alive past its first exptime');
    assert.equal(await c.call('gat 10 a nope b\r\n'), 'VALUE a 1 1\r\nx\r\nVALUE b 2 1\r\ny\r\nEND\r\n');
    assert.equal(await c.call(`gats 0 a\r\n`), `VALUE a 1 1 ${cas}\r\nx\r\nEND\r\n`, 'gats shows the unchanged CAS');
    h.clock.advance(11_000);
    assert.equal(await c.call('get a b\r\n'), 'VALUE a 1 1\r\nx\r\nEND\r\n', 'gats 0 made a permanent; gat 10 gave b 10 s');
    assert.equal(await c.call('touch a -1\r\nget a\r\n'), 'TOUCHED\r\nEND\r\n', 'a negative exptime expires at once');
    assert.equal(await c.call('touch a x\r\n'), 'CLIENT_ERROR invalid exptime argument\r\n');
    assert.equal(await c.call('gat x a\r\n'), 'CLIENT_ERROR invalid exptime argument\r\n');
    assert.equal(await c.call('gat 10\r\n'), 'CLIENT_ERROR bad command line format\r\n');
    assert.equal(await c.call('touch a\r\n'), 'CLIENT_ERROR bad command line format\r\n');
  });
});

test('exptime: relative up to 30 days, a unix time beyond, negative or past means gone at once', async () => {
  await withServer(async (h) => {
    const c = await h.connect();
    const nowS = Math.floor(h.clock.now() / 1000);
    assert.equal(await c.call(`set rel 0 ${30 * DAY_S} 1\r\nx\r\n`), 'STORED\r\n');
    assert.equal(await c.call(`set abs 0 ${nowS + 60} 1\r\nx\r\n`), 'STORED\r\n');
    assert.equal(await c.call(`set past 0 ${nowS - 60} 1\r\nx\r\n`), 'STORED\r\n');
    assert.equal(await c.call(`set big 0 ${30 * DAY_S + 1} 1\r\nx\r\n`), 'STORED\r\n', '30 days + 1 s is a unix time in 1970');
    assert.equal(await c.call('set neg 0 0 1\r\nx\r\nset neg 0 -1 1\r\ny\r\n'), 'STORED\r\nSTORED\r\n');
    assert.equal(await c.call('add neg2 0 -1 1\r\ny\r\nadd rel 0 -1 1\r\ny\r\n'), 'STORED\r\nNOT_STORED\r\n');
    assert.equal(await c.call('get rel abs past big neg neg2\r\n'), 'VALUE rel 0 1\r\nx\r\nVALUE abs 0 1\r\nx\r\nEND\r\n');
    h.clock.advance(60_000);
    assert.equal(await c.call('get rel abs\r\n'), 'VALUE rel 0 1\r\nx\r\nEND\r\n', 'the unix time passed');
    h.clock.advance(30 * DAY_S * 1000);
    assert.equal(await c.call('get rel\r\n'), 'END\r\n');
    assert.equal(await c.call('set x 0 2147483648 1\r\ny\r\n'), 'CLIENT_ERROR bad command line format\r\n', 'exptime past 32 bits');
  });
});

test('flush_all: at once, and with a delay that passes', async () => {
  await withServer(async (h) => {
    const c = await h.connect();
    await c.call('set a 0 0 1\r\nx\r\nset b 0 0 1\r\ny\r\n');
    assert.equal(await c.call('flush_all\r\n'), 'OK\r\n');
    assert.equal(await c.call('get a b\r\n'), 'END\r\n');
    assert.equal(await c.call('set a 0 0 1\r\nx\r\nget a\r\n'), 'STORED\r\nVALUE a 0 1\r\nx\r\nEND\r\n', 'writes after a flush stay');
    assert.equal(await c.call('flush_all 1\r\n'), 'OK\r\n');
    assert.equal(await c.call('get a\r\n'), 'VALUE a 0 1\r\nx\r\nEND\r\n', 'not yet');
    h.clock.advance(1000);
    const deadline = Date.now() + 5000;
    while ((await c.call('get a\r\n')) !== 'END\r\n') {
      assert.ok(Date.now() < deadline, 'the delayed flush happened');
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.equal(await c.call('flush_all x\r\n'), 'CLIENT_ERROR invalid exptime argument\r\n');
    assert.equal(await c.call('flush_all noreply\r\nflush_all 0 noreply\r\n'), '');
  });
});

test('noreply: storage, delete, incr/decr, touch and verbosity send nothing, errors included', async () => {
  await withServer(async (h) => {
    const c = await h.connect();
    const quiet = [
      'set a 0 0 1 noreply\r\nx\r\n',
      'add a 0 0 1 noreply\r\nx\r\n',
      'replace a 5 0 2 noreply\r\nyy\r\n',
      'append a 0 0 1 noreply\r\nz\r\n',
      'prepend a 0 0 1 noreply\r\nw\r\n',
      'cas a 0 0 1 1 noreply\r\nx\r\n',
      'set n 0 0 1 noreply\r\n5\r\n',
      'incr n 2 noreply\r\n',
      'decr n 1 noreply\r\n',
      'incr a 1 noreply\r\n',
      'touch a 100 noreply\r\n',
      'delete nope noreply\r\n',
      'verbosity 1 noreply\r\n',
      'set b abc 0 1 noreply\r\nx\r\n',
      'bogus noreply\r\n',
    ];
    assert.equal(await c.call(quiet.join('')), '');
    assert.equal(await c.call('get a n\r\n'), 'VALUE a 5 4\r\nwyyz\r\nVALUE n 0 1\r\n6\r\nEND\r\n');
  });
});

test('version, verbosity, stats, stats settings, stats reset; unknown commands get ERROR', async () => {
  await withServer(async (h) => {
    const c = await h.connect();
    assert.equal(await c.call('version\r\n'), 'VERSION 1.6.0\r\n', 'a bare number: clients parse it');
    assert.equal(await c.call('verbosity 1\r\n'), 'OK\r\n');
    assert.equal(await c.call('verbosity\r\n'), 'CLIENT_ERROR bad command line format\r\n');
    await c.call('set a 0 0 3\r\nabc\r\nget a\r\nget b\r\n');
    const stats = await c.call('stats\r\n');
    assert.match(stats, /\r\nEND\r\n$/);
    const value = (name: string, text = stats): string => new RegExp(`STAT ${name} (\\S+)\\r\\n`).exec(text)?.[1] ?? 'missing';
    assert.equal(value('pid'), String(process.pid));
    assert.equal(value('version'), '1.6.0');
    assert.match(value('atomio_version'), /^\d+\.\d+\.\d+$/);
    assert.equal(value('curr_items'), '1');
    assert.equal(value('cmd_get'), '2');
    assert.equal(value('get_hits'), '1');
    assert.equal(value('get_misses'), '1');
    assert.equal(value('cmd_set'), '1');
    assert.equal(value('curr_connections'), '1');
    assert.match(value('rusage_user'), /^\d+\.\d{6}$/);
    const settings = await c.call('stats settings\r\n');
    assert.equal(value('item_size_max', settings), String(1024 * 1024));
    assert.equal(value('maxconns', settings), '1024');
    assert.equal(value('tcpport', settings), String(h.port));
    assert.equal(value('verbosity', settings), '1');
    assert.equal(await c.call('stats reset\r\n'), 'RESET\r\n');
    assert.equal(value('cmd_get', await c.call('stats\r\n')), '0');
    assert.equal(await c.call('stats sizes\r\n'), 'STAT sizes_status disabled\r\nEND\r\n');
    assert.equal(await c.call('stats bogus\r\n'), 'ERROR\r\n');
    assert.equal(await c.call('bogus\r\n'), 'ERROR\r\n');
    assert.equal(await c.call('GET a\r\n'), 'ERROR\r\n', 'command names are case-sensitive');
    assert.equal(await c.call('\r\n'), 'ERROR\r\n');
  });
});

test('malformed storage lines: CLIENT_ERROR; the data block is skipped whenever its length is known', async () => {
  await withServer(async (h) => {
    const c = await h.connect();
    const cases: [string, string][] = [
      ['set a 0 0\r\n', 'CLIENT_ERROR bad command line format\r\n'],
      ['set a 0 0 -1\r\n', 'CLIENT_ERROR bad command line format\r\n'],
      ['set a 0 0 x\r\n', 'CLIENT_ERROR bad command line format\r\n'],
      ['set a 0 0 4294967296\r\n', 'CLIENT_ERROR bad command line format\r\n'],
      ['set a -1 0 1\r\nx\r\n', 'CLIENT_ERROR bad command line format\r\n'],
      ['set a 4294967296 0 1\r\nx\r\n', 'CLIENT_ERROR bad command line format\r\n'],
      ['set a 0 x 1\r\nx\r\n', 'CLIENT_ERROR bad command line format\r\n'],
      [`set ${'k'.repeat(251)} 0 0 1\r\nx\r\n`, 'CLIENT_ERROR bad command line format\r\n'],
      ['set a\x01b 0 0 1\r\nx\r\n', 'CLIENT_ERROR bad command line format\r\n'],
      ['set a 0 0 3\r\nabcd\r\n', 'CLIENT_ERROR bad data chunk\r\nERROR\r\n'],
      ['set a 0 0 3\r\nab\r\n\r\n', 'CLIENT_ERROR bad data chunk\r\nERROR\r\n'],
      [`get ${'k'.repeat(251)}\r\n`, 'CLIENT_ERROR bad command line format\r\n'],
      ['get a \x7fb\r\n', 'CLIENT_ERROR bad command line format\r\n'],
      ['get\r\n', 'CLIENT_ERROR bad command line format\r\n'],
    ];
    for (const [request, expected] of cases) {
      assert.equal(await c.call(request), expected, JSON.stringify(request));
    }
    assert.equal(await c.call('get a\r\n'), 'END\r\n', 'none of them stored anything');
  });
});

test('an item over the size limit: SERVER_ERROR, its data skipped, the old value gone for set', async () => {
  await withServer(
    async (h) => {
      const c = await h.connect();
      assert.equal(await c.call('set a 0 0 1\r\nx\r\nset b 0 0 1\r\ny\r\n'), 'STORED\r\nSTORED\r\n');
      const big = 'z'.repeat(1001);
      assert.equal(await c.call(`set a 0 0 1001\r\n${big}\r\n`), 'SERVER_ERROR object too large for cache\r\n');
      assert.equal(await c.call(`add b 0 0 1001\r\n${big}\r\n`), 'SERVER_ERROR object too large for cache\r\n');
      assert.equal(await c.call('get a b\r\n'), 'VALUE b 0 1\r\ny\r\nEND\r\n', 'set removed the old a; add left b');
      assert.equal(await c.call(`set c 0 0 1000\r\n${'q'.repeat(1000)}\r\n`), 'STORED\r\n', 'exactly the limit');
      assert.equal(await c.call(`append c 0 0 1\r\nq\r\n`), 'NOT_STORED\r\n', 'an append past the limit');
      assert.match(await c.call('stats\r\n'), /STAT store_too_large 2\r\n/);
    },
    { maxItemBytes: 1000 },
  );
});

test('quit closes the connection after the replies before it', async () => {
  await withServer(async (h) => {
    const c = await h.connect();
    c.write('set a 0 0 1\r\nx\r\nget a\r\nquit\r\nget a\r\n');
    assert.equal(await c.untilClosed(), 'STORED\r\nVALUE a 0 1\r\nx\r\nEND\r\n');
  });
});

/** Fills the server with 60 KB items until a set fails; returns how many were stored and the failing reply. */
async function fill(c: McClient, value: string): Promise<{ stored: number; reply: string }> {
  let stored = 0;
  let reply = '';
  for (; stored < 2000; stored++) {
    reply = await c.call(`set k${stored} 0 0 ${value.length}\r\n${value}\r\n`);
    if (reply !== 'STORED\r\n') break;
  }
  return { stored, reply };
}

test('a full store: SERVER_ERROR out of memory storing object (nothing is evicted); reads and deletes go on', async () => {
  await withServer(
    async (h) => {
      const c = await h.connect();
      const value = 'f'.repeat(60_000);
      const { stored, reply } = await fill(c, value);
      assert.equal(reply, 'SERVER_ERROR out of memory storing object\r\n', `after ${stored} items`);
      assert.ok(stored > 100, `the store took ${stored} items first`);
      assert.equal(await c.call('get k0\r\n'), `VALUE k0 0 ${value.length}\r\n${value}\r\nEND\r\n`, 'reads still work');
      assert.equal(await c.call('incr k0 1\r\n'), 'CLIENT_ERROR cannot increment or decrement non-numeric value\r\n');
      for (let i = 0; i < 10; i++) assert.equal(await c.call(`delete k${i}\r\n`), 'DELETED\r\n');
      assert.match(await c.call('stats\r\n'), /STAT curr_items \d+\r\n/);
    },
    { capacity: 40 * 1024 * 1024 },
  );
});

test('a full store: deletes always succeed, and deleting enough items makes room for new ones', async () => {
  await withServer(
    async (h) => {
      const c = await h.connect();
      const value = 'f'.repeat(60_000);
      const { stored } = await fill(c, value);
      // A store of a few segments fills them to the brim: room comes back once a whole
      // segment's worth of items is gone from some segment, so keep deleting until a set fits.
      let deleted = 0;
      let reply = '';
      for (; deleted < stored; deleted++) {
        assert.equal(await c.call(`delete k${deleted}\r\n`), 'DELETED\r\n', `delete ${deleted} of a full store`);
        if (deleted < 30) continue;
        reply = await c.call(`set again 0 0 ${value.length}\r\n${value}\r\n`);
        if (reply === 'STORED\r\n') break;
      }
      assert.equal(reply, 'STORED\r\n', `a set fits after ${deleted} of ${stored} items were deleted`);
      assert.ok(deleted < stored / 2, `room came back after deleting ${deleted} of ${stored} items`);
    },
    { capacity: 40 * 1024 * 1024 },
  );
});

test('flush_all pipelined behind a write that creates the pool still drops that write', async () => {
  await withServer(async (h) => {
    const c = await h.connect();
    // A fresh store has no items pool yet: the set creates it, and the flush queued behind it must see it.
    assert.equal(await c.call('set a 0 0 1 noreply\r\nx\r\nflush_all\r\nget a\r\n'), 'OK\r\nEND\r\n');
    assert.equal(await c.call('flush_all\r\nset b 0 0 1 noreply\r\ny\r\nflush_all\r\nget b\r\n'), 'OK\r\nOK\r\nEND\r\n', 'again after a flush dropped the pool');
  });
});

test('an absolute exptime is a moment: a value whose data arrives late still expires at it', async () => {
  await withServer(async (h) => {
    const c = await h.connect();
    const at = Math.floor(h.clock.now() / 1000) + 100;
    /** Sends a storage line and the first byte of its data; resolves once the server holds that byte. */
    const started = async (text: string): Promise<void> => {
      c.write(text);
      while (h.server.stats().inputBytes !== 1) await new Promise((r) => setTimeout(r, 5));
    };
    await started(`set a 0 ${at} 1\r\nx`);
    h.clock.advance(50_000);
    assert.equal(await c.call('\r\n'), 'STORED\r\n');
    await started(`ms b 1 T${at}\r\ny`);
    h.clock.advance(40_000);
    assert.equal(await c.call('\r\n'), 'HD\r\n');
    assert.equal(await c.call('mg a t\r\nmg b t\r\n'), 'HD t10\r\nHD t10\r\n', 'the TTL left counts to the exptime');
    h.clock.advance(10_000);
    assert.equal(await c.call('get a b\r\n'), 'END\r\n', 'both gone at the exptime');
  });
});

test('two clients cas one item with the same unique: one STORED, the other EXISTS, never an error', async () => {
  await withServer(
    async (h) => {
      const a = await h.connect();
      const b = await h.connect();
      const keys = Array.from({ length: 100 }, (_, i) => `c${i}`);
      await a.call(keys.map((k) => `set ${k} 0 0 1\r\nx\r\n`).join(''));
      const uniques = [...(await a.call(`gets ${keys.join(' ')}\r\n`)).matchAll(/VALUE \S+ 0 1 (\d+)/g)].map((m) => m[1]!);
      assert.equal(uniques.length, keys.length);
      // Both batches in flight together: each loser's write fails on the winner's, not yet landed.
      const batch = keys.map((k, i) => `cas ${k} 0 0 1 ${uniques[i]!}\r\ny\r\n`).join('');
      const [ra, rb] = await Promise.all([a.call(batch), b.call(batch)]);
      const la = ra.split('\r\n').slice(0, -1);
      const lb = rb.split('\r\n').slice(0, -1);
      for (let i = 0; i < keys.length; i++) {
        assert.deepEqual([la[i], lb[i]].sort(), ['EXISTS', 'STORED'], `${keys[i]!}: ${la[i]!} / ${lb[i]!}`);
      }
    },
    { media: 'file' },
  );
});

test('numbers are read as memcached reads them: a + sign and any number of leading zeros', async () => {
  await withServer(async (h) => {
    const c = await h.connect();
    const zeros = '0'.repeat(30);
    assert.equal(await c.call(`set a +7 +0 ${zeros}1\r\n5\r\nget a\r\n`), 'STORED\r\nVALUE a 7 1\r\n5\r\nEND\r\n', 'flags, exptime and bytes');
    assert.equal(await c.call(`incr a +1\r\nincr a ${zeros}2\r\ndecr a ${zeros}\r\n`), '6\r\n8\r\n8\r\n', 'deltas');
    assert.equal(await c.call(`touch a +100\r\ngat ${zeros}100 a\r\nmg a t\r\n`), 'TOUCHED\r\nVALUE a 7 1\r\n8\r\nEND\r\nHD t100\r\n', 'exptimes');
    const cas = String(h.server.cache.pool.versionOf('a'));
    assert.equal(await c.call(`cas a 0 0 1 ${zeros}${cas}\r\n9\r\n`), 'STORED\r\n', 'a CAS unique');
    assert.equal(await c.call(`ms b 1 F+3 T${zeros}50\r\n5\r\nmg b f t\r\nma b D+2 v\r\nma n N+0 J${zeros}4 v\r\n`), 'HD\r\nHD f3 t50\r\nVA 1\r\n7\r\nVA 1\r\n4\r\n', 'meta tokens');
    assert.equal(await c.call('verbosity +1\r\nflush_all +0\r\n'), 'OK\r\nOK\r\n');
    for (const value of [' 12', '12 ', '+12', '\t12\t', '\n12\r', `${zeros}12`, '12 34', '12\x0034']) {
      assert.equal(await c.call(`set v 0 0 ${value.length}\r\n${value}\r\nincr v 1\r\n`), 'STORED\r\n13\r\n', `the counter ${JSON.stringify(value)}`);
    }
    for (const value of ['12x', '-12', '+', ' ', '++1', '18446744073709551616']) {
      assert.equal(await c.call(`set v 0 0 ${value.length}\r\n${value}\r\nincr v 1\r\n`), 'STORED\r\nCLIENT_ERROR cannot increment or decrement non-numeric value\r\n', `not a counter: ${JSON.stringify(value)}`);
    }
    for (const bad of ['set x ++1 0 1\r\nx', 'set x 0 -+1 1\r\nx', 'set x -1 0 1\r\nx', 'set x 4294967296 0 1\r\nx', 'set x 0 0 +-1', `set x 0 0 ${zeros}2147483648`]) {
      assert.equal(await c.call(`${bad}\r\n`), 'CLIENT_ERROR bad command line format\r\n', bad);
    }
    assert.equal(await c.call('set x -0 0 1\r\nx\r\nincr x -0\r\nget x\r\n'), 'STORED\r\nCLIENT_ERROR cannot increment or decrement non-numeric value\r\nVALUE x 0 1\r\nx\r\nEND\r\n', 'an unsigned -0 is 0');
  });
});
