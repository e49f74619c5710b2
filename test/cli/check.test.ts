// `atomio check`: through the compiled CLI on real files (healthy, damaged, locked), and
// checkStore in-process on a FaultMedia for crashes and for each kind of damage.
//
// Randomized tests print their seed; ATOMIO_SEED=<seed> replays one.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { isAtomioError, open, type Store } from '../../src/index.js';
import { checkStore, type CheckReport } from '../../src/engine/check.js';
import { BLOCK_OP_BYTES, CHUNK_CRC_BYTES, RECORD_HEADER_BYTES, SEGMENTS_OFFSET } from '../../src/log/format.js';
import { FaultMedia } from '../../src/media/fault.js';
import { makeRandom, randomSeed } from '../../src/media/random.js';
import { runCli, transcript, withTempDir } from './run.js';

const SEGMENT = 64 << 10;
const CAPACITY = 8 << 20;
const GEOMETRY = { capacity: CAPACITY, segmentSize: SEGMENT };
/** One 4 KiB chunk of text found nowhere else in the file. */
const MARKER = Buffer.alloc(4096, 'atomio check marker; ');
const FILLER_WRITES = 48;

/** Writes the marker at lba 0, then enough after it that its segment is sealed. */
async function writeMarkerStore(store: Store): Promise<number> {
  const version = await store.block.write(0, MARKER);
  for (let i = 0; i < FILLER_WRITES; i++) await store.block.write(100 + i * 8, Buffer.alloc(4096, i + 1));
  return version;
}

/** Where the marker's data lies: its segment, the offset of its chunk and of its record. */
function locateMarker(image: Uint8Array): { byte: number; segment: number; chunkOffset: number; recordOffset: number; segmentStart: number } {
  const buf = Buffer.from(image.buffer, image.byteOffset, image.length);
  const byte = buf.indexOf(MARKER);
  assert.ok(byte >= 0, 'the marker is in the file');
  assert.equal(buf.indexOf(MARKER, byte + 1), -1, 'the marker is in the file once');
  const segment = Math.floor((byte - SEGMENTS_OFFSET) / SEGMENT);
  const segmentStart = SEGMENTS_OFFSET + segment * SEGMENT;
  const chunkOffset = byte - CHUNK_CRC_BYTES - segmentStart;
  const last = buf.indexOf(Buffer.alloc(4096, FILLER_WRITES));
  assert.ok(Math.floor((last - SEGMENTS_OFFSET) / SEGMENT) !== segment, 'later writes moved the head on: the marker segment is sealed');
  return { byte, segment, chunkOffset, recordOffset: chunkOffset - BLOCK_OP_BYTES - RECORD_HEADER_BYTES, segmentStart };
}

async function fileDigest(file: string): Promise<{ hash: string; mtimeMs: number }> {
  const [bytes, stat] = await Promise.all([fsp.readFile(file), fsp.stat(file)]);
  return { hash: createHash('sha256').update(bytes).digest('hex'), mtimeMs: stat.mtimeMs };
}

function kinds(report: CheckReport): string {
  return JSON.stringify(report.problems, null, 2);
}

// ---------------------------------------------------------------------------------------
// Through the CLI

test('check on a healthy store reports no problems, exits 0 and changes nothing', async () => {
  await withTempDir(async (dir) => {
    const store = await open(dir, GEOMETRY);
    await writeMarkerStore(store);
    await store.close();
    const file = path.join(dir, 'atomio.data');
    const before = await fileDigest(file);

    const r = await runCli(['check', dir]);
    assert.equal(r.code, 0, transcript(r));
    assert.match(r.stdout, /^atomio check /);
    assert.match(r.stdout, /superblock A {2}valid, generation \d+/);
    assert.match(r.stdout, /result: clean, no problems found\n$/);
    assert.equal(r.stderr, '', 'no progress bar when stderr is not a terminal');

    const json = await runCli(['check', dir, '--json']);
    assert.equal(json.code, 0, transcript(json));
    const report = JSON.parse(json.stdout) as CheckReport;
    assert.deepEqual(report.problems, []);
    assert.equal(report.totals.records, 1 + FILLER_WRITES);
    assert.equal(report.totals.liveExtents, 1 + FILLER_WRITES);
    assert.equal(report.checkpoint?.valid, true);

    assert.deepEqual(await fileDigest(file), before, 'check wrote nothing to the data file');
    assert.deepEqual(await fsp.readdir(dir), ['atomio.data'], 'check released its lock');
  });
});

