// The region face: a named piece of memory that survives crashes as versions.
//
// An application mutates `region.buffer` in place and calls commit(): the pages that
// changed since the last commit are written, with a record of the new version, as one
// atomic commit of the engine (one record, one CRC). After a crash the region opens as the
// last version that committed, never a mix of two. Older versions stay readable until a
// retention policy lets them go; their pages are then deleted and the space returns.
//
// Dirty pages are found by comparing the buffer with a shadow copy of what is committed
// (track 'compare', the default: exact, and costs a second copy of the buffer and a
// memory compare per commit), or are declared with markDirty() (track 'mark': no copy, but
// a change not marked is not committed). Either way markDirty() lets commit({ scan: false })
// skip the compare. Regions larger than MAX_REGION_BUFFER_BYTES are opened 'paged': no
// buffer, pages are read and written one by one (readPage / writePage), and only pages
// written cost anything, in the store and in memory.
//
// Layout in the region's reserved kv pool: see keys.ts. Versions are numbered 1, 2, 3 … by
// a CommitSequence (src/kv/sequence.ts), in call order: a commit issued while the one
// before it is in flight carries the condition that its version key exists, so that a
// failed commit takes those queued behind it down too (each of which captured the buffer
// relative to it) and pages of a failed commit are marked dirty again.
//
// Invariants:
// - shadow (track 'compare') holds, per page, what the last commit issued captured, or a
//   page is in `marks` (to be written whatever the compare says);
// - `versions` lists the committed versions still kept, ascending; its last is `version`;
// - a stored page version is kept while some kept version needs it (retention.ts).

import { AtomioError } from '../base/errors.js';
import type { Condition, Engine, OpInput } from '../engine/engine.js';
import { MAX_ATOMIC_OPS } from '../engine/limits.js';
import { describe } from '../kv/encoding.js';
import { KvPool } from '../kv/pool.js';
import { CommitSequence, type Issue, type Sent } from '../kv/sequence.js';
import { kvEntryBytes } from '../log/format.js';
import {
  META_KEY,
  PAGES_END,
  PAGES_START,
  PAGE_KEY_BYTES,
  PAGE_PREFIX_BYTES,
  VERSIONS_END,
  VERSIONS_START,
  VERSION_KEY_BYTES,
  decodeMeta,
  decodeVersion,
  encodeMeta,
  encodeVersion,
  pageKey,
  pageOf,
  pagePrefix,
  pageVersionOf,
  writePageKey,
  writePagePrefix,
  versionKey,
  versionOf,
  type Meta,
  type Retention,
  type VersionRecord,
} from './keys.js';
import { ceiling, keptVersions, pageVersionNeeded, unneededAfterDrop } from './retention.js';

export type { Retention as RegionRetention } from './keys.js';

/** The largest region held in memory as one buffer; larger ones are opened 'paged'. */
export const MAX_REGION_BUFFER_BYTES = 1024 * 1024 * 1024;
export const DEFAULT_PAGE_SIZE = 4096;
export const MIN_PAGE_SIZE = 512;
export const MAX_PAGE_SIZE = 1024 * 1024;
/** Pages: u32 page numbers in keys. */
const MAX_PAGES = 2 ** 32;
/** Log bytes a delete takes, about (an op descriptor and its key): what bounds the deletes a commit carries. */
const DELETE_BYTES = 64;
/** Listed versions a commit's retention looks back through for a page's older version before it searches the index. */
const RETENTION_LOOKBACK_VERSIONS = 64;
/**
 * The largest copy of captured pages kept for the next commit. A fresh 64 KiB buffer per
 * commit is memory outside the heap that V8 answers with collections (about 7% of a
 * commit of 16 pages); larger copies are rare and not worth holding on to.
 */
const SPARE_COPY_BYTES = 1024 * 1024;
/** Reads in flight while a region (or an old version of it) is loaded. */
const LOAD_READS_IN_FLIGHT = 64;

export interface RegionOptions {
  /** Bytes (needed to create the region; when given for an existing one it must match). */
  size?: number;
  /** Bytes per page: a power of two from 512 to 1 MiB (fixed at creation). Default 4096. */
  pageSize?: number;
  /** 'buffer' (default): the region in memory as `buffer`. 'paged': readPage / writePage only. */
  mode?: 'buffer' | 'paged';
  /** How a 'buffer' region finds dirty pages: 'compare' (default) with a shadow copy, or 'mark': only markDirty(). */
  track?: 'compare' | 'mark';
}

export interface CommitOptions {
  /** Compare the buffer with the shadow copy to find dirty pages (default: true for track 'compare'). */
  scan?: boolean;
}

export interface RegionVersion {
  version: number;
  /** ms since the epoch (store clock) when it was committed. */
  committedAt: number;
  /** Pages the commit wrote. */
  pages: number;
}

export interface RegionStats {
  version: number;
  versions: number;
  /** Page versions stored (all kept versions together). */
  storedPages: number;
  /** Bytes the region takes in its pool (keys and values). */
  bytes: number;
  /** Pages marked or staged for the next commit (a 'compare' region may have more). */
  markedPages: number;
  inFlight: number;
}

/** The pages of one commit, as captured. */
interface Captured {
  /** Ascending; kept as the version's record once it lands (never changed). */
  pages: Uint32Array;
  /** Bytes of each page (empty: zeros). */
  contents: Uint8Array[];
  /** 'buffer': the copy `contents` views, which the region takes back once the commit settles. */
  copy?: Buffer | undefined;
}

const EMPTY = Buffer.alloc(0);

