// Fault injection across a session's life, with real components: a real broker
// (in-process, or a child process we SIGKILL), real qemu-img and QEMU (the
// blank machine), another process holding SQLite's write lock, and
// the broker's own clock jumped forward. Each fault must end in a clear state:
// a QWD_* error or success, and — once the purge job has run — no session row,
// run dir, overlay or process of ours left. Storage faults (full disk,
// qemu-img failing) are in another file.
import test, { type ExecutionContext } from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { parse, stringify } from 'yaml';
import Database from 'better-sqlite3';
import { ROOT, makeSetup, pidsMentioning, requireQemu, tempDir, waitFor, type TestSetup } from '../helpers/env.js';
import { api, startTestBroker } from '../helpers/broker.js';
import { startSmtpSink } from '../helpers/smtp.js';
import { isOurProcess, isRunning } from '../../src/qemu/process.js';
import type { LocalHandle } from '../../src/launcher/local.js';
import type { Broker } from '../../src/main.js';

/** Files below dir whose name ends in .qcow2 (session overlays live in run dirs; masters in machines/). */
function overlaysUnder(dir: string): string[] {
  if (!fs.existsSync(dir)) return [];
  return fs.readdirSync(dir, { recursive: true, encoding: 'utf8' }).filter((f) => f.endsWith('.qcow2'));
}

function runDirs(setup: TestSetup): string[] {
  return fs.existsSync(setup.config.runDir) ? fs.readdirSync(setup.config.runDir) : [];
}

interface StoredRow {
  id: string;
  state: string;
  handle: string | null;
  token_hash: string;
}

/** Session rows as another process sees them (a read-only connection of our own). */
function storedRows(setup: TestSetup): StoredRow[] {
  const file = path.join(setup.stateDir, 'qwd.sqlite');
  if (!fs.existsSync(file)) return [];
  const db = new Database(file, { readonly: true, fileMustExist: true });
  try {
    return db.prepare('SELECT id, state, handle, token_hash FROM sessions').all() as StoredRow[];
  } finally {
    db.close();
  }
}

/** Processes running from the test's temp dir (QEMU's argv names its run dir; fake QEMUs live there too). */
function ourProcesses(setup: TestSetup): number[] {
  return pidsMentioning(setup.dir).filter((pid) => pid !== process.pid);
}

async function assertNothingLeft(t: ExecutionContext, setup: TestSetup, pids: number[] = []): Promise<void> {
  for (const pid of pids) await waitFor(`pid ${pid} to be gone`, () => !isRunning(pid), 15000);
  t.deepEqual(storedRows(setup), [], 'no session row');
  t.deepEqual(runDirs(setup), [], 'no run dir');
  t.deepEqual(overlaysUnder(setup.stateDir), [], 'no overlay');
  t.deepEqual(ourProcesses(setup), [], 'no process of ours');
}

/** A broker setup whose qemu-system-x86_64 is a script of ours (in a temp dir of its own: its processes can be found). */
function setupWithFakeQemu(t: ExecutionContext, body: string, qemu: Record<string, unknown> = {}) {
  const binary = path.join(tempDir(t, 'qwd-fake-'), 'qemu-system-x86_64');
  fs.writeFileSync(binary, `#!/bin/bash\n${body}\n`, { mode: 0o755 });
  return { setup: makeSetup(t, { qemu: { binaries: { x86_64: binary }, ...qemu } }), binary };
}

function blankRequest(extra: Record<string, unknown> = {}) {
  return { machine: 'blank', user: 'ada', cpus: 1, memoryMiB: 128, lifetimeS: 3600, ...extra };
}

function qemuPidOf(handle: string | null): number {
  const pid = handle ? (JSON.parse(handle) as { pid?: number }).pid : undefined;
  if (!pid) throw new Error(`no qemu pid in handle ${handle}`);
  return pid;
}

// ---- QEMU failing to start -------------------------------------------------

test('a QEMU that exits at once gives QWD_LAUNCH_FAILED without paths, and leaves no row, run dir, overlay or process', async (t) => {
  requireQemu();
  const { setup } = setupWithFakeQemu(t, 'echo "qemu-system-x86_64: cannot open /dev/kvm: Permission denied" >&2\nexit 1');
  const broker = await startTestBroker(t, setup.config);
  const res = await api(broker, 'POST', '/api/v1/sessions', blankRequest());
  t.is(res.status, 500, res.text);
  t.is(res.json?.error?.code, 'QWD_LAUNCH_FAILED');
  t.notRegex(res.json.error.message, /\/|qemu-system|kvm/i, 'the user message names no path or program');
  t.deepEqual(broker.services.rows.all(), []);
  await assertNothingLeft(t, setup);
});

