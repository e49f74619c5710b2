// open(dir) → Store: the one public way into atomio.
//
// Opening takes these steps:
//   1. lock the directory (one owner per store, across processes);
//   2. open the medium: DIR/atomio.data, or the block device named by `device`;
//   3. read both superblock copies and keep the valid one with the highest generation,
//      or format a new store when the medium is empty;
//   4. recover: load the checkpoint and replay the log written after it.

import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { assert } from '../base/assert.js';
import { systemClock, type Clock } from '../base/clock.js';
import { AtomioError } from '../base/errors.js';
import { BlockDevice } from '../block/block.js';
import { Engine, type Durability, type RecoveryReport, type SnapshotState } from '../engine/engine.js';
import { KvPool } from '../kv/pool.js';
import { checkOptionsObject, checkPoolName, faceNameOf, facePoolName, isReservedPoolName } from '../kv/encoding.js';
import { Region, type RegionOptions } from '../region/region.js';
import { Stream } from '../stream/stream.js';
import {
  DEFAULT_CACHE_BYTES,
  DEFAULT_CAPACITY_BYTES,
  DEFAULT_FLUSH_INTERVAL_MS,
  MAX_VALUE_BYTES,
  DEFAULT_SEGMENT_BYTES,
  MAX_SEGMENT_BYTES,
  MAX_SEGMENTS,
  MIN_SEGMENT_BYTES,
} from '../engine/limits.js';
import { recover } from '../engine/recovery.js';
import {
  FORMAT_VERSION,
  SEGMENTS_OFFSET,
  SUPERBLOCK_BYTES,
  decodeSuperblock,
  encodeSuperblock,
  type Superblock,
} from '../log/format.js';
import { directoryEntries } from '../media/directory.js';
import { ensureDirectory, openFileMedia } from '../media/file.js';
import { acquireStoreLock, type StoreLock } from '../media/lock.js';
import type { Media } from '../media/media.js';
import { takeSnapshot } from '../engine/snapshots.js';
import { AtomicBatch } from './atomic.js';
import { Snapshot, type SnapshotInfo } from './snapshot.js';
import { runTransaction, type Transaction, type TransactionOptions } from './transaction.js';

export const DATA_FILE_NAME = 'atomio.data';
const MIN_SEGMENTS = 8;

export interface OpenOptions {
  /** Bytes the data file may ever take (fixed at creation). Default 1 GiB. Not allocated up front. */
  capacity?: number;
  /** 512 or 4096 (fixed at creation). Default 512. */
  sectorSize?: 512 | 4096;
  /** Bytes per segment, the unit of cleaning (fixed at creation). Default 16 MiB. */
  segmentSize?: number;
  /** Put the log on this existing block device instead of DIR/atomio.data. */
  device?: string;
  /**
   * 'full' (default): a write resolves once it is on stable storage. 'none': writes resolve
   * once handed to the OS, which is flushed every `flushIntervalMs` and on close; a crash
   * may lose the last interval (never half a commit).
   */
  durability?: Durability;
  flushIntervalMs?: number;
  /** Log bytes written between checkpoints; bounds how much an open replays. Default min(64 MiB, capacity / 4). */
  checkpointIntervalBytes?: number;
  /** Bytes of memory for copies of hot kv values (served without a read). Default 64 MiB. */
  cacheSize?: number;
  /**
   * true (default): while commits come one at a time (each waiting for the one before) and
   * nothing else reaches the store meanwhile, a commit's write is made on the event loop's
   * thread, blocking it for that write, which saves two hand-offs to an I/O thread. So is any
   * batch of at most 4 KiB while no other is being written, unless such writes are slow.
   * false: every write goes to an I/O thread.
   */
  inlineWrites?: boolean;
  /**
   * true (default): a read of at most 128 KiB from the medium is made on the event loop's
   * thread while such reads are fast (served from the OS's page cache), which saves two
   * hand-offs to an I/O thread; once they are slow (reaching the device), reads go to I/O
   * threads, with a rare look inline. false: every read goes to an I/O thread.
   */
  inlineReads?: boolean;
  /**
   * true: before open returns, write zeros over every part of the data file no segment has
   * used yet (once: a file whose blocks all exist is left alone), so that no later flush also
   * commits the file system's allocation of new blocks. Small durable writes get faster
   * (about a third more 4 KiB writes at 64 in flight here); open takes about a second per GiB
   * the first time. Default false: the file grows as segments are first used, each zero-filled
   * just ahead of its use while commits are small.
   */
  preallocate?: boolean;
  /** Time source for TTLs; tests pass a ManualClock. */
  clock?: Clock;
  /** A medium to use instead of a file (tests pass a FaultMedia). */
  media?: Media;
}

