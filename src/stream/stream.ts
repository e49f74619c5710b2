// The stream face: a named append-only log of records with durable group-committed
// appends, reads from a sequence number, followers of the tail and retention.
//
// A stream lives in a reserved kv pool (see keys.ts for the layout) and writes through the
// engine's commit pipeline like every other face: concurrent appends share one write and
// one flush (group commit), and an append of several records is one atomic commit. The
// appends of one turn of the event loop go to the store as one run: one put of all their
// records under one key, so that an append costs the engine and the index a share of one
// entry, not an entry of its own. A stream at its count or bytes limit trims in those same
// commits (retentionRide), not in commits of its own.
//
// Sequence numbers come from a CommitSequence (src/kv/sequence.ts): given in call order,
// committed in call order, and gap-free among acknowledged appends, across failures (an
// append that fails takes those queued behind it down with it, and numbering resumes after
// the last one that landed) and across crashes (recovery keeps a prefix of the log).
//
// Invariants:
// - the records present are exactly first … last, no gap (trims remove a prefix);
// - runs do not overlap and follow each other with no gap: a run's first is the previous
//   run's first + count;
// - `last` is the newest acknowledged record (sequence.committed); records in flight are
//   not visible to reads until acknowledged;
// - records below the metadata's firstSeq are trimmed: only the oldest run may still hold
//   some; when the stream is empty the next record is last + 1;
// - trims and retention delete only whole runs of acknowledged records: never the
//   predecessor run that an append in flight is chained to, and never the newest run
//   without moving firstSeq in the same commit (so that `last` survives a reopen).

import { assert } from '../base/assert.js';
import { AtomioError } from '../base/errors.js';
import type { Condition, Engine, OpInput } from '../engine/engine.js';
import { MAX_ATOMIC_BYTES, MAX_ATOMIC_OPS, MAX_BATCHES_WRITING } from '../engine/limits.js';
import { checkOptionsObject, describe, type Value } from '../kv/encoding.js';
import { KvPool } from '../kv/pool.js';
import { CommitSequence, type Issue, type Sent } from '../kv/sequence.js';
import {
  END_KEY,
  FIRST_KEY,
  META_KEY,
  NO_RETENTION,
  RECORD_HEADER_BYTES,
  checkLimit,
  checkSeq,
  decodeMeta,
  encodeMeta,
  forEachRecord,
  runKey,
  runOf,
  seqBound,
  type Meta,
  type Retention,
  type Run,
} from './keys.js';

export type { Retention as StreamRetention } from './keys.js';

export interface StreamRecord {
  seq: number;
  /** The record's bytes. */
  value: Buffer;
  /** When it was appended: ms since the epoch, by the store's clock. */
  time: number;
}

export interface StreamReadOptions {
  /** Most records returned. Default 1000 (DEFAULT_READ_LIMIT). */
  limit?: number;
}

export interface TailOptions {
  /** Ends the iteration: the pending next() rejects with the signal's reason. */
  signal?: AbortSignal;
}

export interface StreamStats {
  /** Sequence number of the oldest record kept (last + 1 when the stream is empty). */
  first: number;
  /** Sequence number of the newest acknowledged record (0 when none ever was). */
  last: number;
  records: number;
  /** Bytes the records take in their pool: a key per run, time and length per record, record bytes. */
  bytes: number;
  /** Records acknowledged per second over the last 10 s (by the store's clock). */
  appendRate: number;
  /** Appends sent and not yet acknowledged. */
  inFlight: number;
  retention: Retention;
  /** The last error of background retention, if its last run failed. */
  retentionError: Error | undefined;
}

/** Records a read returns when no limit is given. */
export const DEFAULT_READ_LIMIT = 1000;
/** Records a tail follower reads at a time. */
const TAIL_CHUNK = 512;
/** Deletes per trim commit (one more op for the metadata). */
const TRIM_CHUNK = MAX_ATOMIC_OPS - 1;
/** Retention deletes that ride along with one run's commit, at most (see retentionRide). */
const RIDE_MAX_DELETES = 16;
const RATE_WINDOW_S = 10;
/** An age limit is enforced at least this often (and at most every 100 ms). */
const AGE_CHECK_MAX_MS = 60_000;

interface Waiter {
  resolve: () => void;
  reject: (error: unknown) => void;
}

type Resolve = (seqs: number | number[]) => void;
type Reject = (error: unknown) => void;

/** Appends of one turn that go to the store as one commit: one run. */
interface Group {
  /** appendSync's (numbers handed out at once) or append's. */
  sync: boolean;
  /** The records as the run stores them, in slab bytes [start, end): copied at the append call. */
  slab: Buffer;
  start: number;
  end: number;
  count: number;
  /** The append time of its records: the clock is read once, as the group forms. */
  time: number;
  /** Per caller (append's groups only), in call order: how its promise settles. */
  resolves: Resolve[];
  rejects: Reject[];
  /**
   * Per caller, when one of them passed an array: 0 for a single record, else the array's
   * length (undefined while every caller passed a single record, the common case).
   */
  shapes: number[] | undefined;
  /** The number the group's first record gets if nothing fails before it is sent (appendSync relies on it). */
  firstSeq: number;
}

