// The kv face's maps: each pool's ordered index of keys, the TTL deadlines of keys and the
// cache of hot values. The engine applies kv ops here (live, on replay and on relocation),
// and hears of every change in the bytes a segment holds live through `live`.
//
// Invariants:
// - a key's entry locates the [crc][value] data of the newest put of that key;
// - every entry counts kvEntryBytes(key, value) live bytes in the segment it points into,
//   expired or not, until it is removed (so per-segment live bytes stay exact);
// - pool ids are never reused: a dropped pool's relocated or replayed ops find no pool.

import { assert } from '../base/assert.js';
import { RecordKind, kvEntryBytes } from '../log/format.js';
import { ExpiryQueue } from './expiry.js';
import { KeyIndex, type KeyMeta } from './key-index.js';
import { ValueCache } from './value-cache.js';

export const TWO_32 = 2 ** 32;

export interface Pool {
  readonly id: number;
  readonly name: string;
  index: KeyIndex;
  /** Key and value bytes of the entries (expired ones until they are swept). */
  liveBytes: number;
  expiredKeys: number;
  expiredBytes: number;
}

interface KeyDeadline {
  expiresAt: number;
  pool: number;
  key: Buffer;
  version: number;
}

export function locationOf(meta: KeyMeta): { segment: number; dataOffset: number } {
  return { segment: Math.floor(meta.location / TWO_32), dataOffset: meta.location % TWO_32 };
}

export class Pools {
  readonly byId = new Map<number, Pool>();
  readonly byName = new Map<string, Pool>();
  nextId = 1;
  readonly expiry = new ExpiryQueue<KeyDeadline>();
  readonly cache: ValueCache;
  /** Bytes of expired values reclaimed without a copy. */
  expiredBytes = 0;

  constructor(
    cacheBytes: number,
    private readonly live: (segment: number, delta: number) => void,
  ) {
    this.cache = new ValueCache(cacheBytes);
  }

  get(id: number): Pool | undefined {
    return this.byId.get(id);
  }

  named(name: string): Pool | undefined {
    return this.byName.get(name);
  }

  create(id: number, name: string, index = new KeyIndex()): Pool {
    assert(!this.byId.has(id), `pool id ${id} is new`);
    const pool: Pool = { id, name, index, liveBytes: 0, expiredKeys: 0, expiredBytes: 0 };
    this.byId.set(id, pool);
    this.byName.set(name, pool);
    if (id >= this.nextId) this.nextId = id + 1;
    return pool;
  }

  /** Removes a pool and all its keys; their space returns to their segments. */
  drop(id: number): void {
    const pool = this.byId.get(id);
    if (pool === undefined) return;
    pool.index.forEach((key, meta) => this.live(segmentOf(meta), -kvEntryBytes(key.length, meta.valueBytes)));
    this.byId.delete(id);
    if (this.byName.get(pool.name) === pool) this.byName.delete(pool.name);
  }

  /**
   * A put: for a commit the key's new value; for a relocation, a new location of the value
   * the key still holds at `version` (and nothing when it has moved on).
   */
  put(
    kind: RecordKind,
    poolId: number,
    key: Uint8Array,
    version: number,
    expiresAt: number,
    segment: number,
    dataOffset: number,
    valueBytes: number,
    value?: Uint8Array,
  ): void {
    const pool = this.byId.get(poolId);
    if (pool === undefined) return;
    const bytes = kvEntryBytes(key.length, valueBytes);
    const location = segment * TWO_32 + dataOffset;
    if (kind === RecordKind.relocation) {
      const meta = pool.index.get(key);
      if (meta === undefined || meta.version !== version) return;
      this.live(segmentOf(meta), -bytes);
      this.live(segment, bytes);
      pool.index.update(key, { location });
      return;
    }
    const cacheAt = value === undefined ? -1 : this.cache.add(value);
    const previous = pool.index.set(key, { version, expiresAt, location, valueBytes, cacheAt });
    if (previous !== undefined) this.release(pool, key.length, previous);
    this.live(segment, bytes);
    pool.liveBytes += key.length + valueBytes;
    if (expiresAt !== 0) this.expiry.push({ expiresAt, pool: poolId, key: Buffer.from(key), version });
  }

  delete(poolId: number, key: Uint8Array): void {
    const pool = this.byId.get(poolId);
    if (pool === undefined) return;
    const previous = pool.index.delete(key);
    if (previous !== undefined) this.release(pool, key.length, previous);
  }

  touch(poolId: number, key: Uint8Array, expiresAt: number): void {
    const pool = this.byId.get(poolId);
    if (pool === undefined) return;
    const meta = pool.index.get(key);
    if (meta === undefined) return;
    pool.index.update(key, { expiresAt });
    if (expiresAt !== 0) this.expiry.push({ expiresAt, pool: poolId, key: Buffer.from(key), version: meta.version });
  }

  private release(pool: Pool, keyBytes: number, meta: KeyMeta): void {
    this.live(segmentOf(meta), -kvEntryBytes(keyBytes, meta.valueBytes));
    pool.liveBytes -= keyBytes + meta.valueBytes;
  }

  /** Removes keys whose TTL has passed, so their segments empty without being copied. */
  sweep(now: number): void {
    for (let d = this.expiry.peek(); d !== undefined && d.expiresAt <= now; d = this.expiry.peek()) {
      this.expiry.pop();
      const pool = this.byId.get(d.pool);
      if (pool === undefined) continue;
      const meta = pool.index.get(d.key);
      if (meta === undefined || meta.version !== d.version || meta.expiresAt === 0 || meta.expiresAt > now) continue;
      pool.index.delete(d.key);
      this.release(pool, d.key.length, meta);
      pool.expiredKeys++;
      pool.expiredBytes += d.key.length + meta.valueBytes;
      this.expiredBytes += kvEntryBytes(d.key.length, meta.valueBytes);
    }
  }

  /** Bytes a checkpoint of the pools takes, about (for reserving room). */
  checkpointBytes(): number {
    let bytes = 16;
    for (const pool of this.byId.values()) bytes += 64 + pool.name.length * 3 + pool.index.keyBytes + pool.index.size * 48;
    return bytes;
  }

  clear(): void {
    this.byId.clear();
    this.byName.clear();
    this.expiry.clear();
  }
}

export function segmentOf(meta: KeyMeta): number {
  return Math.floor(meta.location / TWO_32);
}
