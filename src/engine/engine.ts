// The engine: one log of records over a Media, the maps in memory, group commit, the
// cleaner and checkpoints. Faces (block, kv, region, stream) submit ops to it.
//
// A commit goes through these steps inside one pipeline:
//   1. gather the commits queued since the last batch (group commit);
//   2. check each commit's conditions against the applied state, plus the batches still
//      being written, plus earlier commits of the batch; a failed check rejects that commit
//      alone;
//   3. make room: clean segments (or checkpoint, so more become cleanable) until the batch
//      fits; this waits until no batch is being written;
//   4. give each commit the next sequence number and lay the records into the head segment;
//   5. write each segment's span with one durable write (or a write, then one flush);
//   6. once the batch and every batch before it are written: apply the records to the maps,
//      then resolve every caller.
// Up to MAX_BATCHES_WRITING batches are written at once, so that the CPU work of admitting
// and encoding one batch overlaps the I/O of the one before; they land (step 6) in order.
// Because state is applied only after the flush, a reader of a 'full' store never sees data
// a crash could lose. Every record names the seq up to which the log was flushed when it
// was written, so recovery can tell a torn tail (dropped from the first missing or damaged
// record on, even when a later batch reached the medium) from damage to flushed data
// (reported, the rest kept).
//
// Invariants:
// - `appliedSeq` is the seq of the last record applied; every record up to it is durable
//   (durability 'full') and reflected in the maps;
// - per segment, liveBytes equals the mapped sectors (expired or not) that point into it;
// - a segment is reused only when free (see segments.ts).

import { randomInt } from 'node:crypto';
import { assert } from '../base/assert.js';
import type { Clock } from '../base/clock.js';
import { AtomioError } from '../base/errors.js';
import { ExpiryQueue } from '../ftl/expiry.js';
import { ExtentMap, type Extent } from '../ftl/extent-map.js';
import type { KeyIndex, KeyMeta, KeyView } from '../ftl/key-index.js';
import { Pools, TWO_32, segmentOf, type Pool } from '../ftl/pools.js';
import { SegmentTable, type SegmentInfo } from '../ftl/segments.js';
import {
  CHUNK_CRC_BYTES,
  CHUNK_DATA_BYTES,
  BLOCK_OP_BYTES,
  OpType,
  RECORD_HEADER_BYTES,
  RecordKind,
  SEGMENTS_OFFSET,
  SEGMENT_HEADER_USED_BYTES,
  SegmentKind,
  alignUp,
  nextRecordAt,
  resyncAfter,
  chunkedBytes,
  decodeRecordMeta,
  encodeRecord,
  Gather,
  encodeSegmentHeader,
  encodeSuperblock,
  isKvOp,
  kvDataBytes,
  kvDataIntact,
  kvEntryBytes,
  recordBytesFor,
  verifyChunks,
  zero,
  type KvOp,
  type LogOp,
  type Superblock,
} from '../log/format.js';
import { checksum } from '../log/crc.js';
import type { Media } from '../media/media.js';
import { checkpointBytes, encodeCheckpointInSteps, extentSource, poolSource, type Head } from './checkpoint.js';
import { InlineReads, InlineWrites } from './inline.js';
import { snapshotImageBytes, snapshotSource } from './snapshots.js';
import {
  CLEANER_RESERVE_SEGMENTS,
  SPLIT_HEADROOM_EXTENTS,
  CLEAN_BELOW_FREE_FRACTION,
  EXTENT_OVERHEAD_BYTES,
  MAX_BATCH_BYTES,
  MAX_BATCHES_WRITING,
  PREFILL_AHEAD_SEGMENTS,
  PREFILL_MAX_FLUSH_BYTES,
  USABLE_FRACTION,
  WEAR_SPREAD_LIMIT,
} from './limits.js';

export type Durability = 'full' | 'none';

/**
 * A put's value, or a function that makes it from the key's current value (undefined when
 * absent) at the moment the commit is admitted: how incr stays atomic without a retry loop.
 * The function may throw an AtomioError to reject the commit.
 */
export type ValueSource = Uint8Array | ((current: Buffer | undefined) => Uint8Array);

export type OpInput =
  | { type: 'write'; lba: number; count: number; data: Uint8Array }
  | { type: 'trim'; lba: number; count: number }
  /**
   * ttlMs 0: no expiry; keepTtl: the key keeps its current expiry (memcached incr);
   * uncached: the value cache keeps no copy (a face that holds the bytes itself).
   * private (put, delete): the face promises that no condition, computed value or other op
   * in flight names this key, so the batch need not stage it for them to see (a region's
   * page keys, each written once). Far from full, such an op costs no staging at all.
   */
  | { type: 'put'; pool: string; key: Buffer; value: ValueSource; ttlMs: number; keepTtl?: boolean; uncached?: boolean; private?: boolean }
  | { type: 'delete'; pool: string; key: Buffer; private?: boolean }
  /** A new expiry for a present key (ttlMs 0: never expires). */
  | { type: 'touch'; pool: string; key: Buffer; ttlMs: number }
  | { type: 'dropPool'; pool: string };

/** A kv key's expected state: a version, or just absent or present. */
export type KeyExpectation = number | 'absent' | 'present';

export type Condition =
  | { kind: 'unwritten'; lba: number; count: number }
  | { kind: 'version'; lba: number; count: number; version: number }
  | { kind: 'key'; pool: string; key: Buffer; expect: KeyExpectation }
  /**
   * The keys in a range and their versions are exactly `seen` (what a transaction listed):
   * no key was added, removed or rewritten there since.
   */
  | { kind: 'range'; pool: string; start?: Buffer; end?: Buffer; reverse: boolean; limit: number; seen: { key: Buffer; version: number }[] };

/** A key's state as a commit of the batch sees it. */
interface KeyState {
  present: boolean;
  version: number;
  /** The live value when known without a read (written earlier in the batch). */
  value: Buffer | undefined;
  /** Bytes its entry holds in the log (0 when absent or only pending). */
  entryBytes: number;
  expiresAt: number;
}

/**
 * What a live view (an iterator or a snapshot) may still read: the segments named, or, with
 * `inUseAt`, every segment in use since that epoch of the segment table (everything in use
 * when the pin was taken; a segment that was empty and not yet reclaimed then counts too).
 */
export interface Pin {
  readonly segments?: Set<number>;
  readonly inUseAt?: number;
}

/** A pool to read values of: the live one, or a snapshot's frozen copy. */
export interface PoolReader {
  readonly id: number;
  readonly name: string;
  readonly index: KeyIndex | KeyView;
}

/** A read view of the maps at one moment (see store.snapshot()). */
export interface SnapshotState {
  readonly name: string | undefined;
  readonly version: number;
  readonly createdAt: number;
  readonly map: ExtentMap;
  readonly pools: Map<string, PoolReader>;
  readonly pin: Pin;
  /** Released (unnamed) or deleted (named): its segments may be reused, reads must stop. */
  released: boolean;
}

export interface EngineSettings {
  media: Media;
  superblock: Superblock;
  clock: Clock;
  durability: Durability;
  flushIntervalMs: number;
  checkpointIntervalBytes: number;
  /** Bytes of memory for copies of hot kv values. */
  cacheBytes: number;
  /** Whether a lone commit may be written on the event loop's thread (see inline.ts). */
  inlineWrites: boolean;
  /** Whether a read may be made on the event loop's thread (see inline.ts). */
  inlineReads: boolean;
}

export interface Corruption {
  segment: number;
  offset: number;
  reason: string;
}

export interface RecoveryReport {
  ms: number;
  checkpointSeq: number;
  recordsReplayed: number;
  bytesReplayed: number;
  recordsDropped: number;
  corruptions: Corruption[];
}

/** Work that must run alone between batches (checkpoints asked for by the user). */
interface Job {
  run: () => Promise<void>;
  resolve: () => void;
  reject: (error: Error) => void;
}

interface Pending {
  ops: OpInput[];
  conditions: Condition[];
  ttlMs: number;
  dataBytes: number;
  /** It has kv ops (put, delete, touch, dropPool): only then does stageKv look at it. */
  kv: boolean;
  /** Put values as admitted (computed ones made), by op index. */
  values: (Uint8Array | undefined)[];
  /** Expiry of each put and touch as admitted, by op index. */
  expiries: number[];
  resolve: (version: number) => void;
  reject: (error: Error) => void;
}

/** A record on its way to the log. */
interface Outgoing {
  kind: RecordKind;
  head: SegmentKind;
  ops: LogOp[];
  seq: number;
  segment: number;
  offset: number;
  bytes: number;
  dataOffsets: number[];
}

/** What an admitted batch changes, as batches admitted while it is written must see it. */
interface Layer {
  /**
   * Placeholders for its block writes (version Infinity) and trims (version -1), of its
   * first `placed` commits: the rest are placed only when a condition or the exact space
   * accounting looks at the overlays (placeOverlays), which most batches never do.
   */
  overlay: ExtentMap;
  /** The batch's accepted commits, in order. */
  commits: Pending[];
  placed: number;
  keys: BatchKeys;
  /** Pool ids as the batch (and those before it still being written) leaves them; -1: dropped. */
  pools: Map<string, number>;
  /** Bytes of live data it adds (negative when it frees more than it writes). */
  growth: number;
  /** Extents it adds to the block map: near full as the applied map says, otherwise at most. */
  extents: number;
  /** It adds extents to a store whose live data is past usableBytes (in the split headroom). */
  intoHeadroom: boolean;
}

/** An admitted batch whose records are on their way to the medium. */
interface Writing {
  accepted: Pending[];
  records: Outgoing[];
  layer: Layer;
  /** Settles once the records are written (and flushed, where that is separate): to the error, if any. */
  written: Promise<unknown>;
  /** `written` has settled: the batch can land. */
  settled: boolean;
}

interface Span {
  segment: number;
  start: number;
  end: number;
  /** Bytes of write data in it that go out from the writers' buffers (REFER_DATA_BYTES). */
  referred: number;
  header?: SegmentInfo;
}

export class Engine {
  readonly media: Media;
  readonly clock: Clock;
  readonly sectorBytes: number;
  readonly segmentBytes: number;
  /** Group commits start at multiples of this (records inside at 8 bytes); also the segment header's size. */
  readonly alignment: number;
  readonly storeId: Buffer;
  readonly durability: Durability;
  readonly segments: SegmentTable;
  readonly map = new ExtentMap();
  /** Emptied overlays of landed batches: a fresh map costs a 6 KiB leaf, more than a small commit's other work. */
  private readonly spareOverlays: ExtentMap[] = [];
  readonly expiry = new ExpiryQueue();
  readonly pools: Pools;
  /** Segments that live views may still read: not reused while pinned. */
  private readonly pins = new Set<Pin>();
  /** Named snapshots: kept in every checkpoint until deleted. */
  readonly snapshots = new Map<string, SnapshotState>();

  superblock: Superblock;
  /** Next record's seq. */
  nextSeq = 1;
  appliedSeq = 0;
  /** Every record with seq <= this has been flushed. */
  flushedSeq = 0;
  /** Every record with seq <= this has been written (not necessarily flushed). */
  private writtenSeq = 0;
  /** Every record with seq <= this is covered by the durable checkpoint. */
  checkpointSeq = 0;
  checkpointChain: number[] = [];
  /** Write position of each head (hot: user commits; cold: cleaner relocations). */
  heads = new Map<SegmentKind, { segment: number; offset: number }>();
  recovery: RecoveryReport | undefined;

  private readonly checkpointIntervalBytes: number;
  private bytesSinceCheckpoint = 0;
  /** The checkpoint maintenance started behind the commits, until it is done (never rejects). */
  private checkpointBehind: Promise<void> | undefined;
  /** The most a checkpoint under way writes, until it has taken its segments (see reserveSegments). */
  private checkpointBehindBytes = 0;
  /**
   * Where the last checkpoint that found no room left things (free segments, log bytes since
   * the last checkpoint), until one lands: maintenance tries again only once more segments are
   * free or another interval of log was written, not after every batch (each try encodes
   * the maps whole), and cleans meanwhile.
   */
  private checkpointRefused: { free: number; bytes: number } | undefined;
  /** The buffer the last checkpoint was encoded into, for the next one (see encodeCheckpointInSteps). */
  private checkpointSpare: Buffer | undefined;
  private queue: Pending[] = [];
  /** Batches being written, oldest first; they land in this order. */
  private writing: Writing[] = [];
  /** A segment was sealed since maintenance last ran: it may have emptied one to reclaim. */
  private sealedSinceMaintenance = false;
  /** Set while the pipeline waits for a batch to be written: wakes it for a new commit. */
  private onArrival: (() => void) | undefined;
  private jobs: Job[] = [];
  private running = false;
  private idleWaiters: (() => void)[] = [];
  private failure: AtomioError | undefined;
  private closed = false;
  private flushTimer: NodeJS.Timeout | undefined;
  private prefilling: Promise<void> | undefined;
  /** Bytes of the durable batches of late: a moving average, weighted 1/8 to the newest. */
  private batchBytesAverage = 0;
  private dirtySinceFlush = false;
  private readonly inline: InlineWrites;
  private readonly inlineReads: InlineReads;
  /** Reads served since the last batch was taken (see takeBatch). */
  private readsSinceBatch = 0;
  /** Durability 'none': log bytes landed since a flush last started, and whether one runs. */
  private bytesSinceFlush = 0;
  private flushingAhead = false;
  /** Buffers of spans whose writes have settled, by size class, for later spans (see spanGather). */
  private readonly spareSpans = new Map<number, Buffer[]>();

  readonly counters = {
    commits: 0,
    batches: 0,
    flushes: 0,
    userBytes: 0,
    mediaBytes: 0,
    cleanerBytes: 0,
    segmentsCleaned: 0,
    checkpoints: 0,
    /** Media bytes written by checkpoints (part of mediaBytes). */
    checkpointBytes: 0,
    expiredBytes: 0,
  };

  constructor(s: EngineSettings) {
    this.media = s.media;
    this.clock = s.clock;
    this.superblock = s.superblock;
    this.sectorBytes = s.superblock.sectorBytes;
    this.segmentBytes = s.superblock.segmentBytes;
    this.alignment = Math.max(512, s.superblock.sectorBytes);
    this.storeId = s.superblock.storeId;
    this.durability = s.durability;
    this.checkpointIntervalBytes = s.checkpointIntervalBytes;
    this.inline = new InlineWrites(s.inlineWrites);
    this.inlineReads = new InlineReads(s.inlineReads);
    this.segments = new SegmentTable(s.superblock.segmentCount);
    this.pools = new Pools(s.cacheBytes, (segment, delta) => {
      this.segments.at(segment).liveBytes += delta;
    });
    if (this.durability === 'none') {
      this.flushTimer = setInterval(() => void this.backgroundFlush(), s.flushIntervalMs);
      this.flushTimer.unref();
    }
  }

