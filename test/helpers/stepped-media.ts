// A FaultMedia that calls `before` ahead of every write and flush, so that a test can take a
// crash image at each step of the engine's work.

import { FaultMedia } from '../../src/media/fault.js';

export class SteppedMedia extends FaultMedia {
  /** Called with the offset of a write, and with none before a flush. */
  before: ((offset?: number) => Promise<void>) | undefined;
  private readonly running = new Set<Promise<void>>();

  override async write(buffer: Uint8Array, offset: number): Promise<void> {
    await this.step(offset);
    return super.write(buffer, offset);
  }

  // Writes made on the event loop's thread (writeSync) cannot wait: the image is taken at
  // the next asynchronous step instead.

  override async flush(): Promise<void> {
    await this.step();
    return super.flush();
  }

  /**
   * Resolves once no `before` call is running. Commits go on while a checkpoint's write waits
   * in `before`: a test that moves its clock between commits waits for this first, so that a
   * check under way reads the reopened image and its model at one time throughout.
   */
  async idle(): Promise<void> {
    while (this.running.size > 0) await Promise.allSettled([...this.running]);
  }

  private async step(offset?: number): Promise<void> {
    if (this.before === undefined) return;
    const call = this.before(offset);
    this.running.add(call);
    try {
      await call;
    } finally {
      this.running.delete(call);
    }
  }
}