export class Region {
  readonly pageCount: number;
  private readonly pool: KvPool;
  private readonly sequence: CommitSequence;
  private readonly mem: Buffer | undefined;
  private readonly shadow: Buffer | undefined;
  /** Pages to write at the next commit whatever the compare finds (markDirty, failed commits). */
  private readonly marks = new Set<number>();
  /** 'paged': pages written and not yet committed, and pages of commits in flight. */
  private readonly staged = new Map<number, Buffer>();
  private readonly flying = new Map<number, Buffer>();
  private readonly zeroPage: Buffer;
  /** A copy buffer a settled commit gave back (see SPARE_COPY_BYTES). */
  private spareCopy: Buffer | undefined;
  /** Scratch bounds of storedBelow's searches. */
  private readonly seekStart = Buffer.alloc(PAGE_KEY_BYTES);
  private readonly seekEnd = Buffer.alloc(PAGE_PREFIX_BYTES);
  private readonly seekFound = Buffer.alloc(PAGE_KEY_BYTES);
  /** 'buffer': per page, the newest version stored (0: none), for VersionRecord.older. */
  private readonly lastWriter: Float64Array | undefined;
  private versionList: VersionRecord[];
  private metaPersisted: boolean;
  private lastCommit: Promise<number> | undefined;
  private sweeping: Promise<void> = Promise.resolve();
  private sweepQueued = false;
  private closedError: AtomioError | undefined;

  private constructor(
    private readonly engine: Engine,
    readonly name: string,
    private readonly poolName: string,
    private meta: Meta,
    metaPersisted: boolean,
    versions: VersionRecord[],
    readonly mode: 'buffer' | 'paged',
    readonly track: 'compare' | 'mark',
    private readonly maxCommitBytes: number,
    maxValueBytes: number,
  ) {
    this.pool = new KvPool(engine, poolName, maxValueBytes);
    this.metaPersisted = metaPersisted;
    this.versionList = versions;
    this.pageCount = Math.ceil(meta.size / meta.pageSize);
    this.zeroPage = Buffer.alloc(meta.pageSize);
    const last = versions.length === 0 ? 0 : versions[versions.length - 1]!.version;
    this.sequence = new CommitSequence(last + 1);
    if (mode === 'buffer') {
      this.mem = Buffer.alloc(meta.size);
      this.lastWriter = new Float64Array(this.pageCount);
      if (track === 'compare') this.shadow = Buffer.alloc(meta.size);
    }
  }

  /** @internal use store.region(name, options) */
  static async load(
    engine: Engine,
    name: string,
    poolName: string,
    options: RegionOptions,
    limits: { maxValueBytes: number; maxAtomicBytes: number },
  ): Promise<Region> {
    const o = checkOptions(options);
    const pool = new KvPool(engine, poolName, limits.maxValueBytes);
    const stored = pool.getSync(META_KEY);
    let meta: Meta;
    if (stored !== undefined) {
      meta = decodeMeta(stored);
      if (o.size !== undefined && o.size !== meta.size) {
        throw new AtomioError('ERR_ARGUMENT', `region '${name}' has size ${meta.size}, not ${o.size}; a region's size is fixed at creation`, { size: meta.size });
      }
      if (o.pageSize !== undefined && o.pageSize !== meta.pageSize) {
        throw new AtomioError('ERR_ARGUMENT', `region '${name}' has pages of ${meta.pageSize} bytes, not ${o.pageSize}`, { pageSize: meta.pageSize });
      }
    } else {
      if (o.size === undefined) throw new AtomioError('ERR_ARGUMENT', `region '${name}' does not exist; give its size to create it`, { name });
      meta = { size: o.size, pageSize: o.pageSize ?? DEFAULT_PAGE_SIZE, retention: { count: 0, age: 0 } };
    }
    const pageSize = meta.pageSize;
    if (meta.pageSize > limits.maxValueBytes) throw new AtomioError('ERR_LIMIT', `pages of ${pageSize} bytes are larger than a value may be on this store`, {});
    const mode = o.mode ?? 'buffer';
    if (mode === 'buffer' && meta.size > MAX_REGION_BUFFER_BYTES) {
      throw new AtomioError(
        'ERR_LIMIT',
        `region '${name}' of ${meta.size} bytes is larger than a buffer may be (MAX_REGION_BUFFER_BYTES = ${MAX_REGION_BUFFER_BYTES}); open it with { mode: 'paged' }`,
        { size: meta.size, limit: MAX_REGION_BUFFER_BYTES },
      );
    }
    const versions: VersionRecord[] = [];
    for await (const e of pool.list({ start: VERSIONS_START, end: VERSIONS_END })) versions.push(decodeVersion(versionOf(e.key), e.value));
    const region = new Region(engine, name, poolName, meta, stored !== undefined, versions, mode, o.track ?? 'compare', limits.maxAtomicBytes, limits.maxValueBytes);
    if (mode === 'buffer') {
      const orphans = await region.materialize(region.version, region.mem!, region.lastWriter);
      region.shadow?.set(region.mem!);
      // Pages a crash left between deleting old versions and their pages: swept later.
      if (orphans > 0) region.scheduleSweep();
    }
    return region;
  }

  // -------------------------------------------------------------------------------------
  // The memory

  /** The region's bytes ('buffer' mode): change them in place, then commit(). */
  get buffer(): Buffer {
    if (this.mem === undefined) {
      throw new AtomioError('ERR_ARGUMENT', `region '${this.name}' is open 'paged': it has no buffer; use readPage() and writePage()`, {});
    }
    return this.mem;
  }

  get size(): number {
    return this.meta.size;
  }

  get pageSize(): number {
    return this.meta.pageSize;
  }

  /** The newest committed version (0: none yet). */
  get version(): number {
    return this.versionList.length === 0 ? 0 : this.versionList[this.versionList.length - 1]!.version;
  }

  /** Declares bytes [offset, offset + length) changed: their pages are written at the next commit. */
  markDirty(offset = 0, length = this.meta.size - offset): void {
    this.checkOpen();
    if (this.mem === undefined) throw new AtomioError('ERR_ARGUMENT', `region '${this.name}' is open 'paged': writePage() stages its pages`, {});
    checkRange(offset, length, this.meta.size);
    if (length === 0) return;
    const first = Math.floor(offset / this.meta.pageSize);
    const last = Math.floor((offset + length - 1) / this.meta.pageSize);
    for (let p = first; p <= last; p++) this.marks.add(p);
  }

