// store.transaction(fn): optimistic, serializable transactions over kv pools and the block
// face.
//
// A transaction reads the store as it is (plus its own writes, which it sees) and records
// what it read: each key's version (or its absence), each listed range's keys and versions,
// each block range's newest version. Its writes are buffered. At commit the reads become
// conditions of one atomic commit: if anything read has changed, the engine refuses the
// commit and the function runs again, on fresh reads, up to `retries` times; then
// ERR_CONFLICT. A transaction that wrote nothing commits nothing: its reads are checked
// against the store at one moment instead, which is where it serializes.

import { setTimeout as sleep } from 'node:timers/promises';
import { AtomioError, isAtomioError } from '../base/errors.js';
import type { BlockDevice } from '../block/block.js';
import type { Condition, Engine, OpInput } from '../engine/engine.js';
import { MAX_ATOMIC_OPS, MAX_TRANSACTION_READS } from '../engine/limits.js';
import { checkOptionsObject, checkPoolName, checkTtl, lookupKey, ownedKey, ownedValue, type Key, type Value } from '../kv/encoding.js';
import { counterUpdate, listArguments, type Entry, type ListOptions } from '../kv/pool.js';

export interface TransactionOptions {
  /** Re-runs after a conflict before giving up with ERR_CONFLICT. Default 16. */
  retries?: number;
}

const DEFAULT_RETRIES = 16;

interface OwnWrite {
  /** undefined: deleted. */
  value: Buffer | undefined;
  ttlMs: number;
}

export class Transaction {
  private readonly reads = new Map<string, Condition>();
  private readonly ranges: Condition[] = [];
  private readonly writes = new Map<string, { pool: string; key: Buffer; write: OwnWrite }>();
  private readonly blockOps: OpInput[] = [];
  private done = false;

  /** @internal use store.transaction() */
  constructor(
    private readonly engine: Engine,
    private readonly block: BlockDevice,
    private readonly maxValueBytes: number,
  ) {}

  // -------------------------------------------------------------------------------------
  // kv

  async get(pool: string, key: Key): Promise<Buffer | undefined> {
    return (await this.getEntry(pool, key))?.value;
  }

  async getEntry(pool: string, key: Key): Promise<Entry | undefined> {
    this.open();
    const name = checkPoolName(pool);
    const k = ownedKey(key);
    const own = this.writes.get(writeKey(name, k));
    if (own !== undefined) {
      if (own.write.value === undefined) return undefined;
      const expiresAt = own.write.ttlMs > 0 ? this.engine.clock.now() + own.write.ttlMs : 0;
      return { key: k, value: Buffer.from(own.write.value), version: 0, expiresAt };
    }
    const p = this.engine.pools.named(name);
    const meta = this.engine.liveEntry(p, k);
    this.recordRead(name, k, meta?.version);
    if (meta === undefined) return undefined;
    const value = await this.engine.readValue(p!, k, meta);
    return { key: k, value, version: meta.version, expiresAt: meta.expiresAt };
  }

  has(pool: string, key: Key): boolean {
    this.open();
    const name = checkPoolName(pool);
    const own = this.writes.get(writeKey(name, lookupKey(key)));
    if (own !== undefined) return own.write.value !== undefined;
    const k = ownedKey(key);
    const meta = this.engine.liveEntry(this.engine.pools.named(name), k);
    this.recordRead(name, k, meta?.version);
    return meta !== undefined;
  }

