// Torn crashes beyond the default geometry: 4 KiB sectors (a group commit spans eight media
// sectors that tear apart), durability 'none' (commits resolve before their flush) and TTL
// writes whose data expires, and is dropped by the cleaner, between crashes.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { crashRounds } from '../helpers/crash-rounds.js';
import { testSeed } from '../helpers/seed.js';

const SEED = testSeed();
const ROUNDS = Number(process.env.ATOMIO_TORN_ROUNDS ?? 30);

test('torn crashes on a 4096-byte-sector store: acknowledged batches survive whole, the rest all or nothing', async (t) => {
  t.diagnostic(`seed ${SEED} (replay: ATOMIO_SEED=${SEED})`);
  const s = await crashRounds(t, { mode: 'torn', seed: SEED, salt: 11, rounds: ROUNDS, sectorSize: 4096, rangeSectors: 6, area: 192, capacity: 4 * 1024 * 1024, segmentSize: 128 * 1024 });
  assert.ok(s.acknowledged > 0 && s.tornWrites > 0, `batches were acknowledged and writes torn [seed ${SEED}]`);
});

test("torn crashes with durability 'none': batches flushed before the crash survive, none is half there", async (t) => {
  t.diagnostic(`seed ${SEED} (replay: ATOMIO_SEED=${SEED})`);
  const s = await crashRounds(t, { mode: 'torn', seed: SEED, salt: 12, rounds: ROUNDS, durability: 'none', capacity: 1024 * 1024, area: 1024, checkpointIntervalBytes: 64 * 1024 });
  assert.ok(s.acknowledged > 0 && s.tornWrites > 0, `batches were flushed and writes torn [seed ${SEED}]`);
});

test('torn crashes with TTL writes expiring between them, while the cleaner and checkpoints run', async (t) => {
  t.diagnostic(`seed ${SEED} (replay: ATOMIO_SEED=${SEED})`);
  const s = await crashRounds(t, { mode: 'torn', seed: SEED, salt: 13, rounds: ROUNDS, ttl: true, capacity: 1024 * 1024, area: 1024, checkpointIntervalBytes: 64 * 1024 });
  assert.ok(s.acknowledged > 0 && s.segmentsCleaned > 0, `batches were acknowledged and segments cleaned [seed ${SEED}]`);
});
