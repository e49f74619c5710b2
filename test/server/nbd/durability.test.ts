// FLUSH and FUA against a medium that loses unflushed writes in a crash (FaultMedia):
// with durability 'none' a write survives only if a FUA or a FLUSH acknowledged after it;
// with durability 'full' every acknowledged write survives.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startNbdServer } from '../../../src/server/nbd/index.js';
import { Volumes } from '../../../src/server/volumes.js';
import { Flusher } from '../../../src/server/nbd/flush.js';
import { FaultStore } from '../../helpers/store.js';
import { CMD_FLAG, NbdClient } from './client.js';
import { MiB, pattern } from './harness.js';

async function crashAfter(
  durability: 'full' | 'none',
  serverDurability: 'full' | 'none' | undefined,
  body: (c: NbdClient) => Promise<void>,
): Promise<(offset: number, length: number) => Promise<Buffer>> {
  const fs = await FaultStore.create({ capacity: 64 * MiB, segmentSize: MiB, durability, flushIntervalMs: 3_600_000 });
  const volumes = await Volumes.load(fs.store, fs.store.directory, { defaultSize: 8 * MiB });
  const server = await startNbdServer(fs.store, volumes, { port: 0, ...(serverDurability === undefined ? {} : { durability: serverDurability }) });
  const c = await NbdClient.open(server.address.port);
  await body(c);
  await c.disconnect();
  await server.close();
  await fs.crashAndReopen('lose-all');
  return async (offset, length) => {
    try {
      return await fs.store.block.read(offset / 512, length / 512);
    } finally {
      await fs.dispose();
    }
  };
}

// 'full' too: a server told the wrong durability must not skip the flushes the store needs.
for (const serverDurability of ['none', undefined, 'full'] as const) {
  test(`durability 'none' (server told: ${serverDurability ?? 'nothing'}): FUA and FLUSH make writes survive a crash; a write after the last flush is lost`, async () => {
    const read = await crashAfter('none', serverDurability, async (c) => {
      assert.equal(await c.write(0, pattern(1, 4096)), 0, 'A: plain');
      assert.equal(await c.write(4096, pattern(2, 4096), CMD_FLAG.FUA), 0, 'B: FUA (covers A too)');
      assert.equal(await c.write(8192, pattern(3, 4096)), 0, 'C: plain');
      assert.equal(await c.flush(), 0, 'FLUSH covers C');
      assert.equal(await c.write(12288, pattern(4, 4096)), 0, 'D: plain, never flushed');
    });
    const got = await read(0, 16384);
    assert.ok(got.subarray(0, 4096).equals(pattern(1, 4096)), 'A survived (flushed by B’s FUA)');
    assert.ok(got.subarray(4096, 8192).equals(pattern(2, 4096)), 'B survived');
    assert.ok(got.subarray(8192, 12288).equals(pattern(3, 4096)), 'C survived');
    assert.ok(got.subarray(12288).every((b) => b === 0), 'D was lost: the crash model drops unflushed writes');
  });
}

test("durability 'full': every acknowledged write survives a crash without FLUSH", async () => {
  const read = await crashAfter('full', 'full', async (c) => {
    for (let i = 0; i < 8; i++) assert.equal(await c.write(i * 4096 + 100, pattern(i, 4096)), 0);
  });
  const got = await read(0, 9 * 4096);
  for (let i = 0; i < 8; i++) assert.ok(got.subarray(i * 4096 + 100, i * 4096 + 4196).equals(pattern(i, 4096)), `write ${i}`);
});

test('Flusher: shares one store flush among callers that arrive while one runs, and starts a new one after', async () => {
  let flushes = 0;
  let release: (() => void) | undefined;
  const fakeStore = {
    durability: 'none',
    flush: () =>
      new Promise<void>((resolve) => {
        flushes++;
        release = resolve;
      }),
  };
  const f = new Flusher(fakeStore as unknown as ConstructorParameters<typeof Flusher>[0], undefined);
  assert.equal(f.needed, true);
  const first = f.flush();
  const second = f.flush();
  const third = f.flush();
  assert.equal(second, third, 'callers during a flush share the next one');
  assert.equal(flushes, 1);
  release!();
  await first;
  await new Promise((r) => setImmediate(r));
  assert.equal(flushes, 2, 'the callers that came during the first flush got a flush of their own');
  release!();
  await Promise.all([second, third]);
  const full = new Flusher({ durability: 'full' } as unknown as ConstructorParameters<typeof Flusher>[0], undefined);
  assert.equal(full.needed, false, "durability 'full' needs no flush");
});
