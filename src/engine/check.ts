// atomio check: verifies a store without changing a byte of it, and without the engine.
//
// What it reads, in order:
//   1. both superblock copies: each valid or not, with its generation; the newest valid one
//      gives the geometry and points at the checkpoint;
//   2. the checkpoint chain: every part's segment header and payload checksum, then the
//      decoded payload (segment table, heads, extents), checked for internal consistency;
//   3. every segment in use — open or sealed in the checkpoint's table, or opened after the
//      checkpoint as its own header says — from its first record to its end: every record's
//      meta checksum and every data chunk's checksum, resyncing past damage as recovery does;
//   4. the log written after the checkpoint as recovery judges it: records missing or
//      damaged that a later record vouches for as flushed (its durable seq) are damage; the
//      first one nobody vouches for is where a crash tore the log, and it and all after it
//      are the torn tail, which recovery drops;
//   5. the map recovery would rebuild (checkpoint extents + the kept log): every live
//      extent must point at the data of a valid write op of the right version;
//   6. damage found in step 3 inside what the checkpoint covers is judged last: it is a
//      problem where the segment still holds live data, and a note where it holds none —
//      such a segment may have been emptied and freed since the checkpoint, and a crash may
//      have caught its reuse half-written under its old header, which is harmless.
//
// Invariants:
// - nothing reaches the medium but reads: the checker holds a view with no write or flush;
// - a torn tail (unwritten or half-written records after the last flushed one) is normal
//   after a crash: it is a note, not a problem. Any other invalid record, bad chunk, missing
//   seq or inconsistency is a problem, located by segment and offset in that segment;
// - the checker never throws for damage: a damaged store yields a report, not an exception.

import { ExtentMap, type Extent } from '../ftl/extent-map.js';
import { checksum } from '../log/crc.js';
import {
  CHUNK_CRC_BYTES,
  CHUNK_DATA_BYTES,
  OpType,
  RECORD_HEADER_BYTES,
  RecordKind,
  SEGMENTS_OFFSET,
  SUPERBLOCK_BYTES,
  SegmentKind,
  isZero,
  nextRecordAt,
  resyncAfter,
  chunkedBytes,
  decodeRecordMeta,
  decodeSegmentHeader,
  decodeSuperblock,
  isKvOpType,
  kvDataBytes,
  kvDataIntact,
  verifyChunks,
  type DecodedOp,
  type DecodedRecordHeader,
  type SegmentHeader,
  type Superblock,
} from '../log/format.js';
import type { Media } from '../media/media.js';
import { checkpointExtents, decodeCheckpoint, type CheckpointState, type PoolImage, type SegmentRow } from './checkpoint.js';
import { META_FIELDS } from '../ftl/key-index.js';
import { ADDRESS_SPACE_BYTES, MAX_SEGMENT_BYTES, MIN_SEGMENT_BYTES } from './limits.js';

export type ProblemKind = 'record-header' | 'chunk' | 'segment-header' | 'checkpoint' | 'superblock';

/**
 * Damage or an inconsistency. `offset` is a byte offset inside `segment`; for kind
 * 'superblock', `segment` is -1 and `offset` is the byte offset in the medium.
 */
export interface CheckProblem {
  segment: number;
  offset: number;
  kind: ProblemKind;
  message: string;
}

/** What a crash leaves behind and recovery handles (a torn tail, an unfinished checkpoint). */
export interface CheckNote {
  segment: number;
  offset: number;
  message: string;
}

export interface SuperblockCopyReport {
  copy: 'A' | 'B';
  offset: number;
  valid: boolean;
  generation: number | null;
  /** Why the copy is invalid; null when valid. */
  reason: string | null;
  /** The copy an open would use. */
  current: boolean;
}

export interface CheckpointReport {
  seq: number;
  /** The chain, first part first. */
  segments: number[];
  payloadBytes: number;
  extents: number;
  /** The chain read and decoded cleanly. */
  valid: boolean;
}

export interface CheckReport {
  geometry: { sectorBytes: number; segmentBytes: number; segmentCount: number; capacity: number } | null;
  superblocks: SuperblockCopyReport[];
  /** null when the store has no checkpoint yet (or no valid superblock). */
  checkpoint: CheckpointReport | null;
  problems: CheckProblem[];
  notes: CheckNote[];
  totals: {
    segmentsScanned: number;
    records: number;
    /** Record bytes and checkpoint payload bytes whose checksums were verified. */
    bytesVerified: number;
    /** Unexpired extents of the map an open would rebuild; null when it cannot be rebuilt. */
    liveExtents: number | null;
    /** Unexpired keys of every pool and named snapshot, as an open would map them. */
    liveKeys: number | null;
    /** Records written after the checkpoint that recovery would replay. */
    recordsAfterCheckpoint: number;
    /** Records of a torn tail that recovery would drop. */
    recordsTorn: number;
  };
}

/** All the checker may do to a medium. */
interface ReadView {
  readonly size: number;
  read(buffer: Uint8Array, offset: number): Promise<void>;
}

interface Geometry {
  sectorBytes: number;
  segmentBytes: number;
  segmentCount: number;
  alignment: number;
  storeId: Buffer;
}

/** How a segment is read: which nonce seeds its checksums and what the checkpoint says it holds. */
interface Plan {
  index: number;
  nonce: number;
  openSeq: number;
  kind: SegmentKind;
  /** sealed/head: per the checkpoint's table; fresh: opened after it; unknown: no table to go by. */
  role: 'sealed' | 'head' | 'fresh' | 'unknown';
  /** Every record up to this seq must be readable here (the table's max seq); 0 when unknown. */
  requiredSeq: number;
  /** Heads: where the log written after the checkpoint begins. */
  headOffset: number;
}

