// Runs face-writer.ts as a child process until it dies: killed by the parent (a while after
// its first acknowledgement, or while it opens the store) or by itself inside a write. Shared
// by stream-sigkill.test.ts and region-sigkill.test.ts.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { DATA_FILE_NAME } from '../../src/index.js';
import { checkStore } from '../../src/engine/check.js';
import { openFileMedia } from '../../src/media/file.js';
import { Rng } from './common.js';
import { FACE_CAPACITY } from './face-writer.js';

const WRITER = fileURLToPath(new URL('./face-writer.js', import.meta.url));
/** A writer still alive this long after it started is stuck. */
const STUCK_MS = 20_000;

export type KillPlan =
  | { by: 'parent'; after: 'ack' | 'opening'; delayMs: number }
  | { by: 'tear'; from: 'ack' | 'open'; delayMs: number; write: number };

export interface FaceRun {
  /** The writer's lines, split on spaces, in order. */
  lines: string[][];
  opened: Record<string, number> | undefined;
  tear: string | undefined;
}

export function describePlan(plan: KillPlan): string {
  return plan.by === 'parent'
    ? `killed ${plan.delayMs} ms after ${plan.after === 'ack' ? 'the first ACK' : 'OPENING'}`
    : `torn in write ${plan.write} from ${plan.delayMs} ms after ${plan.from === 'ack' ? 'the first ACK' : 'open'}`;
}

/** A kill plan drawn from `rng`: mostly a parent kill after the first ACK, some tears, some kills during open. */
export function drawPlan(rng: Rng): KillPlan {
  const r = rng.next();
  if (r < 0.55) return { by: 'parent', after: 'ack', delayMs: rng.int(0, 250) };
  if (r < 0.65) return { by: 'parent', after: 'opening', delayMs: rng.int(0, 60) };
  if (r < 0.9) return { by: 'tear', from: 'ack', delayMs: rng.int(0, 150), write: rng.int(1, 6) };
  return { by: 'tear', from: 'open', delayMs: 0, write: rng.int(1, 4) };
}

export function runFaceWriter(face: 'stream' | 'region', dir: string, seed: number, firstId: number, plan: KillPlan): Promise<FaceRun> {
  const tearArgs = plan.by === 'tear' ? ['--tear-from', plan.from, '--tear-after-ms', String(plan.delayMs), '--tear-write', String(plan.write)] : [];
  const child = spawn(process.execPath, [WRITER, '--face', face, '--dir', dir, '--seed', String(seed), '--first-id', String(firstId), ...tearArgs], {
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  const run: FaceRun = { lines: [], opened: undefined, tear: undefined };
  const oddities: string[] = [];
  let stderr = '';
  let pending = '';
  let killed = false;
  let armed = false;
  let killTimer: NodeJS.Timeout | undefined;
  const kill = (): void => {
    if (killed) return;
    killed = true;
    child.kill('SIGKILL');
  };
  const arm = (): void => {
    if (armed || plan.by !== 'parent') return;
    armed = true;
    killTimer = setTimeout(kill, plan.delayMs);
  };
  const stuck = setTimeout(() => {
    oddities.push(`still alive after ${STUCK_MS} ms (${describePlan(plan)})`);
    kill();
  }, STUCK_MS);
  child.stdout.setEncoding('utf8');
  child.stdout.on('data', (chunk: string) => {
    pending += chunk;
    for (let nl = pending.indexOf('\n'); nl >= 0; nl = pending.indexOf('\n')) {
      const line = pending.slice(0, nl);
      pending = pending.slice(nl + 1);
      const f = line.split(' ');
      if (f[0] === 'OPENING' && plan.by === 'parent' && plan.after === 'opening') arm();
      else if (f[0] === 'OPENED') run.opened = JSON.parse(line.slice('OPENED '.length)) as Record<string, number>;
      else if (f[0] === 'A' && plan.by === 'parent' && plan.after === 'ack') arm();
      else if (f[0] === 'TEAR') run.tear = line.slice('TEAR '.length);
      else if (f[0] === 'FAIL') oddities.push(`writer failed: ${line}`);
      run.lines.push(f);
    }
  });
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (chunk: string) => {
    stderr += chunk;
  });
  return new Promise<FaceRun>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(stuck);
      clearTimeout(killTimer);
      if (signal !== 'SIGKILL') oddities.push(`writer ended by itself (code ${code}, signal ${signal})`);
      if (oddities.length > 0) reject(new Error(`${face} writer (seed ${seed}, ${describePlan(plan)}): ${oddities.join('; ')}${stderr ? `\nstderr:\n${stderr.slice(0, 4000)}` : ''}`));
      else resolve(run);
    });
  });
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
