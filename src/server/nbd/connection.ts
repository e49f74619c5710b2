// One client connection: the handshake, then the transmission, then a clean close.
//
// Invariants:
// - the connection never throws out of run(): whatever happens ends in the socket closing;
// - a volume is held open (Volumes.acquire) exactly while the connection is in transmission;
// - a client gets handshakeTimeoutMs to choose an export, then it is disconnected (an idle
//   handshake must not hold a connection slot forever);
// - shutdown() stops reading new requests, lets the requests already read finish and be
//   answered, then closes; a connection still in the handshake is closed at once;
// - after our side ends, the socket is given LINGER_MS to be closed by the client (so that
//   our last replies are not lost to a reset), then destroyed;
// - after NBD_OPT_STARTTLS, the socket and the input are the TLS ones: nothing is read from or
//   written to the plain socket again; bytes the client sent before our NBD_REP_ACK reached it
//   (there must be none) end the session.

import type { Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import type { Store } from '../../store/store.js';
import type { Volumes } from '../volumes.js';
import { VolumeDisk } from './disk.js';
import type { Flusher } from './flush.js';
import { Handshake } from './handshake.js';
import { ByteInput, InputEnded } from './input.js';
import { type TlsContext, upgradeSocket } from './tls.js';
import { Transmission } from './transmission.js';

/** Bytes received and not yet parsed that a connection holds before it stops reading its socket. */
export const INPUT_HIGH_WATER_BYTES = 1024 * 1024;
/** How long a finished connection waits for the client to close before it destroys the socket. */
export const LINGER_MS = 5_000;

export interface ConnectionContext {
  store: Store;
  /** A client that has not finished its handshake by then is disconnected. */
  handshakeTimeoutMs: number;
  volumes: Volumes;
  flusher: Flusher;
  tls: TlsContext;
  log(message: string): void;
  shuttingDown(): boolean;
}

export class Connection {
  /** Resolves when the socket has closed. */
  readonly closed: Promise<void>;
  private input: ByteInput;
  private socket: Socket;
  /** The TLS socket being set up, until its handshake is done. */
  private upgrading: TLSSocket | undefined;
  private resolveClosed!: () => void;
  private phase: 'handshake' | 'transmission' | 'closing' = 'handshake';
  private transmission: Transmission | undefined;
  private release: (() => void) | undefined;
  private readonly peer: string;

  constructor(
    socket: Socket,
    private readonly ctx: ConnectionContext,
  ) {
    this.socket = socket;
    this.peer = `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? '?'}`;
    socket.setNoDelay(true);
    this.closed = new Promise((resolve) => (this.resolveClosed = resolve));
    socket.once('close', () => this.resolveClosed());
    this.input = new ByteInput(socket, INPUT_HIGH_WATER_BYTES);
  }

  /** Serves the client until it leaves or the connection is shut down. */
  async run(): Promise<void> {
    try {
      const end = await this.serve();
      if (end.hard) {
        this.ctx.log(`nbd: ${this.peer}: disconnecting: ${end.reason}`);
        this.destroy();
      }
      // Requests in flight finish before the volume is let go (their replies go nowhere
      // after a hard disconnect), and only then does our side of the socket end.
      await this.transmission?.idle();
      if (!end.hard) this.finish(end.reason);
    } catch (error) {
      this.ctx.log(`nbd: ${this.peer}: connection failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`);
      this.destroy();
      await this.transmission?.idle();
    } finally {
      this.release?.();
    }
  }

  /** Requests in flight, the bytes they hold, and the most bytes held at once. */
  stats(): { requests: number; bytes: number; peakBytes: number; inputBytes: number } {
    const t = this.transmission;
    return {
      requests: t?.inFlight ?? 0,
      bytes: t?.inFlightBytesNow ?? 0,
      peakBytes: t?.peakInFlightBytes ?? 0,
      inputBytes: this.input.bufferedBytes,
    };
  }

  /** Stops taking requests; requests already read are answered, then the connection closes. */
  shutdown(): void {
    if (this.phase === 'transmission') {
      this.input.close('the server is shutting down');
    } else if (this.phase === 'handshake') {
      this.phase = 'closing';
      this.input.close('the server is shutting down');
      this.upgrading?.destroy();
      this.socket.destroy();
    }
  }

  /** Destroys the socket now. */
  destroy(): void {
    this.input.close('destroyed');
    this.upgrading?.destroy();
    this.socket.destroy();
  }

  private async serve(): Promise<{ hard: boolean; reason: string }> {
    const handshake = new Handshake({
      input: () => this.input,
      tlsMode: this.ctx.tls.mode,
      startTls: () => this.startTls(),
      volumes: this.ctx.volumes,
      send: (bytes) => {
        if (!this.socket.destroyed) this.socket.write(bytes);
      },
      drained: () => this.drained(),
      shuttingDown: () => this.ctx.shuttingDown(),
    });
    let result;
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      this.input.close('handshake timeout');
      this.upgrading?.destroy();
    }, this.ctx.handshakeTimeoutMs);
    timer.unref();
    try {
      result = await handshake.run();
    } catch (error) {
      if (timedOut) return { hard: true, reason: `no export chosen within ${this.ctx.handshakeTimeoutMs} ms` };
      if (error instanceof InputEnded) return { hard: false, reason: `handshake: ${error.message}` };
      throw error;
    } finally {
      clearTimeout(timer);
    }
    if (result.kind === 'abort') return { hard: false, reason: 'the client aborted the handshake' };
    if (result.kind === 'disconnect') return { hard: true, reason: result.reason };
    if (this.phase !== 'handshake') return { hard: true, reason: 'the server is shutting down' };

    this.phase = 'transmission';
    this.release = this.ctx.volumes.acquire(result.volume);
    const transmission = new Transmission({
      input: this.input,
      socket: this.socket,
      disk: new VolumeDisk(
        result.volume.snapshot === undefined ? this.ctx.store.block : this.ctx.store.openSnapshot(result.volume.snapshot).block,
        result.volume,
      ),
      flusher: this.ctx.flusher,
      structured: result.structured,
      baseAllocation: result.baseAllocation,
      log: (message) => this.ctx.log(`nbd: ${this.peer}: ${message}`),
    });
    this.transmission = transmission;
    if (this.ctx.shuttingDown()) this.input.close('the server is shutting down');
    // Ends on NBD_CMD_DISC, end of input, shutdown, or a request it cannot parse.
    const end = await transmission.run();
    this.phase = 'closing';
    if (end.kind === 'disconnect') return { hard: true, reason: end.reason };
    this.input.close(end.kind === 'disc' ? 'NBD_CMD_DISC' : end.reason);
    return { hard: false, reason: end.kind === 'disc' ? 'NBD_CMD_DISC' : end.reason };
  }

  /** Sends what is queued on the plain socket, then runs the TLS handshake and reads from TLS. */
  private async startTls(): Promise<void> {
    const options = this.ctx.tls.socketOptions;
    if (options === undefined) throw new Error('TLS is not configured');
    const plain = this.socket;
    // The NBD_REP_ACK must be on its way before the TLS layer takes the socket over.
    await new Promise<void>((resolve) => plain.write(Buffer.alloc(0), () => resolve()));
    if (this.input.ended) throw new InputEnded('the connection ended before TLS started');
    const early = this.input.detach('TLS takes over the socket');
    if (early > 0) throw new Error(`the client sent ${early} bytes after NBD_OPT_STARTTLS before the server's reply`);
    const { tlsSocket, secure } = upgradeSocket(plain, options);
    this.upgrading = tlsSocket;
    tlsSocket.on('error', () => undefined);
    tlsSocket.once('close', () => this.resolveClosed());
    this.socket = tlsSocket;
    this.input = new ByteInput(tlsSocket, INPUT_HIGH_WATER_BYTES);
    try {
      await secure;
    } finally {
      this.upgrading = undefined;
    }
  }

  /** Ends our side once everything queued is written; destroys the socket if the client lingers. */
  private finish(reason: string): void {
    this.phase = 'closing';
    this.input.close(reason);
    if (this.socket.destroyed) return;
    const timer = setTimeout(() => this.socket.destroy(), LINGER_MS);
    timer.unref();
    this.socket.once('close', () => clearTimeout(timer));
    this.socket.end();
  }

  private drained(): Promise<void> {
    if (!this.socket.writableNeedDrain || this.socket.destroyed) return Promise.resolve();
    return new Promise((resolve) => {
      const done = (): void => {
        this.socket.off('drain', done);
        this.socket.off('close', done);
        resolve();
      };
      this.socket.on('drain', done);
      this.socket.on('close', done);
    });
  }
}
