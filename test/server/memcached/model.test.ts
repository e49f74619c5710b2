// Model-based randomized test of the memcached server: random storage commands, cas with
// current and stale uniques, deletes, counters, touches and retrievals, pipelined in random
// batches, against a plain in-memory model of memcached's semantics (key → data, flags,
// deadline). A ManualClock moves between batches, often past deadlines. Every reply of every
// batch must be what the model predicts, byte for byte; CAS uniques must rise with every
// change of an item and stay the same across touch; at the end the server is reopened on the
// same store and must hold exactly what the model holds.
//
//   ATOMIO_SEED             replays a run
//   ATOMIO_MC_MODEL_OPS     number of commands (default 4000)

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { makeRandom } from '../../../src/media/random.js';
import { startMemcachedServer } from '../../../src/server/memcached/index.js';
import { replayHint, testSeed } from '../../helpers/seed.js';
import { McClient, withServer } from './harness.js';

const FILE = 'dist/test/server/memcached/model.test.js';
const OPS = Number(process.env.ATOMIO_MC_MODEL_OPS ?? 4000);
const KEYS = ['a', 'b', 'c', 'd', 'n1', 'n2', 'k'.repeat(250), 'x:y'];

interface ModelItem {
  data: string;
  flags: number;
  /** ms since the epoch; 0 never. */
  deadline: number;
  /** The CAS unique last seen for this item (undefined: changed since, or never seen). */
  cas: bigint | undefined;
  /** The lowest value the next CAS may have (strictly above every unique seen before). */
  minCas: bigint;
  /** Counts changes, so that a unique seen before a change is not taken for the current one. */
  gen: number;
}