interface BadOp {
  op: number;
  /** Offset in segment of the first chunk that fails. */
  offset: number;
  bad: number;
  chunks: number;
  /** The live lbas whose data lies in this op, once the map is rebuilt. */
  live?: string;
}

interface Found {
  segment: number;
  offset: number;
  record: DecodedRecordHeader;
  badOps: BadOp[];
}

/** Stretch of a segment where no valid record begins, at `offset`, after a record of seq `prevSeq`. */
interface Gap {
  segment: number;
  offset: number;
  reason: string;
  prevSeq: number;
  next: Found | undefined;
}

/** Most problems of one repetitive sort (extent checks) listed before a summary line. */
const MAX_LISTED = 20;

/**
 * Verifies every checksum and cross-reference of the store on `media`, reading only.
 * `onProgress` is called with (segments done, segment count) as the scan proceeds.
 * The caller owns `media` (and should hold the store lock so that no writer races the scan).
 */
export async function checkStore(
  media: Media,
  onProgress?: (done: number, total: number) => void,
): Promise<CheckReport> {
  const view: ReadView = { size: media.size, read: (buffer, offset) => media.read(buffer, offset) };
  return new Checker(view, onProgress).run();
}

class Checker {
  readonly report: CheckReport = {
    geometry: null,
    superblocks: [],
    checkpoint: null,
    problems: [],
    notes: [],
    totals: { segmentsScanned: 0, records: 0, bytesVerified: 0, liveExtents: null, liveKeys: null, recordsAfterCheckpoint: 0, recordsTorn: 0 },
  };
  private geo!: Geometry;
  private checkpointSeq = 0;
  private state: CheckpointState | undefined;
  /** False when a checkpoint exists but cannot be read: segments are then judged by their headers. */
  private tableKnown = true;
  private chain = new Set<number>();
  private afterCheckpoint: Found[] = [];
  private gapBefore = new Map<Found, Gap>();
  private opIndex = new Map<string, { found: Found; op: DecodedOp; opIndex: number }>();
  /** Damage inside what the checkpoint covers, judged once the live segments are known. */
  private covered: { segment: number; offset: number; kind: ProblemKind; message: string }[] = [];
  private coveredBad: Found[] = [];
  /** Records after the checkpoint that recovery keeps. */
  private kept: Found[] = [];

  constructor(
    private readonly media: ReadView,
    private readonly onProgress?: (done: number, total: number) => void,
  ) {}

  async run(): Promise<CheckReport> {
    const sb = await this.readSuperblocks();
    if (sb === undefined) return this.report;
    this.judgeSuperblocks();
    if (!this.checkGeometry(sb)) return this.report;
    this.checkpointSeq = sb.checkpoint.seq;
    if (sb.checkpoint.firstSegment >= 0) await this.readCheckpoint(sb);
    if (this.state) this.checkTable(this.state);
    await this.scanSegments();
    this.kept = this.judgeLog();
    const live = this.tableKnown ? this.judgeMap(this.kept) : undefined;
    this.judgeCovered(live);
    return this.report;
  }

  // -------------------------------------------------------------------------------------
  // Superblocks and geometry

  private async readSuperblocks(): Promise<Superblock | undefined> {
    if (this.media.size < SEGMENTS_OFFSET) {
      this.problem(-1, 0, 'superblock', `the medium holds ${this.media.size} bytes, fewer than the two superblock copies`);
      return undefined;
    }
    const copies = Buffer.alloc(SUPERBLOCK_BYTES * 2);
    await this.media.read(copies, 0);
    let best: Superblock | undefined;
    let bestCopy = -1;
    const valid: Superblock[] = [];
    for (let i = 0; i < 2; i++) {
      const bytes = copies.subarray(i * SUPERBLOCK_BYTES, (i + 1) * SUPERBLOCK_BYTES);
      const d = decodeSuperblock(bytes);
      const entry: SuperblockCopyReport = {
        copy: i === 0 ? 'A' : 'B',
        offset: i * SUPERBLOCK_BYTES,
        valid: d.ok,
        generation: d.ok ? d.superblock.generation : null,
        reason: null,
        current: false,
      };
      if (d.ok) {
        valid.push(d.superblock);
        if (best === undefined || d.superblock.generation > best.generation) {
          best = d.superblock;
          bestCopy = i;
        }
      } else if (d.reason === 'not-a-store') {
        entry.reason = bytes.every((b) => b === 0) ? 'blank (never written)' : 'no superblock magic';
      } else if (d.reason === 'checksum') {
        entry.reason = 'fails its checksum';
      } else {
        entry.reason = `written by a newer atomio (format ${d.formatVersion ?? '?'})`;
      }
      this.report.superblocks.push(entry);
    }
    if (best === undefined) {
      this.problem(-1, 0, 'superblock', 'no valid superblock copy: this is not an atomio store, or both copies are damaged');
      return undefined;
    }
    this.report.superblocks[bestCopy]!.current = true;
    for (const [i, s] of this.report.superblocks.entries()) {
      if (s.valid && s.generation! % 2 !== i) {
        this.problem(-1, s.offset, 'superblock', `copy ${s.copy} holds generation ${s.generation}, which belongs in the other copy`);
      }
    }
    if (valid.length === 2 && !sameStore(valid[0]!, valid[1]!)) {
      this.problem(-1, 0, 'superblock', 'the two superblock copies describe different stores or geometries');
    }
    return best;
  }

