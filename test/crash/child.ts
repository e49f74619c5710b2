// A crash-test writer as a child process, and how it dies. Shared by the block, kv, stream
// and region SIGKILL tests; each writer (writer.ts, kv-writer.ts, face-writer.ts) speaks
// the same line protocol around its own op lines:
//   SEED <seed>         OPENING          OPENED <json>        STATS <json>
//   TEAR <offset> <length> <kept> <how>  FAIL <message>
// The writer is spawned with --wait-go: it loads, then waits for a line on stdin, so that
// its start-up overlaps the round before. start() lets it go and kills it as planned.

import { spawn } from 'node:child_process';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { TestContext } from 'node:test';
import type { RecoveryReport } from '../../src/index.js';
import type { Rng } from './common.js';

/** A writer still alive this long after it was let go is stuck. */
const STUCK_MS = 20_000;

/**
 * How a writer dies. 'parent': the test SIGKILLs it `delayMs` after its first
 * acknowledgement (or its OPENING line). 'tear': it SIGKILLs itself inside the `write`th
 * write to its data file from `delayMs` after its first acknowledgement (or after it starts
 * to open), leaving a page-aligned prefix of that write (see tearing.ts).
 */
export type KillPlan =
  | { by: 'parent'; after: 'ack' | 'opening'; delayMs: number }
  | { by: 'tear'; from: 'ack' | 'open'; delayMs: number; write: number };

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

/** What every writer reports; each test extends it with what its op lines say. */
export interface ChildRun {
  label: string;
  seed: number;
  /** The OPENED line's JSON (each writer's own shape). */
  opened: unknown;
  /** The last STATS line's JSON. */
  stats: Record<string, number> | undefined;
  /** ms from the trigger line to the parent's kill, as it happened. */
  killedAfterMs: number | undefined;
  /** The TEAR line of a writer that killed itself in a write. */
  tear: string | undefined;
  /** Date.now() once the process is gone: nothing was admitted after. */
  deadAt: number;
  /** ms from being let go to its OPENED line, its first acknowledgement, its death. */
  ms: { opened?: number; firstAck?: number; dead?: number };
}

export function newChildRun(label: string, seed: number): ChildRun {
  return { label, seed, opened: undefined, stats: undefined, killedAfterMs: undefined, tear: undefined, deadAt: 0, ms: {} };
}

export interface LineContext {
  /** The line acknowledges an op: the first one arms a parent kill planned after it. */
  acked(): void;
  /** Something the writer said is wrong: the run fails with it. */
  oddity(text: string): void;
}

/**
 * A writer's own lines (the common ones are handled before): `words` is the line split on
 * spaces. An unknown line should be reported with ctx.oddity.
 */
export type LineHandler = (words: string[], line: string, ctx: LineContext) => void;

export interface KillableChild<R> {
  /** Lets the writer open the store; resolves once it is dead, with what it reported. */
  start(): Promise<R>;
  /** Kills a writer that was never started. */
  abort(): void;
}

export function tearArgs(plan: KillPlan): string[] {
  return plan.by === 'tear' ? ['--tear-from', plan.from, '--tear-after-ms', String(plan.delayMs), '--tear-write', String(plan.write)] : [];
}

