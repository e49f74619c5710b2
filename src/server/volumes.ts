// Volumes: named virtual disks on one store's block face, each in its own slice of the
// sector space. The servers export them; the CLI creates, lists, resizes and removes them.
//
// Layout: slot i covers lbas [i * SLOT_SECTORS, (i + 1) * SLOT_SECTORS). With 512-byte
// sectors that is 32 TiB a slot and 256 slots; with 4096-byte sectors 256 TiB and 32 slots.
// Slot 0 belongs to the volume named `default` (the one the empty export name reaches);
// other volumes take the lowest free slot from 1 up.
//
// Invariants:
// - slots are disjoint: no two volumes share one, and a volume's bytes [0, size) lie inside
//   its slot (size is a positive multiple of the sector size, at most the slot's bytes);
// - a volume starts all zeros: create() trims anything left in its slot before it is listed;
// - the table lives in DIR/volumes.json, replaced durably (temp file, fsync, rename, fsync
//   of the directory), so after a crash it is the old table or the new one, never a mix;
// - remove() lists the volume as gone first, then trims its slot; a crash in between leaves
//   stale sectors only in a free slot, which create() trims before reuse;
// - resize() to a larger size trims the added part before the table names it (so it reads as
//   zeros); to a smaller one it writes the table first, then trims what was cut off;
// - create(), resize() and remove() run one at a time, and a volume a server has open cannot
//   be resized or removed.
//
// Every named snapshot of the store is also exported, read-only, as VOLUME@SNAPSHOT for each
// volume in the table: the volume's slot as the snapshot saw it, at the volume's current size.
//
// This is the one file of the server layer that touches the filesystem (through src/media).

import path from 'node:path';
import { AtomioError } from '../base/errors.js';
import type { Store } from '../store/store.js';
import { readSmallFile, writeSmallFileDurably } from '../media/file.js';

export const VOLUMES_FILE_NAME = 'volumes.json';
export const DEFAULT_VOLUME_NAME = 'default';
/** Sectors per volume slot: 2^36. */
export const SLOT_SECTORS = 2 ** 36;
/** Size of the default volume when it is first created and no size is given: 1 TiB. */
export const DEFAULT_VOLUME_BYTES = 2 ** 40;
const NAME_PATTERN = /^[A-Za-z0-9._-]{1,64}$/;
const TABLE_FORMAT = 1;

export interface VolumeInfo {
  /** 1–64 characters of [A-Za-z0-9._-]. */
  name: string;
  /** Virtual size in bytes: a multiple of the sector size, at most the slot size. */
  size: number;
  readOnly: boolean;
  slot: number;
}

/** One volume: where it lies on the block face and how big it looks. */
export class Volume implements VolumeInfo {
  readonly name: string;
  readonly size: number;
  readonly readOnly: boolean;
  readonly slot: number;
  /** The lba of the volume's byte 0. */
  readonly firstLba: number;
  readonly sectorSize: number;
  /** Set for VOLUME@SNAPSHOT: the named snapshot it reads (always read-only). */
  readonly snapshot: string | undefined;

  constructor(info: VolumeInfo, sectorSize: number, snapshot?: string) {
    this.name = snapshot === undefined ? info.name : `${info.name}@${snapshot}`;
    this.size = info.size;
    this.readOnly = info.readOnly || snapshot !== undefined;
    this.snapshot = snapshot;
    this.slot = info.slot;
    this.sectorSize = sectorSize;
    this.firstLba = info.slot * SLOT_SECTORS;
  }

  toJSON(): VolumeInfo {
    return { name: this.name, size: this.size, readOnly: this.readOnly, slot: this.slot };
  }
}

export interface LoadOptions {
  /** Bytes of the default volume if the table is created now (default 1 TiB). */
  defaultSize?: number;
}

export interface CreateOptions {
  size: number;
  readOnly?: boolean;
}

export class Volumes {
  readonly sectorSize: number;
  readonly slotCount: number;
  /** Bytes one slot spans: the largest volume size. */
  readonly slotBytes: number;
  private readonly byName = new Map<string, Volume>();
  private readonly openCount = new Map<string, number>();
  private mutating: Promise<unknown> = Promise.resolve();

  private constructor(
    private readonly store: Store,
    private readonly file: string,
  ) {
    this.sectorSize = store.block.sectorSize;
    this.slotCount = Math.floor(store.block.sectorCount / SLOT_SECTORS);
    this.slotBytes = SLOT_SECTORS * this.sectorSize;
  }

  /**
   * Reads DIR/volumes.json, or creates it with the default volume (all zeros, `defaultSize`
   * bytes) when it does not exist yet.
   *
   * Rejects with ERR_FORMAT when the file is not a volume table for this store, and with
   * ERR_ARGUMENT when `defaultSize` is malformed.
   * @example const volumes = await Volumes.load(store, store.directory, { defaultSize: 64 * 2 ** 30 });
   */
  static async load(store: Store, dir: string, options: LoadOptions = {}): Promise<Volumes> {
    const volumes = new Volumes(store, path.join(dir, VOLUMES_FILE_NAME));
    const bytes = await readSmallFile(volumes.file);
    if (bytes === undefined) {
      const size = options.defaultSize ?? DEFAULT_VOLUME_BYTES;
      volumes.checkSize(size, DEFAULT_VOLUME_NAME);
      volumes.add({ name: DEFAULT_VOLUME_NAME, size, readOnly: false, slot: 0 });
      await volumes.save();
    } else {
      for (const info of volumes.parse(bytes)) volumes.add(info);
    }
    return volumes;
  }

