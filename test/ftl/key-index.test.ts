import assert from 'node:assert/strict';
import { test } from 'node:test';
import { setTimeout as delay } from 'node:timers/promises';
import { InvariantError } from '../../src/base/assert.js';
import { compareKeys, KeyIndex, MAX_KEY_BYTES, META_FIELDS, type KeyMeta, type KeyView } from '../../src/ftl/key-index.js';
import { makeRandom } from '../../src/media/random.js';
import { deriveSeed, replayHint, testSeed } from '../helpers/seed.js';

const FILE = 'dist/test/ftl/key-index.test.js';

// A plain model: the keys as hex strings kept sorted (hex order is byte order, a prefix
// first), and their metadata. Model metadata objects are never changed in place, so a
// snapshot can share them.
class Model {
  keys: string[] = [];
  metas = new Map<string, KeyMeta>();

  /** Position of the first key >= `hex`. */
  lowerBound(hex: string): number {
    let lo = 0;
    let hi = this.keys.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.keys[mid]! < hex) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  set(hex: string, meta: KeyMeta): KeyMeta | undefined {
    const previous = this.metas.get(hex);
    if (previous === undefined) this.keys.splice(this.lowerBound(hex), 0, hex);
    this.metas.set(hex, { ...meta });
    return previous;
  }

  delete(hex: string): KeyMeta | undefined {
    const previous = this.metas.get(hex);
    if (previous !== undefined) {
      this.keys.splice(this.lowerBound(hex), 1);
      this.metas.delete(hex);
    }
    return previous;
  }

  /** Keys in [start, end), in order, reversed when asked. */
  range(start: Uint8Array | undefined, end: Uint8Array | undefined, reverse: boolean): string[] {
    const from = start === undefined ? 0 : this.lowerBound(hex(start));
    const to = end === undefined ? this.keys.length : this.lowerBound(hex(end));
    const keys = from < to ? this.keys.slice(from, to) : [];
    return reverse ? keys.reverse() : keys;
  }

  keyBytes(): number {
    let bytes = 0;
    for (const key of this.keys) bytes += key.length / 2;
    return bytes;
  }

  snapshot(): Model {
    const copy = new Model();
    copy.keys = this.keys.slice();
    copy.metas = new Map(this.metas);
    return copy;
  }
}

function hex(key: Uint8Array): string {
  return Buffer.from(key.buffer, key.byteOffset, key.byteLength).toString('hex');
}

function bytes(hexKey: string): Buffer {
  return Buffer.from(hexKey, 'hex');
}

// Few distinct bytes, 0x00 and 0xff among them, so that random keys share prefixes and collide.
const ALPHABET = [0x00, 0x01, 0x61, 0x62, 0x80, 0xfe, 0xff];

/** A random key of 1..40 bytes, short ones more likely; often derived from a present key. */
function randomKey(random: () => number, model: Model): Buffer {
  const present = model.keys.length > 0 && random() < 0.5 ? bytes(model.keys[Math.floor(random() * model.keys.length)]!) : undefined;
  if (present !== undefined) {
    const r = random();
    if (r < 0.3) return present; // the same key
    if (r < 0.5 && present.length > 1) return present.subarray(0, 1 + Math.floor(random() * (present.length - 1))); // a prefix of it
    if (r < 0.75 && present.length < 40) {
      const tail = Buffer.from([ALPHABET[Math.floor(random() * ALPHABET.length)]!]);
      return Buffer.concat([present, tail]); // it extended
    }
    const changed = Buffer.from(present);
    changed[changed.length - 1] = ALPHABET[Math.floor(random() * ALPHABET.length)]!; // a neighbour
    return changed;
  }
  const length = 1 + Math.floor(random() ** 2 * 40);
  const key = Buffer.alloc(length);
  for (let i = 0; i < length; i++) key[i] = ALPHABET[Math.floor(random() * ALPHABET.length)]!;
  return key;
}

function randomMeta(random: () => number, version: number): KeyMeta {
  return {
    version,
    expiresAt: random() < 0.3 ? 1_700_000_000_000 + Math.floor(random() * 1e9) : 0,
    location: Math.floor(random() * 5000) * 2 ** 32 + Math.floor(random() * 2 ** 32),
    valueBytes: Math.floor(random() * 1e6),
    cacheAt: random() < 0.5 ? -1 : Math.floor(random() * 1e9),
  };
}

/** A random range bound: none, a random key, or a present key. */
function randomBound(random: () => number, model: Model): Uint8Array | undefined {
  return random() < 0.25 ? undefined : randomKey(random, model);
}

/** Everything `reader` holds, in the order forEach gives it. */
function contentOf(reader: KeyIndex | KeyView, mask: Mask = asIs): [string, KeyMeta][] {
  const out: [string, KeyMeta][] = [];
  reader.forEach((key, meta) => out.push([hex(key), mask(meta)]));
  return out;
}

function modelContent(model: Model, mask: Mask = asIs): [string, KeyMeta][] {
  return model.keys.map((key) => [key, mask(model.metas.get(key)!)]);
}

