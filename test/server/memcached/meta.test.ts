// The meta commands over a raw socket: mg, ms, md, ma, me, mn, with each flag the spec lists
// and the error lines for bad, duplicate and unsupported flags.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { withServer } from './harness.js';

test('mn answers MN; mg: HD, VA with value, EN on a miss, q hides EN only', async () => {
  await withServer(async (h) => {
    const c = await h.connect();
    assert.equal(await c.call('mn\r\n'), 'MN\r\n');
    await c.call('set a 9 0 5\r\nhello\r\n');
    const cas = h.server.cache.pool.versionOf('a')!;
    assert.equal(await c.call('mg a\r\n'), 'HD\r\n');
    assert.equal(await c.call('mg a v\r\n'), 'VA 5\r\nhello\r\n');
    assert.equal(await c.call('mg a s v f c t k O123\r\n'), `VA 5 s5 f9 c${cas} t-1 ka O123\r\nhello\r\n`, 'return flags in request order');
    assert.equal(await c.call('mg a k v q\r\n'), 'VA 5 ka\r\nhello\r\n', 'q does not hide a hit');
    assert.equal(await c.call('mg nope v\r\n'), 'EN\r\n');
    assert.equal(await c.call('mg nope v Oxyz k\r\n'), 'EN Oxyz knope\r\n', 'a miss still echoes O and k');
    assert.equal(await c.call('mg nope v q\r\nmg nope2 q O1\r\n'), '', 'q hides EN');
    assert.equal(await c.call(`mg a v C${cas}\r\n`), 'HD\r\n', 'C equal to the CAS: no value');
    assert.equal(await c.call(`mg a v C${cas + 1}\r\n`), 'VA 5\r\nhello\r\n');
    assert.equal(await c.call('mg a v Pproxy Lroute u\r\n'), 'VA 5\r\nhello\r\n', 'P, L and u are accepted and change nothing');
  });
});

test('mg: t shows the TTL left, T sets it (also "touch"), h and l report hits and last access', async () => {
  await withServer(async (h) => {
    const c = await h.connect();
    await c.call('set a 0 100 1\r\nx\r\n');
    assert.equal(await c.call('mg a t\r\n'), 'HD t100\r\n');
    h.clock.advance(40_000);
    assert.equal(await c.call('mg a t h l\r\n'), 'HD t60 h1 l40\r\n', 'fetched before (by mg a t), last access 40 s ago');
    assert.equal(await c.call('mg a t T500\r\n'), 'HD t60\r\n', 't before T shows the TTL before the change');
    assert.equal(await c.call('mg a T30 t\r\n'), 'HD t30\r\n');
    h.clock.advance(30_000);
    assert.equal(await c.call('mg a v\r\n'), 'EN\r\n', 'T30 held');
    await c.call('set b 0 0 1\r\ny\r\n');
    assert.equal(await c.call('mg b h u\r\nmg b h\r\nmg b h\r\n'), 'HD h0\r\nHD h0\r\nHD h1\r\n', 'u fetches without marking a hit');
  });
});

test('mg: N vivifies on a miss (W to the first, Z to the others), R wins a recache near expiry', async () => {
  await withServer(async (h) => {
    const c = await h.connect();
    assert.equal(await c.call('mg a N30 v c t\r\n'), `VA 0 c${h.server.cache.pool.versionOf('a')} t30 W\r\n\r\n`);
    assert.equal(await c.call('mg a N30 v\r\n'), 'VA 0 Z\r\n\r\n', 'another client sees Z');
    assert.equal(await c.call('ms a 3 T100\r\nnew\r\nmg a v\r\n'), 'HD\r\nVA 3\r\nnew\r\n', 'a new value clears the win');
    assert.equal(await c.call('mg a R30 v\r\n'), 'VA 3\r\nnew\r\n', '100 s left is not under 30');
    h.clock.advance(80_000);
    assert.equal(await c.call('mg a R30 v t\r\n'), 'VA 3 t20 W\r\nnew\r\n', '20 s left: this client wins');
    assert.equal(await c.call('mg a R30 v\r\n'), 'VA 3 Z\r\nnew\r\n');
    h.clock.advance(20_000);
    assert.equal(await c.call('mg a N0 v q k\r\n'), 'VA 0 ka W\r\n\r\n', 'expired: vivified again');
  });
});

