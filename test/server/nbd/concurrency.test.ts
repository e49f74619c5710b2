// Several connections and many requests in flight: 4 connections writing neighbouring ranges
// whose edges share sectors, verified from a fifth; memory per connection staying bounded
// when a client floods writes or stops reading replies.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MAX_IN_FLIGHT_BYTES } from '../../../src/server/nbd/index.js';
import { INPUT_HIGH_WATER_BYTES } from '../../../src/server/nbd/connection.js';
import { CMD, NbdClient } from './client.js';
import { KiB, MiB, pattern, withServer } from './harness.js';

/** Waits until the server's count of requests in hand stops moving (it has stalled on a full socket). */
async function untilStalled(server: { stats(): { requests: number } }): Promise<void> {
  let last = -1;
  for (let i = 0; i < 100; i++) {
    await new Promise((r) => setTimeout(r, 20));
    const requests = server.stats().requests;
    if (requests === last && requests > 0) return;
    last = requests;
  }
}

test('4 connections write neighbouring ranges (edges inside shared sectors) concurrently; a 5th reads every byte back', async () => {
  await withServer(
    async ({ port }) => {
      const clients = await Promise.all(Array.from({ length: 4 }, () => NbdClient.open(port)));
      // Range k is [k * 1 MiB + 333, (k + 1) * 1 MiB + 333): neighbours meet inside a sector.
      const piece = 16 * KiB + 7;
      await Promise.all(
        clients.map(async (c, k) => {
          const start = k * MiB + 333;
          const writes: Promise<number>[] = [];
          for (let at = 0; at < MiB; at += piece) {
            const len = Math.min(piece, MiB - at);
            writes.push(c.write(start + at, pattern(k * 1000 + at, len)));
            if (writes.length >= 16) assert.equal(await writes.shift()!, 0);
          }
          for (const w of writes) assert.equal(await w, 0);
        }),
      );
      const reader = await NbdClient.open(port);
      for (let k = 0; k < 4; k++) {
        const got = (await reader.read(k * MiB + 333, MiB)).data!;
        for (let at = 0; at < MiB; at += piece) {
          const len = Math.min(piece, MiB - at);
          assert.ok(got.subarray(at, at + len).equals(pattern(k * 1000 + at, len)), `connection ${k}, bytes at ${at}`);
        }
      }
      assert.ok((await reader.read(0, 333)).data!.every((b) => b === 0), 'nothing before the first range');
      await Promise.all([...clients, reader].map((c) => c.disconnect()));
    },
    { defaultSize: 8 * MiB },
  );
});

test('a flood of pipelined writes is read no faster than it is committed: in-flight bytes stay under the bound', async () => {
  await withServer(
    async ({ port, server }) => {
      const c = await NbdClient.open(port);
      const n = 48;
      const size = 2 * MiB;
      const data = pattern(1, size);
      // All sent at once, without waiting for any reply.
      const writes = Array.from({ length: n }, (_, i) => c.write((i % 8) * size, data));
      const results = await Promise.all(writes);
      assert.ok(results.every((e) => e === 0));
      const peak = server.stats().peakConnectionBytes;
      assert.ok(peak <= MAX_IN_FLIGHT_BYTES, `peak ${peak} within ${MAX_IN_FLIGHT_BYTES}`);
      assert.ok(peak >= size, 'several writes were in flight together');
      await c.disconnect();
    },
    { defaultSize: 32 * MiB, capacity: 128 * MiB },
  );
});

test('a client that stops reading replies stops being read from; when it reads again every reply arrives', async () => {
  await withServer(
    async ({ port, server }) => {
      const c = await NbdClient.open(port, { structured: false });
      await c.write(0, pattern(2, 8 * MiB));
      c.raw.socket.pause();
      const n = 40;
      const reads = Array.from({ length: n }, () => c.request(CMD.READ, 0, 0, 8 * MiB));
      // Let the server fill the socket and stall.
      await untilStalled(server);
      const s = server.stats();
      assert.ok(s.bytes <= MAX_IN_FLIGHT_BYTES, `${s.bytes} bytes held, bound ${MAX_IN_FLIGHT_BYTES}`);
      assert.ok(s.inputBytes <= INPUT_HIGH_WATER_BYTES + 64 * KiB, `${s.inputBytes} bytes of unparsed input held`);
      assert.ok(s.requests < n, `the server stopped taking requests (${s.requests} in flight)`);
      c.raw.socket.resume();
      const replies = await Promise.all(reads);
      const expected = pattern(2, 8 * MiB);
      assert.ok(replies.every((r) => r.error === 0 && r.data!.equals(expected)));
      await c.disconnect();
    },
    { defaultSize: 16 * MiB, capacity: 128 * MiB },
  );
});

test('block status replies count against the in-flight bound: a client that does not read them stops being read from', async () => {
  await withServer(
    async ({ port, server, store }) => {
      // Every other sector written over 32 MiB: a status reply of 64 Ki descriptors (512 KiB).
      const sector = Buffer.alloc(512, 1);
      for (let batch = 0; batch < 32; batch++) {
        const ops = Array.from({ length: 1024 }, (_, i) => ({ write: 2 * (batch * 1024 + i), data: sector }));
        await store.block.atomic(ops);
      }
      const c = await NbdClient.open(port);
      const first = await c.blockStatus(0, 32 * MiB);
      assert.equal(first.extents.length, 64 * 1024, 'the map is as fragmented as meant');
      c.raw.socket.pause();
      // 120 such replies are 60 MiB, more than MAX_IN_FLIGHT_BYTES.
      const n = 120;
      const replies = Array.from({ length: n }, () => c.request(CMD.BLOCK_STATUS, 0, 0, 32 * MiB));
      await untilStalled(server);
      const s = server.stats();
      const replyBytes = 64 * 1024 * 8;
      assert.ok(s.bytes >= s.requests * replyBytes, `the ${s.requests} replies held are counted (${s.bytes} bytes reserved)`);
      assert.ok(s.bytes <= MAX_IN_FLIGHT_BYTES, `${s.bytes} bytes held, bound ${MAX_IN_FLIGHT_BYTES}`);
      assert.ok(s.requests < n, `the server stopped taking requests (${s.requests} in flight)`);
      c.raw.socket.resume();
      assert.ok((await Promise.all(replies)).every((r) => r.error === 0), 'every reply arrives once the client reads');
      await c.disconnect();
    },
    { defaultSize: 32 * MiB, capacity: 128 * MiB, durability: 'none' },
  );
});