test(`model: ${OPS} pipelined commands against a model of memcached, then a restart`, async (t) => {
  const seed = testSeed();
  t.diagnostic(replayHint(seed, FILE));
  const random = makeRandom(seed);
  const hint = replayHint(seed, FILE);
  const pick = <T>(list: readonly T[]): T => list[Math.floor(random() * list.length)]!;
  await withServer(async (h) => {
    const model = new Map<string, ModelItem>();
    const lastCas = new Map<string, bigint>();
    const live = (key: string): ModelItem | undefined => {
      const item = model.get(key);
      if (item !== undefined && item.deadline !== 0 && item.deadline <= h.clock.now()) {
        model.delete(key);
        return undefined;
      }
      return item;
    };
    const exptime = (): { text: number; deadline: number } => {
      const r = random();
      if (r < 0.5) return { text: 0, deadline: 0 };
      if (r < 0.6) return { text: -1, deadline: -1 };
      const s = 1 + Math.floor(random() * 10);
      if (r < 0.7) return { text: Math.floor(h.clock.now() / 1000) + s, deadline: (Math.floor(h.clock.now() / 1000) + s) * 1000 };
      return { text: s, deadline: h.clock.now() + s * 1000 };
    };
    const data = (): string => (random() < 0.4 ? String(Math.floor(random() * 1000)) : 'v'.repeat(Math.floor(random() * 5)) + pick(['', 'x', '\r\n', ' z']));
    const changed = (key: string, item: ModelItem): void => {
      item.gen++;
      item.cas = undefined;
      item.minCas = (lastCas.get(key) ?? 0n) + 1n;
    };
    const store = (key: string, d: string, flags: number, deadline: number): void => {
      if (deadline < 0) {
        model.delete(key);
        return;
      }
      const item: ModelItem = { data: d, flags, deadline, cas: undefined, minCas: 0n, gen: 0 };
      changed(key, item);
      model.set(key, item);
    };

    const c = await h.connect();
    let done = 0;
    while (done < OPS) {
      const batch = 1 + Math.floor(random() * 20);
      let request = '';
      let expected = '';
      /** gets replies to check: key, expected prefix before the CAS, data. */
      const casChecks: { key: string; at: number; item: ModelItem; gen: number; cas: bigint | undefined; minCas: bigint }[] = [];
      for (let i = 0; i < batch; i++, done++) {
        const key = pick(KEYS);
        const item = live(key);
        const r = random();
        if (r < 0.22) {
          const cmd = pick(['set', 'add', 'replace'] as const);
          const e = exptime();
          const d = data();
          const flags = Math.floor(random() * 2 ** 32);
          request += `${cmd} ${key} ${flags} ${e.text} ${d.length}\r\n${d}\r\n`;
          const ok = cmd === 'set' || (cmd === 'add') === (item === undefined);
          expected += ok ? 'STORED\r\n' : 'NOT_STORED\r\n';
          if (ok) store(key, d, flags, e.deadline);
        } else if (r < 0.32) {
          const cmd = pick(['append', 'prepend'] as const);
          const d = data();
          request += `${cmd} ${key} 0 0 ${d.length}\r\n${d}\r\n`;
          expected += item === undefined ? 'NOT_STORED\r\n' : 'STORED\r\n';
          if (item !== undefined) {
            item.data = cmd === 'append' ? item.data + d : d + item.data;
            changed(key, item);
          }
        } else if (r < 0.42) {
          const d = data();
          const known = item?.cas;
          const right = known !== undefined && random() < 0.7;
          const unique = right ? known : (lastCas.get(key) ?? 1n) + 1_000_000n;
          request += `cas ${key} 5 0 ${d.length} ${unique}\r\n${d}\r\n`;
          expected += item === undefined ? 'NOT_FOUND\r\n' : right ? 'STORED\r\n' : 'EXISTS\r\n';
          if (item !== undefined && right) store(key, d, 5, 0);
        } else if (r < 0.5) {
          request += `delete ${key}\r\n`;
          expected += item === undefined ? 'NOT_FOUND\r\n' : 'DELETED\r\n';
          model.delete(key);
        } else if (r < 0.6) {
          const incr = random() < 0.6;
          const delta = random() < 0.1 ? 18446744073709551615n : BigInt(Math.floor(random() * 100));
          request += `${incr ? 'incr' : 'decr'} ${key} ${delta}\r\n`;
          if (item === undefined) expected += 'NOT_FOUND\r\n';
          else if (counterOf(item.data) === undefined) expected += 'CLIENT_ERROR cannot increment or decrement non-numeric value\r\n';
          else {
            const v = counterOf(item.data)!;
            const next = incr ? (v + delta) % 2n ** 64n : v > delta ? v - delta : 0n;
            expected += `${next}\r\n`;
            item.data = next.toString();
            changed(key, item);
          }
        } else if (r < 0.66) {
          const e = exptime();
          request += `touch ${key} ${e.text}\r\n`;
          expected += item === undefined ? 'NOT_FOUND\r\n' : 'TOUCHED\r\n';
          if (item !== undefined) {
            if (e.deadline < 0) model.delete(key);
            else item.deadline = e.deadline;
          }
        } else if (r < 0.8) {
          request += `gets ${key}\r\n`;
          if (item === undefined) expected += 'END\r\n';
          else {
            expected += `VALUE ${key} ${item.flags} ${item.data.length} `;
            casChecks.push({ key, at: expected.length, item, gen: item.gen, cas: item.cas, minCas: item.minCas });
            expected += `\r\n${item.data}\r\nEND\r\n`;
          }
        } else {
          const keys = [pick(KEYS), pick(KEYS), key];
          request += `get ${keys.join(' ')}\r\n`;
          for (const k of keys) {
            const it = live(k);
            if (it !== undefined) expected += `VALUE ${k} ${it.flags} ${it.data.length}\r\n${it.data}\r\nEND\r\n`.slice(0, -5);
          }
          expected += 'END\r\n';
        }
      }
      const got = await c.call(request);
      // Put the CAS uniques the server gave into the expected text, checking each against the model.
      let fixed = '';
      let from = 0;
      let offset = 0;
      for (const check of casChecks) {
        fixed += expected.slice(from, check.at);
        const m = /^\d+/.exec(got.slice(check.at + offset));
        assert.ok(m, `a CAS unique in ${JSON.stringify(got)}; ${hint}`);
        const unique = BigInt(m[0]);
        if (check.cas !== undefined) assert.equal(unique, check.cas, `${check.key}: the CAS did not move without a change; ${hint}`);
        else assert.ok(unique >= check.minCas, `${check.key}: a change gave a higher CAS (${unique} >= ${check.minCas}); ${hint}`);
        if (check.item.gen === check.gen) check.item.cas = unique;
        lastCas.set(check.key, unique > (lastCas.get(check.key) ?? 0n) ? unique : lastCas.get(check.key)!);
        fixed += m[0];
        offset += m[0].length;
        from = check.at;
      }
      fixed += expected.slice(from);
      assert.equal(got, fixed, `batch ending at op ${done}: ${JSON.stringify(request)}; ${hint}`);
      if (random() < 0.3) h.clock.advance(Math.floor(random() * 4000));
    }

    // Restart the server on the same store: everything the model holds is there, and nothing else.
    await h.server.close();
    const again = await startMemcachedServer(h.store, { port: 0, clock: h.clock });
    try {
      const d = await McClient.connect(again.address.port);
      for (const key of KEYS) {
        const item = live(key);
        const want = item === undefined ? 'END\r\n' : `VALUE ${key} ${item.flags} ${item.data.length}\r\n${item.data}\r\nEND\r\n`;
        assert.equal(await d.call(`get ${key}\r\n`), want, `${key} after the restart; ${hint}`);
      }
      d.destroy();
    } finally {
      await again.close();
    }
  });
});

/** A counter as memcached's strtoull reads the data: white space, an optional +, digits, then the end, white space or a NUL. */
function counterOf(data: string): bigint | undefined {
  const m = /^[ \t\n\v\f\r]*\+?(\d+)(?:$|[ \t\n\v\f\r\0])/.exec(data);
  if (m === null) return undefined;
  const v = BigInt(m[1]!);
  return v < 2n ** 64n ? v : undefined;
}
