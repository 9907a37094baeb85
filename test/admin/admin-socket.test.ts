// One writer: qwdctl goes through the running broker's admin socket, works on
// the store itself (under the writer lock) only when no broker runs, and a
// broker does not start while a qwdctl holds that lock. Real brokers (in this
// process, or a child we SIGKILL), the real qwdctl, real QEMU.
import test, { type ExecutionContext } from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { spawn, type ChildProcess } from 'node:child_process';
import { qwdctl } from '../helpers/cli.js';
import { startTestBroker, localPid } from '../helpers/broker.js';
import { ROOT, makeSetup, requireQemu, waitFor, type TestSetup } from '../helpers/env.js';
import { isRunning } from '../../src/qemu/process.js';
import { QwdError } from '../../src/errors.js';
import { readLockHolder, tryWriterLock } from '../../src/store/writer-lock.js';
import type { EndedEvent } from '../../src/sessions/manager.js';

test.before(() => requireQemu());

/** A qwdctl we hold on to (stdin left open; its pid known), from the TypeScript sources. */
function spawnQwdctl(t: ExecutionContext, args: string[]) {
  const child = spawn(process.execPath, ['--import', 'tsx', path.join(ROOT, 'src', 'cli', 'main.ts'), ...args], {
    cwd: ROOT, stdio: ['pipe', 'pipe', 'pipe'],
  });
  const out = { stdout: '', stderr: '' };
  child.stdout!.setEncoding('utf8').on('data', (d: string) => (out.stdout += d));
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (out.stderr += d));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  t.teardown(async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await exited;
  });
  return { child, out, exited };
}

/** The real `qwdctl serve` in a process of its own, on the test's config; resolves once it listens. */
async function startChildBroker(t: ExecutionContext, setup: TestSetup): Promise<{ child: ChildProcess; exited: Promise<unknown> }> {
  const { child, out, exited } = spawnQwdctl(t, ['-c', setup.configFile, 'serve', '-p', '0']);
  await Promise.race([
    waitFor('the child broker to listen', () => /listening on http/.test(out.stdout), 30_000),
    exited.then(() => { throw new Error(`the child broker ended before listening: ${out.stderr.slice(-2000)}`); }),
  ]);
  return { child, exited };
}

const socketOf = (setup: TestSetup) => path.join(setup.stateDir, 'admin.sock');
const dbFileOf = (setup: TestSetup) => path.join(setup.stateDir, 'qwd.sqlite');

test('with a broker running, qwdctl goes through its socket: what it starts the broker watches at once, and it never opens the store', async (t) => {
  const setup = makeSetup(t);
  const broker = await startTestBroker(t, setup.config);
  const stat = fs.statSync(socketOf(setup));
  t.true(stat.isSocket());
  t.is(stat.mode & 0o777, 0o600, 'the admin socket is owner-only');

  const start = spawnQwdctl(t, ['-c', setup.configFile, 'sessions', 'start', 'blank', '--memory', '128', '--user', 'ada', '--json']);
  start.child.stdin!.end();
  // While it runs (the broker boots the VM meanwhile), the qwdctl process never has the store open.
  let sawStore = false;
  const dbFile = dbFileOf(setup);
  const watchFds = setInterval(() => {
    try {
      for (const fd of fs.readdirSync(`/proc/${start.child.pid}/fd`)) {
        if (fs.readlinkSync(`/proc/${start.child.pid}/fd/${fd}`).startsWith(dbFile)) sawStore = true;
      }
    } catch {
      // The process (or that fd) is gone between the listing and the readlink: nothing to see.
    }
  }, 5);
  const code = await start.exited;
  clearInterval(watchFds);
  t.is(code, 0, start.out.stderr);
  t.false(sawStore, 'qwdctl had the store open');
  const session = JSON.parse(start.out.stdout) as { id: string; state: string };
  t.is(session.state, 'running');
  t.is(broker.services.manager.get(session.id)?.state, 'running');

  // The broker's manager watches the VM it started for qwdctl: its end is noticed at once, not at the next purge.
  const ended = new Promise<EndedEvent>((resolve) => broker.services.manager.once('ended', resolve));
  const pid = localPid(broker.services.manager.get(session.id)!.handle);
  process.kill(pid, 'SIGKILL');
  t.is((await ended).id, session.id);
  t.false(isRunning(pid));
  t.is(broker.services.manager.get(session.id), undefined);
});