  /** Every volume, in slot order. */
  list(): Volume[] {
    return [...this.byName.values()].sort((a, b) => a.slot - b.slot);
  }

  /** Every volume, then each as every named snapshot saw it (VOLUME@SNAPSHOT): what servers export. */
  exports(): Volume[] {
    const out = this.list();
    for (const snapshot of this.store.snapshots()) {
      for (const v of this.list()) out.push(new Volume(v.toJSON(), this.sectorSize, snapshot.name));
    }
    return out;
  }

  /** The volume called `name` (the empty name means `default`), or VOLUME@SNAPSHOT. */
  get(name: string): Volume | undefined {
    const at = name.indexOf('@');
    if (at < 0) return this.byName.get(name === '' ? DEFAULT_VOLUME_NAME : name);
    const volume = this.byName.get(name.slice(0, at));
    const snapshot = name.slice(at + 1);
    if (volume === undefined || !this.store.snapshots().some((s) => s.name === snapshot)) return undefined;
    return new Volume(volume.toJSON(), this.sectorSize, snapshot);
  }

  /**
   * Creates a volume of `size` bytes that reads as zeros, in the lowest free slot (slot 0 is
   * kept for `default`). Resolves once the table naming it is durable.
   *
   * Rejects with ERR_ARGUMENT for a malformed or taken name or a malformed size, and with
   * ERR_LIMIT when every slot is taken.
   * @example await volumes.create('vm1', { size: 64 * 2 ** 30 });
   */
  create(name: string, options: CreateOptions): Promise<Volume> {
    return this.serially(async () => {
      checkName(name);
      if (this.byName.has(name)) throw new AtomioError('ERR_ARGUMENT', `volume '${name}' exists already`, { name });
      this.checkSize(options.size, name);
      const readOnly = options.readOnly ?? false;
      if (typeof readOnly !== 'boolean') throw new AtomioError('ERR_ARGUMENT', 'readOnly must be a boolean', { name });
      const slot = this.freeSlot(name);
      await this.trimSlot(slot);
      const volume = this.add({ name, size: options.size, readOnly, slot });
      try {
        await this.save();
      } catch (error) {
        this.byName.delete(name);
        throw error;
      }
      return volume;
    });
  }

  /**
   * Removes a volume and trims its whole slot. Resolves once the table without it is durable
   * and its sectors are trimmed.
   *
   * Rejects with ERR_ARGUMENT when no such volume exists or a server has it open.
   */
  remove(name: string): Promise<void> {
    return this.serially(async () => {
      const volume = this.byName.get(name);
      if (volume === undefined) throw new AtomioError('ERR_ARGUMENT', `no volume is called '${name}'`, { name });
      this.checkNotOpen(volume);
      this.byName.delete(name);
      try {
        await this.save();
      } catch (error) {
        this.byName.set(name, volume);
        throw error;
      }
      await this.trimSlot(volume.slot);
    });
  }

  /**
   * Gives a volume a new size. Growing trims the new part first, so that it reads as zeros
   * whatever an earlier, larger life of the volume left there; shrinking lists the new size
   * first and then trims the cut-off part (its space comes back). Resolves once the table
   * naming the new size is durable and the trim is done.
   *
   * Rejects with ERR_ARGUMENT when no such volume exists, the size is malformed, or a server
   * has the volume open (its clients were told the old size).
   * @example await volumes.resize('vm1', 128 * 2 ** 30);
   */
  resize(name: string, size: number): Promise<Volume> {
    return this.serially(async () => {
      const volume = this.byName.get(name);
      if (volume === undefined) throw new AtomioError('ERR_ARGUMENT', `no volume is called '${name}'`, { name });
      this.checkSize(size, name);
      this.checkNotOpen(volume);
      const sectors = (bytes: number): number => bytes / this.sectorSize;
      if (size > volume.size) await this.trimRange(volume.firstLba + sectors(volume.size), sectors(size - volume.size));
      const resized = this.add({ ...volume.toJSON(), size });
      try {
        await this.save();
      } catch (error) {
        this.byName.set(name, volume);
        throw error;
      }
      if (size < volume.size) await this.trimRange(volume.firstLba + sectors(size), sectors(volume.size - size));
      return resized;
    });
  }

  /** For servers: marks the volume open (remove() and resize() refuse it) until the returned release runs. */
  acquire(volume: Volume): () => void {
    this.openCount.set(volume.name, (this.openCount.get(volume.name) ?? 0) + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const left = (this.openCount.get(volume.name) ?? 1) - 1;
      if (left === 0) this.openCount.delete(volume.name);
      else this.openCount.set(volume.name, left);
    };
  }

