// The store's writer lock: one holder at a time, in this process and across
// processes, released by the kernel when its holder is SIGKILLed.
import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { ROOT, tempDir, waitFor } from '../helpers/env.js';
import { isRunning } from '../../src/qemu/process.js';
import { QwdError } from '../../src/errors.js';
import { acquireWriterLock, readLockHolder, tryWriterLock } from '../../src/store/writer-lock.js';

test('a second taker is refused while the lock is held, and gets it once it is released', (t) => {
  const stateDir = path.join(tempDir(t), 'state');
  const first = tryWriterLock(stateDir, 'the first');
  t.truthy(first);
  t.is(tryWriterLock(stateDir, 'the second'), null);
  t.deepEqual(readLockHolder(stateDir), { pid: process.pid, what: 'the first' });
  t.is(fs.statSync(path.join(stateDir, 'writer.lock')).mode & 0o777, 0o600);
  first!.release();
  first!.release(); // twice is a no-op
  t.is(readLockHolder(stateDir), null, 'the holder record goes with the lock');
  const second = tryWriterLock(stateDir, 'the second');
  t.truthy(second);
  second!.release();
});

test('a taker that waits too long is refused with QWD_STORE_BUSY naming the holder', async (t) => {
  const stateDir = path.join(tempDir(t), 'state');
  const held = tryWriterLock(stateDir, 'qwdctl users add ada')!;
  t.teardown(() => held.release());
  const err = await t.throwsAsync(acquireWriterLock(stateDir, 'the broker', { waitMs: 300, pollMs: 50 }));
  t.true(err instanceof QwdError);
  t.is((err as QwdError).code, 'QWD_STORE_BUSY');
  t.regex(err!.message, new RegExp(`in use by qwdctl users add ada \\(pid ${process.pid}\\); the broker waited`));
});

test('a taker that waits gets the lock when its holder lets go', async (t) => {
  const stateDir = path.join(tempDir(t), 'state');
  const held = tryWriterLock(stateDir, 'the first')!;
  setTimeout(() => held.release(), 200);
  const lock = await acquireWriterLock(stateDir, 'the second', { waitMs: 10_000, pollMs: 20 });
  t.truthy(lock);
  lock!.release();
});

test('the lock of a process that was SIGKILLed is free at once (the kernel drops it), in another process too', async (t) => {
  const stateDir = path.join(tempDir(t), 'state');
  const script = `import { tryWriterLock } from ${JSON.stringify(path.join(ROOT, 'src', 'store', 'writer-lock.ts'))};
    const lock = tryWriterLock(process.argv[1], 'child');
    process.stdout.write(lock ? 'held\\n' : 'busy\\n');
    setInterval(() => {}, 1000);`;
  const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script, stateDir], {
    cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'],
  });
  const exited = new Promise((resolve) => child.once('exit', resolve));
  t.teardown(async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await exited;
  });
  let out = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
  await waitFor('the child to take the lock', () => out.includes('held'), 30_000);
  t.is(tryWriterLock(stateDir, 'the test'), null, 'held by another process');
  t.is(readLockHolder(stateDir)?.pid, child.pid);
  child.kill('SIGKILL');
  await exited;
  t.false(isRunning(child.pid!));
  const lock = tryWriterLock(stateDir, 'the test');
  t.truthy(lock, 'free once its holder is gone, with nothing to clean up');
  t.deepEqual(readLockHolder(stateDir), { pid: process.pid, what: 'the test' });
  lock!.release();
});