/** What of an entry's metadata a check compares. */
type Mask = (meta: KeyMeta) => KeyMeta;
const asIs: Mask = (meta) => meta;
/** A view shares cache positions with the index (update() writes them in place): they are no part of its content. */
const withoutCache: Mask = (meta) => ({ ...meta, cacheAt: -1 });

/** Checks all of `reader` against `model`: invariants, content, size, key bytes. */
function assertSame(reader: KeyIndex | KeyView, model: Model, where: string, mask: Mask = asIs): void {
  reader.checkInvariants();
  assert.equal(reader.size, model.keys.length, `${where}: size`);
  assert.equal(reader.keyBytes, model.keyBytes(), `${where}: keyBytes`);
  assert.deepEqual(contentOf(reader, mask), modelContent(model, mask), `${where}: every entry, in order`);
}

/** One random range query (forEachIn with a random stop, or count) checked against the model. */
function assertRange(reader: KeyIndex | KeyView, model: Model, random: () => number, where: string, mask: Mask = asIs): void {
  const start = randomBound(random, model);
  const end = randomBound(random, model);
  const reverse = random() < 0.5;
  const expected = model.range(start, end, reverse);
  const range = { start: start === undefined ? '-' : hex(start), end: end === undefined ? '-' : hex(end), reverse };
  if (random() < 0.3) {
    assert.equal(reader.count({ start, end }), expected.length, `${where}: count of ${JSON.stringify(range)}`);
    return;
  }
  if (reader instanceof KeyIndex && start !== undefined && end !== undefined && random() < 0.3) {
    // firstKeyInto: the first key of the range, copied whole, or -1 when none or too long for `out`.
    const first = model.range(start, end, false)[0];
    const out = Buffer.alloc(random() < 0.8 ? MAX_KEY_BYTES : 8, 0xee);
    const n = reader.firstKeyInto(start, end, out);
    const fits = first !== undefined && first.length / 2 <= out.length;
    assert.equal(n, fits ? first.length / 2 : -1, `${where}: firstKeyInto ${JSON.stringify(range)} into ${out.length} bytes`);
    if (fits) assert.equal(hex(out.subarray(0, n)), first, `${where}: firstKeyInto ${JSON.stringify(range)} copies the key`);
    return;
  }
  // Stop after `limit` entries; return nothing (not false) otherwise, which must go on.
  const limit = random() < 0.5 ? Infinity : Math.floor(random() * 20);
  const seen: [string, KeyMeta][] = [];
  reader.forEachIn({ start, end, reverse }, (key, meta) => {
    seen.push([hex(key), mask(meta)]);
    if (seen.length >= limit) return false;
    return random() < 0.5 ? true : undefined;
  });
  const want = expected.slice(0, limit === Infinity ? expected.length : Math.max(1, limit));
  assert.deepEqual(
    seen,
    want.map((key) => [key, mask(model.metas.get(key)!)]),
    `${where}: forEachIn ${JSON.stringify(range)} stopping after ${limit}`,
  );
}

/** One random range walked by a cursor of `view`, checked against the model, to its end and past it. */
function assertCursor(view: KeyView, model: Model, random: () => number, where: string, mask: Mask = asIs): void {
  const start = randomBound(random, model);
  const end = randomBound(random, model);
  const reverse = random() < 0.5;
  const range = { start: start === undefined ? '-' : hex(start), end: end === undefined ? '-' : hex(end), reverse };
  const cursor = view.cursor({ start, end }, reverse);
  const seen: [string, KeyMeta][] = [];
  while (cursor.next()) {
    seen.push([hex(cursor.key()), mask(cursor.meta())]);
    assert.equal(cursor.version, cursor.meta().version, `${where}: the cursor's fields are its entry's`);
  }
  const expected = model.range(start, end, reverse);
  assert.deepEqual(
    seen,
    expected.map((key) => [key, mask(model.metas.get(key)!)]),
    `${where}: cursor ${JSON.stringify(range)}`,
  );
  assert.equal(cursor.next(), false, `${where}: a finished cursor stays finished`);
}

