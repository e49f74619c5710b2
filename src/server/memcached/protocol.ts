// The memcached text protocol's constants and small parsers: limits, error lines, numbers,
// keys and expiration times, as ../shared/specs/memcached-protocol.txt gives them (and, where
// the spec is silent, as memcached 1.6 itself answers).
//
// Invariants:
// - every number parser accepts what memcached's strtoul/strtol accept in a token (a sign,
//   leading zeros; '-' only where the type is signed, or for a zero) and answers undefined
//   for anything else or for a value out of its type's range;
// - a key that passes checkKey is 1..MAX_KEY_BYTES bytes with no control character and no space.

/** The spec's key limit. */
export const MAX_KEY_BYTES = 250;
/** A command line without a newline within this many bytes ends the connection (memcached's 2048)... */
export const MAX_LINE_BYTES = 2048;
/** ...except a retrieval line (get, gets, gat, gats), which may name many keys. */
export const MAX_RETRIEVAL_LINE_BYTES = 256 * 1024;
/** Opaque tokens (O) longer than this, flag letter included, are refused (memcached's limit). */
export const MAX_OPAQUE_BYTES = 32;
/** Meta commands with more tokens than this (command and key included) are refused. */
export const MAX_META_TOKENS = 20;
/** Default largest item (data bytes), as memcached's -I. */
export const DEFAULT_MAX_ITEM_BYTES = 1024 * 1024;
/** Exptimes above this many seconds are unix times, not offsets (30 days). */
export const REALTIME_MAXDELTA_S = 60 * 60 * 24 * 30;
/**
 * The version `version` answers: the memcached release whose protocol we speak, alone, since
 * clients parse it as a number (some from its start, some from its end). `stats` names atomio.
 */
export const SERVER_VERSION = '1.6.0';
/** atomio's own version, in `stats` as atomio_version. */
export const ATOMIO_VERSION = '0.1.0';

export const TWO_64 = 2n ** 64n;
const TWO_32 = 2 ** 32;
const INT32_MIN = -(2 ** 31);
const INT32_MAX = 2 ** 31 - 1;

export const ERR = {
  unknownCommand: 'ERROR',
  badFormat: 'CLIENT_ERROR bad command line format',
  badDataChunk: 'CLIENT_ERROR bad data chunk',
  badExptime: 'CLIENT_ERROR invalid exptime argument',
  badDelta: 'CLIENT_ERROR invalid numeric delta argument',
  nonNumeric: 'CLIENT_ERROR cannot increment or decrement non-numeric value',
  tooLarge: 'SERVER_ERROR object too large for cache',
  noSpace: 'SERVER_ERROR out of memory storing object',
  deleteUsage: 'CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]',
  badToken: 'CLIENT_ERROR bad token in command line format',
  invalidFlag: 'CLIENT_ERROR invalid flag',
  duplicateFlag: 'CLIENT_ERROR duplicate flag',
  tooManyFlags: 'CLIENT_ERROR options flags are too long',
  opaqueTooLong: 'CLIENT_ERROR opaque token too long',
  badKeyEncoding: 'CLIENT_ERROR error decoding key',
  badInitial: 'CLIENT_ERROR invalid numeric initial value',
  badMetaDelta: 'CLIENT_ERROR invalid numeric delta value',
  maInvalidFlag: 'CLIENT_ERROR invalid or duplicate flag',
  msBadMode: 'CLIENT_ERROR invalid mode for ms M token',
  maBadMode: 'CLIENT_ERROR invalid mode for ma M token',
  lineTooLong: 'SERVER_ERROR line too long; closing the connection',
  tooManyConnections: 'ERROR Too many open connections',
} as const;

/**
 * The magnitude of a decimal token as memcached's strtoul/strtol read it: an optional sign
 * ('-' only when `signed`, or for a zero), then digits, any number of them leading zeros; at
 * most `maxDigits` significant ones. Undefined for anything else.
 */
