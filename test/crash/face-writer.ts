// The crash writer of the stream and region faces: a child process that stream-sigkill and
// region-sigkill start and SIGKILL (or that kills itself inside a write).
//
//   node dist/test/crash/face-writer.js --face stream|region --dir DIR --seed N --first-id N
//        [--tear-from ack|open --tear-after-ms N --tear-write N] [--wait-go]
//
// --face stream: keeps IN_FLIGHT appends in flight on stream STREAM_NAME, each of 1–8
//   records (some single records, some arrays); append id counts up from --first-id in the
//   order the appends are made; record j of append `id` holds recordValue(id, j). The
//   stream keeps the newest STREAM_KEEP records (retention runs while the writer does).
// --face region: mutates region REGION_NAME (REGION_PAGES pages) and commits, round after
//   round: round `id` (from --first-id) fills 1–12 random pages with pageValue(id, page),
//   then calls commit() without waiting, keeping up to 3 commits in flight; the region keeps
//   its newest REGION_KEEP versions.
//
// Protocol, one line each on stdout, written synchronously before what it reports goes on:
//   SEED <seed> | OPENING | OPENED <json: stream { first, last } / region { version }>
//   I <id> <count>            stream: an append of `count` records, before append()
//   C <id> <page> <page> …    region: the pages round `id` wrote, before commit()
//   A <id> <number>           acknowledged (durable): the first sequence number / the version
//   TEAR <offset> <length> <kept> <how> | FAIL <what> <message>
// Without --dir it does nothing (node --test runs every file under dist/test).

import { parseArgs } from 'node:util';
import { open } from '../../src/index.js';
import { Rng, writeLine } from './common.js';
import { CHILD_OPTIONS, Tear, countFlag, fail, waitForGo } from './tearing.js';

export const FACE_CAPACITY = 16 * 1024 * 1024;
export const FACE_SEGMENT_SIZE = 256 * 1024;
export const FACE_CHECKPOINT_BYTES = 1024 * 1024;
export const STREAM_NAME = 'crash';
export const STREAM_KEEP = 4000;
export const IN_FLIGHT = 16;
export const REGION_NAME = 'crash';
export const REGION_PAGE = 4096;
export const REGION_PAGES = 48;
export const REGION_KEEP = 6;

/** The bytes of record j of append `id`: names both, then filler derived from them. */
export function recordValue(id: number, j: number): Buffer {
  const head = Buffer.from(`${id}:${j}:`, 'latin1');
  const length = head.length + 8 + ((Math.imul(id, 13) + Math.imul(j, 5)) >>> 0) % 180;
  const out = Buffer.alloc(length);
  head.copy(out);
  for (let i = head.length; i < length; i++) out[i] = (Math.imul(id, 31) + Math.imul(j, 7) + i) & 0xff;
  return out;
}

/** The bytes round `id` writes into `page` of the region (round 0: zeros, the initial state). */
export function pageValue(id: number, page: number): Buffer {
  const out = Buffer.alloc(REGION_PAGE);
  if (id === 0) return out;
  out.writeUInt32LE(id, 0);
  out.writeUInt32LE(page, 4);
  out.fill((Math.imul(id, 131) + Math.imul(page, 29) + 7) & 0xff, 8);
  return out;
}

/** The round a page's bytes name (0 for zeros), or a string saying what is wrong. */
export function parsePage(bytes: Buffer, page: number): number | string {
  const id = bytes.readUInt32LE(0);
  return pageValue(id, page).equals(bytes) ? id : `page ${page} holds bytes no round wrote (it names round ${id}, page ${bytes.readUInt32LE(4)})`;
}

async function main(values: Record<string, string | boolean | undefined>): Promise<void> {
  const dir = values.dir as string;
  const face = values.face;
  if (face !== 'stream' && face !== 'region') throw new Error(`--face must be stream or region, got ${String(face)}`);
  const seed = countFlag('seed', values.seed, 1) >>> 0;
  const firstId = countFlag('first-id', values['first-id'], 1);
  writeLine(`SEED ${seed}`);
  const rng = new Rng(seed);
  const tear = await Tear.prepare(values, dir, FACE_CAPACITY, seed, true);
  writeLine('OPENING');
  tear.opening();
  const store = await open(dir, {
    capacity: FACE_CAPACITY,
    segmentSize: FACE_SEGMENT_SIZE,
    checkpointIntervalBytes: FACE_CHECKPOINT_BYTES,
    ...(tear.media !== undefined ? { media: tear.media } : {}),
  });

  if (face === 'stream') {
    const stream = store.stream(STREAM_NAME);
    writeLine(`OPENED ${JSON.stringify({ first: stream.first, last: stream.last })}`);
    await stream.retain({ count: STREAM_KEEP });
    let nextId = firstId;
    const issue = (): void => {
      const id = nextId++;
      const count = rng.next() < 0.5 ? 1 : rng.int(1, 8);
      const records = Array.from({ length: count }, (_, j) => recordValue(id, j));
      writeLine(`I ${id} ${count}`);
      const appended = count === 1 && rng.next() < 0.5 ? stream.append(records[0]!) : stream.append(records).then((seqs) => seqs[0]!);
      appended.then(
        (first) => {
          writeLine(`A ${id} ${first}`);
          tear.acked();
          issue();
        },
        (error: unknown) => fail(`append ${id}`, error),
      );
    };
    for (let i = 0; i < IN_FLIGHT; i++) issue();
    return;
  }

  const region = await store.region(REGION_NAME, { size: REGION_PAGES * REGION_PAGE, pageSize: REGION_PAGE });
  writeLine(`OPENED ${JSON.stringify({ version: region.version })}`);
  await region.retain({ count: REGION_KEEP });
  let nextId = firstId;
  let inFlight = 0;
  const round = (): void => {
    while (inFlight < 3) {
      const id = nextId++;
      const pages = new Set<number>();
      const n = rng.int(1, 12);
      for (let i = 0; i < n; i++) pages.add(rng.int(0, REGION_PAGES - 1));
      for (const p of pages) region.buffer.set(pageValue(id, p), p * REGION_PAGE);
      writeLine(`C ${id} ${[...pages].join(' ')}`);
      inFlight++;
      region.commit().then(
        (version) => {
          writeLine(`A ${id} ${version}`);
          inFlight--;
          tear.acked();
          setImmediate(round);
        },
        (error: unknown) => fail(`commit ${id}`, error),
      );
    }
  };
  round();
}

const { values } = parseArgs({
  options: {
    face: { type: 'string' },
    dir: { type: 'string' },
    seed: { type: 'string' },
    'first-id': { type: 'string' },
    ...CHILD_OPTIONS,
  },
  strict: false,
});

if (typeof values.dir === 'string' && process.argv[1]?.endsWith('face-writer.js')) {
  await waitForGo(values);
  await main(values).catch((error: unknown) => fail('open', error));
}
