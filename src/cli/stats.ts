// `atomio stats DIR [--json]`: opens the store in DIR (which runs recovery, and closing may
// write a checkpoint if recovery replayed anything) and prints Store.stats().

import path from 'node:path';
import { AtomioError } from '../base/errors.js';
import { fileExists } from '../media/file.js';
import { DATA_FILE_NAME, open, type StoreStats } from '../store/store.js';
import { EXIT, aligned, formatBytes, writeOut } from './output.js';

const BYTE_KEYS = new Set(['capacity', 'usableBytes', 'bytesUsed', 'liveBytes', 'segmentBytes', 'expiredBytesReclaimed']);

export async function statsCommand(dir: string, json: boolean): Promise<number> {
  const root = path.resolve(dir);
  if (!(await fileExists(path.join(root, DATA_FILE_NAME)))) {
    throw new AtomioError('ERR_FORMAT', `${root} holds no atomio store (no ${DATA_FILE_NAME})`, { path: root });
  }
  const store = await open(root);
  let stats: StoreStats;
  try {
    stats = store.stats();
  } finally {
    await store.close();
  }
  writeOut(json ? `${JSON.stringify(stats, null, 2)}\n` : `atomio stats ${root}\n${aligned(statsRows(stats))}`);
  return EXIT.ok;
}

/** Stats as aligned rows; shared with the tour. */
export function statsRows(s: StoreStats): [string, string][] {
  const rows: [string, string][] = [];
  for (const [key, value] of Object.entries(s) as [keyof StoreStats, unknown][]) {
    if (key === 'lastRecovery' || key === 'eraseCounts') continue;
    rows.push([key, formatValue(key, value as number)]);
  }
  const e = s.eraseCounts;
  rows.push(['eraseCounts', `min ${e.min}, mean ${e.mean.toFixed(2)}, max ${e.max}`]);
  const r = s.lastRecovery;
  if (r !== undefined) {
    rows.push(['lastRecovery', `${r.ms.toFixed(1)} ms from checkpoint seq ${r.checkpointSeq}: ${r.recordsReplayed} records replayed (${formatBytes(r.bytesReplayed)}), ${r.recordsDropped} dropped`]);
    rows.push(['corruptions', r.corruptions.length === 0 ? 'none' : `${r.corruptions.length}`]);
    for (const c of r.corruptions) rows.push(['', `segment ${c.segment} offset ${c.offset}: ${c.reason}`]);
  }
  return rows;
}

function formatValue(key: string, value: number): string {
  if (BYTE_KEYS.has(key)) return value < 1024 ? `${value}` : `${value} (${formatBytes(value)})`;
  return Number.isInteger(value) ? `${value}` : value.toFixed(3);
}