  private checkGeometry(sb: Superblock): boolean {
    const { sectorBytes, segmentBytes, segmentCount, capacity } = sb;
    this.report.geometry = { sectorBytes, segmentBytes, segmentCount, capacity };
    const where = this.report.superblocks.find((s) => s.current)!.offset;
    let wrong: string | undefined;
    if (sectorBytes !== 512 && sectorBytes !== 4096) wrong = `sector size ${sectorBytes} is neither 512 nor 4096`;
    else if (segmentBytes % 4096 !== 0 || segmentBytes < MIN_SEGMENT_BYTES || segmentBytes > MAX_SEGMENT_BYTES) {
      wrong = `segment size ${segmentBytes} is not a multiple of 4096 in [${MIN_SEGMENT_BYTES}, ${MAX_SEGMENT_BYTES}]`;
    } else if (segmentCount < 1 || SEGMENTS_OFFSET + segmentCount * segmentBytes > capacity) {
      wrong = `${segmentCount} segments of ${segmentBytes} bytes do not fit the capacity of ${capacity} bytes`;
    } else if (capacity > this.media.size) {
      wrong = `the capacity of ${capacity} bytes exceeds the medium's ${this.media.size} bytes`;
    }
    if (wrong !== undefined) {
      this.problem(-1, where, 'superblock', `${wrong}; nothing further can be checked`);
      return false;
    }
    this.geo = { sectorBytes, segmentBytes, segmentCount, alignment: Math.max(512, sectorBytes), storeId: sb.storeId };
    return true;
  }

  /**
   * An invalid copy is damage: a crash cannot leave one, because a copy's used bytes lie in
   * one 512-byte sector, which the medium writes whole or not at all. The exception is a
   * blank copy next to generation 0 or 1: a crash during format, which the first checkpoint
   * repairs.
   */
  private judgeSuperblocks(): void {
    const current = this.report.superblocks.find((s) => s.current)!;
    for (const s of this.report.superblocks) {
      if (s.valid) continue;
      if (s.reason?.startsWith('blank') === true && current.generation! <= 1) {
        this.note(-1, s.offset, `superblock copy ${s.copy} is blank: a crash interrupted the format; copy ${current.copy} is used and the first checkpoint writes this one`);
      } else {
        this.problem(-1, s.offset, 'superblock', `superblock copy ${s.copy} is ${s.reason}; copy ${current.copy} (generation ${current.generation}) is used`);
      }
    }
  }

  // -------------------------------------------------------------------------------------
  // Checkpoint

  private async readCheckpoint(sb: Superblock): Promise<void> {
    const g = this.geo;
    const chain: number[] = [];
    const parts: Buffer[] = [];
    const header = Buffer.alloc(g.alignment);
    let index = sb.checkpoint.firstSegment;
    let failure: { segment: number; offset: number; message: string } | undefined;
    while (index >= 0 && failure === undefined) {
      if (index >= g.segmentCount || chain.includes(index)) {
        failure = { segment: chain.at(-1) ?? index, offset: 0, message: `the checkpoint chain points at segment ${index}, ${index >= g.segmentCount ? 'which does not exist' : 'a loop'}` };
        break;
      }
      await this.media.read(header, this.segmentOffset(index));
      const h = decodeSegmentHeader(header, index, g.storeId);
      if (h === undefined || h.kind !== SegmentKind.checkpoint || h.openSeq !== sb.checkpoint.seq) {
        const why = h === undefined ? 'fails its check' : h.kind !== SegmentKind.checkpoint ? 'is not a checkpoint part' : `belongs to checkpoint seq ${h.openSeq}`;
        failure = { segment: index, offset: 0, message: `the header of checkpoint part ${chain.length} ${why} (superblock expects seq ${sb.checkpoint.seq})` };
        break;
      }
      if (h.payloadBytes > g.segmentBytes - g.alignment) {
        failure = { segment: index, offset: 0, message: `checkpoint part ${chain.length} claims ${h.payloadBytes} bytes, more than a segment holds` };
        break;
      }
      const part = Buffer.alloc(h.payloadBytes);
      await this.media.read(part, this.segmentOffset(index) + g.alignment);
      if (checksum(part, 0) !== h.payloadCrc) {
        failure = { segment: index, offset: g.alignment, message: `checkpoint part ${chain.length} fails its checksum` };
        break;
      }
      chain.push(index);
      parts.push(part);
      this.report.totals.bytesVerified += part.length;
      index = h.nextSegment;
    }
    const payload = Buffer.concat(parts);
    const summary: CheckpointReport = { seq: sb.checkpoint.seq, segments: chain, payloadBytes: payload.length, extents: 0, valid: false };
    this.report.checkpoint = summary;
    for (const c of chain) this.chain.add(c);
    if (failure === undefined && payload.length !== sb.checkpoint.payloadBytes) {
      failure = { segment: sb.checkpoint.firstSegment, offset: 0, message: `the checkpoint holds ${payload.length} bytes, the superblock says ${sb.checkpoint.payloadBytes}` };
    }
    const state = failure === undefined ? decodeCheckpoint(payload) : undefined;
    if (failure === undefined && (state === undefined || state.seq !== sb.checkpoint.seq || state.segments.length !== this.geo.segmentCount)) {
      failure = { segment: sb.checkpoint.firstSegment, offset: g.alignment, message: 'the checkpoint payload is malformed (or is not the one the superblock names)' };
    }
    if (failure !== undefined || state === undefined) {
      const f = failure!;
      this.problem(f.segment, f.offset, 'checkpoint', `${f.message}; open fails with ERR_CORRUPT. Every segment with a valid header is scanned instead`);
      this.tableKnown = false;
      return;
    }
    summary.valid = true;
    summary.extents = checkpointExtents(state).length;
    this.state = state;
  }

