// Recovery: rebuild the maps from the last checkpoint plus the log written after it.
//
// Steps:
//   1. load the checkpoint the superblock points at (maps, segment table, heads);
//   2. find the log written since: each head from its checkpointed offset, and every
//      segment whose header says it was opened after the checkpoint;
//   3. scan those segments record by record, checking every header and chunk checksum;
//   4. sort the records by seq; the first missing or damaged record that no later record
//      vouches for as flushed is where the crash tore the log: it and all after it were
//      never acknowledged and are dropped; missing or damaged records that were vouched
//      for are corruption: reported, and the rest is applied;
//   5. make dropped records unreadable (zero their headers) so a later recovery cannot
//      mistake them for log, hand their seqs out again, seal the old heads, and free what
//      holds nothing live.

import { assert } from '../base/assert.js';
import { AtomioError } from '../base/errors.js';
import { checksum } from '../log/crc.js';
import {
  RECORD_HEADER_BYTES,
  RecordKind,
  SegmentKind,
  alignUp,
  nextRecordAt,
  resyncAfter,
  decodeRecordMeta,
  decodeSegmentHeader,
  verifyChunks,
  chunkedBytes,
  isKvOpType,
  kvDataBytes,
  kvDataIntact,
  kvEntryBytes,
  OpType,
  type DecodedOp,
} from '../log/format.js';
import { KeyIndex, META_FIELDS } from '../ftl/key-index.js';
import { TWO_32 } from '../ftl/pools.js';
import { decodeCheckpoint, type CheckpointState } from './checkpoint.js';
import { snapshotFromImage } from './snapshots.js';
import type { Corruption, Engine } from './engine.js';

/** Segment headers read at once while looking for the log written after the checkpoint. */
const HEADER_READS = 64;

interface Source {
  segment: number;
  from: number;
  nonce: number;
}

interface Scanned {
  seq: number;
  batchSeq: number;
  batchCount: number;
  durableSeq: number;
  kind: RecordKind;
  ops: DecodedOp[];
  segment: number;
  offset: number;
  bytes: number;
  badChunk: number;
}

export async function recover(engine: Engine): Promise<void> {
  const started = performance.now();
  const sb = engine.superblock;
  const corruptions: Corruption[] = [];
  const state = sb.checkpoint.firstSegment >= 0 ? await loadCheckpoint(engine) : undefined;
  const checkpointSeq = state?.seq ?? 0;
  if (state) installCheckpoint(engine, state);
  engine.checkpointSeq = checkpointSeq;

  const sources = await findSources(engine, state);
  const scanned: Scanned[] = [];
  let bytesReplayed = 0;
  for (const source of sources) {
    const found = await scanSegment(engine, source, checkpointSeq);
    for (const r of found) scanned.push(r);
  }
  scanned.sort((a, b) => a.seq - b.seq);

  // A record whose seq some later record vouches for as flushed (its durable seq) was on
  // stable storage: if it is missing or damaged, that is corruption, reported, and the rest
  // goes on. The first missing or damaged record nobody vouches for is where the log was
  // torn by the crash: it and everything after it were never acknowledged, and are dropped.
  let vouched = checkpointSeq;
  for (const r of scanned) vouched = Math.max(vouched, r.durableSeq);

  let expected = checkpointSeq + 1;
  const dropped: Scanned[] = [];
  let torn = false;
  let replayed = 0;
  for (const r of scanned) {
    if (!torn && (r.seq !== expected || r.badChunk >= 0)) {
      const firstBad = r.seq !== expected ? expected : r.seq;
      if (firstBad > vouched) torn = true;
    }
    if (torn) {
      dropped.push(r);
      continue;
    }
    if (r.seq !== expected) {
      corruptions.push({ segment: r.segment, offset: r.offset, reason: `records ${expected}..${r.seq - 1}, flushed before, are missing` });
    }
    if (r.badChunk >= 0) {
      corruptions.push({ segment: r.segment, offset: r.badChunk, reason: `record ${r.seq} has a chunk that fails its checksum` });
    }
    replay(engine, r);
    replayed++;
    bytesReplayed += r.bytes;
    expected = r.seq + 1;
  }
  await truncate(engine, dropped);

  // What was replayed may sit in the OS cache only (a killed process, durability 'none'):
  // make it durable before new records vouch for it.
  await engine.media.flush();
  // The seqs of dropped records were never acknowledged, and their headers are now zero:
  // they are handed out again, so the log has no hole that later records would vouch for.
  engine.nextSeq = expected;
  engine.appliedSeq = engine.nextSeq - 1;
  engine.flushedSeq = engine.appliedSeq;
  // Heads restart in fresh segments: the old ones are sealed where their log ended.
  for (const s of engine.segments.segments) {
    s.youngestVersion = s.maxSeq;
    if (s.state === 'open') s.state = 'sealed';
  }
  engine.heads.clear();
  checkLive(engine, replayed > 0);
  engine.sweepExpired();
  engine.prefillAhead();
  engine.reclaimEmpty();
  engine.recovery = {
    ms: performance.now() - started,
    checkpointSeq,
    recordsReplayed: replayed,
    bytesReplayed,
    recordsDropped: dropped.length,
    corruptions,
  };
}

