// A tiny seeded PRNG (mulberry32) so that a failing simulated run replays exactly from its
// seed. Not for cryptography. Same seed, same sequence, on every platform and Node version:
// only 32-bit integer arithmetic is used.

/** Returns a generator of floats in [0, 1) fully determined by `seed` (taken modulo 2^32). */
export function makeRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A fresh seed for runs that were not given one; print it so the run can be replayed. */
export function randomSeed(): number {
  return Math.floor(Math.random() * 4294967296) >>> 0;
}
