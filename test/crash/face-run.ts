// Runs face-writer.ts as a child process until it dies (see child.ts), and checks the file it
// leaves. Shared by stream-sigkill.test.ts and region-sigkill.test.ts.

import assert from 'node:assert/strict';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { DATA_FILE_NAME } from '../../src/index.js';
import { checkStore } from '../../src/engine/check.js';
import { openFileMedia } from '../../src/media/file.js';
import { newChildRun, spawnWriter, type ChildRun, type KillPlan } from './child.js';
import { FACE_CAPACITY } from './face-writer.js';

const WRITER = fileURLToPath(new URL('./face-writer.js', import.meta.url));

export interface FaceRun extends ChildRun {
  /** The writer's own lines (I, C, A), split on spaces, in order. */
  lines: string[][];
  opened: Record<string, number> | undefined;
}

export function runFaceWriter(face: 'stream' | 'region', dir: string, seed: number, firstId: number, plan: KillPlan): Promise<FaceRun> {
  const run: FaceRun = { ...newChildRun(`${face} writer`, seed), lines: [], opened: undefined };
  const args = ['--face', face, '--dir', dir, '--seed', String(seed), '--first-id', String(firstId)];
  return spawnWriter(WRITER, args, plan, run, (words, _line, ctx) => {
    if (words[0] === 'A') ctx.acked();
    run.lines.push(words);
  }).start();
}

/** The verifier on the file as the kill left it. */
export async function verifyFile(dir: string, context: string): Promise<void> {
  const file = path.join(dir, DATA_FILE_NAME);
  const media = await openFileMedia(file, { size: FACE_CAPACITY, create: false });
  try {
    const report = await checkStore(media);
    assert.deepEqual(report.problems, [], `${context}: the verifier finds problems in the file the kill left:\n${JSON.stringify(report.problems.slice(0, 5), null, 2)}`);
  } finally {
    await media.close();
  }
}