export interface StoreStats {
  capacity: number;
  /** The most live data the store accepts before writes fail with ERR_NO_SPACE. */
  usableBytes: number;
  /** Bytes of segments in use (not free). */
  bytesUsed: number;
  liveBytes: number;
  segmentBytes: number;
  segments: number;
  freeSegments: number;
  /** Free segments kept back for the next checkpoint and for the cleaner: commits that grow the store leave them free. */
  reserveSegments: number;
  /** Media bytes written per user data byte, since open (includes headers, padding, cleaning, checkpoints). */
  writeAmplification: number;
  /** (user + cleaner bytes) / user bytes since open: the cleaner's share alone. */
  cleanerAmplification: number;
  eraseCounts: { min: number; mean: number; max: number };
  commits: number;
  flushes: number;
  commitsPerFlush: number;
  checkpoints: number;
  /** Media bytes written by checkpoints since open (part of writeAmplification). */
  checkpointBytes: number;
  segmentsCleaned: number;
  mappedExtents: number;
  expiredBytesReclaimed: number;
  lastRecovery: RecoveryReport | undefined;
}

export interface StoreLimits {
  /** Largest kv value on this store: MAX_VALUE_BYTES, or less when a segment holds less. */
  maxValueBytes: number;
  /** Most data bytes of one block atomic commit on this store. */
  maxAtomicBytes: number;
}

export class Store implements AsyncDisposable {
  /** The block face: sectors, atomic vectored writes, conditions, TTL. */
  readonly block: BlockDevice;
  readonly limits: StoreLimits;
  private readonly kvPools = new Map<string, KvPool>();
  private readonly streamFaces = new Map<string, Stream>();
  /** Drops of streams under way, by name: a stream made meanwhile would continue the dropped one. */
  private readonly streamDrops = new Map<string, Promise<void>>();
  private readonly regionFaces = new Map<string, Promise<Region>>();
  /** Drops of regions under way, by name: a region loaded meanwhile would read what is being dropped. */
  private readonly regionDrops = new Map<string, Promise<void>>();

  private constructor(
    readonly directory: string,
    private readonly engine: Engine,
    private readonly lock: StoreLock,
  ) {
    this.block = new BlockDevice(engine);
    // A value must fit one record with the largest key and a pool's creation beside it.
    this.limits = { maxValueBytes: Math.min(MAX_VALUE_BYTES, engine.maxRecordBytes - 8192), maxAtomicBytes: this.block.maxAtomicBytes };
  }

  /**
   * The kv pool `name` (created by its first write).
   * @example await store.kv('users').put('alice', '{"age":31}');
   */
  kv(name = 'default'): KvPool {
    let pool = this.kvPools.get(name);
    if (pool === undefined) {
      pool = new KvPool(this.engine, checkPoolName(name), this.limits.maxValueBytes);
      this.kvPools.set(name, pool);
    }
    return pool;
  }

  /** Names of the kv pools that exist, in byte order (streams and regions are listed apart). */
  pools(): string[] {
    this.engine.assertOpen();
    return byteOrder([...this.engine.pools.byName.keys()].filter((name) => !isReservedPoolName(name)));
  }

