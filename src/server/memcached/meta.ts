// The meta commands: mg, ms, md, ma, me, mn.
//
// Flags are parsed as memcached does: one token per flag, its first character the flag and
// the rest its argument; a flag given twice is "CLIENT_ERROR duplicate flag", an unknown one
// "CLIENT_ERROR invalid flag"; flags that mean nothing to a command are accepted and ignored.
// Return flags come in the order the request gave them. Quiet mode (q) drops the reply that
// means "as expected" (EN for mg, HD for ms/md/ma); errors are always sent.
//
// E(token) makes token the CAS value of the item a command creates or changes (mg only
// when N creates it, md only with I or x); it is kept in the item's value (see item.ts), so
// it outlives a restart as a version does. A change without E gives the item a new version
// as its CAS again.

import { casMatches, serverErrorLine, visibleCas, type Cache, type StoreMode } from './cache.js';
import {
  CRLF,
  ERR,
  MAX_KEY_BYTES,
  MAX_META_TOKENS,
  MAX_OPAQUE_BYTES,
  checkKey,
  decodeBase64Key,
  line,
  parseI32,
  parseU32,
  parseU64,
  ttlFromExptime,
} from './protocol.js';
import { reply, type Reply, type Request } from './request.js';

interface MetaFlags {
  /** The flag tokens, in order. */
  tokens: string[];
  seen: Set<string>;
  key: Buffer;
  /** The key as the client wrote it (base64 when binary). */
  keyText: string;
  binary: boolean;
  /** TTLs in ms as ttlFromExptime gives them (0 never, -1 already expired). */
  N?: number;
  T?: number;
  /** The exptimes N and T were given as (seconds), for a TTL taken again when the data is in. */
  exptimes: { N?: number; T?: number };
  R?: number;
  C?: bigint;
  /** The CAS value to give the item if it is changed. */
  E?: bigint;
  F?: number;
  J?: bigint;
  D?: bigint;
  M?: string;
}

const HD = 'HD';
const MN = line('MN');
const EN = line('EN');

export function metaCommand(name: string, tokens: string[], cache: Cache): Request {
  cache.counters.cmd_meta!++;
  switch (name) {
    case 'mn':
      return reply(MN);
    case 'me':
      return metaDebug(tokens, cache);
    case 'mg':
      return metaGet(tokens, cache);
    case 'ms':
      return metaSet(tokens, cache);
    case 'md':
      return metaDelete(tokens, cache);
    default:
      return metaArithmetic(tokens, cache);
  }
}

/** Parses flags from tokens[start]; an error line, or the flags. */
function parseFlags(tokens: string[], start: number, cache: Cache): MetaFlags | string {
  const keyText = tokens[1]!;
  if (keyText.length > MAX_KEY_BYTES) return ERR.badFormat;
  if (tokens.length > MAX_META_TOKENS) return ERR.tooManyFlags;
  const f: MetaFlags = { tokens: tokens.slice(start), seen: new Set(), key: Buffer.from(keyText, 'latin1'), keyText, binary: false, exptimes: {} };
  const now = cache.now();
  for (const t of f.tokens) {
    const c = t[0]!;
    if (t.charCodeAt(0) >= 127 || f.seen.has(c)) return ERR.duplicateFlag;
    f.seen.add(c);
    switch (c) {
      case 'b': {
        const key = decodeBase64Key(keyText);
        if (key === undefined) return ERR.badKeyEncoding;
        f.key = key;
        f.binary = true;
        break;
      }
      case 'N':
      case 'T':
      case 'R': {
        const exptime = parseI32(t.slice(1));
        if (exptime === undefined) return ERR.badToken;
        f[c] = ttlFromExptime(exptime, now);
        if (c !== 'R') f.exptimes[c] = exptime;
        break;
      }
      case 'C':
      case 'E': {
        const v = parseU64(t.slice(1));
        if (v === undefined) return ERR.badToken;
        f[c] = v;
        break;
      }
      case 'F': {
        const v = parseU32(t.slice(1));
        if (v === undefined) return ERR.badFormat;
        f.F = v;
        break;
      }
      case 'J': {
        const v = parseU64(t.slice(1));
        if (v === undefined) return ERR.badInitial;
        f.J = v;
        break;
      }
      case 'D': {
        const v = parseU64(t.slice(1));
        if (v === undefined) return ERR.badMetaDelta;
        f.D = v;
        break;
      }
      case 'M':
        f.M = t.slice(1, 2);
        break;
      case 'O':
        if (t.length > MAX_OPAQUE_BYTES) return ERR.opaqueTooLong;
        break;
      case 'P':
      case 'L':
      case 'k':
      case 's':
      case 't':
      case 'c':
      case 'f':
      case 'v':
      case 'h':
      case 'l':
      case 'u':
      case 'q':
      case 'x':
      case 'I':
        break;
      default:
        return ERR.invalidFlag;
    }
  }
  if (!f.binary && !checkKey(f.key)) return ERR.badFormat;
  return f;
}

