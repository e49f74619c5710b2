// How the kv face turns what callers pass (strings or bytes) into checked bytes.
//
// Keys are compared as bytes, so a string key is its UTF-8 encoding. Every check happens
// before anything is queued: a bad call rejects with ERR_ARGUMENT or ERR_LIMIT and writes
// nothing.

import { AtomioError } from '../base/errors.js';
import { MAX_KEY_BYTES, MAX_POOL_NAME_BYTES } from '../engine/limits.js';

export type Key = string | Uint8Array;
export type Value = string | Uint8Array;

/** A key's bytes for a lookup: may be a view of a scratch buffer, valid until the next call. */
const scratch = Buffer.allocUnsafe(MAX_KEY_BYTES * 3 + 4);
/** scratchViews[n] = the first n bytes of scratch, made once: a lookup then allocates nothing. */
const scratchViews: (Buffer | undefined)[] = [];
const EMPTY = Buffer.alloc(0);

export function lookupKey(key: Key): Buffer {
  if (typeof key === 'string') {
    const length = key.length;
    if (length > MAX_KEY_BYTES) return checkKeyLength(Buffer.from(key, 'utf8'));
    // ASCII by hand (the common key, and cheaper than a native call); anything else as UTF-8.
    let i = 0;
    for (; i < length; i++) {
      const c = key.charCodeAt(i);
      if (c >= 0x80) break;
      scratch[i] = c;
    }
    const n = i === length ? length : scratch.write(key, 0, 'utf8');
    if (n === 0) return checkKeyLength(EMPTY);
    return (scratchViews[n] ??= scratch.subarray(0, n));
  }
  if (key instanceof Uint8Array) {
    return checkKeyLength(Buffer.isBuffer(key) ? key : Buffer.from(key.buffer, key.byteOffset, key.length));
  }
  throw badKey(key);
}

/** A key's bytes to keep: a copy the caller cannot change afterwards. */
export function ownedKey(key: Key): Buffer {
  if (typeof key === 'string') return checkKeyLength(Buffer.from(key, 'utf8'));
  if (key instanceof Uint8Array) return checkKeyLength(Buffer.from(key));
  throw badKey(key);
}

function checkKeyLength(bytes: Buffer): Buffer {
  if (bytes.length === 0) throw new AtomioError('ERR_ARGUMENT', 'a key must hold at least one byte', {});
  if (bytes.length > MAX_KEY_BYTES) {
    throw new AtomioError('ERR_LIMIT', `a key holds ${bytes.length} bytes; the limit is ${MAX_KEY_BYTES} (MAX_KEY_BYTES)`, {
      keyBytes: bytes.length,
      limit: MAX_KEY_BYTES,
    });
  }
  return bytes;
}

function badKey(key: unknown): AtomioError {
  return new AtomioError('ERR_ARGUMENT', `a key is a string or a Uint8Array, not ${describe(key)}`, {});
}

/** A value's bytes to keep (a copy), within `limit`. */
export function ownedValue(value: Value, limit: number): Buffer {
  let bytes: Buffer;
  if (typeof value === 'string') bytes = Buffer.from(value, 'utf8');
  else if (value instanceof Uint8Array) bytes = Buffer.from(value);
  else throw new AtomioError('ERR_ARGUMENT', `a value is a string or a Uint8Array, not ${describe(value)}`, {});
  if (bytes.length > limit) {
    throw new AtomioError('ERR_LIMIT', `a value holds ${bytes.length} bytes; the limit on this store is ${limit} (see Store.limits)`, {
      valueBytes: bytes.length,
      limit,
    });
  }
  return bytes;
}

export function checkPoolName(name: unknown): string {
  if (typeof name !== 'string' || name.length === 0) {
    throw new AtomioError('ERR_ARGUMENT', `a pool name is a non-empty string, not ${describe(name)}`, {});
  }
  if (name.startsWith(RESERVED_POOL_PREFIX)) {
    throw new AtomioError('ERR_ARGUMENT', 'pool names that start with U+0000 are reserved for the stream and region faces (store.stream(), store.region())', {});
  }
  const bytes = Buffer.byteLength(name, 'utf8');
  if (bytes > MAX_POOL_NAME_BYTES) {
    throw new AtomioError('ERR_LIMIT', `pool name of ${bytes} bytes; the limit is ${MAX_POOL_NAME_BYTES} (MAX_POOL_NAME_BYTES)`, {
      nameBytes: bytes,
      limit: MAX_POOL_NAME_BYTES,
    });
  }
  return name;
}