/**
 * Groups gather their bytes in slabs of this size: one allocation serves many commits, and
 * nothing is reused (the engine may hold a run's bytes until the run has landed).
 */
const SLAB_BYTES = 64 * 1024;
/**
 * A group of fewer records than this goes as one commit. Each durable write costs some
 * 80 µs of CPU (the kernel's part and the thread-pool hand-off) against about 0.6 µs per
 * record, so a small group split in two pays a second write for little overlap: at 64
 * appenders in flight a split group took 2.9 – 3.3 µs of CPU per append, one commit 1.7 – 2.2.
 */
const SPLIT_MIN_RECORDS = 128;
const TWO_32 = 2 ** 32;
const SETTLED = Promise.resolve();

// A promise's resolving functions, taken without a closure per append (the executor runs
// synchronously inside the Promise constructor).
let takenResolve: Resolve | undefined;
let takenReject: Reject | undefined;
function take(resolve: Resolve, reject: Reject): void {
  takenResolve = resolve;
  takenReject = reject;
}
const takeOne = take as unknown as (resolve: (seq: number) => void, reject: Reject) => void;
const takeMany = take as unknown as (resolve: (seqs: number[]) => void, reject: Reject) => void;

export class Stream {
  private readonly pool: KvPool;
  private readonly sequence: CommitSequence;
  private meta: Meta;
  private readonly waiters = new Set<Waiter>();
  private readonly inFlight = new Set<Promise<unknown>>();
  private forming: Group | undefined;
  /** A failure of an appendSync's commit, thrown by the next appendSync or flush(). */
  private syncError: unknown;
  private closedError: AtomioError | undefined;
  private trimming: Promise<unknown> = Promise.resolve();
  private enforcing = false;
  private enforceAgain = false;
  private retentionError: Error | undefined;
  private ageTimer: NodeJS.Timeout | undefined;
  /** Records acknowledged per second, a ring of RATE_WINDOW_S buckets. */
  private readonly rateBuckets = new Float64Array(RATE_WINDOW_S);
  private rateSecond = 0;
  private readonly maxAppendBytes: number;
  /** The run most recently sent, and its key: the predecessor a chained commit names in its condition. */
  private sentRun: Run | undefined;
  private sentKey: Buffer | undefined;
  /** Where groups gather their bytes: the forming group ends at `slabUsed` (see SLAB_BYTES). */
  private slab = Buffer.allocUnsafe(0);
  private slabUsed = 0;

  /** @internal use store.stream(name) */
  constructor(
    private readonly engine: Engine,
    /** The stream's name, as store.streams() lists it. */
    readonly name: string,
    private readonly poolName: string,
    private readonly maxValueBytes: number,
  ) {
    this.pool = new KvPool(engine, poolName, maxValueBytes);
    this.meta = decodeMeta(this.pool.getSync(META_KEY));
    const lastKey = this.edgeKey(true);
    const last = lastKey === undefined ? this.meta.firstSeq - 1 : runEnd(runOf(lastKey)) - 1;
    this.sequence = new CommitSequence(last + 1);
    // A run is one kv value.
    this.maxAppendBytes = Math.min(MAX_ATOMIC_BYTES, engine.maxRecordBytes - 4096, maxValueBytes);
    this.armAgeTimer();
  }

  // -------------------------------------------------------------------------------------
  // Positions

  /** The newest acknowledged record's sequence number (0 before the first). */
  get last(): number {
    return this.sequence.committed;
  }

  /** The oldest record's sequence number; last + 1 when the stream is empty. */
  get first(): number {
    const key = this.edgeKey(false);
    return key === undefined ? this.sequence.committed + 1 : Math.max(runOf(key).first, this.meta.firstSeq);
  }

  /** The first or last run key in the pool (undefined when there is none). */
  private edgeKey(last: boolean): Buffer | undefined {
    return this.firstRunKey(END_KEY, last);
  }

  /** The key of the run that holds `seq` or, when none does, of the last run before it. */
  private runKeyAt(seq: number): Buffer | undefined {
    return this.firstRunKey(seqBound(seq + 1), true);
  }

  /** The first run key below `end` in key order (or, reversed, the last one). */
  private firstRunKey(end: Buffer, reverse: boolean): Buffer | undefined {
    let found: Buffer | undefined;
    this.engine.pools.named(this.poolName)?.index.forEachIn({ start: FIRST_KEY, end, reverse }, (key) => {
      found = key;
      return false;
    });
    return found;
  }

  // -------------------------------------------------------------------------------------
  // Appends

  /**
   * Appends one record, or several as one atomic commit. Resolves once durable with the
   * record's sequence number (an array for an array). Appends made in the same turn of the
   * event loop go to the store as one commit (up to MAX_ATOMIC_OPS records), and commits
   * queued together share one flush; the records of one commit carry the same append time.
   * If an append fails, those queued behind it fail too (with the same code) and nothing of
   * theirs is written: acknowledged sequence numbers never skip one.
   * @example const seq = await stream.append('{"event":"login"}');
   */
  append(record: Value): Promise<number>;
  append(records: readonly Value[]): Promise<number[]>;
  append(input: Value | readonly Value[]): Promise<number | number[]> {
    try {
      this.checkOpen();
      if (Array.isArray(input)) return this.appendMany(input as readonly Value[]);
      // One record, the common case: no list, no object beyond the promise.
      const length = recordLength(input as Value, this.maxAppendBytes - RECORD_HEADER_BYTES);
      const bytes = this.checkBytes(RECORD_HEADER_BYTES + length);
      const group = this.join(false, 1, bytes);
      const promise = new Promise<number>(takeOne);
      group.resolves.push(takenResolve!);
      group.rejects.push(takenReject!);
      group.shapes?.push(0);
      this.copyIn(group, input as Value);
      return promise;
    } catch (error) {
      return Promise.reject(error);
    }
  }

