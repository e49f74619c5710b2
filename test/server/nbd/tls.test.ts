// NBD_OPT_STARTTLS over raw sockets: FORCEDTLS ('required') errors every option but STARTTLS
// and ABORT with NBD_REP_ERR_TLS_REQD and hangs up on NBD_OPT_EXPORT_NAME before TLS; a
// STARTTLS with data or a second one gets NBD_REP_ERR_INVALID; after the upgrade (node:tls on
// the client side, PSK or a certificate) GO, WRITE and READ work over TLS; a wrong key ends
// the session; 'optional' lets clients choose; bad configurations are refused.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type tls from 'node:tls';
import { open } from '../../../src/index.js';
import { FaultMedia } from '../../../src/media/fault.js';
import { parsePskFile, startNbdServer } from '../../../src/server/nbd/index.js';
import { Volumes } from '../../../src/server/volumes.js';
import { withTempDir } from '../../helpers/temp.js';
import { CMD, ERR, NbdClient, OPT, REP, TFLAG, handshake, infoData, metaData, option, optionBytes, type RawSocket } from './client.js';
import { MiB, pattern, withServer } from './harness.js';

const KEY = crypto.randomBytes(32);
const PSK = [{ identity: 'alice', key: KEY }];

function pskClient(identity = 'alice', key = KEY): tls.ConnectionOptions {
  return { ciphers: 'PSK', checkServerIdentity: () => undefined, pskCallback: () => ({ identity, psk: key }) };
}

/** Sends STARTTLS, expects NBD_REP_ACK, and runs the client TLS handshake. */
async function upgrade(s: RawSocket, options: tls.ConnectionOptions): Promise<RawSocket> {
  assert.deepEqual((await option(s, OPT.STARTTLS)).map((x) => x.type), [REP.ACK], 'STARTTLS is acknowledged');
  return s.startTls(options);
}

test('required TLS: options before STARTTLS get NBD_REP_ERR_TLS_REQD; ABORT is acknowledged', async () => {
  await withServer(
    async ({ port }) => {
      const s = await handshake(port);
      const before: [number, Buffer][] = [
        [OPT.LIST, Buffer.alloc(0)],
        [OPT.INFO, infoData('')],
        [OPT.GO, infoData('')],
        [OPT.STRUCTURED_REPLY, Buffer.alloc(0)],
        [OPT.LIST_META, metaData('', [])],
        [OPT.SET_META, metaData('', ['base:allocation'])],
        [99, Buffer.from('unknown')],
        [OPT.INFO, Buffer.alloc(100_000)],
      ];
      for (const [opt, data] of before) {
        assert.deepEqual((await option(s, opt, data)).map((x) => x.type), [REP.ERR_TLS_REQD], `option ${opt} (${data.length} bytes)`);
      }
      assert.deepEqual((await option(s, OPT.ABORT)).map((x) => x.type), [REP.ACK], 'ABORT needs no TLS');
      assert.equal(await s.hungUp(), true, 'and ends the session');
    },
    { tls: { mode: 'required', psk: PSK } },
  );
});

test('required TLS: NBD_OPT_EXPORT_NAME before TLS ends the session without an answer', async () => {
  await withServer(
    async ({ port, logs }) => {
      const s = await handshake(port);
      s.send(optionBytes(OPT.EXPORT_NAME, Buffer.from('')));
      const rest = await s.readToEnd();
      assert.notEqual(rest, undefined, 'the server hung up');
      assert.equal(rest!.length, 0, 'without sending export details');
      assert.ok(logs.some((l) => /EXPORT_NAME before TLS/.test(l)), logs.join('\n'));
    },
    { tls: { mode: 'required', psk: PSK } },
  );
});

test('required TLS with PSK: STARTTLS with data is invalid; after the upgrade a second STARTTLS is invalid, options work, GO, WRITE and READ over TLS', async () => {
  await withServer(
    async ({ port }) => {
      const plain = await handshake(port);
      assert.deepEqual((await option(plain, OPT.STARTTLS, Buffer.from('x'))).map((x) => x.type), [REP.ERR_INVALID], 'STARTTLS with data');
      const s = await upgrade(plain, pskClient());
      assert.deepEqual((await option(s, OPT.STARTTLS)).map((x) => x.type), [REP.ERR_INVALID], 'second STARTTLS');
      const list = await option(s, OPT.LIST);
      assert.deepEqual(list.map((x) => x.type), [REP.SERVER, REP.ACK], 'LIST works over TLS (no TLS_REQD after TLS)');
      const c = await NbdClient.negotiate(s);
      assert.equal(c.size, 16 * MiB);
      const data = pattern(7, 70_000);
      assert.equal(await c.write(12_345, data), 0, 'write over TLS');
      const r = await c.read(12_345, data.length);
      assert.equal(r.error, 0);
      assert.ok(r.data!.equals(data), 'read back over TLS what was written');
      await c.disconnect();
      const again = await NbdClient.open(port).catch((e: Error) => e);
      assert.ok(again instanceof Error, 'a client without TLS still cannot reach the export');
    },
    { tls: { mode: 'required', psk: PSK } },
  );
});

test('required TLS: a wrong PSK key or unknown identity fails the TLS handshake and ends the session', async () => {
  await withServer(
    async ({ port, logs }) => {
      for (const [identity, key] of [['alice', crypto.randomBytes(32)], ['mallory', KEY]] as const) {
        const s = await handshake(port);
        assert.deepEqual((await option(s, OPT.STARTTLS)).map((x) => x.type), [REP.ACK]);
        await assert.rejects(s.startTls(pskClient(identity, key)), `identity ${identity}`);
      }
      await new Promise((r) => setTimeout(r, 100));
      assert.ok(logs.filter((l) => /TLS handshake failed/.test(l)).length >= 2, logs.join('\n'));
    },
    { tls: { mode: 'required', psk: PSK } },
  );
});