  /** Page `index` as it is now (uncommitted changes included): a copy. */
  async readPage(index: number): Promise<Buffer> {
    this.checkOpen();
    const page = this.checkPage(index);
    if (this.mem !== undefined) return Buffer.from(this.mem.subarray(page * this.meta.pageSize, page * this.meta.pageSize + this.pageBytes(page)));
    const pending = this.staged.get(page) ?? this.flying.get(page);
    if (pending !== undefined) return Buffer.from(pending);
    return this.readStoredPage(page, this.version);
  }

  /** Replaces page `index` (all its bytes) for the next commit. */
  writePage(index: number, data: Uint8Array): void {
    this.checkOpen();
    const page = this.checkPage(index);
    if (!(data instanceof Uint8Array) || data.length !== this.pageBytes(page)) {
      throw new AtomioError('ERR_ARGUMENT', `page ${page} holds ${this.pageBytes(page)} bytes; writePage takes exactly that many, not ${describe(data)}${data instanceof Uint8Array ? ` of ${data.length}` : ''}`, {});
    }
    if (this.mem !== undefined) {
      this.mem.set(data, page * this.meta.pageSize);
      this.marks.add(page);
    } else {
      this.staged.set(page, Buffer.from(data));
    }
  }

  private pageBytes(page: number): number {
    return Math.min(this.meta.pageSize, this.meta.size - page * this.meta.pageSize);
  }

  private checkPage(index: number): number {
    if (typeof index !== 'number' || !Number.isSafeInteger(index) || index < 0 || index >= this.pageCount) {
      throw new AtomioError('ERR_ARGUMENT', `a page index of region '${this.name}' is an integer from 0 to ${this.pageCount - 1}, not ${describe(index)}`, {});
    }
    return index;
  }

  // -------------------------------------------------------------------------------------
  // Commits

  /**
   * Writes the dirty pages as a new version, in one atomic commit; resolves with the
   * version once durable. With nothing dirty it writes nothing and resolves with the
   * current version (once a commit in flight has settled). After a crash the region opens
   * as the last version that committed, whole.
   * @example region.buffer.writeUInt32LE(42, 128); const v = await region.commit();
   */
  commit(options: CommitOptions = {}): Promise<number> {
    try {
      this.checkOpen();
      const scan = this.checkScan(options);
      const done = (version: number): number => version;
      let promise: Promise<number>;
      if (this.sequence.draining === undefined) {
        const captured = this.capture(scan);
        // Nothing dirty: the outcome of a commit still in flight, else the version now (a
        // commit that failed earlier is over: its error is not this call's).
        if (captured.pages.length === 0) return this.sequence.inFlight > 0 && this.lastCommit !== undefined ? this.lastCommit : Promise.resolve(this.version);
        promise = this.sequence.run(1, (issue) => this.send(issue, captured, [], [], this.engineCommit), done);
      } else {
        // An earlier commit failed and others are settling: this one waits, and captures then.
        promise = this.sequence.run(1, (issue) => this.send(issue, this.capture(scan), [], [], this.engineCommit), done);
      }
      this.lastCommit = promise;
      promise.catch(() => undefined);
      return promise;
    } catch (error) {
      return Promise.reject(error);
    }
  }

  private readonly engineCommit = (ops: OpInput[], conditions: Condition[]): Promise<number> => this.engine.commit(ops, conditions, 0);

  /**
   * @internal store.atomic().region(): commits the dirty pages with `ops` and `conditions`
   * through `commit` (the engine's, or another region's), in one record. Resolves with the
   * engine's version. Fails at once while an earlier commit of the region is settling after
   * a failure.
   */
  commitInside(ops: OpInput[], conditions: Condition[], commit: (ops: OpInput[], conditions: Condition[]) => Promise<number>): Promise<number> {
    this.checkOpen();
    const captured = this.capture(this.shadow !== undefined);
    if (captured.pages.length === 0) return commit(ops, conditions);
    let engineVersion = 0;
    const { first, promise } = this.sequence.runNow(
      1,
      (issue) => {
        const sent = this.send(issue, captured, ops, conditions, commit);
        sent.promise.then((v) => void (engineVersion = v), () => undefined);
        return sent;
      },
      () => engineVersion,
    );
    this.lastCommit = promise.then(() => first);
    this.lastCommit.catch(() => undefined);
    return promise;
  }

  private checkScan(options: CommitOptions): boolean {
    if (options === null || typeof options !== 'object') throw new AtomioError('ERR_ARGUMENT', `commit options are an object, not ${describe(options)}`, {});
    const scan = options.scan ?? this.shadow !== undefined;
    if (scan && this.shadow === undefined) {
      throw new AtomioError('ERR_ARGUMENT', `region '${this.name}' keeps no shadow copy (track 'mark' or paged): it cannot scan for changes; mark them with markDirty()`, {});
    }
    return scan;
  }

