// `atomio tour [--data DIR]`: what `npm start` runs. Opens (or creates) the store in DIR,
// shows what a previous run left, then walks the block face one call at a time, printing
// each call and its result, and closes. Run it twice: the second run finds the first's data.

import path from 'node:path';
import { isAtomioError } from '../base/errors.js';
import { DATA_FILE_NAME, open, type Store } from '../store/store.js';
import { aligned, formatBytes, range, writeOut } from './output.js';
import { statsRows } from './stats.js';

/** Where the tour writes; far apart so that each step is easy to follow. */
const NOTE_LBA = 0;
const RANGE_LBA = 1000;
const RANGE_SECTORS = 4;
const TRIM_LBA = 3000;
const TRIM_SECTORS = 8;
const TTL_LBA = 5000;
const TTL_MS = 2000;

export async function tourCommand(dir: string): Promise<number> {
  const root = path.resolve(dir);
  const started = performance.now();
  const store = await open(root);
  try {
    const openedMs = performance.now() - started;
    const { block } = store;
    const s = store.stats();
    const r = s.lastRecovery;
    writeOut(`atomio tour: the block face of the store in ${root}\n`);
    writeOut(
      aligned([
        ['data file', `${path.join(root, DATA_FILE_NAME)} (sparse: grows as it is written, up to ${formatBytes(s.capacity)})`],
        ['geometry', `${block.sectorSize}-byte sectors, ${s.segments} segments of ${formatBytes(s.segmentBytes)}`],
        ['opened', `in ${openedMs.toFixed(1)} ms; recovery replayed ${r?.recordsReplayed ?? 0} records after checkpoint seq ${r?.checkpointSeq ?? 0}`],
      ]),
    );
    const run = previousRun(store, await block.read(NOTE_LBA, 1));
    await steps(store, run);
    writeOut('\nstats\n');
    writeOut(aligned(statsRows(store.stats())));
  } finally {
    await store.close();
  }
  writeOut(`\nclosed. Run the tour again (npm start): it will find lba ${NOTE_LBA} as this run left it.\n`);
  return 0;
}

/** Prints what an earlier run left behind; returns this run's number. */
function previousRun(store: Store, note: Buffer): number {
  const { block } = store;
  const version = block.versionOf(NOTE_LBA);
  writeOut('\nprevious run\n');
  if (version === 0) {
    writeOut(`  lba ${NOTE_LBA} is unwritten: this is the first tour on this store\n`);
    return 1;
  }
  const text = note.toString('utf8').replace(/\0+$/, '');
  writeOut(`  lba ${NOTE_LBA} holds version ${version} from a previous run: "${text}"\n`);
  const ttl = block.exists(TTL_LBA);
  writeOut(`  lba ${TTL_LBA}, written with a ${TTL_MS} ms ttl last time: ${ttl ? 'still there (it has not expired yet)' : 'gone, it expired'}\n`);
  const match = /run #(\d+)/.exec(text);
  return match ? Number(match[1]) + 1 : 2;
}

