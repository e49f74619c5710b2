// Crash tests of the kv face with a real process: a writer (kv-writer.ts) keeps kv atomic
// batches (three pools and a block range per batch), transactions and TTL puts and deletes
// in flight and is SIGKILLed, by the test at a random moment or by itself inside a write;
// the test then runs the verifier (engine/check.ts) on the file as the kill left it, opens
// the store itself and holds what it reads to the model below. One store lives through all
// the rounds, so the log grows across kills and recovery meets checkpoints, cleaned
// segments, expired keys and earlier crashes.
//
// The model. Slot batches and TTL ops are handed to the store in id order, which is their
// commit order; a kill loses a tail of it, never a middle. So after a kill the slots and TTL
// keys must be what the last verified state becomes when the writer's first c ops are
// applied to it, for some cutoff c at or after its last acknowledged op, where
//   - an op with a check applies only if the slot then holds the op the check names (the
//     simulation decides each check, and must agree with every ACK and F line);
//   - a TTL key whose put's deadline may have passed may be gone;
// and then:
//   - no batch is half there: the three pools and the block sectors of a slot name the same
//     op, at the same version;
//   - versions: an acknowledged op's data has the acknowledged version; acknowledged
//     versions and the versions of everything found grow with op ids and are newer than
//     what was verified before;
//   - a TTL key's deadline lies between its put's issue + ttl and its ACK (or the kill) +
//     ttl; a key without a TTL has none;
//   - transfers: the balances sum to the initial total, each balance is the initial one
//     minus what the ledger says left it plus what it says came in (so no transfer is half
//     there), and each ledger counter grew by at least the transfers acknowledged on it and
//     at most those issued and not refused with ERR_CONFLICT.
// A writer also reads the whole store right after it opens and reports it (OPENED): that is
// held to the model too, so writers that follow one another with no check by the test in
// between (a chain of early kills) are checked at each step.
//
//   ATOMIO_KV_CRASH_ROUNDS   rounds (default 28; every fourth is a chain of 3 writers)
//   ATOMIO_SEED              replays a run: the writers' choices and the kill plans (not the
//                            exact instant a kill lands, which the machine decides)
//   ATOMIO_CRASH_KEEP=1      keeps the store directory (kept anyway when a check fails)

import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { DATA_FILE_NAME, open, type RecoveryReport } from '../../src/index.js';
import { checkStore, type CheckReport } from '../../src/engine/check.js';
import { openFileMedia } from '../../src/media/file.js';
import { acquireStoreLock } from '../../src/media/lock.js';
import { deriveSeed, replayHint, testSeed } from '../helpers/seed.js';
import { describePlan, describeRecovery, newChildRun, positiveInt, runInTurn, spawnWriter, type ChildRun, type KillableChild, type KillPlan, withStoreDir } from './child.js';
import { Rng } from './common.js';
import {
  ACCOUNTS,
  ACCT_POOL,
  INITIAL_BALANCE,
  KV_CAPACITY,
  KV_SEGMENT_SIZE,
  SLOTS,
  TTL_KEYS,
  acctKey,
  pairKey,
  readSnapshot,
  type Snapshot,
} from './kv-writer.js';

const WRITER = fileURLToPath(new URL('./kv-writer.js', import.meta.url));
const THIS_FILE = 'dist/test/crash/kv-sigkill.test.js';
const ROUNDS = positiveInt('ATOMIO_KV_CRASH_ROUNDS', 28);
const SEED = testSeed();

function replay(seed: number): string {
  return replayHint(seed, THIS_FILE);
}

// ---------------------------------------------------------------------------------------
// Writers

/** An op as its I line gave it. */
interface Op {
  id: number;
  kind: 'b' | 'p' | 'd';
  /** Slot (b) or TTL key (p, d). */
  target: number;
  /** b: the op the check names (0: the slot is empty); undefined: no check. */
  checkTag?: number;
  /** b: deletes the slot. */
  remove?: boolean;
  /** p: ms (0: no TTL) and Date.now() in the writer before the put. */
  ttl?: number;
  wall?: number;
}

interface WriterRun extends ChildRun {
  /** In id order. */
  ops: Op[];
  /** id → version, or 'F' for a failed check; with the parent's Date.now() on reading it. */
  acks: Map<number, { version: number | 'F'; at: number }>;
  tx: Map<number, [number, number]>;
  txAcked: Set<number>;
  txFailed: Set<number>;
  opened: { recovery?: RecoveryReport; stats?: Record<string, number>; snapshot: Snapshot } | undefined;
}

interface WriterSpec {
  label: string;
  seed: number;
  firstId: number;
  firstTx: number;
  args: string[];
  plan: KillPlan;
  /** The test checks the store once this writer is dead (the last of a chain). */
  check: boolean;
}

