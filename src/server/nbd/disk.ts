// VolumeDisk: a volume seen as NBD sees a disk — a range of bytes — on top of the block
// face's sectors. Offsets and lengths need not be sector aligned.
//
// Invariants:
// - every call stays inside [0, volume.size) of its volume's slot; callers check bounds first
//   (a request outside them is a protocol error the server answers, never passed down);
// - a write is atomic per commit unit (`unitBytes`, ~8 MiB on a default store): larger
//   writes become several commits, submitted together so that they share a group commit;
// - a partial sector is written by read-modify-write in one commit carrying a `version`
//   condition on each partial sector, retried on ERR_CONDITION: concurrent unaligned writers
//   never lose each other's bytes, and each write lands whole or not at all;
// - zeroing without NO_HOLE trims the whole sectors and rewrites the partial ones, in one
//   commit; with NO_HOLE it writes real zero sectors;
// - trim is a hint: only the whole sectors inside the range are trimmed.

import { assert } from '../../base/assert.js';
import { AtomioError, isAtomioError } from '../../base/errors.js';
import type { AtomicOp, BlockCondition, BlockDevice } from '../../block/block.js';
import type { Volume } from '../volumes.js';

/** Attempts of one read-modify-write before it gives up (each retry means another writer won). */
export const MAX_RMW_ATTEMPTS = 1000;
/** Sectors asked of the block face's map at a time when working out block status. */
const STATUS_WINDOW_SECTORS = 64 * 1024;
/** Commit units of one large zero write kept in flight at once. */
const ZERO_UNITS_IN_FLIGHT = 4;

export interface StatusExtent {
  /** Bytes, > 0. */
  length: number;
  /** True when the bytes are unmapped (a hole that reads as zeros). */
  hole: boolean;
}

export class VolumeDisk {
  readonly size: number;
  readonly readOnly: boolean;
  readonly sectorSize: number;
  /** Bytes written by one commit at most; larger writes are split at sector boundaries. */
  readonly unitBytes: number;
  private readonly firstLba: number;
  private readonly zeros: Buffer;

  constructor(
    private readonly block: BlockDevice,
    readonly volume: Volume,
  ) {
    assert(block.sectorSize === volume.sectorSize, 'volume made for this store');
    this.size = volume.size;
    this.readOnly = volume.readOnly;
    this.sectorSize = block.sectorSize;
    this.firstLba = volume.firstLba;
    this.unitBytes = commitUnitBytes(block.maxAtomicBytes, block.sectorSize);
    this.zeros = sharedZeros(this.unitBytes);
  }

  /**
   * The bytes [offset, offset + length). An aligned read returns the block face's own promise,
   * so that a caller's callback runs in the first microtask after the data is in (see
   * Transmission.after).
   */
  read(offset: number, length: number): Promise<Buffer> {
    try {
      this.checkRange(offset, length);
    } catch (error) {
      return Promise.reject(error);
    }
    if (length === 0) return Promise.resolve(Buffer.alloc(0));
    const ss = this.sectorSize;
    const first = Math.floor(offset / ss);
    const end = Math.ceil((offset + length) / ss);
    const sectors = this.block.read(this.firstLba + first, end - first);
    const at = offset - first * ss;
    if (at === 0 && length === (end - first) * ss) return sectors;
    return sectors.then((bytes) => bytes.subarray(at, at + length));
  }

  /**
   * The bytes [offset, offset + length) as consecutive buffers, for a vectored reply. An
   * aligned read returns the block face's own promise (see read()); an unaligned one, one
   * buffer. `allocate` as in BlockDevice.readParts.
   */
  readParts(offset: number, length: number, allocate?: (bytes: number) => Buffer): Promise<Buffer[]> {
    const ss = this.sectorSize;
    if (length > 0 && offset % ss === 0 && length % ss === 0) {
      try {
        this.checkRange(offset, length);
      } catch (error) {
        return Promise.reject(error);
      }
      return this.block.readParts(this.firstLba + offset / ss, length / ss, allocate);
    }
    return this.read(offset, length).then(oneBuffer);
  }

  /** True when no sector under [offset, offset + length) holds data: the range reads as zeros. */
  isHole(offset: number, length: number): boolean {
    this.checkRange(offset, length);
    if (length === 0) return true;
    const ss = this.sectorSize;
    const first = Math.floor(offset / ss);
    const end = Math.ceil((offset + length) / ss);
    return !this.block.exists(this.firstLba + first, end - first);
  }

