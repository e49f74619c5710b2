// `atomio check DIR`: verifies the store in DIR without changing it.
//
// Steps:
//   1. make sure DIR holds a store (DIR/atomio.data); never create one;
//   2. take the store lock, so that no writer changes the log under the scan (exit 3 if
//      another process holds it);
//   3. open the data file, sized by its own superblock;
//   4. run checkStore (src/engine/check.ts), which only reads; a progress bar goes to
//      stderr when stderr is a terminal;
//   5. print the report; exit 0 when it has no problems, 1 when it has.

import path from 'node:path';
import { AtomioError, isAtomioError } from '../base/errors.js';
import { checkStore, type CheckReport } from '../engine/check.js';
import { SEGMENTS_OFFSET, SUPERBLOCK_BYTES, decodeSuperblock } from '../log/format.js';
import { fileExists, openFileMedia, type FileMedia } from '../media/file.js';
import { acquireStoreLock, type StoreLock } from '../media/lock.js';
import { DATA_FILE_NAME } from '../store/store.js';
import { EXIT, aligned, formatBytes, progressBar, writeErr, writeOut } from './output.js';

export async function checkCommand(dir: string, json: boolean): Promise<number> {
  const root = path.resolve(dir);
  const file = path.join(root, DATA_FILE_NAME);
  if (!(await fileExists(file))) {
    throw new AtomioError('ERR_FORMAT', `${root} holds no atomio store (no ${DATA_FILE_NAME})`, { path: root });
  }
  let lock: StoreLock;
  try {
    lock = await acquireStoreLock(root);
  } catch (error) {
    if (!isAtomioError(error, 'ERR_LOCKED')) throw error;
    writeErr(`atomio: the store in ${root} is in use, so it cannot be checked now: ${error.message}\n`);
    return EXIT.locked;
  }
  try {
    const media = await openSized(file);
    try {
      const bar = process.stderr.isTTY && !json ? progressBar(process.stderr, 'segments') : undefined;
      let report: CheckReport;
      try {
        report = await checkStore(media, bar?.update);
      } finally {
        bar?.clear();
      }
      writeOut(json ? `${JSON.stringify(report, null, 2)}\n` : describe(root, report));
      return report.problems.length > 0 ? EXIT.error : EXIT.ok;
    } finally {
      await media.close();
    }
  } finally {
    await lock.release();
  }
}

/** Opens the data file as large as the capacity its newest valid superblock states. */
async function openSized(file: string): Promise<FileMedia> {
  const probe = await openFileMedia(file, { size: SEGMENTS_OFFSET, create: false });
  let capacity = SEGMENTS_OFFSET;
  let generation = -1;
  try {
    const copies = Buffer.alloc(SEGMENTS_OFFSET);
    await probe.read(copies, 0);
    for (let i = 0; i < 2; i++) {
      const d = decodeSuperblock(copies.subarray(i * SUPERBLOCK_BYTES, (i + 1) * SUPERBLOCK_BYTES));
      if (d.ok && d.superblock.generation > generation && Number.isSafeInteger(d.superblock.capacity)) {
        generation = d.superblock.generation;
        capacity = Math.max(SEGMENTS_OFFSET, d.superblock.capacity);
      }
    }
  } finally {
    await probe.close();
  }
  return openFileMedia(file, { size: capacity, create: false });
}

function describe(root: string, r: CheckReport): string {
  const rows: [string, string][] = [];
  const g = r.geometry;
  if (g) {
    rows.push(['geometry', `${g.sectorBytes}-byte sectors, ${g.segmentCount} segments of ${formatBytes(g.segmentBytes)}, capacity ${formatBytes(g.capacity)}`]);
  }
  for (const s of r.superblocks) {
    const state = s.valid ? `valid, generation ${s.generation}${s.current ? ' (current)' : ''}` : `invalid: ${s.reason}`;
    rows.push([`superblock ${s.copy}`, state]);
  }
  const c = r.checkpoint;
  if (c) {
    const where = c.segments.length === 0 ? 'no segment' : `segment${c.segments.length > 1 ? 's' : ''} ${c.segments.join(', ')}`;
    rows.push(['checkpoint', `${c.valid ? '' : 'DAMAGED, '}seq ${c.seq} in ${where} (${formatBytes(c.payloadBytes)}, ${c.extents} extents)`]);
  } else if (g) {
    rows.push(['checkpoint', 'none yet (the whole log is replayed on open)']);
  }
  const t = r.totals;
  if (g) {
    rows.push(['scanned', `${t.segmentsScanned} segments, ${t.records} records, ${formatBytes(t.bytesVerified)} verified`]);
    rows.push(['log', `${t.recordsAfterCheckpoint} records after the checkpoint to replay, ${t.recordsTorn} torn`]);
    rows.push(['live extents', t.liveExtents === null ? 'unknown (no readable checkpoint)' : `${t.liveExtents}`]);
    rows.push(['live keys', t.liveKeys === null ? 'unknown (no readable checkpoint)' : `${t.liveKeys}`]);
  }
  let text = `atomio check ${root}\n${aligned(rows)}`;
  for (const n of r.notes) text += `note: ${where(n.segment, n.offset)}: ${n.message}\n`;
  for (const p of r.problems) text += `problem: ${where(p.segment, p.offset)} [${p.kind}]: ${p.message}\n`;
  const count = r.problems.length;
  text += count === 0 ? 'result: clean, no problems found\n' : `result: ${count} problem${count === 1 ? '' : 's'} found\n`;
  return text;
}

function where(segment: number, offset: number): string {
  return segment < 0 ? `byte ${offset}` : `segment ${segment} offset ${offset}`;
}
