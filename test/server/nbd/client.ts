// A small NBD client for tests, written from the spec over a raw socket: every byte it sends
// is chosen by the test, so tests can also send what a real client never would.
//
//   RawSocket      bytes in and out, plus "did the server hang up?"
//   handshake()    greeting and client flags
//   option()       one option, then its replies up to the final one
//   NbdClient      a negotiated connection: requests with cookies, replies matched by cookie
//                  (simple or structured), many in flight at once

import net from 'node:net';
import tls from 'node:tls';
import assert from 'node:assert/strict';

export const IHAVEOPT = 0x49484156454f5054n;
export const NBD_MAGIC = 0x4e42444d41474943n;
export const REP_MAGIC = 0x3e889045565a9n;
export const REQUEST_MAGIC = 0x25609513;
export const SIMPLE_MAGIC = 0x67446698;
export const STRUCTURED_MAGIC = 0x668e33ef;

export const OPT = { EXPORT_NAME: 1, ABORT: 2, LIST: 3, STARTTLS: 5, INFO: 6, GO: 7, STRUCTURED_REPLY: 8, LIST_META: 9, SET_META: 10 } as const;
export const REP = {
  ACK: 1,
  SERVER: 2,
  INFO: 3,
  META_CONTEXT: 4,
  ERR_UNSUP: 0x80000001,
  ERR_POLICY: 0x80000002,
  ERR_INVALID: 0x80000003,
  ERR_TLS_REQD: 0x80000005,
  ERR_UNKNOWN: 0x80000006,
  ERR_SHUTDOWN: 0x80000007,
  ERR_TOO_BIG: 0x80000009,
} as const;
export const INFO = { EXPORT: 0, NAME: 1, DESCRIPTION: 2, BLOCK_SIZE: 3 } as const;
export const CMD = { READ: 0, WRITE: 1, DISC: 2, FLUSH: 3, TRIM: 4, CACHE: 5, WRITE_ZEROES: 6, BLOCK_STATUS: 7 } as const;
export const CMD_FLAG = { FUA: 1, NO_HOLE: 2, DF: 4, REQ_ONE: 8, FAST_ZERO: 16 } as const;
export const TFLAG = {
  HAS_FLAGS: 1,
  READ_ONLY: 2,
  SEND_FLUSH: 4,
  SEND_FUA: 8,
  ROTATIONAL: 16,
  SEND_TRIM: 32,
  SEND_WRITE_ZEROES: 64,
  SEND_DF: 128,
  CAN_MULTI_CONN: 256,
  SEND_CACHE: 1024,
  SEND_FAST_ZERO: 2048,
} as const;
export const ERR = { EPERM: 1, EIO: 5, EINVAL: 22, ENOSPC: 28, EOVERFLOW: 75, ENOTSUP: 95, ESHUTDOWN: 108 } as const;
export const CHUNK = { NONE: 0, OFFSET_DATA: 1, OFFSET_HOLE: 2, BLOCK_STATUS: 5, ERROR: 32769, ERROR_OFFSET: 32770 } as const;
export const STATE = { HOLE: 1, ZERO: 2 } as const;

/** A socket with exact-size reads. read() rejects with 'closed' once the server hung up. */
export class RawSocket {
  private chunks: Buffer[] = [];
  private buffered = 0;
  private waiter: { n: number; resolve: (b: Buffer) => void; reject: (e: Error) => void } | undefined;
  private ended = false;
  /** Resolves when the server closed the connection (or it failed). */
  readonly closed: Promise<void>;