test('a QEMU that never opens its sockets is killed at the ready timeout: QWD_LAUNCH_TIMEOUT and nothing left', async (t) => {
  requireQemu();
  // exec -a keeps the script's path as the process's name, so we can find it.
  const hang = 'echo "fake qemu: hanging" >&2\nexec -a "$0" sleep 600';
  const { setup, binary } = setupWithFakeQemu(t, hang, { readyTimeoutMs: 1500 });
  const broker = await startTestBroker(t, setup.config);
  const pending = api(broker, 'POST', '/api/v1/sessions', blankRequest());
  const pids = await waitFor('the fake qemu to run', () => {
    const found = pidsMentioning(binary);
    return found.length ? found : false;
  });
  const res = await pending;
  t.is(res.status, 504, res.text);
  t.is(res.json?.error?.code, 'QWD_LAUNCH_TIMEOUT');
  t.notRegex(res.json.error.message, /\//, 'the user message names no path');
  await assertNothingLeft(t, setup, pids);
  t.deepEqual(pidsMentioning(binary), [], 'the hanging qemu is gone');
});

// ---- SQLite busy -----------------------------------------------------------

/**
 * Another process holding SQLite's write lock (BEGIN EXCLUSIVE in its own
 * better-sqlite3 connection) until release(). A process, not a connection of
 * ours: better-sqlite3 waits for a lock synchronously, so a holder in the
 * broker's own process could not let go while the broker waits.
 */
async function holdWriteLock(t: ExecutionContext, setup: TestSetup): Promise<{ release(): Promise<void> }> {
  const script = `
    const db = new (require('better-sqlite3'))(process.argv[1]);
    db.exec('BEGIN EXCLUSIVE');
    console.log('locked');
    process.stdin.once('data', () => { db.exec('ROLLBACK'); db.close(); console.log('released'); process.exit(0); });`;
  const dbFile = path.join(setup.stateDir, 'qwd.sqlite');
  const child = spawn(process.execPath, ['-e', script, dbFile], { cwd: ROOT, stdio: ['pipe', 'pipe', 'inherit'] });
  const exited = new Promise((resolve) => child.once('exit', resolve));
  t.teardown(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await exited;
    }
  });
  let out = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => (out += d));
  await waitFor('the lock holder to hold the lock', () => out.includes('locked'));
  return {
    release: async () => {
      if (child.exitCode === null) child.stdin!.write('release\n');
      await exited;
    },
  };
}

test('with the store locked by another process, create and stop answer QWD_STORE_BUSY and change nothing; both work once the lock goes', async (t) => {
  requireQemu();
  const setup = makeSetup(t);
  const broker = await startTestBroker(t, setup.config);
  const running = await api(broker, 'POST', '/api/v1/sessions', blankRequest());
  t.is(running.status, 201, running.text);
  const vm = qemuPidOf(storedRows(setup)[0]!.handle);

  const lock = await holdWriteLock(t, setup);
  const refused = await api(broker, 'POST', '/api/v1/sessions', blankRequest());
  t.is(refused.status, 503, refused.text);
  t.is(refused.json?.error?.code, 'QWD_STORE_BUSY');
  t.is(storedRows(setup).length, 1, 'no row for the refused create');
  t.deepEqual(runDirs(setup), [running.json.id], 'no run dir for it either');

  const stopRefused = await api(broker, 'DELETE', `/api/v1/sessions/${running.json.token}`);
  t.is(stopRefused.status, 503, stopRefused.text);
  t.is(stopRefused.json?.error?.code, 'QWD_STORE_BUSY');
  t.deepEqual(storedRows(setup).map((r) => r.state), ['running'], 'the session is untouched');
  t.true(isRunning(vm), 'and its VM still runs');
  await lock.release();

  t.is((await api(broker, 'DELETE', `/api/v1/sessions/${running.json.token}`)).status, 204);
  await broker.services.purge.run();
  await assertNothingLeft(t, setup, [vm]);
});

test('a create that meets a lock released while it waits succeeds, and its stop cleans up everything', async (t) => {
  requireQemu();
  const setup = makeSetup(t);
  const broker = await startTestBroker(t, setup.config);
  const lock = await holdWriteLock(t, setup);
  // Released once the request has reached the broker: the store's busy timeout outlasts the lock.
  broker.server.once('request', () => void lock.release());
  const created = await api(broker, 'POST', '/api/v1/sessions', blankRequest());
  t.is(created.status, 201, created.text);
  const rows = storedRows(setup);
  t.deepEqual(rows.map((r) => r.state), ['running']);
  const vm = qemuPidOf(rows[0]!.handle);
  t.is((await api(broker, 'DELETE', `/api/v1/sessions/${created.json.token}`)).status, 204);
  await assertNothingLeft(t, setup, [vm]);
});

