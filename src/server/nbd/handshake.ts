// The handshake: fixed newstyle negotiation, option haggling, up to the choice of an export.
//
// What ends it:
//   - NBD_OPT_EXPORT_NAME of a known export, or NBD_OPT_GO answered NBD_REP_ACK: transmission;
//   - NBD_OPT_ABORT: answered NBD_REP_ACK, then the connection closes (soft disconnect);
//   - a broken rule the spec lets us hang up on (unknown client flags, bad option magic,
//     NBD_OPT_EXPORT_NAME of an unknown export, option data past MAX_OPTION_SKIP_BYTES,
//     more than MAX_OPTIONS_PER_HANDSHAKE options): hard disconnect.
// Every other option gets exactly one final reply and the haggling goes on, so a malformed
// option never costs the client its connection.
//
// Invariants:
// - option data is read into memory only up to MAX_OPTION_BYTES; longer data is skipped;
// - every length field inside option data is checked against the bytes actually present
//   before it is used;
// - TLS follows io.tlsMode: 'off' (NOTLS) answers NBD_OPT_STARTTLS NBD_REP_ERR_UNSUP;
//   'optional' (SELECTIVETLS, no TLS-only exports) and 'required' (FORCEDTLS) answer it
//   NBD_REP_ACK and upgrade; a second STARTTLS, or one with data, gets NBD_REP_ERR_INVALID;
//   an upgrade forgets structured replies and the metadata context chosen before it;
// - in 'required' mode before TLS, every option but STARTTLS and ABORT (unknown and oversized
//   ones included) gets NBD_REP_ERR_TLS_REQD, and NBD_OPT_EXPORT_NAME, which cannot be
//   errored, ends the session; after TLS, NBD_REP_ERR_TLS_REQD is never sent.

import { isUtf8 } from 'node:buffer';
import {
  BASE_ALLOCATION,
  BASE_ALLOCATION_ID,
  EXPORT_NAME_PADDING_BYTES,
  IHAVEOPT,
  MAX_META_QUERIES,
  MAX_OPTION_BYTES,
  MAX_OPTION_SKIP_BYTES,
  MAX_OPTIONS_PER_HANDSHAKE,
  MAX_REQUEST_BYTES,
  MAX_STRING_BYTES,
  NBD_FLAG_CAN_MULTI_CONN,
  NBD_FLAG_C_FIXED_NEWSTYLE,
  NBD_FLAG_C_NO_ZEROES,
  NBD_FLAG_FIXED_NEWSTYLE,
  NBD_FLAG_HAS_FLAGS,
  NBD_FLAG_NO_ZEROES,
  NBD_FLAG_READ_ONLY,
  NBD_FLAG_SEND_CACHE,
  NBD_FLAG_SEND_DF,
  NBD_FLAG_SEND_FAST_ZERO,
  NBD_FLAG_SEND_FLUSH,
  NBD_FLAG_SEND_FUA,
  NBD_FLAG_SEND_TRIM,
  NBD_FLAG_SEND_WRITE_ZEROES,
  NBD_INFO_BLOCK_SIZE,
  NBD_INFO_DESCRIPTION,
  NBD_INFO_EXPORT,
  NBD_INFO_NAME,
  NBD_OPT_ABORT,
  NBD_OPT_EXPORT_NAME,
  NBD_OPT_GO,
  NBD_OPT_INFO,
  NBD_OPT_LIST,
  NBD_OPT_LIST_META_CONTEXT,
  NBD_OPT_SET_META_CONTEXT,
  NBD_OPT_STARTTLS,
  NBD_OPT_STRUCTURED_REPLY,
  NBD_REP_ACK,
  NBD_REP_ERR_INVALID,
  NBD_REP_ERR_SHUTDOWN,
  NBD_REP_ERR_TLS_REQD,
  NBD_REP_ERR_TOO_BIG,
  NBD_REP_ERR_UNKNOWN,
  NBD_REP_ERR_UNSUP,
  NBD_REP_INFO,
  NBD_REP_META_CONTEXT,
  NBD_REP_SERVER,
  OPTION_HEADER_BYTES,
} from './protocol.js';
import type { ByteInput } from './input.js';
import { greeting, optionReply, wireString } from './wire.js';
import type { Volume, Volumes } from '../volumes.js';

