// Crash tests with a real process: a writer (writer.ts) keeps atomic batches in flight on a
// store and is SIGKILLed, either by the test at a random moment or by itself inside a write
// (a torn group commit, checkpoint, relocation or recovery write); the test then opens the
// store itself and holds it to the model (model.ts): every acknowledged batch there, no
// batch half there, the state a prefix of what was issued, versions right, no corruption
// reported. One store lives through all the rounds of a test, so the log grows across kills
// and recovery meets checkpoints, cleaned segments and earlier crashes.
//
//   ATOMIO_CRASH_ROUNDS        rounds of the main test (default 50)
//   ATOMIO_CRASH_EARLY_ROUNDS  rounds of the early-kill test (default 8, 3 writers each)
//   ATOMIO_SEED                replays a run: the writers' batches and the kill plans (not the
//                              exact instant a timed kill lands, which the machine decides)
//   ATOMIO_CRASH_KEEP=1        keeps the store directory (it is kept anyway when a check fails;
//                              it then holds the state after the test's own recovery)

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { open, type RecoveryReport } from '../../src/index.js';
import { replayHint, testSeed } from '../helpers/seed.js';
import { describePlan, describeRecovery, newChildRun, positiveInt, runInTurn, spawnWriter, type ChildRun, type KillableChild, type KillPlan, withStoreDir } from './child.js';
import { CAPACITY, LBA_RANGE, SEGMENT_SIZE, Rng, deriveSeed, type OpDesc } from './common.js';
import { Model, snapshotFrom, type WriterLog } from './model.js';

const WRITER = fileURLToPath(new URL('./writer.js', import.meta.url));
const THIS_FILE = 'dist/test/crash/sigkill.test.js';
const ROUNDS = positiveInt('ATOMIO_CRASH_ROUNDS', 50);
const SEED = testSeed();

function replay(seed: number): string {
  return replayHint(seed, THIS_FILE);
}

interface WriterRun extends ChildRun, WriterLog {
  opened: { recovery?: RecoveryReport } | undefined;
}

/** What it takes to start one writer. */
interface WriterSpec {
  label: string;
  seed: number;
  firstId: number;
  args: string[];
  plan: KillPlan;
}

/** Spawns a block writer (writer.ts); its ISSUE and ACK lines fill the run's batches. */
function blockWriter(dir: string, spec: WriterSpec): KillableChild<WriterRun> {
  const { seed, firstId, plan } = spec;
  const run: WriterRun = { ...newChildRun(spec.label, seed), issued: [], acked: new Map(), opened: undefined };
  const issuedOps = new Map<number, string>();
  const args = ['--dir', dir, '--seed', String(seed), '--first-id', String(firstId), ...spec.args];
  return spawnWriter(WRITER, args, plan, run, (words, line, ctx) => {
    const rest = line.slice(words[0]!.length + 1);
    switch (words[0]) {
      case 'ISSUE': {
        const [id, ops] = splitOnce(rest);
        run.issued.push({ id: Number(id), ops: JSON.parse(ops) as OpDesc[] });
        issuedOps.set(Number(id), ops);
        break;
      }
      case 'ACK': {
        const [id, more] = splitOnce(rest);
        const [version, ops] = splitOnce(more);
        if (issuedOps.get(Number(id)) !== ops) ctx.oddity(`ACK ${id} names ops that differ from its ISSUE line`);
        run.acked.set(Number(id), Number(version));
        ctx.acked();
        break;
      }
      default:
        ctx.oddity(`unexpected line from the writer: ${JSON.stringify(line.slice(0, 200))}`);
    }
  });
}

function splitOnce(text: string): [string, string] {
  const i = text.indexOf(' ');
  return i < 0 ? [text, ''] : [text.slice(0, i), text.slice(i + 1)];
}

interface CheckResult {
  recovery: RecoveryReport;
  unackedPresent: number[];
}

