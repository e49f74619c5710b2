// Assertions guard the engine's invariants. A failed assertion is a bug in atomio, never a
// user error: it throws AssertionError so that tests fail loudly and nothing is written.

export class InvariantError extends Error {
  constructor(message: string) {
    super(`atomio invariant violated: ${message}`);
    this.name = 'InvariantError';
  }
}

export function assert(condition: unknown, message = 'assertion failed'): asserts condition {
  if (!condition) throw new InvariantError(message);
}

export function assertInteger(value: number, message: string): void {
  if (!Number.isSafeInteger(value)) throw new InvariantError(`${message}: ${value} is not a safe integer`);
}