function magnitude(text: string, signed: boolean, maxDigits: number): { negative: boolean; digits: string } | undefined {
  let i = 0;
  const sign = text.charCodeAt(0);
  const negative = sign === 45;
  if (negative || sign === 43) i = 1;
  if (i === text.length) return undefined;
  for (let j = i; j < text.length; j++) {
    const c = text.charCodeAt(j);
    if (c < 48 || c > 57) return undefined;
  }
  while (i < text.length - 1 && text.charCodeAt(i) === 48) i++;
  const digits = text.slice(i);
  if (digits.length > maxDigits || (negative && !signed && digits !== '0')) return undefined;
  return { negative: negative && signed, digits };
}

/** An unsigned 32-bit decimal (client flags), or undefined. */
export function parseU32(text: string): number | undefined {
  const m = magnitude(text, false, 10);
  if (m === undefined) return undefined;
  const v = Number(m.digits);
  return v < TWO_32 ? v : undefined;
}

/** A signed 32-bit decimal (exptimes, lengths), or undefined. */
export function parseI32(text: string): number | undefined {
  const m = magnitude(text, true, 10);
  if (m === undefined) return undefined;
  const v = m.negative ? -Number(m.digits) : Number(m.digits);
  return v >= INT32_MIN && v <= INT32_MAX ? v : undefined;
}

/** An unsigned 64-bit decimal (deltas, CAS values), or undefined. */
export function parseU64(text: string): bigint | undefined {
  const m = magnitude(text, false, 20);
  if (m === undefined) return undefined;
  const v = BigInt(m.digits);
  return v < TWO_64 ? v : undefined;
}

/**
 * An exptime (seconds: relative up to 30 days, else a unix time; negative: already expired)
 * as a kv TTL in milliseconds: 0 for never, -1 for "already expired" (the item is gone).
 */
export function ttlFromExptime(exptime: number, nowMs: number): number {
  if (exptime === 0) return 0;
  if (exptime < 0) return -1;
  if (exptime <= REALTIME_MAXDELTA_S) return exptime * 1000;
  const ms = exptime * 1000 - nowMs;
  return ms > 0 ? ms : -1;
}

/** True when `key` (bytes of a latin1 token) is a valid memcached key. */
export function checkKey(key: Buffer): boolean {
  if (key.length === 0 || key.length > MAX_KEY_BYTES) return false;
  for (let i = 0; i < key.length; i++) {
    const c = key[i]!;
    if (c <= 0x20 || c === 0x7f) return false;
  }
  return true;
}

const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/** Decodes a base64 key (meta flag b); undefined when it is not base64 or decodes to nothing. */
export function decodeBase64Key(token: string): Buffer | undefined {
  if (token.length === 0 || !BASE64.test(token)) return undefined;
  const key = Buffer.from(token, 'base64');
  return key.length === 0 || key.length > MAX_KEY_BYTES ? undefined : key;
}

/** Splits a command line (latin1) on spaces, dropping empty tokens. */
export function tokenize(line: string): string[] {
  const out: string[] = [];
  let start = -1;
  for (let i = 0; i < line.length; i++) {
    if (line.charCodeAt(i) === 32) {
      if (start >= 0) out.push(line.slice(start, i));
      start = -1;
    } else if (start < 0) {
      start = i;
    }
  }
  if (start >= 0) out.push(line.slice(start));
  return out;
}

/** How many decimal digits a non-negative safe integer has (compares only, for the small ones every reply holds). */
export function decimalDigits(n: number): number {
  if (n < 10) return 1;
  if (n < 100) return 2;
  if (n < 1000) return 3;
  if (n < 10_000) return 4;
  let digits = 5;
  for (let limit = 100_000; n >= limit && digits < 16; limit *= 10) digits++;
  return digits;
}

/** Writes a non-negative safe integer in decimal at `at` (no string made); returns the position after it. */
export function writeDecimal(out: Buffer, at: number, n: number): number {
  if (n < 10) {
    out[at] = 48 + n;
    return at + 1;
  }
  const end = at + decimalDigits(n);
  for (let i = end - 1; i >= at; i--) {
    out[i] = 48 + (n % 10);
    n = Math.floor(n / 10);
  }
  return end;
}

/** A reply line: text + CRLF, as bytes. */
export function line(text: string): Buffer {
  return Buffer.from(`${text}\r\n`, 'latin1');
}

export const CRLF = Buffer.from('\r\n', 'latin1');
export const END = Buffer.from('END\r\n', 'latin1');
