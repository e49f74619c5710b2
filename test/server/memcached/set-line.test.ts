// The set-line fast path (parseSetLine reads "set <key> <flags> <exptime> <bytes>[ noreply]"
// straight from the input bytes) against the general parser: over every combination of
// edge-case fields, a line the fast path takes must become exactly the request parseCommand
// makes of it (data length, what is done with the data, the store request, every reply), and
// the common lines must take it.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Cache, StoreOutcome, StoreRequest } from '../../../src/server/memcached/cache.js';
import type { Request, ServerState } from '../../../src/server/memcached/request.js';
import { parseCommand, parseSetLine } from '../../../src/server/memcached/text.js';

const NOW_MS = 1_700_000_000_000;

/** A cache that records what it is asked to store, and answers `status`. */
function fakeCache(status: StoreOutcome['status']): { cache: Cache; stored: StoreRequest[]; deleted: Buffer[] } {
  const stored: StoreRequest[] = [];
  const deleted: Buffer[] = [];
  const fake = {
    counters: { cmd_set: 0, store_too_large: 0 },
    maxItemBytes: 1024 * 1024,
    now: () => NOW_MS,
    store: (r: StoreRequest) => {
      stored.push({ ...r, key: Buffer.from(r.key), data: Buffer.from(r.data) });
      return Promise.resolve({ status, version: 7, size: r.data.length });
    },
    pool: { delete: (key: Buffer) => (deleted.push(Buffer.from(key)), Promise.resolve(1)) },
  };
  return { cache: fake as unknown as Cache, stored, deleted };
}

function stateOf(cache: Cache): ServerState {
  return { cache, verbosity: 0 } as unknown as ServerState;
}

/** What a request does: its shape, and for each store outcome its reply and store calls. */
async function behaviour(make: (cache: Cache) => Request | undefined, dataBytes: number): Promise<unknown> {
  const runs: unknown[] = [];
  let shape: unknown;
  for (const status of ['STORED', 'NOT_STORED'] as const) {
    const { cache, stored, deleted } = fakeCache(status);
    const request = make(cache);
    if (request === undefined) return undefined;
    shape = { dataBytes: request.dataBytes, swallow: request.swallow, exclusive: request.exclusive, close: request.close, badChunk: request.badChunk?.toString('latin1') ?? null, sets: (cache.counters as Record<string, number>).cmd_set };
    const data = request.dataBytes >= 0 && !request.swallow ? Buffer.alloc(Math.min(dataBytes, 64), 'v') : undefined;
    const reply = await request.run(data, { write: () => undefined, full: () => false, drained: () => Promise.resolve() });
    runs.push({ reply: reply?.toString('latin1') ?? null, stored, deleted: deleted.map((k) => k.toString('latin1')) });
  }
  return { shape, runs };
}

const KEYS = ['k', 'key:1', 'k'.repeat(250), 'k'.repeat(251), 'a\tb', 'x\x7fy', '\xff\xfe'];
const FLAGS = ['0', '7', '4294967295', '4294967296', '00000000001', '000000000001', '-1', '1a', '+1'];
const EXPTIMES = ['0', '60', '-1', '-0', '2592000', '2592001', '2147483647', '2147483648', '-2147483648', '-2147483649', '0x10', '-'];
const BYTES = ['0', '5', '100', '1048576', '1048577', '2147483647', '2147483648', '-0', '-1', '01', '99999999999'];
const TAILS = ['', ' noreply', ' noreplyx', ' noreply ', ' x', ' ', '  noreply'];

test('set-line fast path: every line it takes becomes the request the general parser makes', async () => {
  let taken = 0;
  let lines = 0;
  for (const key of KEYS) {
    for (const flags of FLAGS) {
      for (const exptime of EXPTIMES) {
        for (const bytes of BYTES) {
          for (const tail of TAILS) {
            for (const sep of [' ', '  ']) {
              if (sep === '  ' && (flags !== '0' || tail !== '')) continue; // doubled spaces: a sample is enough
              const text = ['set', key, flags, exptime, bytes].join(sep) + tail;
              const input = Buffer.from(`${text}\r\n`, 'latin1');
              lines++;
              const fast = await behaviour((cache) => parseSetLine(input, 0, input.length - 2, cache), Number(bytes));
              if (fast === undefined) continue;
              taken++;
              const general = await behaviour((cache) => parseCommand(text, stateOf(cache)), Number(bytes));
              assert.deepEqual(fast, general, `line ${JSON.stringify(text)}`);
            }
          }
        }
      }
    }
  }
  assert.ok(taken >= 1000, `the fast path took ${taken} of ${lines} lines`);
});

test('set-line fast path: the common lines take it', () => {
  const { cache } = fakeCache('STORED');
  for (const text of ['set key:1 0 0 100', 'set k 4294967295 -1 0 noreply', 'set k 1 2592001 5', `set ${'k'.repeat(250)} 0 0 1`]) {
    const input = Buffer.from(`xx${text}\r\n`, 'latin1');
    assert.notEqual(parseSetLine(input, 2, input.length - 2, cache), undefined, text);
  }
  for (const text of ['set k 0 0', 'sets k 0 0 1', 'add k 0 0 1', 'set k 0 0 1 2', 'set  k 0 0 1']) {
    const input = Buffer.from(`${text}\r\n`, 'latin1');
    assert.equal(parseSetLine(input, 0, input.length - 2, cache), undefined, text);
  }
});
