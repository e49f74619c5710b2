// The kv crash writer: a child process that kv-sigkill.test.ts starts and SIGKILLs while it
// keeps kv atomic batches, transactions and TTL puts and deletes in flight.
//
//   node dist/test/crash/kv-writer.js --dir DIR --seed N --first-id N --first-tx N
//        [--checkpoint-bytes N] [--checkpoint-at-open] [--checkpoint-every N]
//        [--tear-from ack|open --tear-after-ms N --tear-write N] [--wait-go]
//
// It opens the store in DIR (created and seeded by the test), reads it whole and reports
// what it read (OPENED), then forever keeps IN_FLIGHT ops and TX_IN_FLIGHT transactions in
// flight:
//   - slot batches: store.atomic() puts one value naming the batch into key SLOT s of each of
//     the SLOT_POOLS and writes SLOT_SECTORS sectors of the batch's pattern at lba
//     s * SLOT_SECTORS (a tenth delete the three keys and trim the sectors instead); 40% carry
//     a check of the slot's key in the first pool at the version the writer last learnt
//     (from an ACK, or from what it read at open), so some fail;
//   - TTL ops on key k of the TTL pool through store.kv(): a put with a TTL of an hour, a put
//     with a TTL of 0.2-3 s, a put with no TTL, or a delete;
//   - transfers: store.transaction() moves 1 from account a to account b (read both, write
//     both) and increments the ledger counter of the pair a→b, all in one transaction.
// Slot batches and TTL ops share one id sequence, counted up from --first-id in the order
// they are handed to the store (which is their commit order); transfers count from
// --first-tx.
//
// Protocol, one line each on stdout, written synchronously before what it reports goes on:
//   SEED <seed> | OPENING | OPENED <snapshot json> | STATS <json>
//   I <id> b <slot> <checkTag|-> <0|1 delete>   a slot batch, before commit()
//   I <id> p <key> <ttlMs> <wallMs>             a TTL-pool put (ttl 0: none), wall = Date.now()
//   I <id> d <key>                              a TTL-pool delete
//   A <id> <version>                            acknowledged (durable)
//   F <id>                                      a slot batch whose check failed (nothing written)
//   TI <tx> <a> <b> | TA <tx> | TF <tx>          transfer issued / acknowledged / ERR_CONFLICT
//   TEAR <offset> <length> <kept> <how>         the writer kills itself inside a write
//   FAIL <what> <message>                       anything else went wrong; the writer exits 1
//
// --checkpoint-bytes, --checkpoint-at-open, --checkpoint-every and --tear-* work as in
// writer.ts. Without --dir (or when imported) it does nothing: the exports below are shared
// with the test.

import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { isAtomioError, open, type Store } from '../../src/index.js';
import { Rng, SECTOR, fillPattern, parseSector, writeLine } from './common.js';
import { CHILD_OPTIONS, Tear, countFlag, fail, waitForGo } from './tearing.js';

// ---------------------------------------------------------------------------------------
// Shared with the test

/** Store geometry: 64 segments, so that the cleaner and checkpoints run during the test. */
export const KV_CAPACITY = 16 * 1024 * 1024;
export const KV_SEGMENT_SIZE = 256 * 1024;
export const SLOTS = 384;
export const SLOT_SECTORS = 8;
export const SLOT_POOLS = ['slot-a', 'slot-b', 'slot-c'] as const;
export const TTL_POOL = 'ttl';
export const TTL_KEYS = 48;
export const ACCT_POOL = 'acct';
export const LEDGER_POOL = 'ledger';
export const ACCOUNTS = 8;
export const INITIAL_BALANCE = 1000;
export const IN_FLIGHT = 16;
export const TX_IN_FLIGHT = 4;
export const LONG_TTL_MS = 3_600_000;