/** Opens the store after the kills, checks it against the model, closes it cleanly. */
async function checkStore(dir: string, model: Model, runs: WriterRun[], context: string): Promise<CheckResult> {
  const store = await open(dir, { capacity: CAPACITY, segmentSize: SEGMENT_SIZE }).catch((error: unknown) => {
    throw new Error(`${context}: the store does not open after the kill: ${String((error as Error)?.stack ?? error)}`);
  });
  try {
    const recovery = store.stats().lastRecovery;
    assert.ok(recovery !== undefined, `${context}: no recovery report`);
    assert.deepEqual(recovery.corruptions, [], `${context}: a SIGKILL leaves no corruption, but recovery reports some`);
    const data = await store.block.read(0, LBA_RANGE);
    const versions = new Float64Array(LBA_RANGE);
    for (const e of store.block.mapped(0, LBA_RANGE)) versions.fill(e.version, e.lba, e.lba + e.count);
    const snap = snapshotFrom(data, versions);
    const stray = store.block.mapped(LBA_RANGE, store.block.sectorCount - LBA_RANGE);
    if (stray.length > 0) snap.problems.push(`data outside the written range: ${JSON.stringify(stray.slice(0, 3))}`);
    const verdict = model.check(runs, snap);
    if (!verdict.ok) {
      const acked = runs.map((r) => `${r.label}: ${r.issued.length} issued, ${r.acked.size} acked, first id ${r.issued[0]?.id ?? '-'}`);
      throw new Error(`${context}: ${verdict.message}\n${acked.join('\n')}\nrecovery: ${JSON.stringify(recovery)}`);
    }
    const versionProblems: string[] = [];
    // versionOf at the first sector of every write of every acknowledged batch: at least the
    // batch's version unless a later trim emptied the sector, and what mapped() says (the
    // model compared mapped()'s versions for every sector).
    for (const run of runs) {
      for (const b of run.issued) {
        const acked = run.acked.get(b.id);
        if (acked === undefined) continue;
        for (const [lba, , kind] of b.ops) {
          if (kind !== 'w') continue;
          const v = store.block.versionOf(lba);
          if (v !== versions[lba]) versionProblems.push(`versionOf(${lba}) is ${v} but mapped() says ${versions[lba]}`);
          if (v !== 0 && v < acked) versionProblems.push(`versionOf(${lba}) is ${v}, older than acknowledged batch ${b.id} (version ${acked}) that wrote it`);
        }
      }
    }
    if (versionProblems.length > 0) {
      throw new Error(`${context}: versionOf:\n  ${versionProblems.slice(0, 10).join('\n  ')}\nrecovery: ${JSON.stringify(recovery)}`);
    }
    return { recovery, unackedPresent: verdict.unackedPresent };
  } catch (error) {
    if (error instanceof Error && error.message.startsWith(context)) throw error;
    throw new Error(`${context}: ${String((error as Error)?.stack ?? error)}`, { cause: error });
  } finally {
    await store.close();
  }
}