/** Spawns a kv writer (kv-writer.ts); its op and transfer lines fill the run. */
function kvWriter(dir: string, spec: WriterSpec): KillableChild<WriterRun> {
  const run: WriterRun = {
    ...newChildRun(spec.label, spec.seed),
    ops: [],
    acks: new Map(),
    tx: new Map(),
    txAcked: new Set(),
    txFailed: new Set(),
    opened: undefined,
  };
  const ids = new Set<number>();
  const args = ['--dir', dir, '--seed', String(spec.seed), '--first-id', String(spec.firstId), '--first-tx', String(spec.firstTx), ...spec.args];
  return spawnWriter(WRITER, args, spec.plan, run, (f, line, ctx) => {
    const word = f[0];
    switch (word) {
      case 'I': {
        const id = Number(f[1]);
        const last = run.ops[run.ops.length - 1];
        if (last !== undefined ? id !== last.id + 1 : id !== spec.firstId) ctx.oddity(`op ${id} issued out of order`);
        ids.add(id);
        const kind = f[2] as Op['kind'];
        const target = Number(f[3]);
        if (kind === 'b') run.ops.push({ id, kind, target, checkTag: f[4] === '-' ? undefined : Number(f[4]), remove: f[5] === '1' });
        else if (kind === 'p') run.ops.push({ id, kind, target, ttl: Number(f[4]), wall: Number(f[5]) });
        else if (kind === 'd') run.ops.push({ id, kind, target });
        else ctx.oddity(`unknown op kind in ${JSON.stringify(line)}`);
        break;
      }
      case 'A':
      case 'F': {
        const id = Number(f[1]);
        if (!ids.has(id)) ctx.oddity(`${word} for op ${id}, which was never issued`);
        if (run.acks.has(id)) ctx.oddity(`op ${id} settled twice`);
        run.acks.set(id, { version: word === 'A' ? Number(f[2]) : 'F', at: Date.now() });
        if (word === 'A') ctx.acked();
        break;
      }
      case 'TI':
        run.tx.set(Number(f[1]), [Number(f[2]), Number(f[3])]);
        break;
      case 'TA':
      case 'TF': {
        const tx = Number(f[1]);
        if (!run.tx.has(tx)) ctx.oddity(`${word} for transfer ${tx}, which was never issued`);
        (word === 'TA' ? run.txAcked : run.txFailed).add(tx);
        break;
      }
      default:
        ctx.oddity(`unexpected line from the writer: ${JSON.stringify(line.slice(0, 200))}`);
    }
  });
}

interface SlotState {
  /** The op whose data the slot holds; 0: empty. */
  tag: number;
  /** Its version; NaN when not known (an unacknowledged op). */
  version: number;
}

interface TtlState {
  tag: number;
  version: number;
  /** Bounds of the deadline; 0 and 0: no TTL. */
  expLo: number;
  expHi: number;
}

interface ModelState {
  slots: SlotState[];
  ttl: TtlState[];
  ledger: Map<string, number>;
  /** Newest version verified so far: everything found later that is new must be newer. */
  maxVersion: number;
}

function initialModel(): ModelState {
  return {
    slots: Array.from({ length: SLOTS }, () => ({ tag: 0, version: 0 })),
    ttl: Array.from({ length: TTL_KEYS }, () => ({ tag: 0, version: 0, expLo: 0, expHi: 0 })),
    ledger: new Map(),
    maxVersion: 0,
  };
}

interface Verdict {
  /** The model after the writer's ops, as found. */
  next: ModelState;
  /** The writer's ops, and how many of those past its last ACK were found applied. */
  cutoff: number;
  unackedApplied: number;
  /** Unacknowledged transfers found applied. */
  txUnacked: number;
  /** TTL keys found gone because their deadline passed. */
  expired: number;
}

class ModelError extends Error {}

/**
 * Holds `snap` to `base` followed by the ops of `run` (undefined: nothing written since).
 * Throws a ModelError that says what broke; returns the new model.
 */
