// `atomio serve` and `atomio volume`: a store's volumes as network disks and its kv pool
// 'memcached' as a persistent memcached, and the commands that manage the volumes.
//
//   atomio serve [--data DIR] [--nbd HOST:PORT|off] [--volume-size BYTES] [--capacity BYTES]
//                [--durability full|none] [--preallocate] [--nbd-allow-remote]
//                [--tls off|on|require] [--tls-psk FILE] [--tls-cert FILE --tls-key FILE] [--tls-ca FILE]
//                [--memcached HOST:PORT|off] [--memcached-allow-remote] [--max-item-size BYTES]
//                [--max-connections N] [--idle-timeout SECONDS]
//   atomio volume create NAME --size BYTES [--read-only] [--data DIR]
//   atomio volume list [--data DIR] [--json]
//   atomio volume resize NAME --size BYTES [--data DIR]
//   atomio volume remove NAME [--data DIR]
//
// serve runs until SIGINT or SIGTERM, then stops accepting, answers the requests already
// read, and closes the store. The volume commands open the store themselves, so they fail
// with ERR_LOCKED while a server has it.

import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { AtomioError, isAtomioError } from '../base/errors.js';
import type { Durability } from '../engine/engine.js';
import { fileExists } from '../media/file.js';
import { DATA_FILE_NAME, open, type Store } from '../store/store.js';
import { NBD_DEFAULT_PORT, parsePskFile, startNbdServer, type NbdServer, type NbdTlsOptions } from '../server/nbd/index.js';
import {
  DEFAULT_MAX_CONNECTIONS,
  DEFAULT_POOL,
  MEMCACHED_DEFAULT_PORT,
  startMemcachedServer,
  type MemcachedServer,
} from '../server/memcached/index.js';
import { DEFAULT_VOLUME_BYTES, Volumes } from '../server/volumes.js';
import { EXIT, UsageError, aligned, formatBytes, writeErr, writeOut } from './output.js';

export const SERVE_USAGE = `usage: atomio serve [options]

Serves the volumes of the store in DIR as network block devices (NBD, fixed newstyle;
qemu-img, qemu, nbdkit's tools and the Linux nbd client speak it), and its kv pool
'${DEFAULT_POOL}' as a persistent memcached (text and meta protocol; any memcached client
speaks it). The volume called 'default' answers the empty export name too:
nbd://127.0.0.1:10809/ reaches it.

options:
  --data DIR               the store (created if new; default ./data)
  --nbd HOST:PORT|off      where NBD listens (default 127.0.0.1:${NBD_DEFAULT_PORT}); off: no NBD
  --nbd-allow-remote       allow a non-loopback HOST without --tls require (the disks
                           travel in the clear)
  --tls off|on|require     NBD_OPT_STARTTLS: off (default) refuses it; on lets clients
                           upgrade; require refuses every other option until TLS is up.
                           With require, a non-loopback HOST needs no --nbd-allow-remote
  --tls-psk FILE           TLS pre-shared keys: lines identity:hexkey (psktool's format);
                           e.g. nbdinfo 'nbds://IDENTITY@HOST:PORT/?tls-psk-file=FILE'
  --tls-cert FILE          TLS server certificate chain (PEM); needs --tls-key
  --tls-key FILE           its private key (PEM)
  --tls-ca FILE            CA certificates (PEM): clients must show a certificate it signed
  --memcached HOST:PORT|off
                           where memcached listens (default 127.0.0.1:${MEMCACHED_DEFAULT_PORT}; env
                           ATOMIO_MEMCACHED); off: no memcached. When the default address
                           is taken and no address was given, memcached stays off and says so
  --memcached-allow-remote allow a non-loopback memcached HOST (the protocol has no
                           authentication: anyone who reaches the port reads and writes)
  --max-item-size BYTES    largest memcached item (default 1M; env ATOMIO_MAX_ITEM_SIZE);
                           larger sets get SERVER_ERROR object too large for cache
  --max-connections N      memcached clients at once (default ${DEFAULT_MAX_CONNECTIONS}; env
                           ATOMIO_MAX_CONNECTIONS); one more gets ERROR Too many open
                           connections
  --idle-timeout SECONDS   disconnect a memcached client idle this long (default 0: never;
                           env ATOMIO_IDLE_TIMEOUT)
  --volume-size BYTES      size of the default volume when it is first created (default 1T)
  --capacity BYTES         most bytes the store's data file may take (only when creating it)
  --preallocate            before serving, write zeros over the part of the data file no
                           segment has used yet (about a second per GiB, once), so durable
                           writes never also pay the file system's block allocation
  --durability full|none   full (default): a write is acknowledged (NBD reply, memcached
                           STORED/DELETED/new value) once on stable storage; none: once the
                           OS has it (NBD FLUSH and FUA still make it durable; memcached
                           becomes a cache that may lose its last second in a crash)
  --help                   print this text

BYTES takes a suffix K, M, G, T or P (powers of 1024): 64G, 512M.
SIGINT or SIGTERM stops the server: requests already read are answered, then the store
closes. A second signal kills it at once (the store recovers on its next open).
`;

