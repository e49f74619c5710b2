// The kv conformance suite: one set of kv semantics (put/get/overwrite, add-if-absent,
// replace-if-present, compare-and-set, delete, memcached counters, TTL expiry at exact times,
// touch, append/prepend, flags, values at the size limit, missing keys) written once against
// the small KvAdapter interface below, and run by conformance.test.ts twice: against the kv
// face in-process and through the memcached server over a real socket. Both runs must pass
// the same assertions.
//
// The adapter speaks memcached's vocabulary (STORED, NOT_STORED, EXISTS, NOT_FOUND, client
// flags, exptimes in seconds) because that is the richer of the two; the kv adapter maps it
// onto the kv face (conditions, versions, TTLs in ms) and says how where the mapping is not
// one call. Every test uses a fresh, empty store and a clock that moves only when told to.

import { test } from 'node:test';
import assert from 'node:assert/strict';

export type StoreStatus = 'STORED' | 'NOT_STORED' | 'EXISTS' | 'NOT_FOUND' | 'TOO_LARGE';
export type CounterResult = bigint | 'NOT_FOUND' | 'NON_NUMERIC';

export interface Got {
  value: Buffer;
  /** memcached's 32-bit client flags. */
  flags: number;
  /** The CAS unique (on atomio: the kv version of the entry). */
  cas: bigint;
}

export interface WriteOptions {
  /** Client flags, 0 … 2^32 - 1; default 0. */
  flags?: number;
  /** Seconds until the item expires (at most 30 days); 0 or absent: never. */
  ttlS?: number;
}

export interface KvAdapter {
  /** The largest value this face stores. */
  readonly maxValueBytes: number;
  set(key: string, value: Buffer, o?: WriteOptions): Promise<StoreStatus>;
  /** Stores only if the key is absent (NOT_STORED otherwise). */
  add(key: string, value: Buffer, o?: WriteOptions): Promise<StoreStatus>;
  /** Stores only if the key is present (NOT_STORED otherwise). */
  replace(key: string, value: Buffer, o?: WriteOptions): Promise<StoreStatus>;
  /** Stores only if the key's CAS unique is `cas` (EXISTS: it changed; NOT_FOUND: no key). */
  cas(key: string, value: Buffer, cas: bigint, o?: WriteOptions): Promise<StoreStatus>;
  /** Adds bytes after (or before) the value; flags and expiry stay. NOT_STORED when absent or too large. */
  append(key: string, value: Buffer): Promise<StoreStatus>;
  prepend(key: string, value: Buffer): Promise<StoreStatus>;
  get(key: string): Promise<Got | undefined>;
  /** True when the key was there. */
  delete(key: string): Promise<boolean>;
  /** The counter's new value: unsigned 64 bits, incr wraps, decr stops at 0. */
  incr(key: string, delta: bigint): Promise<CounterResult>;
  decr(key: string, delta: bigint): Promise<CounterResult>;
  /** A new expiry for a present key (0: never); false when absent. */
  touch(key: string, ttlS: number): Promise<boolean>;
  /** Moves the clock that both the store and the server read. */
  advance(ms: number): void;
}

/** Runs `body` with an adapter over a fresh, empty store; cleans up after. */
export type WithAdapter = (body: (a: KvAdapter) => Promise<void>) => Promise<void>;

const b = (s: string): Buffer => Buffer.from(s, 'latin1');
const TWO_64 = 2n ** 64n;

async function value(a: KvAdapter, key: string): Promise<string | undefined> {
  return (await a.get(key))?.value.toString('latin1');
}

async function casOf(a: KvAdapter, key: string): Promise<bigint> {
  const got = await a.get(key);
  assert.ok(got !== undefined, `${key} is present`);
  return got.cas;
}

