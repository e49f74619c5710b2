// The checkpoint payload: what encodeCheckpoint writes, decodeCheckpoint gives back exactly;
// the compact form stays within the fixed-width bound the engine reserves room by; damaged
// payloads decode to undefined instead of throwing; version 2 payloads still decode.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { makeRandom } from '../../src/media/random.js';
import {
  CHECKPOINT_STEP_ENTRIES,
  checkpointBytes,
  decodeCheckpoint,
  encodeCheckpoint,
  encodeCheckpointInSteps,
  type PoolImage,
  type PoolSource,
  type SnapshotImage,
} from '../../src/engine/checkpoint.js';
import { EXTENT_FIELDS } from '../../src/ftl/extent-map.js';
import { META_FIELDS, type RawLeaf } from '../../src/ftl/key-index.js';
import type { SegmentInfo } from '../../src/ftl/segments.js';
import { replayHint, testSeed } from '../helpers/seed.js';

const FILE = 'dist/test/engine/checkpoint.test.js';

function segmentsOf(count: number, random: () => number): SegmentInfo[] {
  const states = ['free', 'open', 'sealed', 'checkpoint'] as const;
  return Array.from({ length: count }, (_, index) => ({
    index,
    state: states[index % 4]!,
    kind: (index % 4) as 0 | 1 | 2 | 3,
    nonce: Math.floor(random() * 2 ** 32),
    openSeq: index * 100,
    eraseCount: index,
    maxSeq: index * 100 + 50,
    liveBytes: 0,
    writeOffset: index * 512,
    readers: 0,
    youngestVersion: 0,
    damaged: index === 3,
    prefilled: false,
    allocatedAt: 0,
  }));
}

/** Sorted, disjoint extents with fields across their whole ranges, big values included. */
function extentsOf(count: number, random: () => number): Float64Array {
  const raw = new Float64Array(count * EXTENT_FIELDS);
  let lba = Math.floor(random() * 1000);
  for (let i = 0; i < count; i++) {
    const big = random() < 0.1;
    const sectors = 1 + Math.floor(random() * (big ? 2 ** 20 : 16));
    raw.set(
      [
        lba,
        sectors,
        big ? 2 ** 53 - 1 - i : 1 + Math.floor(random() * 1e7),
        Math.floor(random() * 2 ** 21) * 2 ** 32 + Math.floor(random() * 2 ** 32),
        Math.floor(random() * 2 ** 24) * 2 ** 24 + Math.floor(random() * 2 ** 24),
        random() < 0.7 ? 0 : 1.7e12 + Math.floor(random() * 1e9),
      ],
      i * EXTENT_FIELDS,
    );
    lba += sectors + (random() < 0.5 ? 0 : Math.floor(random() * (big ? 2 ** 40 : 100)));
  }
  return raw;
}

/** Sorted unique keys, many sharing prefixes, some empty-suffixed (one key a prefix of the next). */
function poolOf(id: number, name: string, count: number, random: () => number): PoolImage {
  const set = new Set<string>();
  while (set.size < count) {
    const prefix = ['user:', 'user:1', 'order/', ''][Math.floor(random() * 4)]!;
    let key = prefix;
    const extra = Math.floor(random() * (random() < 0.05 ? 300 : 12));
    for (let i = 0; i < extra; i++) key += String.fromCharCode(32 + Math.floor(random() * 200));
    if (key.length > 0) set.add(key);
  }
  const sorted = [...set].map((k) => Buffer.from(k, 'utf8')).sort(Buffer.compare);
  const keys = Buffer.concat(sorted);
  const ends = new Uint32Array(sorted.length);
  let end = 0;
  sorted.forEach((k, i) => (ends[i] = end += k.length));
  const meta = new Float64Array(sorted.length * META_FIELDS);
  for (let i = 0; i < sorted.length; i++) {
    meta.set(
      [
        1 + Math.floor(random() * 2 ** 40),
        random() < 0.8 ? 0 : 1.7e12 + Math.floor(random() * 1e9),
        Math.floor(random() * 2 ** 21) * 2 ** 32 + Math.floor(random() * 2 ** 32),
        Math.floor(random() * 16 * 2 ** 20),
        -1,
      ],
      i * META_FIELDS,
    );
  }
  return { id, name, keys, ends, meta };
}