export const VOLUME_USAGE = `usage: atomio volume <create|list|resize|remove> [options]

  volume create NAME --size BYTES [--read-only] [--data DIR]
                       a new volume that reads as zeros; NAME is 1-64 of A-Z a-z 0-9 . _ -
  volume list [--data DIR] [--json]
  volume resize NAME --size BYTES [--data DIR]
                       a new size: a larger one reads as zeros past the old end; a
                       smaller one trims what it cuts off
  volume remove NAME [--data DIR]
                       forgets the volume and trims all of its data

The commands open the store in DIR (default ./data), so they cannot run while
\`atomio serve\` has it open: stop the server first.
`;

export interface ServeControl {
  /** Stops the server as SIGINT would (for tests and embedding). */
  signal?: AbortSignal;
}

/**
 * Runs `atomio serve`; resolves with the exit code once stopped by SIGINT, SIGTERM or
 * `control.signal`.
 */
export async function serve(argv: string[], control: ServeControl = {}): Promise<number> {
  const options = parseServeArgs(argv);
  if (options === undefined) return EXIT.ok;
  // Listening for the signals before anything is printed: a script that sends SIGTERM as soon
  // as it reads where we listen must get a clean stop, not the default kill.
  const stop = stopRequested(control.signal);
  let store: Store;
  try {
    store = await open(options.data, {
      durability: options.durability,
      ...(options.capacity === undefined ? {} : { capacity: options.capacity }),
      preallocate: options.preallocate,
    });
  } catch (error) {
    stop.cancel();
    throw error;
  }
  let server: NbdServer | undefined;
  let memcached: MemcachedServer | undefined;
  try {
    const volumes = await Volumes.load(store, store.directory, { defaultSize: options.volumeSize ?? DEFAULT_VOLUME_BYTES });
    const existing = volumes.get('');
    if (options.volumeSize !== undefined && existing !== undefined && existing.size !== options.volumeSize) {
      writeErr(`atomio: note: --volume-size sizes the default volume only when it is created; it is ${existing.size} bytes\n`);
    }
    if (options.nbd !== undefined) {
      server = await startNbdServer(store, volumes, {
        host: options.nbd.host,
        port: options.nbd.port,
        allowRemote: options.allowRemote,
        ...(options.tls === undefined ? {} : { tls: options.tls }),
        durability: options.durability,
        log: (line) => writeErr(`atomio: ${line}\n`),
      });
      const a = server.address;
      const host = a.family === 'IPv6' ? `[${a.address}]` : a.address;
      const tlsNote = options.tls === undefined ? '' : options.tls.mode === 'required' ? ', TLS required' : ', TLS offered';
      // nbd-uri.md: nbds:// is the scheme of TLS; clients take nbd:// as a request for plain text.
      const scheme = options.tls?.mode === 'required' ? 'nbds' : 'nbd';
      writeOut(`atomio: serving NBD on ${scheme}://${host}:${a.port}/${tlsNote} (exports: ${volumes.list().map((v) => v.name).join(', ') || 'none'})\n`);
    } else {
      writeOut('atomio: NBD is off\n');
    }
    if (options.memcached !== undefined) {
      memcached = await startMemcachedOrNote(store, options);
      if (memcached !== undefined) {
        const a = memcached.address;
        const host = a.family === 'IPv6' ? `[${a.address}]` : a.address;
        writeOut(
          `atomio: serving memcached on ${host}:${a.port} (items in kv pool '${DEFAULT_POOL}', max item size ${formatBytes(memcached.cache.maxItemBytes)})\n`,
        );
      }
    } else {
      writeOut('atomio: memcached is off\n');
    }
    if (server === undefined && memcached === undefined) writeOut('atomio: nothing is served\n');
    const stats = store.stats();
    writeOut(`atomio: data in ${store.directory} (capacity ${formatBytes(stats.capacity)}, durability ${options.durability})\n`);
    writeOut('atomio: SIGINT or SIGTERM stops the server\n');
    const why = await stop.promise;
    writeOut(`atomio: ${why}: finishing the requests in flight\n`);
  } finally {
    stop.cancel();
    await Promise.all([server?.close(), memcached?.close()]);
    await store.close();
  }
  writeOut('atomio: stopped; the store is closed\n');
  return EXIT.ok;
}