/** What the connection gives the handshake. */
export interface HandshakeIo {
  /** Where option bytes come from (a new input once TLS is up). */
  input(): ByteInput;
  /** off: NOTLS; optional: SELECTIVETLS; required: FORCEDTLS. */
  readonly tlsMode: 'off' | 'optional' | 'required';
  /**
   * Called once NBD_REP_ACK to NBD_OPT_STARTTLS has been queued: sends it, then runs the TLS
   * handshake; resolves when io.input reads the TLS session, rejects if the upgrade failed.
   */
  startTls(): Promise<void>;
  volumes: Volumes;
  /** Queues bytes for the client. */
  send(bytes: Buffer): void;
  /** Resolves when the socket has room again (the client reads its replies). */
  drained(): Promise<void>;
  shuttingDown(): boolean;
}

/** The outcome of a handshake. */
export type HandshakeResult =
  | { kind: 'transmission'; volume: Volume; structured: boolean; baseAllocation: boolean }
  | { kind: 'abort' }
  | { kind: 'disconnect'; reason: string };

/** The transmission flags of `volume` for a client that did (or did not) negotiate structured replies. */
export function transmissionFlags(volume: Volume, structured: boolean): number {
  let flags = NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH | NBD_FLAG_SEND_FUA | NBD_FLAG_SEND_CACHE | NBD_FLAG_CAN_MULTI_CONN;
  // A read-only export answers writes, trims and zeroes with EPERM; it does not invite them.
  if (volume.readOnly) flags |= NBD_FLAG_READ_ONLY;
  else flags |= NBD_FLAG_SEND_TRIM | NBD_FLAG_SEND_WRITE_ZEROES | NBD_FLAG_SEND_FAST_ZERO;
  if (structured) flags |= NBD_FLAG_SEND_DF;
  return flags;
}

/** Minimum, preferred and maximum block sizes this server advertises. */
export function blockSizes(volume: Volume): { minimum: number; preferred: number; maximum: number } {
  return { minimum: 1, preferred: Math.max(volume.sectorSize, 4096), maximum: MAX_REQUEST_BYTES };
}

/** A line a human can read about a volume (NBD_INFO_DESCRIPTION, NBD_REP_SERVER details). */
export function describeVolume(volume: Volume): string {
  return `atomio volume '${volume.name}', ${volume.size} bytes${volume.readOnly ? ', read-only' : ''}`;
}

class OptionError {
  constructor(
    readonly type: number,
    readonly message: string,
  ) {}
}

export class Handshake {
  private structured = false;
  /**
   * The canonical name of the export the last NBD_OPT_SET_META_CONTEXT named, if it selected
   * base:allocation. A name, not a Volume: VOLUME@SNAPSHOT gets a new Volume on every lookup.
   */
  private metaExport: string | undefined;
  /** TLS has been initiated. */
  private secure = false;

  constructor(private readonly io: HandshakeIo) {}