function stateOf(random: () => number) {
  const segments = segmentsOf(1 + Math.floor(random() * 40), random);
  const heads = [
    { kind: 1 as const, segment: 1, offset: 4096 },
    { kind: 2 as const, segment: 5, offset: 0 },
  ];
  const pools = [poolOf(1, 'default', Math.floor(random() * 500), random), poolOf(7, 'übung', 1, random), poolOf(9, 'empty', 0, random)];
  const snapshots: SnapshotImage[] = [
    { name: 'nightly', version: 1234, createdAt: 1.7e12, extentsRaw: extentsOf(20, random), pools: [poolOf(1, 'default', 30, random)] },
    { name: 'bare', version: 1, createdAt: 0, extentsRaw: new Float64Array(0), pools: [] },
  ];
  return { seq: 99, nextSeq: 100, heads, segments, extentsRaw: extentsOf(Math.floor(random() * 3000), random), nextPoolId: 10, pools, snapshots };
}

/** A pool image as a source of slices of uneven sizes, each with its own key bytes and ends, as a KeyIndex's leaves are. */
function inSlices(image: PoolImage, random: () => number): PoolSource {
  const slices: RawLeaf[] = [];
  const n = image.ends.length;
  for (let a = 0; a < n; ) {
    const b = Math.min(n, a + 1 + Math.floor(random() * 150));
    const base = a === 0 ? 0 : image.ends[a - 1]!;
    slices.push({
      n: b - a,
      keys: image.keys.subarray(base, image.ends[b - 1]!),
      ends: Uint32Array.from(image.ends.subarray(a, b), (end) => end - base),
      meta: image.meta.subarray(a * META_FIELDS, b * META_FIELDS),
    });
    a = b;
  }
  return { id: image.id, name: image.name, count: n, keyBytes: image.keys.length, slices };
}

function encode(s: ReturnType<typeof stateOf>): Buffer {
  return encodeCheckpoint(s.seq, s.nextSeq, s.heads, s.segments, s.extentsRaw, s.nextPoolId, s.pools, s.snapshots);
}

test('a checkpoint decodes to exactly the maps it was encoded from (seeded)', (t) => {
  const seed = testSeed();
  t.diagnostic(replayHint(seed, FILE));
  const random = makeRandom(seed);
  for (let round = 0; round < 20; round++) {
    const s = stateOf(random);
    const payload = encode(s);
    const d = decodeCheckpoint(payload);
    assert.ok(d !== undefined, `round ${round}: the payload decodes (${replayHint(seed, FILE)})`);
    assert.equal(d.seq, s.seq);
    assert.equal(d.nextSeq, s.nextSeq);
    assert.deepEqual(d.heads, s.heads);
    assert.deepEqual(
      d.segments,
      s.segments.map((g) => ({
        state: g.state,
        kind: g.kind,
        damaged: g.damaged,
        eraseCount: g.eraseCount,
        nonce: g.nonce,
        writeOffset: g.writeOffset,
        openSeq: g.openSeq,
        maxSeq: g.maxSeq,
      })),
    );
    assert.deepEqual(d.extentsRaw, s.extentsRaw, `round ${round}: extents`);
    assert.equal(d.nextPoolId, s.nextPoolId);
    const plain = (p: PoolImage) => ({ id: p.id, name: p.name, keys: Buffer.from(p.keys), ends: p.ends, meta: p.meta });
    assert.deepEqual(d.pools.map(plain), s.pools.map(plain), `round ${round}: pools`);
    assert.deepEqual(
      d.snapshots.map((x) => ({ ...x, pools: x.pools.map(plain) })),
      s.snapshots.map((x) => ({ ...x, pools: x.pools.map(plain) })),
      `round ${round}: snapshots`,
    );
  }
});

