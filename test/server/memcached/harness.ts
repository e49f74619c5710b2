// A store and a memcached server on a free loopback port for one test, and a raw-socket
// client that sends exact bytes and reads exact replies.

import net from 'node:net';
import { ManualClock } from '../../../src/base/clock.js';
import { open, type OpenOptions, type Store } from '../../../src/index.js';
import { FaultMedia } from '../../../src/media/fault.js';
import { startMemcachedServer, type MemcachedServer, type MemcachedServerOptions } from '../../../src/server/memcached/index.js';
import { withTempDir } from '../../helpers/temp.js';

export const KiB = 1024;
export const MiB = 1024 * 1024;

export interface Harness {
  dir: string;
  store: Store;
  server: MemcachedServer;
  port: number;
  /** The store's and the server's clock: TTLs move only when a test moves it. */
  clock: ManualClock;
  logs: string[];
  connect(): Promise<McClient>;
}

export interface HarnessOptions extends Omit<MemcachedServerOptions, 'port' | 'clock' | 'log'> {
  media?: 'memory' | 'file';
  capacity?: number;
  durability?: 'full' | 'none';
}

/** Runs `body` against a fresh server; closes server and store and removes the directory after. */
export async function withServer(body: (h: Harness) => Promise<void>, o: HarnessOptions = {}): Promise<void> {
  await withTempDir(async (dir) => {
    const { media, capacity: cap, durability, ...serverOptions } = o;
    const capacity = cap ?? 64 * MiB;
    const clock = new ManualClock(Date.UTC(2026, 0, 1));
    const options: OpenOptions = { capacity, durability: durability ?? 'full', segmentSize: 4 * MiB, clock };
    if ((media ?? 'memory') === 'memory') options.media = new FaultMedia(capacity);
    const store = await open(dir, options);
    const logs: string[] = [];
    let server: MemcachedServer | undefined;
    const clients: McClient[] = [];
    try {
      server = await startMemcachedServer(store, { ...serverOptions, port: 0, clock, log: (l) => logs.push(l) });
      const port = server.address.port;
      const connect = async (): Promise<McClient> => {
        const c = await McClient.connect(port);
        clients.push(c);
        return c;
      };
      await body({ dir, store, server, port, clock, logs, connect });
    } finally {
      for (const c of clients) c.destroy();
      await server?.close();
      await store.close();
    }
  });
}

/** A raw client: bytes out, bytes in, no protocol knowledge beyond "MN" as a barrier. */
export class McClient {
  private chunks: Buffer[] = [];
  private length = 0;
  private waiter: (() => void) | undefined;
  closed = false;
  readonly done: Promise<void>;

  private constructor(readonly socket: net.Socket) {
    socket.on('data', (b: Buffer) => {
      this.chunks.push(b);
      this.length += b.length;
      this.waiter?.();
    });
    socket.on('error', () => undefined);
    this.done = new Promise((resolve) =>
      socket.on('close', () => {
        this.closed = true;
        this.waiter?.();
        resolve();
      }),
    );
  }

  static connect(port: number): Promise<McClient> {
    return new Promise((resolve, reject) => {
      const s = net.connect(port, '127.0.0.1', () => resolve(new McClient(s)));
      s.once('error', reject);
    });
  }

  write(bytes: string | Buffer): void {
    this.socket.write(typeof bytes === 'string' ? Buffer.from(bytes, 'latin1') : bytes);
  }

  /** Sends `text` then "mn", and resolves with everything answered before the MN. */
  async call(text: string | Buffer, timeoutMs = 10_000): Promise<string> {
    this.write(text);
    this.write('mn\r\n');
    const all = await this.until((b) => b.length >= 4 && b.subarray(b.length - 4).toString('latin1') === 'MN\r\n', timeoutMs);
    return all.subarray(0, all.length - 4).toString('latin1');
  }

  /** Everything received and not yet taken, as one buffer. */
  private get received(): Buffer {
    if (this.chunks.length !== 1) this.chunks = [Buffer.concat(this.chunks, this.length)];
    return this.chunks[0]!;
  }

  private set received(b: Buffer) {
    this.chunks = [b];
    this.length = b.length;
  }

  /** Waits until `done(received)` holds (checked only once `minBytes` arrived); returns and clears what was received. */
  async until(done: (received: Buffer) => boolean, timeoutMs = 10_000, minBytes = 0): Promise<Buffer> {
    const deadline = Date.now() + timeoutMs;
    while (this.length < minBytes || !done(this.received)) {
      if (this.closed) throw new Error(`connection closed; received ${JSON.stringify(this.received.toString('latin1').slice(-300))}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out; received ${JSON.stringify(this.received.toString('latin1').slice(-300))}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiter = () => {
          clearTimeout(t);
          resolve();
        };
      });
      this.waiter = undefined;
    }
    const out = this.received;
    this.received = Buffer.alloc(0);
    return out;
  }

  /** Reads `n` bytes exactly. */
  async read(n: number): Promise<Buffer> {
    const all = await this.until((b) => b.length >= n, 60_000, n);
    this.received = all.subarray(n);
    return all.subarray(0, n);
  }

  /** Everything until the server closes the connection. */
  async untilClosed(timeoutMs = 10_000): Promise<string> {
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([this.done, new Promise((_, reject) => (timer = setTimeout(() => reject(new Error('the server did not close the connection')), timeoutMs)))]);
    } finally {
      clearTimeout(timer);
    }
    const out = this.received.toString('latin1');
    this.received = Buffer.alloc(0);
    return out;
  }

  end(): void {
    this.socket.end();
  }

  destroy(): void {
    this.socket.destroy();
  }
}