  private appendMany(list: readonly Value[]): Promise<number[]> {
    const bytes = this.prepare(list);
    const group = this.join(false, list.length, bytes);
    const promise = new Promise<number[]>(takeMany);
    group.resolves.push(takenResolve!);
    group.rejects.push(takenReject!);
    (group.shapes ??= new Array<number>(group.resolves.length - 1).fill(0)).push(list.length);
    for (const value of list) this.copyIn(group, value);
    return promise;
  }

  /**
   * append() without a promise, for stores opened with durability 'none': returns the
   * sequence number(s) the records get, at once. The write lands within the flush interval
   * (or at store.flush()); reads see it once the commit has gone through, a moment later.
   * A failure of its commit is thrown by the next appendSync() or flush() of this stream.
   */
  appendSync(record: Value): number;
  appendSync(records: readonly Value[]): number[];
  appendSync(input: Value | readonly Value[]): number | number[] {
    this.checkOpen();
    if (this.engine.durability !== 'none') {
      throw new AtomioError('ERR_ARGUMENT', "appendSync is for stores opened with durability 'none'; use await stream.append() on this one", {});
    }
    this.throwSyncError();
    if (this.sequence.draining !== undefined) throw this.sequence.cascadeError(this.sequence.draining, this.sequence.next);
    const many = Array.isArray(input);
    const list: readonly Value[] = many ? (input as readonly Value[]) : [input as Value];
    const bytes = this.prepare(list);
    const group = this.join(true, list.length, bytes);
    const first = group.firstSeq + group.count;
    for (const value of list) this.copyIn(group, value);
    return many ? range(first, list.length) : first;
  }

  /**
   * Waits for every append in flight and makes them durable (under durability 'none',
   * flushes the store); throws the failure of an appendSync's commit, if one failed.
   */
  async flush(): Promise<void> {
    this.checkOpen();
    this.sendGroup();
    await Promise.allSettled([...this.inFlight]);
    this.throwSyncError();
    await this.engine.flush();
  }

  /**
   * The group of appends being gathered in this turn that `count` more records of `bytes`
   * can join, with room for them; a full one (or one of the other kind) is sent first.
   */
  private join(sync: boolean, count: number, bytes: number): Group {
    let group = this.forming;
    if (group !== undefined && (group.sync !== sync || group.count + count > MAX_ATOMIC_OPS || group.end - group.start + bytes > this.maxAppendBytes)) {
      this.sendGroup();
      group = undefined;
    }
    if (group === undefined) {
      if (this.slabUsed + bytes > this.slab.length) this.newSlab(bytes);
      const made: Group = {
        sync,
        slab: this.slab,
        start: this.slabUsed,
        end: this.slabUsed,
        count: 0,
        time: Math.floor(this.engine.clock.now()),
        resolves: [],
        rejects: [],
        shapes: undefined,
        firstSeq: this.sequence.next,
      };
      this.forming = group = made;
      // A reaction to a settled promise: a microtask like queueMicrotask's, without the
      // async resource Node makes for each of those.
      void SETTLED.then(() => {
        if (this.forming === made) this.sendGroup();
      });
    } else if (group.end + bytes > group.slab.length) {
      // The forming group moves to a new slab with room to grow.
      this.newSlab(group.end - group.start + bytes);
      group.slab.copy(this.slab, 0, group.start, group.end);
      group.end -= group.start;
      group.start = 0;
      group.slab = this.slab;
    }
    this.slabUsed = group.end + bytes;
    return group;
  }

  private newSlab(bytes: number): void {
    this.slab = Buffer.allocUnsafe(Math.max(SLAB_BYTES, 2 * bytes));
    this.slabUsed = 0;
  }

  /** Copies a record (checked by the caller) to the end of the group's run, in the room join() made. */
  private copyIn(group: Group, value: Value): void {
    const out = group.slab;
    const at = group.end;
    const data = at + RECORD_HEADER_BYTES;
    let length: number;
    if (typeof value === 'string') length = out.write(value, data, 'utf8');
    else {
      out.set(value, data);
      length = value.length;
    }
    // [time: u48 BE][length: u32 BE], byte by byte (cheaper than the generic writers).
    const time = group.time;
    const high = Math.floor(time / TWO_32);
    const low = time - high * TWO_32;
    out[at] = high >>> 8;
    out[at + 1] = high;
    out[at + 2] = low >>> 24;
    out[at + 3] = low >>> 16;
    out[at + 4] = low >>> 8;
    out[at + 5] = low;
    out[at + 6] = length >>> 24;
    out[at + 7] = length >>> 16;
    out[at + 8] = length >>> 8;
    out[at + 9] = length;
    group.end = data + length;
    group.count++;
    assert(group.end <= this.slabUsed, 'a record fits the room join() made');
  }