  /** The entries of a range, with this transaction's own writes applied. */
  async list(pool: string, options: ListOptions = {}): Promise<Entry[]> {
    this.open();
    const name = checkPoolName(pool);
    const { bounds, reverse, limit } = listArguments(options);
    if (bounds.empty || limit === 0) return [];
    if (this.reads.size + this.ranges.length >= MAX_TRANSACTION_READS) throw tooManyReads();
    const inRange = (k: Buffer): boolean =>
      (bounds.start === undefined || Buffer.compare(k, bounds.start) >= 0) && (bounds.end === undefined || Buffer.compare(k, bounds.end) < 0);
    const own = [...this.writes.values()].filter((w) => w.pool === name && inRange(w.key));
    // Own writes may hide or add entries: read enough of the store to fill the limit anyway.
    const storeLimit = limit === Infinity ? Infinity : limit + own.length;
    const p = this.engine.pools.named(name);
    const seen: { key: Buffer; version: number }[] = [];
    const entries: Entry[] = [];
    if (p !== undefined) {
      const now = this.engine.clock.now();
      const metas: [Buffer, import('../ftl/key-index.js').KeyMeta][] = [];
      p.index.forEachIn({ start: bounds.start, end: bounds.end, reverse }, (k, meta) => {
        if (meta.expiresAt !== 0 && meta.expiresAt <= now) return true;
        metas.push([k, meta]);
        return metas.length < storeLimit;
      });
      for (const [k, meta] of metas) seen.push({ key: k, version: meta.version });
      const pin = this.engine.pin();
      try {
        const values = await Promise.all(metas.map(([k, meta]) => this.engine.readValue(p, k, meta)));
        metas.forEach(([k, meta], i) => entries.push({ key: k, value: values[i]!, version: meta.version, expiresAt: meta.expiresAt }));
      } finally {
        this.engine.unpin(pin);
      }
    }
    this.ranges.push({
      kind: 'range',
      pool: name,
      start: bounds.start,
      end: bounds.end,
      reverse,
      limit: storeLimit,
      seen,
    });
    const merged = new Map<string, Entry>();
    for (const e of entries) merged.set(e.key.toString('latin1'), e);
    for (const w of own) {
      const id = w.key.toString('latin1');
      if (w.write.value === undefined) merged.delete(id);
      else merged.set(id, { key: w.key, value: Buffer.from(w.write.value), version: 0, expiresAt: 0 });
    }
    const out = [...merged.values()].sort((a, b) => Buffer.compare(a.key, b.key) * (reverse ? -1 : 1));
    return limit === Infinity ? out : out.slice(0, limit);
  }

  put(pool: string, key: Key, value: Value, options: { ttl?: number } = {}): void {
    this.open();
    checkOptionsObject(options, 'put');
    const name = checkPoolName(pool);
    const k = ownedKey(key);
    this.addWrite(name, k, { value: ownedValue(value, this.maxValueBytes), ttlMs: checkTtl(options.ttl) });
  }

  delete(pool: string, key: Key): void {
    this.open();
    const name = checkPoolName(pool);
    this.addWrite(name, ownedKey(key), { value: undefined, ttlMs: 0 });
  }

  /** A counter update through the transaction's reads (see KvPool.incr); resolves with the new value. */
  async incr(pool: string, key: Key, delta: number | bigint, options: { initial?: number | bigint; ttl?: number } = {}): Promise<bigint> {
    checkOptionsObject(options, 'incr');
    const current = await this.getEntry(pool, key);
    const counter = counterUpdate(delta, options.initial);
    const next = counter.apply(current?.value);
    // An existing counter keeps its TTL (one this transaction gave it, too); a new one takes options.ttl.
    const own = this.writes.get(writeKey(checkPoolName(pool), ownedKey(key)));
    const ttl =
      current === undefined
        ? options.ttl
        : own !== undefined
          ? own.write.ttlMs || undefined
          : current.expiresAt === 0
            ? undefined
            : Math.max(1, current.expiresAt - this.engine.clock.now());
    this.put(pool, key, next, { ttl });
    return counter.result();
  }

  // -------------------------------------------------------------------------------------
  // block

  /** Reads sectors (with this transaction's own block writes applied) and records their version. */
  async read(lba: number, count: number): Promise<Buffer> {
    this.open();
    this.block.checkRange(lba, count, 'read');
    if (this.reads.size + this.ranges.length >= MAX_TRANSACTION_READS) throw tooManyReads();
    const { version } = this.engine.rangeState(lba, count);
    this.ranges.push({ kind: 'version', lba, count, version });
    const data = await this.engine.read(lba, count);
    const sector = this.engine.sectorBytes;
    for (const op of this.blockOps) {
      if (op.type !== 'write' && op.type !== 'trim') continue;
      const from = Math.max(lba, op.lba);
      const to = Math.min(lba + count, op.lba + op.count);
      if (from >= to) continue;
      if (op.type === 'trim') data.fill(0, (from - lba) * sector, (to - lba) * sector);
      else data.set(op.data.subarray((from - op.lba) * sector, (to - op.lba) * sector), (from - lba) * sector);
    }
    return data;
  }

  write(lba: number, data: Uint8Array): void {
    this.open();
    const [op] = this.block.checkOps([{ write: lba, data: Buffer.from(data) }]);
    this.addBlockOp(op!);
  }