/** Runs `steps` random operations on both, checking each result; `phase` weights them. */
function randomOps(index: KeyIndex, model: Model, random: () => number, step: { n: number }, steps: number, where: string, phase: 'grow' | 'shrink'): void {
  const setWeight = phase === 'grow' ? 0.45 : 0.15;
  const deleteWeight = phase === 'grow' ? 0.15 : 0.45;
  for (let s = 0; s < steps; s++) {
    const n = ++step.n;
    const at = `${where} step ${n}`;
    const r = random();
    const key = randomKey(random, model);
    const k = hex(key);
    if (r < setWeight) {
      const meta = randomMeta(random, n);
      // Half the time the key is a subarray of a larger buffer, which is then scribbled over:
      // the index must have copied the bytes.
      let given: Uint8Array = key;
      let scratch: Buffer | undefined;
      if (random() < 0.5) {
        scratch = Buffer.alloc(key.length + 10, 0xaa);
        key.copy(scratch, 5);
        given = scratch.subarray(5, 5 + key.length);
      }
      assert.deepEqual(index.set(given, meta), model.set(k, meta), `${at}: set ${k} returns the previous meta`);
      scratch?.fill(0x55);
    } else if (r < setWeight + deleteWeight) {
      assert.deepEqual(index.delete(key), model.delete(k), `${at}: delete ${k} returns the previous meta`);
    } else if (r < setWeight + deleteWeight + 0.1) {
      const patch: Partial<KeyMeta> = {};
      if (random() < 0.5) patch.version = n;
      if (random() < 0.5) patch.expiresAt = Math.floor(random() * 1e12);
      if (random() < 0.5) patch.cacheAt = random() < 0.5 ? -1 : Math.floor(random() * 1e6);
      if (random() < 0.3) patch.location = Math.floor(random() * 2 ** 40);
      const previous = model.metas.get(k);
      if (previous !== undefined) model.metas.set(k, { ...previous, ...patch });
      assert.equal(index.update(key, patch), previous !== undefined, `${at}: update ${k} says whether the key exists`);
    } else if (r < setWeight + deleteWeight + 0.25) {
      assert.deepEqual(index.get(key), model.metas.get(k), `${at}: get ${k}`);
      assert.equal(index.has(key), model.metas.has(k), `${at}: has ${k}`);
    } else {
      assertRange(index, model, random, at);
    }
    if (n % 1000 === 0) assertSame(index, model, at);
  }
}

test('the index matches a sorted model under random sets, updates, deletes, lookups and ranges (seeded)', (t) => {
  const seed = testSeed();
  t.diagnostic(replayHint(seed, FILE));
  const random = makeRandom(seed);
  const index = new KeyIndex();
  const model = new Model();
  const step = { n: 0 };
  const where = replayHint(seed, FILE);
  // Grow to thousands of keys (a hundred leaves and more), shrink to few (merges, emptied
  // leaves), then grow again.
  randomOps(index, model, random, step, 12_000, where, 'grow');
  assert.ok(model.keys.length > 2000, `${where}: the grow phase reaches thousands of keys (${model.keys.length})`);
  randomOps(index, model, random, step, 14_000, where, 'shrink');
  randomOps(index, model, random, step, 6_000, where, 'grow');
  assertSame(index, model, `${where} end`);
});

test('a frozen view keeps the content of its moment while the index changes (seeded)', (t) => {
  const seed = deriveSeed(testSeed(), 1);
  t.diagnostic(replayHint(seed, FILE));
  const where = replayHint(seed, FILE);
  const random = makeRandom(seed);
  const index = new KeyIndex();
  const model = new Model();
  const step = { n: 0 };
  let views: { view: KeyView; model: Model; at: number }[] = [];
  for (let round = 0; round < 40; round++) {
    randomOps(index, model, random, step, 150 + Math.floor(random() * 400), where, round % 8 < 5 ? 'grow' : 'shrink');
    if (random() < 0.05) {
      index.clear();
      model.keys = [];
      model.metas = new Map();
    }
    // Sometimes two views in a row, with nothing changed between them.
    const count = random() < 0.2 ? 2 : 1;
    for (let i = 0; i < count; i++) views.push({ view: index.freeze(), model: model.snapshot(), at: step.n });
    if (views.length > 8) views = views.slice(views.length - 8);
    for (const { view, model: then, at } of views) {
      const label = `${where}: view taken at step ${at}, checked at step ${step.n}`;
      assertSame(view, then, label, withoutCache);
      for (let q = 0; q < 20; q++) {
        const key = randomKey(random, then);
        const got = view.get(key);
        const want = then.metas.get(hex(key));
        assert.deepEqual(got && withoutCache(got), want && withoutCache(want), `${label}: get ${hex(key)}`);
        assert.equal(view.has(key), then.metas.has(hex(key)), `${label}: has ${hex(key)}`);
        assertRange(view, then, random, label, withoutCache);
        assertCursor(view, then, random, label, withoutCache);
      }
    }
  }
  assertSame(index, model, `${where}: the index itself`);
});

test('a view survives update() of every key, splits, merges and clear()', () => {
  const index = new KeyIndex();
  const meta = (version: number): KeyMeta => ({ version, expiresAt: 0, location: version * 16, valueBytes: 10, cacheAt: -1 });
  for (let i = 0; i < 3000; i++) index.set(Buffer.from(`key:${String(i * 2).padStart(6, '0')}`), meta(i));
  const before = contentOf(index);
  const view = index.freeze();
  for (let i = 0; i < 3000; i++) assert.ok(index.update(Buffer.from(`key:${String(i * 2).padStart(6, '0')}`), { version: -1, cacheAt: 7 }));
  for (let i = 0; i < 3000; i++) index.set(Buffer.from(`key:${String(i * 2 + 1).padStart(6, '0')}`), meta(10_000 + i)); // splits
  const leavesBefore = index.memoryBytes();
  // Leave one key in ten: sparse leaves merge.
  for (let i = 0; i < 6000; i++) if (i % 10 !== 1) index.delete(Buffer.from(`key:${String(i).padStart(6, '0')}`));
  assert.ok(index.memoryBytes() < leavesBefore / 4, 'deleting nine keys in ten merged leaves');
  view.checkInvariants();
  assert.deepEqual(contentOf(view), before, 'the view still shows the content at freeze()');
  assert.equal(index.size, 600, 'the index has its own content');
  assert.equal(index.get(Buffer.from('key:000001'))?.version, 10_000);
  index.clear();
  assert.equal(index.size, 0, 'clear() empties the index');
  assert.deepEqual(contentOf(view), before, 'clear() leaves the view alone');
  assert.equal(view.count({}), 3000, 'the view counts its own entries');
  index.checkInvariants();
});

