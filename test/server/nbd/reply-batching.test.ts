// Reads received together are answered in one send; nothing else waits for them.
//
// The transmission loop corks the socket while it answers reads already in its input, and
// takes the cork off before any other request starts and before it waits for anything.
// These tests drive a Transmission over a fake socket that keeps what is written while it is
// corked and hands it over (calling the writes' callbacks) only when uncorked, as a
// net.Socket does, and count the sends.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import type { ByteInput } from '../../../src/server/nbd/input.js';
import { MAX_IN_FLIGHT_REQUESTS } from '../../../src/server/nbd/transmission.js';
import { CMD, requestBytes } from './client.js';
import { SECTOR, startTransmission } from './fake-transmission.js';

const SIMPLE_REPLY_MAGIC = 0x67446698;
const SIMPLE_REPLY_BYTES = 16;

/** A socket that, like a net.Socket, sends what was written while corked only at uncork. */
class CorkingSocket extends EventEmitter {
  /** Each send: the buffers handed over together. */
  sends: Buffer[][] = [];
  corks = 0;
  destroyed = false;
  writable = true;
  private held: { bytes: Buffer; done: (() => void) | undefined }[] = [];

  pause(): this {
    return this;
  }
  resume(): this {
    return this;
  }
  cork(): void {
    this.corks++;
  }
  uncork(): void {
    assert.ok(this.corks > 0, 'uncork only after cork');
    this.corks--;
    if (this.corks === 0) this.send();
  }
  write(bytes: Buffer, done?: () => void): boolean {
    this.held.push({ bytes, done });
    if (this.corks === 0) this.send();
    return true;
  }
  destroy(): this {
    this.destroyed = true;
    return this;
  }
  private send(): void {
    if (this.held.length === 0) return;
    const held = this.held;
    this.held = [];
    this.sends.push(held.map((h) => h.bytes));
    for (const h of held) if (h.done !== undefined) setImmediate(h.done);
  }
}

/** A block face that reads zeros at once and records when writes arrive. */
class QuickBlock {
  readonly sectorSize = SECTOR;
  readonly maxAtomicBytes = 8 * 1024 * 1024;
  /** For each write: whether the socket was corked when it started. */
  writesStartedCorked: boolean[] = [];
  constructor(private readonly socket: CorkingSocket) {}

  write(): Promise<number> {
    this.writesStartedCorked.push(this.socket.corks > 0);
    return Promise.resolve(1);
  }

  readParts(_lba: number, sectors: number): Promise<Buffer[]> {
    return Promise.resolve([Buffer.alloc(sectors * SECTOR)]);
  }
}

function setup(): { socket: CorkingSocket; block: QuickBlock; run: Promise<unknown>; input: ByteInput } {
  const socket = new CorkingSocket();
  const block = new QuickBlock(socket);
  return { socket, block, ...startTransmission(socket, block, { volumeSectors: 1024 }) };
}

/** The cookies of the simple replies in `sends`, in order (each reply a header, then its data). */
function repliedCookies(sends: Buffer[][]): bigint[] {
  const cookies: bigint[] = [];
  for (const send of sends) {
    for (const part of send) {
      if (part.length === SIMPLE_REPLY_BYTES && part.readUInt32BE(0) === SIMPLE_REPLY_MAGIC) {
        assert.equal(part.readUInt32BE(4), 0, 'no error');
        cookies.push(part.readBigUInt64BE(8));
      }
    }
  }
  return cookies;
}

/** Waits until `n` replies have been sent, or fails after a while (a cork never taken off). */
async function repliesSent(socket: CorkingSocket, n: number): Promise<void> {
  for (let turn = 0; turn < 500; turn++) {
    if (repliedCookies(socket.sends).length >= n) return;
    await new Promise((resolve) => setImmediate(resolve));
  }
  assert.fail(`${repliedCookies(socket.sends).length} of ${n} replies sent; the rest are held (corked: ${socket.corks})`);
}

test('reads received in one chunk are answered in one send, every reply whole and in order', async () => {
  const { socket, run, input } = setup();
  const reads = Array.from({ length: 16 }, (_, i) => requestBytes(CMD.READ, 0, BigInt(100 + i), i * SECTOR, SECTOR));
  socket.emit('data', Buffer.concat(reads));
  await repliesSent(socket, 16);
  assert.equal(socket.sends.length, 1, `16 reads in one chunk: ${socket.sends.length} sends`);
  assert.deepEqual(repliedCookies(socket.sends), Array.from({ length: 16 }, (_, i) => BigInt(100 + i)));
  assert.equal(socket.sends[0]!.length, 32, 'a header and the data of each read');
  assert.equal(socket.corks, 0, 'the cork is off once the loop waits for more');
  input.close('test over');
  await run;
});

test('a lone read is sent at once, uncorked', async () => {
  const { socket, run, input } = setup();
  socket.emit('data', requestBytes(CMD.READ, 0, 7n, 0, SECTOR));
  // Microtasks only: a reply held into a later turn of the event loop would not be sent yet.
  for (let i = 0; i < 20; i++) await Promise.resolve();
  assert.deepEqual(repliedCookies(socket.sends), [7n]);
  assert.equal(socket.corks, 0);
  input.close('test over');
  await run;
});

test('a write between reads starts uncorked, and its reply is not held behind the reads after it', async () => {
  const { socket, block, run, input } = setup();
  socket.emit(
    'data',
    Buffer.concat([
      requestBytes(CMD.READ, 0, 1n, 0, SECTOR),
      requestBytes(CMD.READ, 0, 2n, SECTOR, SECTOR),
      requestBytes(CMD.WRITE, 0, 3n, 2 * SECTOR, SECTOR),
      Buffer.alloc(SECTOR, 9),
      requestBytes(CMD.READ, 0, 4n, 3 * SECTOR, SECTOR),
      requestBytes(CMD.READ, 0, 5n, 4 * SECTOR, SECTOR),
    ]),
  );
  await repliesSent(socket, 5);
  assert.deepEqual(block.writesStartedCorked, [false], 'the write started with the socket uncorked');
  const sendOf = (cookie: bigint): number => socket.sends.findIndex((s) => repliedCookies([s]).includes(cookie));
  assert.ok(sendOf(3n) < sendOf(5n), 'the write was answered before the last read, not with it');
  assert.equal(sendOf(1n), sendOf(2n), 'the two reads before the write left together');
  assert.equal(socket.corks, 0);
  input.close('test over');
  await run;
});

test(`more reads in one chunk than MAX_IN_FLIGHT_REQUESTS: the cork comes off while the loop waits for room, and every read is answered`, async () => {
  const { socket, run, input } = setup();
  const n = MAX_IN_FLIGHT_REQUESTS + 40;
  const reads = Array.from({ length: n }, (_, i) => requestBytes(CMD.READ, 0, BigInt(i), (i % 1024) * SECTOR, SECTOR));
  socket.emit('data', Buffer.concat(reads));
  await repliesSent(socket, n);
  assert.deepEqual(repliedCookies(socket.sends), Array.from({ length: n }, (_, i) => BigInt(i)), 'every read answered once, in order');
  assert.equal(repliedCookies([socket.sends[0]!]).length, MAX_IN_FLIGHT_REQUESTS, 'the reads started before the loop waited left together');
  input.close('test over');
  await run;
});