// ---------------------------------------------------------------------------------------
// Reserved pools: the stream and region faces keep their data in kv pools of their own,
// named '\u0000stream:NAME' and '\u0000region:NAME'. checkPoolName refuses every name that
// starts with U+0000, so no kv, atomic or transaction call can reach them, and
// store.pools() leaves them out.

/** Pool names that start with this belong to a face other than kv. */
export const RESERVED_POOL_PREFIX = '\u0000';

export type Face = 'stream' | 'region';

/** Longest stream or region name, in UTF-8 bytes: a pool name less the reserved prefix. */
export const MAX_FACE_NAME_BYTES = MAX_POOL_NAME_BYTES - Buffer.byteLength(`${RESERVED_POOL_PREFIX}stream:`);

/** The reserved pool that holds the stream or region `name` (checked like a pool name). */
export function facePoolName(face: Face, name: unknown): string {
  if (typeof name !== 'string' || name.length === 0) {
    throw new AtomioError('ERR_ARGUMENT', `a ${face} name is a non-empty string, not ${describe(name)}`, {});
  }
  const bytes = Buffer.byteLength(name, 'utf8');
  if (bytes > MAX_FACE_NAME_BYTES) {
    throw new AtomioError('ERR_LIMIT', `${face} name of ${bytes} bytes; the limit is ${MAX_FACE_NAME_BYTES}`, {
      nameBytes: bytes,
      limit: MAX_FACE_NAME_BYTES,
    });
  }
  return `${RESERVED_POOL_PREFIX}${face}:${name}`;
}

/** The stream or region name a reserved pool holds, or undefined when the pool is not one of `face`'s. */
export function faceNameOf(face: Face, poolName: string): string | undefined {
  const prefix = `${RESERVED_POOL_PREFIX}${face}:`;
  return poolName.startsWith(prefix) ? poolName.slice(prefix.length) : undefined;
}

export function isReservedPoolName(poolName: string): boolean {
  return poolName.startsWith(RESERVED_POOL_PREFIX);
}

/** Milliseconds, 0 for none. */
export function checkTtl(ttl: unknown): number {
  if (ttl === undefined || ttl === 0) return 0;
  if (typeof ttl !== 'number' || !Number.isFinite(ttl) || ttl < 0) {
    throw new AtomioError('ERR_ARGUMENT', `ttl is a positive number of milliseconds, not ${describe(ttl)}`, {});
  }
  return Math.max(1, Math.ceil(ttl));
}

/** Refuses options that are not an object (a default parameter lets only undefined through). */
export function checkOptionsObject(options: unknown, what: string): void {
  if (options === null || typeof options !== 'object') {
    throw new AtomioError('ERR_ARGUMENT', `${what} takes its options as an object, not ${describe(options)}`, {});
  }
}

export function checkVersion(version: unknown, what: string): number {
  if (typeof version !== 'number' || !Number.isSafeInteger(version) || version < 1) {
    throw new AtomioError('ERR_ARGUMENT', `${what} is a version (a positive integer that a write returned), not ${describe(version)}`, {});
  }
  return version;
}

/** The smallest key greater than every key starting with `prefix`; undefined when none is (all 0xff). */
export function prefixEnd(prefix: Buffer): Buffer | undefined {
  for (let i = prefix.length - 1; i >= 0; i--) {
    if (prefix[i]! < 0xff) {
      const end = Buffer.from(prefix.subarray(0, i + 1));
      end[i]!++;
      return end;
    }
  }
  return undefined;
}

export function describe(v: unknown): string {
  if (v === null) return 'null';
  if (typeof v === 'string') return `a string of ${v.length} characters`;
  if (typeof v === 'number' || typeof v === 'boolean' || typeof v === 'bigint') return `${typeof v} ${String(v)}`;
  return typeof v === 'object' ? (v.constructor?.name ?? 'an object') : typeof v;
}