test('ms: modes E/A/P/R/S, F flags, T ttl, C compare, c/s/k/O return flags, q hides HD only', async () => {
  await withServer(async (h) => {
    const c = await h.connect();
    assert.equal(await c.call('ms a 2 F5 T100 c s k O9\r\nhi\r\n'), `HD c${h.server.cache.pool.versionOf('a')} s2 ka O9\r\n`);
    assert.equal(await c.call('mg a f t v\r\n'), 'VA 2 f5 t100\r\nhi\r\n');
    assert.equal(await c.call('ms a 1 ME\r\nx\r\n'), 'NS\r\n', 'add mode on a present key');
    assert.equal(await c.call('ms b 1 ME\r\nx\r\n'), 'HD\r\n');
    assert.equal(await c.call('ms a 2 MA s\r\n!!\r\n'), 'HD s4\r\n', 'append: s is the new size');
    assert.equal(await c.call('ms a 2 MP\r\n<<\r\nmg a v f t\r\n'), 'HD\r\nVA 6 f5 t100\r\n<<hi!!\r\n', 'prepend keeps flags and TTL');
    assert.equal(await c.call('ms nope 1 MA\r\nx\r\nms nope 1 MR\r\nx\r\n'), 'NS\r\nNS\r\n');
    assert.equal(await c.call('ms v 1 MA N50 F3\r\nx\r\nmg v v t f\r\n'), 'HD\r\nVA 1 t50 f3\r\nx\r\n', 'append with N vivifies on a miss');
    assert.equal(await c.call('ms a 1 MS\r\ny\r\nmg a v f t\r\n'), 'HD\r\nVA 1 f0 t-1\r\ny\r\n', 'set: no F means flags 0, no T never expires');
    const cas = h.server.cache.pool.versionOf('a')!;
    assert.equal(await c.call(`ms a 1 C${cas + 1}\r\nz\r\n`), 'EX\r\n');
    assert.equal(await c.call(`ms nope 1 C${cas}\r\nz\r\n`), 'NF\r\n');
    assert.equal(await c.call(`ms a 1 C${cas} c\r\nz\r\n`), `HD c${h.server.cache.pool.versionOf('a')}\r\n`);
    assert.equal(await c.call(`ms a 1 MA C${cas}\r\nz\r\n`), 'EX\r\n', 'append respects C');
    assert.equal(await c.call('ms a 1 q\r\nq\r\nms a 1 q ME\r\nq\r\n'), 'NS\r\n', 'q hides HD, not NS');
    assert.equal(await c.call('ms a 3 MX\r\nabc\r\nmg a v\r\n'), 'CLIENT_ERROR invalid mode for ms M token\r\nVA 1\r\nq\r\n', 'the data is swallowed');
    assert.equal(await c.call('ms a 1 T-1\r\nz\r\nmg a\r\n'), 'HD\r\nEN\r\n', 'a negative T: gone at once');
    assert.equal(await c.call('ms a 2 q\r\nabc\r\n'), 'CLIENT_ERROR bad data chunk\r\nERROR\r\n', 'errors ignore q');
    assert.equal(await c.call('ms a\r\n'), 'CLIENT_ERROR bad command line format\r\n');
    assert.equal(await c.call('ms a x\r\n'), 'CLIENT_ERROR bad command line format\r\n');
  });
});

