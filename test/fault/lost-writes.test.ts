// Lost writes: a power loss drops every write not yet flushed ('lose-all'). Writes are issued
// without waiting; after each crash every acknowledged one is there and the rest are all or
// nothing. 'keep-all' (the cache reached the disk) must give the same guarantees.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { crashRounds } from '../helpers/crash-rounds.js';
import { testSeed } from '../helpers/seed.js';

const SEED = testSeed();

test('lose-all crashes: every acknowledged batch survives, unflushed ones vanish whole, across 50 crash/reopen rounds', async (t) => {
  t.diagnostic(`seed ${SEED} (replay: ATOMIO_SEED=${SEED})`);
  const s = await crashRounds(t, { mode: 'lose-all', seed: SEED, salt: 3, rounds: 50 });
  assert.ok(s.acknowledged > 0, `some batches were acknowledged before a crash [seed ${SEED}]`);
  assert.ok(s.droppedWrites > 0, `the crashes dropped pending writes [seed ${SEED}]`);
  assert.equal(s.tornWrites, 0);
});

test('keep-all crashes: every acknowledged batch survives and unacknowledged ones are all-or-nothing, across 30 rounds', async (t) => {
  t.diagnostic(`seed ${SEED} (replay: ATOMIO_SEED=${SEED})`);
  const s = await crashRounds(t, { mode: 'keep-all', seed: SEED, salt: 4, rounds: 30 });
  assert.ok(s.acknowledged > 0, `some batches were acknowledged before a crash [seed ${SEED}]`);
});
