// The memcached server: a TCP listener handing each client to a Connection, over one kv pool.
//
// Invariants:
// - it listens on a loopback address unless the caller passes allowRemote (the protocol has
//   no authentication: anything else would put the data on the network for anyone);
// - at most maxConnections clients at once; one more is answered "ERROR Too many open
//   connections" and closed, as memcached does;
// - close() stops accepting, lets every connection answer the requests it has read, and
//   resolves when every socket is closed (after SHUTDOWN_GRACE_MS, stragglers are destroyed).
//   It never closes the store: the caller owns it.

import net, { type AddressInfo } from 'node:net';
import { AtomioError } from '../../base/errors.js';
import { systemClock, type Clock } from '../../base/clock.js';
import type { Store } from '../../store/store.js';
import { isLoopback } from '../nbd/server.js';
import { Cache } from './cache.js';
import { Connection } from './connection.js';
import { MAX_HEADER_BYTES } from './item.js';
import { DEFAULT_MAX_ITEM_BYTES, ERR, line } from './protocol.js';
import type { ServerState } from './request.js';
import { ReadTurn } from './turn.js';

export const MEMCACHED_DEFAULT_PORT = 11211;
/** memcached's default -c. */
export const DEFAULT_MAX_CONNECTIONS = 1024;
/** The kv pool that holds the items. */
export const DEFAULT_POOL = 'memcached';
/** How long close() waits for connections to finish their requests before destroying them. */
export const SHUTDOWN_GRACE_MS = 10_000;

export interface MemcachedServerOptions {
  /** Address to listen on. Default 127.0.0.1. */
  host?: string;
  /** Port; 0 picks a free one. Default 11211. */
  port?: number;
  /** Allow a non-loopback host (the protocol has no authentication). Default false. */
  allowRemote?: boolean;
  /** Largest item's data, in bytes. Default 1 MiB; at most what the store's values allow. */
  maxItemBytes?: number;
  /** Clients at once. Default 1024. */
  maxConnections?: number;
  /** A client idle this long is disconnected; 0 (default) never. */
  idleTimeoutMs?: number;
  /** The kv pool of the items. Default 'memcached'. */
  pool?: string;
  /** Time source for exptimes; default the system clock (tests pass a ManualClock). */
  clock?: Clock;
  /** Where notable events go (connection failures, refused clients). Default: nowhere. */
  log?: (line: string) => void;
}

export interface MemcachedServer {
  readonly address: AddressInfo;
  /** The items, for tests and embedding. */
  readonly cache: Cache;
  connections(): number;
  /** Across connections: unparsed input bytes held now, and the most unsent reply bytes one holds. */
  stats(): { connections: number; inputBytes: number; maxOutputBytes: number };
  /** Stops accepting, answers the requests already read, closes every connection. Idempotent. */
  close(): Promise<void>;
}

/**
 * Serves the memcached text and meta protocol over `store`'s kv pool 'memcached'.
 *
 * Rejects with ERR_ARGUMENT for a non-loopback host without allowRemote, for limits out of
 * range, and with the system's error when the address cannot be listened on (EADDRINUSE).
 * @example
 *   const server = await startMemcachedServer(store, { port: 11211 });
 *   // printf 'set a 0 0 1\r\nx\r\nget a\r\n' | nc 127.0.0.1 11211
 *   await server.close();
 */