  /**
   * The pages to write now, copied (nothing changes until the commit is sent): a 'buffer'
   * region's pages go into one new buffer, so a commit allocates once whatever its size.
   */
  private capture(scan: boolean): Captured {
    if (this.mem === undefined) {
      // Staged pages are the region's own copies, never changed in place (writePage replaces them).
      const pages = Uint32Array.from(this.staged.keys()).sort();
      return { pages, contents: Array.from(pages, (p) => this.stagedContent(this.staged.get(p)!)) };
    }
    const mem = this.mem;
    const pageSize = this.meta.pageSize;
    let pages: Uint32Array;
    if (scan) {
      const found = diffPages(mem, this.shadow!, pageSize);
      if (this.marks.size > 0) {
        const seen = new Set(found);
        for (const p of this.marks) if (!seen.has(p)) found.push(p);
      }
      pages = Uint32Array.from(found).sort();
    } else {
      // A typed array sorts numbers without a comparator.
      pages = new Uint32Array(this.marks.size);
      let i = 0;
      for (const p of this.marks) pages[i++] = p;
      pages.sort();
    }
    const contents: Uint8Array[] = new Array<Uint8Array>(pages.length);
    let bytes = 0;
    for (let i = 0; i < pages.length; i++) {
      const at = pages[i]! * pageSize;
      const n = this.pageBytes(pages[i]!);
      // mem[at, at + n) against zeros, compared in place (a page with data mostly shows it at an end).
      if (mem[at] === 0 && mem[at + n - 1] === 0 && mem.compare(this.zeroPage, 0, n, at, at + n) === 0) contents[i] = EMPTY;
      else bytes += n;
    }
    let copy: Buffer = EMPTY;
    if (bytes > 0 && this.spareCopy !== undefined && this.spareCopy.length >= bytes) {
      copy = this.spareCopy;
      this.spareCopy = undefined;
    } else if (bytes > 0) {
      copy = Buffer.allocUnsafe(bytes);
    }
    let offset = 0;
    for (let i = 0; i < pages.length; i++) {
      if (contents[i] === EMPTY) continue;
      const at = pages[i]! * pageSize;
      const n = mem.copy(copy, offset, at, at + this.pageBytes(pages[i]!));
      // A plain view: a Buffer's subarray costs a FastBuffer construction per page.
      contents[i] = new Uint8Array(copy.buffer, copy.byteOffset + offset, n);
      offset += n;
    }
    return { pages, contents, copy: bytes === 0 ? undefined : copy };
  }

  /** A staged page as stored: itself, or empty for zeros. */
  private stagedContent(bytes: Buffer): Buffer {
    return bytes.compare(this.zeroPage, 0, bytes.length) === 0 ? EMPTY : bytes;
  }

  /** Sends version issue.first: its pages, its version key, what retention drops, in one commit. */
  private send(issue: Issue, captured: Captured, extraOps: OpInput[], extraConditions: Condition[], commit: (ops: OpInput[], conditions: Condition[]) => Promise<number>): Sent {
    this.checkOpen();
    const version = issue.first;
    const committedAt = this.engine.clock.now();
    const ops: OpInput[] = [...extraOps];
    let bytes = 0;
    for (let i = 0; i < captured.pages.length; i++) {
      // A 'buffer' region holds its pages itself: copies in the value cache would only push hot kv values out.
      // A page key is written once and named by no condition: the engine need not stage it.
      ops.push({ type: 'put', pool: this.poolName, key: pageKey(captured.pages[i]!, version), value: captured.contents[i]!, ttlMs: 0, uncached: this.mem !== undefined, private: true });
      bytes += kvEntryBytes(PAGE_KEY_BYTES, captured.contents[i]!.length);
    }
    const record = encodeVersion(committedAt, captured.pages);
    ops.push({ type: 'put', pool: this.poolName, key: versionKey(version), value: record, ttlMs: 0 });
    bytes += kvEntryBytes(VERSION_KEY_BYTES, record.length);
    if (!this.metaPersisted) ops.push(this.metaPut((m) => m));
    // Retention rides along when nothing is in flight (the index then holds every version
    // before this one) and its deletes fit beside the pages.
    let room = Math.floor((this.maxCommitBytes - bytes) / DELETE_BYTES);
    if (extraOps.length > 0) room = Math.min(room, MAX_ATOMIC_OPS - ops.length);
    const drop = issue.chained ? undefined : this.retentionDeletes(version, captured.pages, committedAt, room);
    if (drop !== undefined) {
      // No condition names a version let go (a chained commit names the one just before it, and carries no retention).
      for (const key of drop.versionKeys) ops.push({ type: 'delete', pool: this.poolName, key, private: true });
      for (const key of drop.pageKeys) ops.push({ type: 'delete', pool: this.poolName, key, private: true });
    }
    if (bytes > this.maxCommitBytes || (extraOps.length > 0 && ops.length > MAX_ATOMIC_OPS)) {
      throw new AtomioError(
        'ERR_LIMIT',
        `a commit of region '${this.name}' would write ${captured.pages.length} pages (${bytes} bytes); one commit holds at most ${this.maxCommitBytes} bytes on this store${extraOps.length > 0 ? ` and an atomic batch ${MAX_ATOMIC_OPS} ops` : ''}: commit more often`,
        { pages: captured.pages.length, bytes, limit: this.maxCommitBytes },
      );
    }
    const conditions = [...extraConditions];
    if (issue.chained) conditions.push({ kind: 'key', pool: this.poolName, key: versionKey(version - 1), expect: 'present' });
    this.take(captured);
    const promise = commit(ops, conditions);
    // Runs before the sequence hears of the outcome (attached first).
    promise.then(
      () => {
        this.committed(version, committedAt, captured, drop?.versions);
        if (drop?.sweep === true) this.scheduleSweep();
      },
      () => this.giveBack(captured),
    );
    // Once the commit has settled, the engine has long encoded (or dropped) the pages: their copy may serve the next commit.
    const reuse = (): void => this.reuseCopy(captured);
    promise.then(reuse, reuse);
    return { promise, chainIndex: issue.chained ? extraConditions.length : undefined };
  }

  /** The commit is on its way: the captured pages are no longer dirty. */
  private take(captured: Captured): void {
    const pageSize = this.meta.pageSize;
    for (let i = 0; i < captured.pages.length; i++) {
      const p = captured.pages[i]!;
      this.marks.delete(p);
      if (this.shadow !== undefined) {
        const at = p * pageSize;
        if (captured.contents[i]!.length === 0) this.shadow.fill(0, at, at + this.pageBytes(p));
        else this.shadow.set(captured.contents[i]!, at);
      }
      if (this.mem === undefined) {
        const staged = this.staged.get(p);
        this.staged.delete(p);
        if (staged !== undefined) this.flying.set(p, staged);
      }
    }
  }

