// The kv conformance suite (conformance.ts), run twice with the same assertions: against the
// kv face in-process, and through the memcached server over a real socket with a raw client
// that writes the text protocol's bytes and parses its replies by length.
//
// How the kv adapter maps memcached's words onto the kv face:
//   set / add / replace / cas   one atomic commit: put of the value, put of its flags in the
//                               sibling pool FLAGS_POOL with the same TTL, and the check
//                               (absent / the version read / the CAS as a version)
//   get                         getEntry (value, version = CAS) and the flags entry
//   delete / touch              one atomic commit on both pools, checked on the version read
//   incr / decr                 KvPool.incr with +delta / -delta (memcached's counter)
//   append / prepend            KvPool.update (keeps the TTL; an absent key refuses)
//   exptime seconds             TTL in ms (× 1000)
//   NOT_FOUND vs EXISTS         after a failed check: is the key there?

import net from 'node:net';
import { ManualClock } from '../../../src/base/clock.js';
import { AtomioError, isAtomioError } from '../../../src/base/errors.js';
import { open, type Store } from '../../../src/index.js';
import type { KvPool } from '../../../src/kv/pool.js';
import { FaultMedia } from '../../../src/media/fault.js';
import { withTempDir } from '../../helpers/temp.js';
import { conformanceSuite, type CounterResult, type Got, type KvAdapter, type StoreStatus, type WriteOptions } from './conformance.js';
import { MiB, withServer } from './harness.js';

const POOL = 'memcached';
const FLAGS_POOL = 'memcached.flags';
/** Attempts of a read-then-check write that keeps losing to another writer (none here). */
const RETRIES = 8;
/** A reply that does not come within this long fails the test (the server hangs). */
const REPLY_TIMEOUT_MS = 30_000;
const START_MS = Date.UTC(2026, 0, 1);

// ---------------------------------------------------------------------------------------
// The kv face

class KvFaceAdapter implements KvAdapter {
  readonly maxValueBytes: number;
  private readonly pool: KvPool;
  private readonly flagsPool: KvPool;

  constructor(
    private readonly store: Store,
    private readonly clock: ManualClock,
  ) {
    this.maxValueBytes = store.limits.maxValueBytes;
    this.pool = store.kv(POOL);
    this.flagsPool = store.kv(FLAGS_POOL);
  }

  advance(ms: number): void {
    this.clock.advance(ms);
  }

  set(key: string, value: Buffer, o?: WriteOptions): Promise<StoreStatus> {
    return this.write(key, value, o, undefined);
  }

  add(key: string, value: Buffer, o?: WriteOptions): Promise<StoreStatus> {
    return this.write(key, value, o, null);
  }

  async replace(key: string, value: Buffer, o?: WriteOptions): Promise<StoreStatus> {
    for (let i = 0; i < RETRIES; i++) {
      const version = this.pool.versionOf(key);
      if (version === undefined) return 'NOT_STORED';
      if ((await this.write(key, value, o, version)) === 'STORED') return 'STORED';
    }
    throw new Error(`replace of ${key} lost ${RETRIES} races`);
  }

  async cas(key: string, value: Buffer, cas: bigint, o?: WriteOptions): Promise<StoreStatus> {
    const version = cas >= 1n && cas <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(cas) : undefined;
    const status = version === undefined ? 'NOT_STORED' : await this.write(key, value, o, version);
    if (status !== 'NOT_STORED') return status;
    return this.pool.has(key) ? 'EXISTS' : 'NOT_FOUND';
  }

  /** One commit: value and flags, with the same TTL; `check` null: absent, a number: at that version. */
  private async write(key: string, value: Buffer, o: WriteOptions = {}, check: number | null | undefined): Promise<StoreStatus> {
    const ttl = (o.ttlS ?? 0) * 1000;
    const flags = Buffer.alloc(4);
    flags.writeUInt32BE(o.flags ?? 0);
    try {
      const batch = this.store.atomic();
      if (check !== undefined) batch.check(POOL, key, check);
      batch.put(POOL, key, value, { ttl }).put(FLAGS_POOL, key, flags, { ttl });
      return (await batch.commit()).ok ? 'STORED' : 'NOT_STORED';
    } catch (error) {
      if (isAtomioError(error, 'ERR_LIMIT')) return 'TOO_LARGE';
      throw error;
    }
  }

  append(key: string, value: Buffer): Promise<StoreStatus> {
    return this.concat(key, value, false);
  }

  prepend(key: string, value: Buffer): Promise<StoreStatus> {
    return this.concat(key, value, true);
  }

