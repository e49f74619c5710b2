// store.snapshot(): a read-only view of every pool and the block face at one moment.

import { AtomioError } from '../base/errors.js';
import { BlockDevice } from '../block/block.js';
import type { Engine, SnapshotState } from '../engine/engine.js';
import { checkPoolName, isReservedPoolName } from '../kv/encoding.js';
import { KvPool } from '../kv/pool.js';

export interface SnapshotInfo {
  name: string;
  /** The version of the last commit the snapshot sees. */
  version: number;
  /** Milliseconds since the epoch when it was taken. */
  createdAt: number;
}

export class Snapshot implements Disposable {
  /** The block face as it was; writes are refused. */
  readonly block: BlockDevice;
  private readonly kvPools = new Map<string, KvPool>();
  private released = false;

  /** @internal use store.snapshot() */
  constructor(
    private readonly engine: Engine,
    private readonly state: SnapshotState,
    private readonly maxValueBytes: number,
  ) {
    this.block = new BlockDevice(engine, state);
  }

  /** The snapshot's name; undefined for one that lives only as long as this object. */
  get name(): string | undefined {
    return this.state.name;
  }

  /** The version of the last commit the snapshot sees. */
  get version(): number {
    return this.state.version;
  }

  get createdAt(): number {
    return this.state.createdAt;
  }

  /** The pool `name` as it was (reads only). */
  kv(name = 'default'): KvPool {
    this.check();
    let pool = this.kvPools.get(name);
    if (pool === undefined) {
      pool = new KvPool(this.engine, checkPoolName(name), this.maxValueBytes, this.state);
      this.kvPools.set(name, pool);
    }
    return pool;
  }

  /** Names of the kv pools the snapshot holds, in byte order (streams and regions left out). */
  pools(): string[] {
    this.check();
    return [...this.state.pools.keys()].filter((name) => !isReservedPoolName(name)).sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
  }

  /**
   * Lets go of an unnamed snapshot: the space only it still holds can be reused. A named
   * snapshot stays in the store until store.deleteSnapshot(name).
   */
  release(): void {
    if (this.released) return;
    this.released = true;
    if (this.state.name === undefined) {
      this.state.released = true;
      this.engine.unpin(this.state.pin);
    }
  }

  [Symbol.dispose](): void {
    this.release();
  }

  private check(): void {
    this.engine.assertOpen();
    if (this.released || this.state.released) throw new AtomioError('ERR_CLOSED', 'this snapshot was released; take a new one with store.snapshot()', {});
  }
}
