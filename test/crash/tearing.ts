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
 * the process SIGKILLs itself. Durable (O_DSYNC) writes tear the same way.
 */
export class TearingMedia implements Media {
  readonly size: number;
  private countdown = 0;

  constructor(
    private readonly inner: Media,
    private readonly rng: Rng,
  ) {
    this.size = inner.size;
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
    return this.tear(buffer, offset, (b, o) => this.inner.write(b, o));
  }

  writeDurable(buffer: Uint8Array, offset: number): Promise<void> {
    const durable = this.inner.writeDurable;
    if (durable === undefined) return this.write(buffer, offset).then(() => this.inner.flush());
    return this.tear(buffer, offset, (b, o) => durable.call(this.inner, b, o));
  }

  flush(): Promise<void> {
    return this.inner.flush();
  }

  close(): Promise<void> {
    return this.inner.close();
  }

  private async tear(buffer: Uint8Array, offset: number, write: (b: Uint8Array, o: number) => Promise<void>): Promise<void> {
    if (this.countdown === 0 || --this.countdown > 0) return write(buffer, offset);
    // Page boundaries strictly inside the write, plus "none of it": where the kill can stop it.
    const cuts = [offset];
    for (let b = (Math.floor(offset / PAGE) + 1) * PAGE; b < offset + buffer.length; b += PAGE) cuts.push(b);
    const kept = cuts[this.rng.int(0, cuts.length - 1)]! - offset;
    if (kept > 0) await write(buffer.subarray(0, kept), offset);
    writeLine(`TEAR ${offset} ${buffer.length} ${kept}`);
    process.kill(process.pid, 'SIGKILL');
    return new Promise<void>(() => undefined);
  }
}

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
  'wait-go': { type: 'boolean' },
} as const;

/**
 * The writer's side of a planned tear (--tear-from ack|open, --tear-after-ms, --tear-write):
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
    let media: TearingMedia | undefined;
    if (from !== undefined) {
      await fsp.mkdir(dir, { recursive: true });
      media = new TearingMedia(await openFileMedia(path.join(dir, DATA_FILE_NAME), { size, create }), new Rng(seed ^ 0x5bd1e995));
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