test('check finds a flipped byte in a sealed segment and names its segment and offset', async () => {
  await withTempDir(async (dir) => {
    const store = await open(dir, GEOMETRY);
    await writeMarkerStore(store);
    await store.close();
    const file = path.join(dir, 'atomio.data');
    const image = await fsp.readFile(file);
    const at = locateMarker(image);
    const handle = await fsp.open(file, 'r+');
    try {
      await handle.write(Buffer.from([image[at.byte + 100]! ^ 0x20]), 0, 1, at.byte + 100);
    } finally {
      await handle.close();
    }
    const before = await fileDigest(file);

    const r = await runCli(['check', dir]);
    assert.equal(r.code, 1, transcript(r));
    assert.match(r.stdout, new RegExp(`problem: segment ${at.segment} offset ${at.chunkOffset} \\[chunk\\]: .*lba 0\\.\\.7`), transcript(r));
    assert.match(r.stdout, /result: 1 problem found\n$/);

    const json = await runCli(['check', dir, '--json']);
    assert.equal(json.code, 1, transcript(json));
    const report = JSON.parse(json.stdout) as CheckReport;
    assert.equal(report.problems.length, 1, kinds(report));
    const [problem] = report.problems;
    assert.equal(problem?.kind, 'chunk');
    assert.equal(problem?.segment, at.segment);
    assert.equal(problem?.offset, at.chunkOffset);
    assert.match(problem?.message ?? '', /live data/, 'the damaged chunk holds live data');
    assert.deepEqual(await fileDigest(file), before, 'check wrote nothing');

    // The engine's read path agrees on where the damage is.
    const reopened = await open(dir);
    try {
      await assert.rejects(reopened.block.read(0, 8), (error) => {
        assert.ok(isAtomioError(error, 'ERR_CORRUPT'));
        assert.equal(error.details.segment, at.segment);
        assert.equal(error.details.offset, at.chunkOffset);
        return true;
      });
    } finally {
      await reopened.close();
    }
  });
});

test('check on a store another process holds exits 3 and says it is in use', async () => {
  await withTempDir(async (dir) => {
    const store = await open(dir, GEOMETRY);
    try {
      await store.block.write(0, MARKER);
      const r = await runCli(['check', dir]);
      assert.equal(r.code, 3, transcript(r));
      assert.match(r.stderr, /is in use/, transcript(r));
      assert.equal(r.stdout, '');
    } finally {
      await store.close();
    }
    const r = await runCli(['check', dir]);
    assert.equal(r.code, 0, `once closed, the store checks clean\n${transcript(r)}`);
  });
});

// ---------------------------------------------------------------------------------------
// In-process, on a FaultMedia

/** A store on a FaultMedia; `dir` only holds its lock. */
async function openFault(dir: string, media: FaultMedia, sub: string): Promise<Store> {
  const storeDir = path.join(dir, sub);
  await fsp.mkdir(storeDir, { recursive: true });
  return open(storeDir, { ...GEOMETRY, media });
}

test('checkStore only reads: no write and no flush reaches the medium', async () => {
  await withTempDir(async (dir) => {
    const media = new FaultMedia(CAPACITY);
    const store = await openFault(dir, media, 's');
    await writeMarkerStore(store);
    await store.close();
    const image = media.snapshotImage();
    const crashed = media.crash('keep-all');
    const [writes, flushes] = [crashed.writes, crashed.flushes];
    const report = await checkStore(crashed);
    assert.deepEqual(report.problems, []);
    assert.equal(crashed.writes, writes);
    assert.equal(crashed.flushes, flushes);
    assert.deepEqual(crashed.snapshotImage(), image);
  });
});

