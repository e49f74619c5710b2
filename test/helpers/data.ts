// Sector contents that say what they are: each sector carries (tag, lba) in its first bytes
// and a fill derived from the tag, so a read can tell exactly which write it came from.

/** Bytes of one sector written by write `tag` at `lba`: [tag u32][lba f64][fill…]. */
export function sectorBytes(sectorSize: number, tag: number, lba: number): Buffer {
  const b = Buffer.alloc(sectorSize, fillByte(tag));
  b.writeUInt32LE(tag >>> 0, 0);
  b.writeDoubleLE(lba, 4);
  return b;
}

/** `count` sectors from `lba`, each made by sectorBytes. */
export function tagged(sectorSize: number, tag: number, lba: number, count: number): Buffer {
  const out = Buffer.alloc(count * sectorSize);
  for (let i = 0; i < count; i++) sectorBytes(sectorSize, tag, lba + i).copy(out, i * sectorSize);
  return out;
}

export function fillByte(tag: number): number {
  return (tag % 251) + 1;
}

/**
 * Which tag wrote the sector: 0 for all zeros (never written / trimmed), or the tag when the
 * sector is exactly sectorBytes(tag, lba); -1 when it is neither (garbage or the wrong lba).
 */
export function tagOf(sector: Buffer, lba: number): number {
  if (sector.every((b) => b === 0)) return 0;
  const tag = sector.readUInt32LE(0);
  if (tag === 0) return -1;
  return sectorBytes(sector.length, tag, lba).equals(sector) ? tag : -1;
}

/** Tags of each sector of a read of `count` sectors from `lba`. */
export function tagsOf(bytes: Buffer, sectorSize: number, lba: number): number[] {
  const tags: number[] = [];
  for (let i = 0; i * sectorSize < bytes.length; i++) tags.push(tagOf(bytes.subarray(i * sectorSize, (i + 1) * sectorSize), lba + i));
  return tags;
}
