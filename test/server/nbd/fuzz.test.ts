// A fuzzer for the handshake and request parsers: over 10 000 connections each send random
// or mutated bytes (well-formed handshakes and request streams with bits flipped, fields
// replaced by edge values, bytes cut or spliced), then close their side. Every connection
// must be closed by the server in bounded time, the server must log no internal failure, and
// afterwards a well-formed client must still be served.
//
//   ATOMIO_SEED        replays a run
//   ATOMIO_FUZZ_CASES  number of cases (default 10000)

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { makeRandom } from '../../../src/media/random.js';
import { RawSocket, CMD, CMD_FLAG, INFO, NbdClient, OPT, infoData, metaData, optionBytes, requestBytes, u32 } from './client.js';
import { MiB, pattern, withServer } from './harness.js';
import { deriveSeed, replayHint, testSeed } from '../../helpers/seed.js';

const FILE = 'dist/test/server/nbd/fuzz.test.js';
const CASES = Number(process.env.ATOMIO_FUZZ_CASES ?? 10_000);
const PARALLEL = 64;
const CASE_TIMEOUT_MS = 5_000;
const EXPORT_BYTES = MiB;

const INTERESTING_U32 = [0, 1, 2, 3, 7, 8, 9, 10, 11, 0x7fff, 0x8000, 0xffff, 4095, 4096, 4097, 512, EXPORT_BYTES - 1, EXPORT_BYTES, EXPORT_BYTES + 1, 32 * MiB, 32 * MiB + 1, 64 * 1024 + 1, 0x7fffffff, 0x80000000, 0xfffffffe, 0xffffffff];

/** Well-formed handshakes: client flags, then options. */
function handshakeCorpus(): Buffer[] {
  const go = optionBytes(OPT.GO, infoData('', [INFO.NAME, INFO.BLOCK_SIZE, INFO.DESCRIPTION]));
  return [
    Buffer.concat([u32(3), optionBytes(OPT.EXPORT_NAME, Buffer.from('default'))]),
    Buffer.concat([u32(1), optionBytes(OPT.LIST), optionBytes(OPT.ABORT)]),
    Buffer.concat([u32(3), optionBytes(OPT.STRUCTURED_REPLY), optionBytes(OPT.LIST_META, metaData('', ['base:'])), go]),
    Buffer.concat([u32(3), optionBytes(OPT.INFO, infoData('default', [0, 1, 2, 3])), optionBytes(OPT.SET_META, metaData('', ['base:allocation'])), go]),
    Buffer.concat([u32(0), optionBytes(OPT.STARTTLS), optionBytes(99, Buffer.alloc(10)), optionBytes(OPT.EXPORT_NAME)]),
  ];
}

/** The handshake that starts every transmission case (structured replies, base:allocation, GO). */
const PRELUDE = Buffer.concat([
  u32(3),
  optionBytes(OPT.STRUCTURED_REPLY),
  optionBytes(OPT.SET_META, metaData('', ['base:allocation'])),
  optionBytes(OPT.GO, infoData('')),
]);
const SIMPLE_PRELUDE = Buffer.concat([u32(3), optionBytes(OPT.GO, infoData(''))]);

/** Well-formed request streams. */
function requestCorpus(): Buffer[] {
  let cookie = 1n;
  const r = (type: number, flags: number, offset: number, length: number, payload?: Buffer): Buffer =>
    Buffer.concat([requestBytes(type, flags, cookie++, offset, length), ...(payload ? [payload] : [])]);
  return [
    Buffer.concat([r(CMD.WRITE, 0, 100, 600, pattern(1, 600)), r(CMD.READ, 0, 0, 1000), r(CMD.FLUSH, 0, 0, 0)]),
    Buffer.concat([r(CMD.WRITE, CMD_FLAG.FUA, 4096, 512, pattern(2, 512)), r(CMD.TRIM, 0, 0, 8192), r(CMD.BLOCK_STATUS, 0, 0, 65536)]),
    Buffer.concat([r(CMD.WRITE_ZEROES, CMD_FLAG.NO_HOLE, 10, 5000), r(CMD.READ, CMD_FLAG.DF, 0, 4096), r(CMD.CACHE, 0, 0, 4096)]),
    Buffer.concat([r(CMD.BLOCK_STATUS, CMD_FLAG.REQ_ONE, 1, 999), r(CMD.WRITE_ZEROES, CMD_FLAG.FAST_ZERO, 0, 4096), r(CMD.DISC, 0, 0, 0)]),
    Buffer.concat([r(CMD.READ, 0, EXPORT_BYTES - 512, 512), r(CMD.WRITE, 0, EXPORT_BYTES - 1, 1, Buffer.from([7])), r(CMD.TRIM, CMD_FLAG.FUA, 512, 512)]),
  ];
}

