// Runs `atomio serve` (through the NBD tests' test-only entry, server-child.js) as a child
// process with memcached on, for tests that need a real process: SIGKILL, signals, tools.

import { spawn, type ChildProcess } from 'node:child_process';
import { CHILD, type Exit } from '../nbd/child.js';

const START_TIMEOUT_MS = 20_000;

export interface MemcachedChild {
  proc: ChildProcess;
  port: number;
  out: () => string;
  err: () => string;
  exited: Promise<Exit>;
}

/** `serve --nbd off ARGS`; resolves once it printed where memcached listens and that it is up. */
export async function startMemcachedServe(args: string[], env: NodeJS.ProcessEnv = {}): Promise<MemcachedChild> {
  const proc = spawn(process.execPath, [CHILD, 'serve', '--nbd', 'off', ...args], {
    env: { ...process.env, ...env, ATOMIO_TEST_CHILD: '1' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  proc.stdout!.on('data', (b: Buffer) => (out += b.toString()));
  proc.stderr!.on('data', (b: Buffer) => (err += b.toString()));
  const exited = new Promise<Exit>((resolve) => proc.once('exit', (code, signal) => resolve({ code, signal })));
  const started = Date.now();
  for (;;) {
    const m = /serving memcached on (?:\[[^\]]+\]|[^:\s]+):(\d+) /.exec(out);
    if (m !== null && /stops the server\n/.test(out)) return { proc, port: Number(m[1]), out: () => out, err: () => err, exited };
    const done = await Promise.race([exited, new Promise<undefined>((r) => setTimeout(() => r(undefined), 20))]);
    if (done !== undefined) throw new Error(`serve exited (${JSON.stringify(done)}) before listening:\n${out}\n${err}`);
    if (Date.now() - started > START_TIMEOUT_MS) {
      proc.kill('SIGKILL');
      throw new Error(`serve did not listen within ${START_TIMEOUT_MS} ms:\n${out}\n${err}`);
    }
  }
}