  /** Sends the group being gathered (if any) as one commit, or as several. */
  private sendGroup(): void {
    const group = this.forming;
    if (group === undefined) return;
    this.forming = undefined;
    assert(group.end === this.slabUsed, 'the forming group ends the slab');
    const large = !group.sync && group.count >= SPLIT_MIN_RECORDS;
    const parts = large ? Math.min(group.resolves.length, MAX_BATCHES_WRITING - this.sequence.inFlight) : 1;
    if (parts >= 2) {
      // A large group, and room for more batches than this stream has in flight: as many
      // commits keep the engine encoding one while others are written, the medium writing
      // them side by side, and the appenders each one releases gathering the next group
      // meanwhile. As one commit, appenders that wait for their append before the next
      // would leave the CPU and the medium working in turn.
      for (const part of split(group, parts)) this.sendCommit(part);
      return;
    }
    this.sendCommit(group);
  }

  private sendCommit(group: Group): void {
    const count = group.count;
    const done = (first: number): void => {
      this.acknowledged(first, count);
      const resolves = group.resolves;
      const shapes = group.shapes;
      if (shapes === undefined) {
        for (let i = 0; i < resolves.length; i++) resolves[i]!(first + i);
        return;
      }
      let at = first;
      for (let i = 0; i < resolves.length; i++) {
        const n = shapes[i]!;
        resolves[i]!(n === 0 ? at : range(at, n));
        at += n === 0 ? 1 : n;
      }
    };
    const submit = (issue: Issue): Sent => this.send(group.slab.subarray(group.start, group.end), count, issue);
    if (!group.sync) {
      // Tracked and its failure handed to the callers by one reaction, not two.
      const settled: Promise<void> = this.sequence.run(count, submit, done).then(
        () => void this.inFlight.delete(settled),
        (error: unknown) => {
          this.inFlight.delete(settled);
          for (const reject of group.rejects) reject(error);
        },
      );
      this.inFlight.add(settled);
      return;
    }
    // appendSync handed out numbers from group.firstSeq on: they hold only if nothing
    // failed (or recovered from a failure) since.
    try {
      if (this.sequence.draining !== undefined) throw this.sequence.cascadeError(this.sequence.draining, group.firstSeq);
      if (this.sequence.next !== group.firstSeq) {
        throw new AtomioError('ERR_IO', `appendSync records from ${group.firstSeq} on were not written: a commit before them failed meanwhile`, { seq: group.firstSeq });
      }
      const { promise } = this.sequence.runNow(count, submit, done);
      this.track(promise.catch((error: unknown) => void (this.syncError ??= error)));
    } catch (error) {
      this.syncError ??= error;
    }
  }

  private throwSyncError(): void {
    if (this.syncError === undefined) return;
    const error = this.syncError;
    this.syncError = undefined;
    throw error;
  }

  private track(promise: Promise<unknown>): void {
    const settled: Promise<unknown> = promise.then(
      () => this.inFlight.delete(settled),
      () => this.inFlight.delete(settled),
    );
    this.inFlight.add(settled);
  }

  /** The bytes an array of records takes in a run, its records checked against the limits. */
  private prepare(list: readonly Value[]): number {
    if (list.length === 0) throw new AtomioError('ERR_ARGUMENT', 'append takes a record or a non-empty array of records', {});
    if (list.length > MAX_ATOMIC_OPS) {
      throw new AtomioError('ERR_LIMIT', `an append holds at most ${MAX_ATOMIC_OPS} records (MAX_ATOMIC_OPS), got ${list.length}`, {
        records: list.length,
        limit: MAX_ATOMIC_OPS,
      });
    }
    let bytes = 0;
    for (const value of list) bytes += RECORD_HEADER_BYTES + recordLength(value, this.maxAppendBytes - RECORD_HEADER_BYTES);
    return this.checkBytes(bytes);
  }

  /** `bytes`, when an append of that many bytes (headers included) fits one commit. */
  private checkBytes(bytes: number): number {
    if (bytes > this.maxAppendBytes) {
      throw new AtomioError('ERR_LIMIT', `an append holds ${bytes} bytes with its records' headers; at most ${this.maxAppendBytes} fit one commit on this store`, {
        bytes,
        limit: this.maxAppendBytes,
      });
    }
    return bytes;
  }

  /** Sends one group's commit: the put of its run, chained to the run before it. */
  private send(run: Buffer, count: number, issue: Issue): Sent {
    this.checkOpen();
    const key = runKey(issue.first, count);
    const ops: OpInput[] = [{ type: 'put', pool: this.poolName, key, value: run, ttlMs: 0 }];
    const conditions: Condition[] = [];
    if (issue.chained) {
      const before = this.sentRun;
      assert(before !== undefined && this.sentKey !== undefined && runEnd(before) === issue.first, 'a chained run follows the run sent before it');
      conditions.push({ kind: 'key', pool: this.poolName, key: this.sentKey, expect: 'present' });
    }
    const limit = this.retentionRide(issue.first, count, key.length + run.length, ops);
    this.sentRun = { first: issue.first, count };
    this.sentKey = key;
    let promise = this.engine.commit(ops, conditions, 0);
    if (limit !== undefined) {
      promise = promise.then((version) => {
        this.meta.firstSeq = Math.max(this.meta.firstSeq, limit);
        return version;
      });
    }
    return { promise, chainIndex: issue.chained ? 0 : undefined };
  }