function mutate(input: Buffer, random: () => number): Buffer {
  let b = Buffer.from(input);
  const pick = (n: number): number => Math.floor(random() * n);
  const rounds = 1 + pick(4);
  for (let i = 0; i < rounds; i++) {
    if (b.length === 0) b = Buffer.from([pick(256)]);
    switch (pick(7)) {
      case 0: {
        const at = pick(b.length);
        b[at] = b[at]! ^ (1 << pick(8));
        break;
      }
      case 1:
        b[pick(b.length)] = [0, 0xff, 0x7f, 0x80, 1][pick(5)]!;
        break;
      case 2:
        if (b.length >= 4) b.writeUInt32BE(INTERESTING_U32[pick(INTERESTING_U32.length)]!, pick(b.length - 3));
        break;
      case 3:
        b = b.subarray(0, pick(b.length + 1));
        break;
      case 4: {
        const at = pick(b.length + 1);
        const extra = Buffer.alloc(1 + pick(16));
        for (let k = 0; k < extra.length; k++) extra[k] = pick(256);
        b = Buffer.concat([b.subarray(0, at), extra, b.subarray(at)]);
        break;
      }
      case 5: {
        const from = pick(b.length);
        const len = 1 + pick(Math.min(64, b.length - from));
        const at = pick(b.length + 1);
        b = Buffer.concat([b.subarray(0, at), b.subarray(from, from + len), b.subarray(at)]);
        break;
      }
      default: {
        const from = pick(b.length);
        b = Buffer.concat([b.subarray(0, from), b.subarray(from + 1 + pick(8))]);
      }
    }
  }
  return b;
}

function caseBytes(i: number, seed: number, hs: Buffer[], rq: Buffer[]): Buffer {
  const random = makeRandom(deriveSeed(seed, i));
  const kind = Math.floor(random() * 10);
  if (kind < 4) return mutate(hs[Math.floor(random() * hs.length)]!, random);
  if (kind < 9) {
    const prelude = random() < 0.8 ? PRELUDE : SIMPLE_PRELUDE;
    return Buffer.concat([prelude, mutate(rq[Math.floor(random() * rq.length)]!, random)]);
  }
  const junk = Buffer.alloc(Math.floor(random() * 200));
  for (let k = 0; k < junk.length; k++) junk[k] = Math.floor(random() * 256);
  return junk;
}

/** Sends the bytes, closes our side, and waits for the server to close. */
async function runCase(port: number, bytes: Buffer): Promise<'closed' | 'hung'> {
  const s = await RawSocket.connect(port);
  s.send(bytes);
  s.socket.end();
  const closed = await s.hungUp(CASE_TIMEOUT_MS);
  if (!closed) s.destroy();
  return closed ? 'closed' : 'hung';
}

test(`fuzz: ${CASES} random and mutated handshakes and request streams; the server survives them all`, { timeout: 120_000 }, async (t) => {
  const seed = testSeed();
  t.diagnostic(replayHint(seed, FILE));
  await withServer(
    async ({ port, server, logs }) => {
      const hs = handshakeCorpus();
      const rq = requestCorpus();
      let next = 0;
      const started = Date.now();
      const worker = async (): Promise<void> => {
        while (next < CASES) {
          const i = next++;
          const bytes = caseBytes(i, seed, hs, rq);
          const outcome = await runCase(port, bytes);
          assert.equal(outcome, 'closed', `case ${i} (${bytes.toString('hex').slice(0, 400)}): the server neither finished nor closed; ${replayHint(seed, FILE)}`);
        }
      };
      await Promise.all(Array.from({ length: PARALLEL }, worker));
      t.diagnostic(`${CASES} cases in ${Date.now() - started} ms`);
      const failures = logs.filter((l) => /internal|failed/.test(l));
      assert.deepEqual(failures, [], `the server logged internal failures; ${replayHint(seed, FILE)}`);
      for (let i = 0; i < 500 && server.connections() > 0; i++) await new Promise((r) => setTimeout(r, 20));
      assert.equal(server.connections(), 0, 'every fuzz connection was let go');
      const c = await NbdClient.open(port);
      assert.equal(await c.write(1000, pattern(9, 3000)), 0);
      assert.ok((await c.read(1000, 3000)).data!.equals(pattern(9, 3000)), 'a well-formed client is served after the fuzz');
      await c.disconnect();
    },
    { defaultSize: EXPORT_BYTES },
  );
});

test('caseBytes is deterministic per seed and case, and mutate changes its input', () => {
  const hs = handshakeCorpus();
  const rq = requestCorpus();
  assert.ok(caseBytes(5, 42, hs, rq).equals(caseBytes(5, 42, hs, rq)));
  const random = makeRandom(1);
  let changed = 0;
  for (let i = 0; i < 100; i++) if (!mutate(rq[0]!, random).equals(rq[0]!)) changed++;
  assert.ok(changed >= 95, `${changed}/100 mutations changed the bytes`);
});
