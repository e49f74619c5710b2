// Seeds for randomized tests: ATOMIO_SEED replays a run, otherwise a fresh seed is drawn.
// Every randomized test prints its seed (t.diagnostic) and puts it in assertion messages.

import { randomSeed } from '../../src/media/random.js';

/** The seed for this run: ATOMIO_SEED (decimal or 0x-hex) when set, else a random one. */
export function testSeed(): number {
  const given = process.env.ATOMIO_SEED;
  if (given === undefined || given.trim() === '') return randomSeed();
  const value = Number(given.trim());
  if (!Number.isSafeInteger(value) || value < 0) throw new Error(`ATOMIO_SEED must be a non-negative integer, got ${given}`);
  return value >>> 0;
}

/** A distinct seed for a sub-run derived from the test seed (so one seed replays every part). */
export function deriveSeed(seed: number, salt: number): number {
  let x = (seed ^ Math.imul(salt + 1, 0x9e3779b1)) >>> 0;
  x = Math.imul(x ^ (x >>> 16), 0x85ebca6b) >>> 0;
  x = Math.imul(x ^ (x >>> 13), 0xc2b2ae35) >>> 0;
  return (x ^ (x >>> 16)) >>> 0;
}

/** The line to print so that a failure can be replayed. */
export function replayHint(seed: number, file: string): string {
  return `seed ${seed} (replay: ATOMIO_SEED=${seed} node --test ${file})`;
}
