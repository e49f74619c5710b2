// Torn writes: a power loss tears the writes still in the disk's cache at 512-byte sector
// granularity (some sectors land, some do not). After each crash every acknowledged batch is
// there and every other batch is all or nothing.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { crashRounds } from '../helpers/crash-rounds.js';
import { testSeed } from '../helpers/seed.js';

const SEED = testSeed();

test('torn crashes: acknowledged batches survive whole, unacknowledged ones are all-or-nothing, across 60 crash/reopen rounds', async (t) => {
  t.diagnostic(`seed ${SEED} (replay: ATOMIO_SEED=${SEED})`);
  const s = await crashRounds(t, { mode: 'torn', seed: SEED, salt: 1, rounds: 60 });
  assert.ok(s.acknowledged > 0, `some batches were acknowledged before a crash [seed ${SEED}]`);
  assert.ok(s.tornWrites > 0, `the crashes tore some writes [seed ${SEED}]`);
  assert.ok(s.unackedDropped > 0, `some unacknowledged batches were lost whole [seed ${SEED}]`);
});

test('torn crashes with many small segments and frequent checkpoints: the same holds while the cleaner and checkpoints run', async (t) => {
  t.diagnostic(`seed ${SEED} (replay: ATOMIO_SEED=${SEED})`);
  const s = await crashRounds(t, {
    mode: 'torn',
    seed: SEED,
    salt: 2,
    rounds: 40,
    capacity: 1024 * 1024,
    segmentSize: 64 * 1024,
    area: 1024,
    checkpointIntervalBytes: 64 * 1024,
  });
  assert.ok(s.checkpoints > 0 && s.segmentsCleaned > 0, `checkpoints (${s.checkpoints}) and cleaning (${s.segmentsCleaned}) happened [seed ${SEED}]`);
});
