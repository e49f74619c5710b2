// The classic text commands: retrieval (get, gets, gat, gats), storage (set, add, replace,
// append, prepend, cas), delete, incr/decr, touch, flush_all, version, verbosity, stats, quit,
// and the dispatcher that also hands meta commands to meta.ts.
//
// Each parser checks the whole line before anything runs: a malformed line gets its error
// line and changes nothing; with `noreply` as the last token every reply of the command is
// suppressed (errors too, as memcached does).

import type { Cache, StoreMode, StoreOutcome } from './cache.js';
import { serverErrorLine, visibleCas } from './cache.js';
import { dataStart, explicitCasOf, flagsOf } from './item.js';
import { metaCommand } from './meta.js';
import {
  CRLF,
  END,
  ERR,
  MAX_KEY_BYTES,
  SERVER_VERSION,
  checkKey,
  decimalDigits,
  line,
  parseI32,
  parseU32,
  parseU64,
  tokenize,
  ttlFromExptime,
  writeDecimal,
} from './protocol.js';
import { reply, type Output, type Reply, type Request, type ServerState } from './request.js';
import { settingsStats, generalStats } from './stats.js';

/** A multi-get writes what it has gathered once it holds this many bytes. */
const RETRIEVAL_CHUNK_BYTES = 256 * 1024;

const STORED = line('STORED');
const NOT_STORED = line('NOT_STORED');
const EXISTS = line('EXISTS');
const NOT_FOUND = line('NOT_FOUND');
const DELETED = line('DELETED');
const TOUCHED = line('TOUCHED');
const OK = line('OK');
const STORE_REPLIES = { STORED, NOT_STORED, EXISTS, NOT_FOUND };
const BAD_FORMAT = line(ERR.badFormat);
const BAD_DATA_CHUNK = line(ERR.badDataChunk);
const TOO_LARGE = line(ERR.tooLarge);

/** The request for one command line (latin1 text, without its line ending). */
export function parseCommand(text: string, state: ServerState): Request {
  const tokens = tokenize(text);
  const name = tokens[0];
  const noreply = tokens.length > 1 && tokens[tokens.length - 1] === 'noreply';
  switch (name) {
    case 'get':
    case 'gets':
      return retrieval(tokens, 1, name === 'gets', undefined, state.cache);
    case 'gat':
    case 'gats': {
      if (tokens.length < 3) return reply(line(ERR.badFormat));
      const exptime = parseI32(tokens[1]!);
      if (exptime === undefined) return reply(line(ERR.badExptime));
      return retrieval(tokens, 2, name === 'gats', exptime, state.cache);
    }
    case 'set':
    case 'add':
    case 'replace':
    case 'append':
    case 'prepend':
    case 'cas':
      return storage(name, tokens, noreply, state.cache);
    case 'delete':
      return del(tokens, noreply, state.cache);
    case 'incr':
    case 'decr':
      return arithmetic(name === 'incr', tokens, noreply, state.cache);
    case 'touch':
      return touch(tokens, noreply, state.cache);
    case 'flush_all':
      return flushAll(tokens, noreply, state.cache);
    case 'version':
      return reply(line(`VERSION ${SERVER_VERSION}`));
    case 'verbosity': {
      const level = tokens[1] === undefined ? undefined : parseU32(tokens[1]);
      if (level === undefined) return reply(line(ERR.badFormat), noreply);
      state.verbosity = Math.min(level, 2);
      return reply(OK, noreply);
    }
    case 'stats':
      return stats(tokens, state);
    case 'quit':
      return { dataBytes: -1, swallow: false, exclusive: true, close: true, badChunk: null, run: () => null };
    case 'mg':
    case 'ms':
    case 'md':
    case 'ma':
    case 'me':
    case 'mn':
      return metaCommand(name, tokens, state.cache);
    default:
      return reply(line(ERR.unknownCommand), noreply);
  }
}

function keyOf(token: string): Buffer | undefined {
  const key = Buffer.from(token, 'latin1');
  return checkKey(key) ? key : undefined;
}