export async function startMemcachedServer(store: Store, options: MemcachedServerOptions = {}): Promise<MemcachedServer> {
  const host = options.host ?? '127.0.0.1';
  const port = options.port ?? MEMCACHED_DEFAULT_PORT;
  if (!Number.isSafeInteger(port) || port < 0 || port > 65535) {
    throw new AtomioError('ERR_ARGUMENT', `port must be an integer 0..65535, got ${String(port)}`, { port });
  }
  if (!isLoopback(host) && options.allowRemote !== true) {
    throw new AtomioError(
      'ERR_ARGUMENT',
      `${host} is not a loopback address; the memcached protocol has no authentication, so serving it beyond this host needs allowRemote (--memcached-allow-remote)`,
      { host },
    );
  }
  const maxItemLimit = store.limits.maxValueBytes - MAX_HEADER_BYTES;
  const maxItemBytes = options.maxItemBytes ?? Math.min(DEFAULT_MAX_ITEM_BYTES, maxItemLimit);
  if (!Number.isSafeInteger(maxItemBytes) || maxItemBytes < 1 || maxItemBytes > maxItemLimit) {
    throw new AtomioError('ERR_ARGUMENT', `the item size limit is 1 … ${maxItemLimit} bytes on this store, not ${String(maxItemBytes)}`, { maxItemBytes });
  }
  const maxConnections = options.maxConnections ?? DEFAULT_MAX_CONNECTIONS;
  if (!Number.isSafeInteger(maxConnections) || maxConnections < 1) {
    throw new AtomioError('ERR_ARGUMENT', `maxConnections is a positive integer, not ${String(maxConnections)}`, {});
  }
  const idleTimeoutMs = options.idleTimeoutMs ?? 0;
  if (!Number.isSafeInteger(idleTimeoutMs) || idleTimeoutMs < 0) {
    throw new AtomioError('ERR_ARGUMENT', `idleTimeoutMs is an integer >= 0, not ${String(idleTimeoutMs)}`, {});
  }
  const log = options.log ?? (() => undefined);
  const cache = new Cache(store, { pool: options.pool ?? DEFAULT_POOL, maxItemBytes, clock: options.clock ?? systemClock, log });
  await cache.start();

  const state: ServerState = {
    cache,
    reads: new ReadTurn(),
    startedAtMs: Date.now(),
    host,
    port,
    maxConnections,
    idleTimeoutMs,
    durability: store.durability,
    capacityBytes: store.stats().usableBytes,
    verbosity: 0,
    currConnections: 0,
    totalConnections: 0,
    rejectedConnections: 0,
    idleKicks: 0,
    bytesRead: 0,
    bytesWritten: 0,
    accepting: true,
  };
  const connections = new Set<Connection>();
  let closing: Promise<void> | undefined;

  // allowHalfOpen: a client that sends its requests and then shuts down its side still gets
  // every reply; each connection ends our side itself.
  const listener = net.createServer({ noDelay: true, allowHalfOpen: true }, (socket) => {
    socket.on('error', () => undefined);
    if (closing !== undefined) {
      socket.destroy();
      return;
    }
    if (connections.size >= maxConnections) {
      state.rejectedConnections++;
      log(`memcached: refusing ${socket.remoteAddress ?? '?'}: ${maxConnections} connections already`);
      socket.end(line(ERR.tooManyConnections));
      setTimeout(() => socket.destroy(), 1000).unref();
      return;
    }
    const connection = new Connection(socket, state, log);
    connections.add(connection);
    state.currConnections++;
    state.totalConnections++;
    void connection.closed.then(() => {
      connections.delete(connection);
      state.currConnections--;
    });
  });
  await new Promise<void>((resolve, reject) => {
    listener.once('error', reject);
    listener.listen({ host, port, backlog: 511 }, () => {
      listener.off('error', reject);
      resolve();
    });
  });
  listener.on('error', (error) => log(`memcached: listener error: ${error.message}`));
  const address = listener.address() as AddressInfo;
  state.port = address.port;

  const close = async (): Promise<void> => {
    state.accepting = false;
    const stopped = new Promise<void>((resolve) => listener.close(() => resolve()));
    for (const c of connections) c.shutdown();
    const all = Promise.all([...connections].map((c) => c.closed));
    let timer: NodeJS.Timeout | undefined;
    const grace = new Promise<'late'>((resolve) => (timer = setTimeout(() => resolve('late'), SHUTDOWN_GRACE_MS)));
    if ((await Promise.race([all, grace])) === 'late') {
      log(`memcached: ${connections.size} connection(s) still open after ${SHUTDOWN_GRACE_MS} ms; closing them`);
      for (const c of connections) c.destroy();
      await all;
    }
    clearTimeout(timer);
    cache.close();
    await stopped;
  };

  return {
    address,
    cache,
    connections: () => connections.size,
    stats: () => {
      let inputBytes = 0;
      let maxOutputBytes = 0;
      for (const c of connections) {
        inputBytes += c.bufferedBytes;
        maxOutputBytes = Math.max(maxOutputBytes, c.outputBytes);
      }
      return { connections: connections.size, inputBytes, maxOutputBytes };
    },
    close: () => (closing ??= close()),
  };
}