  /**
   * Adds to a run's commit (`ops`) what keeps the stream within its count and bytes limits
   * once the run lands: the deletes of the oldest runs and the move of firstSeq. A stream at
   * its limits then spends no commit of its own (no second write or flush) on retention.
   * Returns the new firstSeq, or undefined when it stays (deletes of whole runs may still
   * ride along, as a trim's chunks do). Only runs already acknowledged and before the run
   * sent last (which a chained commit names) go, at most RIDE_MAX_DELETES of them;
   * enforce() trims what is left.
   */
  private retentionRide(first: number, count: number, runBytes: number, ops: OpInput[]): number | undefined {
    const { count: keep, bytes } = this.meta.retention;
    if (keep === 0 && bytes === 0) return undefined;
    const floor = this.meta.firstSeq;
    let cut = floor;
    if (keep > 0) cut = Math.max(cut, first + count - keep);
    if (bytes > 0) cut = Math.max(cut, this.cutForBytes(bytes, floor, runBytes));
    // Every record before `first` has landed once this commit applies: it is chained to them.
    // Only the oldest run left may hold records below firstSeq, so with more than one run in
    // flight ahead of this one the cut stops at the run sent last.
    let limit = Math.min(cut, first);
    if (this.sequence.inFlight > 1 && this.sentRun !== undefined) limit = Math.min(limit, this.sentRun.first);
    if (limit <= floor) return undefined;
    const bound = Math.min(limit, this.sentRun?.first ?? limit);
    let deletes = 0;
    this.engine.pools.named(this.poolName)?.index.forEachIn({ start: FIRST_KEY, end: END_KEY }, (key) => {
      const end = runEnd(runOf(key));
      if (end > bound) return false;
      if (deletes === RIDE_MAX_DELETES) {
        // Only whole runs are cut then: the oldest run left is the only one below firstSeq.
        limit = Math.min(limit, runOf(key).first);
        return false;
      }
      ops.push({ type: 'delete', pool: this.poolName, key });
      deletes++;
      return true;
    });
    if (limit <= floor) return undefined;
    ops.push(this.metaPut((m) => ({ ...m, firstSeq: Math.max(m.firstSeq, limit) })));
    return limit;
  }

  /** After an append's commit: wake followers, count the rate, apply retention. */
  private acknowledged(first: number, count: number): void {
    const second = Math.floor(this.engine.clock.now() / 1000);
    if (second !== this.rateSecond) {
      const gap = Math.min(RATE_WINDOW_S, Math.max(0, second - this.rateSecond));
      for (let i = 1; i <= gap; i++) this.rateBuckets[(this.rateSecond + i) % RATE_WINDOW_S] = 0;
      this.rateSecond = second;
    }
    this.rateBuckets[second % RATE_WINDOW_S]! += count;
    this.wake();
    if (this.retentionDue()) this.scheduleRetention();
  }

  /**
   * Whether the records may exceed a count or bytes limit (cheap: checked after every
   * commit). Age limits are applied on their timer, as records age with time.
   */
  private retentionDue(): boolean {
    const { count, bytes } = this.meta.retention;
    // meta.firstSeq <= first: last - meta.firstSeq + 1 bounds the records kept from above.
    if (count > 0 && this.sequence.committed - this.meta.firstSeq + 1 > count) return true;
    return bytes > 0 && this.recordBytes() > bytes;
  }

  // -------------------------------------------------------------------------------------
  // Reads

  /**
   * Records from `fromSeq` on (from the oldest kept one when it was trimmed), in order, at
   * most `limit`. Only acknowledged records are seen.
   * @example for (const r of await stream.read(1, { limit: 100 })) console.log(r.seq, r.value.toString());
   */
  async read(fromSeq = 0, options: StreamReadOptions = {}): Promise<StreamRecord[]> {
    this.checkOpen();
    const { from, limit } = this.readArguments(fromSeq, options);
    const out: StreamRecord[] = [];
    if (limit === 0) return out;
    const { start, first } = this.readStart(from);
    // Each run holds at least one record: `limit` runs hold every record wanted.
    for await (const e of this.pool.list({ start, end: END_KEY, limit })) {
      if (!collect(e.key, e.value, first, out, limit)) break;
    }
    return out;
  }

  /** read() without a promise: values not in memory are read with blocking calls. */
  readSync(fromSeq = 0, options: StreamReadOptions = {}): StreamRecord[] {
    this.checkOpen();
    const { from, limit } = this.readArguments(fromSeq, options);
    const out: StreamRecord[] = [];
    if (limit === 0) return out;
    const { start, first } = this.readStart(from);
    for (const e of this.pool.listSync({ start, end: END_KEY, limit })) {
      if (!collect(e.key, e.value, first, out, limit)) break;
    }
    return out;
  }

