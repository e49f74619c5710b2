// What every crash-test child shares: the data file with a kill that lands inside one
// chosen write (and the --tear-* flags that plan it), the wait for the parent's go, the
// parsing of count flags, and the way a child reports a failure to its parent.

import fsp from 'node:fs/promises';
import path from 'node:path';
import { DATA_FILE_NAME } from '../../src/index.js';
import { openFileMedia } from '../../src/media/file.js';
import type { Media } from '../../src/media/media.js';
import { PAGE, Rng, writeLine } from './common.js';

/**
 * The data file, with a kill that lands inside the n-th write once armed: some page-aligned
 * prefix of that write reaches the file (maybe none of it), a TEAR line says how much, and
 * the process SIGKILLs itself. Durable (O_DSYNC) writes, the writes of several parts
 * (pwritev) and the writes made on the calling thread tear the same way, so the crash tests
 * cover every path the engine writes by.
 */
export class TearingMedia implements Media {
  readonly size: number;
  readonly writeSync?: (buffer: Uint8Array, offset: number) => void;
  readonly writeDurableSync?: (buffer: Uint8Array, offset: number) => void;
  private countdown = 0;
  /** Writes of other kinds passed over while waiting for one of the preferred kind. */
  private passedOver = 0;

  constructor(
    private readonly inner: Media,
    private readonly rng: Rng,
    /** Once armed, count only writes of this kind, unless PREFER_GRACE_WRITES others come first. */
    private readonly preferred?: string,
  ) {
    this.size = inner.size;
    // The engine writes a lone commit on its own thread only through a medium that can.
    const sync = inner.writeSync;
    const durableSync = inner.writeDurableSync;
    if (sync !== undefined) this.writeSync = (b, o) => this.tearSync('sync', b, o, (p, at) => sync.call(inner, p, at));
    if (durableSync !== undefined) this.writeDurableSync = (b, o) => this.tearSync('durable-sync', b, o, (p, at) => durableSync.call(inner, p, at));
  }

  get allocatesOnWrite(): boolean | undefined {
    return this.inner.allocatesOnWrite;
  }

  /** The n-th write from now is the one the kill interrupts. */
  arm(n: number): void {
    this.countdown = Math.max(1, n);
  }

  read(buffer: Uint8Array, offset: number): Promise<void> {
    return this.inner.read(buffer, offset);
  }

  readSync(buffer: Uint8Array, offset: number): void {
    this.inner.readSync(buffer, offset);
  }

  write(buffer: Uint8Array, offset: number): Promise<void> {
    return this.tear('write', buffer, offset, () => this.inner.write(buffer, offset), (b, o) => this.inner.write(b, o));
  }

  writeDurable(buffer: Uint8Array, offset: number): Promise<void> {
    const durable = this.inner.writeDurable;
    if (durable === undefined) return this.write(buffer, offset).then(() => this.inner.flush());
    return this.tear('durable', buffer, offset, () => durable.call(this.inner, buffer, offset), (b, o) => durable.call(this.inner, b, o));
  }

  writeParts(parts: readonly Uint8Array[], offset: number): Promise<void> {
    const inner = this.inner.writeParts;
    if (inner === undefined) return this.write(Buffer.concat(parts), offset);
    return this.tear('parts', parts, offset, () => inner.call(this.inner, parts, offset), (b, o) => this.inner.write(b, o));
  }

  writePartsDurable(parts: readonly Uint8Array[], offset: number): Promise<void> {
    const inner = this.inner.writePartsDurable;
    const durable = this.inner.writeDurable;
    if (inner === undefined || durable === undefined) return this.writeDurable(Buffer.concat(parts), offset);
    return this.tear('durable-parts', parts, offset, () => inner.call(this.inner, parts, offset), (b, o) => durable.call(this.inner, b, o));
  }

  flush(): Promise<void> {
    return this.inner.flush();
  }

  close(): Promise<void> {
    return this.inner.close();
  }

  /** Counts a write of kind `how`: true for the one the kill interrupts. */
  private tearsThis(how: string): boolean {
    if (this.countdown === 0) return false;
    if (this.preferred !== undefined && how !== this.preferred && this.passedOver++ < PREFER_GRACE_WRITES) return false;
    return --this.countdown === 0;
  }

  /** `write` whole, or, if the kill interrupts it, a page-aligned prefix of its bytes (joined) and the kill. */
  private async tear(how: string, whole: Uint8Array | readonly Uint8Array[], offset: number, write: () => Promise<void>, writePrefix: (b: Uint8Array, o: number) => Promise<void>): Promise<void> {
    if (!this.tearsThis(how)) return write();
    const buffer = whole instanceof Uint8Array ? whole : Buffer.concat(whole);
    const kept = this.keptOf(buffer, offset);
    if (kept > 0) await writePrefix(buffer.subarray(0, kept), offset);
    this.die(how, buffer, offset, kept);
  }