function verify(base: ModelState, run: WriterRun | undefined, snap: Snapshot): Verdict {
  const errors: string[] = [];
  const fail = (message: string): never => {
    throw new ModelError(message);
  };
  if (snap.problems.length > 0) fail(`the store holds what no op wrote:\n  ${snap.problems.slice(0, 12).join('\n  ')}`);

  // Atomicity within a slot: one op across the three pools and the block sectors.
  for (let s = 0; s < SLOTS; s++) {
    const { tags, versions } = snap.slots[s]!;
    if (!tags.every((t) => t === tags[0]) || !versions.every((v) => v === versions[0])) {
      errors.push(`slot ${s} is half applied: pools a, b, c and block name ops ${tags.join(', ')} at versions ${versions.join(', ')}`);
    }
  }
  if (errors.length > 0) fail(`batches are half there:\n  ${errors.slice(0, 12).join('\n  ')}`);

  const ops = run?.ops ?? [];
  const acks = run?.acks ?? new Map<number, { version: number | 'F'; at: number }>();
  const deadAt = run?.deadAt ?? 0;

  // Simulate in commit order: which ops apply (checks decided on the simulated slot).
  const simTags = base.slots.map((s) => s.tag);
  const applies: boolean[] = [];
  let lastAcked = -1;
  for (let i = 0; i < ops.length; i++) {
    const op = ops[i]!;
    let ok = true;
    if (op.kind === 'b') {
      if (op.checkTag !== undefined && simTags[op.target] !== op.checkTag) ok = false;
      if (ok) simTags[op.target] = op.remove ? 0 : op.id;
    }
    applies.push(ok);
    const ack = acks.get(op.id);
    if (ack === undefined) continue;
    if (ack.version === 'F') {
      if (ok) errors.push(`op ${op.id} (slot ${op.target}, check of op ${op.checkTag}) was refused, but the slot then held op ${op.checkTag}`);
    } else {
      lastAcked = i;
      if (!ok) errors.push(`op ${op.id} (slot ${op.target}, check of op ${op.checkTag}) was acknowledged, but the slot then held op ${simTags[op.target]}`);
    }
  }
  if (errors.length > 0) fail(`checks decided against the commit order:\n  ${errors.slice(0, 12).join('\n  ')}`);

  // The state after the first c ops, c = 0, 1, …: the slots and TTL keys as the ops leave them.
  const slot = base.slots.map((s) => ({ ...s }));
  const ttl = base.ttl.map((t) => ({ ...t }));
  const slotMatches = (s: number): boolean => snap.slots[s]!.tags[0] === slot[s]!.tag;
  const ttlMatches = (k: number): boolean => {
    const want = ttl[k]!;
    const seen = snap.ttl[k] ?? null;
    if (want.tag === 0) return seen === null;
    if (seen === null) return want.expLo !== 0 && want.expLo <= snap.t1;
    return seen.tag === want.tag;
  };
  const bad = new Set<number>(); // slot s, or SLOTS + k for TTL key k
  for (let s = 0; s < SLOTS; s++) if (!slotMatches(s)) bad.add(s);
  for (let k = 0; k < TTL_KEYS; k++) if (!ttlMatches(k)) bad.add(SLOTS + k);
  let cutoff = -1;
  let fewest: { c: number; bad: number[] } | undefined;
  for (let c = 0; ; c++) {
    if (c > lastAcked) {
      if (bad.size === 0) {
        cutoff = c;
        break;
      }
      if (fewest === undefined || bad.size < fewest.bad.length) fewest = { c, bad: [...bad] };
    }
    if (c === ops.length) break;
    const op = ops[c]!;
    if (!applies[c]) continue;
    const ack = acks.get(op.id);
    const version = ack !== undefined && ack.version !== 'F' ? ack.version : NaN;
    if (op.kind === 'b') {
      slot[op.target] = op.remove ? { tag: 0, version: 0 } : { tag: op.id, version };
      if (slotMatches(op.target)) bad.delete(op.target);
      else bad.add(op.target);
    } else {
      ttl[op.target] =
        op.kind === 'd'
          ? { tag: 0, version: 0, expLo: 0, expHi: 0 }
          : op.ttl === 0
            ? { tag: op.id, version, expLo: 0, expHi: 0 }
            : { tag: op.id, version, expLo: op.wall! + op.ttl!, expHi: (ack?.at ?? deadAt) + op.ttl! };
      if (ttlMatches(op.target)) bad.delete(SLOTS + op.target);
      else bad.add(SLOTS + op.target);
    }
  }
  if (cutoff < 0) {
    const byId = new Map(ops.map((o, i) => [o.id, i]));
    const history = (key: number): string => {
      const isSlot = key < SLOTS;
      const target = isSlot ? key : key - SLOTS;
      const own = ops.filter((o) => (isSlot ? o.kind === 'b' : o.kind !== 'b') && o.target === target);
      const before = isSlot ? `op ${base.slots[target]!.tag}` : `op ${base.ttl[target]!.tag}`;
      const seen = isSlot ? `op ${snap.slots[target]!.tags[0]}` : JSON.stringify(snap.ttl[target]);
      const steps = own.map((o) => {
        const a = acks.get(o.id);
        const state = a === undefined ? 'unacked' : a.version === 'F' ? 'refused' : `acked v${a.version}`;
        const what = o.kind === 'b' ? `${o.remove ? 'delete' : 'put'}${o.checkTag !== undefined ? ` if op ${o.checkTag}` : ''}` : o.kind === 'd' ? 'delete' : `put ttl ${o.ttl}`;
        return `${o.id}#${byId.get(o.id)} ${what} (${state}${applies[byId.get(o.id)!] ? '' : ', check fails'})`;
      });
      return `${isSlot ? 'slot' : 'ttl key'} ${target}: before ${before}; found ${seen}; ops: ${steps.join(', ') || 'none'}`;
    };
    fail(
      `no prefix of the writer's ${ops.length} ops (last acknowledged: #${lastAcked}) gives what the store holds; ` +
        `closest: the first ${fewest!.c}, which ${fewest!.bad.length} keys contradict:\n  ${fewest!.bad.slice(0, 8).map(history).join('\n  ')}`,
    );
  }

  // Versions and deadlines of what was found.
  let expired = 0;
  const found: { index: number; version: number; what: string }[] = [];
  const indexOf = new Map(ops.map((o, i) => [o.id, i]));
  for (let s = 0; s < SLOTS; s++) {
    const want = slot[s]!;
    const got = snap.slots[s]!.versions[0];
    if (want.tag === 0) continue;
    if (!Number.isNaN(want.version) && got !== want.version) errors.push(`slot ${s} holds op ${want.tag} at version ${got}, not ${want.version}`);
    const index = indexOf.get(want.tag);
    if (index !== undefined) found.push({ index, version: got, what: `slot ${s}` });
  }
  for (let k = 0; k < TTL_KEYS; k++) {
    const want = ttl[k]!;
    const seen = snap.ttl[k] ?? null;
    if (want.tag === 0) continue;
    if (seen === null) {
      expired++;
      continue;
    }
    if (!Number.isNaN(want.version) && seen.version !== want.version) errors.push(`ttl key ${k} holds op ${want.tag} at version ${seen.version}, not ${want.version}`);
    if (want.expLo === 0 && seen.expiresAt !== 0) errors.push(`ttl key ${k} (op ${want.tag}, put with no TTL) expires at ${seen.expiresAt}`);
    if (want.expLo !== 0 && (seen.expiresAt < want.expLo || seen.expiresAt > want.expHi)) {
      errors.push(`ttl key ${k} (op ${want.tag}) expires at ${seen.expiresAt}, outside [${want.expLo}, ${want.expHi}]`);
    }
    if (seen.expiresAt !== 0 && seen.expiresAt <= snap.t0) errors.push(`ttl key ${k} (op ${want.tag}) was read after its deadline ${seen.expiresAt} (read from ${snap.t0})`);
    const index = indexOf.get(want.tag);
    if (index !== undefined) found.push({ index, version: seen.version, what: `ttl key ${k}` });
  }
  // Acknowledged versions and found versions grow with commit order, above what came before.
  for (const op of ops) {
    const a = acks.get(op.id);
    if (a !== undefined && a.version !== 'F') found.push({ index: indexOf.get(op.id)!, version: a.version, what: `ACK of op ${op.id}` });
  }
  found.sort((x, y) => x.index - y.index);
  for (let i = 0; i < found.length; i++) {
    const f = found[i]!;
    if (!(f.version > base.maxVersion)) errors.push(`${f.what} (op #${f.index}) has version ${f.version}, not newer than ${base.maxVersion} verified before`);
    const prev = found[i - 1];
    if (prev !== undefined && prev.index < f.index && !(prev.version < f.version)) {
      errors.push(`${prev.what} (op #${prev.index}) has version ${prev.version}, ${f.what} (op #${f.index}, later) ${f.version}`);
    }
    if (prev !== undefined && prev.index === f.index && prev.version !== f.version) {
      errors.push(`op #${f.index}: ${prev.what} says version ${prev.version}, ${f.what} ${f.version}`);
    }
  }
  if (errors.length > 0) fail(`versions or deadlines are wrong:\n  ${errors.slice(0, 12).join('\n  ')}`);

  // Transfers.
  const balances = snap.acct;
  if (balances.some((b) => b === null)) fail(`accounts are missing: ${JSON.stringify(balances)}`);
  const sum = balances.reduce((a: number, b) => a + b!, 0);
  if (sum !== ACCOUNTS * INITIAL_BALANCE) errors.push(`the balances sum to ${sum}, not ${ACCOUNTS * INITIAL_BALANCE}: ${JSON.stringify(balances)}`);
  const ledger = new Map(Object.entries(snap.ledger));
  for (let x = 0; x < ACCOUNTS; x++) {
    let expected = INITIAL_BALANCE;
    for (let y = 0; y < ACCOUNTS; y++) {
      if (y === x) continue;
      expected -= ledger.get(pairKey(x, y)) ?? 0;
      expected += ledger.get(pairKey(y, x)) ?? 0;
    }
    if (balances[x] !== expected) errors.push(`account ${x} holds ${balances[x]}, but the ledger says ${expected}: a transfer is half there, or two overwrote each other`);
  }
  const acked = new Map<string, number>();
  const possible = new Map<string, number>();
  for (const [tx, [a, b]] of run?.tx ?? []) {
    const key = pairKey(a, b);
    if (run!.txAcked.has(tx)) acked.set(key, (acked.get(key) ?? 0) + 1);
    if (!run!.txFailed.has(tx)) possible.set(key, (possible.get(key) ?? 0) + 1);
  }
  let txUnacked = 0;
  for (const key of new Set([...ledger.keys(), ...base.ledger.keys(), ...possible.keys()])) {
    const grew = (ledger.get(key) ?? 0) - (base.ledger.get(key) ?? 0);
    const lo = acked.get(key) ?? 0;
    const hi = possible.get(key) ?? 0;
    if (grew < lo || grew > hi) errors.push(`ledger ${key} grew by ${grew}: ${lo} transfers acknowledged on it, ${hi} issued and not refused`);
    txUnacked += Math.max(0, grew - lo);
  }
  if (errors.length > 0) fail(`transfers:\n  ${errors.slice(0, 12).join('\n  ')}`);

  // The new model: what was found.
  let maxVersion = base.maxVersion;
  for (const f of found) maxVersion = Math.max(maxVersion, f.version);
  const next: ModelState = {
    slots: snap.slots.map((s) => ({ tag: s.tags[0], version: s.versions[0] })),
    ttl: snap.ttl.map((t) => (t === null ? { tag: 0, version: 0, expLo: 0, expHi: 0 } : { tag: t.tag, version: t.version, expLo: t.expiresAt, expHi: t.expiresAt })),
    ledger,
    maxVersion,
  };
  let unackedApplied = 0;
  for (let i = lastAcked + 1; i < cutoff; i++) if (applies[i] && !acks.has(ops[i]!.id)) unackedApplied++;
  return { next, cutoff, unackedApplied, txUnacked, expired };
}