  /** Where a read from `from` starts: the first record it may return, and the key of the run that holds it (or a bound before the runs after it). */
  private readStart(from: number): { start: Buffer; first: number } {
    const first = Math.max(from, this.first);
    const key = this.runKeyAt(first);
    return { start: key !== undefined && runEnd(runOf(key)) > first ? key : seqBound(first), first };
  }

  /** The record `seq`, or undefined when it was trimmed or is not there yet. */
  async get(seq: number): Promise<StreamRecord | undefined> {
    this.checkOpen();
    const s = checkSeq(seq, 'seq');
    if (s < this.first) return undefined;
    const key = this.runKeyAt(s);
    if (key === undefined) return undefined;
    const run = runOf(key);
    if (s >= runEnd(run)) return undefined;
    const e = await this.pool.getEntry(key);
    if (e === undefined) return undefined;
    let found: StreamRecord | undefined;
    forEachRecord(e.value, run.count, (i, time, value) => {
      if (run.first + i < s) return true;
      found = { seq: s, value, time };
      return false;
    });
    return found;
  }

  private readArguments(fromSeq: number, options: StreamReadOptions): { from: number; limit: number } {
    const from = checkSeq(fromSeq, 'fromSeq');
    if (options === null || typeof options !== 'object') throw new AtomioError('ERR_ARGUMENT', `read options are an object, not ${describe(options)}`, {});
    const limit = options.limit ?? DEFAULT_READ_LIMIT;
    if (typeof limit !== 'number' || !Number.isSafeInteger(limit) || limit < 0) {
      throw new AtomioError('ERR_ARGUMENT', `limit is a non-negative integer, not ${describe(limit)}`, {});
    }
    return { from: Math.max(1, from), limit };
  }

  /**
   * Every record from `fromSeq` on (default: the oldest kept), then each new one as it is
   * acknowledged, in order, each once; until `signal` aborts (the pending next() rejects
   * with its reason), the loop breaks, or the store closes (ERR_CLOSED). Records that
   * retention or trimBefore() removed before the follower reached them are skipped: the
   * follower goes on from the oldest kept record (the gap shows in the sequence numbers).
   * @example for await (const r of stream.tail(stream.last + 1, { signal })) handle(r);
   */
  tail(fromSeq?: number, options: TailOptions = {}): AsyncIterableIterator<StreamRecord> {
    this.checkOpen();
    const from = fromSeq === undefined ? undefined : checkSeq(fromSeq, 'fromSeq');
    checkOptionsObject(options, 'tail');
    const signal = options.signal;
    if (signal !== undefined && !(signal instanceof AbortSignal)) {
      throw new AtomioError('ERR_ARGUMENT', `signal is an AbortSignal, not ${describe(signal)}`, {});
    }
    return this.follow(from, signal);
  }

  private async *follow(fromSeq: number | undefined, signal: AbortSignal | undefined): AsyncGenerator<StreamRecord, void, undefined> {
    let position = fromSeq ?? this.first;
    while (true) {
      signal?.throwIfAborted();
      const records = await this.read(position, { limit: TAIL_CHUNK });
      if (records.length > 0) {
        for (const r of records) {
          // An abort ends the iteration at once, not after the rest of what was read.
          signal?.throwIfAborted();
          yield r;
        }
        position = records[records.length - 1]!.seq + 1;
        continue;
      }
      // Nothing at or after `position` yet (or it was trimmed: then records past it exist).
      if (position <= this.sequence.committed) {
        position = Math.max(position, this.first);
        continue;
      }
      await this.changed(signal);
    }
  }

  /** Resolves at the next acknowledged append (or trim); rejects on abort or close. */
  private changed(signal: AbortSignal | undefined): Promise<void> {
    this.checkOpen();
    return new Promise<void>((resolve, reject) => {
      const onAbort = (): void => {
        this.waiters.delete(waiter);
        reject(signal!.reason);
      };
      const waiter: Waiter = {
        resolve: () => {
          signal?.removeEventListener('abort', onAbort);
          resolve();
        },
        reject: (error) => {
          signal?.removeEventListener('abort', onAbort);
          reject(error);
        },
      };
      if (signal?.aborted) {
        reject(signal.reason);
        return;
      }
      signal?.addEventListener('abort', onAbort, { once: true });
      this.waiters.add(waiter);
    });
  }

  private wake(): void {
    if (this.waiters.size === 0) return;
    const waiters = [...this.waiters];
    this.waiters.clear();
    for (const w of waiters) w.resolve();
  }

  // -------------------------------------------------------------------------------------
  // Trimming and retention

  /**
   * Deletes every record before `seq` (records not yet acknowledged stay; so does nothing
   * at or after `seq`), in commits of up to 1023 deletes from the oldest on: a crash
   * midway leaves a shorter prefix deleted, never a hole. Resolves with the new first.
   */
  trimBefore(seq: number): Promise<number> {
    try {
      this.checkOpen();
      const s = checkSeq(seq, 'seq');
      return this.serialize(() => this.trim(s));
    } catch (error) {
      return Promise.reject(error);
    }
  }

  private serialize<T>(job: () => Promise<T>): Promise<T> {
    const run = this.trimming.then(job, job);
    this.trimming = run.catch(() => undefined);
    return run;
  }

