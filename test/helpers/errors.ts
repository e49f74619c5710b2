// Predicates for assert.rejects / assert.throws on AtomioError codes.

import assert from 'node:assert/strict';
import { isAtomioError, type ErrorCode } from '../../src/base/errors.js';

/** assert.rejects(p, code('ERR_X')) passes only for an AtomioError with that code. */
export function code(expected: ErrorCode, context = '') {
  return (error: unknown): boolean => {
    assert.ok(
      isAtomioError(error, expected),
      `expected AtomioError ${expected}${context ? ` (${context})` : ''}, got ${describe(error)}`,
    );
    return true;
  };
}

/** The settled outcome of a promise: its value, or the error code ('?' + message for a non-Atomio error). */
export async function outcome<T>(p: Promise<T>): Promise<{ ok: true; value: T } | { ok: false; code: string; error: unknown }> {
  try {
    return { ok: true, value: await p };
  } catch (error) {
    return { ok: false, code: isAtomioError(error) ? error.code : `?${describe(error)}`, error };
  }
}

export function describe(error: unknown): string {
  if (error instanceof Error) return `${error.name}${isAtomioError(error) ? `(${error.code})` : ''}: ${error.message}`;
  return String(error);
}