  private constructor(readonly socket: net.Socket) {
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => {
      this.chunks.push(chunk);
      this.buffered += chunk.length;
      this.serve();
    });
    this.closed = new Promise((resolve) => {
      const end = (): void => {
        this.ended = true;
        const w = this.waiter;
        this.waiter = undefined;
        w?.reject(new Error('closed'));
        resolve();
      };
      socket.on('end', end);
      socket.on('close', end);
      socket.on('error', end);
    });
  }

  static connect(port: number, host = '127.0.0.1'): Promise<RawSocket> {
    return new Promise((resolve, reject) => {
      const socket = net.connect({ port, host }, () => {
        socket.off('error', reject);
        resolve(new RawSocket(socket));
      });
      socket.once('error', reject);
    });
  }

  /**
   * NBD_OPT_STARTTLS has been answered NBD_REP_ACK: runs a TLS client handshake over this
   * socket (which must not be used after) and resolves with a RawSocket reading the TLS session.
   */
  async startTls(options: tls.ConnectionOptions): Promise<RawSocket> {
    assert.equal(this.buffered, 0, 'nothing left to read before TLS');
    this.socket.removeAllListeners('data');
    const t = tls.connect({ ...options, socket: this.socket });
    await new Promise<void>((resolve, reject) => {
      t.once('secureConnect', () => {
        t.off('error', reject);
        resolve();
      });
      t.once('error', reject);
      t.once('close', () => reject(new Error('closed during the TLS handshake')));
    });
    return new RawSocket(t);
  }

  send(...parts: Buffer[]): void {
    for (const p of parts) this.socket.write(p);
  }

  read(n: number): Promise<Buffer> {
    assert.equal(this.waiter, undefined, 'one read at a time');
    if (this.buffered >= n) return Promise.resolve(this.take(n));
    if (this.ended) return Promise.reject(new Error('closed'));
    return new Promise((resolve, reject) => {
      this.waiter = { n, resolve, reject };
    });
  }

  /** Everything that arrives until the server closes, or undefined if it stays open for `ms`. */
  async readToEnd(ms = 10_000): Promise<Buffer | undefined> {
    const timer = new Promise<'open'>((resolve) => setTimeout(() => resolve('open'), ms).unref());
    if ((await Promise.race([this.closed, timer])) === 'open') return undefined;
    return this.take(this.buffered);
  }

  /** True when the server closes the connection within `ms`. */
  async hungUp(ms = 10_000): Promise<boolean> {
    const timer = new Promise<'open'>((resolve) => setTimeout(() => resolve('open'), ms).unref());
    return (await Promise.race([this.closed.then(() => 'closed' as const), timer])) === 'closed';
  }

  /** Bytes received and not yet read. */
  get bufferedBytes(): number {
    return this.buffered;
  }

  get isClosed(): boolean {
    return this.ended;
  }

  destroy(): void {
    this.socket.destroy();
  }

  private serve(): void {
    const w = this.waiter;
    if (w !== undefined && this.buffered >= w.n) {
      this.waiter = undefined;
      w.resolve(this.take(w.n));
    }
  }

  private take(n: number): Buffer {
    const out = Buffer.allocUnsafe(n);
    let done = 0;
    while (done < n) {
      const first = this.chunks[0]!;
      const k = Math.min(n - done, first.length);
      first.copy(out, done, 0, k);
      done += k;
      if (k === first.length) this.chunks.shift();
      else this.chunks[0] = first.subarray(k);
    }
    this.buffered -= n;
    return out;
  }
}

/** Reads the server's greeting and checks it; returns the handshake flags. */
export async function readGreeting(s: RawSocket): Promise<number> {
  const g = await s.read(18);
  assert.equal(g.readBigUInt64BE(0), NBD_MAGIC, 'greeting starts with NBDMAGIC');
  assert.equal(g.readBigUInt64BE(8), IHAVEOPT, 'then IHAVEOPT');
  return g.readUInt16BE(16);
}

/** Connects, reads the greeting and sends client flags (fixed newstyle + no zeroes by default). */
export async function handshake(port: number, clientFlags = 3): Promise<RawSocket> {
  const s = await RawSocket.connect(port);
  await readGreeting(s);
  s.send(u32(clientFlags));
  return s;
}

export interface OptionReply {
  option: number;
  type: number;
  data: Buffer;
}

export function optionBytes(option: number, data: Buffer = Buffer.alloc(0), length = data.length): Buffer {
  const h = Buffer.alloc(16);
  h.writeBigUInt64BE(IHAVEOPT, 0);
  h.writeUInt32BE(option, 8);
  h.writeUInt32BE(length >>> 0, 12);
  return Buffer.concat([h, data]);
}

