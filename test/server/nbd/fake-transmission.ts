// A Transmission over a fake socket and a fake block face, for tests that settle the block
// face's promises themselves and look at what reaches the socket.

import type { Socket } from 'node:net';
import type { BlockDevice } from '../../../src/block/block.js';
import type { Store } from '../../../src/store/store.js';
import { VolumeDisk } from '../../../src/server/nbd/disk.js';
import { Flusher } from '../../../src/server/nbd/flush.js';
import { ByteInput } from '../../../src/server/nbd/input.js';
import { Transmission } from '../../../src/server/nbd/transmission.js';
import { Volume } from '../../../src/server/volumes.js';

export const SECTOR = 4096;

export interface FakeTransmission {
  /** The transmission loop: resolves once the input is closed. */
  run: Promise<unknown>;
  input: ByteInput;
}

/** Starts a transmission on `socket` over a volume of `volumeSectors` 4 KiB sectors of `block`. */
export function startTransmission(socket: unknown, block: unknown, o: { volumeSectors: number; structured?: boolean }): FakeTransmission {
  const input = new ByteInput(socket as Socket, 64 * 1024 * 1024);
  const volume = new Volume({ name: 'default', size: o.volumeSectors * SECTOR, readOnly: false, slot: 0 }, SECTOR);
  const transmission = new Transmission({
    input,
    socket: socket as Socket,
    disk: new VolumeDisk(block as BlockDevice, volume),
    flusher: new Flusher({ flush: () => Promise.resolve() } as unknown as Store, 'full'),
    structured: o.structured ?? false,
    baseAllocation: false,
    log: () => undefined,
  });
  return { run: transmission.run(), input };
}