test('ms I and md I: invalidation marks an item stale (X), the first fetch wins (W), later ones see Z', async () => {
  await withServer(async (h) => {
    const c = await h.connect();
    await c.call('ms a 3 T100\r\nold\r\n');
    const first = h.server.cache.pool.versionOf('a')!;
    assert.equal(await c.call('md a I T30\r\n'), 'HD\r\n');
    const stale = h.server.cache.pool.versionOf('a')!;
    assert.ok(stale > first, 'invalidation bumps the CAS');
    assert.equal(await c.call('mg a v t c\r\n'), `VA 3 t30 c${stale} X W\r\nold\r\n`);
    assert.equal(await c.call('mg a v\r\n'), 'VA 3 Z X\r\nold\r\n');
    assert.equal(await c.call(`ms a 3 I C${first}\r\nnew\r\n`), 'HD\r\n', 'a lower CAS with I stores, stale');
    assert.equal(await c.call('mg a v t\r\n'), 'VA 3 t30 X W\r\nnew\r\n', 'still stale, TTL kept');
    const now = h.server.cache.pool.versionOf('a')!;
    assert.equal(await c.call(`ms a 3 I C${now + 5}\r\nbad\r\n`), 'EX\r\n', 'a higher CAS does not');
    assert.equal(await c.call(`ms a 5 C${now}\r\nfresh\r\nmg a v\r\n`), 'HD\r\nVA 5\r\nfresh\r\n', 'a plain set clears stale');
  });
});

test('md: HD, NF, EX with C, q hides HD, x empties the value, O and k echo', async () => {
  await withServer(async (h) => {
    const c = await h.connect();
    await c.call('ms a 1 F4 T100\r\nx\r\nms b 1\r\ny\r\n');
    const cas = h.server.cache.pool.versionOf('a')!;
    assert.equal(await c.call(`md a C${cas + 1} O7 k\r\n`), 'EX O7 ka\r\n');
    assert.equal(await c.call('md a x F2\r\nmg a v f t\r\n'), 'HD\r\nVA 0 f2 t-1\r\n\r\n', 'x keeps the item with no data');
    assert.equal(await c.call(`md a C${h.server.cache.pool.versionOf('a')!}\r\n`), 'HD\r\n');
    assert.equal(await c.call('md a\r\nmd a q\r\n'), 'NF\r\nNF\r\n', 'q does not hide NF');
    assert.equal(await c.call('md b q\r\nmg b\r\n'), 'EN\r\n');
  });
});

test('ma: incr/decr modes, D delta, N/J vivify, C compare, T ttl, v/t/c/k/O return flags, q', async () => {
  await withServer(async (h) => {
    const c = await h.connect();
    assert.equal(await c.call('ma n\r\n'), 'NF\r\n');
    assert.equal(await c.call('ma n N0 J10 v\r\n'), 'VA 2\r\n10\r\n', 'created with J');
    assert.equal(await c.call('ma n v\r\n'), 'VA 2\r\n11\r\n', 'default delta 1');
    assert.equal(await c.call('ma n v D9 MI\r\n'), 'VA 2\r\n20\r\n');
    assert.equal(await c.call('ma n v D5 M-\r\n'), 'VA 2\r\n15\r\n');
    assert.equal(await c.call('ma n v D100 MD\r\n'), 'VA 1\r\n0\r\n', 'decr stops at 0');
    assert.equal(await c.call('ma n M+ D18446744073709551615 v\r\nma n v\r\n'), 'VA 20\r\n18446744073709551615\r\nVA 1\r\n0\r\n', 'incr wraps');
    const cas = h.server.cache.pool.versionOf('n')!;
    assert.equal(await c.call(`ma n C${cas + 1} O1 k\r\n`), 'EX O1 kn\r\n');
    assert.equal(await c.call(`ma n C${cas} c t T60\r\n`), `HD c${cas + 1} t60\r\n`.replace(`c${cas + 1}`, `c${h.server.cache.pool.versionOf('n')! }`));
    assert.equal(await c.call('ma n q\r\nma nope q\r\n'), 'NF\r\n', 'q hides success only');
    // As memcached 1.6: C0 compares nothing in ma (it does in ms and md), and N with a
    // negative TTL answers as if it made the item, which is expired at once.
    assert.equal(await c.call('ma n C0 D0 v\r\n'), 'VA 1\r\n2\r\n', 'ma C0 is no compare');
    assert.equal(await c.call('ma m N-1 J7 v\r\nmg m v\r\n'), 'VA 1\r\n7\r\nEN\r\n', 'ma N-1 makes an expired item');
    await c.call('set s 0 0 1\r\nx\r\n');
    assert.equal(await c.call('ma s\r\n'), 'CLIENT_ERROR cannot increment or decrement non-numeric value\r\n');
    assert.equal(await c.call('ma n MX\r\n'), 'CLIENT_ERROR invalid mode for ma M token\r\n');
    assert.equal(await c.call('ma n Dx\r\n'), 'CLIENT_ERROR invalid or duplicate flag\r\n');
    assert.equal(await c.call('ma n v v\r\n'), 'CLIENT_ERROR invalid or duplicate flag\r\n');
  });
});