// ---------------------------------------------------------------------------------------
// The test's own checks

/** The verifier on the file as the kill left it (it only reads). */
async function verifyFile(dir: string, context: string): Promise<CheckReport> {
  const lock = await acquireStoreLock(dir);
  try {
    const media = await openFileMedia(path.join(dir, DATA_FILE_NAME), { size: KV_CAPACITY, create: false });
    try {
      const report = await checkStore(media);
      assert.deepEqual(report.problems, [], `${context}: the verifier finds problems in the store the kill left:\n${JSON.stringify(report.problems.slice(0, 10), null, 2)}`);
      return report;
    } finally {
      await media.close();
    }
  } finally {
    await lock.release();
  }
}

/** Opens the store, reads it whole, closes it. */
async function openAndRead(dir: string, context: string): Promise<{ recovery: RecoveryReport; snap: Snapshot; stats: { checkpoints: number } }> {
  const store = await open(dir, { capacity: KV_CAPACITY, segmentSize: KV_SEGMENT_SIZE }).catch((error: unknown) => {
    throw new Error(`${context}: the store does not open after the kill: ${String((error as Error)?.stack ?? error)}`);
  });
  try {
    const recovery = store.stats().lastRecovery;
    assert.ok(recovery !== undefined, `${context}: no recovery report`);
    assert.deepEqual(recovery.corruptions, [], `${context}: a SIGKILL leaves no corruption, but recovery reports some: ${JSON.stringify(recovery)}`);
    const snap = await readSnapshot(store).catch((error: unknown) => {
      throw new Error(`${context}: reading the store back failed: ${String((error as Error)?.stack ?? error)}`);
    });
    return { recovery, snap, stats: store.stats() };
  } finally {
    await store.close();
  }
}