export const slotKey = (s: number): string => `slot:${String(s).padStart(3, '0')}`;
export const ttlKey = (k: number): string => `k:${String(k).padStart(2, '0')}`;
export const acctKey = (a: number): string => `acct:${a}`;
export const pairKey = (a: number, b: number): string => `n:${a}:${b}`;

function mix(x: number): number {
  x = Math.imul(x ^ (x >>> 16), 0x85ebca6b) >>> 0;
  x = Math.imul(x ^ (x >>> 13), 0xc2b2ae35) >>> 0;
  return (x ^ (x >>> 16)) >>> 0;
}

function nameHash(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193) >>> 0;
  return h;
}

/**
 * The value op `id` stores under `key` of `pool`: a header naming all three, then filler
 * bytes derived from them, of a length derived from them (16 B – `max` B).
 */
export function valueFor(pool: string, key: string, id: number, max: number): Buffer {
  const header = Buffer.from(`${id}|${pool}|${key}|`, 'latin1');
  const h = mix(nameHash(pool) ^ nameHash(key) ^ Math.imul(id, 0x9e3779b1));
  const length = Math.max(header.length, 16 + (h % (max - 16)));
  const out = Buffer.alloc(length);
  header.copy(out);
  for (let i = header.length; i < length; i++) out[i] = (h + Math.imul(i, 31)) & 0xff;
  return out;
}

export const SLOT_VALUE_MAX = 6000;
export const TTL_VALUE_MAX = 2000;

/** The op id a stored value names, or a string saying what is wrong with it. */
export function parseValue(value: Buffer, pool: string, key: string, max: number): number | string {
  const text = value.toString('latin1', 0, Math.min(value.length, 64));
  const m = /^(\d+)\|/.exec(text);
  if (m === null) return `value of ${pool}/${key} has no id header (${value.length} bytes: ${JSON.stringify(text.slice(0, 40))})`;
  const id = Number(m[1]);
  const want = valueFor(pool, key, id, max);
  if (!want.equals(value)) return `value of ${pool}/${key} names op ${id} but is not its value (${value.length} bytes, expected ${want.length})`;
  return id;
}

export interface SlotSeen {
  /** Op ids found in the three pools and the block sectors (0: absent / zeros). */
  tags: [number, number, number, number];
  versions: [number, number, number, number];
}

export interface TtlSeen {
  tag: number;
  version: number;
  expiresAt: number;
}

/** What a whole read of the store found. */
export interface Snapshot {
  /** Date.now() before and after the reads (TTLs are judged against this window). */
  t0: number;
  t1: number;
  slots: SlotSeen[];
  ttl: (TtlSeen | null)[];
  acct: (number | null)[];
  /** Pair key → count. */
  ledger: Record<string, number>;
  /** Values that name no op, sectors that hold no pattern, stray keys and extents. */
  problems: string[];
}