  /** The payload against itself: heads, segment rows and extents must agree. */
  private checkTable(state: CheckpointState): void {
    const g = this.geo;
    const where = this.report.checkpoint!.segments[0]!;
    if (state.nextSeq !== state.seq + 1) {
      this.problem(where, g.alignment, 'checkpoint', `the checkpoint's next seq is ${state.nextSeq}, not seq + 1 = ${state.seq + 1}`);
    }
    const headSegments = new Set<number>();
    for (const head of state.heads) {
      const row = state.segments[head.segment];
      headSegments.add(head.segment);
      if (row === undefined || row.state !== 'open' || row.kind !== head.kind || row.writeOffset !== head.offset) {
        this.problem(head.segment, head.offset, 'checkpoint', `the checkpoint's head (kind ${head.kind}) at segment ${head.segment} offset ${head.offset} disagrees with its segment table`);
      } else if (head.offset < g.alignment || head.offset > g.segmentBytes || head.offset % g.alignment !== 0) {
        this.problem(head.segment, head.offset, 'checkpoint', `the checkpoint's head offset ${head.offset} is not an aligned offset inside the segment`);
      }
    }
    state.segments.forEach((row, i) => {
      if (row.state !== 'open' && row.state !== 'sealed') return;
      if (row.kind !== SegmentKind.hot && row.kind !== SegmentKind.cold) {
        this.problem(i, 0, 'checkpoint', `the checkpoint's table has segment ${i} ${row.state} with kind ${row.kind}`);
      }
      if (row.state === 'open' && !headSegments.has(i)) {
        this.problem(i, 0, 'checkpoint', `the checkpoint's table has segment ${i} open, but no head is in it`);
      }
      if (row.maxSeq > state.seq || row.openSeq > state.seq) {
        this.problem(i, 0, 'checkpoint', `the checkpoint's table has records up to seq ${row.maxSeq} in segment ${i}, past the checkpoint's seq ${state.seq}`);
      }
    });
    this.checkExtents(state);
  }

  private checkExtents(state: CheckpointState): void {
    const g = this.geo;
    let end = -1;
    let wrong = 0;
    for (const e of checkpointExtents(state)) {
      const row = state.segments[e.segment];
      let why: string | undefined;
      if (!Number.isSafeInteger(e.lba) || e.lba < end) why = 'overlaps or is out of order';
      else if (e.count < 1 || e.firstSector + e.count > e.opSectors) why = `covers sectors ${e.firstSector}..${e.firstSector + e.count - 1} of a write of ${e.opSectors}`;
      else if (row === undefined || (row.state !== 'open' && row.state !== 'sealed')) why = `points into segment ${e.segment}, which the table says is ${row?.state ?? 'missing'}`;
      else if (e.dataOffset < g.alignment || e.dataOffset + chunkedBytes(e.opSectors * g.sectorBytes) > g.segmentBytes) why = `has data at offset ${e.dataOffset}, outside the segment`;
      else if (e.version > state.seq || e.version < 1) why = `has version ${e.version}, outside 1..${state.seq}`;
      end = Math.max(end, e.lba + e.count);
      if (why === undefined) continue;
      if (wrong++ < MAX_LISTED) this.problem(e.segment, e.dataOffset, 'checkpoint', `the checkpoint's extent for lba ${range(e.lba, e.count)} ${why}`);
    }
    if (wrong > MAX_LISTED) this.problem(-1, 0, 'checkpoint', `… and ${wrong - MAX_LISTED} more bad extents in the checkpoint`);
  }

  // -------------------------------------------------------------------------------------
  // Segments

  private async scanSegments(): Promise<void> {
    const g = this.geo;
    const header = Buffer.alloc(g.alignment);
    const image = Buffer.allocUnsafe(g.segmentBytes);
    this.onProgress?.(0, g.segmentCount);
    for (let i = 0; i < g.segmentCount; i++) {
      if (!this.chain.has(i)) {
        await this.media.read(header, this.segmentOffset(i));
        const plan = this.plan(i, decodeSegmentHeader(header, i, g.storeId));
        if (plan !== undefined) {
          await this.media.read(image, this.segmentOffset(i));
          this.judgeSegment(plan, this.scan(image, plan));
          this.report.totals.segmentsScanned++;
        }
      }
      this.onProgress?.(i + 1, g.segmentCount);
    }
  }

  /** Decides whether segment `i` is in use and how to read it; reports header disagreements. */
  private plan(i: number, h: SegmentHeader | undefined): Plan | undefined {
    const g = this.geo;
    const data = h !== undefined && h.kind !== SegmentKind.checkpoint;
    if (data && h.openSeq > this.checkpointSeq) {
      return { index: i, nonce: h.nonce, openSeq: h.openSeq, kind: h.kind, role: 'fresh', requiredSeq: 0, headOffset: g.alignment };
    }
    if (!this.tableKnown) {
      if (!data) return undefined;
      return { index: i, nonce: h.nonce, openSeq: h.openSeq, kind: h.kind, role: 'unknown', requiredSeq: 0, headOffset: g.alignment };
    }
    const row: SegmentRow | undefined = this.state?.segments[i];
    if (row === undefined || (row.state !== 'open' && row.state !== 'sealed')) return undefined;
    if (h?.kind === SegmentKind.checkpoint) {
      this.note(i, 0, `segment ${i}, ${row.state} in the checkpoint's table, now holds part of a checkpoint that never became current (a crash interrupted it); what the table says lived here must have moved since (checked below)`);
      return undefined;
    }
    if (h === undefined) {
      this.defer(i, 0, 'segment-header', `segment ${i} is ${row.state} in the checkpoint's table but its header fails its check; its records are read with the table's nonce`);
    } else if (h.nonce !== row.nonce >>> 0 || h.openSeq !== row.openSeq || h.kind !== row.kind) {
      this.defer(i, 0, 'segment-header', `segment ${i}'s header (opened at seq ${h.openSeq}, kind ${h.kind}) disagrees with the checkpoint's table (seq ${row.openSeq}, kind ${row.kind})`);
    }
    const head = this.state?.heads.find((x) => x.segment === i);
    return {
      index: i,
      nonce: row.nonce,
      openSeq: row.openSeq,
      kind: row.kind === 0 ? SegmentKind.hot : row.kind,
      role: row.state === 'open' ? 'head' : 'sealed',
      requiredSeq: row.maxSeq,
      headOffset: row.state === 'open' ? (head?.offset ?? row.writeOffset) : g.segmentBytes,
    };
  }