test('exportRaw and importRaw round-trip the content, with large keys and an empty index', () => {
  const random = makeRandom(7);
  const index = new KeyIndex();
  const model = new Model();
  for (let i = 0; i < 5000; i++) {
    const length = i % 50 === 0 ? MAX_KEY_BYTES : 1 + Math.floor(random() * 40);
    const key = Buffer.alloc(length);
    for (let j = 0; j < length; j++) key[j] = ALPHABET[Math.floor(random() * ALPHABET.length)]!;
    const meta = randomMeta(random, i);
    index.set(key, meta);
    model.set(hex(key), meta);
  }
  const raw = index.exportRaw();
  assert.equal(raw.ends.length, model.keys.length, 'one end per entry');
  assert.equal(raw.meta.length, model.keys.length * META_FIELDS, 'META_FIELDS numbers per entry');
  assert.equal(raw.keys.length, model.keyBytes(), 'the keys are packed back to back');
  // Import from a copy inside a larger buffer, then scribble over it: the index must copy.
  const backing = Buffer.alloc(raw.keys.length + 64, 0x11);
  raw.keys.copy(backing, 32);
  const keys = backing.subarray(32, 32 + raw.keys.length);
  const copy = KeyIndex.importRaw({ keys, ends: raw.ends.slice(), meta: raw.meta.slice() });
  backing.fill(0x22);
  assertSame(copy, model, 'imported index');
  const again = copy.exportRaw();
  assert.ok(again.keys.equals(raw.keys) && Buffer.from(again.ends.buffer).equals(Buffer.from(raw.ends.buffer)), 'export of the import is the same bytes');
  assert.deepEqual(again.meta, raw.meta, 'export of the import has the same metadata');
  // The imported index stays editable.
  for (let i = 0; i < 2000; i++) {
    const key = randomKey(random, model);
    if (random() < 0.5) assert.deepEqual(copy.delete(key), model.delete(hex(key)));
    else {
      const meta = randomMeta(random, 10_000 + i);
      assert.deepEqual(copy.set(key, meta), model.set(hex(key), meta));
    }
  }
  assertSame(copy, model, 'imported index after edits');

  const empty = new KeyIndex().exportRaw();
  assert.equal(empty.keys.length + empty.ends.length + empty.meta.length, 0, 'an empty index exports nothing');
  const emptyCopy = KeyIndex.importRaw(empty);
  assert.equal(emptyCopy.size, 0, 'an empty import is empty');
  emptyCopy.set(Buffer.from('x'), randomMeta(random, 1));
  assert.equal(emptyCopy.size, 1, 'and takes keys');
});

test('importRaw rejects unsorted, duplicate or badly sized input', () => {
  const meta = new Float64Array(2 * META_FIELDS);
  const raw = (keys: string, ends: number[]) => ({ keys: Buffer.from(keys), ends: Uint32Array.from(ends), meta: new Float64Array(ends.length * META_FIELDS) });
  assert.equal(KeyIndex.importRaw(raw('ab', [1, 2])).size, 2, 'sorted input is taken');
  assert.throws(() => KeyIndex.importRaw(raw('ba', [1, 2])), InvariantError, 'unsorted keys are rejected');
  assert.throws(() => KeyIndex.importRaw(raw('aa', [1, 2])), InvariantError, 'duplicate keys are rejected');
  assert.throws(() => KeyIndex.importRaw(raw('ab', [0, 2])), InvariantError, 'an empty key is rejected');
  assert.throws(() => KeyIndex.importRaw(raw('abc', [1, 2])), InvariantError, 'keys beyond the last end are rejected');
  assert.throws(() => KeyIndex.importRaw({ keys: Buffer.from('ab'), ends: Uint32Array.from([1, 2]), meta: meta.subarray(1) }), InvariantError, 'short metadata is rejected');
});

test('an empty index has no entries in any range', () => {
  const index = new KeyIndex();
  const key = Buffer.from('a');
  assert.equal(index.get(key), undefined);
  assert.equal(index.has(key), false);
  assert.equal(index.delete(key), undefined);
  assert.equal(index.update(key, { version: 1 }), false);
  for (const reverse of [false, true]) {
    let visits = 0;
    index.forEachIn({ reverse }, () => void visits++);
    index.forEachIn({ start: key, end: Buffer.from('z'), reverse }, () => void visits++);
    assert.equal(visits, 0, `nothing to visit (reverse ${reverse})`);
  }
  assert.equal(index.count({}), 0);
  assert.equal(index.count({ start: key }), 0);
  index.forEach(() => assert.fail('forEach visits nothing'));
  assert.equal(index.freeze().size, 0, 'a view of an empty index is empty');
  index.checkInvariants();
});