/** Spawns `script` with `args` (and --wait-go and the plan's tear flags); see KillableChild. */
export function spawnWriter<R extends ChildRun>(script: string, args: string[], plan: KillPlan, run: R, onLine: LineHandler): KillableChild<R> {
  const child = spawn(process.execPath, [script, '--wait-go', ...args, ...tearArgs(plan)], { stdio: ['pipe', 'pipe', 'pipe'] });
  let started = 0;
  const oddities: string[] = [];
  let stderr = '';
  let pending = '';
  let killed = false;
  let armedAt = 0;
  let killTimer: NodeJS.Timeout | undefined;
  let stuck: NodeJS.Timeout | undefined;
  const kill = (): void => {
    if (killed) return;
    killed = true;
    run.killedAfterMs = performance.now() - armedAt;
    child.kill('SIGKILL');
  };
  const arm = (): void => {
    if (armedAt !== 0 || plan.by !== 'parent') return;
    armedAt = performance.now();
    if (plan.delayMs <= 0) kill();
    else killTimer = setTimeout(kill, plan.delayMs);
  };
  const since = (): number => Math.round(performance.now() - started);
  const ctx: LineContext = {
    acked() {
      run.ms.firstAck ??= since();
      if (plan.by === 'parent' && plan.after === 'ack') arm();
    },
    oddity(text) {
      oddities.push(text);
    },
  };

  const handle = (line: string): void => {
    const words = line.split(' ');
    const rest = line.slice(words[0]!.length + 1);
    switch (words[0]) {
      case 'SEED':
        if (Number(rest) !== run.seed) oddities.push(`writer says seed ${rest}, was given ${run.seed}`);
        break;
      case 'OPENING':
        if (plan.by === 'parent' && plan.after === 'opening') arm();
        break;
      case 'OPENED':
        run.opened = JSON.parse(rest) as unknown;
        run.ms.opened = since();
        break;
      case 'STATS':
        run.stats = JSON.parse(rest) as Record<string, number>;
        break;
      case 'TEAR':
        run.tear = rest;
        break;
      case 'FAIL':
        oddities.push(`writer failed: ${line}`);
        break;
      default:
        onLine(words, line, ctx);
    }
  };

  child.stdout.setEncoding('utf8');
  child.stdout.on('data', (chunk: string) => {
    pending += chunk;
    for (let nl = pending.indexOf('\n'); nl >= 0; nl = pending.indexOf('\n')) {
      const line = pending.slice(0, nl);
      pending = pending.slice(nl + 1);
      try {
        handle(line);
      } catch (error) {
        oddities.push(`cannot parse ${JSON.stringify(line.slice(0, 200))}: ${String(error)}`);
      }
    }
  });
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (chunk: string) => {
    stderr += chunk;
  });
  // 'close': the process is gone (so its pid no longer holds the store lock) and its stdout
  // is drained. A last line cut by the kill stays in `pending` and is ignored.
  const dead = new Promise<R>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(stuck);
      clearTimeout(killTimer);
      run.deadAt = Date.now();
      run.ms.dead = since();
      if (signal !== 'SIGKILL' || (plan.by === 'parent' && !killed)) oddities.push(`writer ended by itself (code ${code}, signal ${signal})`);
      if (oddities.length > 0) {
        reject(new Error(`${run.label} (writer seed ${run.seed}, ${describePlan(plan)}): ${oddities.join('; ')}${stderr ? `\nstderr:\n${stderr.slice(0, 4000)}` : ''}`));
      } else {
        resolve(run);
      }
    });
  });
  // Never an unhandled rejection for a writer that is aborted before it is started.
  dead.catch(() => undefined);
  return {
    start() {
      started = performance.now();
      stuck = setTimeout(() => {
        oddities.push(`still alive after ${STUCK_MS} ms (plan: ${describePlan(plan)})`);
        kill();
      }, STUCK_MS);
      child.stdin.write('GO\n');
      return dead;
    },
    abort() {
      if (child.exitCode === null && child.signalCode === null) {
        killed = true;
        child.kill('SIGKILL');
      }
    },
  };
}

/**
 * Runs writers one after the other, each let go once the one before is dead and `after` has
 * dealt with it; the next one is spawned (and loads) while the current one runs.
 */
export async function runInTurn<S, R>(specs: S[], spawnOne: (spec: S) => KillableChild<R>, after: (index: number, run: R) => Promise<void>): Promise<void> {
  let next: KillableChild<R> | undefined = specs.length > 0 ? spawnOne(specs[0]!) : undefined;
  try {
    for (let i = 0; i < specs.length; i++) {
      const running = next!.start();
      next = i + 1 < specs.length ? spawnOne(specs[i + 1]!) : undefined;
      await after(i, await running);
    }
  } finally {
    next?.abort();
  }
}

/** An integer >= 1 from the environment variable `name`, or `fallback` when it is unset. */
export function positiveInt(name: string, fallback: number): number {
  const text = process.env[name];
  if (text === undefined || text.trim() === '') return fallback;
  const n = Number(text);
  if (!Number.isSafeInteger(n) || n < 1) throw new Error(`${name} must be an integer >= 1, got ${text}`);
  return n;
}

/**
 * Runs `body` with a fresh store directory, removed at the end unless a check failed (the
 * test then says where it is) or ATOMIO_CRASH_KEEP is set.
 */
export async function withStoreDir(t: TestContext, prefix: string, body: (dir: string) => Promise<void>): Promise<void> {
  const root = await fsp.mkdtemp(path.join(os.tmpdir(), prefix));
  const dir = path.join(root, 'store');
  try {
    await body(dir);
  } catch (error) {
    t.diagnostic(`store kept for inspection: ${dir}`);
    throw error;
  }
  if (process.env.ATOMIO_CRASH_KEEP) t.diagnostic(`store kept: ${dir}`);
  else await fsp.rm(root, { recursive: true, force: true });
}

export function describeRecovery(r: RecoveryReport | undefined): string {
  if (r === undefined) return 'no recovery report';
  return `recovery replayed ${r.recordsReplayed} records (${Math.round(r.bytesReplayed / 1024)} KiB) after checkpoint ${r.checkpointSeq}, dropped ${r.recordsDropped}`;
}