  /** Every valid record of the segment, in order, and the stretches between them where none begins. */
  private scan(image: Buffer, plan: Plan): { records: Found[]; gaps: Gap[] } {
    const g = this.geo;
    const records: Found[] = [];
    const gaps: Gap[] = [];
    let gap: Gap | undefined;
    let prevSeq = 0;
    let p = g.alignment;
    while (p + RECORD_HEADER_BYTES <= g.segmentBytes) {
      const d = decodeRecordMeta(image.subarray(p), plan.nonce, p, g.sectorBytes, g.segmentBytes - p);
      if (!d.ok || d.record.seq <= prevSeq) {
        // Zeros from the end of a record to the next aligned offset pad a group commit.
        const boundary = Math.ceil(p / g.alignment) * g.alignment;
        if (gap === undefined && p % g.alignment !== 0 && isZero(image, p, boundary - p)) {
          p = boundary;
          continue;
        }
        const reason = d.ok ? `a record of seq ${d.record.seq} after seq ${prevSeq}` : REASONS[d.reason];
        gap ??= { segment: plan.index, offset: p, reason, prevSeq, next: undefined };
        p = resyncAfter(image, p, p, g.alignment);
        continue;
      }
      const found = this.verifyRecord(image, plan, p, d.record);
      if (gap !== undefined) {
        gap.next = found;
        gaps.push(gap);
        gap = undefined;
      }
      records.push(found);
      prevSeq = d.record.seq;
      p = nextRecordAt(p, d.record.recordBytes);
    }
    if (gap !== undefined) gaps.push(gap);
    return { records, gaps };
  }

  /** Checks every data chunk of a record whose meta checksum holds, and its fields' sense. */
  private verifyRecord(image: Buffer, plan: Plan, offset: number, r: DecodedRecordHeader): Found {
    const g = this.geo;
    const found: Found = { segment: plan.index, offset, record: r, badOps: [] };
    r.ops.forEach((op, i) => {
      if (op.type === OpType.put) {
        const data = image.subarray(op.dataOffset, op.dataOffset + kvDataBytes(op.valueBytes));
        if (!kvDataIntact(data, plan.nonce, op.dataOffset)) found.badOps.push({ op: i, offset: op.dataOffset, bad: 1, chunks: 1 });
        this.opIndex.set(`${plan.index}:${op.dataOffset}`, { found, op, opIndex: i });
        return;
      }
      if (op.type !== OpType.write) return;
      const bad = verifyOpChunks(image, plan.nonce, op.dataOffset, op.count * g.sectorBytes);
      if (bad !== undefined) found.badOps.push({ op: i, ...bad });
      this.opIndex.set(`${plan.index}:${op.dataOffset}`, { found, op, opIndex: i });
    });
    const odd = this.oddities(plan, r);
    if (odd !== undefined) this.problem(plan.index, offset, 'record-header', `record seq ${r.seq} ${odd}`);
    this.report.totals.records++;
    this.report.totals.bytesVerified += r.recordBytes;
    return found;
  }

  /** What is wrong with a record whose checksum holds (a bug that wrote it), if anything. */
  private oddities(plan: Plan, r: DecodedRecordHeader): string | undefined {
    const lastLba = ADDRESS_SPACE_BYTES / this.geo.sectorBytes;
    if (plan.role !== 'unknown' && r.seq < plan.openSeq) return `is older than its segment (opened at seq ${plan.openSeq})`;
    if ((r.kind === RecordKind.commit) !== (plan.kind === SegmentKind.hot)) return `is a ${kindName(r.kind)} in a ${plan.kind === SegmentKind.hot ? 'hot' : 'cold'} segment`;
    if (r.batchSeq > r.seq || r.durableSeq >= r.seq) return `claims batch seq ${r.batchSeq} and durable seq ${r.durableSeq}, not both below its own`;
    for (const op of r.ops) {
      if (isKvOpType(op.type)) {
        if (op.type === OpType.put && r.kind === RecordKind.commit && op.version !== r.seq) return `puts a key with version ${op.version}, not its seq`;
        if (r.kind === RecordKind.relocation && (op.type !== OpType.put || op.version < 1 || op.version >= r.seq)) {
          return `relocates a key with version ${op.version} (relocations copy older puts only)`;
        }
        if (!(op.expiresAt >= 0)) return `gives a key the deadline ${op.expiresAt}`;
        continue;
      }
      if (!Number.isSafeInteger(op.lba) || !Number.isSafeInteger(op.count) || op.lba < 0 || op.count < 1 || op.lba + op.count > lastLba) {
        return `has an op on sectors ${op.lba} (+${op.count}), outside the address space`;
      }
      if (op.type === OpType.write && r.kind === RecordKind.commit && op.version !== r.seq) return `writes lba ${op.lba} with version ${op.version}, not its seq`;
      if (r.kind === RecordKind.relocation && (op.type !== OpType.write || op.version < 1 || op.version >= r.seq)) {
        return `relocates lba ${op.lba} with version ${op.version} (relocations copy older writes only)`;
      }
      if (!(op.expiresAt >= 0)) return `gives lba ${op.lba} the deadline ${op.expiresAt}`;
    }
    return undefined;
  }