test('ranges with start >= end are empty', () => {
  const index = new KeyIndex();
  for (let i = 0; i < 500; i++) index.set(Buffer.from([i >> 8, i & 0xff]), { version: i, expiresAt: 0, location: 0, valueBytes: 0, cacheAt: -1 });
  for (const [start, end] of [
    [Buffer.from([0, 10]), Buffer.from([0, 10])],
    [Buffer.from([1, 10]), Buffer.from([0, 10])],
    [Buffer.from([1]), Buffer.from([0, 255, 255])],
  ] as const) {
    for (const reverse of [false, true]) {
      let visits = 0;
      index.forEachIn({ start, end, reverse }, () => void visits++);
      assert.equal(visits, 0, `[${hex(start)}, ${hex(end)}) visits nothing (reverse ${reverse})`);
    }
    assert.equal(index.count({ start, end }), 0, `[${hex(start)}, ${hex(end)}) counts nothing`);
  }
  assert.equal(index.count({ start: Buffer.from([0, 10]), end: Buffer.from([0, 11]) }), 1, 'a one-key range counts one');
});

test('keys that are prefixes of each other, and 0x00 and 0xff bytes, sort by unsigned bytes with the prefix first', () => {
  const keys = ['ff', 'ffff', '00', '0000', '000000', '01', '61', '6100', '61', '61ff', '6162', '610000', '7f', '80', 'fe', 'ff00'];
  const index = new KeyIndex();
  keys.forEach((k, i) => index.set(bytes(k), { version: i, expiresAt: 0, location: 0, valueBytes: 0, cacheAt: -1 }));
  const expected = [...new Set(keys)].sort();
  assert.deepEqual(expected, [...new Set(keys)].map(bytes).sort(compareKeys).map(hex), 'compareKeys agrees with hex order');
  assert.deepEqual(contentOf(index).map(([k]) => k), expected, 'forEach gives byte order');
  const backward: string[] = [];
  index.forEachIn({ reverse: true }, (key) => void backward.push(hex(key)));
  assert.deepEqual(backward, [...expected].reverse(), 'reverse gives the opposite order');
  const within: string[] = [];
  index.forEachIn({ start: bytes('61'), end: bytes('6101') }, (key) => void within.push(hex(key)));
  assert.deepEqual(within, ['61', '6100', '610000'], 'a key and its extensions below the bound');
  assert.equal(index.count({ start: bytes('61'), end: bytes('62') }), 5, 'count of the keys starting with 0x61');
  assert.equal(index.get(bytes('61'))?.version, 8, 'the later set replaced the earlier one');
  assert.equal(index.get(bytes('6101')), undefined, 'a key between present keys is absent');
  assert.ok(compareKeys(bytes('00'), bytes('0000')) < 0 && compareKeys(bytes('ff'), bytes('fe')) > 0 && compareKeys(bytes('ab'), bytes('ab')) === 0);
});

test('deleting every key empties the index, which then takes keys again', () => {
  const random = makeRandom(11);
  const index = new KeyIndex();
  const keys: Buffer[] = [];
  for (let i = 0; i < 6000; i++) keys.push(Buffer.from(`user:${String(Math.floor(random() * 1e9)).padStart(9, '0')}:${i}`));
  for (const [i, key] of keys.entries()) index.set(key, { version: i, expiresAt: 0, location: i, valueBytes: 1, cacheAt: -1 });
  for (let i = keys.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [keys[i], keys[j]] = [keys[j]!, keys[i]!];
  }
  for (const [i, key] of keys.entries()) {
    assert.ok(index.delete(key) !== undefined, `key ${i} was there to delete`);
    if (i % 500 === 0) index.checkInvariants();
  }
  assert.equal(index.size, 0, 'nothing left');
  assert.equal(index.keyBytes, 0, 'no key bytes left');
  assert.ok(index.memoryBytes() < 1024, `an emptied index holds no leaves (${index.memoryBytes()} bytes)`);
  let visits = 0;
  index.forEachIn({}, () => void visits++);
  assert.equal(visits, 0, 'nothing to visit');
  for (const [i, key] of keys.entries()) index.set(key, { version: i, expiresAt: 0, location: i, valueBytes: 1, cacheAt: -1 });
  index.checkInvariants();
  assert.equal(index.size, keys.length, 'every key is back');
  assert.equal(index.get(keys[17]!)?.version, 17);
});