/** Runs `atomio volume ...`; resolves with the exit code. */
export async function volumeCommand(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub === undefined || sub === '--help' || sub === '-h' || sub === 'help') {
    if (sub === undefined) throw new UsageError(`volume: which one: create, list, resize or remove?\n${VOLUME_USAGE}`);
    writeOut(VOLUME_USAGE);
    return EXIT.ok;
  }
  let parsed;
  try {
    parsed = parseArgs({
      args: rest,
      options: {
        data: { type: 'string' },
        size: { type: 'string' },
        'read-only': { type: 'boolean' },
        json: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
      allowPositionals: true,
      strict: true,
    });
  } catch (error) {
    throw new UsageError(`volume ${sub}: ${(error as Error).message}`);
  }
  const v = parsed.values;
  if (v.help === true) {
    writeOut(VOLUME_USAGE);
    return EXIT.ok;
  }
  const data = checkData(v.data);
  const names = parsed.positionals;
  const allowed: Record<string, string[]> = { create: ['size', 'read-only'], list: ['json'], resize: ['size'], remove: [] };
  const mine = allowed[sub];
  if (mine === undefined) throw new UsageError(`volume: unknown subcommand '${sub}' (create, list, resize or remove)`);
  for (const key of ['size', 'read-only', 'json'] as const) {
    if (v[key] !== undefined && !mine.includes(key)) throw new UsageError(`volume ${sub}: --${key} does not apply`);
  }
  const wantName = sub !== 'list';
  if (wantName && names.length !== 1) throw new UsageError(`volume ${sub}: give one NAME`);
  if (!wantName && names.length > 0) throw new UsageError(`volume list: unexpected argument '${names[0]}'`);
  if ((sub === 'create' || sub === 'resize') && v.size === undefined) throw new UsageError(`volume ${sub}: --size BYTES is required`);
  const size = v.size === undefined ? 0 : parseSize(v.size, '--size');

  if (sub !== 'create' && !(await fileExists(path.join(data, DATA_FILE_NAME)))) {
    throw new AtomioError('ERR_ARGUMENT', `${path.resolve(data)} holds no atomio store; \`atomio serve --data ${data}\` creates one`, { path: data });
  }
  const store = await openForCommand(data);
  try {
    const volumes = await Volumes.load(store, store.directory);
    switch (sub) {
      case 'create': {
        const created = await volumes.create(names[0]!, { size, readOnly: v['read-only'] === true });
        writeOut(`created volume '${created.name}': ${formatBytes(created.size)}${created.readOnly ? ', read-only' : ''}, slot ${created.slot}\n`);
        break;
      }
      case 'resize': {
        const before = volumes.get(names[0]!)?.size;
        const resized = await volumes.resize(names[0]!, size);
        writeOut(`resized volume '${resized.name}': ${formatBytes(before ?? 0)} -> ${formatBytes(resized.size)}\n`);
        break;
      }
      case 'remove':
        await volumes.remove(names[0]!);
        writeOut(`removed volume '${names[0]!}' and trimmed its data\n`);
        break;
      default: {
        const list = volumes.list();
        if (v.json === true) {
          writeOut(`${JSON.stringify(list, null, 2)}\n`);
        } else if (list.length === 0) {
          writeOut('no volumes\n');
        } else {
          writeOut(aligned(list.map((x) => [x.name, `${formatBytes(x.size)} (${x.size} bytes)${x.readOnly ? ', read-only' : ''}, slot ${x.slot}`]), ''));
        }
      }
    }
  } finally {
    await store.close();
  }
  return EXIT.ok;
}

