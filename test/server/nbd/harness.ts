// A store, its volumes and an NBD server on a free loopback port, for one test.

import { open, type OpenOptions, type Store } from '../../../src/index.js';
import { FaultMedia } from '../../../src/media/fault.js';
import { startNbdServer, type NbdServer, type NbdTlsOptions } from '../../../src/server/nbd/index.js';
import { Volumes } from '../../../src/server/volumes.js';
import { withTempDir } from '../../helpers/temp.js';

export const KiB = 1024;
export const MiB = 1024 * 1024;

export interface Harness {
  dir: string;
  store: Store;
  volumes: Volumes;
  server: NbdServer;
  port: number;
  /** Lines the server logged. */
  logs: string[];
}

export interface HarnessOptions {
  /** In-memory FaultMedia (default) or the real file in the temp dir. */
  media?: 'memory' | 'file';
  capacity?: number;
  sectorSize?: 512 | 4096;
  segmentSize?: number;
  durability?: 'full' | 'none';
  defaultSize?: number;
  handshakeTimeoutMs?: number;
  /** TLS for the server (default: off). */
  tls?: NbdTlsOptions;
  /** Extra volumes to create before the server starts. */
  volumes?: { name: string; size: number; readOnly?: boolean }[];
}

/** Runs `body` against a fresh server; closes server and store and removes the directory after. */
export async function withServer(body: (h: Harness) => Promise<void>, o: HarnessOptions = {}): Promise<void> {
  await withTempDir(async (dir) => {
    const capacity = o.capacity ?? 64 * MiB;
    const options: OpenOptions = { capacity, durability: o.durability ?? 'full' };
    if (o.sectorSize !== undefined) options.sectorSize = o.sectorSize;
    if (o.segmentSize !== undefined) options.segmentSize = o.segmentSize;
    else if (capacity <= 64 * MiB) options.segmentSize = 1 * MiB;
    if ((o.media ?? 'memory') === 'memory') options.media = new FaultMedia(capacity);
    const store = await open(dir, options);
    const logs: string[] = [];
    let server: NbdServer | undefined;
    try {
      const volumes = await Volumes.load(store, dir, { defaultSize: o.defaultSize ?? 16 * MiB });
      for (const v of o.volumes ?? []) await volumes.create(v.name, { size: v.size, readOnly: v.readOnly ?? false });
      server = await startNbdServer(store, volumes, {
        port: 0,
        durability: options.durability,
        log: (l) => logs.push(l),
        ...(o.handshakeTimeoutMs === undefined ? {} : { handshakeTimeoutMs: o.handshakeTimeoutMs }),
        ...(o.tls === undefined ? {} : { tls: o.tls }),
      });
      await body({ dir, store, volumes, server, port: server.address.port, logs });
    } finally {
      await server?.close();
      await store.close();
    }
  });
}

/** Deterministic bytes for (seed, length): tests compare what they read with this. */
export function pattern(seed: number, length: number): Buffer {
  const b = Buffer.allocUnsafe(length);
  let x = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    b[i] = x & 0xff;
  }
  return b;
}