/** get/gets (keys from token 1) and gat/gats (exptime at token 1, keys from token 2). */
function retrieval(tokens: string[], first: number, withCas: boolean, exptime: number | undefined, cache: Cache): Request {
  if (tokens.length <= first) return reply(line(ERR.badFormat));
  const keys: Buffer[] = [];
  for (let i = first; i < tokens.length; i++) {
    const key = keyOf(tokens[i]!);
    if (key === undefined) return reply(line(ERR.badFormat));
    keys.push(key);
  }
  if (keys.length === 1 && exptime === undefined) return { dataBytes: -1, swallow: false, exclusive: true, close: false, badChunk: null, run: () => getOne(keys[0]!, withCas, cache) };
  const run = (_data: Buffer | undefined, out: Output): Reply | Promise<Reply> => {
    if (exptime !== undefined) return getAndTouch(keys, withCas, exptime, cache);
    const c = cache.counters;
    const now = cache.now();
    const parts: Buffer[] = [];
    let bytes = 0;
    for (let i = 0; i < keys.length; i++) {
      const key = keys[i]!;
      c.cmd_get!++;
      const found = cache.find(key);
      if (found === undefined) {
        c.get_misses!++;
        continue;
      }
      c.get_hits!++;
      cache.tracker.fetched(key, found.version, now);
      const head = valueHead(key, found.item.flags, found.item.data.length, withCas ? visibleCas(found) : undefined);
      parts.push(head, found.item.data, CRLF);
      bytes += head.length + found.item.data.length + 2;
      if (bytes >= RETRIEVAL_CHUNK_BYTES && i < keys.length - 1) return streamRest(parts, keys, i + 1, withCas, cache, out);
    }
    parts.push(END);
    return parts.length === 1 ? END : Buffer.concat(parts);
  };
  return { dataBytes: -1, swallow: false, exclusive: true, close: false, badChunk: null, run };
}

/**
 * get/gets of one key (the common case): the whole reply in one buffer, made without
 * intermediate strings or objects. `key` may be a view of the connection's input or of a
 * scratch buffer (the lookup copies what it keeps).
 */
export function getOne(key: Buffer, withCas: boolean, cache: Cache): Buffer {
  const c = cache.counters;
  c.cmd_get!++;
  const entry = cache.pool.getEntrySync(key);
  if (entry === undefined) {
    c.get_misses!++;
    return END;
  }
  c.get_hits!++;
  cache.tracker.fetched(key, entry.version, cache.now());
  const value = entry.value;
  const from = dataStart(value);
  const flags = flagsOf(value);
  const bytes = value.length - from;
  // An explicit CAS (meta E) is rare: written as text, not by writeDecimal (it may pass 2^53).
  const explicit = withCas ? explicitCasOf(value) : undefined;
  const casText = explicit === undefined ? '' : explicit.toString();
  // VALUE <key> <flags> <bytes>[ <cas>]\r\n<data>\r\nEND\r\n
  const casBytes = withCas ? 1 + (explicit === undefined ? decimalDigits(entry.version) : casText.length) : 0;
  const head = 6 + key.length + 1 + decimalDigits(flags) + 1 + decimalDigits(bytes) + casBytes + 2;
  const out = Buffer.allocUnsafe(head + bytes + 7);
  // The whole stored value first, its item header under the reply's head line, which then
  // overwrites it: a copy of a whole buffer makes no view. A header longer than the head
  // line (an explicit CAS and a short line) is skipped by a copy of the data alone.
  if (from <= head) value.copy(out, head - from);
  else value.copy(out, head, from);
  out[0] = 0x56; // VALUE
  out[1] = 0x41;
  out[2] = 0x4c;
  out[3] = 0x55;
  out[4] = 0x45;
  out[5] = 0x20;
  let at = putBytes(out, 6, key, 0, key.length);
  out[at++] = 0x20;
  at = writeDecimal(out, at, flags);
  out[at++] = 0x20;
  at = writeDecimal(out, at, bytes);
  if (withCas) {
    out[at++] = 0x20;
    at = explicit === undefined ? writeDecimal(out, at, entry.version) : at + out.write(casText, at, 'latin1');
  }
  out[at++] = 0x0d;
  out[at++] = 0x0a;
  at += bytes;
  out[at++] = 0x0d; // \r\nEND\r\n
  out[at++] = 0x0a;
  out[at++] = 0x45;
  out[at++] = 0x4e;
  out[at++] = 0x44;
  out[at++] = 0x0d;
  out[at] = 0x0a;
  return out;
}

