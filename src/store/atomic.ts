// store.atomic(): one commit of kv ops across pools and block ops, with checks, all or
// nothing. The builder checks each op as it is added (a bad op throws at once and nothing
// is queued); commit() sends them as one record.

import { AtomioError, isAtomioError } from '../base/errors.js';
import type { BlockDevice } from '../block/block.js';
import type { Condition, Engine, OpInput } from '../engine/engine.js';
import { MAX_ATOMIC_OPS, MAX_CONDITIONS } from '../engine/limits.js';
import { RECORD_HEADER_BYTES, chunkedBytes, kvEntryBytes } from '../log/format.js';
import { checkOptionsObject, checkPoolName, checkTtl, checkVersion, describe, ownedKey, ownedValue, type Key, type Value } from '../kv/encoding.js';
import { counterUpdate } from '../kv/pool.js';
import { Region } from '../region/region.js';

/** A check of a key's version (null: the key must be absent). */
export interface Check {
  pool: string;
  key: Buffer;
  version: number | null;
}

export type AtomicResult = { ok: true; version: number } | { ok: false; failed: Check[] };

export class AtomicBatch {
  private readonly ops: OpInput[] = [];
  private readonly conditions: Condition[] = [];
  private readonly checks: Check[] = [];
  private bytes = RECORD_HEADER_BYTES;
  private readonly poolNames = new Set<string>();
  private readonly regions: Region[] = [];
  private committed = false;

  /** @internal use store.atomic() */
  constructor(
    private readonly engine: Engine,
    private readonly block: BlockDevice,
    private readonly maxValueBytes: number,
  ) {}

  /** The commit goes ahead only if the key is at `version` (null: absent). */
  check(pool: string, key: Key, version: number | null): this {
    this.open();
    const name = checkPoolName(pool);
    const k = ownedKey(key);
    if (this.conditions.length >= MAX_CONDITIONS) {
      throw new AtomioError('ERR_LIMIT', `at most ${MAX_CONDITIONS} checks per atomic commit`, { limit: MAX_CONDITIONS });
    }
    const expect = version === null ? 'absent' : checkVersion(version, 'a check\'s version');
    this.conditions.push({ kind: 'key', pool: name, key: k, expect });
    this.checks.push({ pool: name, key: k, version });
    return this;
  }

  put(pool: string, key: Key, value: Value, options: { ttl?: number } = {}): this {
    this.open();
    checkOptionsObject(options, 'put');
    const k = ownedKey(key);
    const v = ownedValue(value, this.maxValueBytes);
    return this.add({ type: 'put', pool: checkPoolName(pool), key: k, value: v, ttlMs: checkTtl(options.ttl) }, kvEntryBytes(k.length, v.length));
  }

  delete(pool: string, key: Key): this {
    this.open();
    const k = ownedKey(key);
    return this.add({ type: 'delete', pool: checkPoolName(pool), key: k }, kvEntryBytes(k.length, 0));
  }

  /** A counter update (see KvPool.incr); an absent counter without `initial` makes commit() reject with ERR_CONDITION. */
  incr(pool: string, key: Key, delta: number | bigint, options: { initial?: number | bigint; ttl?: number } = {}): this {
    this.open();
    checkOptionsObject(options, 'incr');
    const k = ownedKey(key);
    const counter = counterUpdate(delta, options.initial);
    return this.add(
      { type: 'put', pool: checkPoolName(pool), key: k, value: counter.apply, ttlMs: checkTtl(options.ttl), keepTtl: true },
      kvEntryBytes(k.length, 24),
    );
  }

  touch(pool: string, key: Key, ttl: number): this {
    this.open();
    const k = ownedKey(key);
    return this.add({ type: 'touch', pool: checkPoolName(pool), key: k, ttlMs: checkTtl(ttl) }, kvEntryBytes(k.length, 0));
  }

  /** A block write of whole sectors at `lba`. */
  write(lba: number, data: Uint8Array): this {
    this.open();
    const [op] = this.block.checkOps([{ write: lba, data }]);
    return this.add(op!, 40 + chunkedBytes(data.length));
  }

  trim(lba: number, count: number): this {
    this.open();
    const [op] = this.block.checkOps([{ trim: lba, count }]);
    return this.add(op!, 40);
  }

  /**
   * Adds the region's dirty pages, as they are when commit() is called, as a new version of
   * the region: it lands with the other ops or not at all (region.version tells the version
   * after the commit). Its pages count as ops of the batch.
   */
  region(region: Region): this {
    this.open();
    // A region of another store would land its pages there, and its own store would never see the version.
    if (!(region instanceof Region) || !region.belongsTo(this.engine)) {
      throw new AtomioError('ERR_ARGUMENT', `atomic().region() takes a region of this store (from its store.region()), not ${region instanceof Region ? `region '${region.name}' of another store` : describe(region)}`, {});
    }
    if (this.regions.includes(region)) throw new AtomioError('ERR_ARGUMENT', `region '${region.name}' is in this batch already`, {});
    this.regions.push(region);
    return this;
  }

  /**
   * Commits every op as one record once durable: { ok: true, version }, or, when checks
   * fail, { ok: false, failed } with nothing written. Other failures reject.
   */
  async commit(): Promise<AtomicResult> {
    this.open();
    this.committed = true;
    try {
      // Each region adds its pages and its chain condition, then hands on to the next; the
      // last hands everything to the engine as one commit.
      let send = (ops: OpInput[], conditions: Condition[]): Promise<number> => this.engine.commit(ops, conditions, 0);
      for (const region of this.regions) {
        const next = send;
        send = (ops, conditions) => region.commitInside(ops, conditions, next);
      }
      const version = await send(this.ops, this.conditions);
      return { ok: true, version };
    } catch (error) {
      const failed = isAtomioError(error, 'ERR_CONDITION') ? (error.details.failed as number[] | undefined) : undefined;
      if (failed === undefined) throw error;
      // Indices past the checks are the regions' chain conditions (see Region.commitInside).
      const mine = failed.filter((i) => i < this.checks.length);
      if (mine.length === 0) throw error;
      return { ok: false, failed: mine.map((i) => this.checks[i]!) };
    }
  }

  private add(op: OpInput, bytes: number): this {
    if ('pool' in op && !this.poolNames.has(op.pool)) {
      // The engine adds an op that creates the pool when it is new: 40 bytes and the name.
      bytes += 40 + Buffer.byteLength(op.pool) + 8;
    }
    if (this.ops.length >= MAX_ATOMIC_OPS) {
      throw new AtomioError('ERR_LIMIT', `at most ${MAX_ATOMIC_OPS} ops per atomic commit`, { limit: MAX_ATOMIC_OPS });
    }
    if (this.bytes + bytes > this.engine.maxRecordBytes - 4096) {
      throw new AtomioError('ERR_LIMIT', `an atomic commit holds at most about ${this.engine.maxRecordBytes - 4096} bytes on this store`, {
        limit: this.engine.maxRecordBytes - 4096,
      });
    }
    this.bytes += bytes;
    if ('pool' in op) this.poolNames.add(op.pool);
    this.ops.push(op);
    return this;
  }

  private open(): void {
    this.engine.assertOpen();
    if (this.committed) throw new AtomioError('ERR_ARGUMENT', 'this atomic batch was already committed; start a new one with store.atomic()', {});
  }
}