test('keys sharing a long prefix, with keys coming and going before and after them, are all found', () => {
  const index = new KeyIndex();
  const meta = (version: number): KeyMeta => ({ version, expiresAt: 0, location: 0, valueBytes: 0, cacheAt: -1 });
  const key = (i: number) => Buffer.from(`tenant-0042/user:${String(i).padStart(8, '0')}`);
  for (let i = 0; i < 20_000; i += 2) index.set(key(i), meta(i));
  // Keys at both edges that share little with the rest change the prefix every first key
  // shares, back and forth.
  for (let round = 0; round < 300; round++) {
    const edge = Buffer.from(round % 2 === 0 ? `a${round}` : `z${round}`);
    index.set(edge, meta(-round));
    assert.equal(index.get(edge)?.version, -round, `edge key ${edge.toString()} is found`);
    assert.equal(index.get(key(round * 50))?.version, round * 50, `inner key ${round * 50} is found with an edge key present`);
    assert.equal(index.get(key(round * 50 + 1)), undefined, `absent inner key ${round * 50 + 1} is not found`);
    if (round % 3 !== 0) index.delete(edge);
    if (round % 50 === 0) index.checkInvariants();
  }
  index.checkInvariants();
  for (let i = 0; i < 20_000; i += 2) assert.equal(index.get(key(i))?.version, i, `key ${i} is found`);
  assert.equal(index.count({ start: key(0), end: key(20_000) }), 10_000, 'count over the prefixed keys');
  assert.equal(index.get(Buffer.from('tenant-0042/user:')), undefined, 'the bare prefix is not a key');
  assert.equal(index.get(Buffer.from('tenant-0042')), undefined, 'a shorter prefix is not a key');
});

test('stored keys and returned keys and metadata are copies', () => {
  const index = new KeyIndex();
  const backing = Buffer.from('xxhello-worldxx');
  const meta: KeyMeta = { version: 1, expiresAt: 2, location: 3, valueBytes: 4, cacheAt: 5 };
  index.set(backing.subarray(2, 13), meta);
  backing.fill(0);
  meta.version = 99;
  assert.deepEqual(index.get(Buffer.from('hello-world')), { version: 1, expiresAt: 2, location: 3, valueBytes: 4, cacheAt: 5 }, 'the key and meta given were copied');
  const got = index.get(Buffer.from('hello-world'))!;
  got.version = 42;
  index.forEach((key, m) => {
    key.fill(0);
    m.valueBytes = 0;
  });
  assert.deepEqual(index.get(Buffer.from('hello-world')), { version: 1, expiresAt: 2, location: 3, valueBytes: 4, cacheAt: 5 }, 'changing what was returned changes nothing');
  const out: KeyMeta = { version: 0, expiresAt: 0, location: 0, valueBytes: 0, cacheAt: 0 };
  assert.ok(index.getInto(Buffer.from('hello-world'), out) && out.cacheAt === 5, 'getInto fills the object given');
  assert.equal(index.getInto(Buffer.from('hello'), out), false, 'getInto says when the key is absent');
});

test('update() changes only the given fields, and set() checks key lengths', () => {
  const index = new KeyIndex();
  const key = Buffer.from('k');
  index.set(key, { version: 1, expiresAt: 2, location: 3, valueBytes: 4, cacheAt: -1 });
  assert.ok(index.update(key, { cacheAt: 77, expiresAt: 0 }));
  assert.deepEqual(index.get(key), { version: 1, expiresAt: 0, location: 3, valueBytes: 4, cacheAt: 77 });
  const meta = { version: 1, expiresAt: 0, location: 0, valueBytes: 0, cacheAt: -1 };
  assert.throws(() => index.set(Buffer.alloc(0), meta), InvariantError, 'an empty key is refused');
  assert.throws(() => index.set(Buffer.alloc(MAX_KEY_BYTES + 1), meta), InvariantError, 'a key over MAX_KEY_BYTES is refused');
  index.set(Buffer.alloc(MAX_KEY_BYTES, 0xff), meta);
  assert.equal(index.size, 2, 'a key of exactly MAX_KEY_BYTES is taken');
});

test('forEachIn lets the callback update entries but refuses inserts and deletes during the visit', () => {
  const index = new KeyIndex();
  for (let i = 0; i < 1000; i++) index.set(Buffer.from(`k${String(i).padStart(4, '0')}`), { version: i, expiresAt: 0, location: 0, valueBytes: 0, cacheAt: -1 });
  index.freeze(); // so that update() has to copy shared leaves while the visit goes on
  let visits = 0;
  index.forEachIn({}, (key, meta) => {
    visits++;
    assert.ok(index.update(key, { cacheAt: meta.version * 2 }));
    const next = Buffer.from(`k${String(meta.version + 1).padStart(4, '0')}`);
    if (meta.version + 1 < 1000) assert.ok(index.update(next, { expiresAt: 1 }), 'the next key can be updated too');
  });
  assert.equal(visits, 1000, 'the visit went through every key');
  index.forEachIn({}, (_key, meta) => {
    assert.equal(meta.cacheAt, meta.version * 2, 'updates from the callback stuck');
    assert.equal(meta.expiresAt, meta.version === 0 ? 0 : 1, 'an update ahead of the visit is seen when it gets there');
  });
  assert.throws(() => index.forEachIn({}, () => void index.set(Buffer.from('new'), index.get(Buffer.from('k0001'))!)), InvariantError, 'an insert during a visit is caught');
  assert.throws(() => index.forEachIn({ reverse: true }, () => void index.delete(Buffer.from('k0500'))), InvariantError, 'a delete during a visit is caught');
});