  private reuseCopy(captured: Captured): void {
    const copy = captured.copy;
    if (copy === undefined || copy.length > SPARE_COPY_BYTES) return;
    if (this.spareCopy === undefined || this.spareCopy.length < copy.length) this.spareCopy = copy;
  }

  /** The commit failed: its pages are dirty again (unless written since, for 'paged'). */
  private giveBack(captured: Captured): void {
    for (const p of captured.pages) {
      if (this.mem !== undefined) {
        this.marks.add(p);
        continue;
      }
      const flying = this.flying.get(p);
      this.flying.delete(p);
      if (flying !== undefined && !this.staged.has(p)) this.staged.set(p, flying);
    }
  }

  private committed(version: number, committedAt: number, captured: Captured, dropped: Set<number> | undefined): void {
    this.metaPersisted = true;
    if (this.mem === undefined) for (const p of captured.pages) this.flying.delete(p);
    if (dropped !== undefined && dropped.size > 0) {
      // The steady state lets go of the oldest version alone: no new list for that.
      const oldest = this.versionList[0];
      if (dropped.size === 1 && oldest !== undefined && dropped.has(oldest.version)) this.versionList.shift();
      else this.versionList = this.versionList.filter((v) => !dropped.has(v.version));
    }
    const pages = captured.pages;
    let older: number[] | undefined;
    if (this.lastWriter !== undefined) {
      // Commits land in version order: what each page held before this one is known here.
      // A plain array: a small typed array costs a backing store of its own (about 1 µs).
      older = new Array<number>(pages.length);
      for (let i = 0; i < pages.length; i++) {
        older[i] = this.lastWriter[pages[i]!]!;
        this.lastWriter[pages[i]!] = version;
      }
    }
    this.versionList.push({ version, committedAt, pages, older });
  }

  private metaPut(change: (m: Meta) => Meta): OpInput {
    const base = this.meta;
    return {
      type: 'put',
      pool: this.poolName,
      key: META_KEY,
      value: (current) => encodeMeta(change(current === undefined ? base : { ...decodeMeta(current), size: base.size, pageSize: base.pageSize })),
      ttlMs: 0,
    };
  }

  // -------------------------------------------------------------------------------------
  // Versions

  /** The versions kept, oldest first. */
  versions(): RegionVersion[] {
    this.checkOpen();
    return this.versionList.map((v) => ({ version: v.version, committedAt: v.committedAt, pages: v.pages.length }));
  }

  /**
   * A read-only copy of a kept version (default: the newest). For a 'buffer' region the
   * copy is made now, whole (`view.buffer`); for a 'paged' one pages are read on demand and
   * fail with ERR_ARGUMENT once retention has let the version go.
   */
  async open(options: { version?: number } = {}): Promise<RegionView> {
    this.checkOpen();
    if (options === null || typeof options !== 'object') throw new AtomioError('ERR_ARGUMENT', `open takes { version? }, not ${describe(options)}`, {});
    const version = options.version ?? this.version;
    if (typeof version !== 'number' || !Number.isSafeInteger(version) || version < 0) {
      throw new AtomioError('ERR_ARGUMENT', `a version of region '${this.name}' is an integer >= 0 as versions() lists them, not ${describe(version)}`, {});
    }
    const record = this.versionList.find((v) => v.version === version);
    if (record === undefined && version !== 0) {
      throw new AtomioError('ERR_ARGUMENT', `region '${this.name}' keeps no version ${String(version)}; versions() lists those kept`, { version });
    }
    let copy: Buffer | undefined;
    if (this.mem !== undefined) {
      copy = Buffer.alloc(this.meta.size);
      await this.materialize(version, copy);
    }
    return new RegionView(this, version, record?.committedAt ?? 0, copy);
  }

  /** @internal page `page` as of `version`, for a view; ERR_ARGUMENT once the version is gone. */
  async pageAt(page: number, version: number): Promise<Buffer> {
    this.checkOpen();
    this.checkPage(page);
    if (version !== 0 && !this.versionList.some((v) => v.version === version)) {
      throw new AtomioError('ERR_ARGUMENT', `version ${version} of region '${this.name}' is no longer kept`, { version });
    }
    return this.readStoredPage(page, version);
  }

  /** The stored bytes of `page` as of `version` (zeros when never written). */
  private async readStoredPage(page: number, version: number): Promise<Buffer> {
    const pool = this.engine.pools.named(this.poolName);
    const out = Buffer.alloc(this.pageBytes(page));
    if (pool === undefined || version === 0) return out;
    let found: { key: Buffer; meta: Parameters<Engine['readValue']>[2] } | undefined;
    pool.index.forEachIn({ start: pageKey(page, version), end: pagePrefix(page + 1) }, (key, meta) => {
      found = { key, meta };
      return false;
    });
    if (found === undefined || found.meta.valueBytes === 0) return out;
    const value = await this.engine.readValue(pool, found.key, found.meta);
    value.copy(out, 0, 0, Math.min(value.length, out.length));
    return out;
  }

