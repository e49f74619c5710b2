// A Media is where bytes live: a file, a block device, or a simulated device for tests.
// Nothing outside src/media touches the file system.
//
// Contract:
// - offsets and lengths are byte counts; every access lies inside [0, size);
// - read fills the whole buffer; bytes never written read as zeros;
// - write may be reordered or lost by a crash until flush() resolves; after that it is durable;
// - a write interrupted by a crash may leave any subset of its 512-byte sectors written (torn);
// - an I/O failure rejects with the underlying error (code EIO etc.), never silently.

export interface Media {
  /** Bytes addressable, fixed for the life of the media. */
  readonly size: number;
  /**
   * True when the first write to a region allocates space (a sparse file): a flush after
   * it then also commits the file system's allocation, which costs more than the data.
   * The engine zero-fills such regions once, ahead of their first use.
   */
  readonly allocatesOnWrite?: boolean;
  read(buffer: Uint8Array, offset: number): Promise<void>;
  readSync(buffer: Uint8Array, offset: number): void;
  write(buffer: Uint8Array, offset: number): Promise<void>;
  /** write on the calling thread: it blocks until the medium has the bytes (see writeDurableSync). */
  writeSync?(buffer: Uint8Array, offset: number): void;
  /**
   * A write that is durable once it resolves (as if followed by a flush of it alone), in one
   * call to the medium (O_DSYNC). Writes made before it are not made durable by it.
   */
  writeDurable?(buffer: Uint8Array, offset: number): Promise<void>;
  /**
   * writeDurable on the calling thread: it blocks until the bytes are durable. For a caller
   * with nothing else to do meanwhile, it saves the two hand-offs to and from an I/O thread.
   */
  writeDurableSync?(buffer: Uint8Array, offset: number): void;
  /**
   * Writes `parts` back to back from `offset`, as write() would write their concatenation,
   * without joining them first (pwritev). The parts must not change until it settles.
   */
  writeParts?(parts: readonly Uint8Array[], offset: number): Promise<void>;
  /** writeParts made durable as writeDurable is. */
  writePartsDurable?(parts: readonly Uint8Array[], offset: number): Promise<void>;
  /** Make every completed write durable (fdatasync). */
  flush(): Promise<void>;
  close(): Promise<void>;
}

/** The unit of tearing that atomio assumes of every medium. */
export const MEDIA_SECTOR_BYTES = 512;