/** Opens the store for a command that works on it offline (volume, snapshot), explaining ERR_LOCKED. */
export async function openForCommand(data: string, commands = 'Volume commands'): Promise<Store> {
  try {
    return await open(data);
  } catch (error) {
    if (isAtomioError(error, 'ERR_LOCKED')) {
      throw new AtomioError(
        'ERR_LOCKED',
        `${error.message}. ${commands} open the store themselves; is \`atomio serve\` running on it? Stop it first.`,
        { ...error.details },
        { cause: error },
      );
    }
    throw error;
  }
}

interface ServeOptions {
  data: string;
  nbd: { host: string; port: number } | undefined;
  allowRemote: boolean;
  tls: NbdTlsOptions | undefined;
  volumeSize: number | undefined;
  capacity: number | undefined;
  durability: Durability;
  preallocate: boolean;
  memcached: { host: string; port: number; explicit: boolean } | undefined;
  memcachedAllowRemote: boolean;
  /** undefined: the server's default (1 MiB, or less on a store whose values are smaller). */
  maxItemBytes: number | undefined;
  maxConnections: number;
  idleTimeoutMs: number;
}

/** Starts memcached; when the default address is taken and none was given, says so and goes on without. */
async function startMemcachedOrNote(store: Store, options: ServeOptions): Promise<MemcachedServer | undefined> {
  const where = options.memcached!;
  try {
    return await startMemcachedServer(store, {
      host: where.host,
      port: where.port,
      allowRemote: options.memcachedAllowRemote,
      ...(options.maxItemBytes === undefined ? {} : { maxItemBytes: options.maxItemBytes }),
      maxConnections: options.maxConnections,
      idleTimeoutMs: options.idleTimeoutMs,
      log: (line) => writeErr(`atomio: ${line}\n`),
    });
  } catch (error) {
    if (!where.explicit && (error as NodeJS.ErrnoException).code === 'EADDRINUSE') {
      writeErr(`atomio: note: ${where.host}:${where.port} is in use (another memcached?); memcached is off: give --memcached HOST:PORT\n`);
      return undefined;
    }
    throw error;
  }
}