/** Reads everything the writers write: every slot, TTL key, account and ledger counter. */
export async function readSnapshot(store: Store): Promise<Snapshot> {
  const problems: string[] = [];
  const t0 = Date.now();
  const slots: SlotSeen[] = [];
  const sectors = SLOTS * SLOT_SECTORS;
  const data = await store.block.read(0, sectors);
  const versions = new Float64Array(sectors);
  for (const e of store.block.mapped(0, sectors)) versions.fill(e.version, e.lba, e.lba + e.count);
  for (let s = 0; s < SLOTS; s++) {
    const seen: SlotSeen = { tags: [0, 0, 0, 0], versions: [0, 0, 0, 0] };
    for (let p = 0; p < SLOT_POOLS.length; p++) {
      const pool = SLOT_POOLS[p]!;
      const entry = await store.kv(pool).getEntry(slotKey(s));
      if (entry === undefined) continue;
      const id = parseValue(entry.value, pool, slotKey(s), SLOT_VALUE_MAX);
      if (typeof id === 'string') {
        problems.push(id);
        seen.tags[p] = NaN;
      } else {
        seen.tags[p] = id;
      }
      seen.versions[p] = entry.version;
      if (entry.expiresAt !== 0) problems.push(`${pool}/${slotKey(s)} has a TTL (expires at ${entry.expiresAt}); slot batches set none`);
    }
    // The block sectors: all SLOT_SECTORS must hold the same batch and the same version.
    const lba = s * SLOT_SECTORS;
    let blockTag: number | undefined;
    let blockVersion: number | undefined;
    for (let i = 0; i < SLOT_SECTORS; i++) {
      const parsed = parseSector(data, (lba + i) * SECTOR, lba + i);
      const tag = typeof parsed === 'string' ? NaN : parsed;
      if (typeof parsed === 'string') problems.push(`slot ${s} lba ${lba + i}: ${parsed}`);
      if (blockTag === undefined) {
        blockTag = tag;
        blockVersion = versions[lba + i]!;
      } else if (!Object.is(blockTag, tag) || blockVersion !== versions[lba + i]) {
        problems.push(
          `slot ${s}: its sectors disagree: lba ${lba} holds op ${blockTag} at version ${blockVersion}, lba ${lba + i} op ${tag} at version ${versions[lba + i]}`,
        );
      }
    }
    seen.tags[3] = blockTag!;
    seen.versions[3] = blockVersion!;
    slots.push(seen);
  }
  const ttl: (TtlSeen | null)[] = [];
  for (let k = 0; k < TTL_KEYS; k++) {
    const entry = await store.kv(TTL_POOL).getEntry(ttlKey(k));
    if (entry === undefined) {
      ttl.push(null);
      continue;
    }
    const id = parseValue(entry.value, TTL_POOL, ttlKey(k), TTL_VALUE_MAX);
    if (typeof id === 'string') problems.push(id);
    ttl.push({ tag: typeof id === 'string' ? NaN : id, version: entry.version, expiresAt: entry.expiresAt });
  }
  const acct: (number | null)[] = [];
  for (let a = 0; a < ACCOUNTS; a++) {
    const v = await store.kv(ACCT_POOL).get(acctKey(a));
    if (v === undefined) {
      acct.push(null);
      continue;
    }
    const n = Number(v.toString('latin1'));
    if (!Number.isSafeInteger(n)) problems.push(`${ACCT_POOL}/${acctKey(a)} holds ${JSON.stringify(v.toString('latin1').slice(0, 40))}`);
    acct.push(n);
  }
  const ledger: Record<string, number> = {};
  for await (const e of store.kv(LEDGER_POOL).list()) {
    const key = e.key.toString('latin1');
    const n = Number(e.value.toString('latin1'));
    if (!/^n:\d+:\d+$/.test(key) || !Number.isSafeInteger(n) || n < 1) {
      problems.push(`${LEDGER_POOL}: unexpected entry ${JSON.stringify(key)} = ${JSON.stringify(e.value.toString('latin1').slice(0, 40))}`);
      continue;
    }
    ledger[key] = n;
  }
  // Nothing anywhere else: no pool but ours, no key but the expected ones, no block data
  // outside the slots.
  const expected = new Set<string>([...SLOT_POOLS, TTL_POOL, ACCT_POOL, LEDGER_POOL]);
  for (const pool of store.pools()) {
    if (!expected.has(pool)) problems.push(`unexpected pool ${JSON.stringify(pool)}`);
  }
  const counts: [string, number][] = [
    ...SLOT_POOLS.map((p, i): [string, number] => [p, slots.filter((s) => s.tags[i] !== 0).length]),
    [TTL_POOL, ttl.filter((e) => e !== null).length],
    [ACCT_POOL, acct.filter((e) => e !== null).length],
  ];
  for (const [pool, n] of counts) {
    const listed = store.kv(pool).count();
    // Listing and count skip keys whose TTL passed between our reads and now: only more keys is wrong.
    if (listed > n) problems.push(`pool ${pool} holds ${listed} keys, but only ${n} of the expected names`);
  }
  const stray = store.block.mapped(sectors, store.block.sectorCount - sectors);
  if (stray.length > 0) problems.push(`block data outside the slots: ${JSON.stringify(stray.slice(0, 3))}`);
  return { t0, t1: Date.now(), slots, ttl, acct, ledger, problems };
}