/** Copies src[from, to) to out at `at`; returns the position after it. Short runs by hand: Buffer#copy costs more to call than to copy them. */
function putBytes(out: Buffer, at: number, src: Buffer, from: number, to: number): number {
  if (to - from > 32) return at + src.copy(out, at, from, to);
  for (let i = from; i < to; i++) out[at++] = src[i]!;
  return at;
}

/** The rest of a large multi-get, written as it is gathered, waiting whenever the socket is full. */
async function streamRest(parts: Buffer[], keys: Buffer[], from: number, withCas: boolean, cache: Cache, out: Output): Promise<Reply> {
  out.write(Buffer.concat(parts));
  const c = cache.counters;
  for (let i = from; i < keys.length; i++) {
    if (out.full()) await out.drained();
    const key = keys[i]!;
    c.cmd_get!++;
    const found = cache.find(key);
    if (found === undefined) {
      c.get_misses!++;
      continue;
    }
    c.get_hits!++;
    cache.tracker.fetched(key, found.version, cache.now());
    out.write(Buffer.concat([valueHead(key, found.item.flags, found.item.data.length, withCas ? visibleCas(found) : undefined), found.item.data, CRLF]));
  }
  return END;
}

async function getAndTouch(keys: Buffer[], withCas: boolean, exptime: number, cache: Cache): Promise<Reply> {
  const ttl = ttlFromExptime(exptime, cache.now());
  const parts: Buffer[] = [];
  for (const key of keys) {
    const found = cache.find(key);
    if (found === undefined || !(await cache.touch(key, ttl))) {
      if (found === undefined) {
        cache.counters.cmd_touch!++;
        cache.counters.touch_misses!++;
      }
      continue;
    }
    cache.tracker.fetched(key, found.version, cache.now());
    parts.push(valueHead(key, found.item.flags, found.item.data.length, withCas ? visibleCas(found) : undefined), found.item.data, CRLF);
  }
  parts.push(END);
  return Buffer.concat(parts);
}

function valueHead(key: Buffer, flags: number, bytes: number, cas: bigint | number | undefined): Buffer {
  const tail = cas === undefined ? ` ${flags} ${bytes}\r\n` : ` ${flags} ${bytes} ${cas}\r\n`;
  const out = Buffer.allocUnsafe(6 + key.length + tail.length);
  out.write('VALUE ', 0, 'latin1');
  key.copy(out, 6);
  out.write(tail, 6 + key.length, 'latin1');
  return out;
}

/** <cmd> <key> <flags> <exptime> <bytes> [noreply] / cas <key> <flags> <exptime> <bytes> <cas unique> [noreply] */
function storage(mode: StoreMode, tokens: string[], noreply: boolean, cache: Cache): Request {
  if (tokens.length < 5) return reply(line(ERR.badFormat));
  const bytes = parseI32(tokens[4]!);
  // The length is unknown, so the data cannot be skipped: the error is sent whatever noreply says.
  if (bytes === undefined || bytes < 0) return reply(line(ERR.badFormat));
  const key = keyOf(tokens[1]!);
  const flags = parseU32(tokens[2]!);
  const exptime = parseI32(tokens[3]!);
  let valid = key !== undefined && flags !== undefined && exptime !== undefined;
  const cas = valid && mode === 'cas' && tokens[5] !== undefined ? parseU64(tokens[5]) : undefined;
  if (mode === 'cas' && cas === undefined) valid = false;
  return storageRequest(mode, valid ? key : undefined, flags ?? 0, exptime ?? 0, bytes, cas, noreply, cache);
}

/**
 * The request of a storage command whose line gave a data length (`bytes`); `key` undefined:
 * the rest of the line was malformed, and the data block is read and dropped.
 */
function storageRequest(mode: StoreMode, key: Buffer | undefined, flags: number, exptime: number, bytes: number, cas: bigint | undefined, noreply: boolean, cache: Cache): Request {
  cache.counters.cmd_set!++;
  if (key === undefined) return swallowed(bytes, noreply ? null : BAD_FORMAT);
  if (bytes > cache.maxItemBytes) {
    cache.counters.store_too_large!++;
    // As memcached: a set that is refused leaves no stale value behind.
    return swallowed(bytes, noreply ? null : TOO_LARGE, mode === 'set' ? () => cache.pool.delete(key) : undefined);
  }
  const ttl = ttlFromExptime(exptime, cache.now());
  return {
    dataBytes: bytes,
    swallow: false,
    // cas reads the item first (EXISTS or NOT_FOUND), so it waits for the connection's writes.
    exclusive: mode === 'cas' || (mode === 'add' && ttl < 0),
    close: false,
    badChunk: noreply ? null : BAD_DATA_CHUNK,
    // The TTL is taken again once the data is in: an absolute exptime is a moment.
    run: (data) => storeReply(cache.store({ mode, key, flags, ttl: ttlFromExptime(exptime, cache.now()), data: data!, cas }), noreply),
  };
}