export async function readOptionReply(s: RawSocket): Promise<OptionReply> {
  const h = await s.read(20);
  assert.equal(h.readBigUInt64BE(0), REP_MAGIC, 'option reply magic');
  const length = h.readUInt32BE(16);
  return { option: h.readUInt32BE(8), type: h.readUInt32BE(12), data: length > 0 ? await s.read(length) : Buffer.alloc(0) };
}

/** Sends an option and collects replies up to the final one (ACK or an error). */
export async function option(s: RawSocket, opt: number, data: Buffer = Buffer.alloc(0)): Promise<OptionReply[]> {
  s.send(optionBytes(opt, data));
  const replies: OptionReply[] = [];
  for (;;) {
    const r = await readOptionReply(s);
    assert.equal(r.option, opt, 'a reply names the option it answers');
    replies.push(r);
    if (r.type === REP.ACK || r.type >= 0x80000000) return replies;
  }
}

/** The data of NBD_OPT_INFO / NBD_OPT_GO. */
export function infoData(name: string, infos: number[] = []): Buffer {
  const n = Buffer.from(name, 'utf8');
  const b = Buffer.alloc(4 + n.length + 2 + 2 * infos.length);
  b.writeUInt32BE(n.length, 0);
  n.copy(b, 4);
  b.writeUInt16BE(infos.length, 4 + n.length);
  infos.forEach((i, k) => b.writeUInt16BE(i, 6 + n.length + 2 * k));
  return b;
}

/** The data of LIST/SET_META_CONTEXT. */
export function metaData(name: string, queries: string[]): Buffer {
  const parts = [u32(Buffer.byteLength(name)), Buffer.from(name), u32(queries.length)];
  for (const q of queries) parts.push(u32(Buffer.byteLength(q)), Buffer.from(q));
  return Buffer.concat(parts);
}

export function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0, 0);
  return b;
}

export function requestBytes(type: number, flags: number, cookie: bigint, offset: number | bigint, length: number): Buffer {
  const b = Buffer.alloc(28);
  b.writeUInt32BE(REQUEST_MAGIC, 0);
  b.writeUInt16BE(flags, 4);
  b.writeUInt16BE(type, 6);
  b.writeBigUInt64BE(cookie, 8);
  b.writeBigUInt64BE(BigInt(offset), 16);
  b.writeUInt32BE(length >>> 0, 24);
  return b;
}

export interface Chunk {
  flags: number;
  type: number;
  payload: Buffer;
}

export interface Reply {
  /** 0 for success. */
  error: number;
  /** Simple reply to a read, or the data reassembled from structured chunks (holes as zeros). */
  data?: Buffer;
  /** Structured chunks in arrival order (empty for a simple reply). */
  chunks: Chunk[];
  simple: boolean;
  /** Error message of an error chunk. */
  message?: string;
}

export interface OpenOptions {
  name?: string;
  structured?: boolean;
  meta?: boolean;
  /** Use NBD_OPT_EXPORT_NAME instead of NBD_OPT_GO. */
  exportName?: boolean;
}

interface Pending {
  type: number;
  offset: number;
  length: number;
  resolve: (r: Reply) => void;
  reject: (e: Error) => void;
  chunks: Chunk[];
}

/** A negotiated connection in transmission. */
export class NbdClient {
  private nextCookie = 1n;
  private pending = new Map<bigint, Pending>();
  private readerError: Error | undefined;

  private constructor(
    readonly raw: RawSocket,
    readonly size: number,
    readonly flags: number,
    readonly structured: boolean,
  ) {
    void this.readLoop();
  }

  static async open(port: number, o: OpenOptions = {}): Promise<NbdClient> {
    return NbdClient.negotiate(await handshake(port), o);
  }