  /**
   * Writes `data` at `offset`; resolves once the block face has it (durable unless durability
   * 'none'). A write of whole sectors that fits one commit returns the block face's own
   * promise, so that a caller's callback runs in the first microtask after the commit (see
   * Transmission.after).
   */
  write(offset: number, data: Buffer): Promise<unknown> {
    try {
      this.checkRange(offset, data.length);
    } catch (error) {
      return Promise.reject(error);
    }
    if (data.length === 0) return Promise.resolve();
    const ss = this.sectorSize;
    if (offset % ss === 0 && data.length % ss === 0 && data.length <= this.unitBytes) {
      return this.block.write(this.firstLba + offset / ss, data);
    }
    return this.writeUnits(offset, data.length, data);
  }

  /**
   * Makes [offset, offset + length) read as zeros. Without `noHole` the whole sectors are
   * trimmed (space returns); with it they are written with zeros (allocated).
   */
  async writeZeroes(offset: number, length: number, noHole: boolean): Promise<void> {
    this.checkRange(offset, length);
    if (length === 0) return;
    if (noHole) {
      await this.writeUnits(offset, length, undefined);
      return;
    }
    const ss = this.sectorSize;
    const end = offset + length;
    const wholeFirst = Math.ceil(offset / ss);
    const wholeEnd = Math.floor(end / ss);
    const partial: { lba: number; from: number; to: number }[] = [];
    if (wholeFirst > wholeEnd) {
      // Inside one sector.
      partial.push({ lba: wholeEnd, from: offset - wholeEnd * ss, to: end - wholeEnd * ss });
    } else {
      if (offset % ss !== 0) partial.push({ lba: wholeFirst - 1, from: offset % ss, to: ss });
      if (end % ss !== 0) partial.push({ lba: wholeEnd, from: 0, to: end % ss });
    }
    const trim: AtomicOp[] = wholeEnd > wholeFirst ? [{ trim: this.firstLba + wholeFirst, count: wholeEnd - wholeFirst }] : [];
    if (partial.length === 0) {
      if (trim.length > 0) await this.block.atomic(trim);
      return;
    }
    await this.readModifyWrite(
      partial.map((p) => p.lba),
      (old) => {
        const ops: AtomicOp[] = [...trim];
        partial.forEach((p, i) => {
          const sector = old[i]!;
          sector.fill(0, p.from, p.to);
          ops.push({ write: this.firstLba + p.lba, data: sector });
        });
        return ops;
      },
    );
  }

  /** Trims the whole sectors inside [offset, offset + length); partial sectors stay as they are. */
  async trim(offset: number, length: number): Promise<void> {
    this.checkRange(offset, length);
    const ss = this.sectorSize;
    const first = Math.ceil(offset / ss);
    const end = Math.floor((offset + length) / ss);
    if (end > first) await this.block.trim(this.firstLba + first, end - first);
  }

  /** True when zeroing [offset, offset + length) without NO_HOLE is cheaper than writing it (a whole sector is inside). */
  canZeroFast(offset: number, length: number): boolean {
    const ss = this.sectorSize;
    return Math.floor((offset + length) / ss) > Math.ceil(offset / ss);
  }

  /**
   * Allocation status of [offset, offset + length) as consecutive extents that together cover
   * it exactly (fewer when `maxExtents` is reached first); adjacent extents differ in `hole`.
   */
  blockStatus(offset: number, length: number, maxExtents: number): StatusExtent[] {
    this.checkRange(offset, length);
    assert(length > 0 && maxExtents >= 1, 'a status query covers something');
    const ss = this.sectorSize;
    const end = offset + length;
    const out: StatusExtent[] = [];
    let pos = offset;
    const add = (upTo: number, hole: boolean): boolean => {
      const stop = Math.min(upTo, end);
      if (stop <= pos) return true;
      const last = out[out.length - 1];
      if (last !== undefined && last.hole === hole) last.length += stop - pos;
      else if (out.length === maxExtents) return false;
      else out.push({ length: stop - pos, hole });
      pos = stop;
      return true;
    };
    let lba = Math.floor(offset / ss);
    const endLba = Math.ceil(end / ss);
    while (lba < endLba) {
      const count = Math.min(STATUS_WINDOW_SECTORS, endLba - lba);
      for (const e of this.block.mapped(this.firstLba + lba, count)) {
        const at = e.lba - this.firstLba;
        if (!add(at * ss, true) || !add((at + e.count) * ss, false)) return out;
      }
      lba += count;
      if (!add(lba * ss, true)) return out;
    }
    assert(pos === end || out.length === maxExtents, 'status covers the range');
    return out;
  }