test('each kind of damage is reported where it is', async (t) => {
  await withTempDir(async (dir) => {
    const media = new FaultMedia(CAPACITY);
    const store = await openFault(dir, media, 's');
    await writeMarkerStore(store);
    await store.close();
    const clean = await checkStore(media.crash('keep-all'));
    assert.deepEqual(clean.problems, []);
    const at = locateMarker(media.snapshotImage());
    const chainStart = SEGMENTS_OFFSET + clean.checkpoint!.segments[0]! * SEGMENT;
    const older = clean.superblocks.find((s) => !s.current)!;

    const cases: { name: string; byte: number; expect: { kind: string; segment: number; offset: number } }[] = [
      { name: 'a data chunk', byte: at.byte + 7, expect: { kind: 'chunk', segment: at.segment, offset: at.chunkOffset } },
      { name: 'a record header', byte: at.segmentStart + at.recordOffset + 20, expect: { kind: 'record-header', segment: at.segment, offset: at.recordOffset } },
      { name: 'a segment header', byte: at.segmentStart + 20, expect: { kind: 'segment-header', segment: at.segment, offset: 0 } },
      { name: 'a checkpoint part', byte: chainStart + 4096 + 40, expect: { kind: 'checkpoint', segment: clean.checkpoint!.segments[0]!, offset: 512 } },
      { name: 'the older superblock copy', byte: older.offset + 20, expect: { kind: 'superblock', segment: -1, offset: older.offset } },
    ];
    for (const c of cases) {
      await t.test(c.name, async () => {
        const damaged = media.crash('keep-all');
        damaged.flipBit(c.byte, 3);
        const report = await checkStore(damaged);
        const found = report.problems.find((p) => p.kind === c.expect.kind);
        assert.ok(found, `a ${c.expect.kind} problem is reported:\n${kinds(report)}`);
        assert.deepEqual({ kind: found.kind, segment: found.segment, offset: found.offset }, c.expect, kinds(report));
      });
    }
    // In the segment header case the store still opens (reads use the checkpoint's nonce);
    // in the record header case the live data behind it is reported as unreadable.
    const damaged = media.crash('keep-all');
    damaged.flipBit(at.segmentStart + at.recordOffset + 20, 3);
    const report = await checkStore(damaged);
    assert.ok(report.problems.some((p) => p.kind === 'checkpoint' && /lba 0\.\.7 .*no valid write op/.test(p.message)), kinds(report));
  });
});

test('a damaged checkpoint does not stop the scan: every segment with a valid header is read', async () => {
  await withTempDir(async (dir) => {
    const media = new FaultMedia(CAPACITY);
    const store = await openFault(dir, media, 's');
    await writeMarkerStore(store);
    await store.close();
    const clean = await checkStore(media.crash('keep-all'));
    const damaged = media.crash('keep-all');
    damaged.flipBit(SEGMENTS_OFFSET + clean.checkpoint!.segments[0]! * SEGMENT + 4096 + 100, 0);
    const report = await checkStore(damaged);
    assert.equal(report.checkpoint?.valid, false);
    assert.equal(report.totals.liveExtents, null);
    assert.ok(report.totals.segmentsScanned >= clean.totals.segmentsScanned, kinds(report));
    assert.equal(report.totals.records, clean.totals.records);
  });
});