test(`acknowledged batches survive SIGKILL and no batch is half there (${ROUNDS} rounds)`, async (t) => {
  const seed = deriveSeed(SEED, 1);
  t.diagnostic(replay(SEED));
  const rng = new Rng(seed);
  const specs: WriterSpec[] = [];
  for (let round = 0; round < ROUNDS; round++) {
    specs.push({
      label: `round ${round}`,
      seed: deriveSeed(seed, round),
      firstId: (round + 1) * 1_000_000,
      // Every fourth round writes to 1024 lbas only and checkpoints rarely (when space runs
      // out), so segments die and are reused between checkpoints, with writes of up to
      // 64 KiB (written as parts); every third (of the others) checkpoints often, so kills
      // land in checkpoint writes; every fifth also asks for checkpoints (store.checkpoint())
      // while batches are queued. Rounds 1, 5, 9, … keep one batch in flight, so that most
      // commits are written on the event loop's thread, and their tears wait for such a write.
      args: [
        ...(round % 4 === 3
          ? ['--lbas', '1024', '--checkpoint-bytes', String(8 * 1024 * 1024), '--max-sectors', '128']
          : round % 3 === 2
            ? ['--checkpoint-bytes', String(256 * 1024)]
            : []),
        ...(round % 5 === 4 ? ['--checkpoint-every', '100'] : []),
        ...(round % 4 === 1 ? ['--in-flight', '1', '--tear-prefer', 'durable-sync'] : []),
      ],
      // Even rounds: the test kills the writer at a random moment (mostly in fdatasync).
      // Odd rounds: the writer kills itself inside a write (a torn group commit, checkpoint
      // or relocation).
      plan:
        round % 2 === 0
          ? { by: 'parent', after: 'ack', delayMs: rng.int(50, 400) }
          : { by: 'tear', from: 'ack', delayMs: rng.int(50, 400), write: rng.int(1, 4) },
    });
  }
  const model = new Model();
  // tornBy: how the torn writes were made (see TearingMedia).
  const totals = { acked: 0, unackedPresent: 0, dropped: 0, replayed: 0, checkpoints: 0, cleaned: 0, openedWithCheckpoint: 0, tornBy: {} as Record<string, number> };
  await withStoreDir(t, 'atomio-crash-', async (dir) => {
    await runInTurn(specs, (spec) => blockWriter(dir, spec), async (round, run) => {
      const spec = specs[round]!;
      const context = `round ${round}, writer seed ${spec.seed}, ${describePlan(spec.plan)}, ${replay(SEED)}`;
      const checking = performance.now();
      const { recovery, unackedPresent } = await checkStore(dir, model, [run], context);
      const checkMs = Math.round(performance.now() - checking);
      const s = run.stats ?? {};
      totals.acked += run.acked.size;
      totals.unackedPresent += unackedPresent[0] ?? 0;
      totals.dropped += recovery.recordsDropped;
      totals.replayed += recovery.recordsReplayed;
      totals.checkpoints += s.checkpoints ?? 0;
      totals.cleaned += s.segmentsCleaned ?? 0;
      if ((run.opened?.recovery?.checkpointSeq ?? 0) > 0) totals.openedWithCheckpoint++;
      if (run.tear !== undefined) {
        const how = run.tear.split(' ')[3] ?? '?';
        totals.tornBy[how] = (totals.tornBy[how] ?? 0) + 1;
      }
      t.diagnostic(
        `round ${round} seed ${spec.seed}: ${run.issued.length} issued, ${run.acked.size} acked, ` +
          `${unackedPresent[0]} unacked present; ${run.tear ? `tore write ${run.tear}` : `killed ${run.killedAfterMs?.toFixed(0)} ms after ACK 1`}; ` +
          `${describeRecovery(recovery)}; writer made ${s.checkpoints ?? 0} checkpoints, cleaned ${s.segmentsCleaned ?? 0} segments; ` +
          `ms: opened ${run.ms.opened}, ACK 1 ${run.ms.firstAck}, dead ${run.ms.dead}, check ${checkMs}`,
      );
    });
  });
  t.diagnostic(`totals: ${JSON.stringify(totals)}`);
  assert.ok(totals.acked > 0, 'the writers acknowledged batches');
  if (ROUNDS >= 20) {
    // The test is only worth something if the kills met the machinery it is meant to test.
    assert.ok(totals.checkpoints > 0, `no checkpoint was written during the rounds: ${JSON.stringify(totals)}`);
    assert.ok(totals.cleaned > 0, `the cleaner never ran during the rounds: ${JSON.stringify(totals)}`);
    assert.ok(totals.replayed > 0, `recovery never replayed a record: ${JSON.stringify(totals)}`);
    assert.ok(totals.dropped > 0, `no kill ever tore the log: ${JSON.stringify(totals)}`);
  }
  if (ROUNDS >= 40) {
    // The one-in-flight rounds' tears wait for a write made on the loop's thread (for a
    // while), most large-write rounds tear a pwritev of parts: with a dozen of each, both
    // paths are met.
    assert.ok((totals.tornBy['durable-sync'] ?? 0) > 0, `no kill tore a write made on the event loop's thread: ${JSON.stringify(totals)}`);
    assert.ok((totals.tornBy['durable-parts'] ?? 0) > 0, `no kill tore a write of parts: ${JSON.stringify(totals)}`);
  }
});