// ---- broker SIGKILL --------------------------------------------------------

interface ChildBroker {
  child: ChildProcess;
  url: string;
  exited: Promise<unknown>;
}

/** The real bin/qwdctl serve in its own process, on the test's config. */
async function startChildBroker(t: ExecutionContext, setup: TestSetup): Promise<ChildBroker> {
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('QWD_')));
  const argv = [path.join(ROOT, 'bin', 'qwdctl'), '-c', setup.configFile, 'serve', '-p', '0'];
  const child = spawn(process.execPath, argv, { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
  const exited = new Promise((resolve) => child.once('exit', resolve));
  t.teardown(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await exited;
    }
  });
  let stdout = '';
  let stderr = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const url = await Promise.race([
    waitFor('the child broker to listen', () => /listening on (http:\/\/\S+)/.exec(stdout)?.[1], 30000),
    exited.then(() => { throw new Error(`the child broker ended before listening: ${stderr.slice(-2000)}`); }),
  ]);
  return { child, url, exited };
}

function postSession(broker: ChildBroker): Promise<Response> {
  const headers = { 'content-type': 'application/json', accept: 'application/json' };
  return fetch(`${broker.url}/api/v1/sessions`, { method: 'POST', headers, body: JSON.stringify(blankRequest()) });
}

async function sigkill(broker: ChildBroker): Promise<void> {
  broker.child.kill('SIGKILL');
  await broker.exited;
}

/** A second broker on the same state dir, with a clock a test can move forward. */
async function restartBroker(t: ExecutionContext, setup: TestSetup): Promise<{ broker: Broker; jump(ms: number): void }> {
  let offsetMs = 0;
  const broker = await startTestBroker(t, setup.config, { now: () => Date.now() + offsetMs });
  return { broker, jump: (ms) => (offsetMs += ms) };
}

const HOUR_MS = 3600_000;

/**
 * A setup whose QEMU waits at a gate (a FIFO) before it execs the real
 * qemu-system-x86_64: a create stays "starting" as long as the test wants,
 * whatever the machine's speed. openGate() lets it through; false when no
 * QEMU was waiting (the broker died before it spawned one).
 */
function setupWithGatedQemu(t: ExecutionContext): { setup: TestSetup; binary: string; openGate(): boolean } {
  const gate = path.join(tempDir(t, 'qwd-gate-'), 'gate');
  execFileSync('mkfifo', [gate]);
  const { setup, binary } = setupWithFakeQemu(t, `read -r _ < '${gate}'\nexec qemu-system-x86_64 "$@"`);
  const openGate = () => {
    let fd: number;
    try {
      fd = fs.openSync(gate, fs.constants.O_WRONLY | fs.constants.O_NONBLOCK);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENXIO') return false; // nobody reads: no QEMU waits
      throw err;
    }
    fs.writeSync(fd, 'go\n');
    fs.closeSync(fd);
    return true;
  };
  return { setup, binary, openGate };
}

/** The path of `name` in the create's run dir (the only one under the run root), once it exists. */
function fileOfTheCreate(setup: TestSetup, name: string): string | false {
  const dirs = runDirs(setup);
  const file = dirs.length === 1 ? path.join(setup.config.runDir, dirs[0]!, name) : '';
  return file && fs.existsSync(file) ? file : false;
}

for (const moment of ['after the overlay is made', 'while QEMU is starting'] as const) {
  test(`a broker SIGKILLed during a create (${moment}) leaves nothing once a new broker has started`, async (t) => {
    requireQemu();
    const { setup, binary, openGate } = setupWithGatedQemu(t);
    const first = await startChildBroker(t, setup);
    const pending = postSession(first).catch((err: Error) => err);
    if (moment === 'after the overlay is made') await waitFor('the overlay', () => fileOfTheCreate(setup, 'disk.qcow2'));
    else await waitFor('QEMU to be spawned', () => pidsMentioning(binary).length > 0);
    await sigkill(first);
    t.true(await pending instanceof Error, 'the request died with its broker');
    // The QEMU the dead broker spawned (if it got that far) now starts, in its own process group, with nobody watching.
    if (openGate()) await waitFor('the orphaned QEMU to listen', () => fileOfTheCreate(setup, 'vnc.sock'));
    else t.is(moment, 'after the overlay is made', 'only a broker killed before spawning leaves no QEMU');
    const vms = ourProcesses(setup);
    t.deepEqual(storedRows(setup).map((r) => [r.state, r.handle]), [['starting', null]], 'a row without a handle');
    const storedTokenHash = storedRows(setup)[0]!.token_hash;

    const { broker } = await restartBroker(t, setup);
    // The start can never finish now, and no other process can be making it (the store has one writer, and the
    // dead broker's writer lock went with it): the new broker's reconcile abandons it at once and cleans up by the
    // run dir, QEMU included; its purge then finds nothing to do.
    t.deepEqual(broker.services.rows.all(), []);
    t.deepEqual(broker.services.rows.ended(storedTokenHash)?.end, { code: 'start-abandoned', detail: 'start-abandoned' });
    const report = await broker.services.purge.run();
    t.deepEqual(report.actions, []);
    await assertNothingLeft(t, setup, vms);
  });
}