/** Registers the whole suite under `name` (e.g. 'kv face', 'memcached server'). */
export function conformanceSuite(name: string, withAdapter: WithAdapter): void {
  const t = (title: string, body: (a: KvAdapter) => Promise<void>): void => {
    test(`conformance (${name}): ${title}`, () => withAdapter(body));
  };

  t('put, get and overwrite: the last write wins, byte for byte, and each write gets a new, higher CAS', async (a) => {
    assert.equal(await a.set('k', b('one')), 'STORED');
    const first = await a.get('k');
    assert.ok(first !== undefined);
    assert.equal(first.value.toString('latin1'), 'one');
    assert.equal(await a.set('k', b('two, longer')), 'STORED');
    const second = await a.get('k');
    assert.equal(second?.value.toString('latin1'), 'two, longer', 'an overwrite replaces the value');
    assert.ok(second.cas > first.cas, `the CAS rose on overwrite (${first.cas} → ${second.cas})`);
    assert.equal(await a.set('k', b('')), 'STORED');
    assert.equal(await value(a, 'k'), '', 'an empty value is a present key, not a missing one');
    const binary = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
    assert.equal(await a.set('bin', binary), 'STORED');
    assert.deepEqual((await a.get('bin'))?.value, binary, 'every byte value, CR and LF included, round-trips');
    assert.equal(await a.set('other', b('x')), 'STORED');
    assert.notEqual(await casOf(a, 'other'), await casOf(a, 'bin'), 'two keys have different CAS uniques');
    const longKey = 'k'.repeat(250);
    assert.equal(await a.set(longKey, b('long')), 'STORED');
    assert.equal(await value(a, longKey), 'long', 'a 250-byte key');
    assert.equal(await value(a, 'k'.repeat(249)), undefined, 'a prefix of a key is another key');
  });

  t('missing keys: get, delete, replace, append, prepend, cas, incr, decr and touch all say so and create nothing', async (a) => {
    assert.equal(await a.get('nope'), undefined);
    assert.equal(await a.delete('nope'), false);
    assert.equal(await a.replace('nope', b('x')), 'NOT_STORED');
    assert.equal(await a.append('nope', b('x')), 'NOT_STORED');
    assert.equal(await a.prepend('nope', b('x')), 'NOT_STORED');
    assert.equal(await a.cas('nope', b('x'), 1n), 'NOT_FOUND');
    assert.equal(await a.incr('nope', 1n), 'NOT_FOUND');
    assert.equal(await a.decr('nope', 1n), 'NOT_FOUND');
    assert.equal(await a.touch('nope', 10), false);
    assert.equal(await a.get('nope'), undefined, 'none of them created the key');
  });

  t('add stores only when the key is absent, also when it expired; replace only when present', async (a) => {
    assert.equal(await a.add('k', b('first'), { flags: 3 }), 'STORED');
    assert.equal(await a.add('k', b('second'), { flags: 4 }), 'NOT_STORED');
    const got = await a.get('k');
    assert.equal(got?.value.toString('latin1'), 'first', 'a refused add changes nothing');
    assert.equal(got.flags, 3);
    assert.equal(await a.replace('k', b('third'), { flags: 5 }), 'STORED');
    assert.equal(await value(a, 'k'), 'third');
    assert.equal((await a.get('k'))?.flags, 5, 'replace stores its own flags');
    assert.equal(await a.delete('k'), true);
    assert.equal(await a.replace('k', b('fourth')), 'NOT_STORED', 'replace after a delete');
    assert.equal(await a.add('k', b('fifth')), 'STORED', 'add after a delete');
    assert.equal(await a.set('t', b('short-lived'), { ttlS: 2 }), 'STORED');
    a.advance(2_000);
    assert.equal(await a.replace('t', b('late')), 'NOT_STORED', 'an expired key is absent to replace');
    assert.equal(await a.add('t', b('again')), 'STORED', 'an expired key is absent to add');
    assert.equal(await value(a, 't'), 'again');
  });

  t('cas: stores with the current unique, EXISTS with a stale one, NOT_FOUND when absent', async (a) => {
    await a.set('k', b('v1'), { flags: 1 });
    const c1 = await casOf(a, 'k');
    assert.equal(await a.cas('k', b('v2'), c1, { flags: 2 }), 'STORED');
    const got = await a.get('k');
    assert.equal(got?.value.toString('latin1'), 'v2');
    assert.equal(got.flags, 2, 'cas stores its flags');
    assert.ok(got.cas > c1, 'a successful cas gives a new CAS');
    assert.equal(await a.cas('k', b('v3'), c1), 'EXISTS', 'the unique read before the last write is stale');
    assert.equal(await value(a, 'k'), 'v2', 'a conflicting cas changes nothing');
    assert.equal(await a.cas('k', b('v3'), got.cas + 1000n), 'EXISTS', 'a unique from the future matches nothing');
    assert.equal(await a.cas('k', b('v3'), 0n), 'EXISTS', 'unique 0 matches nothing');
    await a.set('k', b('by another client'));
    assert.equal(await a.cas('k', b('v3'), got.cas), 'EXISTS', 'a set in between makes the unique stale');
    const c2 = await casOf(a, 'k');
    assert.equal(await a.delete('k'), true);
    assert.equal(await a.cas('k', b('v4'), c2), 'NOT_FOUND', 'after a delete the key is not found');
    assert.equal(await a.get('k'), undefined);
    await a.set('t', b('x'), { ttlS: 5 });
    const c3 = await casOf(a, 't');
    assert.equal(await a.touch('t', 100), true);
    assert.equal(await casOf(a, 't'), c3, 'touch keeps the CAS unique');
    assert.equal(await a.cas('t', b('y'), c3, { ttlS: 1 }), 'STORED', 'so a cas after a touch still matches');
    a.advance(999);
    assert.equal(await value(a, 't'), 'y', 'the cas set its own TTL');
    a.advance(1);
    assert.equal(await a.cas('t', b('z'), c3), 'NOT_FOUND', 'an expired key is not found');
  });

  t('delete: the key goes, its CAS is not reused, a second delete finds nothing', async (a) => {
    await a.set('k', b('x'), { flags: 9, ttlS: 100 });
    const before = await casOf(a, 'k');
    assert.equal(await a.delete('k'), true);
    assert.equal(await a.get('k'), undefined);
    assert.equal(await a.delete('k'), false);
    await a.set('k', b('y'));
    const after = await a.get('k');
    assert.equal(after?.flags, 0, 'a new item does not inherit the deleted one\'s flags');
    assert.ok(after.cas > before, 'the new item has a higher CAS than the deleted one');
    a.advance(100_000);
    assert.equal(await value(a, 'k'), 'y', 'nor its TTL');
  });

  t('incr and decr: decimal counters of 64 bits; incr wraps, decr stops at 0; flags, TTL kept, CAS moves', async (a) => {
    await a.set('n', b('10'), { flags: 7, ttlS: 50 });
    const c0 = await casOf(a, 'n');
    assert.equal(await a.incr('n', 5n), 15n);
    assert.equal(await value(a, 'n'), '15', 'the stored value is the decimal result');
    assert.ok((await casOf(a, 'n')) > c0, 'incr gives a new CAS');
    assert.equal(await a.decr('n', 6n), 9n);
    assert.equal(await value(a, 'n'), '9', 'a shorter result is stored without padding');
    assert.equal(await a.decr('n', 100n), 0n, 'decr floors at 0');
    assert.equal(await a.decr('n', 1n), 0n);
    assert.equal(await a.incr('n', 0n), 0n);
    assert.equal((await a.get('n'))?.flags, 7, 'counters keep their flags');
    a.advance(49_999);
    assert.equal(await value(a, 'n'), '0');
    a.advance(1);
    assert.equal(await a.get('n'), undefined, 'counters keep their TTL');

    await a.set('max', b((TWO_64 - 1n).toString()));
    assert.equal(await a.incr('max', 1n), 0n, '2^64 - 1 + 1 wraps to 0');
    await a.set('max', b((TWO_64 - 2n).toString()));
    assert.equal(await a.incr('max', 5n), 3n, 'the wrap is modulo 2^64');
    assert.equal(await a.incr('max', TWO_64 - 1n), 2n, 'the largest delta');
    assert.equal(await a.decr('max', TWO_64 - 1n), 0n);

    await a.set('text', b('abc'));
    assert.equal(await a.incr('text', 1n), 'NON_NUMERIC');
    assert.equal(await a.decr('text', 1n), 'NON_NUMERIC');
    await a.set('neg', b('-1'));
    assert.equal(await a.incr('neg', 1n), 'NON_NUMERIC', 'a sign is not a digit');
    await a.set('big', b(TWO_64.toString()));
    assert.equal(await a.incr('big', 1n), 'NON_NUMERIC', '2^64 is past a 64-bit counter');
    assert.equal(await value(a, 'big'), TWO_64.toString(), 'a refused incr changes nothing');
    await a.set('empty', b(''));
    assert.equal(await a.incr('empty', 1n), 'NON_NUMERIC', 'an empty value is not a number');
  });

  t('TTL: an item is there 1 ms before its deadline and gone at it; set without a TTL clears one', async (a) => {
    assert.equal(await a.set('k', b('x'), { ttlS: 10 }), 'STORED');
    a.advance(9_999);
    assert.equal(await value(a, 'k'), 'x', '1 ms before the deadline');
    a.advance(1);
    assert.equal(await a.get('k'), undefined, 'at the deadline');
    assert.equal(await a.delete('k'), false, 'an expired item cannot be deleted');
    assert.equal(await a.incr('k', 1n), 'NOT_FOUND', 'nor counted');

    await a.set('keep', b('1'), { ttlS: 5 });
    await a.set('keep', b('2'));
    a.advance(30 * 24 * 3600 * 1000);
    assert.equal(await value(a, 'keep'), '2', 'an overwrite without a TTL never expires');

    await a.set('again', b('1'));
    await a.set('again', b('2'), { ttlS: 1 });
    a.advance(1_000);
    assert.equal(await a.get('again'), undefined, 'an overwrite with a TTL expires');

    await a.set('month', b('m'), { ttlS: 30 * 24 * 3600 });
    a.advance(30 * 24 * 3600 * 1000 - 1);
    assert.equal(await value(a, 'month'), 'm', 'the longest relative TTL, 30 days, less 1 ms');
    a.advance(1);
    assert.equal(await a.get('month'), undefined);
  });

  t('touch: a new deadline from now, 0 for never; value, flags and CAS stay', async (a) => {
    await a.set('k', b('x'), { flags: 12, ttlS: 10 });
    const cas = await casOf(a, 'k');
    a.advance(5_000);
    assert.equal(await a.touch('k', 10), true);
    a.advance(9_999);
    const got = await a.get('k');
    assert.equal(got?.value.toString('latin1'), 'x', 'alive 1 ms before the new deadline (15 s after the set)');
    assert.equal(got.flags, 12, 'touch keeps the flags');
    assert.equal(got.cas, cas, 'touch keeps the CAS');
    a.advance(1);
    assert.equal(await a.get('k'), undefined, 'gone at the new deadline');
    assert.equal(await a.touch('k', 10), false, 'an expired item cannot be touched');

    await a.set('never', b('y'), { ttlS: 3 });
    assert.equal(await a.touch('never', 0), true);
    a.advance(365 * 24 * 3600 * 1000);
    assert.equal(await value(a, 'never'), 'y', 'touch 0 removes the deadline');

    await a.set('sooner', b('z'), { ttlS: 100 });
    assert.equal(await a.touch('sooner', 1), true);
    a.advance(1_000);
    assert.equal(await a.get('sooner'), undefined, 'touch can bring a deadline closer');
  });

  t('append and prepend: bytes added at either end; flags, TTL kept; CAS moves', async (a) => {
    await a.set('k', b('mid'), { flags: 77, ttlS: 20 });
    const c0 = await casOf(a, 'k');
    assert.equal(await a.append('k', b('>>')), 'STORED');
    assert.equal(await a.prepend('k', b('<<')), 'STORED');
    const got = await a.get('k');
    assert.equal(got?.value.toString('latin1'), '<<mid>>');
    assert.equal(got.flags, 77, 'append/prepend keep the flags');
    assert.ok(got.cas > c0, 'append/prepend give a new CAS');
    assert.equal(await a.append('k', b('')), 'STORED', 'an empty append');
    assert.equal(await value(a, 'k'), '<<mid>>');
    a.advance(19_999);
    assert.equal(await value(a, 'k'), '<<mid>>');
    a.advance(1);
    assert.equal(await a.get('k'), undefined, 'append/prepend keep the TTL of the set');
    assert.equal(await a.append('k', b('late')), 'NOT_STORED', 'an expired item cannot be appended to');
    await a.set('n', b('12'));
    assert.equal(await a.append('n', b('3')), 'STORED');
    assert.equal(await a.incr('n', 1n), 124n, 'an appended counter counts from its new digits');
  });

  t('flags: all 32 bits round-trip, each write sets its own, a set without flags stores 0', async (a) => {
    for (const flags of [0, 1, 0x7fffffff, 0x80000000, 0xffffffff, 0x12345678]) {
      assert.equal(await a.set('f', b('v'), { flags }), 'STORED');
      assert.equal((await a.get('f'))?.flags, flags, `flags ${flags}`);
    }
    await a.set('f', b('v'));
    assert.equal((await a.get('f'))?.flags, 0, 'a set without flags does not keep the old ones');
    await a.set('g', b('v'), { flags: 5 });
    assert.equal((await a.get('f'))?.flags, 0, 'flags belong to their key');
    assert.equal((await a.get('g'))?.flags, 5);
  });

  t('values at the size limit: the largest fits exactly; one byte more is refused and stores nothing', async (a) => {
    const max = a.maxValueBytes;
    assert.ok(max >= 64 * 1024, `the limit (${max}) is a large value`);
    const big = Buffer.alloc(max);
    for (let i = 0; i < max; i++) big[i] = (i * 2654435761) >>> 24;
    big.write('\r\nEND\r\n', 1000, 'latin1');
    assert.equal(await a.set('big', big, { flags: 3 }), 'STORED');
    const got = await a.get('big');
    assert.ok(got !== undefined);
    assert.equal(got.value.length, max);
    assert.ok(got.value.equals(big), 'the largest value comes back byte for byte');
    assert.equal(got.flags, 3);
    assert.equal(await a.set('over', Buffer.alloc(max + 1, 0x61)), 'TOO_LARGE');
    assert.equal(await a.get('over'), undefined, 'a refused value leaves nothing behind');
    assert.equal(await a.add('over', Buffer.alloc(max + 1, 0x61)), 'TOO_LARGE');
    assert.equal(await a.get('over'), undefined);

    await a.set('grow', Buffer.alloc(max - 1, 0x62));
    assert.equal(await a.append('grow', b('c')), 'STORED', 'an append up to the limit');
    const grown = await a.get('grow');
    assert.equal(grown?.value.length, max);
    assert.equal(grown.value[max - 1], 0x63);
    assert.equal(await a.append('grow', b('d')), 'NOT_STORED', 'an append past the limit');
    assert.equal(await a.prepend('grow', b('d')), 'NOT_STORED', 'a prepend past the limit');
    assert.equal((await a.get('grow'))?.value.length, max, 'the refused appends changed nothing');
    assert.ok((await a.get('big'))?.value.equals(big), 'the first large value is still whole');
  });
}
