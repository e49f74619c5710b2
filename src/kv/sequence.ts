// CommitSequence: numbers handed out in call order to the commits of one writer (a stream's
// appends, a region's versions), kept in order and free of holes across failures and
// crashes.
//
// The engine commits queued commits in queue order, and recovery keeps a prefix of the
// log, so numbers given in call order are committed in call order. What can break the
// chain is a commit that fails while later ones are queued behind it (ERR_NO_SPACE for one
// commit of a group, a failed check of an atomic batch, ERR_IO): the later ones must not
// land, or number n + 1 would exist without n. So:
//   - a commit issued while the commit issued just before it is still in flight is
//     "chained": its face adds a condition that the predecessor's key is present. Checked
//     in queue order with the predecessor's outcome, it fails exactly when the predecessor
//     did not land; failures cascade down the chain, never skip a link;
//   - a commit issued while its predecessor has settled needs no condition: the
//     predecessor is durable (faces delete only numbers that have settled);
//   - after a failure the sequence drains: new commits wait (in call order) until every
//     commit in flight has settled; then numbering restarts right after the last number
//     that landed, so the numbers of commits that succeed stay gap-free. (The numbers of
//     failed commits are given again: a failed commit wrote nothing under them.)
//
// Invariants:
// - `next` > every number handed out in the current run of numbering;
// - `committed` is the highest number whose commit succeeded, and the commits that
//   succeeded hold every number up to it (from the start);
// - while `failure` is set, nothing new is submitted.

import { assert } from '../base/assert.js';
import { AtomioError, isAtomioError } from '../base/errors.js';

/** What a face's submit function learns about the commit it is to send. */
export interface Issue {
  /** First number of the commit; it holds [first, first + count). */
  readonly first: number;
  /** True: the commit must carry the condition that number first - 1 exists. */
  readonly chained: boolean;
}

interface Waiter {
  /** Issues the commit (after the drain) and hands its outcome to the caller. */
  start: () => void;
}

interface Ticket {
  first: number;
  last: number;
  settled: boolean;
  /** The failure being drained when this commit failed (undefined: it failed first). */
  cause: unknown;
}

/** A commit as sent: the engine's promise, and the index of its chain condition if chained. */
export interface Sent {
  promise: Promise<number>;
  chainIndex: number | undefined;
}

export type Submit = (issue: Issue) => Sent;

export class CommitSequence {
  private nextNumber: number;
  private committedNumber: number;
  private latest: Ticket | undefined;
  private pending = 0;
  /** The failure that started a drain, while it lasts. */
  private failure: unknown;
  private readonly waiting: Waiter[] = [];

  constructor(
    /** The first number to hand out; every lower one has committed (or never will). */
    next: number,
  ) {
    assert(Number.isSafeInteger(next) && next >= 1, 'a sequence starts at a positive number');
    this.nextNumber = next;
    this.committedNumber = next - 1;
  }

  /** The number the next commit will get (if nothing fails before it is issued). */
  get next(): number {
    return this.nextNumber;
  }

  /** The highest number whose commit succeeded (since this object was made: or its start - 1). */
  get committed(): number {
    return this.committedNumber;
  }

  /** Commits in flight. */
  get inFlight(): number {
    return this.pending;
  }

  /** Set while the sequence drains after a failure: the error that started it. */
  get draining(): unknown {
    return this.failure;
  }

  /**
   * Gives the commit `count` numbers and sends it with `submit` (which returns the engine's
   * promise of the commit and where its chain condition is), now or, while draining, once
   * the drain ends. Resolves with what `done(first, version)` makes of the outcome (called
   * in the same turn as the commit resolves: group commit depends on callers hearing of it
   * early); rejects with the commit's error.
   */
  run<T>(count: number, submit: Submit, done: (first: number, version: number) => T): Promise<T> {
    if (this.failure === undefined && this.waiting.length === 0) {
      try {
        return this.start(count, submit, done).promise;
      } catch (error) {
        return Promise.reject(error);
      }
    }
    return new Promise<T>((resolve, reject) =>
      this.waiting.push({
        start: () => {
          try {
            this.start(count, submit, done).promise.then(resolve, reject);
          } catch (error) {
            reject(error);
          }
        },
      }),
    );
  }

  /**
   * run() without waiting: throws the failure being drained instead of queueing behind it.
   * Returns the first number at once, and the outcome.
   */
  runNow<T>(count: number, submit: Submit, done: (first: number, version: number) => T): { first: number; promise: Promise<T> } {
    if (this.failure !== undefined) throw this.cascadeError(this.failure, this.nextNumber);
    assert(this.waiting.length === 0, 'nothing waits unless the sequence drains');
    return this.start(count, submit, done);
  }

  /**
   * The error for a commit that failed because the one before it failed: the earlier error's
   * code, and a message that says so.
   */
  cascadeError(cause: unknown, first: number): AtomioError {
    const code = isAtomioError(cause) ? cause.code : 'ERR_IO';
    const what = cause instanceof Error ? cause.message : String(cause);
    return new AtomioError(
      code,
      `not written: a commit issued before number ${first} failed (${what}); the ones queued behind it fail too, so that numbers stay in order and gap-free`,
      { number: first },
      { cause },
    );
  }

  private start<T>(count: number, submit: Submit, done: (first: number, version: number) => T): { first: number; promise: Promise<T> } {
    assert(Number.isSafeInteger(count) && count >= 1, 'a commit takes at least one number');
    const first = this.nextNumber;
    const chained = this.latest !== undefined && !this.latest.settled;
    this.nextNumber = first + count;
    let sent: Sent;
    try {
      sent = submit({ first, chained });
    } catch (error) {
      // Nothing was queued: the numbers go back (nothing was issued after them yet).
      this.nextNumber = first;
      throw error;
    }
    assert(!chained || sent.chainIndex !== undefined, 'a chained commit carries its chain condition');
    const ticket: Ticket = { first, last: first + count - 1, settled: false, cause: undefined };
    this.latest = ticket;
    this.pending++;
    // Commits settle in queue order, so the failure a cascade stems from has settled (and is
    // known) when a chained commit's error is explained.
    const promise = sent.promise.then(
      (version) => {
        this.settle(ticket, undefined);
        return done(first, version);
      },
      (error: unknown) => {
        this.settle(ticket, error ?? new Error('commit failed'));
        throw this.explain(ticket, error, sent.chainIndex);
      },
    );
    return { first, promise };
  }

  /** A chained commit that failed on its chain condition failed because of `ticket.cause`. */
  private explain(ticket: Ticket, error: unknown, chainIndex: number | undefined): unknown {
    if (chainIndex === undefined || ticket.cause === undefined || !isAtomioError(error, 'ERR_CONDITION')) return error;
    const failed = error.details.failed as number[] | undefined;
    if (failed === undefined || !failed.includes(chainIndex)) return error;
    return this.cascadeError(ticket.cause, ticket.first);
  }

  private settle(ticket: Ticket, error: unknown): void {
    ticket.settled = true;
    this.pending--;
    if (error !== undefined) ticket.cause = this.failure;
    if (error === undefined) {
      if (ticket.last > this.committedNumber) this.committedNumber = ticket.last;
    } else if (this.failure === undefined) {
      this.failure = error;
    }
    if (this.pending > 0 || this.failure === undefined) return;
    // Drained: every commit issued before the failure has settled.
    this.failure = undefined;
    this.nextNumber = this.committedNumber + 1;
    this.latest = undefined;
    // The waiters go in call order. A settle cannot run in between (promises settle later),
    // and a submit that throws only rejects its own caller.
    for (const w of this.waiting.splice(0)) w.start();
  }
}
