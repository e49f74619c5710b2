// The store lock: one owner per store directory (invariant 6, "one writer").
//
// Invariants:
// - at most one StoreLock per real directory path exists in this process (module-level map);
// - across processes on one host, the file LOCK, created with O_EXCL, names the owner as JSON
//   {pid, hostname, startedAt}; a second acquirer fails with ERR_LOCKED while that pid lives;
// - a lock left by a dead process never blocks for long: a dead pid, or an unreadable file
//   older than LOCK_GARBAGE_STALE_MS, is cleared and the acquire retried;
// - a lock naming another host is treated as live: its pid means nothing here;
// - release() removes LOCK only if it still holds exactly what we wrote, so a lock that was
//   cleared and taken by someone else is never removed by us.

import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { AtomioError } from '../base/errors.js';

export const LOCK_FILE_NAME = 'LOCK';
/** How old an unreadable LOCK must be before it counts as left by a crash, not half-written. */
export const LOCK_GARBAGE_STALE_MS = 3_000;
const LOCK_RETRY_DELAY_MS = 50;
/** Bounds the retry loop; with the delay above it outlasts LOCK_GARBAGE_STALE_MS. */
const LOCK_MAX_ATTEMPTS = 200;

export interface LockOwner {
  pid: number;
  hostname: string;
  /** ISO 8601 time the lock was taken. */
  startedAt: string;
}

export interface StoreLock {
  /** The store directory, as a resolved real path. */
  readonly directory: string;
  readonly owner: LockOwner;
  /** Gives the store up. Idempotent; never removes a LOCK that another owner wrote. */
  release(): Promise<void>;
}

const heldInProcess = new Map<string, LockOwner>();

/**
 * Takes the store at `directory` (which must exist) for this process.
 *
 * Rejects with AtomioError ERR_LOCKED, details `{ pid, path }`, if another handle in this
 * process or another live process holds it.
 *
 * @example
 * const lock = await acquireStoreLock('/data/store');
 * try { ... } finally { await lock.release(); }
 */
export async function acquireStoreLock(directory: string): Promise<StoreLock> {
  const real = await fsp.realpath(directory);
  const holder = heldInProcess.get(real);
  if (holder !== undefined) throw lockedError(real, holder, `this process, another open handle since ${holder.startedAt}`);
  const owner: LockOwner = { pid: process.pid, hostname: os.hostname(), startedAt: new Date().toISOString() };
  // Claimed before the first await below, so two concurrent acquires here cannot both pass.
  heldInProcess.set(real, owner);
  try {
    await takeLockFile(real, owner);
  } catch (error) {
    heldInProcess.delete(real);
    throw error;
  }
  return new HeldStoreLock(real, owner);
}

class HeldStoreLock implements StoreLock {
  private releasing: Promise<void> | undefined;
  constructor(
    readonly directory: string,
    readonly owner: LockOwner,
  ) {}

  release(): Promise<void> {
    this.releasing ??= this.removeOwnLockFile();
    return this.releasing;
  }

  private async removeOwnLockFile(): Promise<void> {
    const lockPath = path.join(this.directory, LOCK_FILE_NAME);
    try {
      const current = await readLockFile(lockPath);
      if (current !== undefined && current.text === serialize(this.owner)) {
        await fsp.rm(lockPath, { force: true });
      }
    } finally {
      heldInProcess.delete(this.directory);
    }
  }
}