  // -------------------------------------------------------------------------------------
  // Geometry

  segmentOffset(index: number): number {
    return SEGMENTS_OFFSET + index * this.segmentBytes;
  }

  /** Bytes of records one segment can hold. */
  get segmentPayloadBytes(): number {
    return this.segmentBytes - this.alignment;
  }

  /** The largest record (unpadded) that fits in a segment. */
  get maxRecordBytes(): number {
    return this.segmentPayloadBytes;
  }

  /** Free segments the store keeps for the next checkpoint (of a map with `addedExtents` more) and for the cleaner. */
  reserveSegments(addedExtents = 0): number {
    const next = this.checkpointBound(this.map.size + Math.max(0, addedExtents), this.checkpointOtherBytes());
    const checkpoint = Math.max(next, this.checkpointBehindBytes);
    return CLEANER_RESERVE_SEGMENTS + Math.ceil(checkpoint / this.segmentPayloadBytes);
  }

  /** The most a checkpoint of `extents` block extents writes (fixed-width sizes bound the compact ones). */
  private checkpointBound(extents: number, otherBytes: number): number {
    return checkpointBytes(this.segments.count, 2, extents) + otherBytes;
  }

  /** What the pools and named snapshots add to a checkpoint, at most. */
  private checkpointOtherBytes(): number {
    let bytes = this.pools.checkpointBytes();
    for (const s of this.snapshots.values()) bytes += snapshotImageBytes(s);
    return bytes;
  }

  /**
   * The most live data the store accepts; past it writes fail with ERR_NO_SPACE. It leaves
   * room for SPLIT_HEADROOM_EXTENTS more extents, so that a full store keeps taking small
   * overwrites, which split extents (see admit). Live kv entries count their log overhead in
   * their live bytes; a block extent's (its descriptor and a chunk checksum) is taken off
   * here, so that a store of many small extents refuses growth while the cleaner still has
   * room, and the figure it reports is data that fits.
   */
  usableBytes(): number {
    return this.capacityFor(this.map.size + SPLIT_HEADROOM_EXTENTS, this.checkpointOtherBytes());
  }

  /**
   * Live bytes that leave the cleaner room to keep the reserve free with `extents` mapped.
   * The segments left for data exclude the current checkpoint's (they stay taken until the
   * next is written), the next checkpoint's (unrounded, plus one for the rounding) and the
   * cleaner's own: the reserve then grows with the map only as fast as this shrinks.
   */
  private capacityFor(extents: number, checkpointOtherBytes: number): number {
    const checkpoint = this.checkpointBound(extents, checkpointOtherBytes) / this.segmentPayloadBytes;
    const segments = this.segments.count - this.checkpointChain.length - CLEANER_RESERVE_SEGMENTS - 1 - checkpoint;
    // Each segment also holds at least one record header and ends in up to an alignment unit of padding.
    const perSegment = this.segmentPayloadBytes - RECORD_HEADER_BYTES - this.alignment;
    return Math.max(0, Math.floor(Math.max(0, segments) * perSegment * USABLE_FRACTION) - extents * EXTENT_OVERHEAD_BYTES);
  }

  // -------------------------------------------------------------------------------------
  // Reads

  isLive(e: Extent, now: number): boolean {
    return e.expiresAt === 0 || e.expiresAt > now;
  }

  /** Mapped, unexpired pieces of [lba, lba + count), clipped, in lba order. */
  livePieces(lba: number, count: number, map = this.map): Extent[] {
    const now = this.clock.now();
    const pieces: Extent[] = [];
    map.forEachIn(lba, count, (p) => {
      if (this.isLive(p, now)) pieces.push(p);
    });
    return pieces;
  }

  async read(lba: number, count: number, map = this.map): Promise<Buffer> {
    this.readArrived();
    this.assertOpen();
    const pieces = this.livePieces(lba, count, map);
    const whole = coveringPiece(pieces, lba, count);
    if (whole !== undefined) return this.readWhole(whole); // the common case: one extent covers the request
    const out = Buffer.alloc(count * this.sectorBytes);
    if (pieces.length === 0) return out;
    for (const p of pieces) this.segments.at(p.segment).readers++;
    try {
      await Promise.all(pieces.map((p) => this.readPiece(p, out, (p.lba - lba) * this.sectorBytes)));
    } finally {
      for (const p of pieces) this.segments.at(p.segment).readers--;
    }
    return out;
  }

  /**
   * Like read(), as consecutive buffers: a range that one extent covers comes back as views
   * of the checked chunks it was read into (one per 4 KiB chunk), with no copy; any other
   * range as read()'s one buffer. `allocate`, if given, makes the buffer the chunks are read
   * into (so that a caller can reuse it once done with the views).
   */
  async readParts(lba: number, count: number, map = this.map, allocate?: (bytes: number) => Buffer): Promise<Buffer[]> {
    this.readArrived();
    this.assertOpen();
    const piece = coveringPiece(this.livePieces(lba, count, map), lba, count);
    if (piece === undefined) return [await this.read(lba, count, map)];
    const segment = this.segments.at(piece.segment);
    segment.readers++;
    try {
      const { chunks, firstChunk } = await this.readChunks(piece, segment, allocate);
      return chunkViews(chunks, firstChunk, piece.firstSector * this.sectorBytes, piece.count * this.sectorBytes);
    } finally {
      segment.readers--;
    }
  }

  /** One piece as its own buffer; a piece inside one chunk is returned without a copy. */
  private async readWhole(piece: Extent): Promise<Buffer> {
    const segment = this.segments.at(piece.segment);
    segment.readers++;
    try {
      const { chunks, firstChunk } = await this.readChunks(piece, segment);
      const from = piece.firstSector * this.sectorBytes;
      const length = piece.count * this.sectorBytes;
      const inChunk = from - firstChunk * CHUNK_DATA_BYTES;
      if (inChunk + length <= CHUNK_DATA_BYTES) {
        return chunks.subarray(CHUNK_CRC_BYTES + inChunk, CHUNK_CRC_BYTES + inChunk + length);
      }
      const out = Buffer.allocUnsafe(length);
      copyOutOfChunks(chunks, firstChunk, from, length, out, 0);
      return out;
    } finally {
      segment.readers--;
    }
  }

  /** Reads the chunks holding `piece`, checks them, and copies its sectors to out[at…]. */
  private async readPiece(piece: Extent, out: Buffer, at: number): Promise<void> {
    const { chunks, firstChunk } = await this.readChunks(piece, this.segments.at(piece.segment));
    copyOutOfChunks(chunks, firstChunk, piece.firstSector * this.sectorBytes, piece.count * this.sectorBytes, out, at);
  }

  /** The chunks that hold a piece, read and checked; ERR_CORRUPT if any fails its checksum. */
  private async readChunks(piece: Extent, segment: SegmentInfo, allocate: (bytes: number) => Buffer = Buffer.allocUnsafe): Promise<{ chunks: Buffer; firstChunk: number }> {
    const { start, bytes, firstChunk } = this.chunkSpan(piece);
    const chunks = allocate(bytes);
    assert(chunks.length === bytes, 'a read buffer of the size asked for');
    await this.readMedium(chunks, this.segmentOffset(piece.segment) + start);
    const bad = verifyChunks(chunks, segment.nonce, start);
    if (bad >= 0) {
      throw new AtomioError(
        'ERR_CORRUPT',
        `sectors ${piece.lba}..${piece.lba + piece.count - 1} failed their checksum (segment ${piece.segment}, offset ${bad}); the data is not returned`,
        { segment: piece.segment, offset: bad, lba: piece.lba, count: piece.count },
      );
    }
    return { chunks, firstChunk };
  }

  /** Reads `into` from the medium at `at`: on this thread when inline.ts says so, else on an I/O thread. */
  private readMedium(into: Uint8Array, at: number): Promise<void> {
    if (!this.inlineReads.choose(into.length)) return this.media.read(into, at);
    const started = performance.now();
    try {
      this.media.readSync(into, at);
      return Promise.resolve();
    } catch (error) {
      return Promise.reject(error as Error);
    } finally {
      this.inlineReads.inlineReadDone(performance.now() - started);
    }
  }

  /** The chunk-aligned byte range (offset in segment) that holds a piece's sectors. */
  chunkSpan(piece: Extent): { start: number; bytes: number; firstChunk: number } {
    const a = piece.firstSector * this.sectorBytes;
    const b = a + piece.count * this.sectorBytes;
    const opBytes = piece.opSectors * this.sectorBytes;
    const c0 = Math.floor(a / CHUNK_DATA_BYTES);
    const c1 = Math.floor((b - 1) / CHUNK_DATA_BYTES);
    const chunkBytes = CHUNK_DATA_BYTES + CHUNK_CRC_BYTES;
    const lastData = Math.min(CHUNK_DATA_BYTES, opBytes - c1 * CHUNK_DATA_BYTES);
    const start = piece.dataOffset + c0 * chunkBytes;
    const end = piece.dataOffset + c1 * chunkBytes + CHUNK_CRC_BYTES + lastData;
    return { start, bytes: end - start, firstChunk: c0 };
  }

  /** Newest version and whether anything is mapped in the range, as of the applied state. */
  rangeState(lba: number, count: number, map = this.map): { mapped: boolean; version: number } {
    let version = 0;
    let mapped = false;
    const now = this.clock.now();
    map.forEachIn(lba, count, (p) => {
      if (!this.isLive(p, now)) return;
      mapped = true;
      if (p.version > version) version = p.version;
    });
    return { mapped, version };
  }

  // -------------------------------------------------------------------------------------
  // kv reads

  /** A key's live (unexpired) entry as of the applied state. */
  liveEntry(pool: PoolReader | undefined, key: Uint8Array, now?: number): KeyMeta | undefined {
    this.readArrived();
    if (pool === undefined) return undefined;
    const meta = pool.index.get(key);
    if (meta === undefined || (meta.expiresAt !== 0 && meta.expiresAt <= (now ?? this.clock.now()))) return undefined;
    return meta;
  }

  /**
   * The live value of a key, or undefined, without a promise and without allocating
   * anything but the returned copy when the value is cached: getSync's path.
   */
  liveValueSync(pool: PoolReader | undefined, key: Uint8Array): Buffer | undefined {
    this.readArrived();
    if (pool === undefined) return undefined;
    const meta = this.scratchMeta;
    if (!pool.index.getInto(key, meta)) return undefined;
    if (meta.expiresAt !== 0 && meta.expiresAt <= this.clock.now()) return undefined;
    const cached = this.pools.cache.get(meta.cacheAt, meta.valueBytes);
    if (cached !== undefined) return cached;
    return this.readValueSync(pool, key, { ...meta });
  }

  private readonly scratchMeta: KeyMeta = { version: 0, expiresAt: 0, location: 0, valueBytes: 0, cacheAt: -1 };

  /** An entry's value: a copy from the cache, or read from the log and checked. */
  async readValue(pool: PoolReader, key: Uint8Array, meta: KeyMeta): Promise<Buffer> {
    const cached = this.pools.cache.get(meta.cacheAt, meta.valueBytes);
    if (cached !== undefined) return cached;
    const segment = this.segments.at(segmentOf(meta));
    const dataOffset = meta.location % TWO_32;
    const data = Buffer.allocUnsafe(kvDataBytes(meta.valueBytes));
    segment.readers++;
    try {
      await this.readMedium(data, this.segmentOffset(segment.index) + dataOffset);
    } finally {
      segment.readers--;
    }
    return this.checkedValue(pool, key, meta, segment, dataOffset, data);
  }

  /** An entry's value if the cache holds it (a copy), else undefined. */
  cachedValue(meta: KeyMeta): Buffer | undefined {
    return this.pools.cache.get(meta.cacheAt, meta.valueBytes);
  }

  /** readValue without waiting: a cache miss reads with a blocking system call. */
  readValueSync(pool: PoolReader, key: Uint8Array, meta: KeyMeta): Buffer {
    const cached = this.pools.cache.get(meta.cacheAt, meta.valueBytes);
    if (cached !== undefined) return cached;
    const segment = this.segments.at(segmentOf(meta));
    const dataOffset = meta.location % TWO_32;
    const data = Buffer.allocUnsafe(kvDataBytes(meta.valueBytes));
    this.media.readSync(data, this.segmentOffset(segment.index) + dataOffset);
    return this.checkedValue(pool, key, meta, segment, dataOffset, data);
  }

  private checkedValue(pool: PoolReader, key: Uint8Array, meta: KeyMeta, segment: SegmentInfo, dataOffset: number, data: Buffer): Buffer {
    if (!kvDataIntact(data, segment.nonce, dataOffset)) {
      throw new AtomioError(
        'ERR_CORRUPT',
        `the value of a key in pool '${pool.name}' failed its checksum (segment ${segment.index}, offset ${dataOffset}); it is not returned`,
        { pool: pool.name, segment: segment.index, offset: dataOffset },
      );
    }
    const value = data.subarray(kvDataBytes(0));
    // Keep a copy for the next read, if the key still holds this value and it is small.
    const live = this.pools.get(pool.id);
    if (live !== undefined && value.length <= this.pools.cache.maxValueBytes) {
      const now = live.index.get(key);
      if (now !== undefined && now.location === meta.location && !this.pools.cache.holds(now.cacheAt)) {
        live.index.update(key, { cacheAt: this.pools.cache.add(value) });
      }
    }
    return value;
  }

  /** Keeps the segments that hold live data from reuse until unpin(): what a view reads. */
  pin(segments?: Set<number>): Pin {
    // Without a list, every segment in use now: an epoch rather than a scan, which a store of
    // many segments would pay on every read of several values.
    const pin: Pin = segments === undefined ? { inUseAt: this.segments.epoch } : { segments };
    this.pins.add(pin);
    return pin;
  }

  unpin(pin: Pin): void {
    this.pins.delete(pin);
  }

  private pinned(index: number): boolean {
    const s = this.segments.at(index);
    for (const pin of this.pins) {
      if (pin.segments !== undefined ? pin.segments.has(index) : s.state !== 'free' && s.allocatedAt <= pin.inUseAt!) return true;
    }
    return false;
  }

  // -------------------------------------------------------------------------------------
  // Commits

