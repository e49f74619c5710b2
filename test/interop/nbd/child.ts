// Runs server-child.js (`atomio serve` / `atomio volume`) as a child process for tests.

import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';

export const CHILD = fileURLToPath(new URL('./server-child.js', import.meta.url));
const START_TIMEOUT_MS = 20_000;

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface ServeChild {
  proc: ChildProcess;
  port: number;
  out: () => string;
  err: () => string;
  exited: Promise<Exit>;
}

function spawnChild(args: string[]): { proc: ChildProcess; out: () => string; err: () => string; exited: Promise<Exit> } {
  const proc = spawn(process.execPath, [CHILD, ...args], {
    env: { ...process.env, ATOMIO_TEST_CHILD: '1' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  proc.stdout!.on('data', (b: Buffer) => (out += b.toString()));
  proc.stderr!.on('data', (b: Buffer) => (err += b.toString()));
  const exited = new Promise<Exit>((resolve) => proc.once('exit', (code, signal) => resolve({ code, signal })));
  return { proc, out: () => out, err: () => err, exited };
}

/** `serve ARGS`; resolves once it has printed all its startup lines (where it listens, where the data is). */
export async function startServe(args: string[]): Promise<ServeChild> {
  const c = spawnChild(['serve', ...args]);
  const started = Date.now();
  for (;;) {
    // The last line serve prints once it is up; the port comes from the line before it.
    const m = /serving NBD on nbds?:\/\/(?:\[[^\]]+\]|[^:/]+):(\d+)\//.exec(c.out());
    if (m !== null && /stops the server\n/.test(c.out())) return { ...c, port: Number(m[1]) };
    const done = await Promise.race([c.exited, new Promise<undefined>((r) => setTimeout(() => r(undefined), 20))]);
    if (done !== undefined) throw new Error(`serve exited (${JSON.stringify(done)}) before listening:\n${c.out()}\n${c.err()}`);
    if (Date.now() - started > START_TIMEOUT_MS) {
      c.proc.kill('SIGKILL');
      throw new Error(`serve did not listen within ${START_TIMEOUT_MS} ms:\n${c.out()}\n${c.err()}`);
    }
  }
}

/** Runs the child to completion. */
export async function runChild(args: string[]): Promise<Exit & { out: string; err: string }> {
  const c = spawnChild(args);
  const exit = await c.exited;
  return { ...exit, out: c.out(), err: c.err() };
}
