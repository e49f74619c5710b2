// Flusher: what NBD_CMD_FLUSH and NBD_CMD_FLAG_FUA wait for.
//
// With durability 'full' every block-face write resolves only once it is on stable storage,
// and the server replies to a write only after it resolved, so a FLUSH has nothing left to
// do and FUA is the write itself. With durability 'none' a write resolves once the OS has
// it; then a FLUSH (and every FUA write) must make the store flush its medium.
//
// Invariants:
// - flush() resolves only after a flush of the store that *started* after the call;
// - callers that arrive while a flush runs share the one flush that starts after it.

import type { Durability } from '../../engine/engine.js';
import type { Store } from '../../store/store.js';

export class Flusher {
  /** False when writes are durable as they resolve, so flush() returns at once. */
  readonly needed: boolean;
  private current: Promise<void> | undefined;
  private next: Promise<void> | undefined;
  private readonly flushStore: () => Promise<void>;

  constructor(store: Store, durability: Durability | undefined) {
    // Skipped only when the store itself is 'full': a caller's 'full' cannot make it so.
    this.needed = store.durability !== 'full' || (durability ?? 'full') !== 'full';
    this.flushStore = () => store.flush();
  }

  /** Resolves once every write that resolved before the call is on stable storage. */
  flush(): Promise<void> {
    if (!this.needed) return Promise.resolve();
    if (this.next !== undefined) return this.next;
    if (this.current === undefined) {
      this.current = this.flushStore().finally(() => {
        this.current = undefined;
      });
      return this.current;
    }
    this.next = this.current
      .catch(() => undefined)
      .then(() => {
        this.next = undefined;
        return this.flush();
      });
    return this.next;
  }
}
