// The block face: a sparse space of sectors, 2^53 bytes wide, with atomic vectored writes,
// conditional writes, writes that expire, and queries of what is mapped.
//
// Every method validates its arguments before anything is queued: a bad call rejects with
// ERR_ARGUMENT or ERR_LIMIT and writes nothing.

import { AtomioError } from '../base/errors.js';
import type { Condition, Engine, OpInput, SnapshotState } from '../engine/engine.js';
import { ADDRESS_SPACE_BYTES, MAX_ATOMIC_BYTES, MAX_ATOMIC_OPS, MAX_CONDITIONS } from '../engine/limits.js';
import { BLOCK_OP_BYTES, RECORD_HEADER_BYTES, chunkedBytes } from '../log/format.js';

/** One op of an atomic commit: write sectors from `lba`, or trim `count` sectors from `trim`. */
export type AtomicOp = { write: number; data: Uint8Array } | { trim: number; count: number };

/** A check that must hold, atomically with the commit, or the commit fails with ERR_CONDITION. */
export type BlockCondition =
  /** No sector of [lba, lba + count) is mapped. */
  | { unwritten: [lba: number, count: number] }
  /** The newest version among the mapped sectors of the range is `version` (0: none mapped). */
  | { version: [lba: number, count: number, version: number] };

export interface WriteOptions {
  /** Milliseconds until the written sectors read as zeros again; their space then returns. */
  ttl?: number;
}

export interface AtomicOptions extends WriteOptions {
  /** Conditions checked atomically with the commit (at most MAX_CONDITIONS). */
  if?: BlockCondition | BlockCondition[];
}

export interface MappedExtent {
  lba: number;
  count: number;
  version: number;
}

export class BlockDevice {
  /** Bytes per sector: 512 or 4096, fixed when the store was created. */
  readonly sectorSize: number;
  /** Number of addressable sectors: lbas run from 0 to sectorCount - 1. */
  readonly sectorCount: number;
  /** Most data bytes in one atomic commit on this store. */
  readonly maxAtomicBytes: number;

  /** @internal use store.block or snapshot.block */
  constructor(
    private readonly engine: Engine,
    /** Set for a snapshot's block face: reads see the snapshot, writes are refused. */
    private readonly snapshot?: SnapshotState,
  ) {
    this.sectorSize = engine.sectorBytes;
    this.sectorCount = ADDRESS_SPACE_BYTES / engine.sectorBytes;
    this.maxAtomicBytes = Math.min(MAX_ATOMIC_BYTES, engine.maxRecordBytes - 4096);
  }