  async run(): Promise<HandshakeResult> {
    this.io.send(greeting(NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES));
    const clientFlags = (await this.io.input().take(4)).readUInt32BE(0);
    if ((clientFlags & ~(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES)) !== 0) {
      return { kind: 'disconnect', reason: `unknown client flags 0x${clientFlags.toString(16)}` };
    }
    // Clients without NBD_FLAG_C_FIXED_NEWSTYLE are answered in fixed newstyle anyway (the spec allows it),
    // but TLS needs fixed newstyle negotiated: without the client's flag the server is NOTLS.
    const noZeroes = (clientFlags & NBD_FLAG_C_NO_ZEROES) !== 0;
    const fixed = (clientFlags & NBD_FLAG_C_FIXED_NEWSTYLE) !== 0;
    const tlsMode = fixed ? this.io.tlsMode : 'off';
    if (!fixed && this.io.tlsMode === 'required') {
      return { kind: 'disconnect', reason: 'TLS is required and the client did not negotiate fixed newstyle' };
    }
    for (let count = 0; count < MAX_OPTIONS_PER_HANDSHAKE; count++) {
      const input = this.io.input();
      const header = await input.take(OPTION_HEADER_BYTES);
      if (header.readBigUInt64BE(0) !== IHAVEOPT) return { kind: 'disconnect', reason: 'an option without the IHAVEOPT magic' };
      const option = header.readUInt32BE(8);
      const length = header.readUInt32BE(12);
      if (length > MAX_OPTION_SKIP_BYTES) {
        return { kind: 'disconnect', reason: `option ${option} with ${length} bytes of data (more than ${MAX_OPTION_SKIP_BYTES})` };
      }
      const tlsRequired = tlsMode === 'required' && !this.secure && option !== NBD_OPT_STARTTLS && option !== NBD_OPT_ABORT;
      if (length > MAX_OPTION_BYTES) {
        await input.skip(length);
        if (option === NBD_OPT_EXPORT_NAME) return { kind: 'disconnect', reason: `NBD_OPT_EXPORT_NAME with ${length} bytes of name` };
        // ABORT's data is ignored however long it is; the spec wants it acknowledged.
        if (option === NBD_OPT_ABORT) return this.option(option, EMPTY, noZeroes)!;
        if (tlsRequired) {
          this.reply(option, NBD_REP_ERR_TLS_REQD, 'this server requires TLS: send NBD_OPT_STARTTLS first');
          await this.io.drained();
          continue;
        }
        const known = isKnownOption(option);
        this.reply(option, known ? NBD_REP_ERR_TOO_BIG : NBD_REP_ERR_UNSUP, known ? `option data of ${length} bytes is more than the ${MAX_OPTION_BYTES} this server reads` : `option ${option} is not supported`);
        await this.io.drained();
        continue;
      }
      const data = await input.take(length);
      if (this.io.shuttingDown() && option !== NBD_OPT_ABORT) {
        if (option === NBD_OPT_EXPORT_NAME) return { kind: 'disconnect', reason: 'the server is shutting down' };
        this.reply(option, NBD_REP_ERR_SHUTDOWN, 'the server is shutting down');
        await this.io.drained();
        continue;
      }
      if (tlsRequired) {
        if (option === NBD_OPT_EXPORT_NAME) return { kind: 'disconnect', reason: 'NBD_OPT_EXPORT_NAME before TLS, which this server requires' };
        this.reply(option, NBD_REP_ERR_TLS_REQD, 'this server requires TLS: send NBD_OPT_STARTTLS first');
        await this.io.drained();
        continue;
      }
      if (option === NBD_OPT_STARTTLS && tlsMode !== 'off' && data.length === 0 && !this.secure) {
        this.ack(option);
        try {
          await this.io.startTls();
        } catch (error) {
          return { kind: 'disconnect', reason: `TLS handshake failed: ${error instanceof Error ? error.message : String(error)}` };
        }
        this.secure = true;
        // The spec: nothing negotiated in the clear survives the upgrade.
        this.structured = false;
        this.metaExport = undefined;
        continue;
      }
      const result = this.option(option, data, noZeroes);
      if (result !== undefined) return result;
      await this.io.drained();
    }
    return { kind: 'disconnect', reason: `more than ${MAX_OPTIONS_PER_HANDSHAKE} options in one handshake` };
  }

  /** Answers one option; returns a result when the handshake ends with it. */
  private option(option: number, data: Buffer, noZeroes: boolean): HandshakeResult | undefined {
    try {
      switch (option) {
        case NBD_OPT_EXPORT_NAME:
          return this.exportName(data, noZeroes);
        case NBD_OPT_ABORT:
          // Any data is ignored, as the spec asks.
          this.ack(option);
          return { kind: 'abort' };
        case NBD_OPT_LIST:
          this.list(data);
          return undefined;
        case NBD_OPT_STARTTLS:
          if (data.length !== 0) throw new OptionError(NBD_REP_ERR_INVALID, 'NBD_OPT_STARTTLS carries no data');
          if (this.secure) throw new OptionError(NBD_REP_ERR_INVALID, 'TLS is already running');
          throw new OptionError(NBD_REP_ERR_UNSUP, 'this server does not offer TLS');
        case NBD_OPT_INFO:
        case NBD_OPT_GO:
          return this.infoOrGo(option, data);
        case NBD_OPT_STRUCTURED_REPLY:
          if (data.length !== 0) throw new OptionError(NBD_REP_ERR_INVALID, 'NBD_OPT_STRUCTURED_REPLY carries no data');
          this.structured = true;
          this.ack(option);
          return undefined;
        case NBD_OPT_LIST_META_CONTEXT:
        case NBD_OPT_SET_META_CONTEXT:
          this.metaContext(option, data);
          return undefined;
        default:
          throw new OptionError(NBD_REP_ERR_UNSUP, `option ${option} is not supported`);
      }
    } catch (error) {
      if (!(error instanceof OptionError)) throw error;
      this.reply(option, error.type, error.message);
      return undefined;
    }
  }

