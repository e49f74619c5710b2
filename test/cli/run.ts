// Runs the compiled `atomio` command as a child process, as a user would, and holds the
// small helpers the CLI tests share.

import { spawn } from 'node:child_process';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** dist/test/cli/run.js → dist/src/cli/main.js */
export const CLI = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `atomio ...args` to completion (stdin closed, stdout/stderr piped: not a terminal). */
export function runCli(args: string[], options: { cwd?: string } = {}): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], {
      cwd: options.cwd ?? os.tmpdir(),
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, ATOMIO_DEBUG: '' },
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

/** Runs `body` with a fresh empty directory (a real path), removed afterwards whatever happened. */
export async function withTempDir<T>(body: (dir: string) => Promise<T>): Promise<T> {
  const dir = await fsp.realpath(await fsp.mkdtemp(path.join(os.tmpdir(), 'atomio-cli-')));
  try {
    return await body(dir);
  } finally {
    await fsp.rm(dir, { recursive: true, force: true });
  }
}

/** A line for failure messages: what the command printed. */
export function transcript(r: CliResult): string {
  return `exit ${r.code}\n--- stdout\n${r.stdout}--- stderr\n${r.stderr}`;
}