async function loadCheckpoint(engine: Engine): Promise<CheckpointState> {
  const sb = engine.superblock;
  // The parts are read straight into one buffer of the length the superblock gives.
  const payload = Buffer.alloc(sb.checkpoint.payloadBytes);
  const chain: number[] = [];
  let total = 0;
  let index = sb.checkpoint.firstSegment;
  const header = Buffer.alloc(engine.alignment);
  while (index >= 0) {
    if (index >= engine.segments.count || chain.includes(index) || chain.length > engine.segments.count) {
      throw corruptCheckpoint(index, 'the checkpoint chain is broken');
    }
    await engine.media.read(header, engine.segmentOffset(index));
    const h = decodeSegmentHeader(header, index, engine.storeId);
    if (h === undefined || h.kind !== SegmentKind.checkpoint || h.openSeq !== sb.checkpoint.seq) {
      throw corruptCheckpoint(index, 'a checkpoint segment header is damaged');
    }
    if (h.payloadBytes > engine.segmentPayloadBytes) throw corruptCheckpoint(index, 'a checkpoint part is too long');
    if (total + h.payloadBytes > payload.length) throw corruptCheckpoint(sb.checkpoint.firstSegment, 'the checkpoint is longer than the superblock says');
    const part = payload.subarray(total, total + h.payloadBytes);
    await engine.media.read(part, engine.segmentOffset(index) + engine.alignment);
    if (checksum(part, 0) !== h.payloadCrc) throw corruptCheckpoint(index, 'a checkpoint part fails its checksum');
    chain.push(index);
    total += part.length;
    engine.segments.at(index).eraseCount = h.eraseCount;
    index = h.nextSegment;
  }
  if (total !== sb.checkpoint.payloadBytes) throw corruptCheckpoint(sb.checkpoint.firstSegment, 'the checkpoint is truncated');
  const state = decodeCheckpoint(payload);
  if (state === undefined || state.seq !== sb.checkpoint.seq || state.segments.length !== engine.segments.count) {
    throw corruptCheckpoint(sb.checkpoint.firstSegment, 'the checkpoint payload is malformed');
  }
  engine.checkpointChain = chain;
  return state;
}

function corruptCheckpoint(segment: number, what: string): AtomioError {
  return new AtomioError('ERR_CORRUPT', `${what} (segment ${segment}); run \`atomio check\` on the store for details`, {
    segment,
  });
}