async function steps(store: Store, run: number): Promise<void> {
  const { block } = store;
  const sector = block.sectorSize;
  const fill = (sectors: number, char: string): Buffer => Buffer.alloc(sectors * sector, char);
  const step = (n: number, title: string, lines: string[]): void => {
    writeOut(`\n${n}. ${title}\n`);
    for (const line of lines) writeOut(`   ${line}\n`);
  };

  const v0 = await block.write(TRIM_LBA, fill(TRIM_SECTORS, 't'));
  step(1, 'write', [`block.write(${TRIM_LBA}, ${TRIM_SECTORS} sectors) → version ${v0}`, `exists(${TRIM_LBA}, ${TRIM_SECTORS}) = ${block.exists(TRIM_LBA, TRIM_SECTORS)}`]);

  const note = Buffer.alloc(sector);
  note.write(`atomio tour run #${run} at ${new Date().toISOString()}`);
  const v1 = await block.atomic([
    { write: NOTE_LBA, data: note },
    { write: RANGE_LBA, data: fill(RANGE_SECTORS, 'A') },
    { trim: TRIM_LBA, count: TRIM_SECTORS },
  ]);
  step(2, 'atomic write of two ranges plus a trim (all of it lands, or none of it, even across a crash)', [
    `block.atomic([write lba ${NOTE_LBA}, write lba ${range(RANGE_LBA, RANGE_SECTORS)}, trim lba ${range(TRIM_LBA, TRIM_SECTORS)}]) → version ${v1}`,
    `exists(${TRIM_LBA}, ${TRIM_SECTORS}) = ${block.exists(TRIM_LBA, TRIM_SECTORS)}, versionOf(${NOTE_LBA}) = ${block.versionOf(NOTE_LBA)}`,
  ]);

  const v2 = await block.atomic([{ write: RANGE_LBA, data: fill(RANGE_SECTORS, 'B') }], { if: { version: [RANGE_LBA, RANGE_SECTORS, v1] } });
  step(3, 'conditional write that holds', [`only if lba ${range(RANGE_LBA, RANGE_SECTORS)} is still at version ${v1}: write "B"s → version ${v2}`]);

  let refused: string;
  try {
    await block.atomic([{ write: RANGE_LBA, data: fill(RANGE_SECTORS, 'C') }], { if: { version: [RANGE_LBA, RANGE_SECTORS, v1] } });
    refused = 'it was accepted (unexpected!)';
  } catch (error) {
    if (!isAtomioError(error, 'ERR_CONDITION')) throw error;
    refused = `refused, nothing written: ${error.code}: ${error.message}`;
  }
  step(4, 'conditional write that fails', [`only if lba ${range(RANGE_LBA, RANGE_SECTORS)} is still at version ${v1} (it is at ${v2} now): write "C"s`, refused]);

  const v3 = await block.write(TTL_LBA, fill(1, 'x'), { ttl: TTL_MS });
  step(5, 'write with a ttl', [`block.write(${TTL_LBA}, 1 sector, { ttl: ${TTL_MS} }) → version ${v3}`, `exists(${TTL_LBA}) = ${block.exists(TTL_LBA)}; after ${TTL_MS} ms it reads as zeros and its space returns`]);

  const mapped = block.mapped(0, TTL_LBA + 1).map((m) => `${range(m.lba, m.count)} v${m.version}`);
  step(6, 'what is mapped', [
    `exists(${NOTE_LBA}) = ${block.exists(NOTE_LBA)}, exists(${TRIM_LBA}, ${TRIM_SECTORS}) = ${block.exists(TRIM_LBA, TRIM_SECTORS)}`,
    `versionOf(${RANGE_LBA}) = ${block.versionOf(RANGE_LBA)}, versionOf(${TRIM_LBA}) = ${block.versionOf(TRIM_LBA)}`,
    `mapped(0, ${TTL_LBA + 1}) = [${mapped.join(', ')}]`,
  ]);

  const readNote = (await block.read(NOTE_LBA, 1)).toString('utf8').replace(/\0+$/, '');
  const readRange = await block.read(RANGE_LBA, RANGE_SECTORS);
  const readTrim = await block.read(TRIM_LBA, TRIM_SECTORS);
  step(7, 'reads', [
    `read(${NOTE_LBA}, 1) = "${readNote}"`,
    `read(${RANGE_LBA}, ${RANGE_SECTORS}) = ${readRange.length} bytes of "${String.fromCharCode(readRange[0]!)}"${readRange.every((b) => b === readRange[0]) ? '' : ' (mixed!)'}`,
    `read(${TRIM_LBA}, ${TRIM_SECTORS}) = ${readTrim.every((b) => b === 0) ? 'zeros (trimmed)' : 'data (unexpected!)'}`,
  ]);
  writeOut(`\nlba ${NOTE_LBA} now holds version ${block.versionOf(NOTE_LBA)}\n`);
}
