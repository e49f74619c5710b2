// The public surface of atomio. Nothing else is reachable from outside the package.

export { open, Store, DATA_FILE_NAME } from './store/store.js';
export type { OpenOptions, StoreStats } from './store/store.js';
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
} from './engine/limits.js';