  private async trim(seq: number): Promise<number> {
    const limit = Math.min(seq, this.sequence.committed + 1);
    if (limit <= this.first) return this.first;
    while (true) {
      this.checkOpen();
      // The runs wholly before `limit`, oldest first, and whether a run follows them.
      const keys: Buffer[] = [];
      let following = false;
      this.engine.pools.named(this.poolName)?.index.forEachIn({ start: FIRST_KEY, end: END_KEY }, (key) => {
        if (keys.length === TRIM_CHUNK || runEnd(runOf(key)) > limit) {
          following = true;
          return false;
        }
        keys.push(key);
        return true;
      });
      const ops: OpInput[] = keys.map((key) => ({ type: 'delete', pool: this.poolName, key }));
      // The commit that deletes the newest run moves firstSeq too, or a crash after it
      // would reopen the stream with `last` back at the old firstSeq - 1.
      const lastChunk = keys.length < TRIM_CHUNK || !following;
      if (lastChunk) ops.push(this.metaPut((m) => ({ ...m, firstSeq: Math.max(m.firstSeq, limit) })));
      await this.engine.commit(ops, [], 0);
      if (lastChunk) {
        this.meta.firstSeq = Math.max(this.meta.firstSeq, limit);
        break;
      }
    }
    this.wake();
    return this.first;
  }

  /** A put of the metadata made by `change` from what the store holds when the commit is admitted. */
  private metaPut(change: (m: Meta) => Meta): OpInput {
    return { type: 'put', pool: this.poolName, key: META_KEY, value: (current) => encodeMeta(change(decodeMeta(current))), ttlMs: 0 };
  }

  /**
   * Sets what the stream keeps (durable when this resolves) and applies it: the newest
   * `count` records, the newest `bytes` of records, the records younger than `age` ms; 0
   * lifts a limit, an absent one stays as it was. Count and bytes limits then apply after
   * appends, an age limit on a timer; without arguments this applies the limits now.
   * @example await stream.retain({ count: 1_000_000, age: 7 * 24 * 3600_000 });
   */
  async retain(limits?: Partial<Retention>): Promise<void> {
    this.checkOpen();
    if (limits !== undefined) {
      if (limits === null || typeof limits !== 'object') throw new AtomioError('ERR_ARGUMENT', `retain takes { count?, bytes?, age? }, not ${describe(limits)}`, {});
      const count = checkLimit(limits.count, 'count');
      const bytes = checkLimit(limits.bytes, 'bytes');
      const age = checkLimit(limits.age, 'age');
      const merge = (r: Retention): Retention => ({ count: count ?? r.count, bytes: bytes ?? r.bytes, age: age ?? r.age });
      await this.serialize(async () => {
        await this.engine.commit([this.metaPut((m) => ({ ...m, retention: merge(m.retention) }))], [], 0);
        this.meta.retention = merge(this.meta.retention);
      });
      this.armAgeTimer();
    }
    await this.serialize(() => this.enforce());
  }

  /** The retention limits in force (0: none). */
  retention(): Retention {
    return { ...this.meta.retention };
  }

  private scheduleRetention(): void {
    if (this.enforcing) {
      this.enforceAgain = true;
      return;
    }
    this.enforcing = true;
    setImmediate(() => {
      this.serialize(() => this.enforce()).then(
        () => {
          this.retentionError = undefined;
        },
        (error: unknown) => {
          this.retentionError = error instanceof Error ? error : new Error(String(error));
        },
      ).finally(() => {
        this.enforcing = false;
        if (this.enforceAgain && this.closedError === undefined) {
          this.enforceAgain = false;
          this.scheduleRetention();
        }
      });
    });
  }

  /** Trims what the retention limits no longer keep. */
  private async enforce(): Promise<void> {
    if (this.closedError !== undefined) return;
    const { count, bytes, age } = this.meta.retention;
    const last = this.sequence.committed;
    const first = this.first;
    if (first > last) return;
    let cut = first;
    if (count > 0) cut = Math.max(cut, last - count + 1);
    if (bytes > 0) cut = Math.max(cut, this.cutForBytes(bytes, first));
    if (age > 0) cut = Math.max(cut, await this.cutForAge(this.engine.clock.now() - age, Math.max(first, cut), last));
    if (cut > first) await this.trim(cut);
  }

  /**
   * The first record to keep so that the runs from it on take at most `limit` bytes: whole
   * runs go, as a trim frees nothing of a run it cuts through.
   */
  private cutForBytes(limit: number, first: number, extra = 0): number {
    let total = this.recordBytes() + extra;
    let cut = first;
    if (total <= limit) return cut;
    this.engine.pools.named(this.poolName)?.index.forEachIn({ start: FIRST_KEY, end: END_KEY }, (key, meta) => {
      total -= key.length + meta.valueBytes;
      cut = Math.max(cut, runEnd(runOf(key)));
      return total > limit;
    });
    return cut;
  }