// ---------------------------------------------------------------------------------------
// The writer

function summary(store: Store): Record<string, number> {
  const s = store.stats();
  return {
    commits: s.commits,
    flushes: s.flushes,
    checkpoints: s.checkpoints,
    segmentsCleaned: s.segmentsCleaned,
    freeSegments: s.freeSegments,
    liveBytes: s.liveBytes,
    expiredBytesReclaimed: s.expiredBytesReclaimed,
  };
}

interface Args {
  dir: string;
  seed: number;
  firstId: number;
  firstTx: number;
  checkpointBytes: number;
  checkpointEvery: number;
  checkpointAtOpen: boolean;
  tear: Tear;
}

async function main(a: Args): Promise<void> {
  writeLine(`SEED ${a.seed}`);
  const rng = new Rng(a.seed);
  writeLine('OPENING');
  a.tear.opening();
  const store = await open(a.dir, {
    capacity: KV_CAPACITY,
    segmentSize: KV_SEGMENT_SIZE,
    durability: 'full',
    ...(a.checkpointBytes > 0 ? { checkpointIntervalBytes: a.checkpointBytes } : {}),
    ...(a.tear.media !== undefined ? { media: a.tear.media } : {}),
  });
  const snap = await readSnapshot(store);
  writeLine(`OPENED ${JSON.stringify({ recovery: store.stats().lastRecovery, stats: summary(store), snapshot: snap })}`);

  // What the writer knows of each slot, for its checks: the op whose data it holds and the
  // version of its key in the first pool (0 tag: absent).
  const known = snap.slots.map((s) => ({ tag: s.tags[0], version: s.versions[0] }));

  const checkpoint = (): void => {
    store.checkpoint().then(
      () => writeLine(`STATS ${JSON.stringify(summary(store))}`),
      (error: unknown) => fail('checkpoint', error),
    );
  };

  let nextId = a.firstId;
  const acked = (): void => {
    const acks = a.tear.acked();
    if (a.checkpointEvery > 0 && acks % a.checkpointEvery === 0) checkpoint();
  };
  const issue = (): void => {
    const id = nextId++;
    if (rng.next() < 0.72) issueBatch(id);
    else issueTtlOp(id);
  };
  const issueBatch = (id: number): void => {
    const s = rng.int(0, SLOTS - 1);
    const remove = rng.next() < 0.1;
    const checked = rng.next() < 0.4;
    const key = slotKey(s);
    const batch = store.atomic();
    let checkTag = '-';
    if (checked) {
      const k = known[s]!;
      batch.check(SLOT_POOLS[0], key, k.tag === 0 ? null : k.version);
      checkTag = String(k.tag);
    }
    const lba = s * SLOT_SECTORS;
    if (remove) {
      for (const pool of SLOT_POOLS) batch.delete(pool, key);
      batch.trim(lba, SLOT_SECTORS);
    } else {
      for (const pool of SLOT_POOLS) batch.put(pool, key, valueFor(pool, key, id, SLOT_VALUE_MAX));
      batch.write(lba, fillPattern(id, lba, SLOT_SECTORS));
    }
    writeLine(`I ${id} b ${s} ${checkTag} ${remove ? 1 : 0}`);
    batch.commit().then(
      (result) => {
        if (result.ok) {
          writeLine(`A ${id} ${result.version}`);
          if (result.version > known[s]!.version) known[s] = { tag: remove ? 0 : id, version: result.version };
          acked();
        } else {
          writeLine(`F ${id}`);
        }
        issue();
      },
      (error: unknown) => fail(String(id), error),
    );
  };
  const issueTtlOp = (id: number): void => {
    const k = rng.int(0, TTL_KEYS - 1);
    const key = ttlKey(k);
    const pick = rng.next();
    const pool = store.kv(TTL_POOL);
    let done: Promise<number>;
    if (pick < 0.2) {
      writeLine(`I ${id} d ${k}`);
      done = pool.delete(key);
    } else {
      const ttl = pick < 0.55 ? LONG_TTL_MS : pick < 0.8 ? rng.int(200, 3000) : 0;
      const value = valueFor(TTL_POOL, key, id, TTL_VALUE_MAX);
      writeLine(`I ${id} p ${k} ${ttl} ${Date.now()}`);
      done = pool.put(key, value, ttl > 0 ? { ttl } : {});
    }
    done.then(
      (version) => {
        writeLine(`A ${id} ${version}`);
        acked();
        issue();
      },
      (error: unknown) => fail(String(id), error),
    );
  };

  let nextTx = a.firstTx;
  const transfer = (): void => {
    const tx = nextTx++;
    const from = rng.int(0, ACCOUNTS - 1);
    const to = (from + rng.int(1, ACCOUNTS - 1)) % ACCOUNTS;
    writeLine(`TI ${tx} ${from} ${to}`);
    store
      .transaction(
        async (t) => {
          const [va, vb] = await Promise.all([t.get(ACCT_POOL, acctKey(from)), t.get(ACCT_POOL, acctKey(to))]);
          if (va === undefined || vb === undefined) throw new Error(`account ${va === undefined ? from : to} is missing`);
          t.put(ACCT_POOL, acctKey(from), String(Number(va.toString('latin1')) - 1));
          t.put(ACCT_POOL, acctKey(to), String(Number(vb.toString('latin1')) + 1));
          await t.incr(LEDGER_POOL, pairKey(from, to), 1, { initial: 1 });
        },
        { retries: 64 },
      )
      .then(
        () => {
          writeLine(`TA ${tx}`);
          transfer();
        },
        (error: unknown) => {
          if (!isAtomioError(error, 'ERR_CONFLICT')) fail(`tx ${tx}`, error);
          writeLine(`TF ${tx}`);
          transfer();
        },
      );
  };

  for (let i = 0; i < IN_FLIGHT; i++) issue();
  for (let i = 0; i < TX_IN_FLIGHT; i++) transfer();
  if (a.checkpointAtOpen) checkpoint();
  setInterval(() => writeLine(`STATS ${JSON.stringify(summary(store))}`), 40);
}

