// The NBD server: a TCP listener handing each client to a Connection.
//
// Invariants:
// - it listens on a loopback address unless the caller passes allowRemote or requires TLS
//   (tls.mode 'required'): anything else would put the disks on the network in the clear;
// - at most MAX_CONNECTIONS clients at once; more are closed as they arrive; a client that
//   has not chosen an export within handshakeTimeoutMs is closed;
// - close() stops accepting, lets every connection answer the requests it has read, and
//   resolves when every socket is closed (after SHUTDOWN_GRACE_MS, stragglers are destroyed).
//   It never closes the store: the caller owns it.

import net, { type AddressInfo } from 'node:net';
import { AtomioError } from '../../base/errors.js';
import type { Durability } from '../../engine/engine.js';
import type { Store } from '../../store/store.js';
import type { Volumes } from '../volumes.js';
import { Connection } from './connection.js';
import { Flusher } from './flush.js';
import { tlsContext, type NbdTlsOptions } from './tls.js';

/** The port IANA assigned to NBD. */
export const NBD_DEFAULT_PORT = 10809;
export const MAX_CONNECTIONS = 128;
/** How long a client may take to choose an export. */
export const HANDSHAKE_TIMEOUT_MS = 30_000;
/** How long close() waits for connections to finish their requests before destroying them. */
export const SHUTDOWN_GRACE_MS = 10_000;

export interface NbdServerOptions {
  /** Address to listen on. Default 127.0.0.1. */
  host?: string;
  /** Port; 0 picks a free one. Default 10809. */
  port?: number;
  /** Allow a non-loopback host without requiring TLS (the disks travel in the clear). Default false. */
  allowRemote?: boolean;
  /** TLS (NBD_OPT_STARTTLS): off (default), optional, or required, with PSK keys and/or a certificate. */
  tls?: NbdTlsOptions;
  /**
   * The durability the store was opened with. A FLUSH has nothing to wait for only when the
   * store itself was opened 'full' (and this does not say 'none'); otherwise it flushes the
   * store. Default: the store's own.
   */
  durability?: Durability;
  /** Milliseconds a client may take from connecting to choosing an export. Default HANDSHAKE_TIMEOUT_MS. */
  handshakeTimeoutMs?: number;
  /** Where notable events go (connection failures, disconnects for broken rules). Default: nowhere. */
  log?: (line: string) => void;
}

export interface NbdServer {
  /** Where the server listens. */
  readonly address: AddressInfo;
  /** Clients connected now. */
  connections(): number;
  /**
   * Across connections: requests in flight and the payload/reply bytes they hold, the most
   * bytes one connection has held at once, and received bytes not yet parsed.
   */
  stats(): { connections: number; requests: number; bytes: number; peakConnectionBytes: number; inputBytes: number };
  /** Stops accepting, finishes the requests in flight, closes every connection. Idempotent. */
  close(): Promise<void>;
}

/**
 * Serves `volumes` of `store` over NBD (fixed newstyle, TLS as `options.tls` says).
 *
 * Rejects with ERR_ARGUMENT for a non-loopback host without allowRemote or required TLS,
 * for TLS options without credentials, and with the
 * system's error when the address cannot be listened on (EADDRINUSE, say).
 * @example
 *   const server = await startNbdServer(store, volumes, { port: 10809 });
 *   // qemu-img info nbd://127.0.0.1:10809/default
 *   await server.close();
 */
export async function startNbdServer(store: Store, volumes: Volumes, options: NbdServerOptions = {}): Promise<NbdServer> {
  const host = options.host ?? '127.0.0.1';
  const port = options.port ?? NBD_DEFAULT_PORT;
  if (!Number.isSafeInteger(port) || port < 0 || port > 65535) {
    throw new AtomioError('ERR_ARGUMENT', `port must be an integer 0..65535, got ${String(port)}`, { port });
  }
  const tls = tlsContext(options.tls);
  if (!isLoopback(host) && options.allowRemote !== true && tls.mode !== 'required') {
    throw new AtomioError(
      'ERR_ARGUMENT',
      `${host} is not a loopback address; serving NBD beyond this host needs TLS required (--tls require) or, in the clear, allowRemote (--nbd-allow-remote)`,
      { host },
    );
  }
  const log = options.log ?? (() => undefined);
  const flusher = new Flusher(store, options.durability);
  const connections = new Set<Connection>();
  let closing: Promise<void> | undefined;
  const handshakeTimeoutMs = options.handshakeTimeoutMs ?? HANDSHAKE_TIMEOUT_MS;
  const ctx = { store, volumes, flusher, tls, log, handshakeTimeoutMs, shuttingDown: () => closing !== undefined };

  // allowHalfOpen: a client that sends NBD_CMD_DISC (or anything) and then shuts down its
  // side still gets the replies to what it sent; each connection ends our side itself.
  const listener = net.createServer({ noDelay: true, allowHalfOpen: true }, (socket) => {
    if (closing !== undefined || connections.size >= MAX_CONNECTIONS) {
      if (closing === undefined) log(`nbd: refusing ${socket.remoteAddress ?? '?'}: ${MAX_CONNECTIONS} connections already`);
      socket.destroy();
      return;
    }
    socket.on('error', () => undefined);
    const connection = new Connection(socket, ctx);
    connections.add(connection);
    void connection.closed.then(() => connections.delete(connection));
    void connection.run();
  });
  await new Promise<void>((resolve, reject) => {
    listener.once('error', reject);
    listener.listen({ host, port }, () => {
      listener.off('error', reject);
      resolve();
    });
  });
  listener.on('error', (error) => log(`nbd: listener error: ${error.message}`));
  const address = listener.address() as AddressInfo;

  const close = async (): Promise<void> => {
    const stopped = new Promise<void>((resolve) => listener.close(() => resolve()));
    for (const c of connections) c.shutdown();
    const all = Promise.all([...connections].map((c) => c.closed));
    let timer: NodeJS.Timeout | undefined;
    const grace = new Promise<'late'>((resolve) => (timer = setTimeout(() => resolve('late'), SHUTDOWN_GRACE_MS)));
    if ((await Promise.race([all, grace])) === 'late') {
      log(`nbd: ${connections.size} connection(s) still open after ${SHUTDOWN_GRACE_MS} ms; closing them`);
      for (const c of connections) c.destroy();
      await all;
    }
    clearTimeout(timer);
    await stopped;
  };

  return {
    address,
    connections: () => connections.size,
    stats: () => {
      const out = { connections: connections.size, requests: 0, bytes: 0, peakConnectionBytes: 0, inputBytes: 0 };
      for (const c of connections) {
        const s = c.stats();
        out.requests += s.requests;
        out.bytes += s.bytes;
        out.inputBytes += s.inputBytes;
        out.peakConnectionBytes = Math.max(out.peakConnectionBytes, s.peakBytes);
      }
      return out;
    },
    close: () => (closing ??= close()),
  };
}

/** True for 127.0.0.0/8, ::1, ::ffff:127.x.x.x and 'localhost'. */
export function isLoopback(host: string): boolean {
  if (host === 'localhost') return true;
  const kind = net.isIP(host);
  if (kind === 4) return host.startsWith('127.');
  if (kind === 6) {
    const h = host.toLowerCase();
    return h === '::1' || h === '0:0:0:0:0:0:0:1' || h.startsWith('::ffff:127.');
  }
  return false;
}