test('optional TLS: options work in the clear and a client may upgrade, then GO over TLS', async () => {
  await withServer(
    async ({ port }) => {
      const clear = await NbdClient.open(port);
      assert.equal(await clear.write(0, pattern(3, 4096)), 0, 'plain client writes');
      await clear.disconnect();
      const s = await upgrade(await handshake(port), pskClient());
      const c = await NbdClient.negotiate(s);
      const r = await c.read(0, 4096);
      assert.ok(r.data!.equals(pattern(3, 4096)), 'TLS client reads what the plain one wrote');
      await c.disconnect();
    },
    { tls: { mode: 'optional', psk: PSK } },
  );
});

test('optional TLS: STARTTLS forgets structured replies and the metadata context negotiated in the clear', async () => {
  await withServer(
    async ({ port }) => {
      const plain = await handshake(port);
      assert.deepEqual((await option(plain, OPT.STRUCTURED_REPLY)).map((x) => x.type), [REP.ACK]);
      assert.deepEqual((await option(plain, OPT.SET_META, metaData('', ['base:allocation']))).map((x) => x.type), [REP.META_CONTEXT, REP.ACK]);
      const s = await upgrade(plain, pskClient());
      // The spec: after STARTTLS succeeds the server MUST NOT keep such negotiation state.
      const go = await option(s, OPT.GO, infoData(''));
      assert.equal(go.at(-1)!.type, REP.ACK);
      const flags = go.find((r) => r.type === REP.INFO)!.data.readUInt16BE(10);
      assert.equal(flags & TFLAG.SEND_DF, 0, 'no SEND_DF: structured replies were not negotiated over TLS');
      const c = NbdClient.attach(s, 16 * MiB, flags, false);
      const r = await c.read(0, 4096);
      assert.equal(r.simple, true, 'a read is answered with a simple reply');
      assert.equal(r.error, 0);
      const status = await c.request(CMD.BLOCK_STATUS, 0, 0, 4096);
      assert.deepEqual([status.simple, status.error], [true, ERR.EINVAL], 'no metadata context is selected');
      await c.disconnect();
    },
    { tls: { mode: 'optional', psk: PSK } },
  );
});

test('required TLS with a certificate: GO and READ over TLS, the client checking the server certificate', async (t) => {
  if (!fs.existsSync('/usr/bin/openssl')) return t.skip('/usr/bin/openssl is not installed (needed to make a test certificate)');
  await withTempDir(async (dir) => {
    const keyFile = path.join(dir, 'key.pem');
    const certFile = path.join(dir, 'cert.pem');
    execFileSync('/usr/bin/openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', keyFile, '-out', certFile, '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1', '-days', '1'], { stdio: 'ignore' });
    const cert = fs.readFileSync(certFile);
    await withServer(
      async ({ port }) => {
        const s = await upgrade(await handshake(port), { ca: cert, servername: 'localhost' });
        const c = await NbdClient.negotiate(s);
        assert.equal(c.size, 16 * MiB);
        assert.equal(await c.write(0, pattern(9, 512)), 0);
        assert.ok((await c.read(0, 512)).data!.equals(pattern(9, 512)));
        await c.disconnect();
        const untrusting = await handshake(port);
        assert.deepEqual((await option(untrusting, OPT.STARTTLS)).map((x) => x.type), [REP.ACK]);
        await assert.rejects(untrusting.startTls({ servername: 'localhost' }), 'a client that does not trust the certificate fails');
      },
      { tls: { mode: 'required', cert, key: fs.readFileSync(keyFile) } },
    );
  });
});

test('parsePskFile reads psktool lines; startNbdServer refuses TLS without credentials and a non-loopback host unless TLS is required', async () => {
  assert.deepEqual(parsePskFile('# keys\nalice:00ff\n\nbob:0A0b0C\n'), [
    { identity: 'alice', key: Buffer.from([0, 255]) },
    { identity: 'bob', key: Buffer.from([10, 11, 12]) },
  ]);
  for (const bad of ['', 'alice', 'alice:', ':00ff', 'alice:0g', 'alice:abc']) assert.throws(() => parsePskFile(bad), /PSK file/, JSON.stringify(bad));
  await withTempDir(async (dir) => {
    const store = await open(dir, { capacity: 64 * MiB, segmentSize: MiB, media: new FaultMedia(64 * MiB) });
    try {
      const volumes = await Volumes.load(store, dir, { defaultSize: MiB });
      await assert.rejects(startNbdServer(store, volumes, { port: 0, tls: { mode: 'required' } }), /needs PSK keys or a certificate/);
      await assert.rejects(startNbdServer(store, volumes, { port: 0, tls: { mode: 'optional', cert: 'x' } }), /needs its key/);
      await assert.rejects(startNbdServer(store, volumes, { host: '0.0.0.0', port: 0 }), /not a loopback address/);
      await assert.rejects(startNbdServer(store, volumes, { host: '0.0.0.0', port: 0, tls: { mode: 'optional', psk: PSK } }), /not a loopback address/);
      const server = await startNbdServer(store, volumes, { host: '0.0.0.0', port: 0, tls: { mode: 'required', psk: PSK } });
      assert.equal(server.address.address, '0.0.0.0', 'required TLS may listen beyond loopback');
      await server.close();
    } finally {
      await store.close();
    }
  });
});