/** A fresh store with the accounts in it. */
async function createStore(dir: string): Promise<void> {
  const store = await open(dir, { capacity: KV_CAPACITY, segmentSize: KV_SEGMENT_SIZE });
  try {
    const batch = store.atomic();
    for (let a = 0; a < ACCOUNTS; a++) batch.put(ACCT_POOL, acctKey(a), String(INITIAL_BALANCE));
    const r = await batch.commit();
    assert.ok(r.ok);
  } finally {
    await store.close();
  }
}

// ---------------------------------------------------------------------------------------

/**
 * The writers of the test: rounds of one writer (killed by the test, or torn inside a
 * write, with checkpoints often or rarely), and every fourth round a chain of three with no
 * check in between: one that tears a write, then two that die early, while they recover,
 * checkpoint or write their first batches.
 */
function plan(seed: number): WriterSpec[] {
  const rng = new Rng(seed);
  const specs: WriterSpec[] = [];
  const add = (label: string, args: string[], plan: KillPlan, check: boolean): void => {
    const i = specs.length;
    specs.push({ label, seed: deriveSeed(seed, i), firstId: (i + 1) * 1_000_000, firstTx: (i + 1) * 1_000_000, args, plan, check });
  };
  for (let round = 0; round < ROUNDS; round++) {
    const kind = round % 4;
    if (kind === 0) {
      // An early round is killed within a few ms of its first ACK.
      add(`round ${round}`, ['--checkpoint-bytes', String(512 * 1024)], { by: 'parent', after: 'ack', delayMs: round === 0 ? rng.int(0, 10) : rng.int(20, 400) }, true);
    } else if (kind === 1) {
      add(`round ${round}`, ['--checkpoint-bytes', String(256 * 1024)], { by: 'tear', from: 'ack', delayMs: rng.int(20, 400), write: rng.int(1, 4) }, true);
    } else if (kind === 2) {
      // Checkpoints rarely on their own, often on request: recovery replays more.
      add(
        `round ${round}`,
        ['--checkpoint-bytes', String(8 * 1024 * 1024), '--checkpoint-every', '60'],
        rng.next() < 0.5 ? { by: 'parent', after: 'ack', delayMs: rng.int(50, 500) } : { by: 'tear', from: 'ack', delayMs: rng.int(50, 500), write: rng.int(1, 6) },
        true,
      );
    } else {
      add(`round ${round} writer 0`, ['--checkpoint-bytes', String(8 * 1024 * 1024)], { by: 'tear', from: 'ack', delayMs: rng.int(20, 200), write: rng.int(1, 4) }, false);
      for (const k of [1, 2]) {
        const pick = rng.next();
        const p: KillPlan =
          pick < 0.45
            ? { by: 'tear', from: 'open', delayMs: 0, write: rng.int(1, 12) }
            : pick < 0.7
              ? { by: 'parent', after: 'opening', delayMs: rng.int(0, 60) }
              : { by: 'parent', after: 'ack', delayMs: rng.int(0, 20) };
        add(`round ${round} writer ${k}`, ['--checkpoint-at-open', '--checkpoint-bytes', String(64 * 1024), '--checkpoint-every', '30'], p, k === 2);
      }
    }
  }
  return specs;
}