  private async concat(key: string, value: Buffer, first: boolean): Promise<StoreStatus> {
    try {
      await this.pool.update(key, (current) => {
        if (current === undefined) throw new AtomioError('ERR_CONDITION', 'absent', {});
        return first ? Buffer.concat([value, current]) : Buffer.concat([current, value]);
      });
      return 'STORED';
    } catch (error) {
      // Absent, or past the value limit: memcached answers both NOT_STORED.
      if (isAtomioError(error, 'ERR_CONDITION') || isAtomioError(error, 'ERR_LIMIT')) return 'NOT_STORED';
      throw error;
    }
  }

  async get(key: string): Promise<Got | undefined> {
    const entry = await this.pool.getEntry(key);
    if (entry === undefined) return undefined;
    const flags = await this.flagsPool.get(key);
    return { value: entry.value, flags: flags === undefined ? 0 : flags.readUInt32BE(0), cas: BigInt(entry.version) };
  }

  async delete(key: string): Promise<boolean> {
    for (let i = 0; i < RETRIES; i++) {
      const version = this.pool.versionOf(key);
      if (version === undefined) return false;
      const r = await this.store.atomic().check(POOL, key, version).delete(POOL, key).delete(FLAGS_POOL, key).commit();
      if (r.ok) return true;
    }
    throw new Error(`delete of ${key} lost ${RETRIES} races`);
  }

  incr(key: string, delta: bigint): Promise<CounterResult> {
    return this.count(key, delta);
  }

  decr(key: string, delta: bigint): Promise<CounterResult> {
    return this.count(key, -delta);
  }

  private async count(key: string, delta: bigint): Promise<CounterResult> {
    try {
      return (await this.pool.incr(key, delta)).value;
    } catch (error) {
      if (isAtomioError(error, 'ERR_CONDITION')) return 'NOT_FOUND';
      if (isAtomioError(error, 'ERR_ARGUMENT')) return 'NON_NUMERIC';
      throw error;
    }
  }

  async touch(key: string, ttlS: number): Promise<boolean> {
    for (let i = 0; i < RETRIES; i++) {
      const version = this.pool.versionOf(key);
      if (version === undefined) return false;
      const ttl = ttlS * 1000;
      const r = await this.store.atomic().check(POOL, key, version).touch(POOL, key, ttl).touch(FLAGS_POOL, key, ttl).commit();
      if (r.ok) return true;
    }
    throw new Error(`touch of ${key} lost ${RETRIES} races`);
  }
}

conformanceSuite('kv face', async (body) => {
  await withTempDir(async (dir) => {
    const capacity = 64 * MiB;
    const clock = new ManualClock(START_MS);
    const store = await open(dir, { capacity, durability: 'full', segmentSize: 4 * MiB, clock, media: new FaultMedia(capacity) });
    try {
      await body(new KvFaceAdapter(store, clock));
    } finally {
      await store.close();
    }
  });
});

// ---------------------------------------------------------------------------------------
// The memcached server, over a socket

/** A raw text-protocol client: writes request bytes, reads reply lines and data blocks by length. */
class WireClient {
  private received: Buffer = Buffer.alloc(0);
  private wake: (() => void) | undefined;
  private closed = false;

  private constructor(private readonly socket: net.Socket) {
    socket.on('data', (chunk: Buffer) => {
      this.received = this.received.length === 0 ? chunk : Buffer.concat([this.received, chunk]);
      this.wake?.();
    });
    socket.on('close', () => {
      this.closed = true;
      this.wake?.();
    });
    socket.on('error', () => undefined);
  }

  static connect(port: number): Promise<WireClient> {
    return new Promise((resolve, reject) => {
      const s = net.connect(port, '127.0.0.1', () => resolve(new WireClient(s)));
      s.once('error', reject);
    });
  }

  send(...parts: (string | Buffer)[]): void {
    for (const p of parts) this.socket.write(typeof p === 'string' ? Buffer.from(p, 'latin1') : p);
  }

  /** The next reply line, without its CRLF. */
  async line(): Promise<string> {
    for (;;) {
      const at = this.received.indexOf('\r\n', 0, 'latin1');
      if (at >= 0) {
        const text = this.received.toString('latin1', 0, at);
        this.received = this.received.subarray(at + 2);
        return text;
      }
      await this.more();
    }
  }

  /** The next `n` bytes. */
  async bytes(n: number): Promise<Buffer> {
    while (this.received.length < n) await this.more();
    const out = Buffer.from(this.received.subarray(0, n));
    this.received = this.received.subarray(n);
    return out;
  }

  destroy(): void {
    this.socket.destroy();
  }

  private async more(): Promise<void> {
    if (this.closed) throw new Error(`the server closed the connection; unread: ${JSON.stringify(this.received.toString('latin1', 0, 200))}`);
    let timer: NodeJS.Timeout | undefined;
    try {
      await new Promise<void>((resolve, reject) => {
        this.wake = resolve;
        timer = setTimeout(() => reject(new Error(`no reply within ${REPLY_TIMEOUT_MS} ms`)), REPLY_TIMEOUT_MS);
      });
    } finally {
      this.wake = undefined;
      clearTimeout(timer);
    }
  }
}

