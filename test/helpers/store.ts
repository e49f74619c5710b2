// A store on a FaultMedia that can be crashed and reopened, or closed and reopened, in one
// process. A crash abandons the old Store (it keeps its lock, as a dead process would) and
// opens the crashed image from a new directory.

import { open, type OpenOptions, type Store } from '../../src/index.js';
import { FaultMedia, type CrashMode, type CrashReport } from '../../src/media/fault.js';
import { TempDirs } from './temp.js';

export class FaultStore {
  private constructor(
    readonly dirs: TempDirs,
    readonly options: OpenOptions,
    public media: FaultMedia,
    public store: Store,
  ) {}

  /** Opens a new store on a new FaultMedia of `options.capacity` bytes. */
  static async create(options: OpenOptions & { capacity: number; mediaSeed?: number; media?: FaultMedia }): Promise<FaultStore> {
    const dirs = new TempDirs('atomio-fault-');
    const { mediaSeed, media: given, ...rest } = options;
    const media = given ?? new FaultMedia(options.capacity, mediaSeed === undefined ? {} : { seed: mediaSeed });
    try {
      const store = await open(await dirs.make(), { ...rest, media });
      return new FaultStore(dirs, rest, media, store);
    } catch (error) {
      await dirs.removeAll();
      throw error;
    }
  }

  /** Power loss now: the store is abandoned unclosed and the crashed image reopened. */
  async crashAndReopen(mode: CrashMode, seed?: number): Promise<CrashReport> {
    const crashed = this.crashImage(mode, seed);
    await this.reopen(crashed);
    return crashed.crashReport!;
  }

  /** The image a power loss now would leave; the store stays abandoned (not closed). */
  crashImage(mode: CrashMode, seed?: number): FaultMedia {
    // The old store is dropped, not closed: like a dead process it keeps its (in-process) lock,
    // and whatever it still does goes to the old medium, which nothing reads again.
    return seed === undefined ? this.media.crash(mode) : this.media.crash(mode, seed);
  }

  /** Opens `media` (e.g. a crash image, possibly altered) from a fresh directory, or from `dir`. */
  async reopen(media: FaultMedia, dir?: string): Promise<Store> {
    this.media = media;
    this.store = await open(dir ?? (await this.dirs.make()), { ...this.options, media });
    return this.store;
  }

  /** A clean close, then an open of what the medium holds (after `alter`, e.g. a bit flip). */
  async closeAndReopen(alter?: (media: FaultMedia) => void): Promise<Store> {
    await this.store.close();
    const media = FaultMedia.from(this.media.snapshotImage(), { seed: this.media.seed });
    alter?.(media);
    return this.reopen(media);
  }

  /** Closes the current store (if open) and removes the directories. */
  async dispose(): Promise<void> {
    try {
      await this.store.close();
    } catch {
      // a test may leave the store failed; the directories still go
    } finally {
      await this.dirs.removeAll();
    }
  }
}

/** Lets every callback queued so far (and the I/O it starts on FaultMedia) run `n` turns. */
export async function turns(n: number): Promise<void> {
  for (let i = 0; i < n; i++) await new Promise<void>((resolve) => setImmediate(resolve));
}