test(`kv atomic batches, transactions and TTL ops survive SIGKILL whole or not at all (${ROUNDS} rounds)`, async (t) => {
  const seed = deriveSeed(SEED, 3);
  t.diagnostic(replay(SEED));
  const specs = plan(seed);
  let model = initialModel();
  const totals = {
    writers: 0,
    opsIssued: 0,
    opsAcked: 0,
    refused: 0,
    unackedApplied: 0,
    txAcked: 0,
    txUnackedApplied: 0,
    txConflicts: 0,
    expiredFound: 0,
    killedInOpen: 0,
    tornWrites: 0,
    recordsDropped: 0,
    recordsReplayed: 0,
    checkpoints: 0,
    segmentsCleaned: 0,
    expiredBytesReclaimed: 0,
    notes: 0,
  };
  let runsSince: string[] = [];
  let since = { ops: 0, settled: 0, tx: 0, txAcked: 0, unacked: 0, txUnacked: 0 };
  await withStoreDir(t, 'atomio-kv-crash-', async (dir) => {
    await createStore(dir);
    // Writes since the model was last brought up to date: by the writer whose ops those are.
    let pendingRun: WriterRun | undefined;
    const advance = (run: WriterRun | undefined, snap: Snapshot, context: string): Verdict => {
      try {
        const verdict = verify(model, run, snap);
        model = verdict.next;
        return verdict;
      } catch (error) {
        if (!(error instanceof ModelError)) throw error;
        const who = run === undefined ? 'no writes since the last check' : `${run.label}: ${run.ops.length} ops issued, ${run.acks.size} settled, ${run.tx.size} transfers`;
        throw new Error(`${context}: ${error.message}\n(${who})`, { cause: error });
      }
    };
    await runInTurn(specs, (spec) => kvWriter(dir, spec), async (i, run) => {
      const spec = specs[i]!;
      const context = `${spec.label}, writer seed ${spec.seed}, ${describePlan(spec.plan)}, ${replay(SEED)}`;
      totals.writers++;
      if (run.tear !== undefined) totals.tornWrites++;
      if (run.opened === undefined) totals.killedInOpen++;
      runsSince.push(`${spec.label}: ${describePlan(spec.plan)}${run.tear ? ` (tore ${run.tear})` : ''}`);
      // What the writer read at open: the state after the previous writer's ops.
      if (run.opened !== undefined) {
        const v = advance(pendingRun, run.opened.snapshot, `${context}, what the writer read at open`);
        totals.unackedApplied += v.unackedApplied;
        totals.txUnackedApplied += v.txUnacked;
        since.unacked += v.unackedApplied;
        since.txUnacked += v.txUnacked;
        pendingRun = run;
      } else if (run.ops.length > 0 || run.tx.size > 0) {
        throw new Error(`${context}: the writer wrote without reporting what it opened`);
      }
      totals.opsIssued += run.ops.length;
      since.ops += run.ops.length;
      since.settled += run.acks.size;
      since.tx += run.tx.size;
      since.txAcked += run.txAcked.size;
      for (const a of run.acks.values()) {
        if (a.version === 'F') totals.refused++;
        else totals.opsAcked++;
      }
      totals.txAcked += run.txAcked.size;
      totals.txConflicts += run.txFailed.size;
      const s = run.stats ?? run.opened?.stats ?? {};
      totals.checkpoints += s.checkpoints ?? 0;
      totals.segmentsCleaned += s.segmentsCleaned ?? 0;
      totals.expiredBytesReclaimed += s.expiredBytesReclaimed ?? 0;
      if (!spec.check) return;

      const started = performance.now();
      const report = await verifyFile(dir, context);
      totals.notes += report.notes.length;
      const { recovery, snap } = await openAndRead(dir, context);
      const v = advance(pendingRun, snap, context);
      pendingRun = undefined;
      totals.unackedApplied += v.unackedApplied;
      totals.txUnackedApplied += v.txUnacked;
      since.unacked += v.unackedApplied;
      since.txUnacked += v.txUnacked;
      totals.expiredFound += v.expired;
      totals.recordsDropped += recovery.recordsDropped;
      totals.recordsReplayed += recovery.recordsReplayed;
      t.diagnostic(
        `${runsSince.join('; ')}: ${since.ops} ops (${since.settled} settled, +${since.unacked} unacked applied), ` +
          `${since.tx} transfers (${since.txAcked} acked, +${since.txUnacked} unacked applied); check: ${describeRecovery(recovery)}, ` +
          `verifier ${report.totals.records} records, ${report.notes.length} notes; writer stats ${JSON.stringify(s)}; ` +
          `ms: opened ${run.ms.opened}, ACK 1 ${run.ms.firstAck}, dead ${run.ms.dead}, check ${Math.round(performance.now() - started)}`,
      );
      runsSince = [];
      since = { ops: 0, settled: 0, tx: 0, txAcked: 0, unacked: 0, txUnacked: 0 };
    });
    // Last, the verifier on the store as the test's own clean close left it.
    await verifyFile(dir, `after the last clean close, ${replay(SEED)}`);
  });
  t.diagnostic(`totals: ${JSON.stringify(totals)}`);
  assert.ok(totals.opsAcked > 0 && totals.txAcked > 0, `the writers acknowledged ops and transfers: ${JSON.stringify(totals)}`);
  if (ROUNDS >= 20) {
    // Only worth something if the kills met the machinery they are meant to test.
    assert.ok(totals.checkpoints > 0, `no checkpoint was written: ${JSON.stringify(totals)}`);
    assert.ok(totals.recordsReplayed > 0, `recovery never replayed a record: ${JSON.stringify(totals)}`);
    assert.ok(totals.segmentsCleaned > 0, `the cleaner never ran: ${JSON.stringify(totals)}`);
    assert.ok(totals.recordsDropped > 0, `no kill ever tore the log: ${JSON.stringify(totals)}`);
    assert.ok(totals.refused > 0, `no check ever failed: ${JSON.stringify(totals)}`);
  }
});