const STORE_LINES: Record<string, StoreStatus> = {
  STORED: 'STORED',
  NOT_STORED: 'NOT_STORED',
  EXISTS: 'EXISTS',
  NOT_FOUND: 'NOT_FOUND',
  'SERVER_ERROR object too large for cache': 'TOO_LARGE',
};

class ServerAdapter implements KvAdapter {
  constructor(
    private readonly c: WireClient,
    readonly maxValueBytes: number,
    private readonly clock: ManualClock,
  ) {}

  advance(ms: number): void {
    this.clock.advance(ms);
  }

  set(key: string, value: Buffer, o?: WriteOptions): Promise<StoreStatus> {
    return this.storage('set', key, value, o);
  }

  add(key: string, value: Buffer, o?: WriteOptions): Promise<StoreStatus> {
    return this.storage('add', key, value, o);
  }

  replace(key: string, value: Buffer, o?: WriteOptions): Promise<StoreStatus> {
    return this.storage('replace', key, value, o);
  }

  cas(key: string, value: Buffer, cas: bigint, o?: WriteOptions): Promise<StoreStatus> {
    return this.storage('cas', key, value, o, cas);
  }

  append(key: string, value: Buffer): Promise<StoreStatus> {
    return this.storage('append', key, value);
  }

  prepend(key: string, value: Buffer): Promise<StoreStatus> {
    return this.storage('prepend', key, value);
  }

  private async storage(cmd: string, key: string, value: Buffer, o: WriteOptions = {}, cas?: bigint): Promise<StoreStatus> {
    const casText = cas === undefined ? '' : ` ${cas}`;
    this.c.send(`${cmd} ${key} ${o.flags ?? 0} ${o.ttlS ?? 0} ${value.length}${casText}\r\n`, value, '\r\n');
    const reply = await this.c.line();
    const status = STORE_LINES[reply];
    if (status === undefined) throw new Error(`${cmd} ${key}: unexpected reply ${JSON.stringify(reply)}`);
    return status;
  }

  async get(key: string): Promise<Got | undefined> {
    this.c.send(`gets ${key}\r\n`);
    const head = await this.c.line();
    if (head === 'END') return undefined;
    const m = /^VALUE (\S+) (\d+) (\d+) (\d+)$/.exec(head);
    if (m === null || m[1] !== key) throw new Error(`gets ${key}: unexpected reply ${JSON.stringify(head)}`);
    const data = await this.c.bytes(Number(m[3]) + 2);
    if (data.toString('latin1', data.length - 2) !== '\r\n') throw new Error(`gets ${key}: the data block does not end with CRLF`);
    const end = await this.c.line();
    if (end !== 'END') throw new Error(`gets ${key}: expected END after one item, got ${JSON.stringify(end)}`);
    return { value: data.subarray(0, data.length - 2), flags: Number(m[2]), cas: BigInt(m[4]!) };
  }

  async delete(key: string): Promise<boolean> {
    this.c.send(`delete ${key}\r\n`);
    return this.expect(`delete ${key}`, await this.c.line(), { DELETED: true, NOT_FOUND: false });
  }

  incr(key: string, delta: bigint): Promise<CounterResult> {
    return this.count('incr', key, delta);
  }

  decr(key: string, delta: bigint): Promise<CounterResult> {
    return this.count('decr', key, delta);
  }

  private async count(cmd: string, key: string, delta: bigint): Promise<CounterResult> {
    this.c.send(`${cmd} ${key} ${delta}\r\n`);
    const reply = await this.c.line();
    if (/^\d+$/.test(reply)) return BigInt(reply);
    return this.expect<CounterResult>(`${cmd} ${key}`, reply, {
      NOT_FOUND: 'NOT_FOUND',
      'CLIENT_ERROR cannot increment or decrement non-numeric value': 'NON_NUMERIC',
    });
  }

  async touch(key: string, ttlS: number): Promise<boolean> {
    this.c.send(`touch ${key} ${ttlS}\r\n`);
    return this.expect(`touch ${key}`, await this.c.line(), { TOUCHED: true, NOT_FOUND: false });
  }

  private expect<T>(what: string, reply: string, known: Record<string, T>): T {
    if (!Object.hasOwn(known, reply)) throw new Error(`${what}: unexpected reply ${JSON.stringify(reply)}`);
    return known[reply]!;
  }
}

conformanceSuite('memcached server', async (body) => {
  await withServer(async (h) => {
    const c = await WireClient.connect(h.port);
    try {
      await body(new ServerAdapter(c, h.server.cache.maxItemBytes, h.clock));
    } finally {
      c.destroy();
    }
  });
});