  /** Damage inside what the checkpoint covers is reported here; the log after it is judged in judgeLog. */
  private judgeSegment(plan: Plan, scanned: { records: Found[]; gaps: Gap[] }): void {
    const ckpt = this.checkpointSeq;
    for (const gap of scanned.gaps) {
      if (gap.next === undefined) {
        if (gap.prevSeq < plan.requiredSeq) {
          this.defer(gap.segment, gap.offset, 'record-header', `the log of segment ${gap.segment} ends here after seq ${gap.prevSeq} (${gap.reason}), but the checkpoint says it holds records up to seq ${plan.requiredSeq}`);
        }
        continue;
      }
      if (gap.next.record.seq <= ckpt || gap.prevSeq < plan.requiredSeq) {
        this.defer(gap.segment, gap.offset, 'record-header', `${gap.reason} where the log of segment ${gap.segment} continues (seq ${gap.prevSeq} before, seq ${gap.next.record.seq} at offset ${gap.next.offset}): a record the checkpoint covers is damaged`);
      } else {
        this.gapBefore.set(gap.next, gap);
      }
    }
    for (const f of scanned.records) {
      const seq = f.record.seq;
      const after = seq > ckpt;
      if (plan.role === 'sealed' && after) {
        this.problem(f.segment, f.offset, 'record-header', `record seq ${seq} lies in a segment the checkpoint (seq ${ckpt}) has sealed; recovery never reads it`);
      } else if (plan.role === 'head' && after !== (f.offset >= plan.headOffset)) {
        this.problem(f.segment, f.offset, 'record-header', `record seq ${seq} lies ${after ? 'before' : 'after'} the head offset ${plan.headOffset} the checkpoint (seq ${ckpt}) recorded`);
      }
      if (after && plan.role !== 'sealed') this.afterCheckpoint.push(f);
      else if (f.badOps.length > 0) this.coveredBad.push(f);
    }
  }

  // -------------------------------------------------------------------------------------
  // The log after the checkpoint, and the map an open would rebuild

  /** Judges the log written after the checkpoint as recovery does; returns the records it keeps. */
  private judgeLog(): Found[] {
    const records = this.afterCheckpoint.sort((a, b) => a.record.seq - b.record.seq);
    let vouched = this.checkpointSeq;
    let voucher: Found | undefined;
    for (const f of records) {
      if (f.record.durableSeq > vouched) {
        vouched = f.record.durableSeq;
        voucher = f;
      }
    }
    const kept: Found[] = [];
    let expected = this.checkpointSeq + 1;
    let tornAt = -1;
    for (const [i, f] of records.entries()) {
      const r = f.record;
      if (i > 0 && records[i - 1]!.record.seq === r.seq) {
        this.problem(f.segment, f.offset, 'record-header', `a second record of seq ${r.seq} (the first is in segment ${records[i - 1]!.segment})`);
        continue;
      }
      const damaged = r.seq !== expected || f.badOps.length > 0;
      if (tornAt < 0 && damaged && (r.seq !== expected ? expected : r.seq) > vouched) {
        tornAt = i;
        this.noteTornTail(records.slice(i), r.seq !== expected ? expected : r.seq, vouched);
      }
      if (tornAt >= 0) continue;
      if (r.seq !== expected) {
        const gap = this.gapBefore.get(f);
        const by = voucher === undefined ? '' : ` (record seq ${voucher.record.seq} in segment ${voucher.segment} vouches for every seq up to ${vouched})`;
        this.problem(gap?.segment ?? f.segment, gap?.offset ?? f.offset, 'record-header', `records ${expected}..${r.seq - 1} are missing, though they were flushed${by}${gap ? `: ${gap.reason} here` : ''}`);
      }
      kept.push(f);
      expected = r.seq + 1;
    }
    this.report.totals.recordsAfterCheckpoint = kept.length;
    this.report.totals.recordsTorn = tornAt < 0 ? 0 : records.length - tornAt;
    return kept;
  }

  private noteTornTail(torn: Found[], firstBad: number, vouched: number): void {
    const first = torn[0]!;
    const last = torn[torn.length - 1]!;
    const gap = this.gapBefore.get(first);
    const seqs = `: ${torn.length} record(s), seq ${first.record.seq}..${last.record.seq}`;
    this.note(
      gap?.segment ?? first.segment,
      gap?.offset ?? first.offset,
      `a crash tore the log at seq ${firstBad} (no record vouches it was flushed; flushed up to seq ${vouched})${seqs}; none was acknowledged as durable and recovery drops them`,
    );
  }

  /**
   * Rebuilds the map as an open would and checks that every live extent points at valid
   * data. Returns the segments that hold live data.
   */
  private judgeMap(kept: Found[]): Set<number> {
    const map = new ExtentMap();
    if (this.state) for (const e of checkpointExtents(this.state)) map.set(e);
    for (const f of kept) replay(map, f);
    const now = Date.now();
    let live = 0;
    let wrong = 0;
    const segments = new Set<number>();
    for (const e of map.all()) {
      if (e.expiresAt !== 0 && e.expiresAt <= now) continue;
      live++;
      segments.add(e.segment);
      const why = this.extentTrouble(e);
      if (why !== undefined && wrong++ < MAX_LISTED) {
        this.problem(e.segment, e.dataOffset, 'checkpoint', `lba ${range(e.lba, e.count)} (version ${e.version}) is mapped to segment ${e.segment} offset ${e.dataOffset}, ${why}; reads of it fail`);
      }
    }
    if (wrong > MAX_LISTED) this.problem(-1, 0, 'checkpoint', `… and ${wrong - MAX_LISTED} more live extents without valid data`);
    this.report.totals.liveExtents = live;
    this.judgeKeys(kept, now, segments);
    return segments;
  }