/** " k<key>" (and " b" for a binary key) and " O<opaque>" in request order; other flags through `each`. */
function returnFlags(f: MetaFlags, each?: (flag: string) => string): string {
  let out = '';
  for (const t of f.tokens) {
    const c = t[0]!;
    if (c === 'O') out += ` ${t}`;
    else if (c === 'k') out += f.binary ? ` k${f.keyText} b` : ` k${f.keyText}`;
    else if (each !== undefined) out += each(c);
  }
  return out;
}

function exclusive(run: () => Promise<Reply> | Reply): Request {
  return { dataBytes: -1, swallow: false, exclusive: true, close: false, badChunk: null, run: () => guarded(run) };
}

function inFlight(run: () => Promise<Reply>): Request {
  return { dataBytes: -1, swallow: false, exclusive: false, close: false, badChunk: null, run: () => guarded(run) };
}

async function guarded(run: () => Promise<Reply> | Reply): Promise<Reply> {
  try {
    return await run();
  } catch (error) {
    return line(serverErrorLine(error));
  }
}

// ---------------------------------------------------------------------------------------
// me <key> [b]

function metaDebug(tokens: string[], cache: Cache): Request {
  if (tokens.length < 2 || tokens[1]!.length > MAX_KEY_BYTES) return reply(line(ERR.badFormat));
  let key: Buffer | undefined = Buffer.from(tokens[1]!, 'latin1');
  if (tokens[2] === 'b') key = decodeBase64Key(tokens[1]!);
  else if (!checkKey(key)) key = undefined;
  if (key === undefined) return reply(line(ERR.badFormat));
  const k = key;
  return exclusive(() => {
    const found = cache.find(k);
    if (found === undefined) return EN;
    const now = cache.now();
    const tracked = cache.tracker.get(k, found.version);
    const la = Math.max(0, Math.floor((now - (tracked?.lastAccessMs ?? found.item.writtenAt * 1000)) / 1000));
    const exp = found.expiresAt === 0 ? -1 : Math.max(0, Math.ceil((found.expiresAt - now) / 1000));
    const size = k.length + found.item.data.length;
    return line(`ME ${tokens[1]!} exp=${exp} la=${la} cas=${visibleCas(found)} fetch=${tracked?.fetched === true ? 'yes' : 'no'} cls=1 size=${size}`);
  });
}

// ---------------------------------------------------------------------------------------
// mg <key> <flags>*