test('b: base64 keys for every meta command, returned base64 with a b flag', async () => {
  await withServer(async (h) => {
    const c = await h.connect();
    const key = Buffer.from([0, 1, 2, 0xff, 0x20, 0x0d, 0x0a]);
    const b64 = key.toString('base64');
    assert.equal(await c.call(`ms ${b64} 2 b k\r\nhi\r\n`), `HD k${b64} b\r\n`);
    assert.ok(h.server.cache.pool.has(key), 'stored under the binary key');
    assert.equal(await c.call(`mg ${b64} b v k\r\n`), `VA 2 k${b64} b\r\nhi\r\n`);
    assert.match(await c.call(`me ${b64} b\r\n`), new RegExp(`^ME ${b64.replace(/[+/]/g, '\\$&')} exp=-1 la=0 cas=\\d+ fetch=yes cls=1 size=${key.length + 2}\\r\\n$`));
    assert.equal(await c.call(`ma ${Buffer.from('cnt').toString('base64')} b N0 v\r\n`), 'VA 1\r\n0\r\n');
    assert.equal(await c.call(`md ${b64} b q\r\nmg ${b64} b\r\n`), 'EN\r\n');
    assert.equal(await c.call('mg !!!! b v\r\n'), 'CLIENT_ERROR error decoding key\r\n');
    assert.equal(await c.call('me !!!! b\r\n'), 'CLIENT_ERROR bad command line format\r\n');
  });
});

test('me: item metadata or EN', async () => {
  await withServer(async (h) => {
    const c = await h.connect();
    await c.call('set a 0 100 3\r\nabc\r\n');
    h.clock.advance(10_000);
    assert.equal(await c.call('me a\r\n'), `ME a exp=90 la=10 cas=${h.server.cache.pool.versionOf('a')} fetch=no cls=1 size=4\r\n`);
    assert.equal(await c.call('me nope\r\n'), 'EN\r\n');
    assert.equal(await c.call('me\r\n'), 'CLIENT_ERROR bad command line format\r\n');
  });
});

test('meta flag errors: invalid, duplicate, too many, opaque too long, bad tokens', async () => {
  await withServer(async (h) => {
    const c = await h.connect();
    const cases: [string, string][] = [
      ['mg a Z\r\n', 'CLIENT_ERROR invalid flag'],
      ['mg a v v\r\n', 'CLIENT_ERROR duplicate flag'],
      [`mg a ${'v k s t c f h l u q O1 P L T1 N1 R1 C1 x I'}\r\n`, 'CLIENT_ERROR options flags are too long'],
      [`mg a O${'x'.repeat(32)}\r\n`, 'CLIENT_ERROR opaque token too long'],
      ['mg a Tx\r\n', 'CLIENT_ERROR bad token in command line format'],
      ['mg a N\r\n', 'CLIENT_ERROR bad token in command line format'],
      ['md a C-1\r\n', 'CLIENT_ERROR bad token in command line format'],
      ['md a Ex\r\n', 'CLIENT_ERROR bad token in command line format'],
      ['mg a E\r\n', 'CLIENT_ERROR bad token in command line format'],
      ['ma a Ex\r\n', 'CLIENT_ERROR invalid or duplicate flag'],
      ['ma a J-1\r\n', 'CLIENT_ERROR invalid or duplicate flag'],
      ['mg\r\n', 'CLIENT_ERROR bad command line format'],
      [`mg ${'k'.repeat(251)} v\r\n`, 'CLIENT_ERROR bad command line format'],
      ['ms a 1 Fx\r\nz\r\n', 'CLIENT_ERROR bad command line format'],
      ['ms a 1 E18446744073709551616\r\nz\r\n', 'CLIENT_ERROR bad token in command line format'],
      ['ms a 1 E1 E2\r\nz\r\n', 'CLIENT_ERROR duplicate flag'],
      ['mz a\r\n', 'ERROR'],
    ];
    for (const [request, expected] of cases) assert.equal(await c.call(request), `${expected}\r\n`, JSON.stringify(request));
    assert.equal(await c.call(`mg a O${'x'.repeat(31)} v\r\n`), `EN O${'x'.repeat(31)}\r\n`, 'a 32-byte opaque token is fine');
  });
});

