// The public surface of atomio. Nothing else is reachable from outside the package.

export { open, Store, DATA_FILE_NAME } from './store/store.js';
export type { OpenOptions, StoreStats, StoreLimits } from './store/store.js';
export { KvPool } from './kv/pool.js';
export type { Entry, PutOptions, DeleteOptions, IncrOptions, ListOptions, Range, PoolStats } from './kv/pool.js';
export type { Key, Value } from './kv/encoding.js';
export { AtomicBatch } from './store/atomic.js';
export type { AtomicResult, Check } from './store/atomic.js';
export { Stream, DEFAULT_READ_LIMIT } from './stream/stream.js';
export type { StreamRecord, StreamReadOptions, StreamRetention, StreamStats, TailOptions } from './stream/stream.js';
export { Region, RegionView, MAX_REGION_BUFFER_BYTES, DEFAULT_PAGE_SIZE } from './region/region.js';
export type { RegionOptions, CommitOptions as RegionCommitOptions, RegionVersion, RegionRetention, RegionStats } from './region/region.js';
export { MAX_FACE_NAME_BYTES } from './kv/encoding.js';
export { Transaction } from './store/transaction.js';
export { Snapshot } from './store/snapshot.js';
export type { SnapshotInfo } from './store/snapshot.js';
export type { TransactionOptions } from './store/transaction.js';
export { BlockDevice } from './block/block.js';
export type { AtomicOp, AtomicOptions, BlockCondition, MappedExtent, WriteOptions } from './block/block.js';
export type { Durability, RecoveryReport, Corruption } from './engine/engine.js';
export { AtomioError, isAtomioError } from './base/errors.js';
export type { ErrorCode } from './base/errors.js';
export { ManualClock, systemClock } from './base/clock.js';
export type { Clock } from './base/clock.js';
export {
  MAX_ATOMIC_OPS,
  MAX_ATOMIC_BYTES,
  MAX_CONDITIONS,
  ADDRESS_SPACE_BYTES,
  DEFAULT_CAPACITY_BYTES,
  DEFAULT_SEGMENT_BYTES,
  MAX_KEY_BYTES,
  MAX_VALUE_BYTES,
  MAX_POOL_NAME_BYTES,
  MAX_TRANSACTION_READS,
  DEFAULT_CACHE_BYTES,
  SPLIT_HEADROOM_EXTENTS,
} from './engine/limits.js';
