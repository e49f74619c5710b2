// A fuzzer for the request parser and the commands: 100 000 requests (by default), well-formed
// ones from a corpus and mutations of them (bits flipped, tokens replaced by edge values,
// bytes cut, spliced, repeated, line endings moved, random garbage), sent over many
// connections that then close their side. Every connection must be answered and closed in
// bounded time, the server must log no internal failure, hold no input afterwards, and still
// answer a well-formed client correctly.
//
//   ATOMIO_SEED        replays a run
//   ATOMIO_FUZZ_CASES  number of requests (default 100000)

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { makeRandom } from '../../../src/media/random.js';
import { deriveSeed, replayHint, testSeed } from '../../helpers/seed.js';
import { McClient, withServer } from './harness.js';

const FILE = 'dist/test/server/memcached/fuzz.test.js';
const CASES = Number(process.env.ATOMIO_FUZZ_CASES ?? 100_000);
const PER_CONNECTION = 500;
const PARALLEL = 16;
const CONNECTION_TIMEOUT_MS = 20_000;

const KEYS = ['a', 'b', 'counter', 'k'.repeat(250), 'YWJj', 'x y', '\x01'];
const EDGE_TOKENS = [
  '', '0', '-1', '1', '4294967295', '4294967296', '2147483647', '2147483648', '-2147483649', '18446744073709551615',
  '18446744073709551616', '99999999999999999999999', 'noreply', 'q', 'v', 'b', 'MA', 'MZ', 'N0', 'T-1', 'C0', 'E1',
  'O'.repeat(40), 'k'.repeat(300), '\x00', '\xff', '2592001', 'x'.repeat(3000),
];

function corpus(): string[] {
  return [
    'set a 1 0 3\r\nabc\r\n',
    'add b 2 100 1\r\nx\r\n',
    'replace a 3 0 2\r\nxy\r\n',
    'append a 0 0 2\r\n12\r\n',
    'prepend a 0 0 2\r\n00\r\n',
    'cas a 0 0 1 5\r\nz\r\n',
    'get a b counter\r\n',
    'gets a\r\n',
    'gat 100 a b\r\n',
    'gats 0 a\r\n',
    'delete a\r\n',
    'delete b noreply\r\n',
    'set counter 0 0 2\r\n10\r\n',
    'incr counter 5\r\n',
    'decr counter 100\r\n',
    'touch a 10\r\n',
    'flush_all 0 noreply\r\n',
    'version\r\n',
    'verbosity 0\r\n',
    'stats\r\n',
    'stats settings\r\n',
    'mn\r\n',
    'mg a v f c t s k O1 q\r\n',
    'mg b N30 v c\r\n',
    'mg a R10 T5 h l u\r\n',
    'ms a 3 F7 T0 c s k\r\nabc\r\n',
    'ms a 2 MA N10\r\nzz\r\n',
    'ms YWJj 1 b I C1\r\nq\r\n',
    'md a q C1\r\n',
    'md b I T30 x\r\n',
    'ma counter N0 J5 D3 v t c\r\n',
    'ma counter MD q\r\n',
    'me a\r\n',
    'me YWJj b\r\n',
  ];
}

function pick<T>(random: () => number, list: readonly T[]): T {
  return list[Math.floor(random() * list.length)]!;
}

function mutate(request: string, random: () => number): Buffer {
  const r = random();
  let s = request;
  if (r < 0.25) {
    // Replace a token with an edge value or a key.
    const tokens = s.split(' ');
    tokens[Math.floor(random() * tokens.length)] = random() < 0.3 ? pick(random, KEYS) : pick(random, EDGE_TOKENS);
    s = tokens.join(' ');
  } else if (r < 0.35) {
    s = s.slice(0, Math.floor(random() * s.length));
  } else if (r < 0.45) {
    const at = Math.floor(random() * s.length);
    s = s.slice(0, at) + pick(random, ['\r\n', '\n', '\r', ' ', '  ', '\x00']) + s.slice(at);
  } else if (r < 0.5) {
    s = s + s;
  } else if (r < 0.55) {
    let g = '';
    const n = Math.floor(random() * 80);
    for (let i = 0; i < n; i++) g += String.fromCharCode(Math.floor(random() * 256));
    return Buffer.from(g, 'latin1');
  }
  const bytes = Buffer.from(s, 'latin1');
  if (random() < 0.3 && bytes.length > 0) {
    const flips = 1 + Math.floor(random() * 3);
    for (let i = 0; i < flips; i++) bytes[Math.floor(random() * bytes.length)]! ^= 1 << Math.floor(random() * 8);
  }
  return bytes;
}

test(`fuzz: ${CASES} random and mutated requests; the server stays up, bounded and correct`, async (t) => {
  const seed = testSeed();
  t.diagnostic(replayHint(seed, FILE));
  const base = corpus();
  await withServer(
    async (h) => {
      const connections = Math.ceil(CASES / PER_CONNECTION);
      let next = 0;
      let closedByServer = 0;
      const worker = async (): Promise<void> => {
        for (;;) {
          const n = next++;
          if (n >= connections) return;
          const random = makeRandom(deriveSeed(seed, n));
          const parts: Buffer[] = [];
          for (let i = 0; i < PER_CONNECTION && n * PER_CONNECTION + i < CASES; i++) {
            const well = pick(random, base);
            parts.push(random() < 0.4 ? Buffer.from(well, 'latin1') : mutate(well, random));
          }
          const c = await McClient.connect(h.port);
          c.socket.on('data', () => undefined);
          // Send in random slices, then close our side: the server answers and closes.
          const all = Buffer.concat(parts);
          for (let at = 0; at < all.length; ) {
            const len = 1 + Math.floor(random() * 8192);
            c.write(all.subarray(at, at + len));
            at += len;
          }
          c.end();
          try {
            await c.untilClosed(CONNECTION_TIMEOUT_MS);
          } catch (error) {
            c.destroy();
            throw new Error(`connection ${n} was not closed: ${(error as Error).message}; ${replayHint(seed, FILE)}`);
          }
          closedByServer++;
        }
      };
      await Promise.all(Array.from({ length: PARALLEL }, worker));
      assert.equal(closedByServer, connections);
      const internal = h.logs.filter((l) => /internal error|failed/i.test(l));
      assert.deepEqual(internal, [], `no internal failure; ${replayHint(seed, FILE)}`);
      for (let i = 0; i < 100 && h.server.connections() > 0; i++) await new Promise((r) => setTimeout(r, 20));
      assert.equal(h.server.stats().inputBytes, 0, 'no input held');
      const c = await h.connect();
      assert.equal(await c.call('set after 5 0 2\r\nok\r\nget after\r\n'), 'STORED\r\nVALUE after 5 2\r\nok\r\nEND\r\n', replayHint(seed, FILE));
    },
    { maxItemBytes: 64 * 1024 },
  );
});