test('ms over the size limit: SERVER_ERROR, its data skipped, and the old value gone as with set', async () => {
  await withServer(
    async (h) => {
      const c = await h.connect();
      const big = 'z'.repeat(1001);
      assert.equal(await c.call('ms a 1\r\nx\r\nms b 1\r\ny\r\nms Zm9v 1 b\r\nf\r\n'), 'HD\r\nHD\r\nHD\r\n');
      assert.equal(await c.call(`ms a 1001\r\n${big}\r\n`), 'SERVER_ERROR object too large for cache\r\n');
      assert.equal(await c.call(`ms b 1001 MA q\r\n${big}\r\n`), 'SERVER_ERROR object too large for cache\r\n', 'in every mode, as memcached');
      assert.equal(await c.call(`ms Zm9v 1001 b\r\n${big}\r\n`), 'SERVER_ERROR object too large for cache\r\n');
      assert.equal(await c.call('mg a v\r\nmg b v\r\nmg Zm9v b v\r\nget foo\r\n'), 'EN\r\nEN\r\nEN\r\nEND\r\n', 'no stale value is left to read');
      assert.equal(await c.call(`ms c 1001 Mx\r\n${big}\r\nms c 1\r\nx\r\n`), 'CLIENT_ERROR invalid mode for ms M token\r\nHD\r\n', 'a bad line is answered before the size');
    },
    { maxItemBytes: 1000 },
  );
});

test('two clients vivify one missing key at once: one wins, the other sees the item (Z), never EN or an error', async () => {
  await withServer(
    async (h) => {
      const a = await h.connect();
      const b = await h.connect();
      const n = 60;
      const both = async (each: (i: number) => string): Promise<[string[], string[]]> => {
        const batch = Array.from({ length: n }, (_, i) => each(i)).join('');
        const [ra, rb] = await Promise.all([a.call(batch), b.call(batch)]);
        return [ra.split('\r\n').slice(0, -1), rb.split('\r\n').slice(0, -1)];
      };
      const [ga, gb] = await both((i) => `mg g${i} N30\r\n`);
      for (let i = 0; i < n; i++) assert.deepEqual([ga[i], gb[i]].sort(), ['HD W', 'HD Z'], `mg g${i}: ${ga[i]!} / ${gb[i]!}`);
      const [ma, mb] = await both((i) => `ma m${i} N0 J5 D1\r\n`);
      for (let i = 0; i < n; i++) assert.deepEqual([ma[i], mb[i]], ['HD', 'HD'], `ma m${i}`);
      const [sa, sb] = await both((i) => `ms s${i} 1 MA N30\r\nx\r\n`);
      for (let i = 0; i < n; i++) assert.deepEqual([sa[i], sb[i]], ['HD', 'HD'], `ms s${i}`);
      const values = await a.call(Array.from({ length: n }, (_, i) => `mg m${i} v\r\nmg s${i} v\r\n`).join(''));
      assert.equal(values, Array.from({ length: n }, () => 'VA 1\r\n6\r\nVA 2\r\nxx\r\n').join(''), 'each write applied once, on top of the other');
    },
    { media: 'file' },
  );
});

test('touch counts as an access, as in memcached: mg h and l, and me fetch, see it', async () => {
  await withServer(async (h) => {
    const c = await h.connect();
    await c.call('set a 0 0 1\r\nx\r\n');
    h.clock.advance(20_000);
    assert.equal(await c.call('mg a h l u\r\n'), 'HD h0 l20\r\n');
    assert.equal(await c.call('touch a 100\r\nmg a h l u\r\nme a\r\n'), `TOUCHED\r\nHD h1 l0\r\nME a exp=100 la=0 cas=${h.server.cache.pool.versionOf('a')!} fetch=yes cls=1 size=2\r\n`);
    assert.equal(await c.call('touch nope 100\r\n'), 'NOT_FOUND\r\n');
  });
});