const isMain = process.argv[1] !== undefined && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url);

if (isMain) {
  const { values } = parseArgs({
    options: {
      dir: { type: 'string' },
      seed: { type: 'string' },
      'first-id': { type: 'string' },
      'first-tx': { type: 'string' },
      'checkpoint-bytes': { type: 'string' },
      'checkpoint-every': { type: 'string' },
      'checkpoint-at-open': { type: 'boolean' },
      ...CHILD_OPTIONS,
    },
    strict: true,
  });
  if (values.dir !== undefined) {
    const dir = values.dir;
    const seed = countFlag('seed', values.seed, 1) >>> 0;
    if (countFlag('first-id', values['first-id'], 1) < 1) throw new Error('--first-id must be >= 1 (op id 0 means "no data")');
    await waitForGo(values);
    const run = async (): Promise<void> =>
      main({
        dir,
        seed,
        firstId: countFlag('first-id', values['first-id'], 1),
        firstTx: countFlag('first-tx', values['first-tx'], 1),
        checkpointBytes: countFlag('checkpoint-bytes', values['checkpoint-bytes'], 0),
        checkpointEvery: countFlag('checkpoint-every', values['checkpoint-every'], 0),
        checkpointAtOpen: values['checkpoint-at-open'] === true,
        tear: await Tear.prepare(values, dir, KV_CAPACITY, seed, false),
      });
    await run().catch((error: unknown) => fail('open', error));
  }
}