/** A storage request that already knows its reply: its data block is dropped as it arrives. */
function swallowed(bytes: number, answer: Reply, first?: () => Promise<unknown>): Request {
  return {
    dataBytes: bytes,
    swallow: true,
    exclusive: false,
    close: false,
    badChunk: null,
    run: first === undefined ? () => answer : async () => (await first(), answer),
  };
}

function storeReply(outcome: Promise<StoreOutcome>, noreply: boolean): Promise<Reply> {
  return noreply ? outcome.then(noReply, noReply) : outcome.then(storedReply, storeFailed);
}

const noReply = (): Reply => null;
const storedReply = (outcome: StoreOutcome): Reply => STORE_REPLIES[outcome.status];
const storeFailed = (error: unknown): Reply => line(serverErrorLine(error));

/**
 * The hot path of storage: a well-formed "set <key> <flags> <exptime> <bytes>[ noreply]" line
 * (bytes [start, end) of `b`, without its line ending; single spaces) read straight from the
 * bytes, to the request storage() would make of it. Anything else, valid or not: undefined,
 * and the line goes through parseCommand().
 */
export function parseSetLine(b: Buffer, start: number, end: number, cache: Cache): Request | undefined {
  if (end - start < 11 || b[start] !== 0x73 || b[start + 1] !== 0x65 || b[start + 2] !== 0x74 || b[start + 3] !== 0x20) return undefined;
  const keyStart = start + 4;
  let i = keyStart;
  while (i < end && b[i]! > 0x20 && b[i] !== 0x7f) i++;
  const keyEnd = i;
  if (keyEnd === keyStart || keyEnd - keyStart > MAX_KEY_BYTES || b[i] !== 0x20) return undefined;
  const flagsEnd = digitsEnd(b, ++i, end);
  const flags = decimalIn(b, i, flagsEnd);
  if (flags >= 2 ** 32 || b[flagsEnd] !== 0x20) return undefined;
  i = flagsEnd + 1;
  const negative = b[i] === 0x2d;
  if (negative) i++;
  const exptimeEnd = digitsEnd(b, i, end);
  const magnitude = decimalIn(b, i, exptimeEnd);
  if (magnitude > (negative ? 2 ** 31 : 2 ** 31 - 1) || b[exptimeEnd] !== 0x20) return undefined;
  i = exptimeEnd + 1;
  const bytesEnd = digitsEnd(b, i, end);
  const bytes = decimalIn(b, i, bytesEnd);
  if (bytes > 2 ** 31 - 1) return undefined;
  const noreply = bytesEnd < end;
  if (noreply && !isNoreply(b, bytesEnd, end)) return undefined;
  const key = Buffer.allocUnsafe(keyEnd - keyStart);
  for (let j = keyStart; j < keyEnd; j++) key[j - keyStart] = b[j]!;
  return storageRequest('set', key, flags, negative ? -magnitude : magnitude, bytes, undefined, noreply, cache);
}

/** Where the run of decimal digits at `at` ends (at most 11 looked at: more is out of range anyway). */
function digitsEnd(b: Buffer, at: number, end: number): number {
  const limit = Math.min(end, at + 11);
  let i = at;
  while (i < limit && b[i]! >= 0x30 && b[i]! <= 0x39) i++;
  return i;
}

/** The decimal in [from, to): 1..10 digits; Infinity for none or more, so that every range check fails. */
function decimalIn(b: Buffer, from: number, to: number): number {
  if (to === from || to - from > 10) return Infinity;
  let n = 0;
  for (let i = from; i < to; i++) n = n * 10 + (b[i]! - 0x30);
  return n;
}

const NOREPLY = Buffer.from(' noreply', 'latin1');

function isNoreply(b: Buffer, from: number, to: number): boolean {
  if (to - from !== NOREPLY.length) return false;
  for (let i = 0; i < NOREPLY.length; i++) if (b[from + i] !== NOREPLY[i]) return false;
  return true;
}