  /**
   * Fills `into` with the region as of `version` (a frozen view of the pool and a pin keep
   * what it reads in place); returns how many stored page versions no kept version needs.
   * `writers` receives, per page, the version `into` holds (the newest stored at `version`).
   */
  private async materialize(version: number, into: Buffer, writers?: Float64Array): Promise<number> {
    const pool = this.engine.pools.named(this.poolName);
    if (pool === undefined || version === 0) return 0;
    const { view, pin } = this.pool.frozen(pool);
    const kept = this.versionList.map((v) => v.version);
    const pageSize = this.meta.pageSize;
    try {
      const wanted: { page: number; key: Buffer; meta: Parameters<Engine['readValue']>[2] }[] = [];
      let page = -1;
      let newer = Infinity;
      let taken = false;
      let orphans = 0;
      view.forEachIn({ start: PAGES_START, end: PAGES_END }, (key, meta) => {
        const at = pageOf(key);
        if (at.page !== page) {
          page = at.page;
          newer = Infinity;
          taken = false;
        }
        if (!pageVersionNeeded(kept, at.version, newer)) orphans++;
        newer = at.version;
        if (taken || at.version > version) return;
        taken = true;
        if (writers !== undefined && at.page < this.pageCount) writers[at.page] = at.version;
        if (meta.valueBytes > 0 && at.page < this.pageCount) wanted.push({ page: at.page, key, meta });
      });
      let next = 0;
      const worker = async (): Promise<void> => {
        while (next < wanted.length) {
          const w = wanted[next++]!;
          const value = await this.engine.readValue(pool, w.key, w.meta);
          value.copy(into, w.page * pageSize, 0, Math.min(value.length, this.pageBytes(w.page)));
        }
      };
      await Promise.all(Array.from({ length: Math.min(LOAD_READS_IN_FLIGHT, wanted.length) }, worker));
      return orphans;
    } finally {
      if (pin !== undefined) this.engine.unpin(pin);
    }
  }

  // -------------------------------------------------------------------------------------
  // Retention

  /**
   * Sets which versions are kept (durable when this resolves) and applies it now: the
   * newest `count`, those committed at most `age` ms ago (0 lifts a limit, an absent one
   * stays); the newest version is always kept. Pages no kept version needs are deleted and
   * their space returns. Later commits apply the policy as they go. Without arguments it
   * applies the policy and sweeps pages left behind by a crash.
   * @example await region.retain({ count: 10 });
   */
  async retain(policy?: Partial<Retention>): Promise<void> {
    this.checkOpen();
    if (policy !== undefined) {
      if (policy === null || typeof policy !== 'object') throw new AtomioError('ERR_ARGUMENT', `retain takes { count?, age? }, not ${describe(policy)}`, {});
      const count = checkLimit(policy.count, 'count');
      const age = checkLimit(policy.age, 'age');
      const merge = (r: Retention): Retention => ({ count: count ?? r.count, age: age ?? r.age });
      await this.engine.commit([this.metaPut((m) => ({ ...m, retention: merge(m.retention) }))], [], 0);
      this.meta = { ...this.meta, retention: merge(this.meta.retention) };
      this.metaPersisted = true;
    }
    await this.sweep();
  }

  /** The retention policy in force (0: no limit). */
  retention(): Retention {
    return { ...this.meta.retention };
  }

  /**
   * The deletes that retention adds to the commit of `version` (bounded), or undefined.
   * Works from the version list (binary searches, no maps); the index is searched only for
   * page versions the list cannot account for (see olderPage).
   */
  private retentionDeletes(version: number, pages: Uint32Array, committedAt: number, room: number): { versionKeys: Buffer[]; pageKeys: Buffer[]; versions: Set<number>; sweep: boolean } | undefined {
    const r = this.meta.retention;
    if (r.count === 0 && r.age === 0) return undefined;
    const fast = this.retentionStep(committedAt, room);
    if (fast !== undefined) return fast;
    const all = this.versionList.concat([{ version, committedAt, pages }]);
    const kept = keptVersions(all, r, committedAt);
    if (kept.length === all.length) return undefined;
    const keptNumbers = kept.map((v) => v.version);
    // kept is a subsequence of all: the rest is dropped.
    const dropped: number[] = [];
    for (let i = 0, k = 0; i < all.length; i++) {
      if (k < kept.length && kept[k] === all[i]) k++;
      else dropped.push(all[i]!.version);
    }
    let unlisted = false;
    const unneeded = unneededAfterDrop(
      dropped,
      keptNumbers,
      (v) => all[indexOfVersion(all, v)]?.pages,
      (page, below) => this.olderPage(all, page, below),
      (after, upTo) => {
        const listed = versionsIn(all, after, upTo);
        if (listed.length !== upTo - after) unlisted = true;
        return listed;
      },
    );
    // A version missing from the list between a dropped one and the next kept (a clock that
    // stepped back lets age drop versions out of order) may have left page versions that only
    // the dropped one needed, which this pass cannot see: a background sweep finds them, once
    // the commit has landed (a sweep before it would still count the dropped version as kept).
    if (dropped.length + unneeded.length > room) {
      // Too many for one commit: a background pass does it in chunks, after the commit too.
      return { versionKeys: [], pageKeys: [], versions: new Set(), sweep: true };
    }
    const versionKeys = dropped.map(versionKey);
    const pageKeys = unneeded.map(([page, v]) => pageKey(page, v));
    return { versionKeys, pageKeys, versions: new Set(dropped), sweep: unlisted };
  }

  /**
   * retentionDeletes in the steady state, without its lists: the commit lets go of exactly
   * the oldest listed version d, and d + 1 is listed and kept. Then the only page versions
   * no kept version needs any more are those d + 1 overwrote (every kept version is at or
   * above d + 1): for each page of d + 1, the newest stored version below it, which the
   * record of d + 1 remembers (`older`) or the index tells. Undefined when this is not the
   * case (or the deletes do not fit): the general pass decides.
   */
  private retentionStep(now: number, room: number): { versionKeys: Buffer[]; pageKeys: Buffer[]; versions: Set<number>; sweep: boolean } | undefined {
    const list = this.versionList;
    const n = list.length + 1; // with the version being committed, always kept
    if (list.length < 2) return undefined;
    const r = this.meta.retention;
    const drops = (i: number): boolean => (r.count > 0 && i < n - r.count) || (r.age > 0 && list[i]!.committedAt < now - r.age);
    if (!drops(0)) return undefined;
    for (let i = 1; i < list.length; i++) if (drops(i)) return undefined;
    const d = list[0]!.version;
    const u = list[1]!;
    if (u.version !== d + 1 || 1 + u.pages.length > room) return undefined;
    const pageKeys: Buffer[] = [];
    for (let j = 0; j < u.pages.length; j++) {
      const page = u.pages[j]!;
      // A stored page version below d + 1 is needed by no kept version now: it goes.
      const pv = u.older !== undefined ? u.older[j]! : ceiling(list[0]!.pages, page) === page ? d : this.storedBelow(page, u.version);
      if (pv !== undefined && pv > 0) pageKeys.push(pageKey(page, pv));
    }
    return { versionKeys: [versionKey(d)], pageKeys, versions: new Set([d]), sweep: false };
  }

