// The real NBD tools for interop tests: where they are, whether they are installed, and a
// runner that collects their output. nbdsh is Debian's: libnbd's Python module belongs to
// /usr/bin/python3, so nbdsh runs with /usr/bin first on PATH whatever python3 comes first here.

import { execFile } from 'node:child_process';
import fs from 'node:fs';

export const NBDSH = '/usr/bin/nbdsh';
const DEBIAN_PYTHON = '/usr/bin/python3';
const NBD_PYTHON_MODULE = '/usr/lib/python3/dist-packages/nbd.py';
const TOOL_TIMEOUT_MS = 60_000;

export interface Ran {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `file args`; never rejects for a nonzero exit (the test looks at `code`). */
export function run(file: string, args: string[], env: NodeJS.ProcessEnv = {}): Promise<Ran> {
  return new Promise((resolve, reject) => {
    execFile(
      file,
      args,
      { env: { ...process.env, ...env }, timeout: TOOL_TIMEOUT_MS, maxBuffer: 64 * 1024 * 1024 },
      (error, stdout, stderr) => {
        if (error !== null && typeof error.code !== 'number') {
          reject(new Error(`${file} ${args.join(' ')}: ${error.message}\n${stderr}`));
          return;
        }
        resolve({ code: error === null ? 0 : (error.code as number), stdout, stderr });
      },
    );
  });
}

/** The absolute path of `name` on PATH, or undefined. */
export function which(name: string): string | undefined {
  if (name.startsWith('/')) return fs.existsSync(name) ? name : undefined;
  for (const dir of (process.env.PATH ?? '').split(':')) {
    const p = `${dir}/${name}`;
    try {
      fs.accessSync(p, fs.constants.X_OK);
      return p;
    } catch {
      // not here
    }
  }
  return undefined;
}

/** Why a test must skip: the first of `tools` not installed, or undefined when all are. */
export function missing(...tools: string[]): string | undefined {
  for (const t of tools) {
    if (t === 'nbdsh') {
      if (which(NBDSH) === undefined) return `${NBDSH} is not installed (apt-get install libnbd-bin python3-libnbd)`;
      if (!fs.existsSync(DEBIAN_PYTHON)) return `${DEBIAN_PYTHON} (Debian's python3, which nbdsh needs) is not installed`;
      if (!fs.existsSync(NBD_PYTHON_MODULE)) return `${NBD_PYTHON_MODULE} is not installed (apt-get install python3-libnbd)`;
      continue;
    }
    if (which(t) === undefined) return `${t} is not installed (.ci/run installs it: qemu-utils, libnbd-bin, nbdkit, fio)`;
  }
  return undefined;
}

/** Runs an nbdsh script against `uri` under Debian's python3. */
export function nbdsh(uri: string, script: string): Promise<Ran> {
  return run(NBDSH, ['--base-allocation', '-u', uri, '-c', script], { PATH: `/usr/bin:/bin:${process.env.PATH ?? ''}` });
}