  /** Queues a commit; resolves with its version once durable (see durability). */
  commit(ops: OpInput[], conditions: Condition[], ttlMs: number): Promise<number> {
    this.inline.arrived();
    if (this.closed) return Promise.reject(closedError());
    if (this.failure) return Promise.reject(this.failure);
    let dataBytes = 0;
    let kv = false;
    for (const op of ops) {
      if (op.type === 'write') dataBytes += op.data.length;
      else if (op.type === 'put') {
        dataBytes += op.key.length + (op.value instanceof Uint8Array ? op.value.length : 64);
        kv = true;
      } else if (op.type !== 'trim') {
        dataBytes += 64;
        kv = true;
      }
    }
    // Block-only commits (the common small one) share the empty per-op lists: stageKv never
    // writes them for a commit without kv ops.
    const promise = new Promise<number>(takeSettlers);
    const values = kv ? [] : NO_VALUES;
    const expiries = kv ? [] : NO_EXPIRIES;
    this.queue.push({ ops, conditions, ttlMs, dataBytes, kv, values, expiries, resolve: takenResolve!, reject: takenReject! });
    this.kick();
    return promise;
  }

  private kick(): void {
    const arrival = this.onArrival;
    if (arrival !== undefined) {
      this.onArrival = undefined;
      setImmediate(arrival); // as below: the commits of this tick go in one batch
    }
    if (this.running) return;
    this.running = true;
    // Defer one turn so that commits submitted in the same tick share the batch.
    setImmediate(() => void this.pipeline());
  }

  /** Runs `run` inside the pipeline, between batches, so that no commit interleaves with it. */
  exclusive(run: () => Promise<void>): Promise<void> {
    if (this.closed) return Promise.reject(closedError());
    if (this.failure) return Promise.reject(this.failure);
    return new Promise<void>((resolve, reject) => {
      this.jobs.push({ run, resolve, reject });
      this.kick();
    });
  }