function installCheckpoint(engine: Engine, state: CheckpointState): void {
  const chain = new Set(engine.checkpointChain);
  state.segments.forEach((row, i) => {
    const s = engine.segments.at(i);
    s.state = row.state === 'checkpoint' ? 'free' : row.state;
    s.kind = row.state === 'checkpoint' ? 0 : row.kind;
    s.damaged = row.damaged;
    s.eraseCount = Math.max(s.eraseCount, row.eraseCount);
    s.nonce = row.nonce;
    s.writeOffset = row.writeOffset;
    s.openSeq = row.openSeq;
    s.maxSeq = row.maxSeq;
    if (chain.has(i)) {
      s.state = 'checkpoint';
      s.kind = SegmentKind.checkpoint;
    }
  });
  // One pass loads the map, counts live bytes per segment and queues TTL deadlines.
  engine.map.importRaw(state.extentsRaw, (segment, sectors, expiresAt, lba, version) => {
    engine.segments.at(segment).liveBytes += sectors * engine.sectorBytes;
    if (expiresAt !== 0) engine.expiry.push({ expiresAt, lba, count: sectors, version });
  });
  for (const image of state.pools) {
    const pool = engine.pools.create(image.id, image.name, KeyIndex.importRaw(image));
    const { ends, meta } = image;
    for (let i = 0, from = 0; i < ends.length; from = ends[i]!, i++) {
      const keyBytes = ends[i]! - from;
      const m = i * META_FIELDS;
      const valueBytes = meta[m + META_VALUE_BYTES]!;
      engine.segments.at(Math.floor(meta[m + META_LOCATION]! / TWO_32)).liveBytes += kvEntryBytes(keyBytes, valueBytes);
      pool.liveBytes += keyBytes + valueBytes;
      const expiresAt = meta[m + META_EXPIRES_AT]!;
      if (expiresAt !== 0) {
        const key = Buffer.from(image.keys.subarray(from, ends[i]));
        engine.pools.expiry.push({ expiresAt, pool: image.id, key, version: meta[m + META_VERSION]! });
      }
    }
  }
  engine.pools.nextId = Math.max(engine.pools.nextId, state.nextPoolId);
  for (const image of state.snapshots) engine.snapshots.set(image.name, snapshotFromImage(engine, image));
  engine.nextSeq = state.nextSeq;
}

// The order of KeyMeta's fields in a raw image (see KeyIndex.exportRaw).
const META_VERSION = 0;
const META_EXPIRES_AT = 1;
const META_LOCATION = 2;
const META_VALUE_BYTES = 3;

/** The checkpoint's heads (from their offsets) and every data segment opened after it. */
async function findSources(engine: Engine, state: CheckpointState | undefined): Promise<Source[]> {
  const checkpointSeq = state?.seq ?? 0;
  const chain = new Set(engine.checkpointChain);
  const sources: Source[] = [];
  const fresh = new Set<number>();
  // Every header in one pass of concurrent reads, a batch at a time.
  const headers = Buffer.allocUnsafe(Math.min(engine.segments.count, HEADER_READS) * engine.alignment);
  for (let i = 0; i < engine.segments.count; i++) {
    const slot = i % HEADER_READS;
    if (slot === 0) {
      const n = Math.min(HEADER_READS, engine.segments.count - i);
      await Promise.all(
        Array.from({ length: n }, (_, k) =>
          engine.media.read(headers.subarray(k * engine.alignment, (k + 1) * engine.alignment), engine.segmentOffset(i + k)),
        ),
      );
    }
    if (chain.has(i)) continue;
    const h = decodeSegmentHeader(headers.subarray(slot * engine.alignment, (slot + 1) * engine.alignment), i, engine.storeId);
    if (h === undefined || h.kind === SegmentKind.checkpoint || h.openSeq <= checkpointSeq) continue;
    const s = engine.segments.at(i);
    s.state = 'open';
    s.kind = h.kind;
    s.nonce = h.nonce;
    s.openSeq = h.openSeq;
    s.eraseCount = Math.max(s.eraseCount, h.eraseCount);
    s.maxSeq = 0;
    s.writeOffset = engine.alignment;
    s.damaged = false;
    fresh.add(i);
    sources.push({ segment: i, from: engine.alignment, nonce: h.nonce });
  }
  for (const head of state?.heads ?? []) {
    if (fresh.has(head.segment)) continue; // reused since: its new log is scanned from the start
    const s = engine.segments.at(head.segment);
    sources.push({ segment: head.segment, from: head.offset, nonce: s.nonce });
  }
  return sources;
}