  /**
   * The stream `name`: an append-only log with durable group-committed appends (created by
   * its first append). The same object for the same name while the store is open.
   * @example const seq = await store.stream('events').append('{"type":"login"}');
   */
  stream(name: string): Stream {
    this.engine.assertOpen();
    if (this.streamDrops.has(name)) {
      throw new AtomioError('ERR_CLOSED', `stream '${name}' is being dropped; once store.dropStream('${name}') has resolved, store.stream('${name}') makes a new one`, { name });
    }
    let stream = this.streamFaces.get(name);
    if (stream === undefined) {
      stream = new Stream(this.engine, name, facePoolName('stream', name), this.limits.maxValueBytes);
      this.streamFaces.set(name, stream);
    }
    return stream;
  }

  /** Names of the streams that exist (have or had records), in byte order. */
  streams(): string[] {
    return this.faceNames('stream');
  }

  /**
   * Removes a stream and every record in it, once the appends in flight have settled; their
   * space returns. Handles on it end at once (appends made after the call and followers get
   * ERR_CLOSED), and so does store.stream(name) until the drop resolves; then it starts a
   * new stream from sequence number 1.
   */
  async dropStream(name: string): Promise<void> {
    this.engine.assertOpen();
    await listedUntilSettled(this.streamDrops, name, this.dropStreamNow(name, facePoolName('stream', name)));
  }

  private async dropStreamNow(name: string, pool: string): Promise<void> {
    const stream = this.streamFaces.get(name);
    if (stream !== undefined) {
      this.streamFaces.delete(name);
      // Appends made before the call go on to settle; later ones would only land to be dropped.
      const settling = stream.settled();
      stream.close(new AtomioError('ERR_CLOSED', `stream '${name}' was dropped; store.stream('${name}') makes a new one`, { name }));
      await settling;
    }
    await this.engine.commit([{ type: 'dropPool', pool }], [], 0);
  }