  /** Negotiates an export on `s`, a socket in option haggling (over TLS, say). */
  static async negotiate(s: RawSocket, o: OpenOptions = {}): Promise<NbdClient> {
    const name = o.name ?? '';
    const structured = o.structured ?? true;
    if (structured) {
      const r = await option(s, OPT.STRUCTURED_REPLY);
      assert.equal(r.at(-1)!.type, REP.ACK, 'structured replies negotiated');
      if (o.meta ?? true) {
        const m = await option(s, OPT.SET_META, metaData(name, ['base:allocation']));
        assert.equal(m.at(-1)!.type, REP.ACK, 'base:allocation selected');
      }
    }
    if (o.exportName === true) {
      s.send(optionBytes(OPT.EXPORT_NAME, Buffer.from(name)));
      const b = await s.read(10);
      return new NbdClient(s, Number(b.readBigUInt64BE(0)), b.readUInt16BE(8), structured);
    }
    const replies = await option(s, OPT.GO, infoData(name, [INFO.BLOCK_SIZE]));
    const last = replies.at(-1)!;
    if (last.type !== REP.ACK) throw new Error(`NBD_OPT_GO failed: 0x${last.type.toString(16)} ${last.data.toString()}`);
    const exp = replies.find((r) => r.type === REP.INFO && r.data.readUInt16BE(0) === INFO.EXPORT)!;
    return new NbdClient(s, Number(exp.data.readBigUInt64BE(2)), exp.data.readUInt16BE(10), structured);
  }

  /** A client over `s`, which the test has already taken into transmission itself. */
  static attach(s: RawSocket, size: number, flags: number, structured: boolean): NbdClient {
    return new NbdClient(s, size, flags, structured);
  }

  /** Sends a request (with `payload` after the header for writes) and resolves with its reply. */
  request(type: number, flags: number, offset: number | bigint, length: number, payload?: Buffer): Promise<Reply> {
    if (this.readerError !== undefined) return Promise.reject(this.readerError);
    const cookie = this.nextCookie++;
    const p = new Promise<Reply>((resolve, reject) => {
      this.pending.set(cookie, { type, offset: Number(offset), length, resolve, reject, chunks: [] });
    });
    this.raw.send(requestBytes(type, flags, cookie, offset, length), ...(payload === undefined ? [] : [payload]));
    return p;
  }

  read(offset: number, length: number, flags = 0): Promise<Reply> {
    return this.request(CMD.READ, flags, offset, length);
  }

  async write(offset: number, data: Buffer, flags = 0): Promise<number> {
    return (await this.request(CMD.WRITE, flags, offset, data.length, data)).error;
  }

  async flush(): Promise<number> {
    return (await this.request(CMD.FLUSH, 0, 0, 0)).error;
  }

  async trim(offset: number, length: number, flags = 0): Promise<number> {
    return (await this.request(CMD.TRIM, flags, offset, length)).error;
  }

  async zero(offset: number, length: number, flags = 0): Promise<number> {
    return (await this.request(CMD.WRITE_ZEROES, flags, offset, length)).error;
  }

  async cache(offset: number, length: number): Promise<number> {
    return (await this.request(CMD.CACHE, 0, offset, length)).error;
  }

  /** base:allocation extents as [length, flags] pairs (error set if the reply is an error). */
  async blockStatus(offset: number, length: number, flags = 0): Promise<{ error: number; extents: [number, number][]; id?: number }> {
    const r = await this.request(CMD.BLOCK_STATUS, flags, offset, length);
    if (r.error !== 0) return { error: r.error, extents: [] };
    const chunk = r.chunks.find((c) => c.type === CHUNK.BLOCK_STATUS);
    assert.ok(chunk !== undefined, 'a block status reply has a BLOCK_STATUS chunk');
    const extents: [number, number][] = [];
    for (let p = 4; p < chunk.payload.length; p += 8) extents.push([chunk.payload.readUInt32BE(p), chunk.payload.readUInt32BE(p + 4)]);
    return { error: 0, extents, id: chunk.payload.readUInt32BE(0) };
  }

  /** Sends NBD_CMD_DISC and waits for the server to close. */
  async disconnect(): Promise<void> {
    this.raw.send(requestBytes(CMD.DISC, 0, this.nextCookie++, 0, 0));
    this.raw.socket.end();
    await this.raw.closed;
  }

  get inFlight(): number {
    return this.pending.size;
  }