test('without a broker, qwdctl works on the store itself and holds the writer lock; a broker waits for it or refuses', async (t) => {
  const setup = makeSetup(t);
  // users add holds the lock while it waits for the password on its standard input.
  const add = spawnQwdctl(t, ['-c', setup.configFile, 'users', 'add', 'ada']);
  await waitFor('qwdctl to take the writer lock', () => readLockHolder(setup.stateDir)?.pid === add.child.pid, 30_000);
  t.is(tryWriterLock(setup.stateDir, 'the test'), null, 'qwdctl holds the lock');
  t.is(readLockHolder(setup.stateDir)?.what, 'qwdctl users add ada');

  const refused = await t.throwsAsync(startTestBroker(t, setup.config, { writerLockWaitMs: 300 }));
  t.is((refused as QwdError).code, 'QWD_STORE_BUSY');
  t.regex(refused!.message, new RegExp(`is in use by qwdctl users add ada \\(pid ${add.child.pid}\\); the broker`));
  t.false(fs.existsSync(socketOf(setup)), 'the refused broker serves nothing');

  // A broker that may wait starts once qwdctl is done.
  const waiting = startTestBroker(t, setup.config);
  add.child.stdin!.end('a good password\n');
  t.is(await add.exited, 0, add.out.stderr);
  t.is(add.out.stdout, 'added user ada\n');
  const broker = await waiting;
  t.true(fs.statSync(socketOf(setup)).isSocket());
  t.is(readLockHolder(setup.stateDir)?.what, 'the broker (qwdctl serve)');
  const listed = await qwdctl(['-c', setup.configFile, 'users', 'list', '--json']);
  t.is(listed.code, 0, listed.stderr);
  t.deepEqual((JSON.parse(listed.stdout) as Array<{ name: string }>).map((u) => u.name), ['ada']);
  t.truthy(broker.services.users.get('ada'));
});

test('the socket a SIGKILLed broker left behind: qwdctl works without it, and the next broker replaces it', async (t) => {
  const setup = makeSetup(t);
  const first = await startChildBroker(t, setup);
  first.child.kill('SIGKILL');
  await first.exited;
  t.true(fs.statSync(socketOf(setup)).isSocket(), 'a stale socket is left');

  const status = await qwdctl(['-c', setup.configFile, 'status', '--json']);
  t.is(status.code, 0, status.stderr);
  t.deepEqual((JSON.parse(status.stdout) as { sessions: unknown[] }).sessions, []);
  t.is(readLockHolder(setup.stateDir), null, 'qwdctl took the lock and let it go');

  const broker = await startTestBroker(t, setup.config);
  const started = await qwdctl(['-c', setup.configFile, 'sessions', 'start', 'blank', '--memory', '128', '--json']);
  t.is(started.code, 0, started.stderr);
  const { id } = JSON.parse(started.stdout) as { id: string };
  t.truthy(broker.services.manager.get(id), 'served by the new broker');
  const stopped = await qwdctl(['-c', setup.configFile, 'sessions', 'stop', id]);
  t.is(stopped.code, 0, stopped.stderr);
  await broker.close();
  t.false(fs.existsSync(socketOf(setup)), 'a broker that closes removes its socket');
  t.is(readLockHolder(setup.stateDir), null, 'and lets go of the writer lock');
});

test('a broker refuses a socket path that is not a socket of ours, and leaves it there', async (t) => {
  const setup = makeSetup(t);
  fs.mkdirSync(setup.stateDir, { recursive: true, mode: 0o700 });
  fs.writeFileSync(socketOf(setup), 'not a socket');
  const err = await t.throwsAsync(startTestBroker(t, setup.config));
  t.is((err as QwdError).code, 'QWD_STATE_DIR_UNSAFE');
  t.regex(err!.message, /admin\.sock exists and is not a socket; the broker will not replace it/);
  t.is(fs.readFileSync(socketOf(setup), 'utf8'), 'not a socket');
  const lock = tryWriterLock(setup.stateDir, 'the test');
  t.truthy(lock, 'the refused broker let go of the writer lock');
  lock?.release();
});

test('another user cannot connect to the admin socket', async (t) => {
  const setup = makeSetup(t);
  await startTestBroker(t, setup.config);
  // Root connects whatever the mode; a process of user nobody is refused by the kernel.
  if (process.getuid?.() !== 0) return t.fail('this test runs as root, to connect as user nobody');
  const child = spawn(process.execPath, ['-e', `require('net').connect(process.argv[1])
    .on('connect', () => { console.log('connected'); process.exit(0); })
    .on('error', (e) => { console.log(e.code); process.exit(0); });`, socketOf(setup)], {
    uid: 65534, gid: 65534, stdio: ['ignore', 'pipe', 'inherit'],
  });
  let out = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
  await new Promise((resolve) => child.once('exit', resolve));
  t.is(out.trim(), 'EACCES');
  // What keeps it out: the state dir (0700) and the socket's own mode (0600).
  t.is(fs.statSync(setup.stateDir).mode & 0o777, 0o700);
  t.is(fs.statSync(socketOf(setup)).mode & 0o777, 0o600);
});
