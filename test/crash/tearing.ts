// What every crash-test child shares: the data file with a kill that lands inside one
// chosen write, and the way a child reports a failure to its parent.

import type { Media } from '../../src/media/media.js';
import { PAGE, type Rng, writeLine } from './common.js';

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