  /**
   * The newest stored version of `page` below version `below` (one of `all`, the listed
   * versions ascending). Every page a listed version wrote is stored (a kept version needs
   * its own pages), so while the versions below `below` are listed without a gap, the
   * newest of them that wrote `page` is the answer; past a gap, or past
   * RETENTION_LOOKBACK_VERSIONS, the index is searched.
   */
  private olderPage(all: readonly VersionRecord[], page: number, below: number): number | undefined {
    const i = indexOfVersion(all, below);
    if (i >= 0) {
      for (let j = i - 1; j >= 0 && i - j <= RETENTION_LOOKBACK_VERSIONS; j--) {
        if (all[j]!.version !== all[j + 1]!.version - 1) break;
        if (ceiling(all[j]!.pages, page) === page) return all[j]!.version;
        if (j === 0 && all[0]!.version === 1) return undefined;
      }
      if (i === 0 && below === 1) return undefined;
    }
    return this.storedBelow(page, below);
  }

  /** The newest stored version of `page` below `below`, or undefined (a search of the index). */
  private storedBelow(page: number, below: number): number | undefined {
    if (below <= 1) return undefined;
    const index = this.engine.pools.named(this.poolName)?.index;
    if (index === undefined) return undefined;
    // The bounds are only read during the search: scratch keys serve every call.
    writePageKey(this.seekStart, page, below - 1);
    const end = page + 1 >= MAX_PAGES ? PAGES_END : writePagePrefix(this.seekEnd, page + 1);
    if (index.firstKeyInto(this.seekStart, end, this.seekFound) !== PAGE_KEY_BYTES) return undefined;
    return pageVersionOf(this.seekFound);
  }

  private scheduleSweep(): void {
    if (this.sweepQueued) return;
    this.sweepQueued = true;
    setImmediate(() => {
      this.sweepQueued = false;
      this.sweep().catch(() => undefined);
    });
  }

  /** Applies the policy in standalone commits: version keys first, then every unneeded page. */
  private sweep(): Promise<void> {
    const run = this.sweeping.then(() => this.sweepNow());
    this.sweeping = run.catch(() => undefined);
    return run;
  }

  private async sweepNow(): Promise<void> {
    if (this.closedError !== undefined) return;
    // 1. Version keys of the versions let go, oldest first (a crash leaves their pages, unneeded, for the next sweep).
    const kept = new Set(keptVersions(this.versionList, this.meta.retention, this.engine.clock.now()).map((v) => v.version));
    const dropped = this.versionList.filter((v) => !kept.has(v.version)).map((v) => v.version);
    for (let i = 0; i < dropped.length; i += MAX_ATOMIC_OPS) {
      const chunk = dropped.slice(i, i + MAX_ATOMIC_OPS);
      await this.engine.commit(chunk.map((v) => ({ type: 'delete', pool: this.poolName, key: versionKey(v) })), [], 0);
      const gone = new Set(chunk);
      this.versionList = this.versionList.filter((v) => !gone.has(v.version));
    }
    // 2. Every stored page version no kept version needs.
    const pool = this.engine.pools.named(this.poolName);
    if (pool === undefined) return;
    const keptNumbers = this.versionList.map((v) => v.version);
    const keys: Buffer[] = [];
    let page = -1;
    let newer = Infinity;
    pool.index.forEachIn({ start: PAGES_START, end: PAGES_END }, (key) => {
      const at = pageOf(key);
      if (at.page !== page) {
        page = at.page;
        newer = Infinity;
      }
      // Versions above the newest kept are commits applied since this began: keep them.
      if (at.version <= (keptNumbers[keptNumbers.length - 1] ?? 0) && !pageVersionNeeded(keptNumbers, at.version, newer)) keys.push(key);
      newer = at.version;
    });
    for (let i = 0; i < keys.length; i += MAX_ATOMIC_OPS) {
      await this.engine.commit(keys.slice(i, i + MAX_ATOMIC_OPS).map((key) => ({ type: 'delete', pool: this.poolName, key, private: true })), [], 0);
    }
  }

  // -------------------------------------------------------------------------------------
  // Stats and life cycle

  stats(): RegionStats {
    this.checkOpen();
    const pool = this.engine.pools.named(this.poolName);
    return {
      version: this.version,
      versions: this.versionList.length,
      storedPages: pool === undefined ? 0 : pool.index.count({ start: PAGES_START, end: PAGES_END }),
      bytes: pool?.liveBytes ?? 0,
      markedPages: this.marks.size + this.staged.size,
      inFlight: this.sequence.inFlight,
    };
  }

  /** @internal the store closed or the region was dropped. */
  close(error: AtomioError): void {
    this.closedError ??= error;
  }

  /** @internal commits and sweeps settled (before a drop). */
  async settled(): Promise<void> {
    await Promise.allSettled([this.lastCommit, this.sweeping]);
  }

  /** @internal whether the region lives in the store of `engine`. */
  belongsTo(engine: Engine): boolean {
    return this.engine === engine;
  }