  /**
   * The region `name`: memory that survives crashes as versions. Created with `size` bytes
   * (zeros) when new; loaded as its newest committed version when it exists. One object
   * per name while the store is open (the options must agree).
   * @example const r = await store.region('state', { size: 1 << 20 }); r.buffer[0] = 1; await r.commit();
   */
  region(name: string, options: RegionOptions = {}): Promise<Region> {
    try {
      this.engine.assertOpen();
      const pool = facePoolName('region', name);
      const dropping = this.regionDrops.get(name);
      if (dropping !== undefined) {
        const again = (): Promise<Region> => this.region(name, options);
        return dropping.then(again, again);
      }
      let loading = this.regionFaces.get(name);
      if (loading === undefined) {
        loading = Region.load(this.engine, name, pool, options, { maxValueBytes: this.limits.maxValueBytes, maxAtomicBytes: this.limits.maxAtomicBytes });
        this.regionFaces.set(name, loading);
        loading.catch(() => {
          if (this.regionFaces.get(name) === loading) this.regionFaces.delete(name);
        });
        return loading;
      }
      return loading.then((region) => {
        if (!region.matches(options)) {
          throw new AtomioError('ERR_ARGUMENT', `region '${name}' is open with other options (size ${region.size}, pageSize ${region.pageSize}, mode '${region.mode}', track '${region.track}')`, { name });
        }
        return region;
      });
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /** Names of the regions that exist (committed at least once), in byte order. */
  regions(): string[] {
    return this.faceNames('region');
  }

  /**
   * Removes a region, every version of it, once its commits in flight have settled; handles on
   * it end. store.region(name) called meanwhile waits for the drop and makes a new region.
   */
  async dropRegion(name: string): Promise<void> {
    this.engine.assertOpen();
    await listedUntilSettled(this.regionDrops, name, this.dropRegionNow(name, facePoolName('region', name)));
  }

  private async dropRegionNow(name: string, pool: string): Promise<void> {
    const loading = this.regionFaces.get(name);
    if (loading !== undefined) {
      this.regionFaces.delete(name);
      const region = await loading.catch(() => undefined);
      if (region !== undefined) {
        await region.settled();
        region.close(new AtomioError('ERR_CLOSED', `region '${name}' was dropped; store.region('${name}', { size }) makes a new one`, { name }));
      }
    }
    await this.engine.commit([{ type: 'dropPool', pool }], [], 0);
  }

  private faceNames(face: 'stream' | 'region'): string[] {
    this.engine.assertOpen();
    const names: string[] = [];
    for (const pool of this.engine.pools.byName.keys()) {
      const name = faceNameOf(face, pool);
      if (name !== undefined) names.push(name);
    }
    return byteOrder(names);
  }

  /** Removes a pool and every key in it; their space returns. Resolves with the commit's version. */
  dropPool(name: string): Promise<number> {
    try {
      this.engine.assertOpen();
      return this.engine.commit([{ type: 'dropPool', pool: checkPoolName(name) }], [], 0);
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /**
   * A read-only view of every pool and the block face as they are now, cheap to take. The
   * data it sees stays readable (the cleaner keeps it) until release(). With a name the
   * snapshot is durable when this resolves and kept across reopen until deleteSnapshot().
   * @example const snap = await store.snapshot(); snap.kv('users').getSync('alice'); snap.release();
   */
  async snapshot(options: { name?: string } = {}): Promise<Snapshot> {
    this.engine.assertOpen();
    checkOptionsObject(options, 'snapshot');
    const name = options.name === undefined ? undefined : checkPoolName(options.name);
    if (name === undefined) return new Snapshot(this.engine, takeSnapshot(this.engine, undefined), this.limits.maxValueBytes);
    if (this.engine.snapshots.has(name)) throw snapshotExists(name);
    let state: SnapshotState | undefined;
    let written: Promise<void> | undefined;
    // Taken between batches and written into a checkpoint before it resolves: durable. The
    // checkpoint is written behind the commits that follow, which do not wait for it.
    await this.engine.exclusive(() => {
      // Checked again: another call for the name may have been queued first.
      if (this.engine.snapshots.has(name)) throw snapshotExists(name);
      const taken = takeSnapshot(this.engine, name);
      this.engine.snapshots.set(name, taken);
      written = this.engine.checkpointBehindCommits(() => {
        this.engine.snapshots.delete(name);
        // A handle opened meanwhile must not read segments no longer pinned for it.
        taken.released = true;
        this.engine.unpin(taken.pin);
      });
      state = taken;
      return Promise.resolve();
    });
    await written;
    return new Snapshot(this.engine, state!, this.limits.maxValueBytes);
  }

  /** A handle on a named snapshot (taken before, maybe before a reopen). */
  openSnapshot(name: string): Snapshot {
    this.engine.assertOpen();
    const state = this.engine.snapshots.get(name);
    if (state === undefined) throw new AtomioError('ERR_ARGUMENT', `there is no snapshot named '${String(name)}'; store.snapshots() lists them`, { name });
    return new Snapshot(this.engine, state, this.limits.maxValueBytes);
  }

  /** The named snapshots, oldest first. */
  snapshots(): SnapshotInfo[] {
    this.engine.assertOpen();
    return [...this.engine.snapshots.values()]
      .map((s) => ({ name: s.name!, version: s.version, createdAt: s.createdAt }))
      .sort((a, b) => a.version - b.version || Buffer.compare(Buffer.from(a.name), Buffer.from(b.name)));
  }

  /** Deletes a named snapshot; the space only it held returns. Resolves once durable. */
  async deleteSnapshot(name: string): Promise<void> {
    this.engine.assertOpen();
    if (!this.engine.snapshots.has(name)) {
      throw new AtomioError('ERR_ARGUMENT', `there is no snapshot named '${String(name)}'; store.snapshots() lists them`, { name });
    }
    let written: Promise<void> | undefined;
    // As snapshot(): the checkpoint that makes the deletion durable is written behind the
    // commits that follow, and the snapshot's segments are unpinned once it is.
    await this.engine.exclusive(() => {
      const state = this.engine.snapshots.get(name);
      if (state === undefined) return Promise.resolve();
      this.engine.snapshots.delete(name);
      written = this.engine.checkpointBehindCommits(() => this.engine.snapshots.set(name, state));
      written.then(
        () => {
          state.released = true;
          this.engine.unpin(state.pin);
          // The space only it held comes back (when no batch is being written; else at the next maintenance).
          this.engine.reclaimEmpty();
        },
        () => undefined, // the caller sees the error from `await written`
      );
      return Promise.resolve();
    });
    await written;
  }

  /**
   * One commit of kv ops (any pools) and block ops, with checks: all or nothing.
   * @example const r = await store.atomic().check('acct', 'a', v).put('acct', 'a', '90').put('acct', 'b', '110').commit();
   */
  atomic(): AtomicBatch {
    this.engine.assertOpen();
    return new AtomicBatch(this.engine, this.block, this.limits.maxValueBytes);
  }

  /**
   * Runs `fn` as an optimistic, serializable transaction over kv and block; re-runs it when
   * what it read changed before it committed (up to `retries`, then ERR_CONFLICT).
   * @example await store.transaction(async (tx) => { const n = Number(await tx.get('c', 'n') ?? 0); tx.put('c', 'n', String(n + 1)); });
   */
  transaction<T>(fn: (tx: Transaction) => Promise<T> | T, options: TransactionOptions = {}): Promise<T> {
    try {
      this.engine.assertOpen();
      return runTransaction(this.engine, this.block, this.limits.maxValueBytes, fn, options);
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /** @internal use open() */
  static async open(directory: string, options: OpenOptions = {}): Promise<Store> {
    checkOptionsObject(options, 'open');
    const dir = path.resolve(directory);
    const entries = await directoryEntries(dir);
    if (entries !== undefined && entries.length > 0 && !entries.includes(DATA_FILE_NAME) && !options.device && !options.media) {
      throw new AtomioError(
        'ERR_FORMAT',
        `${dir} is not an atomio store (it has no ${DATA_FILE_NAME}) and is not empty; choose an empty or new directory`,
        { path: dir },
      );
    }
    await ensureDirectory(dir);
    const lock = await acquireStoreLock(dir);
    let media: Media | undefined;
    try {
      const opened = await openMedium(dir, options);
      media = opened.media;
      const engine = new Engine({
        media,
        superblock: opened.superblock,
        clock: options.clock ?? systemClock,
        durability: options.durability ?? 'full',
        flushIntervalMs: options.flushIntervalMs ?? DEFAULT_FLUSH_INTERVAL_MS,
        checkpointIntervalBytes: options.checkpointIntervalBytes ?? Math.min(64 * 1024 * 1024, Math.max(4 * opened.superblock.segmentBytes, opened.superblock.capacity / 4)),
        cacheBytes: checkCacheSize(options.cacheSize),
        inlineWrites: checkFlag(options.inlineWrites, 'inlineWrites') ?? true,
        inlineReads: checkFlag(options.inlineReads, 'inlineReads') ?? true,
      });
      await recover(engine);
      if (checkFlag(options.preallocate, 'preallocate') === true) await engine.preallocate();
      await engine.fillFirstHead();
      return new Store(dir, engine, lock);
    } catch (error) {
      await media?.close().catch(() => undefined);
      await lock.release();
      throw error;
    }
  }

  /** Numbers that describe space, wear, commits and the last recovery. */
  stats(): StoreStats {
    const e = this.engine;
    const c = e.counters;
    const free = e.segments.freeCount();
    return {
      capacity: e.superblock.capacity,
      usableBytes: e.usableBytes(),
      bytesUsed: (e.segments.count - free) * e.segmentBytes,
      liveBytes: e.segments.liveBytes(),
      segmentBytes: e.segmentBytes,
      segments: e.segments.count,
      freeSegments: free,
      reserveSegments: e.reserveSegments(),
      writeAmplification: c.userBytes === 0 ? 0 : c.mediaBytes / c.userBytes,
      cleanerAmplification: c.userBytes === 0 ? 0 : (c.userBytes + c.cleanerBytes) / c.userBytes,
      eraseCounts: e.segments.eraseCounts(),
      commits: c.commits,
      flushes: c.flushes,
      commitsPerFlush: c.flushes === 0 ? 0 : c.commits / c.flushes,
      checkpoints: c.checkpoints,
      checkpointBytes: c.checkpointBytes,
      segmentsCleaned: c.segmentsCleaned,
      mappedExtents: e.map.size,
      expiredBytesReclaimed: c.expiredBytes + e.pools.expiredBytes,
      lastRecovery: e.recovery,
    };
  }

  /** 'full': writes resolve once durable. 'none': once handed to the OS (see OpenOptions). */
  get durability(): Durability {
    return this.engine.durability;
  }

  /**
   * Makes every write that resolved before the call durable. With durability 'full' they
   * already are; with 'none' this flushes the medium.
   */
  flush(): Promise<void> {
    return this.engine.flush();
  }

  /** Writes a checkpoint now, so that the next open replays nothing written before it. */
  async checkpoint(): Promise<void> {
    await this.engine.exclusive(() => this.engine.checkpoint());
  }

  /** Waits for queued commits, makes everything durable, writes a checkpoint and unlocks. */
  async close(): Promise<void> {
    if (this.engine.isClosed) return;
    try {
      await this.engine.close();
    } finally {
      const closed = new AtomioError('ERR_CLOSED', 'the store is closed; open it again to use it', {});
      for (const stream of this.streamFaces.values()) stream.close(closed);
      for (const loading of this.regionFaces.values()) void loading.then((region) => region.close(closed), () => undefined);
      await this.lock.release();
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

/**
 * Opens a store, creating it when the directory is new or empty.
 * @example
 *   const store = await open('./data');
 *   await store.block.write(0, Buffer.alloc(512, 7));
 *   await store.close();
 */
export function open(directory: string, options: OpenOptions = {}): Promise<Store> {
  return Store.open(directory, options);
}

async function openMedium(dir: string, options: OpenOptions): Promise<{ media: Media; superblock: Superblock }> {
  const capacity = options.capacity ?? DEFAULT_CAPACITY_BYTES;
  const target = options.device ?? path.join(dir, DATA_FILE_NAME);
  let media: Media = options.media ?? (await openFileMedia(target, { size: capacity, create: true }));
  let superblock = await readSuperblock(media, target);
  if (superblock !== undefined && !options.media && superblock.capacity !== media.size) {
    await media.close();
    media = await openFileMedia(target, { size: superblock.capacity, create: false });
  }
  if (superblock === undefined) superblock = await format(media, options);
  return { media, superblock };
}

async function readSuperblock(media: Media, where: string): Promise<Superblock | undefined> {
  const copies = Buffer.alloc(SUPERBLOCK_BYTES * 2);
  await media.read(copies, 0);
  if (copies.every((b) => b === 0)) return undefined;
  let best: Superblock | undefined;
  let newer: number | undefined;
  for (let i = 0; i < 2; i++) {
    const d = decodeSuperblock(copies.subarray(i * SUPERBLOCK_BYTES, (i + 1) * SUPERBLOCK_BYTES));
    if (d.ok) {
      if (best === undefined || d.superblock.generation > best.generation) best = d.superblock;
    } else if (d.reason === 'newer-format') {
      newer = d.formatVersion;
    }
  }
  if (best !== undefined) return best;
  if (newer !== undefined) {
    throw new AtomioError(
      'ERR_FORMAT',
      `${where} was written by a newer atomio (format ${newer}; this one reads up to ${FORMAT_VERSION}); upgrade atomio`,
      { formatVersion: newer },
    );
  }
  throw new AtomioError('ERR_FORMAT', `${where} is not an atomio store (no valid superblock)`, { path: where });
}

async function format(media: Media, options: OpenOptions): Promise<Superblock> {
  const sectorBytes = options.sectorSize ?? 512;
  if (sectorBytes !== 512 && sectorBytes !== 4096) {
    throw new AtomioError('ERR_ARGUMENT', `sectorSize must be 512 or 4096, got ${String(sectorBytes)}`, {});
  }
  const segmentBytes = options.segmentSize ?? Math.min(DEFAULT_SEGMENT_BYTES, defaultSegmentFor(media.size));
  if (
    !Number.isSafeInteger(segmentBytes) ||
    segmentBytes < MIN_SEGMENT_BYTES ||
    segmentBytes > MAX_SEGMENT_BYTES ||
    segmentBytes % 4096 !== 0
  ) {
    throw new AtomioError(
      'ERR_ARGUMENT',
      `segmentSize must be a multiple of 4096 between ${MIN_SEGMENT_BYTES} and ${MAX_SEGMENT_BYTES}, got ${String(segmentBytes)}`,
      {},
    );
  }
  const segmentCount = Math.floor((media.size - SEGMENTS_OFFSET) / segmentBytes);
  if (segmentCount > MAX_SEGMENTS) {
    throw new AtomioError(
      'ERR_ARGUMENT',
      `capacity ${media.size} holds ${segmentCount} segments of ${segmentBytes} bytes; at most ${MAX_SEGMENTS} are supported: use a larger segmentSize`,
      { capacity: media.size, segmentBytes },
    );
  }
  if (segmentCount < MIN_SEGMENTS) {
    throw new AtomioError(
      'ERR_ARGUMENT',
      `capacity ${media.size} holds ${segmentCount} segments of ${segmentBytes} bytes; at least ${MIN_SEGMENTS} are needed`,
      { capacity: media.size, segmentBytes },
    );
  }
  const base: Superblock = {
    formatVersion: FORMAT_VERSION,
    generation: 0,
    storeId: randomBytes(16),
    sectorBytes,
    segmentBytes,
    segmentCount,
    capacity: media.size,
    checkpoint: { seq: 0, firstSegment: -1, payloadBytes: 0 },
  };
  await media.write(encodeSuperblock(base), 0);
  const current = { ...base, generation: 1 };
  await media.write(encodeSuperblock(current), SUPERBLOCK_BYTES);
  await media.flush();
  assert(current.segmentCount >= MIN_SEGMENTS, 'formatted store has enough segments');
  return current;
}

function checkCacheSize(bytes: number | undefined): number {
  if (bytes === undefined) return DEFAULT_CACHE_BYTES;
  if (!Number.isSafeInteger(bytes) || bytes < 0) {
    throw new AtomioError('ERR_ARGUMENT', `cacheSize is a number of bytes >= 0, got ${String(bytes)}`, {});
  }
  return bytes;
}

function checkFlag(value: boolean | undefined, name: string): boolean | undefined {
  if (value !== undefined && typeof value !== 'boolean') {
    throw new AtomioError('ERR_ARGUMENT', `${name} is true or false, got ${String(value)}`, {});
  }
  return value;
}

function byteOrder(names: string[]): string[] {
  return names.sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
}

/** Small stores get smaller segments so that the cleaner has enough of them to choose from. */
function defaultSegmentFor(capacity: number): number {
  let bytes = DEFAULT_SEGMENT_BYTES;
  while (bytes > MIN_SEGMENT_BYTES && capacity / bytes < 64) bytes /= 2;
  return bytes;
}

/** Waits for `work`, kept in `list` under `name` until it settles. */
async function listedUntilSettled(list: Map<string, Promise<void>>, name: string, work: Promise<void>): Promise<void> {
  list.set(name, work);
  try {
    await work;
  } finally {
    if (list.get(name) === work) list.delete(name);
  }
}

function snapshotExists(name: string): AtomioError {
  return new AtomioError('ERR_ARGUMENT', `a snapshot named '${name}' exists; open it with store.openSnapshot('${name}') or delete it first`, { name });
}