// The E flag. Every expected reply below is what memcached 1.6.45 answers to the same bytes.

test('E: mg N E creates the item with that CAS; gets, mg c and me show it; mg E on a hit changes nothing', async () => {
  await withServer(async (h) => {
    const c = await h.connect();
    assert.equal(await c.call('mg k1 N30 E777 c v t\r\n'), 'VA 0 c777 t30 W\r\n\r\n');
    assert.equal(await c.call('mg k1 N30 E778 c v\r\n'), 'VA 0 c777 Z\r\n\r\n', 'present: not created again');
    assert.equal(await c.call('gets k1\r\n'), 'VALUE k1 0 0 777\r\n\r\nEND\r\n');
    assert.equal(await c.call('mg k1 c E5 T100\r\n'), 'HD c777 Z\r\n', 'a touch is no change of the CAS');
    assert.equal(await c.call('mg k1 v C777\r\n'), 'HD Z\r\n', 'C compares with the explicit CAS');
    assert.match(await c.call('me k1\r\n'), /^ME k1 exp=100 la=0 cas=777 /);
    assert.equal(await c.call('mg k2 N0 E0 c\r\nmg k2 C0 v\r\n'), 'HD c0 W\r\nHD Z\r\n', 'mg E0 gives CAS 0');
  });
});

test('E: ms stores the token as the CAS, C and E together, cas and gets with it; a change without E gives a fresh version', async () => {
  await withServer(async (h) => {
    const c = await h.connect();
    assert.equal(await c.call('ms k2 2 E12345 c\r\nhi\r\n'), 'HD c12345\r\n');
    assert.equal(await c.call('mg k2 c v\r\ngets k2\r\n'), 'VA 2 c12345\r\nhi\r\nVALUE k2 0 2 12345\r\nhi\r\nEND\r\n');
    assert.equal(await c.call('get k2\r\n'), 'VALUE k2 0 2\r\nhi\r\nEND\r\n', 'a short reply line: the header and CAS are not data');
    assert.equal(await c.call('ms k2 2 C12345 E999 c\r\nho\r\n'), 'HD c999\r\n');
    assert.equal(await c.call('ms k2 2 C12345 E1000 c\r\nhx\r\n'), 'EX c0\r\n', 'the old token no longer matches');
    const version = h.server.cache.pool.versionOf('k2')!;
    assert.equal(await c.call(`cas k2 0 0 1 ${version}\r\nz\r\n`), 'EXISTS\r\n', 'the version is not the CAS of an item with an explicit one');
    assert.equal(await c.call('cas k2 0 0 1 999\r\nz\r\n'), 'STORED\r\n');
    assert.equal(await c.call('cas k2 0 0 1 999\r\nz\r\n'), 'EXISTS\r\n', 'cas without E gave the item a fresh CAS');
    assert.equal(await c.call('gets k2\r\n'), `VALUE k2 0 1 ${h.server.cache.pool.versionOf('k2')!}\r\nz\r\nEND\r\n`);
    const max = '18446744073709551615';
    assert.equal(await c.call(`ms k3 1 E${max} c\r\nx\r\ngets k3\r\nmg k3 c C${max} v\r\n`), `HD c${max}\r\nVALUE k3 0 1 ${max}\r\nx\r\nEND\r\nHD c${max}\r\n`, 'all 64 bits');
    assert.equal(await c.call('ms k4 1 E0 c\r\nx\r\n'), `HD c${h.server.cache.pool.versionOf('k4')!}\r\n`, 'ms E0: a fresh CAS, as memcached');
    assert.equal(await c.call('ms k5 1 E50\r\nq\r\nms k5 1 ME E60 c\r\nr\r\nmg k5 c v\r\n'), 'HD\r\nNS c0\r\nVA 1 c50\r\nq\r\n', 'nothing stored: the CAS stays');
    assert.equal(await c.call('ms k5 1 MR E61 c\r\ns\r\nset k5 0 0 1\r\nt\r\ngets k5\r\n'), `HD c61\r\nSTORED\r\nVALUE k5 0 1 ${h.server.cache.pool.versionOf('k5')!}\r\nt\r\nEND\r\n`);
  });
});