/** Reads a segment from `from` to its end and returns the valid records after checkpointSeq. */
async function scanSegment(engine: Engine, source: Source, checkpointSeq: number): Promise<Scanned[]> {
  const size = engine.segmentBytes - source.from;
  const found: Scanned[] = [];
  if (size <= 0) return found;
  const bytes = Buffer.allocUnsafe(size); // read() fills all of it (zeros past the file's end)
  await engine.media.read(bytes, engine.segmentOffset(source.segment) + source.from);
  let prevSeq = checkpointSeq;
  let p = 0;
  let end = 0;
  while (p < size) {
    const offset = source.from + p;
    const decoded = decodeRecordMeta(bytes.subarray(p), source.nonce, offset, engine.sectorBytes, size - p);
    if (!decoded.ok || decoded.record.seq <= prevSeq) {
      // Not a record of this segment's log: padding, the torn or unwritten tail, or a
      // damaged header with more log after it. Look for the next record.
      p = resyncAfter(bytes, p, offset, engine.alignment) - source.from;
      continue;
    }
    const r = decoded.record;
    let badChunk = -1;
    for (const op of r.ops) {
      if (op.type === OpType.put) {
        const start = op.dataOffset - source.from;
        if (!kvDataIntact(bytes.subarray(start, start + kvDataBytes(op.valueBytes)), source.nonce, op.dataOffset)) {
          badChunk = op.dataOffset;
          break;
        }
        continue;
      }
      if (op.type !== OpType.write) continue;
      const start = op.dataOffset - source.from;
      const span = bytes.subarray(start, start + chunkedBytes(op.count * engine.sectorBytes));
      const bad = verifyChunks(span, source.nonce, op.dataOffset);
      if (bad >= 0) {
        badChunk = bad;
        break;
      }
    }
    found.push({
      seq: r.seq,
      batchSeq: r.batchSeq,
      batchCount: r.batchCount,
      durableSeq: r.durableSeq,
      kind: r.kind,
      ops: r.ops,
      segment: source.segment,
      offset,
      bytes: r.recordBytes,
      badChunk,
    });
    prevSeq = r.seq;
    p = nextRecordAt(offset, r.recordBytes) - source.from;
    end = alignUp(p + source.from, engine.alignment) - source.from;
  }
  const s = engine.segments.at(source.segment);
  s.writeOffset = Math.max(s.writeOffset, source.from + end);
  return found;
}

function replay(engine: Engine, r: Scanned): void {
  const s = engine.segments.at(r.segment);
  s.maxSeq = Math.max(s.maxSeq, r.seq);
  for (const op of r.ops) {
    const version = r.kind === RecordKind.commit ? r.seq : op.version;
    if (isKvOpType(op.type)) {
      engine.applyKv(r.kind, op.type, op.pool, op.key, version, op.expiresAt, r.segment, op.dataOffset, op.valueBytes);
    } else if (op.type === OpType.write) {
      engine.applyWrite(r.kind, op.lba, op.count, version, op.expiresAt, r.segment, op.dataOffset);
    } else {
      engine.applyTrim(op.lba, op.count);
    }
  }
}

/** Zeroes the header of every dropped record so that no later scan can see it. */
async function truncate(engine: Engine, dropped: Scanned[]): Promise<void> {
  if (dropped.length === 0) return;
  // The header alone: a record may start in the last bytes of its segment, and zeroing
  // further would reach into the next one.
  const zeros = Buffer.alloc(RECORD_HEADER_BYTES);
  for (const r of dropped) {
    const n = Math.min(zeros.length, engine.segmentBytes - r.offset);
    await engine.media.write(zeros.subarray(0, n), engine.segmentOffset(r.segment) + r.offset);
  }
  await engine.media.flush();
}

/** Every extent points into a segment in use, and live bytes per segment add up. */
function checkLive(engine: Engine, replayed: boolean): void {
  const live = new Float64Array(engine.segments.count);
  engine.map.forEachRaw((segment, sectors, lba) => {
    const s = engine.segments.at(segment);
    assert(s.state === 'open' || s.state === 'sealed', `extent at lba ${lba} points into a ${s.state} segment ${s.index}`);
    live[segment]! += sectors * engine.sectorBytes;
  });
  // Keys are counted only when records were replayed: otherwise their live bytes came from
  // the very images checked here, and walking millions of keys would only slow the open.
  for (const pool of replayed ? engine.pools.byId.values() : []) {
    pool.index.forEach((key, meta) => {
      const segment = Math.floor(meta.location / TWO_32);
      const s = engine.segments.at(segment);
      assert(s.state === 'open' || s.state === 'sealed', `a key of pool '${pool.name}' points into a ${s.state} segment ${segment}`);
      live[segment]! += kvEntryBytes(key.length, meta.valueBytes);
    });
  }
  for (const s of engine.segments.segments) {
    if (!replayed) continue;
    assert(s.liveBytes === live[s.index], `segment ${s.index} counts ${s.liveBytes} live bytes, the maps ${live[s.index]}`);
  }
}
