// The libmemcached tools for interop tests: Debian names them memccp, memccat … (upstream:
// memcp, memcat …); whichever is installed is used. Without them the tests skip and say so.

import { which } from '../nbd/tools.js';

export { run } from '../nbd/tools.js';

/** The installed binary for a libmemcached tool named upstream as `name` (memcp, memcat …), or undefined. */
export function tool(name: string): string | undefined {
  return which(name.replace(/^mem/, 'memc')) ?? which(name);
}

/** Why a test must skip: the first of `names` not installed, or undefined when all are. */
export function missingTools(...names: string[]): string | undefined {
  for (const n of names) {
    if (tool(n) === undefined) return `${n} (${n.replace(/^mem/, 'memc')} on Debian) is not installed (apt-get install libmemcached-tools; .ci/run installs it)`;
  }
  return undefined;
}