test('encoded in steps from slices, a checkpoint pauses after every CHECKPOINT_STEP_ENTRIES extents or keys and decodes to the same maps (seeded)', (t) => {
  const seed = testSeed();
  t.diagnostic(replayHint(seed, FILE));
  const random = makeRandom(seed);
  const step = CHECKPOINT_STEP_ENTRIES;
  const s = {
    ...stateOf(random),
    extentsRaw: extentsOf(2 * step + 5, random), // 3 ranges: 2 pauses
    pools: [poolOf(1, 'default', step + 3, random), poolOf(2, 'small', 10, random)], // 1 pause
    snapshots: [{ name: 'big', version: 5, createdAt: 1.7e12, extentsRaw: extentsOf(step + 1, random), pools: [poolOf(1, 'default', 40, random)] }], // 1 pause
  };
  // The extents in slices of uneven sizes, as the map's leaves hand them out.
  const slices: Float64Array[] = [];
  for (let at = 0; at < s.extentsRaw.length; ) {
    const n = (1 + Math.floor(random() * 200)) * EXTENT_FIELDS;
    slices.push(s.extentsRaw.subarray(at, Math.min(s.extentsRaw.length, at + n)));
    at += n;
  }
  const extents = { count: s.extentsRaw.length / EXTENT_FIELDS, slices };
  const pools = s.pools.map((image) => inSlices(image, random));
  const snapshots = s.snapshots.map((x) => ({
    name: x.name,
    version: x.version,
    createdAt: x.createdAt,
    extents: { count: x.extentsRaw.length / EXTENT_FIELDS, slices: [x.extentsRaw] },
    pools: x.pools.map((image) => inSlices(image, random)),
  }));
  const steps = encodeCheckpointInSteps(s.seq, s.nextSeq, s.heads, s.segments, extents, s.nextPoolId, pools, snapshots);
  let pauses = 0;
  let r = steps.next();
  while (r.done !== true) {
    pauses++;
    r = steps.next();
  }
  assert.equal(pauses, 4, 'two pauses in the extents, one in the large pool, one in the snapshot\'s extents');
  assert.ok(r.value.equals(encode(s)), 'the same bytes as encoded at once, from one array and whole pool images');
  const d = decodeCheckpoint(r.value);
  assert.ok(d !== undefined, `the payload decodes (${replayHint(seed, FILE)})`);
  assert.deepEqual(d.extentsRaw, s.extentsRaw, 'extents across the pauses');
  const plain = (p: PoolImage) => ({ id: p.id, name: p.name, keys: Buffer.from(p.keys), ends: p.ends, meta: p.meta });
  assert.deepEqual(d.pools.map(plain), s.pools.map(plain), 'keys across the pauses, shared prefixes included');
  assert.deepEqual(d.snapshots[0]!.extentsRaw, s.snapshots[0]!.extentsRaw, "the snapshot's extents");
  assert.deepEqual(d.snapshots[0]!.pools.map(plain), s.snapshots[0]!.pools.map(plain), "the snapshot's pool");
});

test('a spare buffer large enough takes the payload in place of a new one, with the same bytes; a small one is passed over', () => {
  const random = makeRandom(11);
  const segments = segmentsOf(16, random);
  const raw = new Float64Array(5000 * EXTENT_FIELDS);
  for (let i = 0; i < 5000; i++) raw.set([3 * i, 2, i + 1, (i % 16) * 2 ** 32 + i * 4104, 2 * 2 ** 24, 0], i * EXTENT_FIELDS);
  const encodeInto = (spare: Buffer | undefined, from: Float64Array): Buffer => {
    const steps = encodeCheckpointInSteps(9, 10, [], segments, { count: from.length / EXTENT_FIELDS, slices: [from] }, 1, [], [], spare);
    for (;;) {
      const r = steps.next();
      if (r.done === true) return r.value;
    }
  };
  const first = encodeInto(undefined, raw);
  const whole = Buffer.from(first); // a copy: the spare below is the same memory
  assert.equal(first.byteOffset, 0, 'a payload starts its own buffer');
  assert.ok(first.buffer.byteLength > 4096, 'never a pooled one');
  const spare = Buffer.from(first.buffer);
  spare.fill(0xee); // what a previous payload left behind must not show through
  const fewer = raw.subarray(0, 4000 * EXTENT_FIELDS);
  const again = encodeInto(spare, fewer);
  assert.equal(again.buffer, spare.buffer, 'laid out in the spare');
  assert.ok(again.equals(encodeCheckpoint(9, 10, [], segments, fewer, 1, [], [])), 'the same bytes as in a buffer of its own');
  const small = encodeInto(spare.subarray(0, 100), raw);
  assert.notEqual(small.buffer, spare.buffer, 'a spare too small for the bound is passed over');
  assert.ok(small.equals(whole), 'and the payload is whole');
});

test('an empty store\'s checkpoint (no extents, pools or snapshots) round-trips', () => {
  const segments = segmentsOf(127, makeRandom(3));
  const payload = encodeCheckpoint(1, 2, [{ kind: 1, segment: 0, offset: 0 }], segments, new Float64Array(0), 1, [], []);
  const d = decodeCheckpoint(payload);
  assert.ok(d !== undefined, 'the payload decodes');
  assert.equal(d.extentsRaw.length, 0);
  assert.equal(d.segments.length, 127);
  assert.deepEqual([d.nextPoolId, d.pools, d.snapshots], [1, [], []]);
});

