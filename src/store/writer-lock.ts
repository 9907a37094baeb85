// The store's writer lock: whoever holds it is the only process that writes
// the state dir's database. The broker takes it at start and keeps it until
// it closes; qwdctl takes it only when no broker runs (with a broker it talks
// to the admin socket instead and never opens the store). Not a lock on rows:
// SQLite's own locking still orders the writes of one process's connections.
//
// The lock is an exclusive SQLite transaction on a file of its own
// (writer.lock): SQLite locks with fcntl(2), which the kernel drops when the
// holder dies (a SIGKILLed broker leaves no stale lock to clean up), and which
// SQLite also orders between connections of one process. No native code
// beyond better-sqlite3, which the store already uses. Who holds it (pid and
// what for) is written beside it, for the message of whoever waits.
import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { QwdError } from '../errors.js';
import { assertSafeStateDir } from './db.js';

export const WRITER_LOCK_FILE = 'writer.lock';
const HOLDER_FILE = 'writer.lock.holder';

export interface WriterLock {
  /** Releases the lock (twice is a no-op). */
  release(): void;
}

export interface LockHolder {
  pid: number;
  what: string;
}

/** Takes the lock now, or returns null when another holds it. `what` says who takes it (for the waiters' message). */
export function tryWriterLock(stateDir: string, what: string): WriterLock | null {
  assertSafeStateDir(stateDir);
  fs.mkdirSync(stateDir, { recursive: true, mode: 0o700 });
  const file = path.join(stateDir, WRITER_LOCK_FILE);
  // Made 0600 before SQLite opens it (SQLite would use the umask's mode); O_NOFOLLOW: not a symlink planted there.
  fs.closeSync(fs.openSync(file, fs.constants.O_RDWR | fs.constants.O_CREAT | fs.constants.O_NOFOLLOW, 0o600));
  const db = new Database(file, { timeout: 0 });
  try {
    // An exclusive transaction in rollback-journal mode holds SQLite's EXCLUSIVE lock on the file
    // from BEGIN until it ends: nobody else can begin one, or even read it.
    db.exec('BEGIN EXCLUSIVE');
  } catch (err) {
    db.close();
    if ((err as { code?: unknown }).code === 'SQLITE_BUSY') return null;
    throw err;
  }
  const holderFile = path.join(stateDir, HOLDER_FILE);
  const tmp = `${holderFile}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, JSON.stringify({ pid: process.pid, what } satisfies LockHolder) + '\n', { mode: 0o600 });
  fs.renameSync(tmp, holderFile);
  let released = false;
  return {
    release: () => {
      if (released) return;
      released = true;
      if (readLockHolder(stateDir)?.pid === process.pid) fs.rmSync(holderFile, { force: true });
      db.close(); // rolls the empty transaction back, which drops the lock
    },
  };
}

/** Who last took the lock (it may have released it since), or null. */
export function readLockHolder(stateDir: string): LockHolder | null {
  try {
    const parsed = JSON.parse(fs.readFileSync(path.join(stateDir, HOLDER_FILE), 'utf8')) as Partial<LockHolder>;
    if (Number.isInteger(parsed.pid) && typeof parsed.what === 'string') return { pid: parsed.pid!, what: parsed.what };
  } catch {
    // No holder recorded (never taken, or released) or a torn file: the message says less, nothing else changes.
  }
  return null;
}

/** The refusal when the lock stayed held for `waitedMs`: names the holder when it is known. */
export function writerLockBusyError(stateDir: string, waitedMs: number, what: string): QwdError {
  const holder = readLockHolder(stateDir);
  const by = holder ? `${holder.what} (pid ${holder.pid})` : 'another process';
  const message = `the store in ${stateDir} is in use by ${by}; ${what} waited ${Math.round(waitedMs / 1000)} s ` +
    'for it: try again once it has finished';
  return new QwdError('QWD_STORE_BUSY', message, { userMessage: message, details: { holder } });
}

/**
 * Takes the lock, trying every `pollMs` for up to `waitMs`; `shouldStop` is asked between tries
 * (qwdctl stops waiting when a broker starts serving). Throws QWD_STORE_BUSY when the time is up.
 */
export async function acquireWriterLock(
  stateDir: string, what: string,
  opts: { waitMs: number; pollMs?: number; shouldStop?: () => Promise<boolean> },
): Promise<WriterLock | null> {
  const started = Date.now();
  for (;;) {
    const lock = tryWriterLock(stateDir, what);
    if (lock) return lock;
    if (opts.shouldStop && await opts.shouldStop()) return null;
    const waited = Date.now() - started;
    if (waited >= opts.waitMs) throw writerLockBusyError(stateDir, waited, what);
    await new Promise((resolve) => setTimeout(resolve, Math.min(opts.pollMs ?? 100, opts.waitMs - waited)));
  }
}