/** A seeded workload of overlapping atomic commits, crashed after a seeded number of turns. */
async function crashDuringCommits(store: Store, media: FaultMedia, random: () => number): Promise<FaultMedia> {
  const pending: Promise<unknown>[] = [];
  const commits = 20 + Math.floor(random() * 40);
  for (let i = 0; i < commits; i++) {
    const lba = Math.floor(random() * 300);
    const sectors = 1 + Math.floor(random() * 6);
    pending.push(
      store.block
        .atomic([{ write: lba, data: Buffer.alloc(sectors * 512, 1 + (i % 250)) }, { trim: Math.floor(random() * 300), count: 2 }])
        .catch(() => undefined),
    );
    if (random() < 0.2) await new Promise((resolve) => setImmediate(resolve));
  }
  const turns = Math.floor(random() * 12);
  for (let i = 0; i < turns; i++) await new Promise((resolve) => setImmediate(resolve));
  return media.crash('torn', Math.floor(random() * 2 ** 32));
}

async function readsAll(store: Store): Promise<void> {
  for (let lba = 0; lba < 320; lba += 32) await store.block.read(lba, 32);
}

test('after a crash a torn tail is a note, never a problem, before and after recovery', async (t) => {
  const seed = process.env.ATOMIO_SEED ? Number(process.env.ATOMIO_SEED) : randomSeed();
  t.diagnostic(`seed ${seed} (replay: ATOMIO_SEED=${seed} node --test dist/test/cli/check.test.js)`);
  const random = makeRandom(seed);
  let notes = 0;
  await withTempDir(async (dir) => {
    for (let round = 0; round < 24; round++) {
      const media = new FaultMedia(CAPACITY, { seed: Math.floor(random() * 2 ** 32) });
      const store = await openFault(dir, media, `a${round}`);
      if (random() < 0.5) {
        await store.block.write(1000, MARKER);
        await store.checkpoint();
      }
      const crashed = await crashDuringCommits(store, media, random);
      const report = await checkStore(crashed);
      assert.deepEqual(report.problems, [], `seed ${seed} round ${round}: after the crash\n${kinds(report)}`);
      notes += report.notes.length;
      const reopened = await openFault(dir, crashed, `b${round}`);
      assert.deepEqual(reopened.stats().lastRecovery?.corruptions, [], `seed ${seed} round ${round}`);
      await readsAll(reopened);
      const after = await checkStore(crashed);
      assert.deepEqual(after.problems, [], `seed ${seed} round ${round}: after recovery\n${kinds(after)}`);
      assert.equal(after.totals.recordsTorn, 0, `seed ${seed} round ${round}: recovery removed the torn tail`);
      await reopened.close();
      const closed = await checkStore(crashed.crash('keep-all'));
      assert.deepEqual(closed.problems, [], `seed ${seed} round ${round}: after close\n${kinds(closed)}`);
    }
  });
  t.diagnostic(`${notes} torn tails noted`);
});

test(
  'crash, recover, commit, crash again: neither recovery nor check sees corruption',
  async () => {
    const seed = process.env.ATOMIO_SEED ? Number(process.env.ATOMIO_SEED) : randomSeed();
    const random = makeRandom(seed);
    await withTempDir(async (dir) => {
      for (let round = 0; round < 12; round++) {
        let media = new FaultMedia(CAPACITY, { seed: Math.floor(random() * 2 ** 32) });
        let store = await openFault(dir, media, `a${round}`);
        media = await crashDuringCommits(store, media, random);
        store = await openFault(dir, media, `b${round}`);
        media = await crashDuringCommits(store, media, random);
        const report = await checkStore(media);
        assert.deepEqual(report.problems, [], `seed ${seed} round ${round}\n${kinds(report)}`);
        const reopened = await openFault(dir, media, `c${round}`);
        assert.deepEqual(reopened.stats().lastRecovery?.corruptions, [], `seed ${seed} round ${round}`);
        await reopened.close();
      }
    });
  },
);

/**
 * Fills a small store with durability 'none' until the cleaner has run, crashes it with torn
 * writes, and returns what check says and how many 4 KiB ranges no longer read back.
 */
