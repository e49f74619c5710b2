// Every error atomio raises is an AtomioError with a stable `code`. Codes never change
// meaning; messages say what happened and what to do about it.

export type ErrorCode =
  /** A check attached to a write did not hold; nothing was written. */
  | 'ERR_CONDITION'
  /** A transaction kept conflicting with other writers past its retries; nothing was written. */
  | 'ERR_CONFLICT'
  /** Live data would exceed the store's capacity; nothing was written. */
  | 'ERR_NO_SPACE'
  /** Bytes read back did not match their checksum; the location is in `details`. */
  | 'ERR_CORRUPT'
  /** Another process or another open handle owns the store. */
  | 'ERR_LOCKED'
  /** A request is larger than a documented limit; nothing was written. */
  | 'ERR_LIMIT'
  /** The store (or the object) was closed before or during the call. */
  | 'ERR_CLOSED'
  /** An argument is malformed (wrong type, unaligned length, out of range). */
  | 'ERR_ARGUMENT'
  /** The path is not an atomio store, or was made by a newer format version. */
  | 'ERR_FORMAT'
  /** The medium failed a write or a flush; the store refuses further writes until reopened. */
  | 'ERR_IO';

export class AtomioError extends Error {
  readonly code: ErrorCode;
  readonly details: Readonly<Record<string, unknown>>;

  constructor(code: ErrorCode, message: string, details: Record<string, unknown> = {}, options?: ErrorOptions) {
    super(message, options);
    this.name = 'AtomioError';
    this.code = code;
    this.details = details;
  }
}

export function isAtomioError(error: unknown, code?: ErrorCode): error is AtomioError {
  return error instanceof AtomioError && (code === undefined || error.code === code);
}