test('a broker SIGKILLed during a stop leaves nothing once a new broker has reconciled and purged', async (t) => {
  requireQemu();
  const setup = makeSetup(t);
  // The first broker (a child reading the config file) waits ten minutes at each rung of its stop ladder: the
  // frozen VM neither answers QMP nor acts on SIGTERM, so the stop stays in 'stopping' however slowly this host
  // polls (with the test graces the ladder reached SIGKILL and deleted the row before a starved poll saw it).
  // The second broker keeps the test graces.
  fs.writeFileSync(setup.configFile, stringify({ ...parse(fs.readFileSync(setup.configFile, 'utf8')), qemu: { quitGraceMs: 600_000, termGraceMs: 600_000 } }));
  const first = await startChildBroker(t, setup);
  const res = await postSession(first);
  t.is(res.status, 201);
  const created = await res.json() as { token: string };
  const handle = JSON.parse(storedRows(setup)[0]!.handle!) as LocalHandle;
  const vm = handle.pid;
  const ours = () => isOurProcess(handle.pid, handle.startTime, handle.processName);
  // Freeze the VM (ours: the handle's PID, start time and name checked) so the stop still waits when the broker dies.
  t.true(ours());
  process.kill(vm, 'SIGSTOP');
  t.teardown(() => { if (ours()) process.kill(vm, 'SIGCONT'); });
  const pending = fetch(`${first.url}/api/v1/sessions/${created.token}`, { method: 'DELETE' }).catch((e: Error) => e);
  await waitFor('the session to be stopping', () => storedRows(setup)[0]?.state === 'stopping', 60_000);
  await sigkill(first);
  t.true(await pending instanceof Error, 'the request died with its broker');
  process.kill(vm, 'SIGCONT');

  const { broker } = await restartBroker(t, setup);
  await broker.services.purge.run();
  t.deepEqual(broker.services.rows.all(), []);
  await assertNothingLeft(t, setup, [vm]);
});

// ---- the clock jumping forward ---------------------------------------------

test('a clock that jumps two hours past an expiry: the purge stops the session, releases everything, and warns once', async (t) => {
  requireQemu();
  const smtp = await startSmtpSink(t);
  const mail = { smtpHost: '127.0.0.1', smtpPort: smtp.port, smtpStartTls: false };
  const setup = makeSetup(t, { sessions: { warnBeforeS: [600] }, mail });
  const { broker, jump } = await restartBroker(t, setup);
  const created = await api(broker, 'POST', '/api/v1/sessions', blankRequest({ email: 'ada@example.org' }));
  t.is(created.status, 201, created.text);
  const vm = qemuPidOf(storedRows(setup)[0]!.handle);

  jump(HOUR_MS - 300_000); // five minutes before the end: inside the warning window
  // Two runs asked for at once (the cron job and an admin, say), then one more.
  await Promise.all([broker.services.purge.run(), broker.services.purge.run()]);
  await broker.services.purge.run();
  // The sink records a mail once its data has been read, which may be after the client's 250.
  await waitFor('the warning mail', () => smtp.mails.length >= 1);
  t.is(smtp.mails.length, 1, 'one warning, however often the purge runs');
  t.true(isRunning(vm), 'the session still runs before its end');

  jump(2 * HOUR_MS);
  const report = await broker.services.purge.run();
  t.deepEqual(report.actions, [{ id: created.json.id, action: 'stop', reason: 'expired' }]);
  t.deepEqual(report.warnings, [], 'no warning for a session past its end');
  await broker.services.purge.run();
  t.is(smtp.mails.length, 1, 'still one warning');
  const page = await api(broker, 'GET', `/api/v1/sessions/${created.json.token}`);
  t.is(page.status, 410, 'its link says it ended');
  await assertNothingLeft(t, setup, [vm]);
});