  /**
   * Rebuilds every pool's keys as an open would (and the named snapshots' from the
   * checkpoint) and checks that each live key points at the intact value of a put of that
   * key and version. Adds the segments they point into to `segments`.
   */
  private judgeKeys(kept: Found[], now: number, segments: Set<number>): void {
    const pools = new Map<number, { name: string; keys: Map<string, KeyAt> }>();
    const views: { what: string; keys: Map<string, KeyAt> }[] = [];
    for (const image of this.state?.pools ?? []) pools.set(image.id, { name: image.name, keys: keysOfImage(image) });
    for (const snapshot of this.state?.snapshots ?? []) {
      for (const image of snapshot.pools) views.push({ what: `pool '${image.name}' of snapshot '${snapshot.name}'`, keys: keysOfImage(image) });
      for (let i = 0; i < snapshot.extentsRaw.length / 6; i++) segments.add(ExtentMap.unpackRaw(snapshot.extentsRaw, i).segment);
    }
    for (const f of kept) replayKeys(pools, f);
    for (const [, pool] of pools) views.push({ what: `pool '${pool.name}'`, keys: pool.keys });
    let live = 0;
    let wrong = 0;
    for (const { what, keys } of views) {
      for (const [id, k] of keys) {
        if (k.expiresAt !== 0 && k.expiresAt <= now) continue;
        live++;
        segments.add(k.segment);
        const why = this.keyTrouble(id, k);
        if (why !== undefined && wrong++ < MAX_LISTED) {
          this.problem(k.segment, k.dataOffset, 'checkpoint', `a key of ${what} (version ${k.version}) points at segment ${k.segment} offset ${k.dataOffset}, ${why}; reads of it fail`);
        }
      }
    }
    if (wrong > MAX_LISTED) this.problem(-1, 0, 'checkpoint', `… and ${wrong - MAX_LISTED} more live keys without a valid value`);
    this.report.totals.liveKeys = live;
  }

  /** Why a live key's value cannot be read back, or undefined when it can. */
  private keyTrouble(id: string, k: KeyAt): string | undefined {
    const entry = this.opIndex.get(`${k.segment}:${k.dataOffset}`);
    if (entry === undefined || entry.op.type !== OpType.put) return 'where no valid put\'s value begins';
    const { found, op } = entry;
    const version = found.record.kind === RecordKind.commit ? found.record.seq : op.version;
    if (op.key.toString('latin1') !== id || op.valueBytes !== k.valueBytes) return 'but the put there is of another key or size';
    if (version !== k.version) return `but the put there has version ${version}`;
    const bad = found.badOps.find((b) => b.op === entry.opIndex);
    if (bad !== undefined) bad.live = 'a live key';
    return undefined;
  }

  /**
   * Reports damage inside what the checkpoint covers: a problem where the segment holds live
   * data (or where that is unknown), a note where it holds none. Then bad chunks of the kept
   * log, which are always problems: a later record vouches they were flushed.
   */
  private judgeCovered(live: Set<number> | undefined): void {
    const harmless = (segment: number): boolean => live !== undefined && !live.has(segment);
    for (const d of this.covered) {
      if (!harmless(d.segment)) this.problem(d.segment, d.offset, d.kind, d.message);
      else this.note(d.segment, d.offset, `${d.message} — harmless: ${noLiveData(d.segment)}`);
    }
    for (const f of this.coveredBad) {
      for (const b of f.badOps) {
        if (!harmless(f.segment)) this.problem(f.segment, b.offset, 'chunk', chunkMessage(f, b));
        else this.note(f.segment, b.offset, `${chunkMessage(f, b)} — harmless: ${noLiveData(f.segment)}`);
      }
    }
    for (const f of this.kept) for (const b of f.badOps) this.problem(f.segment, b.offset, 'chunk', chunkMessage(f, b));
  }

  /** Why a live extent's data cannot be read back, or undefined when it can. */
  private extentTrouble(e: Extent): string | undefined {
    const entry = this.opIndex.get(`${e.segment}:${e.dataOffset}`);
    if (entry === undefined) return 'where no valid write op\'s data begins';
    const { found, op } = entry;
    const version = found.record.kind === RecordKind.commit ? found.record.seq : op.version;
    if (op.count !== e.opSectors || op.lba + e.firstSector !== e.lba || e.firstSector + e.count > op.count) {
      return `but the write there covers lba ${range(op.lba, op.count)}`;
    }
    if (version !== e.version) return `but the write there has version ${version}`;
    const bad = found.badOps.find((b) => b.op === entry.opIndex);
    if (bad !== undefined) bad.live = bad.live === undefined ? range(e.lba, e.count) : `${bad.live}, ${range(e.lba, e.count)}`;
    return undefined;
  }

  // -------------------------------------------------------------------------------------

  private segmentOffset(index: number): number {
    return SEGMENTS_OFFSET + index * this.geo.segmentBytes;
  }

  private problem(segment: number, offset: number, kind: ProblemKind, message: string): CheckProblem {
    const p: CheckProblem = { segment, offset, kind, message };
    this.report.problems.push(p);
    return p;
  }

  private note(segment: number, offset: number, message: string): void {
    this.report.notes.push({ segment, offset, message });
  }

  /** Damage inside what the checkpoint covers: judged by judgeCovered. */
  private defer(segment: number, offset: number, kind: ProblemKind, message: string): void {
    this.covered.push({ segment, offset, kind, message });
  }
}