  private exportName(data: Buffer, noZeroes: boolean): HandshakeResult {
    const name = decodeString(data);
    const volume = name === undefined ? undefined : this.io.volumes.get(name);
    if (volume === undefined) return { kind: 'disconnect', reason: `NBD_OPT_EXPORT_NAME of unknown export ${JSON.stringify(data.toString('utf8'))}` };
    const b = Buffer.alloc(10 + (noZeroes ? 0 : EXPORT_NAME_PADDING_BYTES));
    b.writeBigUInt64BE(BigInt(volume.size), 0);
    b.writeUInt16BE(transmissionFlags(volume, this.structured), 8);
    this.io.send(b);
    return this.enter(volume);
  }

  private list(data: Buffer): void {
    if (data.length !== 0) throw new OptionError(NBD_REP_ERR_INVALID, 'NBD_OPT_LIST carries no data');
    for (const volume of this.io.volumes.exports()) {
      const name = Buffer.from(volume.name, 'utf8');
      const details = wireString(describeVolume(volume));
      const b = Buffer.allocUnsafe(4 + name.length + details.length);
      b.writeUInt32BE(name.length, 0);
      name.copy(b, 4);
      details.copy(b, 4 + name.length);
      this.io.send(optionReply(NBD_OPT_LIST, NBD_REP_SERVER, b));
    }
    this.ack(NBD_OPT_LIST);
  }

  private infoOrGo(option: number, data: Buffer): HandshakeResult | undefined {
    const what = option === NBD_OPT_GO ? 'NBD_OPT_GO' : 'NBD_OPT_INFO';
    if (data.length < 6) throw new OptionError(NBD_REP_ERR_INVALID, `${what} needs at least 6 bytes of data, got ${data.length}`);
    const nameLength = data.readUInt32BE(0);
    if (nameLength > data.length - 6) throw new OptionError(NBD_REP_ERR_INVALID, `${what}: name length ${nameLength} runs past the option data`);
    const count = data.readUInt16BE(4 + nameLength);
    if (data.length !== 6 + nameLength + 2 * count) {
      throw new OptionError(NBD_REP_ERR_INVALID, `${what}: ${count} information requests do not fill the ${data.length} bytes of option data`);
    }
    const volume = this.lookup(data.subarray(4, 4 + nameLength), what);
    const requests = new Set<number>();
    for (let i = 0; i < count; i++) requests.add(data.readUInt16BE(6 + nameLength + 2 * i));
    const exportInfo = Buffer.alloc(12);
    exportInfo.writeUInt16BE(NBD_INFO_EXPORT, 0);
    exportInfo.writeBigUInt64BE(BigInt(volume.size), 2);
    exportInfo.writeUInt16BE(transmissionFlags(volume, this.structured), 10);
    this.io.send(optionReply(option, NBD_REP_INFO, exportInfo));
    if (requests.has(NBD_INFO_NAME)) this.io.send(optionReply(option, NBD_REP_INFO, infoString(NBD_INFO_NAME, volume.name)));
    if (requests.has(NBD_INFO_DESCRIPTION)) {
      this.io.send(optionReply(option, NBD_REP_INFO, infoString(NBD_INFO_DESCRIPTION, describeVolume(volume))));
    }
    if (requests.has(NBD_INFO_BLOCK_SIZE)) {
      const sizes = blockSizes(volume);
      const b = Buffer.alloc(14);
      b.writeUInt16BE(NBD_INFO_BLOCK_SIZE, 0);
      b.writeUInt32BE(sizes.minimum, 2);
      b.writeUInt32BE(sizes.preferred, 6);
      b.writeUInt32BE(sizes.maximum, 10);
      this.io.send(optionReply(option, NBD_REP_INFO, b));
    }
    this.ack(option);
    return option === NBD_OPT_GO ? this.enter(volume) : undefined;
  }