// ---------------------------------------------------------------------------------------
// The model on made-up states: it must accept what a correct engine can leave after a kill
// and refuse each broken promise.

test('the kv crash model accepts prefixes and refuses lost, half and out-of-order states', () => {
  const now = Date.now();
  const run: WriterRun = {
    label: 'made up',
    seed: 0,
    ops: [
      { id: 101, kind: 'b', target: 0, remove: false },
      { id: 102, kind: 'b', target: 1, remove: false },
      { id: 103, kind: 'p', target: 0, ttl: 0, wall: now - 100 },
      { id: 104, kind: 'b', target: 0, checkTag: 101, remove: false },
      { id: 105, kind: 'b', target: 2, remove: false },
      { id: 106, kind: 'd', target: 0 },
      { id: 107, kind: 'b', target: 1, checkTag: 999, remove: false },
      { id: 108, kind: 'p', target: 1, ttl: 60_000, wall: now - 100 },
    ],
    acks: new Map([
      [101, { version: 11, at: now - 50 }],
      [102, { version: 12, at: now - 50 }],
      [103, { version: 13, at: now - 50 }],
      [107, { version: 'F' as const, at: now - 50 }],
    ]),
    tx: new Map([
      [1, [0, 1]],
      [2, [1, 2]],
    ]),
    txAcked: new Set([1]),
    txFailed: new Set(),
    opened: undefined,
    stats: undefined,
    deadAt: now - 10,
    killedAfterMs: 0,
    tear: undefined,
    ms: {},
  };
  const base = (): ModelState => initialModel();
  interface Fake {
    slots?: Record<number, [number, number]>;
    ttl?: Record<number, { tag: number; version: number; expiresAt: number }>;
    acct?: number[];
    ledger?: Record<string, number>;
    tamper?: (s: Snapshot) => void;
  }
  const snap = (f: Fake): Snapshot => {
    const s: Snapshot = {
      t0: now,
      t1: now + 1,
      slots: Array.from({ length: SLOTS }, (_, i) => {
        const [tag, version] = f.slots?.[i] ?? [0, 0];
        return { tags: [tag, tag, tag, tag], versions: [version, version, version, version] };
      }),
      ttl: Array.from({ length: TTL_KEYS }, (_, k) => f.ttl?.[k] ?? null),
      acct: f.acct ?? Array.from({ length: ACCOUNTS }, () => INITIAL_BALANCE),
      ledger: f.ledger ?? {},
      problems: [],
    };
    f.tamper?.(s);
    return s;
  };
  const acctAfter = (...moves: [number, number][]): number[] => {
    const a = Array.from({ length: ACCOUNTS }, () => INITIAL_BALANCE);
    for (const [x, y] of moves) {
      a[x]!--;
      a[y]!++;
    }
    return a;
  };
  // Only what was acknowledged.
  const acked: Fake = {
    slots: { 0: [101, 11], 1: [102, 12] },
    ttl: { 0: { tag: 103, version: 13, expiresAt: 0 } },
    acct: acctAfter([0, 1]),
    ledger: { 'n:0:1': 1 },
  };
  const v = verify(base(), run, snap(acked));
  assert.equal(v.cutoff, 3);
  assert.equal(v.unackedApplied, 0);
  // Everything, the unacknowledged transfer too.
  const all: Fake = {
    slots: { 0: [104, 20], 1: [102, 12], 2: [105, 21] },
    ttl: { 1: { tag: 108, version: 23, expiresAt: now + 60_000 - 50 } },
    acct: acctAfter([0, 1], [1, 2]),
    ledger: { 'n:0:1': 1, 'n:1:2': 1 },
  };
  assert.equal(verify(base(), run, snap(all)).cutoff, 8);
  // The next round starts from what was found: nothing new, nothing changed.
  assert.equal(verify(verify(base(), run, snap(all)).next, undefined, snap(all)).cutoff, 0);

  const refused: [string, Fake, RegExp][] = [
    ['an acknowledged batch lost', { ...acked, slots: { 0: [101, 11] } }, /no prefix/],
    ['a hole: a later batch there, an earlier one not', { ...acked, slots: { 0: [101, 11], 1: [102, 12], 2: [105, 21] } }, /no prefix/],
    [
      'half a batch',
      { ...acked, tamper: (s) => (s.slots[0]!.tags[2] = 0) },
      /half applied/,
    ],
    ['a block range of another version', { ...acked, tamper: (s) => (s.slots[1]!.versions[3] = 9) }, /half applied/],
    ['a wrong version', { ...acked, slots: { 0: [101, 10], 1: [102, 12] } }, /version/],
    ['versions against commit order', { ...all, slots: { 0: [104, 20], 1: [102, 12], 2: [105, 19] } }, /version/],
    ['half a transfer', { ...acked, ledger: {} }, /half there/],
    ['an acknowledged transfer lost', { ...acked, acct: acctAfter(), ledger: {} }, /grew by 0/],
    ['a transfer never issued', { ...acked, acct: acctAfter([0, 1], [3, 4]), ledger: { 'n:0:1': 1, 'n:3:4': 1 } }, /grew by 1: 0/],
    ['a deadline out of bounds', { ...all, ttl: { 1: { tag: 108, version: 23, expiresAt: now + 120_000 } } }, /outside/],
    ['a TTL on a key put without one', { ...acked, ttl: { 0: { tag: 103, version: 13, expiresAt: now + 5000 } } }, /no TTL/],
    ['a store that holds what no op wrote', { ...acked, tamper: (s) => s.problems.push('garbage') }, /no op wrote/],
  ];
  for (const [what, fake, pattern] of refused) {
    assert.throws(() => verify(base(), run, snap(fake)), pattern, what);
  }
  // A refused check that the commit order says held.
  const lying = { ...run, ops: run.ops.map((o) => (o.id === 107 ? { ...o, checkTag: 102 } : o)) };
  assert.throws(() => verify(base(), lying, snap(acked)), /refused, but the slot then held/);
  // A TTL key is gone only once its deadline may have passed.
  const acks108 = new Map([...run.acks, [108, { version: 23, at: now - 40 }]]);
  const short = { ...run, acks: acks108, ops: run.ops.map((o) => (o.id === 108 ? { ...o, ttl: 50 } : o)) };
  assert.equal(verify(base(), short, snap({ ...all, ttl: {} })).expired, 1);
  assert.throws(() => verify(base(), { ...run, acks: acks108 }, snap({ ...all, ttl: {} })), /no prefix/);
  // ... and a key read after its deadline is refused.
  assert.throws(
    () => verify(base(), short, snap({ ...all, ttl: { 1: { tag: 108, version: 23, expiresAt: now - 30 } } })),
    /after its deadline/,
  );
});
