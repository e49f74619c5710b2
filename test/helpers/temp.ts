// Temporary directories for tests: each test makes its own and removes it when done.

import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';

/** Runs `body` with a fresh empty directory, then removes the directory whatever happened. */
export async function withTempDir<T>(body: (dir: string) => Promise<T>, prefix = 'atomio-test-'): Promise<T> {
  const dirs = new TempDirs(prefix);
  try {
    return await body(await dirs.make());
  } finally {
    await dirs.removeAll();
  }
}

/** Hands out fresh directories (e.g. one per reopen after a simulated crash) and removes them all at the end. */
export class TempDirs {
  private readonly made: string[] = [];
  constructor(private readonly prefix = 'atomio-test-') {}

  async make(): Promise<string> {
    const dir = await fsp.realpath(await fsp.mkdtemp(path.join(os.tmpdir(), this.prefix)));
    this.made.push(dir);
    return dir;
  }

  /** A path inside a fresh directory that does not exist yet (for open() to create). */
  async fresh(name = 'store'): Promise<string> {
    return path.join(await this.make(), name);
  }

  async removeAll(): Promise<void> {
    await Promise.all(this.made.splice(0).map((dir) => fsp.rm(dir, { recursive: true, force: true })));
  }
}