  private serially<T>(run: () => Promise<T>): Promise<T> {
    const next = this.mutating.then(run, run);
    this.mutating = next.catch(() => undefined);
    return next;
  }

  private add(info: VolumeInfo): Volume {
    const volume = new Volume(info, this.sectorSize);
    this.byName.set(info.name, volume);
    return volume;
  }

  private freeSlot(name: string): number {
    const taken = new Set([...this.byName.values()].map((v) => v.slot));
    if (name === DEFAULT_VOLUME_NAME) return 0;
    for (let slot = 1; slot < this.slotCount; slot++) if (!taken.has(slot)) return slot;
    throw new AtomioError('ERR_LIMIT', `every one of the ${this.slotCount - 1} volume slots is taken; remove a volume first`, {
      limit: this.slotCount - 1,
    });
  }

  private checkNotOpen(volume: Volume): void {
    const users = this.openCount.get(volume.name) ?? 0;
    if (users > 0) {
      throw new AtomioError('ERR_ARGUMENT', `volume '${volume.name}' is open on ${users} connection(s); disconnect them first`, {
        name: volume.name,
        users,
      });
    }
  }

  private async trimSlot(slot: number): Promise<void> {
    await this.trimRange(slot * SLOT_SECTORS, SLOT_SECTORS);
  }

  private async trimRange(lba: number, count: number): Promise<void> {
    if (this.store.block.exists(lba, count)) await this.store.block.trim(lba, count);
  }

  private checkSize(size: number, name: string): void {
    if (!Number.isSafeInteger(size) || size <= 0 || size % this.sectorSize !== 0 || size > this.slotBytes) {
      throw new AtomioError(
        'ERR_ARGUMENT',
        `volume '${name}': size must be a positive multiple of ${this.sectorSize} bytes, at most ${this.slotBytes}; got ${String(size)}`,
        { name, size },
      );
    }
  }

  private async save(): Promise<void> {
    const table = { format: TABLE_FORMAT, sectorSize: this.sectorSize, volumes: this.list().map((v) => v.toJSON()) };
    await writeSmallFileDurably(this.file, Buffer.from(`${JSON.stringify(table, null, 2)}\n`, 'utf8'));
  }

  private parse(bytes: Buffer): VolumeInfo[] {
    const bad = (why: string): AtomioError =>
      new AtomioError('ERR_FORMAT', `${this.file} is not a volume table of this store: ${why}`, { path: this.file });
    let table: unknown;
    try {
      table = JSON.parse(bytes.toString('utf8'));
    } catch (error) {
      throw bad(`not JSON (${(error as Error).message})`);
    }
    if (typeof table !== 'object' || table === null) throw bad('not an object');
    const t = table as Record<string, unknown>;
    if (t.format !== TABLE_FORMAT) throw bad(`format ${String(t.format)}, this atomio reads ${TABLE_FORMAT}`);
    if (t.sectorSize !== this.sectorSize) throw bad(`made for ${String(t.sectorSize)}-byte sectors, the store has ${this.sectorSize}`);
    if (!Array.isArray(t.volumes)) throw bad('no volumes list');
    const out: VolumeInfo[] = [];
    const names = new Set<string>();
    const slots = new Set<number>();
    for (const v of t.volumes as unknown[]) {
      const info = v as Partial<VolumeInfo> | null;
      if (typeof info !== 'object' || info === null) throw bad('a volume is not an object');
      const { name, size, readOnly, slot } = info;
      if (typeof name !== 'string' || !NAME_PATTERN.test(name)) throw bad(`bad volume name ${JSON.stringify(name)}`);
      if (typeof readOnly !== 'boolean') throw bad(`volume '${name}': readOnly is not a boolean`);
      if (typeof slot !== 'number' || !Number.isSafeInteger(slot) || slot < 0 || slot >= this.slotCount) {
        throw bad(`volume '${name}': slot ${String(slot)} outside 0..${this.slotCount - 1}`);
      }
      if ((slot === 0) !== (name === DEFAULT_VOLUME_NAME)) throw bad(`volume '${name}' in slot ${slot}: slot 0 is the default volume's`);
      if (typeof size !== 'number' || !Number.isSafeInteger(size) || size <= 0 || size % this.sectorSize !== 0 || size > this.slotBytes) {
        throw bad(`volume '${name}': bad size ${String(size)}`);
      }
      if (names.has(name)) throw bad(`volume '${name}' listed twice`);
      if (slots.has(slot)) throw bad(`slot ${slot} listed twice`);
      names.add(name);
      slots.add(slot);
      out.push({ name, size, readOnly, slot });
    }
    return out;
  }
}

/** Throws ERR_ARGUMENT unless `name` is 1–64 characters of [A-Za-z0-9._-]. */
export function checkName(name: string): void {
  if (typeof name !== 'string' || !NAME_PATTERN.test(name)) {
    throw new AtomioError('ERR_ARGUMENT', `volume names are 1–64 characters of A-Z a-z 0-9 . _ -; got ${JSON.stringify(name)}`, {
      name,
    });
  }
}