  trim(lba: number, count: number): void {
    this.open();
    const [op] = this.block.checkOps([{ trim: lba, count }]);
    this.addBlockOp(op!);
  }

  // -------------------------------------------------------------------------------------

  private recordRead(pool: string, key: Buffer, version: number | undefined): void {
    const id = writeKey(pool, key);
    if (this.reads.has(id)) return;
    if (this.reads.size + this.ranges.length >= MAX_TRANSACTION_READS) throw tooManyReads();
    this.reads.set(id, { kind: 'key', pool, key, expect: version ?? 'absent' });
  }

  private addWrite(pool: string, key: Buffer, write: OwnWrite): void {
    const id = writeKey(pool, key);
    if (!this.writes.has(id) && this.writes.size + this.blockOps.length >= MAX_ATOMIC_OPS) throw tooManyWrites();
    this.writes.delete(id); // keep the order of the last write
    this.writes.set(id, { pool, key, write });
  }

  private addBlockOp(op: OpInput): void {
    if (this.writes.size + this.blockOps.length >= MAX_ATOMIC_OPS) throw tooManyWrites();
    this.blockOps.push(op);
  }

  private open(): void {
    this.engine.assertOpen();
    if (this.done) throw new AtomioError('ERR_ARGUMENT', 'this transaction has ended; use the transaction object only inside its function', {});
  }

  /** @internal Commits the writes under the reads' conditions; ERR_CONDITION on a conflict. */
  async commit(): Promise<number | undefined> {
    this.done = true;
    const conditions = [...this.reads.values(), ...this.ranges];
    if (this.writes.size === 0 && this.blockOps.length === 0) {
      const failed = this.engine.failedNow(conditions);
      if (failed !== undefined) throw failed;
      return undefined;
    }
    const ops: OpInput[] = [...this.blockOps];
    for (const { pool, key, write } of this.writes.values()) {
      ops.push(write.value === undefined ? { type: 'delete', pool, key } : { type: 'put', pool, key, value: write.value, ttlMs: write.ttlMs });
    }
    return this.engine.commit(ops, conditions, 0);
  }

  /** @internal */
  end(): void {
    this.done = true;
  }
}

/**
 * Runs `fn` in a transaction and commits it; re-runs it on a conflict. Resolves with what
 * `fn` returned once the commit is durable.
 */
export async function runTransaction<T>(
  engine: Engine,
  block: BlockDevice,
  maxValueBytes: number,
  fn: (tx: Transaction) => Promise<T> | T,
  options: TransactionOptions = {},
): Promise<T> {
  if (typeof fn !== 'function') throw new AtomioError('ERR_ARGUMENT', 'transaction takes a function (tx) => …', {});
  checkOptionsObject(options, 'transaction');
  const retries = options.retries ?? DEFAULT_RETRIES;
  if (!Number.isInteger(retries) || retries < 0) throw new AtomioError('ERR_ARGUMENT', 'retries is an integer >= 0', {});
  for (let attempt = 0; ; attempt++) {
    const tx = new Transaction(engine, block, maxValueBytes);
    let result: T;
    try {
      result = await fn(tx);
    } finally {
      tx.end();
    }
    try {
      await tx.commit();
      return result;
    } catch (error) {
      if (!isAtomioError(error, 'ERR_CONDITION') || error.details.failed === undefined) throw error;
      if (attempt >= retries) {
        throw new AtomioError('ERR_CONFLICT', `the transaction conflicted with other writes ${attempt + 1} times; nothing was written`, {
          attempts: attempt + 1,
        }, { cause: error });
      }
      // A little random wait spreads out transactions that keep colliding on the same keys.
      if (attempt > 0) await sleep(Math.random() * Math.min(10, attempt));
    }
  }
}

function writeKey(pool: string, key: Buffer): string {
  return `${pool.length}:${pool}${key.toString('latin1')}`;
}

function tooManyReads(): AtomioError {
  return new AtomioError('ERR_LIMIT', `a transaction reads at most ${MAX_TRANSACTION_READS} keys and ranges (MAX_TRANSACTION_READS)`, {
    limit: MAX_TRANSACTION_READS,
  });
}

function tooManyWrites(): AtomioError {
  return new AtomioError('ERR_LIMIT', `a transaction writes at most ${MAX_ATOMIC_OPS} keys and block ranges (MAX_ATOMIC_OPS)`, {
    limit: MAX_ATOMIC_OPS,
  });
}
