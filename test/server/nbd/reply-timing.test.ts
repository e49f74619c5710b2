// When a reply leaves: in the first microtask after the block face's promise settles.
//
// The engine resolves the commits of a batch together and resumes its pipeline a microtask
// or two later, where it may encode the next batch synchronously (most of a millisecond per
// MiB). A reply that waits behind a longer chain of awaits goes out only after that encode,
// and the client's next requests wait with it. These tests drive a Transmission over a fake
// socket and a block face whose promises they settle by hand, then look, one microtask
// later, at what was written to the socket. Nothing here is timed.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import type { ByteInput } from '../../../src/server/nbd/input.js';
import { CMD, CMD_FLAG, requestBytes } from './client.js';
import { SECTOR, startTransmission } from './fake-transmission.js';

const SIMPLE_REPLY_MAGIC = 0x67446698;
const STRUCTURED_REPLY_MAGIC = 0x668e33ef;
const NBD_REPLY_TYPE_ERROR = 32769;
const NBD_EIO = 5;

/** A socket that records what is written to it. */
class FakeSocket extends EventEmitter {
  writes: Buffer[] = [];
  destroyed = false;
  writable = true;
  pause(): this {
    return this;
  }
  resume(): this {
    return this;
  }
  cork(): void {}
  uncork(): void {}
  write(bytes: Buffer, done?: () => void): boolean {
    this.writes.push(bytes);
    if (done !== undefined) setImmediate(done);
    return true;
  }
  destroy(): this {
    this.destroyed = true;
    return this;
  }
}

interface Deferred<T> {
  promise: Promise<T>;
  resolve(value: T): void;
}

function deferred<T>(): Deferred<T> {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}

/** A block face whose writes and reads settle when the test says so. */
class HeldBlock {
  readonly sectorSize = SECTOR;
  readonly maxAtomicBytes = 8 * 1024 * 1024;
  writes: Deferred<number>[] = [];
  reads: Deferred<Buffer[]>[] = [];
  private called = deferred<void>();

  write(): Promise<number> {
    const d = deferred<number>();
    this.writes.push(d);
    this.called.resolve();
    return d.promise;
  }

  readParts(): Promise<Buffer[]> {
    const d = deferred<Buffer[]>();
    this.reads.push(d);
    this.called.resolve();
    return d.promise;
  }

  /** Resolves once write() or readParts() has been called. */
  async nextCall(): Promise<void> {
    await this.called.promise;
    this.called = deferred<void>();
  }
}

function setup(structured = false): { socket: FakeSocket; block: HeldBlock; run: Promise<unknown>; input: ByteInput } {
  const socket = new FakeSocket();
  const block = new HeldBlock();
  return { socket, block, ...startTransmission(socket, block, { volumeSectors: 64, structured }) };
}

/** What the socket holds one microtask after `settle` runs. */
function oneMicrotaskAfter(settle: () => void, socket: FakeSocket): Promise<number> {
  return new Promise((resolve) => {
    settle();
    queueMicrotask(() => resolve(socket.writes.length));
  });
}

test('a write of whole sectors is answered in the first microtask after the block face resolves it', async () => {
  const { socket, block, run, input } = setup();
  socket.emit('data', Buffer.concat([requestBytes(CMD.WRITE, 0, 7n, 2 * SECTOR, SECTOR), Buffer.alloc(SECTOR, 1)]));
  await block.nextCall();
  assert.equal(socket.writes.length, 0, 'no reply before the write resolved');
  const written = await oneMicrotaskAfter(() => block.writes[0]!.resolve(1), socket);
  assert.equal(written, 1, 'the reply is on the socket one microtask after the write resolved');
  const reply = socket.writes[0]!;
  assert.equal(reply.readUInt32BE(0), SIMPLE_REPLY_MAGIC);
  assert.equal(reply.readUInt32BE(4), 0, 'no error');
  assert.equal(reply.readBigUInt64BE(8), 7n, 'the cookie of the request');
  input.close('test over');
  await run;
});

test('a read of whole sectors is answered in the first microtask after the block face resolves it', async () => {
  const { socket, block, run, input } = setup();
  socket.emit('data', requestBytes(CMD.READ, 0, 9n, 4 * SECTOR, 2 * SECTOR));
  await block.nextCall();
  const data = Buffer.alloc(2 * SECTOR, 5);
  const written = await oneMicrotaskAfter(() => block.reads[0]!.resolve([data]), socket);
  assert.equal(written, 2, 'reply header and data are on the socket one microtask after the read resolved');
  assert.equal(socket.writes[0]!.readBigUInt64BE(8), 9n, 'the cookie of the request');
  assert.ok(socket.writes[1]!.equals(data), 'the data follows the header');
  input.close('test over');
  await run;
});

test('a read the block face hands out in parts is sent as one reply: the header, then every part in order', async () => {
  for (const structured of [false, true]) {
    const { socket, block, run, input } = setup(structured);
    // DF (don't fragment) skips the hole check, which this block face cannot answer.
    socket.emit('data', requestBytes(CMD.READ, structured ? CMD_FLAG.DF : 0, 11n, 8 * SECTOR, 3 * SECTOR));
    await block.nextCall();
    const parts = [Buffer.alloc(SECTOR, 1), Buffer.alloc(SECTOR + 100, 2), Buffer.alloc(SECTOR - 100, 3)];
    const written = await oneMicrotaskAfter(() => block.reads[0]!.resolve(parts), socket);
    assert.equal(written, 4, `${structured ? 'structured' : 'simple'}: a header and three parts`);
    const header = socket.writes[0]!;
    if (structured) {
      assert.equal(header.readUInt32BE(0), STRUCTURED_REPLY_MAGIC);
      assert.equal(header.readUInt32BE(16), 8 + 3 * SECTOR, 'the chunk holds the offset and every part');
      assert.equal(header.readBigUInt64BE(20), BigInt(8 * SECTOR), 'the offset of the read');
    } else {
      assert.equal(header.readUInt32BE(0), SIMPLE_REPLY_MAGIC);
      assert.equal(header.readUInt32BE(4), 0, 'no error');
    }
    assert.deepEqual(socket.writes.slice(1), parts, 'the parts follow, in order, as they are');
    input.close('test over');
    await run;
  }
});

test('a read whose parts do not add up to its length is answered with an error, never short data', async () => {
  for (const structured of [false, true]) {
    const { socket, block, run, input } = setup(structured);
    socket.emit('data', requestBytes(CMD.READ, structured ? CMD_FLAG.DF : 0, 12n, 0, 2 * SECTOR));
    await block.nextCall();
    await oneMicrotaskAfter(() => block.reads[0]!.resolve([Buffer.alloc(SECTOR, 1)]), socket);
    assert.equal(socket.writes.length, 1, `${structured ? 'structured' : 'simple'}: one reply, no data`);
    const reply = socket.writes[0]!;
    if (structured) {
      assert.equal(reply.readUInt32BE(0), STRUCTURED_REPLY_MAGIC);
      assert.equal(reply.readUInt16BE(6), NBD_REPLY_TYPE_ERROR, 'an error chunk');
      assert.equal(reply.readUInt32BE(20), NBD_EIO);
    } else {
      assert.equal(reply.readUInt32BE(0), SIMPLE_REPLY_MAGIC);
      assert.equal(reply.readUInt32BE(4), NBD_EIO);
    }
    input.close('test over');
    await run;
  }
});