  /**
   * Writes whole sectors at `lba`. Resolves with the write's version once it is durable.
   * `data` is read until then (large writes go to the medium from it): do not change it before.
   * @example const v = await store.block.write(0, Buffer.alloc(4096, 1));
   */
  write(lba: number, data: Uint8Array, options?: WriteOptions): Promise<number> {
    if (options !== undefined || this.snapshot !== undefined) return this.atomic([{ write: lba, data }], options);
    // A plain write (the common call): checked as checkOps checks one, without its lists.
    try {
      this.engine.assertOpen();
      const input = this.writeInput(lba, data);
      this.checkSize(data.length, RECORD_HEADER_BYTES + BLOCK_OP_BYTES + chunkedBytes(data.length));
      return this.engine.commit([input], NO_CONDITIONS, 0);
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /** Unmaps sectors: they read as zeros and their space returns. Resolves with the version. */
  trim(lba: number, count: number): Promise<number> {
    return this.atomic([{ trim: lba, count }]);
  }

  /**
   * Commits writes and trims together: after any crash all of them are there or none is.
   * Later ops win where ops overlap. Resolves with the commit's version once durable.
   * @example await store.block.atomic([{ write: 8, data }, { trim: 0, count: 8 }], { if: { unwritten: [8, 8] } });
   */
  atomic(ops: readonly AtomicOp[], options: AtomicOptions = {}): Promise<number> {
    try {
      this.engine.assertOpen();
      if (this.snapshot !== undefined) {
        throw new AtomioError('ERR_ARGUMENT', 'the block face of a snapshot is read-only; write through store.block', {});
      }
      const inputs = this.checkOps(ops);
      const conditions = this.checkConditions(options.if);
      const ttl = checkTtl(options.ttl);
      return this.engine.commit(inputs, conditions, ttl);
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /** Reads `count` sectors; never-written, trimmed and expired sectors read as zeros. */
  read(lba: number, count: number): Promise<Buffer> {
    try {
      this.checkRead(lba, count);
      return this.engine.read(lba, count, this.snapshot?.map);
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /**
   * Reads `count` sectors as consecutive buffers that together hold them, for callers that
   * send them on (a vectored socket write) rather than use them in place: where the engine
   * can hand out views of what it read and checked, no copy is made. Same checks and zeros
   * as read(); the buffers are the caller's. `allocate(bytes)`, if given, is called at most
   * once for a buffer of exactly `bytes` that the views may point into: a caller that reuses
   * large buffers saves the cost of touching fresh memory.
   * @example const parts = await store.block.readParts(0, 256); socket.write(Buffer.concat(parts));
   */
  readParts(lba: number, count: number, allocate?: (bytes: number) => Buffer): Promise<Buffer[]> {
    try {
      this.checkRead(lba, count);
      return this.engine.readParts(lba, count, this.snapshot?.map, allocate);
    } catch (error) {
      return Promise.reject(error);
    }
  }

  private checkRead(lba: number, count: number): void {
    this.engine.assertOpen();
    this.checkRange(lba, count, 'read');
    if (count * this.sectorSize > MAX_READ_BYTES) {
      throw new AtomioError('ERR_LIMIT', `a read returns at most 256 MiB; asked for ${count} sectors`, { count });
    }
  }

  /** True when at least one sector of the range holds data (written, not trimmed, not expired). */
  exists(lba: number, count = 1): boolean {
    this.engine.assertOpen();
    this.checkRange(lba, count, 'exists');
    return this.engine.rangeState(lba, count, this.snapshot?.map).mapped;
  }

  /** The mapped extents of a range, in lba order, each with the version that wrote it. */
  mapped(lba: number, count: number): MappedExtent[] {
    this.engine.assertOpen();
    this.checkRange(lba, count, 'mapped');
    const out: MappedExtent[] = [];
    for (const p of this.engine.livePieces(lba, count, this.snapshot?.map)) {
      const last = out[out.length - 1];
      if (last !== undefined && last.version === p.version && last.lba + last.count === p.lba) last.count += p.count;
      else out.push({ lba: p.lba, count: p.count, version: p.version });
    }
    return out;
  }

  /** Version of the commit that last wrote the sector, or 0 if it holds no data. */
  versionOf(lba: number): number {
    this.engine.assertOpen();
    this.checkRange(lba, 1, 'versionOf');
    return this.engine.rangeState(lba, 1, this.snapshot?.map).version;
  }

  /** @internal */
  checkRange(lba: number, count: number, what: string): void {
    if (this.snapshot?.released) {
      throw new AtomioError('ERR_CLOSED', 'the snapshot was released or deleted; take a new one with store.snapshot()', {});
    }
    if (!Number.isSafeInteger(lba) || lba < 0) {
      throw new AtomioError('ERR_ARGUMENT', `${what}: lba must be an integer >= 0, got ${String(lba)}`, { lba });
    }
    if (!Number.isSafeInteger(count) || count < 1) {
      throw new AtomioError('ERR_ARGUMENT', `${what}: count must be an integer >= 1, got ${String(count)}`, { count });
    }
    if (lba + count > this.sectorCount) {
      throw new AtomioError(
        'ERR_ARGUMENT',
        `${what}: sectors ${lba}..${lba + count - 1} run past the last lba ${this.sectorCount - 1}`,
        { lba, count },
      );
    }
  }

  /** @internal Checks ops for a commit (also of a store-wide atomic batch or transaction). */
  checkOps(ops: readonly AtomicOp[]): OpInput[] {
    if (!Array.isArray(ops) || ops.length === 0) {
      throw new AtomioError('ERR_ARGUMENT', 'atomic: ops must be a non-empty array of { write, data } or { trim, count }', {});
    }
    if (ops.length > MAX_ATOMIC_OPS) {
      throw new AtomioError('ERR_LIMIT', `atomic: at most ${MAX_ATOMIC_OPS} ops per commit, got ${ops.length}`, {
        limit: MAX_ATOMIC_OPS,
      });
    }
    const inputs: OpInput[] = [];
    let bytes = 0;
    // The record's size, as recordBytesFor would find it, without making its ops.
    let recordBytes = RECORD_HEADER_BYTES;
    for (const op of ops) {
      if (op !== null && typeof op === 'object' && 'write' in op) {
        const input = this.writeInput(op.write, op.data);
        bytes += input.data.length;
        inputs.push(input);
        recordBytes += BLOCK_OP_BYTES + chunkedBytes(input.data.length);
      } else if (op !== null && typeof op === 'object' && 'trim' in op) {
        this.checkRange(op.trim, op.count, 'trim');
        inputs.push({ type: 'trim', lba: op.trim, count: op.count });
        recordBytes += BLOCK_OP_BYTES;
      } else {
        throw new AtomioError('ERR_ARGUMENT', 'atomic: each op is { write: lba, data } or { trim: lba, count }', {});
      }
    }
    this.checkSize(bytes, recordBytes);
    return inputs;
  }

  /** One write op, checked. */
  private writeInput(lba: number, data: Uint8Array): Extract<OpInput, { type: 'write' }> {
    if (!(data instanceof Uint8Array) || data.length === 0 || data.length % this.sectorSize !== 0) {
      throw new AtomioError(
        'ERR_ARGUMENT',
        `write at lba ${String(lba)}: data must be a non-empty Uint8Array of whole ${this.sectorSize}-byte sectors`,
        { lba },
      );
    }
    const count = data.length / this.sectorSize;
    this.checkRange(lba, count, 'write');
    return { type: 'write', lba, count, data };
  }

  /** A commit's data bytes and record size against the store's limits. */
  private checkSize(bytes: number, recordBytes: number): void {
    if (bytes > this.maxAtomicBytes || recordBytes > this.engine.maxRecordBytes) {
      throw new AtomioError(
        'ERR_LIMIT',
        `atomic: at most ${this.maxAtomicBytes} data bytes per commit on this store, got ${bytes}`,
        { limit: this.maxAtomicBytes, bytes },
      );
    }
  }

  private checkConditions(given: BlockCondition | BlockCondition[] | undefined): Condition[] {
    if (given === undefined) return NO_CONDITIONS;
    const list = Array.isArray(given) ? given : [given];
    if (list.length > MAX_CONDITIONS) {
      throw new AtomioError('ERR_LIMIT', `at most ${MAX_CONDITIONS} conditions per commit, got ${list.length}`, {
        limit: MAX_CONDITIONS,
      });
    }
    return list.map((c, i): Condition => {
      if (c !== null && typeof c === 'object' && 'unwritten' in c && Array.isArray(c.unwritten)) {
        const [lba, count] = c.unwritten;
        this.checkRange(lba, count, `condition ${i}`);
        return { kind: 'unwritten', lba, count };
      }
      if (c !== null && typeof c === 'object' && 'version' in c && Array.isArray(c.version)) {
        const [lba, count, version] = c.version;
        this.checkRange(lba, count, `condition ${i}`);
        if (!Number.isSafeInteger(version) || version < 0) {
          throw new AtomioError('ERR_ARGUMENT', `condition ${i}: version must be an integer >= 0`, { version });
        }
        return { kind: 'version', lba, count, version };
      }
      throw new AtomioError(
        'ERR_ARGUMENT',
        `condition ${i} must be { unwritten: [lba, count] } or { version: [lba, count, version] }`,
        {},
      );
    });
  }
}

/** The conditions of a commit without any, shared (frozen: the engine only reads them). */
const NO_CONDITIONS = Object.freeze([]) as unknown as Condition[];

/** The most one read returns: it is one buffer in memory. */
const MAX_READ_BYTES = 256 * 1024 * 1024;

function checkTtl(ttl: number | undefined): number {
  if (ttl === undefined) return 0;
  if (typeof ttl !== 'number' || !Number.isFinite(ttl) || ttl <= 0 || ttl > 2 ** 40) {
    throw new AtomioError('ERR_ARGUMENT', `ttl must be a positive number of milliseconds, got ${String(ttl)}`, { ttl });
  }
  return Math.ceil(ttl);
}
