// Directory questions the store asks when it opens a path.

import { promises as fsp } from 'node:fs';

/** Names in a directory, or undefined when it does not exist. Throws if the path is not a directory. */
export async function directoryEntries(dirPath: string): Promise<string[] | undefined> {
  try {
    return await fsp.readdir(dirPath);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  }
}