test('the compact payload fits the fixed-width bound, and is far smaller for typical maps', () => {
  const random = makeRandom(7);
  // Worst case: every field at its largest.
  const worst = new Float64Array(1000 * EXTENT_FIELDS);
  for (let i = 0; i < 1000; i++) {
    worst.set([i * 2 ** 43, 2 ** 43 - 1, 2 ** 53 - 1, (2 ** 21 - 1) * 2 ** 32 + 2 ** 32 - 1, (2 ** 24 - 1) * 2 ** 24 + 2 ** 24 - 1, 2 ** 53 - 1], i * EXTENT_FIELDS);
  }
  const segments = segmentsOf(8, random);
  const big = encodeCheckpoint(1, 2, [], segments, worst, 1, [], []);
  assert.ok(big.length <= checkpointBytes(8, 0, 1000), `${big.length} bytes fit the bound ${checkpointBytes(8, 0, 1000)}`);
  assert.deepEqual(decodeCheckpoint(big)?.extentsRaw, worst);

  // Typical: 4 KiB writes packed in segments, versions below 2^24, no expiry.
  const typical = new Float64Array(10000 * EXTENT_FIELDS);
  for (let i = 0; i < 10000; i++) {
    typical.set([i * 8, 8, 1 + Math.floor(random() * 2 ** 24), Math.floor(i / 900) * 2 ** 32 + (i % 900) * 4200, 8 * 2 ** 24, 0], i * EXTENT_FIELDS);
  }
  const compact = encodeCheckpoint(1, 2, [], segments, typical, 1, [], []);
  const fixed = checkpointBytes(8, 0, 10000);
  assert.ok(compact.length * 3 < fixed, `typical extents take ${compact.length} bytes, under a third of the fixed-width ${fixed}`);
});

test('a truncated or damaged payload decodes to undefined, never throws', (t) => {
  const seed = testSeed();
  t.diagnostic(replayHint(seed, FILE));
  const random = makeRandom(seed);
  const payload = encode(stateOf(random));
  for (let cut = 0; cut < payload.length; cut += 1 + Math.floor(random() * 97)) {
    assert.equal(decodeCheckpoint(payload.subarray(0, cut)), undefined, `cut at ${cut} of ${payload.length}`);
  }
  for (let i = 0; i < 2000; i++) {
    const damaged = Buffer.from(payload);
    const at = Math.floor(random() * damaged.length);
    damaged[at] = Math.floor(random() * 256);
    // Damage may still decode (a changed value), but must never throw.
    decodeCheckpoint(damaged);
  }
  // An extent count far beyond what the payload holds is refused before allocating.
  const huge = Buffer.from(payload);
  const extentsAt = 48 + huge.readUInt32LE(28) * 16 + huge.readUInt32LE(24) * 32;
  huge.set([0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01], extentsAt); // 2^42
  assert.equal(decodeCheckpoint(huge), undefined);
});

test('a version 2 (fixed-width) payload written by earlier builds still decodes', () => {
  // By hand, per the version 2 layout: no heads or segments, one extent, one pool with two keys.
  const extent = [16, 8, 5, 3 * 2 ** 32 + 4096, 8 * 2 ** 24 + 0, 0];
  const keys = Buffer.from('abac');
  const parts: Buffer[] = [];
  const header = Buffer.alloc(48);
  header.writeUInt32LE(0x504b4341, 0);
  header.writeUInt32LE(2, 4);
  header.writeDoubleLE(10, 8);
  header.writeDoubleLE(11, 16);
  header.writeDoubleLE(1, 32);
  parts.push(header, Buffer.from(new Float64Array(extent).buffer));
  const poolHead = Buffer.alloc(8);
  poolHead.writeUInt32LE(2, 0); // next pool id
  poolHead.writeUInt32LE(1, 4); // pool count
  const pool = Buffer.alloc(24);
  pool.writeUInt32LE(1, 0);
  pool.writeUInt32LE(7, 4);
  pool.writeDoubleLE(2, 8);
  pool.writeDoubleLE(4, 16);
  const name = Buffer.alloc(8);
  name.write('default');
  const ends = Buffer.from(new Uint32Array([2, 4]).buffer);
  const keyBytes = Buffer.alloc(8);
  keys.copy(keyBytes);
  const meta = Buffer.from(new Float64Array([7, 0, 2 ** 32 + 64, 100, -1, 8, 0, 2 ** 32 + 200, 3, -1]).buffer);
  parts.push(poolHead, pool, name, ends, keyBytes, meta, Buffer.alloc(8));
  const d = decodeCheckpoint(Buffer.concat(parts));
  assert.ok(d !== undefined, 'the version 2 payload decodes');
  assert.deepEqual([...d.extentsRaw], extent);
  assert.equal(d.pools.length, 1);
  assert.equal(d.pools[0]!.name, 'default');
  assert.deepEqual(Buffer.from(d.pools[0]!.keys), keys);
  assert.deepEqual([...d.pools[0]!.ends], [2, 4]);
  assert.deepEqual([...d.pools[0]!.meta], [7, 0, 2 ** 32 + 64, 100, -1, 8, 0, 2 ** 32 + 200, 3, -1]);
  assert.deepEqual(d.snapshots, []);
});