test('ordered inserts, ascending or descending, pack leaves tightly', (t) => {
  const meta: KeyMeta = { version: 1, expiresAt: 0, location: 0, valueBytes: 0, cacheAt: -1 };
  const key = (i: number) => {
    const k = Buffer.alloc(16, 0x20);
    k.writeUInt32BE(i, 12);
    return k;
  };
  for (const order of ['ascending', 'descending', 'descending in the middle'] as const) {
    const index = new KeyIndex();
    const n = 50_000;
    if (order === 'descending in the middle') {
      index.set(key(0), meta);
      index.set(key(n + 1), meta);
    }
    for (let i = 0; i < n; i++) index.set(key(order === 'ascending' ? i : n - i), meta);
    index.checkInvariants();
    const perKey = (index.memoryBytes() - index.keyBytes) / index.size;
    t.diagnostic(`${order}: ${perKey.toFixed(1)} bytes a key beyond the key bytes`);
    // Leaves 7/8 full cost about 52 bytes a key; half full, about 58.
    const bound = order === 'descending in the middle' ? 57 : 54;
    assert.ok(perKey <= bound, `${order}: ${perKey.toFixed(1)} bytes a key beyond the key bytes (at most ${bound})`);
  }
});

test('memory stays under 60 bytes a key beyond the key bytes at 200k random 16-byte keys', async (t) => {
  const seed = deriveSeed(testSeed(), 2);
  t.diagnostic(replayHint(seed, FILE));
  const random = makeRandom(seed);
  const n = 200_000;
  // The keys live in one buffer, and each is a short-lived view: the index's own memory is
  // what the heap grows by.
  const source = Buffer.alloc(n * 16);
  for (let i = 0; i < source.length; i += 4) source.writeUInt32BE(Math.floor(random() * 2 ** 32), i);
  const gc = (globalThis as { gc?: () => void }).gc;
  // Array buffers are freed by a sweeper after the collection: let it finish, so that what
  // earlier tests dropped is not counted before and gone after.
  const heap = async () => {
    for (let i = 0; i < 3; i++) {
      gc?.();
      await delay(20);
    }
    const usage = process.memoryUsage();
    return usage.heapUsed + usage.arrayBuffers;
  };
  const before = await heap();
  const index = new KeyIndex();
  for (let i = 0; i < n; i++) index.set(source.subarray(i * 16, i * 16 + 16), { version: i, expiresAt: 0, location: i * 64, valueBytes: 100, cacheAt: -1 });
  const after = await heap();
  // Used after the measurement, so that the collector keeps it (and it counts on both sides).
  assert.equal(source.length, n * 16);
  assert.equal(index.size, n, `${replayHint(seed, FILE)}: every key is in (random keys do not collide)`);
  const estimated = (index.memoryBytes() - index.keyBytes) / n;
  t.diagnostic(`memoryBytes: ${estimated.toFixed(1)} bytes a key beyond the key bytes`);
  assert.ok(estimated <= 61, `memoryBytes says ${estimated.toFixed(1)} bytes a key beyond the key bytes (at most 61)`);
  const imported = KeyIndex.importRaw(index.exportRaw());
  const importedPerKey = (imported.memoryBytes() - imported.keyBytes) / n;
  assert.ok(importedPerKey <= 54, `an imported index takes ${importedPerKey.toFixed(1)} bytes a key (at most 54: leaves 7/8 full)`);
  if (gc === undefined) {
    t.diagnostic('heap check skipped: run node with --expose-gc to measure the heap');
    return;
  }
  const measured = (after - before - index.keyBytes) / n;
  t.diagnostic(`heap + arrayBuffers grew ${measured.toFixed(1)} bytes a key beyond the key bytes`);
  assert.ok(measured < 120, `the heap grew ${measured.toFixed(1)} bytes a key beyond the key bytes (under 120)`);
});

test('rawSlices hands out every entry in key order as the leaves hold them, and a change to what a checkpoint keeps between two slices fails an assertion', () => {
  const index = new KeyIndex();
  const meta = (version: number): KeyMeta => ({ version, expiresAt: 0, location: version * 16, valueBytes: 10, cacheAt: -1 });
  const key = (i: number): Buffer => Buffer.from(`key:${String(i).padStart(6, '0')}`);
  for (let i = 0; i < 2000; i++) index.set(key(i), meta(i + 1));
  const slices = [...index.rawSlices()];
  assert.ok(slices.length > 1, `2000 keys span several leaves (${slices.length} slices)`);
  const raw = index.exportRaw();
  let entry = 0;
  let base = 0;
  for (const s of slices) {
    for (let i = 0; i < s.n; i++, entry++) {
      const start = i === 0 ? 0 : s.ends[i - 1]!;
      assert.deepEqual(Buffer.from(s.keys.subarray(start, s.ends[i]!)), raw.keys.subarray(entry === 0 ? 0 : raw.ends[entry - 1]!, raw.ends[entry]!), `key ${entry}`);
      assert.equal(s.ends[i]! + base, raw.ends[entry], `the end of key ${entry}, from its leaf's start`);
      assert.deepEqual(s.meta.subarray(i * META_FIELDS, (i + 1) * META_FIELDS), raw.meta.subarray(entry * META_FIELDS, (entry + 1) * META_FIELDS));
    }
    base += s.n === 0 ? 0 : s.ends[s.n - 1]!;
  }
  assert.equal(entry, 2000, 'every entry once');

  const cached = index.rawSlices();
  cached.next();
  assert.equal(index.update(key(5), { cacheAt: 7 }), true);
  for (let r = cached.next(); r.done !== true; r = cached.next());
  // A cache position is not stored: the read goes on.

  for (const change of [() => index.set(key(3), meta(99)), () => index.update(key(4), { version: 98 }), () => index.delete(key(6)), () => index.set(key(4001), meta(1))]) {
    const reading = index.rawSlices();
    reading.next();
    change();
    assert.throws(() => reading.next(), InvariantError, 'a change between two slices is caught');
  }
});

