// A FaultMedia that calls `before` ahead of every write and flush, so that a test can take a
// crash image at each step of the engine's work.

import { FaultMedia } from '../../src/media/fault.js';

export class SteppedMedia extends FaultMedia {
  /** Called with the offset of a write, and with none before a flush. */
  before: ((offset?: number) => Promise<void>) | undefined;

  override async write(buffer: Uint8Array, offset: number): Promise<void> {
    await this.before?.(offset);
    return super.write(buffer, offset);
  }

  // Writes made on the event loop's thread (writeSync) cannot wait: the image is taken at
  // the next asynchronous step instead.

  override async flush(): Promise<void> {
    await this.before?.();
    return super.flush();
  }
}
