// Reads wait for the writes of their turn of the event loop to be on their way.
//
// The store takes the commits queued during a turn's I/O callbacks as one group commit in
// the turn's check phase (setImmediate), and hands the write to the thread pool; its
// completion is seen when the loop next polls for I/O. Reads (get and the other exclusive
// requests) are answered at once and cost CPU, so when a turn answers its reads as their
// bytes arrive, a set read in it waits for every read of the turn before its group commit
// even starts, and a flush started so late is still running when the loop polls again: the
// set waits one more whole turn. So the reads that arrive during a turn are held here and
// run in its check phase, behind the store's step that starts the group commit: the flush
// then runs while they are answered, and the set's reply goes out in the next turn.
//
// Invariants:
// - every read held is run in the check phase of the turn it arrived in (nothing is held
//   past it), in the order connections were held;
// - a write handed to the store or landed during the turn pushes the reads behind the store's
//   step it scheduled (immediates run in the order they were scheduled).

export class ReadTurn {
  /** True while the held reads run: a connection answers reads directly then. */
  open = false;
  private held: (() => void)[] = [];
  private immediate: NodeJS.Immediate | undefined;

  /** Runs `run` in this turn's check phase (a connection holds a read until then). */
  hold(run: () => void): void {
    this.held.push(run);
    this.immediate ??= setImmediate(this.runHeld);
  }

  /**
   * The store was handed a write, or landed one, outside the held reads: they move behind
   * the step of the store that this scheduled (starting a group commit, or landing the next).
   */
  afterStore(): void {
    if (this.immediate === undefined || this.open) return;
    clearImmediate(this.immediate);
    this.immediate = setImmediate(this.runHeld);
  }

  /** Reads held now. */
  get size(): number {
    return this.held.length;
  }

  private readonly runHeld = (): void => {
    this.immediate = undefined;
    const held = this.held;
    this.held = [];
    this.open = true;
    try {
      for (const run of held) run();
    } finally {
      this.open = false;
    }
  };
}