  /** The first record in [from, last] appended after `cutoff` (last + 1 when none is); by binary search. */
  private async cutForAge(cutoff: number, from: number, last: number): Promise<number> {
    let lo = from;
    let hi = last + 1;
    while (lo < hi) {
      const mid = lo + Math.floor((hi - lo) / 2);
      const r = await this.get(mid);
      // A record trimmed meanwhile counts as old; one exactly `age` old is kept (at most `age` ms ago).
      if (r === undefined || r.time < cutoff) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  private armAgeTimer(): void {
    clearInterval(this.ageTimer);
    this.ageTimer = undefined;
    const age = this.meta.retention.age;
    if (age <= 0 || this.closedError !== undefined) return;
    const every = Math.min(AGE_CHECK_MAX_MS, Math.max(100, Math.floor(age / 4)));
    this.ageTimer = setInterval(() => this.scheduleRetention(), every);
    this.ageTimer.unref();
  }

  // -------------------------------------------------------------------------------------
  // Stats and life cycle

  /** Bytes the records take in the pool (the metadata entry left out). */
  private recordBytes(): number {
    const pool = this.engine.pools.named(this.poolName);
    if (pool === undefined) return 0;
    const meta = pool.index.get(META_KEY);
    return pool.liveBytes - (meta === undefined ? 0 : META_KEY.length + meta.valueBytes);
  }

  stats(): StreamStats {
    this.checkOpen();
    const first = this.first;
    const last = this.sequence.committed;
    const second = Math.floor(this.engine.clock.now() / 1000);
    let appended = 0;
    for (let i = 0; i < RATE_WINDOW_S; i++) {
      const bucketSecond = second - i;
      if (bucketSecond <= this.rateSecond && bucketSecond > this.rateSecond - RATE_WINDOW_S) appended += this.rateBuckets[bucketSecond % RATE_WINDOW_S]!;
    }
    return {
      first,
      last,
      records: Math.max(0, last - first + 1),
      bytes: this.recordBytes(),
      appendRate: appended / RATE_WINDOW_S,
      inFlight: this.sequence.inFlight,
      retention: this.retention(),
      retentionError: this.retentionError,
    };
  }

  /** @internal the store closed, or the stream was dropped: followers end with `error`. */
  close(error: AtomioError): void {
    if (this.closedError !== undefined) return;
    this.closedError = error;
    clearInterval(this.ageTimer);
    const waiters = [...this.waiters];
    this.waiters.clear();
    for (const w of waiters) w.reject(error);
  }

  /** @internal appends and trims settled (before a drop). */
  async settled(): Promise<void> {
    this.sendGroup();
    await Promise.allSettled([...this.inFlight, this.trimming]);
  }

  private checkOpen(): void {
    if (this.closedError !== undefined) throw this.closedError;
    this.engine.assertOpen();
  }
}

function range(first: number, count: number): number[] {
  const out: number[] = new Array(count);
  for (let i = 0; i < count; i++) out[i] = first + i;
  return out;
}

/** The stored length of a record (checked: a string or a Uint8Array of at most `max` bytes). */
function recordLength(value: Value, max: number): number {
  let length: number;
  if (typeof value === 'string') length = Buffer.byteLength(value, 'utf8');
  else if (value instanceof Uint8Array) length = value.length;
  else throw new AtomioError('ERR_ARGUMENT', `a record is a string or a Uint8Array, not ${describe(value)}`, {});
  if (length > max) {
    throw new AtomioError('ERR_LIMIT', `a record holds ${length} bytes; the limit on this store is ${max}`, { recordBytes: length, limit: max });
  }
  return length;
}

/** The sequence number after a run's last record. */
function runEnd(run: Run): number {
  return run.first + run.count;
}

/** Adds the records of a run from `from` on to `out`, up to `limit` in all; false once it holds `limit`. */
function collect(key: Buffer, value: Buffer, from: number, out: StreamRecord[], limit: number): boolean {
  const run = runOf(key);
  forEachRecord(value, run.count, (i, time, bytes) => {
    const seq = run.first + i;
    if (seq >= from) out.push({ seq, value: bytes, time });
    return out.length < limit;
  });
  return out.length < limit;
}

export { NO_RETENTION };

/** A group of appends cut into `parts` groups between callers, each with its own records. */
function split(group: Group, parts: number): Group[] {
  const out: Group[] = [];
  const callers = group.resolves.length;
  let from = 0;
  let firstSeq = group.firstSeq;
  let start = group.start;
  for (let p = 0; p < parts; p++) {
    const to = Math.round((callers * (p + 1)) / parts);
    // The part's records: one per caller, or an array's length; their bytes follow each other.
    let count = 0;
    for (let c = from; c < to; c++) count += group.shapes === undefined || group.shapes[c] === 0 ? 1 : group.shapes[c]!;
    let end = start;
    for (let r = 0; r < count; r++) end += RECORD_HEADER_BYTES + group.slab.readUInt32BE(end + 6);
    out.push({
      sync: false,
      slab: group.slab,
      start,
      end,
      count,
      time: group.time,
      resolves: group.resolves.slice(from, to),
      rejects: group.rejects.slice(from, to),
      shapes: group.shapes?.slice(from, to),
      firstSeq,
    });
    firstSeq += count;
    start = end;
    from = to;
  }
  assert(from === callers && firstSeq === group.firstSeq + group.count && start === group.end, 'the parts hold every append of the group');
  return out;
}
