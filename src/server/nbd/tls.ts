// TLS for NBD: the options a server takes, the psktool key file format, and the in-session
// upgrade of a socket after NBD_OPT_STARTTLS has been answered NBD_REP_ACK.
//
// Modes (the spec's names in brackets):
//   off       [NOTLS]        NBD_OPT_STARTTLS is answered NBD_REP_ERR_UNSUP;
//   optional  [SELECTIVETLS] the client may upgrade; no export is TLS-only;
//   required  [FORCEDTLS]    every option but STARTTLS and ABORT is answered
//                            NBD_REP_ERR_TLS_REQD until TLS is up.
//
// Invariants:
// - a mode other than 'off' has credentials: PSK keys, or a certificate and its key;
// - PSK identities are unique and keys are not empty;
// - with a CA, client certificates are asked for and checked (with PSK they cannot be).

import tls from 'node:tls';
import type { Socket } from 'node:net';
import { AtomioError } from '../../base/errors.js';

export type NbdTlsMode = 'off' | 'optional' | 'required';

export interface NbdPsk {
  identity: string;
  key: Buffer;
}

export interface NbdTlsOptions {
  mode: NbdTlsMode;
  /** Pre-shared keys (as in a psktool file: `identity:hexkey` lines; see parsePskFile). */
  psk?: NbdPsk[];
  /** PEM certificate chain and private key of the server. */
  cert?: string | Buffer;
  key?: string | Buffer;
  /** PEM CA certificates: when given, clients must present a certificate signed by one. */
  ca?: string | Buffer | (string | Buffer)[];
}

/** What a connection needs to upgrade its socket. */
export interface TlsContext {
  mode: NbdTlsMode;
  /** Options for new tls.TLSSocket(socket, options); undefined in mode 'off'. */
  socketOptions: ServerSocketOptions | undefined;
}

/** TLSSocket takes a server's pskCallback too (node's typings only list it for tls.Server). */
export type ServerSocketOptions = tls.TLSSocketOptions & Pick<tls.TlsOptions, 'pskCallback'>;

/**
 * Parses a psktool key file: one `identity:hexkey` per line; blank lines and lines starting
 * with '#' are skipped. Throws ERR_ARGUMENT naming the line on anything else.
 */
export function parsePskFile(text: string): NbdPsk[] {
  const out: NbdPsk[] = [];
  const lines = text.split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.trim();
    if (line === '' || line.startsWith('#')) continue;
    const colon = line.lastIndexOf(':');
    const identity = line.slice(0, colon);
    const hex = line.slice(colon + 1);
    if (colon <= 0 || !/^(?:[0-9a-fA-F]{2})+$/.test(hex)) {
      throw new AtomioError('ERR_ARGUMENT', `PSK file line ${i + 1}: expected identity:hexkey (as psktool writes)`, { line: i + 1 });
    }
    out.push({ identity, key: Buffer.from(hex, 'hex') });
  }
  if (out.length === 0) throw new AtomioError('ERR_ARGUMENT', 'the PSK file holds no identity:hexkey line', {});
  return out;
}

/** Checks `options` and builds what connections use. Throws ERR_ARGUMENT for a bad configuration. */
export function tlsContext(options: NbdTlsOptions | undefined): TlsContext {
  const mode = options?.mode ?? 'off';
  if (mode !== 'off' && mode !== 'optional' && mode !== 'required') {
    throw new AtomioError('ERR_ARGUMENT', `tls.mode is off, optional or required, not ${JSON.stringify(mode)}`, { mode });
  }
  if (options === undefined || mode === 'off') return { mode: 'off', socketOptions: undefined };
  const keys = new Map<string, Buffer>();
  for (const p of options.psk ?? []) {
    if (p.key.length === 0) throw new AtomioError('ERR_ARGUMENT', `PSK identity ${JSON.stringify(p.identity)} has an empty key`, {});
    if (keys.has(p.identity)) throw new AtomioError('ERR_ARGUMENT', `PSK identity ${JSON.stringify(p.identity)} appears twice`, {});
    keys.set(p.identity, p.key);
  }
  const haveCert = options.cert !== undefined || options.key !== undefined;
  if (haveCert && (options.cert === undefined || options.key === undefined)) {
    throw new AtomioError('ERR_ARGUMENT', 'a TLS certificate needs its key, and a key its certificate', {});
  }
  if (keys.size === 0 && !haveCert) {
    throw new AtomioError('ERR_ARGUMENT', `TLS mode ${mode} needs PSK keys or a certificate and key`, {});
  }
  const secure: tls.SecureContextOptions = {};
  if (haveCert) {
    secure.cert = options.cert;
    secure.key = options.key;
  }
  if (options.ca !== undefined) secure.ca = options.ca;
  // PSK cipher suites are not in OpenSSL's default list; with certificates too, both are offered.
  if (keys.size > 0) secure.ciphers = haveCert ? `${tls.DEFAULT_CIPHERS}:PSK` : 'PSK';
  const socketOptions: ServerSocketOptions = {
    isServer: true,
    secureContext: tls.createSecureContext(secure),
  };
  if (options.ca !== undefined) {
    socketOptions.requestCert = true;
    socketOptions.rejectUnauthorized = true;
  }
  if (keys.size > 0) {
    socketOptions.pskCallback = (_socket: tls.TLSSocket, identity: string) => keys.get(identity) ?? null;
  }
  return { mode, socketOptions };
}

/**
 * Upgrades `socket` to TLS as the server; resolves with the TLS socket once the handshake
 * succeeded, rejects if it fails or the socket closes first.
 */
export function upgradeSocket(socket: Socket, options: ServerSocketOptions): { tlsSocket: tls.TLSSocket; secure: Promise<void> } {
  const tlsSocket = new tls.TLSSocket(socket, options);
  const secure = new Promise<void>((resolve, reject) => {
    const done = (error?: Error): void => {
      tlsSocket.off('secure', onSecure);
      tlsSocket.off('error', onError);
      tlsSocket.off('close', onClose);
      if (error === undefined) resolve();
      else reject(error);
    };
    const onSecure = (): void => done();
    const onError = (error: Error): void => done(error);
    const onClose = (): void => done(new Error('the connection closed during the TLS handshake'));
    tlsSocket.on('secure', onSecure);
    tlsSocket.on('error', onError);
    tlsSocket.on('close', onClose);
  });
  return { tlsSocket, secure };
}