async function takeLockFile(directory: string, owner: LockOwner): Promise<void> {
  const lockPath = path.join(directory, LOCK_FILE_NAME);
  const text = serialize(owner);
  for (let attempt = 1; ; attempt++) {
    if (await createExclusive(lockPath, text)) return;
    const existing = await readLockFile(lockPath);
    if (existing === undefined) continue; // removed between our create and our read
    const holder = parseOwner(existing.text);
    if (holder === undefined) {
      if (Date.now() - existing.mtimeMs >= LOCK_GARBAGE_STALE_MS) {
        await removeIfUnchanged(lockPath, existing.text);
      } else if (attempt >= LOCK_MAX_ATTEMPTS) {
        throw lockedError(directory, undefined, `its lock file ${lockPath} is unreadable; delete it if no process uses the store`);
      } else {
        // Probably another process between creating LOCK and writing it.
        await delay(LOCK_RETRY_DELAY_MS);
      }
      continue;
    }
    if (holder.hostname !== owner.hostname) {
      throw lockedError(directory, holder, `on host ${holder.hostname} since ${holder.startedAt}`);
    }
    // Our own pid here is a leftover of an earlier process that had it (pid 1 in containers).
    if (holder.pid !== owner.pid && isAlive(holder.pid)) {
      throw lockedError(directory, holder, `since ${holder.startedAt}`);
    }
    if (attempt >= LOCK_MAX_ATTEMPTS) {
      throw lockedError(directory, holder, `its lock keeps changing; retry later`);
    }
    await removeIfUnchanged(lockPath, existing.text);
  }
}

/** Creates LOCK holding `text`; false if it already exists. */
async function createExclusive(lockPath: string, text: string): Promise<boolean> {
  let handle: fsp.FileHandle;
  try {
    handle = await fsp.open(lockPath, 'wx', 0o644);
  } catch (error) {
    if (errorCode(error) === 'EEXIST') return false;
    throw error;
  }
  try {
    await handle.writeFile(text);
  } catch (error) {
    await handle.close().catch(() => undefined);
    await fsp.rm(lockPath, { force: true });
    throw error;
  }
  await handle.close();
  return true;
}

async function readLockFile(lockPath: string): Promise<{ text: string; mtimeMs: number } | undefined> {
  let handle: fsp.FileHandle;
  try {
    handle = await fsp.open(lockPath, 'r');
  } catch (error) {
    if (errorCode(error) === 'ENOENT') return undefined;
    throw error;
  }
  try {
    // One handle for both, so the age and the text belong to the same file.
    const stat = await handle.stat();
    const text = await handle.readFile('utf8');
    return { text, mtimeMs: stat.mtimeMs };
  } finally {
    await handle.close();
  }
}

/**
 * Removes a stale LOCK, unless it changed since we judged it stale. Moving it aside first makes
 * the removal atomic; if what we moved is not what we judged, we put it back (link fails
 * rather than overwrite if yet another LOCK appeared meanwhile).
 */
async function removeIfUnchanged(lockPath: string, staleText: string): Promise<void> {
  const aside = `${lockPath}.stale-${process.pid}-${Math.random().toString(36).slice(2)}`;
  try {
    await fsp.rename(lockPath, aside);
  } catch (error) {
    if (errorCode(error) === 'ENOENT') return;
    throw error;
  }
  try {
    const moved = await fsp.readFile(aside, 'utf8').catch(() => undefined);
    if (moved !== staleText) await fsp.link(aside, lockPath).catch(() => undefined);
  } finally {
    await fsp.rm(aside, { force: true });
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    // EPERM: alive but owned by another user. Anything but ESRCH counts as alive: never steal.
    return errorCode(error) !== 'ESRCH';
  }
}

function serialize(owner: LockOwner): string {
  return `${JSON.stringify(owner)}\n`;
}

function parseOwner(text: string): LockOwner | undefined {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (typeof value !== 'object' || value === null) return undefined;
  const { pid, hostname, startedAt } = value as Record<string, unknown>;
  if (!Number.isSafeInteger(pid) || (pid as number) <= 0 || typeof hostname !== 'string') return undefined;
  return { pid: pid as number, hostname, startedAt: typeof startedAt === 'string' ? startedAt : 'an unknown time' };
}

function lockedError(directory: string, holder: LockOwner | undefined, detail: string): AtomioError {
  const pid = holder?.pid ?? 'unknown';
  return new AtomioError(
    'ERR_LOCKED',
    `store ${directory} is locked by process ${pid} (${detail}); close it there, or reach it through its server`,
    { pid: holder?.pid, path: directory, hostname: holder?.hostname, startedAt: holder?.startedAt },
  );
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function errorCode(error: unknown): string | undefined {
  return typeof error === 'object' && error !== null && 'code' in error && typeof error.code === 'string'
    ? error.code
    : undefined;
}