  /** @internal whether `options` fit this open region (store.region() hands out one object per name). */
  matches(options: RegionOptions): boolean {
    const o = checkOptions(options);
    return (
      (o.size === undefined || o.size === this.meta.size) &&
      (o.pageSize === undefined || o.pageSize === this.meta.pageSize) &&
      (o.mode ?? 'buffer') === this.mode &&
      (o.track ?? 'compare') === this.track
    );
  }

  private checkOpen(): void {
    if (this.closedError !== undefined) throw this.closedError;
    this.engine.assertOpen();
  }
}

/** A read-only copy of one version of a region. */
export class RegionView {
  /** @internal use region.open() */
  constructor(
    private readonly region: Region,
    readonly version: number,
    readonly committedAt: number,
    private readonly copy: Buffer | undefined,
  ) {}

  get size(): number {
    return this.region.size;
  }

  get pageSize(): number {
    return this.region.pageSize;
  }

  /** The whole version ('buffer' regions). Changing it changes nothing stored. */
  get buffer(): Buffer {
    if (this.copy === undefined) throw new AtomioError('ERR_ARGUMENT', 'a view of a paged region has no buffer; use readPage()', {});
    return this.copy;
  }

  /** Page `index` as of this version: a copy. */
  async readPage(index: number): Promise<Buffer> {
    if (this.copy !== undefined) {
      const at = index * this.region.pageSize;
      if (!Number.isSafeInteger(index) || index < 0 || index >= this.region.pageCount) {
        throw new AtomioError('ERR_ARGUMENT', `a page index is an integer from 0 to ${this.region.pageCount - 1}, not ${describe(index)}`, {});
      }
      return Buffer.from(this.copy.subarray(at, Math.min(at + this.region.pageSize, this.copy.length)));
    }
    return this.region.pageAt(index, this.version);
  }
}

/** Bytes compared at once before a difference is looked for page by page. */
const DIFF_STRIDE_BYTES = 64 * 1024;

/**
 * The pages where `mem` and `shadow` differ, ascending: compared DIFF_STRIDE_BYTES at a time,
 * then page by page inside a stride that differs, in place (no views are made). Its cost is
 * one memory compare of the whole buffer: bounded by memory bandwidth, not by the pages found.
 */
function diffPages(mem: Buffer, shadow: Buffer, pageSize: number): number[] {
  const dirty: number[] = [];
  const size = mem.length;
  const stride = Math.max(pageSize, DIFF_STRIDE_BYTES);
  for (let at = 0; at < size; at += stride) {
    const end = Math.min(size, at + stride);
    if (mem.compare(shadow, at, end, at, end) === 0) continue;
    for (let p = at; p < end; p += pageSize) {
      const q = Math.min(end, p + pageSize);
      if (mem.compare(shadow, p, q, p, q) !== 0) dirty.push(p / pageSize);
    }
  }
  return dirty;
}

/** The first index of `list` (ascending by version) whose version is above `version`. */
function firstAbove(list: readonly VersionRecord[], version: number): number {
  let lo = 0;
  let hi = list.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (list[mid]!.version <= version) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** Where `version` is in `list` (ascending by version), or -1. */
function indexOfVersion(list: readonly VersionRecord[], version: number): number {
  const i = firstAbove(list, version - 1); // versions are whole numbers
  return i < list.length && list[i]!.version === version ? i : -1;
}

/** The versions of `list` (ascending) in (after, upTo]. */
function versionsIn(list: readonly VersionRecord[], after: number, upTo: number): number[] {
  const lo = firstAbove(list, after);
  const out: number[] = [];
  for (let i = lo; i < list.length && list[i]!.version <= upTo; i++) out.push(list[i]!.version);
  return out;
}

function checkOptions(options: RegionOptions): RegionOptions {
  if (options === null || typeof options !== 'object') throw new AtomioError('ERR_ARGUMENT', `region options are an object, not ${describe(options)}`, {});
  const { size, pageSize, mode, track } = options;
  if (pageSize !== undefined && (typeof pageSize !== 'number' || !Number.isInteger(pageSize) || pageSize < MIN_PAGE_SIZE || pageSize > MAX_PAGE_SIZE || (pageSize & (pageSize - 1)) !== 0)) {
    throw new AtomioError('ERR_ARGUMENT', `pageSize is a power of two from ${MIN_PAGE_SIZE} to ${MAX_PAGE_SIZE}, not ${describe(pageSize)}`, {});
  }
  if (size !== undefined) {
    if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 1) {
      throw new AtomioError('ERR_ARGUMENT', `size is a number of bytes >= 1, not ${describe(size)}`, {});
    }
    if (Math.ceil(size / (pageSize ?? DEFAULT_PAGE_SIZE)) > MAX_PAGES) {
      throw new AtomioError('ERR_LIMIT', `a region holds at most 2^32 pages; ${size} bytes is more with pages of ${pageSize ?? DEFAULT_PAGE_SIZE} bytes`, {});
    }
  }
  if (mode !== undefined && mode !== 'buffer' && mode !== 'paged') throw new AtomioError('ERR_ARGUMENT', `mode is 'buffer' or 'paged', not ${describe(mode)}`, {});
  if (track !== undefined && track !== 'compare' && track !== 'mark') throw new AtomioError('ERR_ARGUMENT', `track is 'compare' or 'mark', not ${describe(track)}`, {});
  return options;
}

function checkRange(offset: number, length: number, size: number): void {
  if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > size) {
    throw new AtomioError('ERR_ARGUMENT', `bytes [${String(offset)}, ${String(offset)} + ${String(length)}) do not lie within the region's ${size} bytes`, {});
  }
}

function checkLimit(value: unknown, what: string): number | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) {
    throw new AtomioError('ERR_ARGUMENT', `retention ${what} is a non-negative integer (0: no limit), not ${describe(value)}`, {});
  }
  return value;
}