function metaGet(tokens: string[], cache: Cache): Request {
  if (tokens.length < 2) return reply(line(ERR.badFormat));
  const f = parseFlags(tokens, 2, cache);
  if (typeof f === 'string') return reply(line(f));
  const c = cache.counters;
  const wantsValue = f.seen.has('v');
  const touching = f.T !== undefined;
  return exclusive(async () => {
    let found = cache.find(f.key);
    let created = false;
    if (found === undefined && f.N !== undefined && f.N >= 0) {
      const version = await cache.vivify(f.key, f.N, f.E);
      if (version !== undefined) {
        const now = cache.now();
        const item = { flags: 0, stale: false, writtenAt: Math.floor(now / 1000), cas: f.E, data: Buffer.alloc(0) };
        found = { item, version, expiresAt: f.N > 0 ? now + f.N : 0 };
        created = true;
      } else {
        found = cache.find(f.key);
      }
    }
    if (found === undefined) {
      c[touching ? 'cmd_touch' : 'cmd_get']!++;
      c[touching ? 'touch_misses' : 'get_misses']!++;
      return f.seen.has('q') ? null : line(`EN${returnFlags(f)}`);
    }
    const { item, version } = found;
    let expiresAt = found.expiresAt;
    if (f.T !== undefined) {
      await cache.touch(f.key, f.T); // counts cmd_touch and touch_hits
      expiresAt = f.T > 0 ? cache.now() + f.T : f.T === 0 ? 0 : cache.now();
    } else {
      c.cmd_get!++;
      c.get_hits!++;
    }
    const now = cache.now();
    const tracked = cache.tracker.get(f.key, version);
    // The item this request created is marked won already (Cache.vivify): that win is ours.
    const tokenSent = !created && tracked?.tokenSent === true;
    const sendValue = wantsValue && !(f.C !== undefined && casMatches(f.C, found));
    let won = created && f.N !== undefined;
    let shownExpiry = found.expiresAt;
    const flags = returnFlags(f, (flag) => {
      switch (flag) {
        case 'T':
          shownExpiry = expiresAt;
          return '';
        case 'R':
          if (!tokenSent && !created && expiresAt !== 0 && f.R !== undefined && f.R > 0 && expiresAt - now < f.R) won = true;
          return '';
        case 's':
          return ` s${item.data.length}`;
        case 't':
          return ` t${cache.ttlSeconds(shownExpiry)}`;
        case 'c':
          return ` c${visibleCas(found)}`;
        case 'f':
          return ` f${item.flags}`;
        case 'l':
          return ` l${Math.max(0, Math.floor((now - (tracked?.lastAccessMs ?? item.writtenAt * 1000)) / 1000))}`;
        case 'h':
          return ` h${tracked?.fetched === true ? 1 : 0}`;
        default:
          return '';
      }
    });
    let tail = '';
    if (tokenSent) tail += ' Z';
    if (item.stale) {
      tail += ' X';
      if (!tokenSent) won = true;
    }
    if (won) {
      tail += ' W';
      cache.tracker.tokenSent(f.key, version, now);
    }
    if (!f.seen.has('u')) cache.tracker.fetched(f.key, version, now);
    if (!sendValue) return line(`${HD}${flags}${tail}`);
    return Buffer.concat([line(`VA ${item.data.length}${flags}${tail}`), item.data, CRLF]);
  });
}

// ---------------------------------------------------------------------------------------
// ms <key> <datalen> <flags>*

const MS_MODES: Record<string, StoreMode> = { E: 'add', A: 'append', P: 'prepend', R: 'replace', S: 'set' };
const MS_CODES = { STORED: 'HD', NOT_STORED: 'NS', EXISTS: 'EX', NOT_FOUND: 'NF' } as const;

function metaSet(tokens: string[], cache: Cache): Request {
  if (tokens.length < 3) return reply(line(ERR.badFormat));
  const bytes = parseI32(tokens[2]!);
  if (bytes === undefined || bytes < 0) return reply(line(ERR.badFormat));
  cache.counters.cmd_set!++;
  const refuse = (text: string): Request => ({ dataBytes: bytes, swallow: true, exclusive: false, close: false, badChunk: null, run: () => line(text) });
  const f = parseFlags(tokens, 3, cache);
  if (typeof f === 'string') return refuse(f);
  const mode = f.M === undefined ? 'set' : MS_MODES[f.M];
  if (mode === undefined) return refuse(ERR.msBadMode);
  if (bytes > cache.maxItemBytes) {
    cache.counters.store_too_large!++;
    // As memcached (in every ms mode): a refused store leaves no stale value behind.
    const key = f.key;
    const tooLarge = line(ERR.tooLarge);
    return { ...refuse(ERR.tooLarge), run: () => guarded(async () => (await cache.pool.delete(key), tooLarge)) };
  }
  const concat = mode === 'append' || mode === 'prepend';
  const ttl = f.T ?? 0;
  const reads = (f.C !== undefined && mode !== 'add') || (concat && f.N !== undefined) || (mode === 'add' && ttl < 0);
  // As memcached: ms takes E0 as no E (a fresh CAS); mg, md and ma store a CAS of 0.
  const newCas = f.E === 0n ? undefined : f.E;
  const run = async (data: Buffer | undefined): Promise<Reply> => {
    const outcome = await cache.store({
      mode,
      key: f.key,
      flags: f.F ?? 0,
      ttl: ttlWhenIn(f.exptimes.T, cache) ?? 0,
      data: data!,
      cas: f.C,
      allowStale: f.seen.has('I'),
      vivifyTtl: concat ? ttlWhenIn(f.exptimes.N, cache) : undefined,
      newCas,
    });
    if (outcome.status === 'STORED' && f.seen.has('q')) return null;
    const cas = outcome.status === 'STORED' ? (newCas ?? outcome.version) : 0;
    const flags = returnFlags(f, (flag) => (flag === 'c' ? ` c${cas}` : flag === 's' ? ` s${outcome.status === 'STORED' ? outcome.size : bytes}` : ''));
    return line(`${MS_CODES[outcome.status]}${flags}`);
  };
  return { dataBytes: bytes, swallow: false, exclusive: reads, close: false, badChunk: line(ERR.badDataChunk), run: (data) => guarded(() => run(data)) };
}

