// The read turn: reads held during a turn of the event loop run in its check phase, behind
// the store's step that starts the turn's group commit.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ReadTurn } from '../../../src/server/memcached/turn.js';

const checkPhase = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

test('held reads run in the check phase of their turn, in the order they were held', async () => {
  const turn = new ReadTurn();
  const ran: string[] = [];
  const open: boolean[] = [];
  turn.hold(() => {
    ran.push('a');
    open.push(turn.open);
  });
  turn.hold(() => ran.push('b'));
  assert.deepEqual(ran, []);
  assert.equal(turn.size, 2);
  await checkPhase();
  assert.deepEqual(ran, ['a', 'b']);
  assert.deepEqual(open, [true]);
  assert.equal(turn.open, false);
  assert.equal(turn.size, 0);
});

test('a write handed to the store after a read was held puts the read behind the step the write scheduled', async () => {
  const turn = new ReadTurn();
  const ran: string[] = [];
  turn.hold(() => ran.push('read'));
  // What the store does for a commit: its group commit starts in an immediate.
  setImmediate(() => ran.push('group commit'));
  turn.afterStore();
  await checkPhase();
  assert.deepEqual(ran, ['group commit', 'read']);
});

test('a write handed to the store while the held reads run changes nothing', async () => {
  const turn = new ReadTurn();
  const ran: string[] = [];
  turn.hold(() => {
    turn.afterStore();
    ran.push('read');
  });
  turn.afterStore(); // nothing held after this one: no immediate to move
  await checkPhase();
  assert.deepEqual(ran, ['read']);
  await checkPhase();
  assert.deepEqual(ran, ['read']);
});