async function crashAfterCleaning(dir: string, seed: number): Promise<{ report: CheckReport; unreadable: number; cleaned: number }> {
  const capacity = 2 << 20;
  const options = { capacity, segmentSize: SEGMENT, durability: 'none' as const, flushIntervalMs: 1e6 };
  const random = makeRandom(seed);
  const media = new FaultMedia(capacity, { seed });
  await fsp.mkdir(path.join(dir, 'a'));
  await fsp.mkdir(path.join(dir, 'b'));
  const store = await open(path.join(dir, 'a'), { ...options, media });
  for (let i = 0; i < 2000; i++) await store.block.write(Math.floor(random() * 200) * 8, Buffer.alloc(4096, 1 + (i % 250)));
  const cleaned = store.stats().segmentsCleaned;
  const crashed = media.crash('torn', Math.floor(random() * 2 ** 32));
  const report = await checkStore(crashed);
  const reopened = await open(path.join(dir, 'b'), { ...options, media: crashed });
  let unreadable = 0;
  for (let lba = 0; lba < 1600; lba += 8) await reopened.block.read(lba, 8).catch(() => unreadable++);
  await reopened.close();
  return { report, unreadable, cleaned };
}

test('durability none, crash after cleaning: check flags every store that reads then fail on', async (t) => {
  const seed = process.env.ATOMIO_SEED ? Number(process.env.ATOMIO_SEED) : randomSeed();
  t.diagnostic(`seed ${seed} (replay: ATOMIO_SEED=${seed} node --test dist/test/cli/check.test.js)`);
  const random = makeRandom(seed);
  for (let round = 0; round < 4; round++) {
    await withTempDir(async (dir) => {
      const { report, unreadable, cleaned } = await crashAfterCleaning(dir, Math.floor(random() * 2 ** 32));
      assert.ok(cleaned > 0, 'the cleaner ran');
      if (unreadable > 0) assert.ok(report.problems.length > 0, `seed ${seed} round ${round}: ${unreadable} ranges fail to read, check saw nothing`);
    });
  }
});

test(
  'durability none: a crash never makes data written before the last flush unreadable',
  async () => {
    const seed = process.env.ATOMIO_SEED ? Number(process.env.ATOMIO_SEED) : randomSeed();
    const random = makeRandom(seed);
    for (let round = 0; round < 4; round++) {
      await withTempDir(async (dir) => {
        const { report, unreadable } = await crashAfterCleaning(dir, Math.floor(random() * 2 ** 32));
        assert.equal(unreadable, 0, `seed ${seed} round ${round}\n${kinds(report)}`);
      });
    }
  },
);

test('check maps the keys of every pool and named snapshot and finds a flipped bit in a live value', async () => {
  await withTempDir(async (dir) => {
    const media = new FaultMedia(CAPACITY);
    const store = await open(dir, { capacity: CAPACITY, segmentSize: SEGMENT, media, checkpointIntervalBytes: 256 << 10 });
    for (let i = 0; i < 200; i++) await store.kv('a').put(`k${i}`, `value ${i}`.padEnd(700, '.'));
    await store.snapshot({ name: 'snap' });
    for (let round = 0; round < 3; round++) {
      await Promise.all(Array.from({ length: 100 }, (_, i) => store.kv('a').put(`k${i}`, `round ${round}`.padEnd(700, '-'))));
    }
    await store.kv('b').put('marker', 'KVMARKER'.repeat(8), { ttl: 3_600_000 });
    await store.kv('b').delete('nothing');
    await store.close();
    const clean = await checkStore(media.crash('keep-all'));
    assert.deepEqual(clean.problems, [], 'a healthy store with keys and a snapshot checks clean');
    assert.equal(clean.totals.liveKeys, 200 + 200 + 1, 'pool a, the snapshot\'s copy of it, and the marker');

    const image = media.snapshotImage();
    const at = Buffer.from(image).indexOf('KVMARKERKVMARKER');
    assert.ok(at > 0, 'the marker value is in the image');
    const damaged = FaultMedia.from(image);
    damaged.flipBit(at + 5, 2);
    const report = await checkStore(damaged);
    assert.equal(report.problems.length, 1, kinds(report));
    assert.match(report.problems[0]!.message, /value of a put .*fails its checksum.*live/);
  });
});