  private metaContext(option: number, data: Buffer): void {
    const setting = option === NBD_OPT_SET_META_CONTEXT;
    const what = setting ? 'NBD_OPT_SET_META_CONTEXT' : 'NBD_OPT_LIST_META_CONTEXT';
    // A SET replaces the selection even when it fails.
    if (setting) this.metaExport = undefined;
    if (setting && !this.structured) throw new OptionError(NBD_REP_ERR_INVALID, `${what} needs NBD_OPT_STRUCTURED_REPLY first`);
    const invalid = (why: string): OptionError => new OptionError(NBD_REP_ERR_INVALID, `${what}: ${why}`);
    if (data.length < 4) throw invalid('no export name length');
    const nameLength = data.readUInt32BE(0);
    if (nameLength > data.length - 8) throw invalid(`name length ${nameLength} runs past the option data`);
    const nameBytes = data.subarray(4, 4 + nameLength);
    let p = 4 + nameLength;
    const count = data.readUInt32BE(p);
    p += 4;
    if (count > (data.length - p) / 4) throw invalid(`${count} queries cannot fit in ${data.length - p} bytes`);
    if (count > MAX_META_QUERIES) throw new OptionError(NBD_REP_ERR_TOO_BIG, `${what}: at most ${MAX_META_QUERIES} queries`);
    const queries: string[] = [];
    for (let i = 0; i < count; i++) {
      if (data.length - p < 4) throw invalid(`query ${i} has no length`);
      const length = data.readUInt32BE(p);
      p += 4;
      if (length > data.length - p) throw invalid(`query ${i} of ${length} bytes runs past the option data`);
      const query = decodeString(data.subarray(p, p + length));
      p += length;
      if (query === undefined) throw invalid(`query ${i} is not a valid string`);
      if (!query.includes(':')) throw invalid(`query ${JSON.stringify(query)} has no namespace`);
      queries.push(query);
    }
    if (p !== data.length) throw invalid(`${data.length - p} bytes after the last query`);
    const volume = this.lookup(nameBytes, what);
    let matched: boolean;
    if (setting) matched = queries.includes(BASE_ALLOCATION);
    else matched = count === 0 || queries.some((q) => q === 'base:' || q === BASE_ALLOCATION);
    if (matched) {
      const name = Buffer.from(BASE_ALLOCATION, 'utf8');
      const b = Buffer.allocUnsafe(4 + name.length);
      // LIST answers with id 0 (reserved); SET gives the id the transmission will use.
      b.writeUInt32BE(setting ? BASE_ALLOCATION_ID : 0, 0);
      name.copy(b, 4);
      this.io.send(optionReply(option, NBD_REP_META_CONTEXT, b));
      if (setting) this.metaExport = volume.name;
    }
    this.ack(option);
  }

  private lookup(nameBytes: Buffer, what: string): Volume {
    if (nameBytes.length > MAX_STRING_BYTES) throw new OptionError(NBD_REP_ERR_INVALID, `${what}: an export name is at most ${MAX_STRING_BYTES} bytes`);
    const name = decodeString(nameBytes);
    if (name === undefined) throw new OptionError(NBD_REP_ERR_INVALID, `${what}: the export name is not valid UTF-8 without NUL`);
    const volume = this.io.volumes.get(name);
    if (volume === undefined) throw new OptionError(NBD_REP_ERR_UNKNOWN, `no export is called ${JSON.stringify(name)}`);
    return volume;
  }

  private enter(volume: Volume): HandshakeResult {
    return { kind: 'transmission', volume, structured: this.structured, baseAllocation: this.metaExport === volume.name };
  }

  private ack(option: number): void {
    this.io.send(optionReply(option, NBD_REP_ACK));
  }

  private reply(option: number, type: number, message: string): void {
    this.io.send(optionReply(option, type, wireString(message)));
  }
}

function isKnownOption(option: number): boolean {
  return (
    option === NBD_OPT_EXPORT_NAME ||
    option === NBD_OPT_ABORT ||
    option === NBD_OPT_LIST ||
    option === NBD_OPT_STARTTLS ||
    option === NBD_OPT_INFO ||
    option === NBD_OPT_GO ||
    option === NBD_OPT_STRUCTURED_REPLY ||
    option === NBD_OPT_LIST_META_CONTEXT ||
    option === NBD_OPT_SET_META_CONTEXT
  );
}

/** The string in `bytes` if it is valid UTF-8 without NUL and at most 4096 bytes, else undefined. */
function decodeString(bytes: Buffer): string | undefined {
  if (bytes.length > MAX_STRING_BYTES || bytes.includes(0) || !isUtf8(bytes)) return undefined;
  return bytes.toString('utf8');
}

function infoString(type: number, text: string): Buffer {
  const s = wireString(text);
  const b = Buffer.allocUnsafe(2 + s.length);
  b.writeUInt16BE(type, 0);
  s.copy(b, 2);
  return b;
}

const EMPTY = Buffer.alloc(0);