/** The TTL of a flag's exptime taken again once the data block is in (an absolute exptime is a moment). */
function ttlWhenIn(exptime: number | undefined, cache: Cache): number | undefined {
  return exptime === undefined ? undefined : ttlFromExptime(exptime, cache.now());
}

// ---------------------------------------------------------------------------------------
// md <key> <flags>*

function metaDelete(tokens: string[], cache: Cache): Request {
  if (tokens.length < 2) return reply(line(ERR.badFormat));
  const f = parseFlags(tokens, 2, cache);
  if (typeof f === 'string') return reply(line(f));
  const stale = f.seen.has('I');
  const removeValue = f.seen.has('x');
  const run = async (): Promise<Reply> => {
    const outcome = stale || removeValue
      ? await cache.invalidate(f.key, { cas: f.C, stale, removeValue, flags: f.F ?? 0, ttl: f.T, newCas: f.E })
      : await cache.delete(f.key, f.C);
    if (outcome === 'DELETED' && f.seen.has('q')) return null;
    return line(`${outcome === 'DELETED' ? HD : outcome === 'EXISTS' ? 'EX' : 'NF'}${returnFlags(f)}`);
  };
  return stale || removeValue || f.C !== undefined ? exclusive(run) : inFlight(run);
}

// ---------------------------------------------------------------------------------------
// ma <key> <flags>*

function metaArithmetic(tokens: string[], cache: Cache): Request {
  if (tokens.length < 2) return reply(line(ERR.badFormat));
  const f = parseFlags(tokens, 2, cache);
  if (f === ERR.badFormat) return reply(line(f));
  if (typeof f === 'string') return reply(line(ERR.maInvalidFlag));
  let incr = true;
  if (f.M !== undefined) {
    if (f.M === 'I' || f.M === '+') incr = true;
    else if (f.M === 'D' || f.M === '-') incr = false;
    else return reply(line(ERR.maBadMode));
  }
  const run = async (): Promise<Reply> => {
    const outcome = await cache.arith({
      key: f.key,
      incr,
      delta: f.D ?? 1n,
      // memcached's arithmetic takes a CAS of 0 as no compare (ms and md compare it).
      cas: f.C === 0n ? undefined : f.C,
      vivify: f.N === undefined ? undefined : { ttl: f.N, initial: f.J ?? 0n },
      ttl: f.T,
      newCas: f.E,
    });
    if (outcome.status === 'NON_NUMERIC') return line(ERR.nonNumeric);
    if (outcome.status !== 'OK') return line(`${outcome.status === 'NOT_FOUND' ? 'NF' : 'EX'}${returnFlags(f)}`);
    if (f.seen.has('q')) return null;
    const expiresAt = f.seen.has('t') ? (cache.find(f.key)?.expiresAt ?? 0) : 0;
    const cas = f.E ?? outcome.version;
    const flags = returnFlags(f, (flag) => (flag === 'c' ? ` c${cas}` : flag === 't' ? ` t${cache.ttlSeconds(expiresAt)}` : ''));
    const value = outcome.value.toString();
    if (!f.seen.has('v')) return line(`${HD}${flags}`);
    return line(`VA ${value.length}${flags}\r\n${value}`);
  };
  return f.C !== undefined || f.N !== undefined ? exclusive(run) : inFlight(run);
}