function parseServeArgs(argv: string[]): ServeOptions | undefined {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      options: {
        data: { type: 'string' },
        nbd: { type: 'string' },
        'nbd-allow-remote': { type: 'boolean' },
        tls: { type: 'string' },
        'tls-psk': { type: 'string' },
        'tls-cert': { type: 'string' },
        'tls-key': { type: 'string' },
        'tls-ca': { type: 'string' },
        'volume-size': { type: 'string' },
        capacity: { type: 'string' },
        durability: { type: 'string' },
        preallocate: { type: 'boolean' },
        memcached: { type: 'string' },
        'memcached-allow-remote': { type: 'boolean' },
        'max-item-size': { type: 'string' },
        'max-connections': { type: 'string' },
        'idle-timeout': { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
      allowPositionals: false,
      strict: true,
    });
  } catch (error) {
    throw new UsageError(`serve: ${(error as Error).message}`);
  }
  const v = parsed.values;
  if (v.help === true) {
    writeOut(SERVE_USAGE);
    return undefined;
  }
  const durability = v.durability ?? 'full';
  if (durability !== 'full' && durability !== 'none') throw new UsageError(`serve: --durability is full or none, not '${durability}'`);
  return {
    data: checkData(v.data),
    nbd: parseListen(v.nbd ?? `127.0.0.1:${NBD_DEFAULT_PORT}`),
    allowRemote: v['nbd-allow-remote'] === true,
    tls: parseTls(v),
    volumeSize: v['volume-size'] === undefined ? undefined : parseSize(v['volume-size'], '--volume-size'),
    capacity: v.capacity === undefined ? undefined : parseSize(v.capacity, '--capacity'),
    durability,
    preallocate: v.preallocate === true,
    ...parseMemcachedArgs(v),
  };
}

/** The memcached flags, each falling back to its environment variable, then its default. */
function parseMemcachedArgs(v: {
  memcached?: string;
  'memcached-allow-remote'?: boolean;
  'max-item-size'?: string;
  'max-connections'?: string;
  'idle-timeout'?: string;
}): Pick<ServeOptions, 'memcached' | 'memcachedAllowRemote' | 'maxItemBytes' | 'maxConnections' | 'idleTimeoutMs'> {
  const env = process.env;
  const listen = v.memcached ?? env.ATOMIO_MEMCACHED;
  let memcached: ServeOptions['memcached'];
  try {
    const at = parseListen(listen ?? `127.0.0.1:${MEMCACHED_DEFAULT_PORT}`);
    memcached = at === undefined ? undefined : { ...at, explicit: listen !== undefined };
  } catch {
    throw new UsageError(`--memcached takes HOST:PORT ([::1]:PORT for IPv6) or off, not '${String(listen)}'`);
  }
  const itemSize = v['max-item-size'] ?? env.ATOMIO_MAX_ITEM_SIZE;
  const count = (text: string | undefined, flag: string, fallback: number, min: number): number => {
    if (text === undefined) return fallback;
    const n = /^\d{1,9}$/.test(text.trim()) ? Number(text.trim()) : NaN;
    if (!(n >= min)) throw new UsageError(`${flag} takes a whole number >= ${min}, not '${text}'`);
    return n;
  };
  return {
    memcached,
    memcachedAllowRemote: v['memcached-allow-remote'] === true,
    maxItemBytes: itemSize === undefined ? undefined : parseSize(itemSize, '--max-item-size'),
    maxConnections: count(v['max-connections'] ?? env.ATOMIO_MAX_CONNECTIONS, '--max-connections', DEFAULT_MAX_CONNECTIONS, 1),
    idleTimeoutMs: count(v['idle-timeout'] ?? env.ATOMIO_IDLE_TIMEOUT, '--idle-timeout', 0, 0) * 1000,
  };
}