/** delete <key> [0] [noreply] (the 0 is an old client's habit, accepted as memcached did) */
function del(tokens: string[], noreply: boolean, cache: Cache): Request {
  if (tokens.length < 2) return reply(line(ERR.badFormat));
  const rest = tokens.slice(2, noreply ? -1 : undefined);
  if (rest.length > 1 || (rest.length === 1 && rest[0] !== '0')) return reply(line(ERR.deleteUsage), noreply);
  const key = keyOf(tokens[1]!);
  if (key === undefined) return reply(line(ERR.badFormat), noreply);
  return write(noreply, async () => {
    const outcome = await cache.delete(key);
    return outcome === 'DELETED' ? DELETED : NOT_FOUND;
  });
}

/** incr|decr <key> <value> [noreply] */
function arithmetic(incr: boolean, tokens: string[], noreply: boolean, cache: Cache): Request {
  if (tokens.length < 3) return reply(line(ERR.badFormat));
  const key = keyOf(tokens[1]!);
  if (key === undefined) return reply(line(ERR.badFormat), noreply);
  const delta = parseU64(tokens[2]!);
  if (delta === undefined) return reply(line(ERR.badDelta), noreply);
  return write(noreply, async () => {
    const outcome = await cache.arith({ key, incr, delta });
    if (outcome.status === 'OK') return line(outcome.value.toString());
    return outcome.status === 'NON_NUMERIC' ? line(ERR.nonNumeric) : NOT_FOUND;
  });
}

/** touch <key> <exptime> [noreply] */
function touch(tokens: string[], noreply: boolean, cache: Cache): Request {
  if (tokens.length < 3) return reply(line(ERR.badFormat));
  const key = keyOf(tokens[1]!);
  if (key === undefined) return reply(line(ERR.badFormat), noreply);
  const exptime = parseI32(tokens[2]!);
  if (exptime === undefined) return reply(line(ERR.badExptime), noreply);
  return write(noreply, async () => {
    if (!(await cache.touch(key, ttlFromExptime(exptime, cache.now())))) return NOT_FOUND;
    // As memcached: a touch is an access (mg h and l, me fetch and la show it).
    const found = cache.find(key);
    if (found !== undefined) cache.tracker.fetched(key, found.version, cache.now());
    return TOUCHED;
  });
}

/** flush_all [delay] [noreply] */
function flushAll(tokens: string[], noreply: boolean, cache: Cache): Request {
  let delay = 0;
  if (tokens.length !== (noreply ? 2 : 1)) {
    const d = tokens[1] === undefined ? undefined : parseI32(tokens[1]);
    if (d === undefined) return reply(line(ERR.badExptime), noreply);
    delay = d;
  }
  return write(noreply, async () => {
    await cache.flushAll(delay > 0 ? ttlFromExptime(delay, cache.now()) : 0);
    return OK;
  });
}

function stats(tokens: string[], state: ServerState): Request {
  const sub = tokens[1];
  let lines: [string, string | number][] | undefined;
  const run = (): Reply => {
    if (sub === undefined) lines = generalStats(state);
    else if (sub === 'settings') lines = settingsStats(state);
    else if (sub === 'items' || sub === 'slabs' || sub === 'conns') lines = [];
    else if (sub === 'sizes') lines = [['sizes_status', 'disabled']];
    else if (sub === 'reset') {
      for (const k of Object.keys(state.cache.counters)) if (k !== 'total_items') state.cache.counters[k] = 0;
      state.totalConnections = state.currConnections;
      state.rejectedConnections = 0;
      state.bytesRead = 0;
      state.bytesWritten = 0;
      return line('RESET');
    } else return line(ERR.unknownCommand);
    return Buffer.from(`${lines.map(([k, v]) => `STAT ${k} ${v}\r\n`).join('')}END\r\n`, 'latin1');
  };
  return { dataBytes: -1, swallow: false, exclusive: true, close: false, badChunk: null, run };
}

/** A write that may be in flight beside the connection's others; its errors become SERVER_ERROR lines. */
function write(noreply: boolean, run: () => Promise<Buffer>): Request {
  return {
    dataBytes: -1,
    swallow: false,
    exclusive: false,
    close: false,
    badChunk: null,
    run: async () => {
      try {
        const r = await run();
        return noreply ? null : r;
      } catch (error) {
        return noreply ? null : line(serverErrorLine(error));
      }
    },
  };
}

