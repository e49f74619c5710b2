// The store lock across handles in one process and across processes.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { acquireStoreLock, LOCK_FILE_NAME, LOCK_GARBAGE_STALE_MS } from '../../src/media/lock.js';
import { isAtomioError, type AtomioError } from '../../src/base/errors.js';

const LOCK_MODULE_URL = new URL('../../src/media/lock.js', import.meta.url).href;

async function withTempDir(body: (dir: string) => Promise<void>): Promise<void> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'atomio-lock-'));
  try {
    await body(await fsp.realpath(dir));
  } finally {
    await fsp.rm(dir, { recursive: true, force: true });
  }
}

function isLockedBy(pid: number | undefined) {
  return (error: unknown): boolean => {
    assert.ok(isAtomioError(error, 'ERR_LOCKED'), `expected ERR_LOCKED, got ${String(error)}`);
    assert.equal((error as AtomioError).details.pid, pid);
    assert.match((error as AtomioError).message, /^store .* is locked by process .*; close it there, or reach it through its server$/);
    return true;
  };
}

test('a second acquire in the same process fails with ERR_LOCKED, also through a symlink', async () => {
  await withTempDir(async (dir) => {
    const store = path.join(dir, 'store');
    await fsp.mkdir(store);
    await fsp.symlink(store, path.join(dir, 'alias'));
    const lock = await acquireStoreLock(store);
    try {
      await assert.rejects(acquireStoreLock(store), isLockedBy(process.pid));
      await assert.rejects(acquireStoreLock(path.join(dir, 'alias')), isLockedBy(process.pid));
      // Which one wins depends on which realpath() resolves first; exactly one must.
      const results = await Promise.allSettled([acquireStoreLock(dir), acquireStoreLock(dir)]);
      const won = results.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
      const lost = results.flatMap((r) => (r.status === 'rejected' ? [r.reason as unknown] : []));
      for (const lock of won) await lock.release();
      assert.equal(won.length, 1, 'exactly one of two concurrent acquires wins');
      assert.ok(isLockedBy(process.pid)(lost[0]));
    } finally {
      await lock.release();
    }
  });
});

test('release is idempotent, removes LOCK, and lets the store be acquired again', async () => {
  await withTempDir(async (dir) => {
    const lock = await acquireStoreLock(dir);
    const content = JSON.parse(await fsp.readFile(path.join(dir, LOCK_FILE_NAME), 'utf8'));
    assert.equal(content.pid, process.pid);
    assert.equal(content.hostname, os.hostname());
    await Promise.all([lock.release(), lock.release()]);
    await lock.release();
    await assert.rejects(fsp.stat(path.join(dir, LOCK_FILE_NAME)), { code: 'ENOENT' });
    const again = await acquireStoreLock(dir);
    await again.release();
  });
});

test('release leaves a LOCK file that another owner wrote', async () => {
  await withTempDir(async (dir) => {
    const lock = await acquireStoreLock(dir);
    const foreign = JSON.stringify({ pid: 1, hostname: 'elsewhere', startedAt: 'then' });
    await fsp.writeFile(path.join(dir, LOCK_FILE_NAME), foreign);
    await lock.release();
    assert.equal(await fsp.readFile(path.join(dir, LOCK_FILE_NAME), 'utf8'), foreign);
  });
});

test('a lock naming another host is treated as live and not stolen', async () => {
  await withTempDir(async (dir) => {
    // A pid that surely does not exist here must still not matter on another host.
    const foreign = JSON.stringify({ pid: 2 ** 22 + 12345, hostname: `${os.hostname()}-other`, startedAt: 'then' });
    await fsp.writeFile(path.join(dir, LOCK_FILE_NAME), foreign);
    await assert.rejects(acquireStoreLock(dir), isLockedBy(2 ** 22 + 12345));
    assert.equal(await fsp.readFile(path.join(dir, LOCK_FILE_NAME), 'utf8'), foreign);
  });
});

test('an unreadable LOCK older than the stale limit is cleared and the acquire succeeds', async () => {
  await withTempDir(async (dir) => {
    const lockPath = path.join(dir, LOCK_FILE_NAME);
    await fsp.writeFile(lockPath, 'garbage{');
    const old = new Date(Date.now() - LOCK_GARBAGE_STALE_MS - 60_000);
    await fsp.utimes(lockPath, old, old);
    const lock = await acquireStoreLock(dir);
    assert.equal(JSON.parse(await fsp.readFile(lockPath, 'utf8')).pid, process.pid);
    await lock.release();
    assert.deepEqual(await fsp.readdir(dir), [], 'no aside file left behind');
  });
});

/** Starts a process that takes the lock on `dir` and holds it until killed. */
async function spawnHolder(dir: string): Promise<ChildProcess> {
  const code = `
    import(${JSON.stringify(LOCK_MODULE_URL)})
      .then(async (m) => { await m.acquireStoreLock(process.argv[1]); process.stdout.write('locked\\n'); setInterval(() => {}, 1 << 30); })
      .catch((e) => { console.error(e); process.exit(1); });`;
  const child = spawn(process.execPath, ['-e', code, dir], { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise<void>((resolve, reject) => {
    let output = '';
    child.stdout!.on('data', (chunk: Buffer) => {
      output += chunk.toString();
      if (output.includes('locked\n')) resolve();
    });
    child.once('exit', (status) => reject(new Error(`lock holder exited with ${status} before locking`)));
  });
  return child;
}

test('a live child process holding the lock makes acquire fail with ERR_LOCKED; after SIGKILL it succeeds', async () => {
  await withTempDir(async (dir) => {
    const child = await spawnHolder(dir);
    try {
      await assert.rejects(acquireStoreLock(dir), isLockedBy(child.pid));
    } finally {
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGKILL');
      await exited;
    }
    // The child's LOCK is still there, naming a dead pid.
    assert.equal(JSON.parse(await fsp.readFile(path.join(dir, LOCK_FILE_NAME), 'utf8')).pid, child.pid);
    const lock = await acquireStoreLock(dir);
    assert.equal(JSON.parse(await fsp.readFile(path.join(dir, LOCK_FILE_NAME), 'utf8')).pid, process.pid);
    await lock.release();
  });
});