  /** Resolves when no batch is running and the queue is empty. */
  idle(): Promise<void> {
    if (!this.running && this.queue.length === 0 && this.jobs.length === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private async pipeline(): Promise<void> {
    try {
      for (;;) {
        if (this.writing[0]?.settled) {
          await this.landOldest();
          // A later batch written meanwhile lands at once, not a turn of the event loop later.
          if (this.writing[0]?.settled) continue;
          if (this.writing.length === 0 && !this.failure) await this.maintainSafely();
          // Let the callers just resolved queue their next commits before a batch is taken.
          await new Promise<void>((resolve) => setImmediate(resolve));
          continue;
        }
        // A job waits for a checkpoint under way (see runJobs); the commits need not wait
        // with it, so jobs run once it is done, or once there is nothing else to do.
        if (this.jobs.length > 0 && (this.checkpointBehind === undefined || (this.queue.length === 0 && this.writing.length === 0))) {
          await this.drain();
          await this.runJobs();
          continue;
        }
        if (this.queue.length === 0 || this.writing.length >= MAX_BATCHES_WRITING) {
          if (this.writing.length === 0) break;
          // The oldest batch is being written: wait for it, or, with room for another batch,
          // for the next commit (or job), whichever comes first.
          await this.nextEvent(this.writing.length < MAX_BATCHES_WRITING);
          continue;
        }
        if (this.writing.length > 0 && this.maintenanceDue()) {
          await this.drain();
          if (!this.failure) await this.maintainSafely();
          continue;
        }
        const batch = this.takeBatch();
        if (this.failure) {
          for (const p of batch) p.reject(this.failure);
          continue;
        }
        await this.launch(batch);
        if (this.writing.length === 0 && !this.failure) await this.maintainSafely();
      }
    } catch (error) {
      // A bug, not an I/O error (those are handled where they happen): fail loudly but keep
      // callers from hanging.
      this.failure ??= new AtomioError('ERR_IO', `internal error: ${(error as Error).message}`, {}, { cause: error });
      for (const w of this.writing.splice(0)) for (const p of w.accepted) p.reject(this.failure);
      for (const p of this.queue.splice(0)) p.reject(this.failure);
      for (const j of this.jobs.splice(0)) j.reject(this.failure);
      throw error;
    } finally {
      this.running = false;
      this.onArrival = undefined;
      for (const w of this.idleWaiters.splice(0)) w();
      if (this.queue.length > 0 || this.jobs.length > 0) this.kick();
    }
  }

  /** Resolves when the oldest batch being written settles or, if `orArrival`, a commit or job is queued. */
  private nextEvent(orArrival: boolean): Promise<void> {
    const written = this.writing[0]!.written.then(() => undefined);
    if (!orArrival) return written;
    const arrived = new Promise<void>((resolve) => (this.onArrival = resolve));
    return Promise.race([written, arrived]).finally(() => (this.onArrival = undefined));
  }

  private async runJobs(): Promise<void> {
    for (const job of this.jobs.splice(0)) {
      // Jobs change what a checkpoint under way reads (named snapshots) or start one themselves.
      await this.checkpointBehindDone();
      if (this.failure) {
        job.reject(this.failure);
        continue;
      }
      try {
        await job.run();
        job.resolve();
      } catch (error) {
        // A medium failure fails the store, as it would in a batch; ERR_NO_SPACE does not.
        job.reject(error instanceof AtomioError ? error : this.fail(error));
      }
    }
  }

  private takeBatch(): Pending[] {
    // A batch is written and made room for as a whole: kept to half a segment, it never
    // needs more free segments than one commit of the largest size, so commits that fit one
    // at a time are not refused (or left waiting) for arriving together.
    const limit = Math.min(MAX_BATCH_BYTES, Math.floor(this.segmentPayloadBytes / 2));
    // The queue is shared among the batches that may still start writing, so that while one
    // is written the next is admitted and encoded (with one batch, the CPU would wait for
    // the I/O and the I/O for the CPU).
    let most = Math.ceil(this.queue.length / (MAX_BATCHES_WRITING - this.writing.length));
    // Unless the whole queue makes one batch small enough to be written inline at once; or
    // the store serves reads between its commits, and the queue is small: the reads keep
    // the CPU busy while a batch is written, so a second batch overlaps nothing and only
    // adds a write, a flush and a landing for the event loop to fit in (a memcached load).
    if (this.writing.length === 0 && this.queueFitsInline()) most = this.queue.length;
    else if (this.readsSinceBatch > 0 && this.queueSmall()) most = this.queue.length;
    this.readsSinceBatch = 0;
    let bytes = 0;
    let n = 0;
    while (n < this.queue.length && n < most) {
      bytes += this.queue[n]!.dataBytes;
      if (n > 0 && bytes > limit) break;
      n++;
    }
    return this.queue.splice(0, n);
  }

  /** A read was asked for: the inline policy and takeBatch count it. */
  private readArrived(): void {
    this.inline.arrived();
    this.readsSinceBatch++;
  }

  /** Whether the queued commits are a few small ones (SMALL_QUEUE_COMMITS, SMALL_QUEUE_BYTES). */
  private queueSmall(): boolean {
    if (this.queue.length > SMALL_QUEUE_COMMITS) return false;
    let bytes = 0;
    for (const p of this.queue) bytes += p.dataBytes;
    return bytes <= SMALL_QUEUE_BYTES;
  }

  /** Whether the queued commits, as one batch, are about small enough to go inline (a put's record, roughly). */
  private queueFitsInline(): boolean {
    let bytes = 0;
    for (const p of this.queue) {
      bytes += RECORD_HEADER_BYTES + 2 * BLOCK_OP_BYTES + p.dataBytes;
      if (!this.inline.small(bytes)) return false;
    }
    return true;
  }

  /** Admits a batch and starts writing it; waits only when the batch needs room made. */
  private async launch(batch: Pending[]): Promise<void> {
    this.sweepExpired();
    const below: Layer[] = [];
    for (let i = this.writing.length - 1; i >= 0; i--) below.push(this.writing[i]!.layer);
    const { accepted, layer } = this.admit(batch, below);
    if (accepted.length === 0) return;
    const records = accepted.map((p) => this.outgoing(RecordKind.commit, SegmentKind.hot, this.toLogOps(p, layer.pools)));
    // Overwrites that split extents past usableBytes keep the cleaner's reserve: a store that
    // full needs all of it to find victims that fit, as the reserve rises with the extents.
    const shrinking = layer.growth <= 0 && !layer.intoHeadroom;
    if (this.segmentsShort(records, shrinking, layer.extents) > 0) {
      // Cleaning and checkpoints write records of their own: nothing else may be in flight.
      await this.drain();
      try {
        if (this.failure) throw this.failure;
        await this.makeRoom(records, shrinking, layer.extents);
      } catch (error) {
        for (const p of accepted) p.reject(error as Error);
        if (!(error instanceof AtomioError && error.code === 'ERR_NO_SPACE')) this.fail(error);
        return;
      }
    }
    const free = this.writing.length === 0;
    const alone = free && accepted.length === 1 && this.queue.length === 0;
    const writing: Writing = { accepted, records, layer, written: this.writeOut(records, free, alone), settled: false };
    writing.written = writing.written.then((error) => {
      writing.settled = true;
      return error;
    });
    this.writing.push(writing);
  }

  /** Waits for the oldest batch being written, applies it and resolves its callers. */
  private async landOldest(): Promise<void> {
    const oldest = this.writing[0]!;
    const error = await oldest.written;
    assert(this.writing[0] === oldest, 'batches land in order');
    this.writing.shift();
    // No layer refers to the batch's overlay any more: the next batch may reuse it.
    const overlay = oldest.layer.overlay;
    if (overlay !== NO_BLOCK_OPS && this.spareOverlays.length < MAX_BATCHES_WRITING && overlay.reset()) this.spareOverlays.push(overlay);
    if (error !== undefined || this.failure) {
      const failure = error !== undefined ? this.fail(error) : this.failure!;
      for (const p of oldest.accepted) p.reject(failure);
      return;
    }
    this.landed(oldest.records);
    for (let i = 0; i < oldest.accepted.length; i++) {
      const p = oldest.accepted[i]!;
      this.counters.commits++;
      this.counters.userBytes += p.dataBytes;
      p.resolve(oldest.records[i]!.seq);
    }
  }

  /** Lands every batch being written. */
  private async drain(): Promise<void> {
    while (this.writing.length > 0) await this.landOldest();
  }

  /**
   * Whether maintenance (checkpoints, reclaiming, cleaning) should run now. It needs the
   * pipeline drained, so it is not run after every batch while batches keep coming.
   */
  private maintenanceDue(): boolean {
    if (this.checkpointBehind !== undefined) return false;
    return this.sealedSinceMaintenance || this.checkpointWanted() || this.segments.freeCount() < this.cleaningLowWater();
  }

  /** A checkpoint is due, and not refused for room since as much room and log as now. */
  private checkpointWanted(): boolean {
    if (!this.checkpointDue()) return false;
    const refused = this.checkpointRefused;
    return refused === undefined || this.segments.freeCount() > refused.free || this.bytesSinceCheckpoint >= refused.bytes + this.checkpointIntervalBytes;
  }

  private checkpointDue(): boolean {
    // A checkpoint writes every map whole: with many keys it is large, so the log between two
    // is kept at least twice its size, or checkpoints would double what the store writes.
    return this.bytesSinceCheckpoint >= Math.max(this.checkpointIntervalBytes, 2 * this.checkpointCost());
  }

  /** What a checkpoint writes, judged by the last one (the one the store opened from, before any). */
  private checkpointCost(): number {
    return this.superblock.checkpoint.payloadBytes;
  }

  private cleaningLowWater(): number {
    return this.reserveSegments() + Math.max(2, Math.ceil(this.segments.count * CLEAN_BELOW_FREE_FRACTION));
  }

  /**
   * Checks conditions and space in queue order, and makes computed values; returns the
   * commits that go ahead and what they change. `below` holds the layers of the batches
   * being written, newest first: this batch sees them as if they were applied.
   */
  private admit(batch: Pending[], below: Layer[]): { accepted: Pending[]; layer: Layer } {
    const accepted: Pending[] = [];
    const layer: Layer = {
      overlay: NO_BLOCK_OPS,
      commits: accepted,
      placed: 0,
      keys: { keys: new Map(), dropped: new Set() },
      pools: new Map(below[0]?.pools),
      growth: 0,
      extents: 0,
      intoHeadroom: false,
    };
    const layers = [layer];
    const overlays = [layer.overlay];
    const keyLayers = [layer.keys];
    let live = this.segments.liveBytes();
    for (const l of below) {
      layers.push(l);
      overlays.push(l.overlay);
      keyLayers.push(l.keys);
      live += l.growth;
    }
    const usable = this.usableBytes();
    const start = live;
    const now = this.clock.now();
    // Far from full (even the worst case of the whole batch leaves a quarter of the usable
    // bytes), block writes and puts skip the exact accounting: their whole size stands for
    // their growth (an overestimate), trims free nothing. Nearer full it is exact, because
    // a batch that frees space may use part of the reserve (makeRoom).
    let worst = 0;
    let computed = false;
    for (const p of batch) {
      // An op adds at most two extents, each some 90 bytes of log and checkpoint.
      worst += p.dataBytes + p.ops.length * 256;
      for (const op of p.ops) if (op.type === 'put' && typeof op.value === 'function') computed = true;
    }
    const roomy = !computed && live + worst <= 0.75 * usable;
    // Near full, extents mapped by the commits accepted so far (against the applied map: an
    // estimate, off by at most this batch's and the batches being written).
    let extents = this.map.size;
    const checkpointOtherBytes = roomy ? 0 : this.checkpointOtherBytes();
    const batchKeys = layer.keys;
    for (const p of batch) {
      if (p.conditions.length > 0 || !roomy) this.placeOverlays(layers, overlays);
      let failed: Error | undefined = this.failedCondition(p.conditions, overlays, keyLayers, now);
      let staged: BatchKeys | undefined;
      let kvGrowth = 0;
      if (failed === undefined) {
        try {
          ({ staged, growth: kvGrowth } = this.stageKv(p, keyLayers, now, roomy));
        } catch (error) {
          // A value function (incr, update) refused, or failed: that commit alone fails.
          failed = error instanceof Error ? error : new AtomioError('ERR_ARGUMENT', `an update function threw ${String(error)}`, {});
        }
      }
      if (failed !== undefined || staged === undefined) {
        p.reject(failed!);
        continue;
      }
      const growth = (roomy ? writtenBytes(p) : this.liveGrowth(p, overlays)) + kvGrowth;
      if (roomy) {
        if (growth > 0 && live + growth > usable) {
          p.reject(fullError(live, usable, growth));
          continue;
        }
        for (const op of p.ops) extents += op.type === 'write' ? 2 : op.type === 'trim' ? 1 : 0;
      } else {
        const added = this.extentGrowth(p);
        const refusal = this.spaceRefusal(live, growth, extents, added, checkpointOtherBytes);
        if (refusal !== undefined) {
          p.reject(refusal);
          continue;
        }
        extents += added;
        if (added > 0 && live + growth > this.capacityFor(extents + SPLIT_HEADROOM_EXTENTS, checkpointOtherBytes)) layer.intoHeadroom = true;
      }
      live += growth;
      for (const pool of staged.dropped) {
        for (const k of batchKeys.keys.keys()) if (k.startsWith(batchKeyPrefix(pool))) batchKeys.keys.delete(k);
        batchKeys.dropped.add(pool);
      }
      for (const [k, state] of staged.keys) batchKeys.keys.set(k, state);
      accepted.push(p);
    }
    layer.growth = live - start;
    layer.extents = extents - this.map.size;
    return { accepted, layer };
  }

  /**
   * Brings the overlays of `layers` (newest first) up to date with their commits, and
   * `overlays` with them. Placeholder extents stand for a commit's effect on later commits;
   * version Infinity means "written, not yet applied" (newer than any applied version).
   */
  private placeOverlays(layers: Layer[], overlays: ExtentMap[]): void {
    for (let i = 0; i < layers.length; i++) {
      const layer = layers[i]!;
      for (; layer.placed < layer.commits.length; layer.placed++) {
        for (const op of layer.commits[layer.placed]!.ops) {
          if (op.type !== 'write' && op.type !== 'trim') continue;
          if (layer.overlay === NO_BLOCK_OPS) layer.overlay = this.spareOverlays.pop() ?? new ExtentMap();
          layer.overlay.set(overlayExtent(op.lba, op.count, op.type === 'write' ? Infinity : -1));
        }
      }
      overlays[i] = layer.overlay;
    }
  }

  /** A key's state seen through the commit's own staged ops, then the batch's, then the maps. */
  private keyState(pool: string, key: Buffer, layers: BatchKeys[], now: number): KeyState & { meta?: KeyMeta; pool?: Pool } {
    const k = batchKey(pool, key);
    for (const layer of layers) {
      const state = layer.keys.get(k);
      if (state !== undefined) return state;
      if (layer.dropped.has(pool)) return ABSENT;
    }
    const p = this.pools.named(pool);
    const meta = p?.index.get(key);
    if (meta === undefined) return ABSENT;
    const entryBytes = kvEntryBytes(key.length, meta.valueBytes);
    if (meta.expiresAt !== 0 && meta.expiresAt <= now) return { ...ABSENT, entryBytes };
    return { present: true, version: meta.version, value: undefined, entryBytes, expiresAt: meta.expiresAt, meta, pool: p };
  }

  /** The live value of a key in the state `keyState` returned. */
  private currentValue(key: Buffer, state: KeyState & { meta?: KeyMeta; pool?: Pool }): Buffer | undefined {
    if (!state.present) return undefined;
    if (state.value !== undefined) return state.value;
    assert(state.meta !== undefined && state.pool !== undefined, 'a present key is pending or mapped');
    return this.readValueSync(state.pool, key, state.meta);
  }

  /** The commit's kv ops laid over the batch: their states, values and growth in live bytes. */
  private stageKv(p: Pending, keyLayers: BatchKeys[], now: number, roomy: boolean): { staged: BatchKeys; growth: number } {
    if (!p.kv) return NO_KV_OPS;
    const staged: BatchKeys = { keys: new Map(), dropped: new Set() };
    // Only ops that look at a key's state need the layers (a roomy plain put does not).
    let layers: BatchKeys[] | undefined;
    let growth = 0;
    for (let i = 0; i < p.ops.length; i++) {
      const op = p.ops[i]!;
      if (op.type === 'put' && roomy && !op.keepTtl && typeof op.value !== 'function') {
        // Far from full, a plain put needs no look at the key it replaces: its whole size
        // stands for its growth (an overestimate), and nothing else depends on the old entry.
        const entryBytes = kvEntryBytes(op.key.length, op.value.length);
        const expiresAt = op.ttlMs > 0 ? now + op.ttlMs : 0;
        p.values[i] = op.value;
        p.expiries[i] = expiresAt;
        growth += entryBytes;
        if (op.private === true) continue;
        staged.keys.set(batchKey(op.pool, op.key), { present: true, version: Infinity, value: asBuffer(op.value), entryBytes, expiresAt });
      } else if (op.type === 'delete' && roomy && op.private === true) {
        // Far from full, the space a delete frees is not counted (as a trim's is not): no look at the key.
        continue;
      } else if (op.type === 'put') {
        const state = this.keyState(op.pool, op.key, (layers ??= [staged, ...keyLayers]), now);
        const value = typeof op.value === 'function' ? op.value(this.currentValue(op.key, state)) : op.value;
        const expiresAt = op.keepTtl && state.present ? state.expiresAt : op.ttlMs > 0 ? now + op.ttlMs : 0;
        const entryBytes = kvEntryBytes(op.key.length, value.length);
        p.values[i] = value;
        p.expiries[i] = expiresAt;
        growth += entryBytes - state.entryBytes;
        staged.keys.set(batchKey(op.pool, op.key), { present: true, version: Infinity, value: asBuffer(value), entryBytes, expiresAt });
      } else if (op.type === 'delete') {
        const state = this.keyState(op.pool, op.key, (layers ??= [staged, ...keyLayers]), now);
        growth -= state.entryBytes;
        staged.keys.set(batchKey(op.pool, op.key), ABSENT);
      } else if (op.type === 'touch') {
        const state = this.keyState(op.pool, op.key, (layers ??= [staged, ...keyLayers]), now);
        const expiresAt = op.ttlMs > 0 ? now + op.ttlMs : 0;
        // A touch of an absent (or expired) key changes nothing and is not logged: replay
        // does not sweep, and would give an expired key a new life.
        p.expiries[i] = state.present ? expiresAt : -1;
        if (state.present) staged.keys.set(batchKey(op.pool, op.key), { ...state, expiresAt });
      } else if (op.type === 'dropPool') {
        const pool = this.pools.named(op.pool);
        if (pool !== undefined && !(layers ??= [staged, ...keyLayers]).some((l) => l.dropped.has(op.pool))) growth -= pool.liveBytes;
        for (const k of staged.keys.keys()) if (k.startsWith(batchKeyPrefix(op.pool))) staged.keys.delete(k);
        staged.dropped.add(op.pool);
      }
    }
    return { staged, growth };
  }

  /**
   * Newest live version in range, seen through the overlays (newest first; -1 marks a trim),
   * then the applied map.
   */
  private stateThrough(overlays: readonly ExtentMap[], lba: number, count: number, depth = 0): { mapped: boolean; version: number } {
    if (depth === overlays.length) return this.rangeState(lba, count);
    let mapped = false;
    let version = 0;
    let cursor = lba;
    const end = lba + count;
    const take = (s: { mapped: boolean; version: number }): void => {
      if (s.mapped) mapped = true;
      if (s.version > version) version = s.version;
    };
    for (const piece of overlays[depth]!.piecesIn(lba, count)) {
      if (piece.lba > cursor) take(this.stateThrough(overlays, cursor, piece.lba - cursor, depth + 1));
      if (piece.version !== -1) take({ mapped: true, version: piece.version });
      cursor = piece.lba + piece.count;
    }
    if (cursor < end) take(this.stateThrough(overlays, cursor, end - cursor, depth + 1));
    return { mapped, version };
  }

  /** Checks conditions against the applied state now (a read-only transaction's validation). */
  failedNow(conditions: Condition[]): AtomioError | undefined {
    return this.failedCondition(conditions, [], [], this.clock.now());
  }

  /**
   * The first failed condition as an error whose details also list every failed index
   * (`failed`), so that callers can say which of their checks did not hold.
   */
  private failedCondition(conditions: Condition[], overlays: ExtentMap[], keyLayers: BatchKeys[], now: number): AtomioError | undefined {
    let first: AtomioError | undefined;
    let failed: number[] | undefined;
    for (let i = 0; i < conditions.length; i++) {
      const error = this.checkCondition(i, conditions[i]!, overlays, keyLayers, now);
      if (error === undefined) continue;
      first ??= error;
      (failed ??= []).push(i);
    }
    if (first === undefined) return undefined;
    (first.details as Record<string, unknown>).failed = failed;
    return first;
  }

  private checkCondition(i: number, c: Condition, overlays: ExtentMap[], keyLayers: BatchKeys[], now: number): AtomioError | undefined {
    if (c.kind === 'key') return this.failedKeyCondition(i, c, keyLayers, now);
    if (c.kind === 'range') {
      if (this.rangeUnchanged(c, keyLayers, now)) return undefined;
      return new AtomioError('ERR_CONDITION', `condition ${i} failed: keys in a listed range of pool '${c.pool}' changed`, {
        index: i,
        condition: { kind: 'range', pool: c.pool },
      });
    }
    const state = this.stateThrough(overlays, c.lba, c.count);
    if (c.kind === 'unwritten' && state.mapped) {
      return new AtomioError(
        'ERR_CONDITION',
        `condition ${i} failed: sectors ${c.lba}..${c.lba + c.count - 1} are not all unwritten`,
        { index: i, condition: c, actualVersion: versionForError(state.version) },
      );
    }
    if (c.kind === 'version' && state.version !== c.version) {
      return new AtomioError(
        'ERR_CONDITION',
        `condition ${i} failed: newest version in sectors ${c.lba}..${c.lba + c.count - 1} is ${versionForError(state.version)}, not ${c.version}`,
        { index: i, condition: c, actualVersion: versionForError(state.version) },
      );
    }
    return undefined;
  }

  private failedKeyCondition(
    i: number,
    c: Extract<Condition, { kind: 'key' }>,
    keyLayers: BatchKeys[],
    now: number,
  ): AtomioError | undefined {
    const state = this.keyState(c.pool, c.key, keyLayers, now);
    const actual = state.present ? versionForError(state.version) : 'absent';
    const ok = c.expect === 'absent' ? !state.present : c.expect === 'present' ? state.present : state.present && state.version === c.expect;
    if (ok) return undefined;
    const wanted = typeof c.expect === 'number' ? `version ${c.expect}` : c.expect;
    return new AtomioError('ERR_CONDITION', `condition ${i} failed: a key in pool '${c.pool}' is ${typeof actual === 'number' ? `at version ${actual}` : actual}, not ${wanted}`, {
      index: i,
      condition: { kind: 'key', pool: c.pool, key: c.key, expect: c.expect },
      actualVersion: state.present ? versionForError(state.version) : null,
    });
  }

  /** Whether the live keys of a listed range and their versions are still what was seen. */
  private rangeUnchanged(c: Extract<Condition, { kind: 'range' }>, keyLayers: BatchKeys[], now: number): boolean {
    const prefix = batchKeyPrefix(c.pool);
    for (const layer of keyLayers) {
      for (const k of layer.keys.keys()) {
        if (!k.startsWith(prefix)) continue;
        const key = Buffer.from(k.slice(prefix.length), 'latin1');
        if ((c.start === undefined || Buffer.compare(key, c.start) >= 0) && (c.end === undefined || Buffer.compare(key, c.end) < 0)) return false;
      }
    }
    if (keyLayers.some((l) => l.dropped.has(c.pool))) return c.seen.length === 0 && this.pools.named(c.pool) === undefined;
    const pool = this.pools.named(c.pool);
    if (pool === undefined) return c.seen.length === 0;
    let n = 0;
    let same = true;
    pool.index.forEachIn({ start: c.start, end: c.end, reverse: c.reverse }, (key, meta) => {
      if (meta.expiresAt !== 0 && meta.expiresAt <= now) return true;
      if (n >= c.limit) return false;
      const seen = c.seen[n++];
      if (seen === undefined || seen.version !== meta.version || !seen.key.equals(key)) {
        same = false;
        return false;
      }
      return true;
    });
    return same && n === c.seen.length;
  }

  /**
   * Why a commit that grows the store's footprint does not fit, or undefined. Growth in live
   * bytes must fit usableBytes, which keeps headroom for split extents; a commit that only
   * adds extents (an overwrite splitting them) may use that headroom, but no more. Commits
   * that shrink the footprint (trims, overwrites of whole extents) always go ahead: they are
   * how a full store gets room back.
   */
  private spaceRefusal(live: number, growth: number, extents: number, added: number, checkpointOtherBytes: number): AtomioError | undefined {
    if (growth <= 0 && added <= 0) return undefined;
    if (growth > 0) {
      // The headroom also takes the commit's own new extents, up to its size.
      const usable = this.capacityFor(extents + Math.max(SPLIT_HEADROOM_EXTENTS, added), checkpointOtherBytes);
      return live + growth > usable ? fullError(live, usable, growth) : undefined;
    }
    const before = this.capacityFor(extents, checkpointOtherBytes);
    const after = this.capacityFor(extents + added, checkpointOtherBytes);
    if (growth + before - after <= 0 || live + growth <= after) return undefined;
    return new AtomioError(
      'ERR_NO_SPACE',
      `store is full: the write splits mapped extents, and ${extents} extents already use the room kept for more; trim data or open with a larger capacity`,
      { liveBytes: live, usableBytes: after, extents, addedExtents: added },
    );
  }

  /** Extents the commit's block ops add to the applied map (negative when they cover whole ones). */
  private extentGrowth(p: Pending): number {
    let added = 0;
    for (const op of p.ops) {
      if (op.type === 'write' || op.type === 'trim') added += this.map.growthOf(op.lba, op.count, op.type === 'write');
    }
    return added;
  }

  /**
   * Bytes of live data the commit adds (negative when it frees more than it writes), with
   * the sectors mapped seen through the batch's overlay: rewriting what an earlier commit
   * of the batch wrote adds nothing. Ops of one commit that overlap each other are counted
   * as if they did not (at most the commit's own size too much).
   */
  private liveGrowth(p: Pending, overlays: ExtentMap[]): number {
    let growth = 0;
    for (const op of p.ops) {
      if (op.type !== 'write' && op.type !== 'trim') continue;
      if (op.type === 'write') growth += op.count * this.sectorBytes;
      growth -= this.mappedSectorsThrough(overlays, op.lba, op.count) * this.sectorBytes;
    }
    return growth;
  }

  /** Live sectors of the range as the overlays (newest first; -1 marks a trim) leave them. */
  private mappedSectorsThrough(overlays: readonly ExtentMap[], lba: number, count: number, depth = 0): number {
    let mapped = 0;
    let cursor = lba;
    const end = lba + count;
    const applied = (from: number, n: number): void => {
      if (depth + 1 < overlays.length) mapped += this.mappedSectorsThrough(overlays, from, n, depth + 1);
      else for (const piece of this.livePieces(from, n)) mapped += piece.count;
    };
    if (overlays.length === 0) {
      applied(lba, count);
      return mapped;
    }
    for (const piece of overlays[depth]!.piecesIn(lba, count)) {
      if (piece.lba > cursor) applied(cursor, piece.lba - cursor);
      if (piece.version !== -1) mapped += piece.count;
      cursor = piece.lba + piece.count;
    }
    if (cursor < end) applied(cursor, end - cursor);
    return mapped;
  }

  /** The commit's ops as they go to the log; pools written for the first time are created. */
  private toLogOps(p: Pending, batchPools: Map<string, number>): LogOp[] {
    const blockExpiresAt = p.ttlMs > 0 ? this.clock.now() + p.ttlMs : 0;
    const ops: LogOp[] = [];
    for (let i = 0; i < p.ops.length; i++) {
      const op = p.ops[i]!;
      switch (op.type) {
        case 'write':
          ops.push({ type: OpType.write, lba: op.lba, count: op.count, version: 0, expiresAt: blockExpiresAt, data: op.data });
          break;
        case 'trim':
          ops.push({ type: OpType.trim, lba: op.lba, count: op.count, version: 0, expiresAt: 0 });
          break;
        case 'put': {
          const pool = this.poolIdFor(op.pool, batchPools, ops);
          ops.push({ type: OpType.put, pool, key: op.key, version: 0, expiresAt: p.expiries[i]!, value: p.values[i]!, uncached: op.uncached });
          break;
        }
        case 'delete':
        case 'touch': {
          const pool = existingPoolId(op.pool, batchPools, this.pools);
          if (pool === undefined) break; // nothing to delete or touch in a pool that does not exist
          const expiresAt = op.type === 'touch' ? p.expiries[i]! : 0;
          if (expiresAt < 0) break; // a touch of an absent key
          ops.push({ type: op.type === 'touch' ? OpType.touch : OpType.delete, pool, key: op.key, version: 0, expiresAt });
          break;
        }
        case 'dropPool': {
          const pool = existingPoolId(op.pool, batchPools, this.pools);
          if (pool === undefined) break;
          ops.push({ type: OpType.poolDrop, pool, key: EMPTY_KEY, version: 0, expiresAt: 0 });
          batchPools.set(op.pool, -1);
          break;
        }
      }
    }
    return ops;
  }

  private poolIdFor(name: string, batchPools: Map<string, number>, ops: LogOp[]): number {
    const known = existingPoolId(name, batchPools, this.pools);
    if (known !== undefined) return known;
    const id = this.pools.nextId++;
    ops.push({ type: OpType.poolCreate, pool: id, key: Buffer.from(name, 'utf8'), version: 0, expiresAt: 0 });
    batchPools.set(name, id);
    return id;
  }

  private outgoing(kind: RecordKind, head: SegmentKind, ops: LogOp[]): Outgoing {
    const bytes = recordBytesFor(ops, this.sectorBytes);
    assert(bytes <= this.maxRecordBytes, 'record fits in a segment (limits are checked by the faces)');
    return { kind, head, ops, seq: 0, segment: -1, offset: 0, bytes, dataOffsets: [] };
  }

  private fail(error: unknown): AtomioError {
    if (this.failure) return this.failure;
    const code = (error as NodeJS.ErrnoException)?.code ?? 'unknown';
    this.failure = new AtomioError(
      'ERR_IO',
      `the medium failed (${code}): ${(error as Error)?.message}; the store accepts no more writes, reopen it to recover`,
      { cause: code },
      { cause: error },
    );
    return this.failure;
  }

  // -------------------------------------------------------------------------------------
  // The write path shared by commits, the cleaner and recovery's truncation

  /**
   * Writes, flushes and applies `records` as one group commit, with no batch in flight
   * (the cleaner's relocations). The caller has made room (makeRoom).
   */
  private async writeRecords(records: Outgoing[]): Promise<void> {
    assert(this.writing.length === 0, 'no batch is being written');
    const error = await this.writeOut(records);
    if (error !== undefined) throw error;
    this.landed(records);
  }

  /**
   * Lays out `records` (sequence numbers are assigned here, in order) and starts writing
   * them, flushed where the medium has no durable writes. The caller has made room. Resolves
   * to the error when the medium fails, so that a batch written ahead of an older one never
   * leaves a rejection unhandled.
   */
  private writeOut(records: Outgoing[], free = false, alone = false): Promise<unknown> {
    const batchSeq = this.nextSeq;
    const spans = new Map<number, Span>();
    for (const r of records) {
      r.seq = this.nextSeq++;
      if (r.kind === RecordKind.commit) for (const op of r.ops) op.version = r.seq;
      const size = nextRecordAt(0, r.bytes);
      let head = this.heads.get(r.head);
      if (head === undefined || head.offset + size > this.segmentBytes) {
        if (head !== undefined) this.seal(head.segment);
        const opened = this.openSegment(r.head, r.seq);
        head = { segment: opened.index, offset: this.alignment };
        this.heads.set(r.head, head);
        spans.set(opened.index, { segment: opened.index, start: 0, end: this.alignment, referred: 0, header: opened });
      }
      r.segment = head.segment;
      r.offset = head.offset;
      head.offset += size;
      const span = spans.get(head.segment) ?? { segment: head.segment, start: r.offset, end: r.offset, referred: 0 };
      span.end = head.offset;
      for (const op of r.ops) if (!isKvOp(op) && op.data !== undefined && op.data.length >= REFER_DATA_BYTES) span.referred += op.data.length;
      spans.set(head.segment, span);
    }
    // Each span ends padded to the alignment, so the next group commit starts in a sector
    // of its own and never rewrites one holding acknowledged records.
    for (const span of spans.values()) {
      span.end = alignUp(span.end, this.alignment);
      this.segments.at(span.segment).writeOffset = span.end;
    }
    for (const head of this.heads.values()) head.offset = alignUp(head.offset, this.alignment);

    const writes: Promise<void>[] = [];
    const durableWrites = this.durability === 'full' && this.media.writeDurable !== undefined;
    let batchBytes = 0;
    for (const span of spans.values()) batchBytes += span.end - span.start;
    const writeInline = durableWrites ? this.media.writeDurableSync : this.media.writeSync;
    const inline = writeInline !== undefined && this.inline.choose(batchBytes, free, alone);
    for (const span of spans.values()) {
      const spanBytes = span.end - span.start;
      // Unzeroed: every byte is written below, records by encodeRecord, the rest as zeros.
      // Large write data is not copied in: the span goes out as parts (one vectored write).
      const out = this.spanGather(spanBytes - span.referred);
      const into = out.inline;
      if (span.header) {
        const h = span.header;
        encodeSegmentHeader(
          {
            index: h.index,
            kind: h.kind as SegmentKind,
            nonce: h.nonce,
            eraseCount: h.eraseCount,
            openSeq: h.openSeq,
            storeId: this.storeId,
            nextSegment: -1,
            payloadBytes: 0,
            payloadCrc: 0,
          },
          into,
          out.reserve(SEGMENT_HEADER_USED_BYTES),
        );
      }
      const nonce = this.segments.at(span.segment).nonce;
      for (const r of records) {
        if (r.segment !== span.segment) continue;
        const gap = r.offset - span.start - out.length;
        const z = out.reserve(gap);
        zero(into, z, z + gap);
        encodeRecord(
          { seq: r.seq, batchSeq, batchCount: records.length, durableSeq: this.flushedSeq, kind: r.kind, ops: r.ops },
          this.sectorBytes,
          nonce,
          r.offset,
          out,
          r.dataOffsets,
          REFER_DATA_BYTES,
        );
      }
      const tail = spanBytes - out.length;
      const z = out.reserve(tail);
      zero(into, z, z + tail);
      assert(out.length === spanBytes, 'a span is laid out whole');
      this.counters.mediaBytes += spanBytes;
      this.bytesSinceCheckpoint += spanBytes;
      const at = this.segmentOffset(span.segment) + span.start;
      const parts = out.finish();
      // An inline batch is small (see inline.ts): its parts, if any, are joined.
      const written = inline ? this.writeInlineNow(writeInline, parts.length === 1 ? parts[0]! : Buffer.concat(parts), at) : this.writeSpan(parts, at, durableWrites);
      const release = (): void => this.spanWritten(into);
      written.then(release, release);
      writes.push(written);
    }
    this.batchBytesAverage += (batchBytes - this.batchBytesAverage) / 8;
    // One span (a small batch, the common case) needs no gathering of outcomes.
    let done = writes.length === 1 ? writes[0]! : settleAll(writes);
    if (!inline) {
      const token = this.inline.threadWriteStarted();
      done = done.then(
        () => this.inline.threadWriteDone(token),
        (error: unknown) => {
          this.inline.threadWriteDone(token);
          throw error;
        },
      );
    }
    if (this.durability === 'full' && !durableWrites) done = done.then(() => this.media.flush());
    return done.then(
      () => undefined,
      (error: unknown) => error ?? new Error('a write failed'),
    );
  }

  /**
   * Where a span's `bytes` inline bytes are laid out: a buffer of a power-of-two size class,
   * reused once the write of the span that had it has settled (spanWritten). Fresh memory
   * costs a page fault per 4 KiB on its first touch, more than laying the records out in it;
   * a span past SPAN_POOL_MAX_BYTES gets a buffer of its own.
   */
  private spanGather(bytes: number): Gather {
    if (bytes > SPAN_POOL_MAX_BYTES) return new Gather(Buffer.allocUnsafeSlow(bytes));
    const size = spanClass(bytes);
    return new Gather(this.spareSpans.get(size)?.pop() ?? Buffer.allocUnsafeSlow(size));
  }

  /** The write of the span laid out in `buffer` has settled: a later span may have it. */
  private spanWritten(buffer: Buffer): void {
    const size = buffer.length;
    // Buffers past the pooled sizes were made for one span; every other is of a class.
    if (size > SPAN_POOL_MAX_BYTES) return;
    let spare = this.spareSpans.get(size);
    if (spare === undefined) this.spareSpans.set(size, (spare = []));
    if (spare.length < SPARE_SPANS_PER_CLASS) spare.push(buffer);
  }

  /** One write on this thread (see inline.ts), its failure as a rejection like a thread's. */
  private writeInlineNow(write: (buffer: Uint8Array, offset: number) => void, buf: Uint8Array, at: number): Promise<void> {
    const started = performance.now();
    try {
      write.call(this.media, buf, at);
      return Promise.resolve();
    } catch (error) {
      return Promise.reject(error as Error);
    } finally {
      this.inline.inlineWriteDone(performance.now() - started, buf.length);
    }
  }

  /** Writes a span's parts: as one vectored write where the medium has them, else joined. */
  private writeSpan(parts: Uint8Array[], at: number, durable: boolean): Promise<void> {
    const m = this.media;
    if (parts.length === 1) return durable ? m.writeDurable!(parts[0]!, at) : m.write(parts[0]!, at);
    if (durable) return m.writePartsDurable !== undefined ? m.writePartsDurable(parts, at) : m.writeDurable!(Buffer.concat(parts), at);
    return m.writeParts !== undefined ? m.writeParts(parts, at) : m.write(Buffer.concat(parts), at);
  }

  /** Records written (and flushed, with durability 'full') after every record before them: applies them. */
  private landed(records: Outgoing[]): void {
    this.writtenSeq = records[records.length - 1]!.seq;
    if (this.durability === 'full') {
      // Every record before these was made durable by its own batch, so these being durable
      // leaves the whole log up to writtenSeq durable.
      this.counters.flushes++;
      this.flushedSeq = this.writtenSeq;
    } else {
      this.dirtySinceFlush = true;
      for (const r of records) this.bytesSinceFlush += r.bytes;
      if (this.bytesSinceFlush >= FLUSH_AHEAD_BYTES && !this.flushingAhead) this.flushAhead();
    }
    this.counters.batches++;
    for (const r of records) this.apply(r);
  }

  private openSegment(kind: SegmentKind, openSeq: number): SegmentInfo {
    const s = this.segments.pickFree();
    assert(s !== undefined, 'a free segment exists (makeRoom reserved it)');
    s.state = 'open';
    s.kind = kind;
    s.nonce = randomInt(0, 2 ** 32 - 1) >>> 0;
    s.openSeq = openSeq;
    s.eraseCount++;
    s.maxSeq = 0;
    s.youngestVersion = 0;
    s.liveBytes = 0;
    s.writeOffset = this.alignment;
    s.damaged = false;
    return s;
  }

  private seal(index: number): void {
    const s = this.segments.at(index);
    assert(s.state === 'open', 'only an open segment is sealed');
    s.state = 'sealed';
    this.sealedSinceMaintenance = true;
  }

  /** Applies one durable record to the maps. */
  private apply(r: Outgoing): void {
    const seg = this.segments.at(r.segment);
    seg.maxSeq = Math.max(seg.maxSeq, r.seq);
    let w = 0;
    for (const op of r.ops) {
      if (isKvOp(op)) {
        const dataOffset = op.type === OpType.put ? r.dataOffsets[w++]! : 0;
        if (op.type === OpType.put && op.version > seg.youngestVersion) seg.youngestVersion = op.version;
        this.applyKv(r.kind, op.type, op.pool, op.key, op.version, op.expiresAt, r.segment, dataOffset, op.value?.length ?? 0, op.uncached === true ? undefined : op.value);
      } else if (op.type === OpType.write) {
        const dataOffset = r.dataOffsets[w++]!;
        if (op.version > seg.youngestVersion) seg.youngestVersion = op.version;
        this.applyWrite(r.kind, op.lba, op.count, op.version, op.expiresAt, r.segment, dataOffset);
      } else {
        this.applyTrim(op.lba, op.count);
      }
    }
    this.appliedSeq = r.seq;
  }

  /** Shared by the live path and recovery's replay. */
  applyKv(
    kind: RecordKind,
    type: KvOp['type'],
    pool: number,
    key: Uint8Array,
    version: number,
    expiresAt: number,
    segment: number,
    dataOffset: number,
    valueBytes: number,
    value?: Uint8Array,
  ): void {
    switch (type) {
      case OpType.put:
        this.pools.put(kind, pool, key, version, expiresAt, segment, dataOffset, valueBytes, value);
        break;
      case OpType.delete:
        this.pools.delete(pool, key);
        break;
      case OpType.touch:
        this.pools.touch(pool, key, expiresAt);
        break;
      case OpType.poolCreate:
        if (this.pools.get(pool) === undefined) this.pools.create(pool, Buffer.from(key).toString('utf8'));
        break;
      case OpType.poolDrop:
        this.pools.drop(pool);
        break;
    }
  }

  /** Shared by the live path and recovery's replay. */
  applyWrite(
    kind: RecordKind,
    lba: number,
    count: number,
    version: number,
    expiresAt: number,
    segment: number,
    dataOffset: number,
  ): void {
    if (kind === RecordKind.commit) {
      this.place({ lba, count, version, segment, dataOffset, opSectors: count, firstSector: 0, expiresAt });
      if (expiresAt !== 0) this.expiry.push({ expiresAt, lba, count, version });
      return;
    }
    // A relocation moves only the sectors that still hold the version it copied.
    for (const piece of this.map.piecesIn(lba, count)) {
      if (piece.version !== version) continue;
      this.place({
        lba: piece.lba,
        count: piece.count,
        version,
        segment,
        dataOffset,
        opSectors: count,
        firstSector: piece.lba - lba,
        expiresAt,
      });
    }
  }

  applyTrim(lba: number, count: number): void {
    for (const d of this.map.clear(lba, count)) this.segments.at(d.segment).liveBytes -= d.count * this.sectorBytes;
  }

  private place(e: Extent): void {
    this.map.setCounting(e, this.unmapped);
    this.segments.at(e.segment).liveBytes += e.count * this.sectorBytes;
  }

  /** Sectors of a segment that the map stopped pointing to (one function, not a closure per place). */
  private readonly unmapped = (segment: number, sectors: number): void => {
    this.segments.at(segment).liveBytes -= sectors * this.sectorBytes;
  };

  /** Unmaps data whose TTL has passed, so its segments empty without being copied. */
  sweepExpired(now = this.clock.now()): void {
    this.pools.sweep(now);
    for (let d = this.expiry.peek(); d !== undefined && d.expiresAt <= now; d = this.expiry.peek()) {
      this.expiry.pop();
      for (const piece of this.map.piecesIn(d.lba, d.count)) {
        if (piece.version !== d.version || piece.expiresAt > now || piece.expiresAt === 0) continue;
        this.applyTrim(piece.lba, piece.count);
        this.counters.expiredBytes += piece.count * this.sectorBytes;
      }
    }
  }

  // -------------------------------------------------------------------------------------
  // Space: cleaning and checkpoints

  /**
   * Ensures the free segments cover the records (plus the reserve), cleaning if needed.
   * Records that do not grow live data (trims, overwrites) may use the cleaner's part of the
   * reserve: they are how a full store gets room back, so they must not be refused for want
   * of room, and the later the cleaner runs, the emptier its victims. The checkpoint's part
   * stays free, so that the space they free can always be reclaimed: a cleaning opens at
   * most one segment of it, which its victim gives back (see relocationBudget).
   */
  private async makeRoom(records: Outgoing[], shrinking = false, addedExtents = 0): Promise<void> {
    await this.checkpointBehindDone();
    const needed = this.segmentsFor(records, shrinking);
    let stuck = 0;
    // Cleaning can move data around without freeing anything (nearly full victims): give up
    // once a full pass over the segments has not raised the free count, instead of looping.
    let bestFree = this.segments.freeCount();
    let fruitless = 0;
    while (this.segments.freeCount() < needed + this.reserveSegments(addedExtents)) {
      if (fruitless > this.segments.count) break;
      if (await this.cleanOne()) {
        stuck = 0;
        const free = this.segments.freeCount();
        if (free > bestFree) {
          bestFree = free;
          fruitless = 0;
        } else {
          fruitless++;
        }
        continue;
      }
      if (stuck++ === 0 && this.hasUncheckpointedSealed()) {
        await this.checkpoint();
        continue;
      }
      break;
    }
    if (this.segments.freeCount() < needed + this.reserveSegments(addedExtents)) {
      throw new AtomioError(
        'ERR_NO_SPACE',
        `no segment can be freed: ${this.segments.liveBytes()} live bytes; trim data or open with a larger capacity`,
        { liveBytes: this.segments.liveBytes(), freeSegments: this.segments.freeCount() },
      );
    }
  }

  /** Free segments short of what `records` need, with the reserve (see makeRoom). */
  private segmentsShort(records: Outgoing[], shrinking: boolean, addedExtents: number): number {
    return this.segmentsFor(records, shrinking) + this.reserveSegments(addedExtents) - this.segments.freeCount();
  }

  private segmentsFor(records: Outgoing[], shrinking: boolean): number {
    return this.segmentsNeeded(records) - (shrinking ? CLEANER_RESERVE_SEGMENTS : 0);
  }

  private segmentsNeeded(records: Outgoing[]): number {
    const byHead = new Map<SegmentKind, number>();
    for (const r of records) byHead.set(r.head, (byHead.get(r.head) ?? 0) + alignUp(r.bytes, this.alignment));
    let needed = 0;
    for (const [kind, bytes] of byHead) {
      const head = this.heads.get(kind);
      const room = head ? this.segmentBytes - head.offset : 0;
      if (bytes <= room) continue;
      // What does not fit the head goes to fresh segments: one holds it all when it is no
      // larger than a segment; beyond that, records do not split across segments, so each new
      // segment may waste up to one record (kept to half a segment by takeBatch).
      needed += bytes <= this.segmentPayloadBytes ? 1 : Math.ceil(bytes / (this.segmentPayloadBytes / 2)) + 1;
    }
    return needed;
  }

  private hasUncheckpointedSealed(): boolean {
    return this.segments.segments.some((s) => s.state === 'sealed' && s.maxSeq > this.checkpointSeq);
  }

  private async maintainSafely(): Promise<void> {
    try {
      await this.maintain();
    } catch (error) {
      // Running out of room for a checkpoint is not a failure of the medium: writes will
      // report ERR_NO_SPACE themselves. Anything else is.
      if (!(error instanceof AtomioError && error.code === 'ERR_NO_SPACE')) this.fail(error);
    }
  }

  /**
   * Zero-fills every never-used segment now (open's `preallocate`), so that no flush after it
   * commits a file system allocation. Returns how many it filled. Runs before any commit.
   */
  async preallocate(): Promise<number> {
    if (!this.media.allocatesOnWrite) return 0;
    const fill = this.segments.segments.filter((s) => s.state === 'free' && s.eraseCount === 0 && !s.prefilled);
    if (fill.length === 0) return 0;
    const zeros = Buffer.alloc(Math.min(this.segmentBytes, 8 * 1024 * 1024));
    for (const s of fill) s.readers++; // pinned, as prefillAhead's
    try {
      for (const s of fill) await this.writeZeros(s, zeros);
      await this.media.flush();
      for (const s of fill) s.prefilled = true;
    } finally {
      for (const s of fill) s.readers--;
    }
    return fill.length;
  }

  /**
   * Before the first commits of a store with no segment open for them (a new one), zero-fills
   * the segment they will take: otherwise each of their flushes would also commit the file
   * system's allocation (about five times the cost of a small durable write) until that
   * segment is full. Open pays a segment of zeros and one flush for it, once.
   */
  async fillFirstHead(): Promise<void> {
    if (this.heads.has(SegmentKind.hot)) return;
    this.prefillAhead();
    await this.prefilling;
  }

  /**
   * Zero-fills the next never-used segment in the background, so that the flushes of the
   * commits written into it do not also commit the file system's allocation of its blocks.
   * Only never-used segments are filled (again after a reopen, as the mark is not stored);
   * reused segments need nothing. Only while each batch is flushed and batches are small
   * (PREFILL_MAX_FLUSH_BYTES): for large ones, or for the rare flushes of durability
   * 'none', the zeros would cost more than they save.
   */
  prefillAhead(): void {
    if (!this.media.allocatesOnWrite || this.prefilling || this.closed || this.failure) return;
    if (this.durability !== 'full' || this.batchBytesAverage > PREFILL_MAX_FLUSH_BYTES) return;
    const s = this.segments.pickUnfilled(PREFILL_AHEAD_SEGMENTS);
    if (s === undefined) return;
    s.readers++; // pinned: nothing allocates it while zeros are on their way
    this.prefilling = (async () => {
      await this.writeZeros(s, Buffer.alloc(Math.min(this.segmentBytes, 1024 * 1024)));
      await this.media.flush();
      s.prefilled = true;
    })()
      .catch(() => undefined) // a failed fill costs speed only; the write path reports real failures
      .finally(() => {
        s.readers--;
        this.prefilling = undefined;
      });
  }

  /** Writes zeros over segment `s`, `zeros.length` bytes at a time (not flushed). */
  private async writeZeros(s: SegmentInfo, zeros: Buffer): Promise<void> {
    for (let at = 0; at < this.segmentBytes; at += zeros.length) {
      await this.media.write(zeros.subarray(0, Math.min(zeros.length, this.segmentBytes - at)), this.segmentOffset(s.index) + at);
    }
  }

  /** Background work between batches: checkpoints when due, cleaning when space runs low, wear levelling after a seal. */
  private async maintain(): Promise<void> {
    assert(this.writing.length === 0, 'maintenance runs with no batch being written');
    this.prefillAhead();
    // A checkpoint under way holds the segment table as it was when it started: nothing
    // frees, cleans or moves a segment until it is done.
    if (this.checkpointBehind !== undefined) return;
    if (this.checkpointWanted()) {
      // Reclaiming, cleaning and wear levelling wait for the maintenance after it: what is
      // due stays due (sealedSinceMaintenance is left set). A job waiting goes first: it
      // waits for any checkpoint under way, and commits can write the next one's worth of
      // log meanwhile, so a job could otherwise wait behind checkpoint after checkpoint.
      if (this.jobs.length === 0) void this.startCheckpointBehind();
      return;
    }
    const sealed = this.sealedSinceMaintenance;
    this.sealedSinceMaintenance = false;
    this.reclaimEmpty();
    if (this.segments.freeCount() < this.cleaningLowWater() && this.queue.length === 0) await this.cleanOne();
    // Erase counts only grow as segments fill: a look at wear after each seal is enough, and
    // it must not wait for an empty queue, which a steady writer never leaves.
    if (sealed && !this.failure) await this.levelWear();
  }

  /**
   * Static wear levelling. The cleaner moves a little-worn segment's data when it needs room
   * (pickVictim), but a store whose overwrites empty whole segments never needs a victim:
   * its cold segments would keep their erase counts while the rest of the medium wears. So
   * once a sealed segment trails the most-worn one by more than WEAR_SPREAD_LIMIT erases,
   * its data moves to the cold head and the segment goes back to the free list, where
   * allocation, which prefers the least worn, gives it the next hot data. A head that trails
   * is sealed, so that it can move too.
   */
  private async levelWear(): Promise<void> {
    const max = this.segments.eraseCounts().max;
    let victim: SegmentInfo | undefined;
    for (const s of this.segments.segments) {
      if (!this.cleanable(s)) continue;
      if (max - s.eraseCount > WEAR_SPREAD_LIMIT && (victim === undefined || s.eraseCount < victim.eraseCount)) victim = s;
    }
    if (victim === undefined) {
      // The cold head fills only as fast as the cleaner moves data: a little-worn segment could
      // stay open, out of reach, for good. One idle since the last checkpoint is sealed, and so
      // becomes a victim like any other.
      for (const [kind, head] of this.heads) {
        const s = this.segments.at(head.segment);
        if (max - s.eraseCount <= WEAR_SPREAD_LIMIT || s.maxSeq > this.checkpointSeq) continue;
        this.seal(head.segment);
        this.heads.delete(kind);
      }
      return;
    }
    // Only with room to spare: a store short of it cleans, and pickVictim levels wear then.
    if (this.segments.freeCount() < this.cleaningLowWater()) return;
    if (this.relocationBound(victim.liveBytes) > this.relocationBudget()) return;
    await this.clean(victim, this.clock.now());
  }

  /**
   * Frees sealed segments with nothing live whose records the checkpoint covers. Only when
   * every applied record is flushed: the records that emptied a segment (overwrites, trims,
   * relocations) must be durable before the segment can be written over.
   */
  reclaimEmpty(): number {
    // A batch being written may lie in a just-sealed segment whose live bytes it has not yet added.
    if (this.flushedSeq < this.appliedSeq || this.writing.length > 0) return 0;
    let n = 0;
    for (const s of this.segments.emptySealedSegments()) {
      if (s.maxSeq <= this.checkpointSeq && !this.isHead(s.index) && !this.pinned(s.index)) {
        s.state = 'free';
        s.kind = 0;
        n++;
      }
    }
    return n;
  }

  private isHead(index: number): boolean {
    for (const h of this.heads.values()) if (h.segment === index) return true;
    return false;
  }

  /** Picks a victim by cost/benefit (or by wear), moves its live data, frees it. */
  async cleanOne(): Promise<boolean> {
    const now = this.clock.now();
    this.sweepExpired(now);
    await this.flushIfBehind();
    if (this.reclaimEmpty() > 0) return true;
    let victim = this.pickVictim(this.relocationBudget());
    // The cleaner takes only segments the checkpoint covers (recovery replays the rest). When
    // a newer one would copy at least a checkpoint's worth fewer bytes (segments emptied by
    // overwrites since, above all), a checkpoint first pays for itself. Checkpoints then
    // follow the cleaner's needs, and checkpointIntervalBytes only bounds what an open replays.
    const emptiest = this.emptiestBeyondCheckpoint();
    if (emptiest !== undefined && (victim === undefined || emptiest.liveBytes + this.checkpointCost() < victim.liveBytes)) {
      try {
        await this.checkpoint();
      } catch (error) {
        if (!(error instanceof AtomioError && error.code === 'ERR_NO_SPACE')) throw error;
      }
      if (this.reclaimEmpty() > 0) return true;
      victim = this.pickVictim(this.relocationBudget());
    }
    if (victim === undefined) return false;
    return this.clean(victim, now);
  }

  /** Moves the victim's live data to the cold head and frees it once that is durable; false when it cannot be cleaned. */
  private async clean(victim: SegmentInfo, now: number): Promise<boolean> {
    if (!(await this.relocate(victim, now))) return false;
    this.counters.segmentsCleaned++;
    await this.flushIfBehind();
    this.reclaimEmpty();
    return true;
  }

  /** A segment the cleaner may take: sealed, not damaged, covered by the checkpoint (recovery replays the rest), and read by no view. */
  private cleanable(s: SegmentInfo): boolean {
    return s.state === 'sealed' && !s.damaged && s.maxSeq <= this.checkpointSeq && !this.pinned(s.index);
  }

  /** Resolves once every commit resolved before the call is on stable storage. */
  async flush(): Promise<void> {
    if (this.closed) throw closedError();
    if (this.failure) throw this.failure;
    try {
      await this.flushIfBehind();
    } catch (error) {
      throw this.fail(error);
    }
  }

  /** With durability 'none', flushes what is written but not yet flushed. */
  private async flushIfBehind(): Promise<void> {
    if (this.flushedSeq >= this.writtenSeq) return;
    const covered = this.writtenSeq;
    await this.media.flush();
    this.counters.flushes++;
    this.flushedSeq = Math.max(this.flushedSeq, covered);
  }

  /** The sealed segment newer than the checkpoint with the least live data. */
  private emptiestBeyondCheckpoint(): SegmentInfo | undefined {
    let best: SegmentInfo | undefined;
    for (const s of this.segments.segments) {
      if (s.state !== 'sealed' || s.damaged || s.maxSeq <= this.checkpointSeq || this.pinned(s.index)) continue;
      if (best === undefined || s.liveBytes < best.liveBytes) best = s;
    }
    return best;
  }

  /**
   * The most bytes a relocation may write now: the cold head's room, plus the fresh segments
   * relocate() may open (no more than are free, and the checkpoint's part of the reserve
   * once its victim is freed), less what a record may leave unused at each segment's end.
   */
  private relocationBudget(): number {
    const free = this.segments.freeCount();
    const opens = Math.max(0, Math.min(free, free + 1 - (this.reserveSegments() - CLEANER_RESERVE_SEGMENTS)));
    const slack = RECORD_HEADER_BYTES + BLOCK_OP_BYTES + CHUNK_CRC_BYTES + this.sectorBytes + this.alignment;
    const cold = this.heads.get(SegmentKind.cold);
    const room = cold === undefined ? 0 : this.segmentBytes - cold.offset;
    return Math.max(0, room - slack) + opens * (this.segmentPayloadBytes - slack);
  }

  /** The most bytes relocating `live` bytes takes: at worst every sector is an op of its own. */
  private relocationBound(live: number): number {
    const sectors = Math.ceil(live / this.sectorBytes);
    return live + sectors * (BLOCK_OP_BYTES + CHUNK_CRC_BYTES) + (Math.ceil(sectors / 1024) + 1) * (RECORD_HEADER_BYTES + 8);
  }

  /**
   * The segment to clean next, among those the checkpoint covers whose relocation fits in
   * `budget` bytes: at the foot of the reserve, a victim too full to fit (one picked for wear,
   * above all) would be refused by relocate() again and again.
   */
  private pickVictim(budget = Infinity): SegmentInfo | undefined {
    const wear = this.segments.eraseCounts();
    let best: SegmentInfo | undefined;
    let bestScore = -Infinity;
    for (const s of this.segments.segments) {
      // A segment a view reads is not taken: moving its data would not free it.
      if (!this.cleanable(s) || this.relocationBound(s.liveBytes) > budget) continue;
      const u = s.liveBytes / this.segmentPayloadBytes;
      let score: number;
      if (wear.max - s.eraseCount > WEAR_SPREAD_LIMIT) {
        score = Infinity; // static wear levelling: move cold data off a little-worn segment
      } else {
        if (u >= 0.98) continue;
        // Age in commits since the segment's newest data was written: relocated data keeps
        // its version, so cold data stays old however often it moves. Its square root: at
        // full weight, age (which spans millions of commits) outvotes free space, and the
        // cleaner copies old, nearly full segments while emptier ones wait (write
        // amplification of random overwrites at 80% full: 2.30 → 2.22 uniform, 2.11 →
        // 2.08 80/20, in `npm run bench -- block --only wa`).
        const age = Math.max(1, this.nextSeq - s.youngestVersion);
        score = ((1 - u) * Math.sqrt(age)) / (1 + u);
      }
      if (score > bestScore) {
        best = s;
        bestScore = score;
      }
    }
    return best;
  }

  /** Copies the victim's live pieces to the cold head; false when it cannot be cleaned. */
  private async relocate(victim: SegmentInfo, now: number): Promise<boolean> {
    // One read of the whole victim, then its own records say where to look in the map.
    const image = Buffer.allocUnsafe(victim.writeOffset);
    victim.readers++;
    try {
      await this.media.read(image, this.segmentOffset(victim.index));
    } finally {
      victim.readers--;
    }
    const found = this.liveDataOf(victim, image);
    const pieces = found.pieces.filter((e) => this.isLive(e, now));
    const entries = found.entries;
    const records: Outgoing[] = [];
    let ops: LogOp[] = [];
    let bytes = RECORD_HEADER_BYTES;
    // Records never cross segments, so each one is cut to fill the room left where
    // writeRecords will place it: the cold head's tail first, then whole new segments; a
    // piece that does not fit whole is split at a sector. Cut at a fixed size, or with
    // pieces kept whole, records would waste the tail of every segment, and cleaning a
    // nearly full victim could take as much space as it frees (the store then fills up
    // long before usableBytes).
    const cold = this.heads.get(SegmentKind.cold);
    let at = cold ? cold.offset : this.segmentBytes;
    let newSegments = 0;
    const close = (): void => {
      const r = this.outgoing(RecordKind.relocation, SegmentKind.cold, ops);
      records.push(r);
      at += nextRecordAt(0, r.bytes);
      ops = [];
      bytes = RECORD_HEADER_BYTES;
    };
    const expiredEntries: typeof entries = [];
    for (const entry of entries) {
      if (entry.meta.expiresAt !== 0 && entry.meta.expiresAt <= now) {
        expiredEntries.push(entry);
        continue;
      }
      const dataOffset = entry.meta.location % TWO_32;
      const data = image.subarray(dataOffset, dataOffset + kvDataBytes(entry.meta.valueBytes));
      if (!kvDataIntact(data, victim.nonce, dataOffset)) {
        victim.damaged = true; // as for chunks: reads go on reporting ERR_CORRUPT
        return false;
      }
      const opBytes = kvEntryBytes(entry.key.length, entry.meta.valueBytes);
      for (;;) {
        if (ops.length >= 1024) close();
        if (at + bytes + opBytes <= this.segmentBytes) break;
        if (ops.length > 0) {
          close();
        } else {
          at = this.alignment; // the record starts a new segment
          newSegments++;
        }
      }
      ops.push({
        type: OpType.put,
        pool: entry.pool.id,
        key: entry.key,
        version: entry.meta.version,
        expiresAt: entry.meta.expiresAt,
        value: data.subarray(kvDataBytes(0)),
      });
      bytes += opBytes;
    }
    for (const piece of pieces) {
      const { start, bytes: spanBytes, firstChunk } = this.chunkSpan(piece);
      const chunks = image.subarray(start, start + spanBytes);
      if (chunks.length !== spanBytes || verifyChunks(chunks, victim.nonce, start) >= 0) {
        // Keep damaged data where it is, so that reads go on reporting ERR_CORRUPT.
        victim.damaged = true;
        return false;
      }
      const data = Buffer.allocUnsafe(piece.count * this.sectorBytes);
      copyOutOfChunks(chunks, firstChunk, piece.firstSector * this.sectorBytes, data.length, data, 0);
      for (let done = 0; done < piece.count; ) {
        if (ops.length >= 1024) close();
        const fit = Math.min(piece.count - done, this.sectorsFitting(this.segmentBytes - at - bytes - BLOCK_OP_BYTES));
        if (fit <= 0) {
          if (ops.length > 0) {
            close();
          } else {
            at = this.alignment; // the record starts a new segment
            newSegments++;
          }
          continue;
        }
        ops.push({
          type: OpType.write,
          lba: piece.lba + done,
          count: fit,
          version: piece.version,
          expiresAt: piece.expiresAt,
          data: data.subarray(done * this.sectorBytes, (done + fit) * this.sectorBytes),
        });
        bytes += BLOCK_OP_BYTES + chunkedBytes(fit * this.sectorBytes);
        done += fit;
      }
    }
    if (ops.length > 0) close();
    if (records.length > 0) {
      // Leave room for a checkpoint once the victim is free again: without one, nothing
      // written since can be cleaned.
      const free = this.segments.freeCount();
      if (free < newSegments || free + 1 < newSegments + this.reserveSegments() - CLEANER_RESERVE_SEGMENTS) return false;
      await this.writeRecords(records);
      for (const r of records) this.counters.cleanerBytes += nextRecordAt(0, r.bytes);
    }
    // What still points here has expired: unmap it, its space returns without a copy.
    for (const { pool, key, meta } of expiredEntries) {
      const current = pool.index.get(key);
      if (current === undefined || current.location !== meta.location) continue;
      this.pools.delete(pool.id, key);
      pool.expiredKeys++;
      pool.expiredBytes += key.length + meta.valueBytes;
      this.counters.expiredBytes += kvEntryBytes(key.length, meta.valueBytes);
    }
    for (const e of this.extentsIn(victim)) {
      assert(!this.isLive(e, now), `victim ${victim.index} holds live lba ${e.lba} after relocation`);
      this.applyTrim(e.lba, e.count);
      this.counters.expiredBytes += e.count * this.sectorBytes;
    }
    assert(victim.liveBytes === 0, `victim ${victim.index} is empty after relocation`);
    return true;
  }

  /** The most sectors whose chunked data fits in `room` bytes (0 when none does). */
  private sectorsFitting(room: number): number {
    if (room <= 0) return 0;
    let n = Math.floor(room / this.sectorBytes);
    while (n > 0 && chunkedBytes(n * this.sectorBytes) > room) n--;
    return n;
  }

  /**
   * The data in the victim that the maps still point at: block pieces, live or expired, and
   * kv entries, live or expired. Found by walking its records and asking the maps which of
   * their ops still point there; falls back to a scan of the whole maps when the records
   * do not account for every live byte (a damaged header hides the rest).
   */
  private liveDataOf(victim: SegmentInfo, image: Buffer): { pieces: Extent[]; entries: KvEntryRef[] } {
    const pieces: Extent[] = [];
    const entries: KvEntryRef[] = [];
    let found = 0;
    let p = this.alignment;
    while (p < image.length) {
      const decoded = decodeRecordMeta(image.subarray(p), victim.nonce, p, this.sectorBytes, image.length - p);
      if (!decoded.ok) {
        p = resyncAfter(image, p, p, this.alignment);
        continue;
      }
      for (const op of decoded.record.ops) {
        if (op.type === OpType.put) {
          const pool = this.pools.get(op.pool);
          const meta = pool?.index.get(op.key);
          if (pool === undefined || meta === undefined || meta.location !== victim.index * TWO_32 + op.dataOffset) continue;
          found += kvEntryBytes(op.key.length, meta.valueBytes);
          entries.push({ pool, key: op.key, meta });
          continue;
        }
        if (op.type !== OpType.write) continue;
        this.map.forEachIn(op.lba, op.count, (piece) => {
          if (piece.segment !== victim.index || piece.dataOffset !== op.dataOffset) return;
          found += piece.count * this.sectorBytes;
          pieces.push(piece);
        });
      }
      p = nextRecordAt(p, decoded.record.recordBytes);
    }
    if (found === victim.liveBytes) return { pieces, entries };
    const all: KvEntryRef[] = [];
    for (const pool of this.pools.byId.values()) {
      pool.index.forEach((key, meta) => {
        if (segmentOf(meta) === victim.index) all.push({ pool, key, meta });
      });
    }
    return { pieces: this.extentsIn(victim), entries: all };
  }

  private extentsIn(victim: SegmentInfo): Extent[] {
    const out: Extent[] = [];
    this.map.forEach((e) => {
      if (e.segment === victim.index) out.push(e);
    });
    return out;
  }

  /**
   * Writes a checkpoint of the maps and points the superblock at it, with no batch being
   * written; first waits for one that maintenance started behind the commits.
   */
  async checkpoint(): Promise<void> {
    await this.checkpointBehindDone();
    await this.writeCheckpoint();
  }

  /** Resolves once no checkpoint is being written behind the commits. */
  private async checkpointBehindDone(): Promise<void> {
    while (this.checkpointBehind !== undefined) await this.checkpointBehind;
  }

  /**
   * Starts a checkpoint that commits go on beside: with a large map it takes a tenth of a
   * second or more, which commits would otherwise wait out. Until it is done, maintenance
   * waits (see maintain) and so does anything that needs it (makeRoom, jobs, close).
   */
  private startCheckpointBehind(onFailure?: () => void): Promise<void> {
    const written = this.writeCheckpoint();
    this.checkpointBehind = written
      .catch((error: unknown) => {
        // Before any other checkpoint can start, which would keep what the failed one was for.
        onFailure?.();
        // No room for it: the log is intact without one, and makeRoom retries when it must.
        if (!(error instanceof AtomioError && error.code === 'ERR_NO_SPACE')) this.fail(error);
        else this.checkpointRefused = { free: this.segments.freeCount(), bytes: this.bytesSinceCheckpoint };
      })
      .finally(() => (this.checkpointBehind = undefined));
    return written;
  }

  /**
   * For a job (run between batches): starts a checkpoint behind the commits that follow the
   * job, and resolves once it is durable, or rejects with its error after `onFailure` has
   * run, before the next checkpoint can start (a job undoes there what it was for).
   */
  checkpointBehindCommits(onFailure: () => void): Promise<void> {
    assert(this.checkpointBehind === undefined && this.writing.length === 0, 'a job starts a checkpoint with none under way and no batch being written');
    return this.startCheckpointBehind(onFailure);
  }

  /**
   * The checkpoint of the maps as of the last record applied, which must be the last one
   * handed a seq (no batch being written). Commits may go on once it has started: it reads
   * leases of the maps, and the segment table and heads before its first pause.
   */
  private async writeCheckpoint(): Promise<void> {
    assert(this.writing.length === 0, 'a checkpoint starts with no batch being written');
    this.sweepExpired();
    const seq = this.nextSeq - 1;
    assert(seq === this.appliedSeq, 'every record handed a seq is applied');
    const bytesBefore = this.bytesSinceCheckpoint;
    const heads: Head[] = [];
    for (const [kind, h] of this.heads) heads.push({ kind, segment: h.segment, offset: h.offset });
    // The maps as they are at seq, without a copy (a copy of a million extents cost 150 ms,
    // most of it touching fresh memory): leases, whose leaves the maps copy before changing.
    const extents = this.map.lease();
    const pools = [...this.pools.byId.values()].map((p) => ({ id: p.id, name: p.name, lease: p.index.lease() }));
    // Named snapshots never change: no job runs until the checkpoint is done.
    const snapshots = [...this.snapshots.values()].map(snapshotSource);
    // Until the checkpoint has taken its segments, the reserve keeps room for it as large as
    // it is, though commits may shrink the map meanwhile.
    this.checkpointBehindBytes = this.checkpointBound(extents.size, this.checkpointOtherBytes());
    let payload: Buffer;
    let chain: SegmentInfo[];
    try {
      try {
        // Encoded in steps, the event loop turning between them: a million extents take
        // 50 – 70 ms. The first step reads the segment rows, before any commit can change them.
        const steps = encodeCheckpointInSteps(
          seq,
          seq + 1,
          heads,
          this.segments.segments,
          extentSource(extents),
          this.pools.nextId,
          pools.map((p) => poolSource(p.id, p.name, p.lease.view)),
          snapshots,
          this.checkpointSpare,
        );
        let step = steps.next();
        while (step.done !== true) {
          await new Promise<void>((resolve) => setImmediate(resolve));
          step = steps.next();
        }
        payload = step.value;
        // Laid out at the start of a buffer of its own: the next checkpoint writes over it.
        assert(payload.byteOffset === 0, 'a checkpoint payload starts its own buffer');
        this.checkpointSpare = undefined;
      } finally {
        extents.release();
        for (const p of pools) p.lease.release();
      }
      chain = this.takeCheckpointSegments(payload.length);
    } finally {
      this.checkpointBehindBytes = 0;
    }
    const per = this.segmentPayloadBytes;
    // A piece at a time, of CHECKPOINT_PIECE_BYTES: commits written meanwhile go to the same
    // file, whose writes the kernel takes one at a time. Behind all of a large checkpoint at
    // once (with the page cache throttling writers) they waited tens of milliseconds.
    for (let i = 0; i < chain.length; i++) {
      const s = chain[i]!;
      const part = payload.subarray(i * per, Math.min(payload.length, (i + 1) * per));
      s.kind = SegmentKind.checkpoint;
      s.nonce = randomInt(0, 2 ** 32 - 1) >>> 0;
      s.openSeq = seq;
      s.eraseCount++;
      s.maxSeq = 0;
      s.liveBytes = 0;
      // The header block, then the part where it lies: vectored writes, no copy of the payload.
      const header = Buffer.alloc(this.alignment);
      encodeSegmentHeader(
        {
          index: s.index,
          kind: SegmentKind.checkpoint,
          nonce: s.nonce,
          eraseCount: s.eraseCount,
          openSeq: seq,
          storeId: this.storeId,
          nextSegment: chain[i + 1]?.index ?? -1,
          payloadBytes: part.length,
          payloadCrc: checksumOf(part),
        },
        header,
      );
      this.counters.mediaBytes += header.length + part.length;
      this.counters.checkpointBytes += header.length + part.length;
      const at = this.segmentOffset(s.index);
      const first = Math.min(part.length, CHECKPOINT_PIECE_BYTES - header.length);
      await this.writeSpan([header, part.subarray(0, first)], at, false);
      for (let from = first; from < part.length; from += CHECKPOINT_PIECE_BYTES) {
        await this.media.write(part.subarray(from, Math.min(part.length, from + CHECKPOINT_PIECE_BYTES)), at + header.length + from);
      }
    }
    // Written: the buffer is the next checkpoint's, whose pages are then already in memory.
    this.checkpointSpare = Buffer.from(payload.buffer, 0, payload.buffer.byteLength);
    const covered = this.writtenSeq;
    await this.media.flush();
    this.counters.flushes++;
    this.flushedSeq = Math.max(this.flushedSeq, covered);
    const next: Superblock = {
      ...this.superblock,
      generation: this.superblock.generation + 1,
      checkpoint: { seq, firstSegment: chain[0]!.index, payloadBytes: payload.length },
    };
    await this.media.write(encodeSuperblock(next), (next.generation % 2) * 4096);
    await this.media.flush();
    this.counters.flushes++;
    this.superblock = next;
    for (const old of this.checkpointChain) {
      const s = this.segments.at(old);
      s.state = 'free';
      s.kind = 0;
    }
    this.checkpointChain = chain.map((s) => s.index);
    this.checkpointSeq = seq;
    // What commits logged while it was written is not covered by it.
    this.bytesSinceCheckpoint -= bytesBefore;
    this.checkpointRefused = undefined;
    this.counters.checkpoints++;
    this.reclaimEmpty();
  }

  /** Free segments for a checkpoint payload of `bytes`, marked as the checkpoint's; ERR_NO_SPACE when too few are free. */
  private takeCheckpointSegments(bytes: number): SegmentInfo[] {
    const chain: SegmentInfo[] = [];
    for (let i = 0; i === 0 || i * this.segmentPayloadBytes < bytes; i++) {
      const s = this.segments.pickFree();
      if (s === undefined) {
        for (const c of chain) c.state = 'free';
        throw new AtomioError('ERR_NO_SPACE', 'no free segment left for a checkpoint; trim data to make room', {});
      }
      s.state = 'checkpoint';
      chain.push(s);
    }
    return chain;
  }

  // -------------------------------------------------------------------------------------
  // Flushing and closing

  /**
   * Durability 'none': starts a flush in the background once FLUSH_AHEAD_BYTES have landed
   * since the last, so that the OS writes the log out as it comes and a checkpoint's own
   * flush (which the pipeline waits for) finds little left to write.
   */
  private flushAhead(): void {
    this.flushingAhead = true;
    void this.backgroundFlush().finally(() => (this.flushingAhead = false));
  }

  private async backgroundFlush(): Promise<void> {
    if (!this.dirtySinceFlush || this.closed || this.failure) return;
    this.dirtySinceFlush = false;
    this.bytesSinceFlush = 0;
    const covered = this.writtenSeq;
    try {
      await this.media.flush();
      this.counters.flushes++;
      this.flushedSeq = Math.max(this.flushedSeq, covered);
    } catch (error) {
      this.fail(error);
    }
  }

  /** Waits for queued commits, makes everything durable and writes a final checkpoint. */
  async close(): Promise<void> {
    if (this.closed) return;
    // Commits may come in while a checkpoint under way finishes: both must be done.
    await this.idle();
    while (this.checkpointBehind !== undefined) {
      await this.checkpointBehindDone();
      await this.idle();
    }
    this.closed = true;
    if (this.flushTimer) clearInterval(this.flushTimer);
    await this.prefilling;
    try {
      if (!this.failure) {
        try {
          if (this.appliedSeq > this.checkpointSeq || this.bytesSinceCheckpoint > 0) await this.checkpoint();
        } catch (error) {
          // No room for a checkpoint: the log is intact without one, and must still be flushed.
          if (!(error instanceof AtomioError && error.code === 'ERR_NO_SPACE')) throw error;
        }
        await this.media.flush();
      }
    } catch (error) {
      // The log is intact (a checkpoint only shortens the next recovery), but the caller
      // learns that the medium failed, as ERR_IO like every other medium failure.
      throw error instanceof AtomioError ? error : this.fail(error);
    } finally {
      await this.media.close();
    }
  }

  get isClosed(): boolean {
    return this.closed;
  }

  assertOpen(): void {
    if (this.closed) throw closedError();
  }
}

/** A kv entry found in a segment being cleaned. */
interface KvEntryRef {
  pool: Pool;
  key: Buffer;
  meta: KeyMeta;
}

/** kv state a batch (or one commit of it) has written, not yet applied. */
interface BatchKeys {
  keys: Map<string, KeyState & { meta?: KeyMeta; pool?: Pool }>;
  /** Pools dropped; keys written after the drop are in `keys`. */
  dropped: Set<string>;
}

/** The overlay of a batch without block ops, shared: a map costs a 6 KiB leaf, and kv-only batches need none. Never written. */
const NO_BLOCK_OPS = new ExtentMap();
const ABSENT: KeyState = { present: false, version: 0, value: undefined, entryBytes: 0, expiresAt: 0 };
/** What stageKv gives a commit without kv ops, shared: admit only reads it. */
const NO_KV_OPS: { staged: BatchKeys; growth: number } = { staged: { keys: new Map(), dropped: new Set() }, growth: 0 };
// Frozen: a write into a list that block-only commits share would throw, not leak between them.
const NO_VALUES: (Uint8Array | undefined)[] = Object.freeze([]) as unknown as (Uint8Array | undefined)[];
const NO_EXPIRIES: number[] = Object.freeze([]) as unknown as number[];

// A promise's resolving functions, taken without a closure per commit (the executor runs
// synchronously inside the Promise constructor).
let takenResolve: ((version: number) => void) | undefined;
let takenReject: ((error: Error) => void) | undefined;
function takeSettlers(resolve: (version: number) => void, reject: (error: Error) => void): void {
  takenResolve = resolve;
  takenReject = reject;
}
const EMPTY_KEY = Buffer.alloc(0);

function batchKeyPrefix(pool: string): string {
  return `${pool.length}:${pool}`;
}

function batchKey(pool: string, key: Buffer): string {
  return batchKeyPrefix(pool) + key.toString('latin1');
}

/** The pool's id as the batch leaves it; undefined when it does not exist (or was dropped). */
function existingPoolId(name: string, batchPools: Map<string, number>, pools: Pools): number | undefined {
  const id = batchPools.get(name) ?? pools.named(name)?.id;
  return id === -1 ? undefined : id;
}

/** Bytes of block data a commit writes: its growth in live bytes at most. */
function writtenBytes(p: Pending): number {
  let bytes = 0;
  for (const op of p.ops) if (op.type === 'write') bytes += op.data.length;
  return bytes;
}

function fullError(live: number, usable: number, growth: number): AtomioError {
  return new AtomioError(
    'ERR_NO_SPACE',
    `store is full: ${live} live bytes of ${usable} usable; trim or overwrite data, or open with a larger capacity`,
    { liveBytes: live, usableBytes: usable, needed: growth },
  );
}

function closedError(): AtomioError {
  return new AtomioError('ERR_CLOSED', 'the store is closed; open it again to use it', {});
}

function versionForError(v: number): number | string {
  return v === Infinity ? 'a commit not yet acknowledged' : v;
}

/** A placeholder for a batch's pending op; it locates no data (a trim may span 2^44 sectors). */
function overlayExtent(lba: number, count: number, version: number): Extent {
  return { lba, count, version, segment: 0, dataOffset: 0, opSectors: 0, firstSector: 0, expiresAt: 0 };
}

/** Write data of at least this many bytes goes to the medium from the caller's buffer, not copied into the batch's. */
const REFER_DATA_BYTES = 32 * 1024;

/** A queue of at most this many commits and data bytes goes as one batch while reads come in (see takeBatch). */
const SMALL_QUEUE_COMMITS = 16;
const SMALL_QUEUE_BYTES = 16 * 1024;

/** A checkpoint is written in pieces of this size, one after another (see writeCheckpoint). */
const CHECKPOINT_PIECE_BYTES = 1024 * 1024;

/** Durability 'none': log bytes after which a flush starts in the background (see flushAhead). */
const FLUSH_AHEAD_BYTES = 8 * 1024 * 1024;
/** Spans up to this size take their buffers from size classes of reused ones (see spanGather). */
const SPAN_POOL_MAX_BYTES = 2 * 1024 * 1024;
/** Spare buffers kept per size class: enough for the spans of the batches being written. */
const SPARE_SPANS_PER_CLASS = 4;

/** The size class of a pooled span of `bytes`: the power of two at or above it, at least 4 KiB. */
function spanClass(bytes: number): number {
  assert(bytes <= SPAN_POOL_MAX_BYTES, 'only pooled spans have a size class');
  // Integer bit arithmetic: pooled spans are far below 2^31 bytes.
  return bytes <= 4096 ? 4096 : 2 ** (32 - Math.clz32(bytes - 1));
}

/** The bytes as a Buffer: itself when it is one, else a view (no copy). */
function asBuffer(bytes: Uint8Array): Buffer {
  return Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length);
}

/** The one piece that covers [lba, lba + count) exactly, if the pieces are that. */
function coveringPiece(pieces: Extent[], lba: number, count: number): Extent | undefined {
  const p = pieces[0];
  return pieces.length === 1 && p!.lba === lba && p!.count === count ? p : undefined;
}

/** Views of the data bytes [from, from + length) of `chunks` (which start at chunk `firstChunk`), one per chunk. */
export function chunkViews(chunks: Buffer, firstChunk: number, from: number, length: number): Buffer[] {
  const chunkBytes = CHUNK_DATA_BYTES + CHUNK_CRC_BYTES;
  const out: Buffer[] = [];
  let done = 0;
  while (done < length) {
    const dataPos = from + done;
    const inChunk = dataPos % CHUNK_DATA_BYTES;
    const src = (Math.floor(dataPos / CHUNK_DATA_BYTES) - firstChunk) * chunkBytes + CHUNK_CRC_BYTES + inChunk;
    const n = Math.min(CHUNK_DATA_BYTES - inChunk, length - done);
    out.push(chunks.subarray(src, src + n));
    done += n;
  }
  return out;
}

/** Copies `length` bytes starting at op-data byte `from` out of chunked bytes that begin at `firstChunk`. */
export function copyOutOfChunks(
  chunks: Buffer,
  firstChunk: number,
  from: number,
  length: number,
  out: Buffer,
  at: number,
): void {
  const chunkBytes = CHUNK_DATA_BYTES + CHUNK_CRC_BYTES;
  let copied = 0;
  while (copied < length) {
    const dataPos = from + copied;
    const c = Math.floor(dataPos / CHUNK_DATA_BYTES) - firstChunk;
    const inChunk = dataPos % CHUNK_DATA_BYTES;
    const src = c * chunkBytes + CHUNK_CRC_BYTES + inChunk;
    const n = Math.min(CHUNK_DATA_BYTES - inChunk, length - copied);
    chunks.copy(out, at + copied, src, src + n);
    copied += n;
  }
}

function checksumOf(bytes: Uint8Array): number {
  return checksum(bytes, 0);
}

/** Awaits every promise, then rethrows the first failure (so no write is left running). */
async function settleAll(promises: Promise<void>[]): Promise<void> {
  const results = await Promise.allSettled(promises);
  for (const r of results) if (r.status === 'rejected') throw r.reason;
}