  /** Writes `length` bytes at `offset`: `data`, or zeros when it is undefined. */
  private async writeUnits(offset: number, length: number, data: Buffer | undefined): Promise<void> {
    const ss = this.sectorSize;
    const end = offset + length;
    const first = Math.floor(offset / ss);
    const endLba = Math.ceil(end / ss);
    const unitSectors = this.unitBytes / ss;
    const units: (() => Promise<void>)[] = [];
    for (let lba = first; lba < endLba; lba += unitSectors) {
      const unitEnd = Math.min(endLba, lba + unitSectors);
      const from = Math.max(offset, lba * ss);
      const to = Math.min(end, unitEnd * ss);
      units.push(() => this.writeUnit(lba, unitEnd, from, to, data === undefined ? undefined : data.subarray(from - offset, to - offset)));
    }
    if (units.length === 1) return units[0]!();
    // Data units go together (their bytes are in memory already); zero units a few at a time.
    const parallel = data === undefined ? ZERO_UNITS_IN_FLIGHT : units.length;
    await runLimited(units, parallel);
  }

  /** One commit: sectors [lba, unitEnd) get bytes [from, to) (absolute byte offsets) from `bytes` (zeros if undefined). */
  private async writeUnit(lba: number, unitEnd: number, from: number, to: number, bytes: Buffer | undefined): Promise<void> {
    const ss = this.sectorSize;
    const sectors = unitEnd - lba;
    if (from === lba * ss && to === unitEnd * ss) {
      await this.block.write(this.firstLba + lba, bytes ?? this.zeros.subarray(0, sectors * ss));
      return;
    }
    const partial: number[] = [];
    if (from > lba * ss || to < (lba + 1) * ss) partial.push(lba);
    if (unitEnd - 1 > lba && to < unitEnd * ss) partial.push(unitEnd - 1);
    await this.readModifyWrite(partial, (old) => {
      const buffer = Buffer.alloc(sectors * ss);
      partial.forEach((p, i) => old[i]!.copy(buffer, (p - lba) * ss));
      if (bytes !== undefined) bytes.copy(buffer, from - lba * ss);
      else buffer.fill(0, from - lba * ss, to - lba * ss);
      return [{ write: this.firstLba + lba, data: buffer }];
    });
  }

  /**
   * Reads the sectors `lbas` (volume-relative) with their versions, builds ops from them and
   * commits those ops on the condition that none of the sectors changed meanwhile; retries
   * when one did.
   */
  private async readModifyWrite(lbas: number[], build: (old: Buffer[]) => AtomicOp[]): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      // Versions and reads are taken in one synchronous stretch, so they describe one state;
      // a commit applied after it makes the condition fail, and the loop goes round again.
      const conditions: BlockCondition[] = [];
      const reads: Promise<Buffer>[] = [];
      for (const lba of lbas) {
        const abs = this.firstLba + lba;
        conditions.push({ version: [abs, 1, this.block.versionOf(abs)] });
        reads.push(this.block.read(abs, 1));
      }
      const old = await Promise.all(reads);
      try {
        await this.block.atomic(build(old), { if: conditions });
        return;
      } catch (error) {
        if (!isAtomioError(error, 'ERR_CONDITION')) throw error;
        if (attempt >= MAX_RMW_ATTEMPTS) {
          throw new AtomioError('ERR_CONDITION', `read-modify-write of sectors ${lbas.join(', ')} lost to other writers ${attempt} times`, {
            lbas,
          });
        }
      }
    }
  }

  private checkRange(offset: number, length: number): void {
    assert(
      Number.isSafeInteger(offset) && Number.isSafeInteger(length) && offset >= 0 && length >= 0 && offset + length <= this.size,
      `disk access [${offset}, ${offset + length}) outside [0, ${this.size})`,
    );
  }
}

/**
 * The most data bytes that surely fit one commit: block.maxAtomicBytes leaves no room for the
 * log's per-4-KiB checksums on every store geometry, so keep a margin, in whole 4 KiB.
 */
export function commitUnitBytes(maxAtomicBytes: number, sectorSize: number): number {
  const margin = Math.ceil(maxAtomicBytes / 1024) + 8192;
  const unit = Math.floor((maxAtomicBytes - margin) / 4096) * 4096;
  assert(unit >= sectorSize && unit % sectorSize === 0, `commit unit ${unit} for sector size ${sectorSize}`);
  return unit;
}

function oneBuffer(buffer: Buffer): Buffer[] {
  return [buffer];
}

let zeroCache: Buffer | undefined;

/** One read-only buffer of zeros shared by every zero write (never written to). */
function sharedZeros(bytes: number): Buffer {
  if (zeroCache === undefined || zeroCache.length < bytes) zeroCache = Buffer.alloc(bytes);
  return zeroCache;
}

/** Runs the tasks, at most `limit` at a time; rejects with the first failure once all have settled. */
async function runLimited(tasks: (() => Promise<void>)[], limit: number): Promise<void> {
  let next = 0;
  let failure: unknown;
  const worker = async (): Promise<void> => {
    while (next < tasks.length && failure === undefined) {
      const task = tasks[next++]!;
      try {
        await task();
      } catch (error) {
        failure ??= error;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, tasks.length) }, worker));
  if (failure !== undefined) throw failure;
}
