// How a region lays itself out in its reserved kv pool ('\u0000region:NAME').
//
//   'm'                          metadata, JSON: { v: 1, size, pageSize, retention }
//   'p' page u32 BE, ~version u64 BE   a page as version `version` left it (13 bytes). The
//                                 version is stored inverted, so a page's newest version
//                                 sorts first and "page p as of version v" is the first key
//                                 at or after 'p' p ~v. The value is the page's bytes, or
//                                 empty for a page of zeros (sparse regions stay small).
//   'v' version u64 BE            a committed version: [commit time f64 BE][page count u32 BE]
//                                 [the pages it wrote, u32 BE each, ascending].
// A commit writes its pages and its version key in one record: a version key exists exactly
// when all of its pages do.

import { AtomioError } from '../base/errors.js';

const TWO_32 = 2 ** 32;

export const META_KEY = Buffer.from('m', 'latin1');
const PAGE_TAG = 0x70; // 'p'
const VERSION_TAG = 0x76; // 'v'
export const PAGE_KEY_BYTES = 13;
export const VERSION_KEY_BYTES = 9;
/** Bounds of the page keys and of the version keys. */
export const PAGES_START = Buffer.from([PAGE_TAG]);
export const PAGES_END = Buffer.from([PAGE_TAG + 1]);
export const VERSIONS_START = Buffer.from([VERSION_TAG]);
export const VERSIONS_END = Buffer.from([VERSION_TAG + 1]);

export const PAGE_PREFIX_BYTES = 5;

export function pageKey(page: number, version: number): Buffer {
  return writePageKey(Buffer.allocUnsafe(PAGE_KEY_BYTES), page, version);
}

/** Writes the key of `page` at `version` into `key` (PAGE_KEY_BYTES long); returns it. */
export function writePageKey(key: Buffer, page: number, version: number): Buffer {
  key[0] = PAGE_TAG;
  key.writeUInt32BE(page, 1);
  key.writeUInt32BE(0xffffffff - Math.floor(version / TWO_32), 5);
  key.writeUInt32BE(0xffffffff - (version % TWO_32), 9);
  return key;
}

/** The first key of page `page` (its newest version); pagePrefix(page + 1) ends its keys. */
export function pagePrefix(page: number): Buffer {
  if (page >= TWO_32) return PAGES_END;
  return writePagePrefix(Buffer.allocUnsafe(PAGE_PREFIX_BYTES), page);
}

/** Writes the prefix of `page` (< 2^32) into `key` (PAGE_PREFIX_BYTES long); returns it. */
export function writePagePrefix(key: Buffer, page: number): Buffer {
  key[0] = PAGE_TAG;
  key.writeUInt32BE(page, 1);
  return key;
}

export function pageOf(key: Buffer): { page: number; version: number } {
  return {
    page: key.readUInt32BE(1),
    version: (0xffffffff - key.readUInt32BE(5)) * TWO_32 + (0xffffffff - key.readUInt32BE(9)),
  };
}

/** The version of a page key (pageOf without the object). */
export function pageVersionOf(key: Buffer): number {
  return (0xffffffff - key.readUInt32BE(5)) * TWO_32 + (0xffffffff - key.readUInt32BE(9));
}

export function versionKey(version: number): Buffer {
  const key = Buffer.allocUnsafe(VERSION_KEY_BYTES);
  key[0] = VERSION_TAG;
  key.writeUInt32BE(Math.floor(version / TWO_32), 1);
  key.writeUInt32BE(version % TWO_32, 5);
  return key;
}

export function versionOf(key: Buffer): number {
  return key.readUInt32BE(1) * TWO_32 + key.readUInt32BE(5);
}

/** A committed version as the region keeps it in memory. */
export interface VersionRecord {
  version: number;
  /** ms since the epoch, by the store's clock, when the commit was made. */
  committedAt: number;
  /** The pages the version wrote, ascending. */
  pages: Uint32Array;
  /**
   * For each page, the newest version stored below this one when it landed (0: none), or
   * undefined when not known (loaded from the store, or a 'paged' region).
   */
  older?: number[] | undefined;
}

export function encodeVersion(committedAt: number, pages: ArrayLike<number>): Buffer {
  const out = Buffer.allocUnsafe(12 + 4 * pages.length);
  out.writeDoubleBE(committedAt, 0);
  out.writeUInt32BE(pages.length, 8);
  for (let i = 0; i < pages.length; i++) out.writeUInt32BE(pages[i]!, 12 + 4 * i);
  return out;
}

export function decodeVersion(version: number, bytes: Buffer): VersionRecord {
  const count = bytes.length >= 12 ? bytes.readUInt32BE(8) : -1;
  if (count < 0 || bytes.length !== 12 + 4 * count) {
    throw new AtomioError('ERR_FORMAT', `the record of region version ${version} is not in a format this atomio reads`, { version });
  }
  const pages = new Uint32Array(count);
  for (let i = 0; i < count; i++) pages[i] = bytes.readUInt32BE(12 + 4 * i);
  return { version, committedAt: bytes.readDoubleBE(0), pages };
}

/** What a region keeps; 0 means no limit. The newest version is always kept. */
export interface Retention {
  /** Keep the newest `count` versions. */
  count: number;
  /** Keep the versions committed at most `age` ms ago. */
  age: number;
}

export interface Meta {
  size: number;
  pageSize: number;
  retention: Retention;
}

export function encodeMeta(meta: Meta): Buffer {
  return Buffer.from(JSON.stringify({ v: 1, size: meta.size, pageSize: meta.pageSize, retention: meta.retention }), 'utf8');
}

export function decodeMeta(bytes: Buffer): Meta {
  let parsed: unknown;
  try {
    parsed = JSON.parse(bytes.toString('utf8'));
  } catch {
    parsed = undefined;
  }
  const m = parsed as { v?: unknown; size?: unknown; pageSize?: unknown; retention?: Partial<Retention> } | undefined;
  if (m === undefined || m.v !== 1 || typeof m.size !== 'number' || typeof m.pageSize !== 'number' || typeof m.retention !== 'object' || m.retention === null) {
    throw new AtomioError('ERR_FORMAT', "a region's metadata is not in a format this atomio reads", {});
  }
  return { size: m.size, pageSize: m.pageSize, retention: { count: m.retention.count ?? 0, age: m.retention.age ?? 0 } };
}