  private async readLoop(): Promise<void> {
    try {
      for (;;) {
        const magic = (await this.raw.read(4)).readUInt32BE(0);
        if (magic === SIMPLE_MAGIC) {
          const h = await this.raw.read(12);
          const error = h.readUInt32BE(0);
          const cookie = h.readBigUInt64BE(4);
          const p = this.take(cookie);
          assert.equal(p.chunks.length, 0, 'no simple reply after structured chunks');
          const reply: Reply = { error, chunks: [], simple: true };
          if (p.type === CMD.READ && error === 0) {
            assert.ok(!this.structured, 'a read is never answered with a simple reply once structured replies are on');
            reply.data = await this.raw.read(p.length);
          }
          this.pending.delete(cookie);
          p.resolve(reply);
        } else if (magic === STRUCTURED_MAGIC) {
          assert.ok(this.structured, 'structured chunks only after NBD_OPT_STRUCTURED_REPLY');
          const h = await this.raw.read(16);
          const flags = h.readUInt16BE(0);
          const type = h.readUInt16BE(2);
          const cookie = h.readBigUInt64BE(4);
          const length = h.readUInt32BE(12);
          const payload = length > 0 ? await this.raw.read(length) : Buffer.alloc(0);
          const p = this.take(cookie);
          p.chunks.push({ flags, type, payload });
          if ((flags & 1) !== 0) {
            this.pending.delete(cookie);
            p.resolve(assemble(p));
          }
        } else {
          throw new Error(`bad reply magic 0x${magic.toString(16)}`);
        }
      }
    } catch (error) {
      this.readerError = error as Error;
      for (const p of this.pending.values()) p.reject(this.readerError);
      this.pending.clear();
    }
  }

  private take(cookie: bigint): Pending {
    const p = this.pending.get(cookie);
    if (p === undefined) throw new Error(`a reply for cookie ${cookie}, which is not in flight`);
    return p;
  }
}

/** Checks a structured reply's chunks against the spec and folds them into a Reply. */
function assemble(p: Pending): Reply {
  const reply: Reply = { error: 0, chunks: p.chunks, simple: false };
  let covered = 0;
  const data = p.type === CMD.READ ? Buffer.alloc(p.length) : undefined;
  for (const c of p.chunks) {
    if (c.type === CHUNK.ERROR || c.type === CHUNK.ERROR_OFFSET) {
      reply.error = c.payload.readUInt32BE(0);
      assert.notEqual(reply.error, 0, 'an error chunk carries a nonzero error');
      const n = c.payload.readUInt16BE(4);
      assert.ok(n <= c.payload.length - 6, 'error message fits its chunk');
      reply.message = c.payload.subarray(6, 6 + n).toString('utf8');
    } else if (c.type === CHUNK.OFFSET_DATA) {
      assert.equal(p.type, CMD.READ, 'data chunks only answer reads');
      const off = Number(c.payload.readBigUInt64BE(0));
      const len = c.payload.length - 8;
      assert.ok(len >= 1 && off >= p.offset && off + len <= p.offset + p.length, 'data chunk inside the request');
      c.payload.copy(data!, off - p.offset, 8);
      covered += len;
    } else if (c.type === CHUNK.OFFSET_HOLE) {
      assert.equal(c.payload.length, 12, 'hole chunk payload is 12 bytes');
      const off = Number(c.payload.readBigUInt64BE(0));
      const len = c.payload.readUInt32BE(8);
      assert.ok(len >= 1 && off >= p.offset && off + len <= p.offset + p.length, 'hole chunk inside the request');
      covered += len;
    } else if (c.type === CHUNK.NONE) {
      assert.equal(c.payload.length, 0, 'NONE has no payload');
      assert.equal(c.flags & 1, 1, 'NONE is always the last chunk');
    } else if (c.type === CHUNK.BLOCK_STATUS) {
      assert.equal(p.type, CMD.BLOCK_STATUS, 'status chunks only answer block status');
      assert.ok(c.payload.length >= 12 && (c.payload.length - 4) % 8 === 0, 'status chunk is 4 + 8n bytes');
    } else {
      assert.fail(`unknown chunk type ${c.type}`);
    }
  }
  if (p.type === CMD.READ && reply.error === 0) {
    assert.equal(covered, p.length, 'a successful read covers its whole range');
    reply.data = data;
  }
  return reply;
}