test('a lease keeps the index as it was until released, after which leaves are written in place again; views from freeze() stay exact through it all', () => {
  const index = new KeyIndex();
  const meta = (version: number): KeyMeta => ({ version, expiresAt: 0, location: version * 16, valueBytes: 10, cacheAt: -1 });
  const key = (i: number): Buffer => Buffer.from(`key:${String(i).padStart(6, '0')}`);
  for (let i = 0; i < 3000; i++) index.set(key(2 * i), meta(i + 1));
  const random = makeRandom(deriveSeed(testSeed(), 77));
  const churn = (n: number, from: number): void => {
    for (let k = 0; k < n; k++) {
      const i = Math.floor(random() * 6000);
      const what = Math.floor(random() * 4);
      if (what === 0) index.delete(key(i));
      else if (what === 1) index.update(key(i), { version: from + k, cacheAt: k });
      else index.set(key(i), meta(from + k));
    }
  };

  const atLease = contentOf(index);
  const lease = index.lease();
  churn(2000, 100_000);
  assert.deepEqual(contentOf(lease.view), atLease, 'the leased view is the index at lease()');
  // A view from freeze() taken while the lease is held must outlive the lease's release.
  const atFreeze = contentOf(index);
  const frozen = index.freeze();
  churn(500, 200_000);
  lease.release();
  assert.throws(() => lease.release(), InvariantError, 'a second release is a bug');
  churn(2000, 300_000);
  assert.deepEqual(contentOf(frozen), atFreeze, 'the frozen view is unchanged after the lease is released');

  // With no lease held and no view frozen since, a leaf made after the freeze is written in
  // place: a released view (never to be read in earnest) shows the change.
  const fresh = new KeyIndex();
  for (let i = 0; i < 200; i++) fresh.set(key(i), meta(i + 1));
  const released = fresh.lease();
  released.release();
  fresh.update(key(10), { version: 999 });
  assert.equal(released.view.get(key(10))!.version, 999, 'after release, no copy: the old view sees the write');
  const held = fresh.lease();
  fresh.update(key(10), { version: 1000 });
  assert.equal(held.view.get(key(10))!.version, 999, 'while held, a copy: the view keeps its value');
  held.release();
});

test('a cache position alone changes in place in a leaf that a view or a lease shares; any other field copies the leaf first', () => {
  const index = new KeyIndex();
  const keys = Array.from({ length: 300 }, (_, i) => Buffer.from(`key:${String(i).padStart(4, '0')}`));
  for (const [i, key] of keys.entries()) index.set(key, { version: i + 1, expiresAt: 0, location: 4096 * (i + 1), valueBytes: 10, cacheAt: -1 });
  const frozen = index.freeze();
  const lease = index.lease();
  const key = keys[150]!;
  assert.equal(index.update(key, { cacheAt: 1234 }), true);
  assert.equal(frozen.get(key)?.cacheAt, 1234, 'the frozen view shares the leaf: it sees the position');
  assert.equal(lease.view.get(key)?.cacheAt, 1234, 'so does the lease');
  assert.equal(frozen.get(key)?.version, 151, 'and the entry is the same');
  assert.equal(index.update(key, { version: 999, cacheAt: -1 }), true);
  assert.equal(index.get(key)?.version, 999);
  assert.deepEqual([frozen.get(key)?.version, frozen.get(key)?.cacheAt], [151, 1234], 'a version change copied the leaf: the view keeps its entry');
  assert.deepEqual([lease.view.get(key)?.version, lease.view.get(key)?.cacheAt], [151, 1234], 'and so does the lease');
  index.update(key, { cacheAt: 5678 });
  assert.equal(frozen.get(key)?.cacheAt, 1234, 'the live copy is no longer shared: its positions are its own');
  // A neighbour in the leaf copied above, and one in a leaf never changed.
  index.update(keys[151]!, { cacheAt: 42 });
  assert.equal(frozen.get(keys[151]!)?.cacheAt, -1, 'a key of the copied leaf changes in the copy only');
  index.update(keys[0]!, { cacheAt: 43 });
  assert.equal(frozen.get(keys[0]!)?.cacheAt, 43, 'a key of a leaf still shared changes in place');
  lease.release();
});