function parseTls(v: { tls?: string; 'tls-psk'?: string; 'tls-cert'?: string; 'tls-key'?: string; 'tls-ca'?: string }): NbdTlsOptions | undefined {
  const flag = v.tls ?? 'off';
  const modes: Record<string, NbdTlsOptions['mode']> = { off: 'off', on: 'optional', require: 'required' };
  const mode = modes[flag];
  if (mode === undefined) throw new UsageError(`serve: --tls is off, on or require, not '${flag}'`);
  const given = (['tls-psk', 'tls-cert', 'tls-key', 'tls-ca'] as const).filter((k) => v[k] !== undefined);
  if (mode === 'off') {
    if (given.length > 0) throw new UsageError(`serve: --${given[0]!} needs --tls on or --tls require`);
    return undefined;
  }
  if ((v['tls-cert'] === undefined) !== (v['tls-key'] === undefined)) throw new UsageError('serve: --tls-cert and --tls-key go together');
  if (v['tls-psk'] === undefined && v['tls-cert'] === undefined) {
    throw new UsageError(`serve: --tls ${flag} needs --tls-psk FILE or --tls-cert FILE --tls-key FILE`);
  }
  const read = (flagName: string, file: string): Buffer => {
    try {
      return fs.readFileSync(file);
    } catch (error) {
      throw new UsageError(`serve: --${flagName} ${file}: ${(error as Error).message}`);
    }
  };
  const out: NbdTlsOptions = { mode };
  if (v['tls-psk'] !== undefined) {
    try {
      out.psk = parsePskFile(read('tls-psk', v['tls-psk']).toString('utf8'));
    } catch (error) {
      if (error instanceof UsageError) throw error;
      throw new UsageError(`serve: --tls-psk ${v['tls-psk']}: ${(error as Error).message}`);
    }
  }
  if (v['tls-cert'] !== undefined) {
    out.cert = read('tls-cert', v['tls-cert']);
    out.key = read('tls-key', v['tls-key']!);
  }
  if (v['tls-ca'] !== undefined) out.ca = read('tls-ca', v['tls-ca']);
  return out;
}

function checkData(data: string | undefined): string {
  if (data === '') throw new UsageError('--data needs a directory');
  return data ?? './data';
}

/** 'HOST:PORT', '[v6]:PORT' or 'off'. */
export function parseListen(text: string): { host: string; port: number } | undefined {
  if (text === 'off') return undefined;
  const m = /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(text);
  const port = m === null ? NaN : Number(m[3]);
  if (m === null || port > 65535) throw new UsageError(`--nbd takes HOST:PORT ([::1]:PORT for IPv6) or off, not '${text}'`);
  return { host: (m[1] ?? m[2])!, port };
}

const SIZE_UNITS: Record<string, number> = { '': 1, k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40, p: 2 ** 50 };

/** '64G' → 68719476736. Suffixes K, M, G, T, P (optionally followed by iB or B) are powers of 1024. */
export function parseSize(text: string, what: string): number {
  const m = /^(\d+)\s*([kmgtp]?)(?:i?b)?$/i.exec(text.trim());
  const value = m === null ? NaN : Number(m[1]) * SIZE_UNITS[m[2]!.toLowerCase()]!;
  if (m === null || !Number.isSafeInteger(value) || value <= 0) {
    throw new UsageError(`${what} takes a positive number of bytes with an optional K, M, G, T or P suffix, not '${text}'`);
  }
  return value;
}

/**
 * Resolves with what stopped us: SIGINT, SIGTERM or the abort signal. cancel() removes the
 * handlers (a second signal then has its default effect: the process dies).
 */
function stopRequested(abort: AbortSignal | undefined): { promise: Promise<string>; cancel: () => void } {
  let resolve!: (why: string) => void;
  const promise = new Promise<string>((r) => (resolve = r));
  const cancel = (): void => {
    process.off('SIGINT', onInt);
    process.off('SIGTERM', onTerm);
    abort?.removeEventListener('abort', onAbort);
  };
  const done = (why: string): void => {
    cancel();
    resolve(why);
  };
  const onInt = (): void => done('SIGINT');
  const onTerm = (): void => done('SIGTERM');
  const onAbort = (): void => done('asked to stop');
  process.on('SIGINT', onInt);
  process.on('SIGTERM', onTerm);
  if (abort?.aborted === true) done('asked to stop');
  else abort?.addEventListener('abort', onAbort);
  return { promise, cancel };
}