function chunkMessage(f: Found, b: BadOp): string {
  const op = f.record.ops[b.op]!;
  if (op.type === OpType.put) {
    const live = b.live === undefined ? '' : '; it is a live key\'s value: reads of it fail with ERR_CORRUPT';
    return `record seq ${f.record.seq}: the value of a put to pool ${op.pool} fails its checksum${live}`;
  }
  const live = b.live === undefined ? '' : `; it holds live data (lba ${b.live}): reads of it fail with ERR_CORRUPT`;
  return `record seq ${f.record.seq}: a data chunk fails its checksum (${b.bad} of ${b.chunks} chunks of its write to lba ${range(op.lba, op.count)})${live}`;
}

function noLiveData(segment: number): string {
  return `segment ${segment} holds no live data any more (emptied since the checkpoint, it may have been freed and caught half-reused by a crash)`;
}

const REASONS: Record<'no-record' | 'checksum' | 'malformed', string> = {
  'no-record': 'no record begins',
  checksum: 'a record header fails its checksum',
  malformed: 'a record header is malformed',
};

/** Checks each chunk of one write op's data; undefined when all hold. */
function verifyOpChunks(
  image: Buffer,
  nonce: number,
  dataOffset: number,
  dataBytes: number,
): { offset: number; bad: number; chunks: number } | undefined {
  let first = -1;
  let bad = 0;
  let chunks = 0;
  for (let done = 0, p = dataOffset; done < dataBytes; chunks++) {
    const n = Math.min(CHUNK_DATA_BYTES, dataBytes - done);
    if (verifyChunks(image.subarray(p, p + CHUNK_CRC_BYTES + n), nonce, p) >= 0) {
      bad++;
      if (first < 0) first = p;
    }
    done += n;
    p += CHUNK_CRC_BYTES + n;
  }
  return bad === 0 ? undefined : { offset: first, bad, chunks };
}

/** A key as an open would map it. */
interface KeyAt {
  version: number;
  expiresAt: number;
  segment: number;
  dataOffset: number;
  valueBytes: number;
}

function keysOfImage(image: PoolImage): Map<string, KeyAt> {
  const keys = new Map<string, KeyAt>();
  let from = 0;
  for (let i = 0; i < image.ends.length; i++) {
    const m = i * META_FIELDS;
    const location = image.meta[m + 2]!;
    keys.set(Buffer.from(image.keys.subarray(from, image.ends[i])).toString('latin1'), {
      version: image.meta[m]!,
      expiresAt: image.meta[m + 1]!,
      segment: Math.floor(location / 2 ** 32),
      dataOffset: location % 2 ** 32,
      valueBytes: image.meta[m + 3]!,
    });
    from = image.ends[i]!;
  }
  return keys;
}

/** Applies a kept record's kv ops the way recovery's replay does (src/ftl/pools.ts). */
function replayKeys(pools: Map<number, { name: string; keys: Map<string, KeyAt> }>, f: Found): void {
  const r = f.record;
  for (const op of r.ops) {
    if (!isKvOpType(op.type)) continue;
    const id = op.key.toString('latin1');
    if (op.type === OpType.poolCreate) {
      if (!pools.has(op.pool)) pools.set(op.pool, { name: op.key.toString('utf8'), keys: new Map() });
      continue;
    }
    const pool = pools.get(op.pool);
    if (pool === undefined) continue;
    if (op.type === OpType.poolDrop) {
      pools.delete(op.pool);
    } else if (op.type === OpType.delete) {
      pool.keys.delete(id);
    } else if (op.type === OpType.touch) {
      const k = pool.keys.get(id);
      if (k !== undefined) k.expiresAt = op.expiresAt;
    } else if (r.kind === RecordKind.commit) {
      pool.keys.set(id, { version: r.seq, expiresAt: op.expiresAt, segment: f.segment, dataOffset: op.dataOffset, valueBytes: op.valueBytes });
    } else {
      const k = pool.keys.get(id);
      if (k !== undefined && k.version === op.version) pool.keys.set(id, { ...k, segment: f.segment, dataOffset: op.dataOffset });
    }
  }
}

/** Applies a kept record to the map the way recovery's replay does. */
function replay(map: ExtentMap, f: Found): void {
  const r = f.record;
  for (const op of r.ops) {
    if (isKvOpType(op.type)) continue; // the block map only; keys are checked through their records
    if (op.type === OpType.trim) {
      map.clear(op.lba, op.count);
    } else if (r.kind === RecordKind.commit) {
      map.set({ lba: op.lba, count: op.count, version: r.seq, segment: f.segment, dataOffset: op.dataOffset, opSectors: op.count, firstSector: 0, expiresAt: op.expiresAt });
    } else {
      // A relocation moves only the sectors that still hold the version it copied.
      for (const piece of map.piecesIn(op.lba, op.count)) {
        if (piece.version !== op.version) continue;
        map.set({ ...piece, segment: f.segment, dataOffset: op.dataOffset, opSectors: op.count, firstSector: piece.lba - op.lba, expiresAt: op.expiresAt });
      }
    }
  }
}

function sameStore(a: Superblock, b: Superblock): boolean {
  return (
    a.storeId.equals(b.storeId) &&
    a.sectorBytes === b.sectorBytes &&
    a.segmentBytes === b.segmentBytes &&
    a.segmentCount === b.segmentCount &&
    a.capacity === b.capacity
  );
}

function kindName(kind: RecordKind): string {
  return kind === RecordKind.commit ? 'commit' : 'relocation';
}

function range(lba: number, count: number): string {
  return count === 1 ? `${lba}` : `${lba}..${lba + count - 1}`;
}