test('E: append/prepend, ms I with a lower CAS, vivifying append, touch keeps an explicit CAS', async () => {
  await withServer(async (h) => {
    const c = await h.connect();
    assert.equal(
      await c.call('ms y9 1 E7\r\na\r\nms y9 1 MA E8 c\r\nb\r\nms y9 1 MP C8 E9 c\r\nc\r\nmg y9 v c\r\nms y9 1 MA C8\r\nz\r\n'),
      'HD\r\nHD c8\r\nHD c9\r\nVA 3 c9\r\ncab\r\nEX\r\n',
    );
    assert.equal(await c.call('ms y10 1 MA N0 E44 c\r\nq\r\nmg y10 v c\r\n'), 'HD c44\r\nVA 1 c44\r\nq\r\n');
    assert.equal(await c.call('ms y11 1 E50\r\nq\r\nms y11 1 C40 I E45 c\r\nr\r\nmg y11 c v\r\n'), 'HD\r\nHD c45\r\nVA 1 c45 X W\r\nr\r\n');
    assert.equal(await c.call('touch y10 100\r\ngets y10\r\n'), 'TOUCHED\r\nVALUE y10 0 1 44\r\nq\r\nEND\r\n');
    assert.equal(await c.call('append y10 0 0 1\r\n!\r\ngets y10\r\n'), `STORED\r\nVALUE y10 0 2 ${h.server.cache.pool.versionOf('y10')!}\r\nq!\r\nEND\r\n`);
  });
});

test('E: md with I or x sets the CAS, compared by a later C; md E0 gives CAS 0', async () => {
  await withServer(async (h) => {
    const c = await h.connect();
    assert.equal(await c.call('ms k5 1 E50\r\n5\r\nmd k5 E60 I c\r\nmg k5 c v\r\n'), 'HD\r\nHD\r\nVA 1 c60 X W\r\n5\r\n');
    assert.equal(await c.call('md k5 C60 E70 x\r\nmg k5 c v f\r\n'), 'HD\r\nVA 0 c70 f0\r\n\r\n');
    assert.equal(await c.call('md k5 C70 E80 x I F3\r\nmg k5 c v f\r\n'), 'HD\r\nVA 0 c80 f3 X W\r\n\r\n');
    assert.equal(await c.call('md k5 C79\r\n'), 'EX\r\n');
    assert.equal(await c.call('md k5 C80 E90 q\r\nmg k5 c\r\n'), 'EN\r\n', 'a real delete: E has nothing to set');
    assert.equal(await c.call('ms y5 1 E7\r\nx\r\nmd y5 E0 I\r\nmg y5 c\r\nmd y5 C0 q\r\nmg y5\r\n'), 'HD\r\nHD\r\nHD c0 X W\r\nEN\r\n');
  });
});

test('E: ma sets the CAS on a change and on a vivify, C compares with it', async () => {
  await withServer(async (h) => {
    const c = await h.connect();
    assert.equal(
      await c.call('ms k6 1 E10\r\n5\r\nma k6 E20 c v\r\nmg k6 c v\r\nma k6 C20 E30 v c\r\nma k6 C20 E40\r\n'),
      'HD\r\nVA 1 c20\r\n6\r\nVA 1 c20\r\n6\r\nVA 1 c30\r\n7\r\nEX\r\n',
    );
    assert.equal(await c.call('ma k7 N0 J9 E33 c v\r\ngets k7\r\n'), 'VA 1 c33\r\n9\r\nVALUE k7 0 1 33\r\n9\r\nEND\r\n');
    assert.equal(await c.call('incr k7 1\r\nmg k7 c\r\n'), `10\r\nHD c${h.server.cache.pool.versionOf('k7')!}\r\n`, 'incr gives a fresh CAS');
    assert.equal(await c.call('ms y6 1 E7\r\n1\r\nma y6 E0 c\r\ngets y6\r\ncas y6 0 0 1 0\r\n1\r\n'), 'HD\r\nHD c0\r\nVALUE y6 0 1 0\r\n2\r\nEND\r\nEXISTS\r\n', 'cas 0 matches nothing, even CAS 0');
  });
});
