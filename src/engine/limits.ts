// Every limit has a name. These are part of the public contract (README, "Limits").

import { BLOCK_OP_BYTES, CHUNK_CRC_BYTES } from '../log/format.js';

/** Most ops (writes + trims) in one atomic commit. */
export const MAX_ATOMIC_OPS = 1024;
/** Most data bytes in one atomic commit (the store's segment size may lower it; see Store.limits). */
export const MAX_ATOMIC_BYTES = 8 * 1024 * 1024;
/** Most conditions attached to one commit. */
export const MAX_CONDITIONS = 64;
/** Longest kv key, in bytes. */
export const MAX_KEY_BYTES = 2048;
/** Largest kv value, in bytes (a store's segment size may lower it; see Store.limits). */
export const MAX_VALUE_BYTES = 16 * 1024 * 1024;
/** Longest pool name, in UTF-8 bytes. */
export const MAX_POOL_NAME_BYTES = 255;
/** Most keys and ranges a transaction may read (each becomes a check at commit). */
export const MAX_TRANSACTION_READS = 4096;
/** Bytes of memory for copies of hot kv values, unless open() says otherwise. */
export const DEFAULT_CACHE_BYTES = 64 * 1024 * 1024;
/** Highest addressable byte of the block face is 2^53: lbas stay exact in a JS number. */
export const ADDRESS_SPACE_BYTES = 2 ** 53;

export const DEFAULT_CAPACITY_BYTES = 1024 * 1024 * 1024;
export const DEFAULT_SEGMENT_BYTES = 16 * 1024 * 1024;
export const MIN_SEGMENT_BYTES = 64 * 1024;
export const MAX_SEGMENT_BYTES = 1024 * 1024 * 1024;
/** The extent map packs segment × 2^32 + offset into a float64, exact below 2^53. */
export const MAX_SEGMENTS = 2 ** 21;
/** A group commit gathers at most this many data bytes before it writes. */
export const MAX_BATCH_BYTES = 32 * 1024 * 1024;
/** Batches being written at once; the next is admitted and encoded while they are. */
export const MAX_BATCHES_WRITING = 2;
/** Segments kept free for the cleaner's own writes, beyond what a checkpoint needs. */
export const CLEANER_RESERVE_SEGMENTS = 2;
/**
 * Log bytes a mapped block extent takes beside its data, at least: its op descriptor and one
 * chunk's checksum (docs/format.md). usableBytes takes them off, since live bytes count data.
 */
export const EXTENT_OVERHEAD_BYTES = BLOCK_OP_BYTES + CHUNK_CRC_BYTES;
/**
 * Extents a full store may still gain: small overwrites split extents, each costing log and
 * checkpoint room, so growth stops this many extents short of the limit (usableBytes).
 */
export const SPLIT_HEADROOM_EXTENTS = 1024;
/** Share of the non-reserved space that live data may fill; the rest lets the cleaner work. */
export const USABLE_FRACTION = 0.9;
/** Background cleaning starts below this share of free segments. */
export const CLEAN_BELOW_FREE_FRACTION = 0.08;
/** A sealed segment whose erase count trails the maximum by this much is moved to level wear. */
export const WEAR_SPREAD_LIMIT = 32;
export const DEFAULT_FLUSH_INTERVAL_MS = 1000;
/** Never-used segments kept zero-filled ahead of the log (on sparse files). */
export const PREFILL_AHEAD_SEGMENTS = 2;
/**
 * Zero-filling ahead pays while flushes are small: then the file system's allocation of new
 * blocks is a large part of each fdatasync. Past this many bytes per flush (on average) the
 * zeros cost the medium more than the allocation does, and filling stops.
 */
export const PREFILL_MAX_FLUSH_BYTES = 32 * 1024;