  private tearSync(how: string, buffer: Uint8Array, offset: number, write: (b: Uint8Array, o: number) => void): void {
    if (!this.tearsThis(how)) return write(buffer, offset);
    const kept = this.keptOf(buffer, offset);
    if (kept > 0) write(buffer.subarray(0, kept), offset);
    this.die(how, buffer, offset, kept);
  }

  /** Page boundaries strictly inside the write, plus "none of it": where the kill can stop it. */
  private keptOf(buffer: Uint8Array, offset: number): number {
    const cuts = [offset];
    for (let b = (Math.floor(offset / PAGE) + 1) * PAGE; b < offset + buffer.length; b += PAGE) cuts.push(b);
    return cuts[this.rng.int(0, cuts.length - 1)]! - offset;
  }

  private die(how: string, buffer: Uint8Array, offset: number, kept: number): void {
    writeLine(`TEAR ${offset} ${buffer.length} ${kept} ${how}`);
    process.kill(process.pid, 'SIGKILL');
    // A SIGKILL sent to itself ends the process before kill() returns to it.
    throw new Error('TearingMedia: still running after SIGKILL');
  }
}

/**
 * With --tear-prefer, how many writes of other kinds an armed medium lets by before it
 * counts them too: whether the engine writes on the loop's thread depends on the disk's
 * latency, and a busy machine may make such writes rare, not absent.
 */
const PREFER_GRACE_WRITES = 500;

/** Reports a failure to the parent (a FAIL line) and exits. */
export function fail(what: string, error: unknown): never {
  writeLine(`FAIL ${what} ${String((error as Error)?.stack ?? error).replace(/\n/g, ' | ')}`);
  process.exit(1);
}

/** A count flag (`--name N`, N >= 0), or `fallback` when it is not given. */
export function countFlag(name: string, text: unknown, fallback: number): number {
  if (text === undefined) return fallback;
  const n = Number(text);
  if (typeof text !== 'string' || !Number.isSafeInteger(n) || n < 0) throw new Error(`--${name} must be an integer >= 0, got ${String(text)}`);
  return n;
}

/** parseArgs options every writer takes: the tear plan and --wait-go. */
export const CHILD_OPTIONS = {
  'tear-from': { type: 'string' },
  'tear-after-ms': { type: 'string' },
  'tear-write': { type: 'string' },
  'tear-prefer': { type: 'string' },
  'wait-go': { type: 'boolean' },
} as const;

/**
 * The writer's side of a planned tear (--tear-from ack|open, --tear-after-ms, --tear-write,
 * and --tear-prefer KIND to make the kill land in a write of that kind where one comes):
 * the data file wrapped in a TearingMedia, armed `afterMs` after the store starts to open or
 * after the first acknowledgement. Without --tear-from, nothing is wrapped.
 */
export class Tear {
  private acks = 0;

  private constructor(
    private readonly from: 'ack' | 'open' | undefined,
    private readonly afterMs: number,
    private readonly write: number,
    /** The medium to open the store on, when a tear is planned. */
    readonly media: TearingMedia | undefined,
  ) {}

  static async prepare(values: Record<string, unknown>, dir: string, size: number, seed: number, create: boolean): Promise<Tear> {
    const from = values['tear-from'];
    if (from !== undefined && from !== 'ack' && from !== 'open') throw new Error(`--tear-from must be ack or open, got ${String(from)}`);
    const afterMs = countFlag('tear-after-ms', values['tear-after-ms'], 0);
    const write = countFlag('tear-write', values['tear-write'], 1);
    const prefer = values['tear-prefer'];
    if (prefer !== undefined && typeof prefer !== 'string') throw new Error('--tear-prefer takes a kind of write (durable-sync, durable-parts, ...)');
    let media: TearingMedia | undefined;
    if (from !== undefined) {
      await fsp.mkdir(dir, { recursive: true });
      media = new TearingMedia(await openFileMedia(path.join(dir, DATA_FILE_NAME), { size, create }), new Rng(seed ^ 0x5bd1e995), prefer);
    }
    return new Tear(from, afterMs, write, media);
  }

  /** The store starts to open. */
  opening(): void {
    if (this.from === 'open') this.arm();
  }

  /** An op was acknowledged; returns how many were so far. */
  acked(): number {
    if (this.acks++ === 0 && this.from === 'ack') this.arm();
    return this.acks;
  }

  private arm(): void {
    const media = this.media;
    if (media !== undefined) setTimeout(() => media.arm(this.write), this.afterMs);
  }
}

/**
 * With --wait-go, resolves once the parent writes a line to stdin (the child has loaded by
 * then, so its start-up overlapped the round before); at once otherwise. A parent that goes
 * away (stdin ends) ends the child.
 */
export function waitForGo(values: Record<string, unknown>): Promise<void> {
  process.stdin.on('end', () => process.exit(0));
  return new Promise<void>((resolve) => {
    if (values['wait-go'] !== true) resolve();
    process.stdin.on('data', () => resolve());
  });
}