test('kills during open, recovery and the first checkpoints leave the store consistent', async (t) => {
  const rounds = positiveInt('ATOMIO_CRASH_EARLY_ROUNDS', 8);
  const seed = deriveSeed(SEED, 2);
  t.diagnostic(replay(SEED));
  const rng = new Rng(seed);
  // Each round: a writer killed mid-write leaves a crashed store; two more start on it with
  // no clean open in between, so that their own recovery has work to do, and are killed
  // early. Then the test checks.
  // - Even rounds chain recoveries: the first writer tears a write (so recovery drops a torn
  //   tail), the next two write on after their recovery with no checkpoint (so the recovery
  //   after them meets the log that the one before cut, and what was written since) and die
  //   inside one of their first writes (recovery's own, or the first batches') or a few ms
  //   after their first ACK.
  // - Odd rounds hit open and the first checkpoints: the next two take a checkpoint right
  //   after open and then every few batches, and die inside one of their first writes,
  //   while they open, or a few ms after their first ACK.
  const specs: WriterSpec[] = [];
  for (let i = 0; i < rounds * 3; i++) {
    const k = i % 3;
    const chain = Math.floor(i / 3) % 2 === 0;
    const pick = rng.next();
    let plan: KillPlan;
    let args: string[];
    if (k === 0) {
      plan =
        chain || pick < 0.5
          ? { by: 'tear', from: 'ack', delayMs: rng.int(20, 200), write: rng.int(1, 4) }
          : { by: 'parent', after: 'ack', delayMs: rng.int(20, 200) };
      args = [];
    } else if (chain) {
      plan = pick < 0.6 ? { by: 'tear', from: 'open', delayMs: 0, write: rng.int(1, 12) } : { by: 'parent', after: 'ack', delayMs: rng.int(0, 20) };
      args = ['--checkpoint-bytes', String(8 * 1024 * 1024)];
    } else {
      plan =
        pick < 0.4
          ? { by: 'tear', from: 'open', delayMs: 0, write: rng.int(1, 8) }
          : pick < 0.7
            ? { by: 'parent', after: 'opening', delayMs: rng.int(0, 60) }
            : { by: 'parent', after: 'ack', delayMs: rng.int(0, 20) };
      args = ['--checkpoint-at-open', '--checkpoint-bytes', String(64 * 1024), '--checkpoint-every', '40'];
    }
    specs.push({ label: `round ${Math.floor(i / 3)} writer ${k}`, seed: deriveSeed(seed, i), firstId: (i + 1) * 1_000_000, args, plan });
  }
  const model = new Model();
  // tornBy: how the torn writes were made (see TearingMedia), so a run shows which paths it tore.
  const totals = { killedInOpen: 0, wroteAfterDroppingTail: 0, tornWrites: 0, tornBy: {} as Record<string, number> };
  let runs: WriterRun[] = [];
  await withStoreDir(t, 'atomio-crash-', async (dir) => {
    await runInTurn(specs, (spec) => blockWriter(dir, spec), async (i, run) => {
      runs.push(run);
      if (i % 3 !== 2) return;
      const round = Math.floor(i / 3);
      const plans = specs.slice(i - 2, i + 1).map((s) => `writer seed ${s.seed} ${describePlan(s.plan)}`);
      const context = `round ${round}: ${plans.join(', ')}; ${replay(SEED)}`;
      const { recovery, unackedPresent } = await checkStore(dir, model, runs, context);
      const summary = runs.map(
        (r, j) =>
          `${r.acked.size}/${r.issued.length} acked, +${unackedPresent[j]} unacked` +
          (r.tear ? `, tore write ${r.tear}` : '') +
          (r.opened ? ` (its open: ${r.opened.recovery ? describeRecovery(r.opened.recovery) : '?'})` : ' (killed before open finished)'),
      );
      t.diagnostic(`round ${round}: ${plans.join(', ')}: ${summary.join('; ')}; check: ${describeRecovery(recovery)}`);
      for (const r of runs) {
        if (r.opened === undefined) totals.killedInOpen++;
        else if ((r.opened.recovery?.recordsDropped ?? 0) > 0 && r.issued.length > 0) totals.wroteAfterDroppingTail++;
        if (r.tear !== undefined) {
          totals.tornWrites++;
          const how = r.tear.split(' ')[3] ?? '?';
          totals.tornBy[how] = (totals.tornBy[how] ?? 0) + 1;
        }
      }
      runs = [];
    });
  });
  t.diagnostic(`totals: ${JSON.stringify(totals)}`);
});
