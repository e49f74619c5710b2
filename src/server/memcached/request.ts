// What a parsed command line becomes: a Request the connection schedules and runs.
//
// A request is either "exclusive" (it reads the store, so it runs only once every earlier
// write of its connection has been applied, and nothing of the connection runs beside it)
// or a write that may be in flight together with the connection's other writes (the store
// applies commits in the order they were submitted, so their effects keep the connection's
// order; their replies are queued and sent in order).

import type { Cache } from './cache.js';
import type { ReadTurn } from './turn.js';

/** Where an exclusive request may write its reply directly (nothing else is queued then). */
export interface Output {
  write(bytes: Buffer): void;
  /** True when the socket holds more unsent bytes than the connection's high-water mark. */
  full(): boolean;
  /** Resolves when the socket has drained (or closed). */
  drained(): Promise<void>;
}

/** Bytes to send; null sends nothing (noreply, quiet mode). */
export type Reply = Buffer | null;

export interface Request {
  /** Bytes of the data block that follows the line (the CRLF after it not counted); -1: none. */
  dataBytes: number;
  /** The data block is read and dropped (the request already knows its reply). */
  swallow: boolean;
  exclusive: boolean;
  /** The connection closes once this request's reply is sent. */
  close: boolean;
  /** The reply when the data block does not end with CRLF. */
  badChunk: Reply;
  /** Runs with the data block (when there is one). May throw; the connection answers SERVER_ERROR. */
  run(data: Buffer | undefined, out: Output): Reply | Promise<Reply>;
}

/** The server-wide state commands read (stats) and change (verbosity). */
export interface ServerState {
  cache: Cache;
  /** Reads held for the check phase of their turn of the event loop. */
  reads: ReadTurn;
  startedAtMs: number;
  host: string;
  port: number;
  maxConnections: number;
  idleTimeoutMs: number;
  durability: string;
  capacityBytes: number;
  verbosity: number;
  currConnections: number;
  totalConnections: number;
  rejectedConnections: number;
  idleKicks: number;
  bytesRead: number;
  bytesWritten: number;
  accepting: boolean;
}

export function reply(bytes: Reply, noreply = false): Request {
  return { dataBytes: -1, swallow: false, exclusive: false, close: false, badChunk: null, run: () => (noreply ? null : bytes) };
}
