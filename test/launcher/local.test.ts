// The local launcher against real QEMU: ready means QMP and VNC answer; stop
// escalates quit → SIGTERM → SIGKILL; cleanup always removes the run dir; a
// watch holds QEMU's one QMP connection and shares it with commands.
import test from 'ava';
import { netnsDir } from '../../src/launcher/guest-netns.js';
import fs from 'node:fs';
import path from 'node:path';
import net from 'node:net';
import { LocalLauncher, eventsMonitorArgv, guestShutdownReason, qmpEventsSocket } from '../../src/launcher/local.js';
import { QmpClient } from '../../src/qemu/qmp-client.js';
import { loadCatalog } from '../../src/catalog/catalog.js';
import { chooseAccelerator, probeHostAccel } from '../../src/qemu/accel.js';
import { silentLogger } from '../../src/log.js';
import { readRfbBanner } from '../../src/qemu/rfb-probe.js';
import { QwdError } from '../../src/errors.js';
import { signalGroup } from '../../src/qemu/process.js';
import { makeSetup, pidsMentioning, requireQemu, waitFor } from '../helpers/env.js';
import type { ExecutionContext } from 'ava';
import type { Config } from '../../src/config/schema.js';
import type { ExitInfo, LaunchSpec } from '../../src/launcher/types.js';
import type { QmpEvent } from '../../src/qemu/qmp-client.js';
import { systemClock, type Clock } from '../../src/clock.js';

test.before(() => requireQemu());

// Every QMP connection opened in this file, by socket path: a spy around the real client (QEMU is real), so that a
// test can count the connections a command opened instead of timing it.
const qmpConnects: string[] = [];
const realConnect = QmpClient.connect.bind(QmpClient);
QmpClient.connect = (socketPath: string, opts?: Parameters<typeof realConnect>[1]) => {
  qmpConnects.push(socketPath);
  return realConnect(socketPath, opts);
};
const connectsTo = (socket: string) => qmpConnects.filter((s) => s === socket).length;

/** Whether QEMU's query-chardev lists a client connected to this socket (it lists an idle one as "disconnected:…"). */
const connectedTo = (chardevs: Array<{ filename: string }>, socket: string) =>
  chardevs.some((c) => c.filename.includes(socket) && !c.filename.startsWith('disconnected:'));

/** The system clock, noting each timer that runs out (its ms): which of the launcher's waits ended on their timeout. */
function recordingClock(): Clock & { expired: number[] } {
  const expired: number[] = [];
  return { ...systemClock, expired, after: (ms, fn, opts) => systemClock.after(ms, () => { expired.push(ms); fn(); }, opts) };
}

async function setupLauncher(t: ExecutionContext, raw: Record<string, unknown> = {}, clock?: Clock) {
  const setup = makeSetup(t, raw);
  const config: Config = setup.config;
  const catalog = await loadCatalog(config.machinesDir, config.qemu.img);
  const launcher = new LocalLauncher({ config, accel: chooseAccelerator(config.qemu.accel, probeHostAccel()), log: silentLogger(), clock });
  const machine = catalog.get('blank')!;
  // The local launcher gives no VM a time limit (the manager's purge ends it): expiresAt is only carried.
  const spec = (id: string): LaunchSpec => ({
    sessionId: id, machine, cpus: 1, memoryMiB: 128, runDir: path.join(config.runDir, id), expiresAt: Date.now() + 3_600_000,
  });
  return { setup, config, launcher, spec };
}

test('start resolves when QMP and VNC answer, with a 0700 run dir', async (t) => {
  const { launcher, spec } = await setupLauncher(t);
  const handle = await launcher.start(spec('aaaaaaaaaaa1'));
  t.teardown(() => launcher.stop(handle));
  t.true(await launcher.isAlive(handle));
  t.is(await readRfbBanner({ kind: 'unix', path: handle.vncSocket }), 'RFB 003.008');
  t.is(fs.statSync(handle.runDir).mode & 0o777, 0o700);
  // The pasta that connects the session's network namespace (guest-netns.ts).
  const pasta = Number(fs.readFileSync(path.join(handle.runDir, 'pasta.pid'), 'utf8').split(' ')[0]);
  t.is(fs.readlinkSync(`/proc/${pasta}/ns/net`), fs.readlinkSync('/proc/self/ns/net'), 'pasta itself stays in the host\'s namespace');
  t.deepEqual(pidsMentioning('qwd-aaaaaaaaaaa1'), [handle.pid]);
  t.deepEqual(pidsMentioning('qwdnet-aaaaaaaaaaa1'), [pasta], 'and its pasta');
  t.not(fs.readlinkSync(`/proc/${handle.pid}/ns/net`), fs.readlinkSync('/proc/self/ns/net'), 'qemu runs in a network namespace of its own');
  if (process.getuid?.() === 0) {
    const status = fs.readFileSync(`/proc/${handle.pid}/status`, 'utf8');
    t.notRegex(status, /^Uid:\s+0\s/m, 'qemu dropped root privileges (-runas)');
  }
  await launcher.stop(handle);
  t.deepEqual(pidsMentioning('qwd-aaaaaaaaaaa1'), [], 'stop ends QEMU');
  t.deepEqual(pidsMentioning('qwdnet-aaaaaaaaaaa1'), [], 'and the pasta of its namespace');
  t.false(fs.existsSync(`${netnsDir()}/qwdnet-aaaaaaaaaaa1`), 'and removes the namespace');
});

test('stop asks QMP to quit first; stop twice is a no-op', async (t) => {
  const { launcher, spec } = await setupLauncher(t);
  const handle = await launcher.start(spec('aaaaaaaaaaa2'));
  const [first, second] = await Promise.all([launcher.stop(handle), launcher.stop(handle)]);
  t.is(first, 'quit');
  t.is(second, 'quit');
  t.is(await launcher.stop(handle), 'already-gone');
  t.deepEqual(pidsMentioning('qwd-aaaaaaaaaaa2'), []);
  await launcher.cleanup(handle, handle.runDir);
  t.false(fs.existsSync(handle.runDir));
});

test('stop escalates to SIGKILL when qemu ignores quit and SIGTERM', async (t) => {
  const { launcher, spec } = await setupLauncher(t, { qemu: { quitGraceMs: 300, termGraceMs: 300 } });
  const handle = await launcher.start(spec('aaaaaaaaaaa3'));
  // A stopped process cannot answer QMP nor act on SIGTERM; SIGKILL still ends it.
  process.kill(handle.pid, 'SIGSTOP');
  const outcome = await launcher.stop(handle);
  t.is(outcome, 'killed');
  t.deepEqual(pidsMentioning('qwd-aaaaaaaaaaa3'), []);
  await launcher.cleanup(handle, handle.runDir);
});

test('a qemu that cannot start fails with its stderr and leaves nothing', async (t) => {
  const { launcher, spec, config } = await setupLauncher(t);
  const s = spec('aaaaaaaaaaa4');
  const err = await t.throwsAsync(launcher.start({ ...s, memoryMiB: 1 << 30 }));
  t.true(err instanceof QwdError);
  t.is((err as QwdError).code, 'QWD_LAUNCH_FAILED');
  t.regex(err!.message, /exited during start-up/);
  t.false(fs.existsSync(s.runDir));
  t.deepEqual(pidsMentioning('qwd-aaaaaaaaaaa4'), []);
  void config;
});

test('a missing qemu binary is reported with what to install', async (t) => {
  const { launcher, spec } = await setupLauncher(t, { qemu: { binaries: { x86_64: 'qemu-system-nonexistent' } } });
  const s = spec('aaaaaaaaaaa5');
  await t.throwsAsync(launcher.start(s), { code: 'QWD_LAUNCH_FAILED', message: /qemu-system-nonexistent.*install qemu-system-x86/ });
  t.false(fs.existsSync(s.runDir));
});

test('run dirs outside the configured root are refused', async (t) => {
  const { launcher, spec } = await setupLauncher(t);
  await t.throwsAsync(launcher.start({ ...spec('aaaaaaaaaaa6'), runDir: '/tmp/elsewhere' }), { message: /outside/ });
  await t.throwsAsync(launcher.cleanup(null, '/'), { message: /outside/ });
});

test('stop sends SIGTERM when QMP does not answer, and qemu honours it', async (t) => {
  const { launcher, spec } = await setupLauncher(t, { qemu: { quitGraceMs: 300, termGraceMs: 3000 } });
  const handle = await launcher.start(spec('aaaaaaaaaaa7'));
  t.teardown(() => signalGroup(handle.pid, 'SIGKILL'));
  // QEMU's QMP socket serves one client at a time: while another client holds
  // it, the launcher's connect gets no greeting, so quit cannot be asked.
  const holder = net.createConnection(handle.qmpSocket);
  t.teardown(() => holder.destroy());
  await new Promise<void>((resolve) => holder.once('data', () => resolve()));
  t.is(await launcher.stop(handle), 'terminated');
  t.deepEqual(pidsMentioning('qwd-aaaaaaaaaaa7'), []);
  await launcher.cleanup(handle, handle.runDir);
});

test('a watched VM still answers QMP commands from the launcher and from another process, and stop still quits through QMP', async (t) => {
  const { launcher, spec } = await setupLauncher(t, { qemu: { quitGraceMs: 3000 } });
  const handle = await launcher.start(spec('aaaaaaaaaaa8'));
  t.teardown(() => signalGroup(handle.pid, 'SIGKILL'));
  t.true(fs.existsSync(qmpEventsSocket(handle.runDir)), 'the monitor has a QMP socket of its own');
  const exits: ExitInfo[] = [];
  const unwatch = launcher.watchExit(handle, (info) => exits.push(info));
  t.teardown(unwatch);
  // QEMU lists a socket chardev nobody is connected to as "disconnected:…".
  const chardevs = () => launcher.qmp<Array<{ label: string; filename: string }>>(handle, 'query-chardev');
  const events = qmpEventsSocket(handle.runDir);
  await waitFor('the monitor to connect to its socket', async () => connectedTo(await chardevs(), events), 3000);
  const monitorConnects = connectsTo(events);
  for (let i = 0; i < 3; i++) t.like(await launcher.qmp(handle, 'query-status'), { status: 'running' });
  // QEMU serves one client per socket: a command answered while the monitor is still connected to its own socket
  // did not wait for the monitor to let go. query-chardev shows both connections in one answer.
  const fromLauncher = await chardevs();
  t.true(connectedTo(fromLauncher, handle.qmpSocket) && connectedTo(fromLauncher, events), 'the launcher is served on qmp.sock beside the monitor');
  // What qwdctl does from its own process: a connection of its own to qmp.sock.
  const other = await QmpClient.connect(handle.qmpSocket);
  t.like(await other.execute('query-status'), { status: 'running' });
  const fromOther = await other.execute<Array<{ filename: string }>>('query-chardev');
  other.close();
  t.true(connectedTo(fromOther, handle.qmpSocket) && connectedTo(fromOther, events), 'so is another process');
  t.is(connectsTo(events), monitorConnects, 'the monitor kept its one connection throughout');
  t.is(await launcher.stop(handle), 'quit');
  await waitFor('the watch to report the exit', () => exits.length === 1, 3000);
  t.is(exits[0]!.reason, undefined, 'a quit asked by the host is not a guest shutdown');
  t.deepEqual(pidsMentioning('qwd-aaaaaaaaaaa8'), []);
  await launcher.cleanup(handle, handle.runDir);
});

test('stop right after a watch ends still quits through QMP: QEMU serves the next client', async (t) => {
  const clock = recordingClock();
  const { launcher, spec } = await setupLauncher(t, { qemu: { quitGraceMs: 3000 } }, clock);
  const handle = await launcher.start(spec('aaaaaaaaaa10'));
  t.teardown(() => signalGroup(handle.pid, 'SIGKILL'));
  const unwatch = launcher.watchExit(handle, () => t.fail('the watch ended before the VM did'));
  t.like(await launcher.qmp(handle, 'query-status'), { status: 'running' }); // the monitor is connected
  unwatch(); // what the manager does before it stops a session
  const expiredBefore = clock.expired.length;
  const started = Date.now();
  // 'quit': QEMU greeted the stop's QMP connection (without a greeting it fails at its 2 s timeout and stop sends SIGTERM).
  t.is(await launcher.stop(handle), 'quit');
  t.deepEqual(clock.expired.slice(expiredBefore), [], 'QEMU\'s exit ended the stop: no grace timer ran out');
  t.log(`stop took ${Date.now() - started} ms`);
  await launcher.cleanup(handle, handle.runDir);
});

test('a restarted launcher adopts a VM it did not start: watches it, commands it, stops it through QMP', async (t) => {
  const { launcher, spec, config } = await setupLauncher(t, { qemu: { quitGraceMs: 3000 } });
  const handle = await launcher.start(spec('aaaaaaaaaaa9'));
  t.teardown(() => signalGroup(handle.pid, 'SIGKILL'));
  // A second launcher stands for the broker after a restart: the VM is not its child.
  const adopter = new LocalLauncher({ config, accel: chooseAccelerator(config.qemu.accel, probeHostAccel()), log: silentLogger() });
  t.true(await adopter.isAlive(handle));
  const exits: ExitInfo[] = [];
  const unwatch = adopter.watchExit(handle, (info) => exits.push(info));
  t.teardown(unwatch);
  t.like(await adopter.qmp(handle, 'query-status'), { status: 'running' });
  t.is(await adopter.stop(handle), 'quit');
  await waitFor('the adopter to notice the exit', () => exits.length === 1, 3000);
  t.deepEqual(exits[0], { code: null, signal: null });
  t.is(await adopter.exitReason(handle), null);
  await adopter.cleanup(handle, handle.runDir);
});

test('a VM without the events socket (started by an older broker) is monitored on qmp.sock, and commands share that connection', async (t) => {
  const { launcher, spec, config } = await setupLauncher(t, { qemu: { quitGraceMs: 3000 } });
  const handle = await launcher.start(spec('aaaaaaaaaa11'));
  t.teardown(() => signalGroup(handle.pid, 'SIGKILL'));
  // Unlinked, the socket cannot be reached any more: as if QEMU had never been given it.
  fs.unlinkSync(qmpEventsSocket(handle.runDir));
  const adopter = new LocalLauncher({ config, accel: chooseAccelerator(config.qemu.accel, probeHostAccel()), log: silentLogger() });
  const exits: ExitInfo[] = [];
  const connectsBefore = connectsTo(handle.qmpSocket);
  t.teardown(adopter.watchExit(handle, (info) => exits.push(info)));
  // The monitor connects as the watch begins; a command waits for that connection and runs on it.
  t.true(connectedTo(await adopter.qmp<Array<{ filename: string }>>(handle, 'query-chardev'), handle.qmpSocket));
  // Without sharing, these would wait for a greeting that never comes (3 s, then fail).
  for (let i = 0; i < 3; i++) t.like(await adopter.qmp(handle, 'query-status'), { status: 'running' });
  t.is(connectsTo(handle.qmpSocket) - connectsBefore, 1, 'one connection to qmp.sock, the monitor\'s: the commands opened none');
  t.is(await adopter.stop(handle), 'quit');
  await waitFor('the adopter to notice the exit', () => exits.length === 1, 3000);
  await adopter.cleanup(handle, handle.runDir);
});

test('the monitor\'s QMP socket is one more -qmp option, escaped for QEMU', (t) => {
  t.deepEqual(eventsMonitorArgv('/run/q/s1'), ['-qmp', 'unix:/run/q/s1/qmp-events.sock,server=on,wait=off']);
  t.deepEqual(eventsMonitorArgv('/run/a,b'), ['-qmp', 'unix:/run/a,,b/qmp-events.sock,server=on,wait=off']);
});

test('QMP SHUTDOWN events say why a VM ended only when the guest asked', (t) => {
  const cases: Array<[QmpEvent, RegExp | null]> = [
    [{ event: 'SHUTDOWN', data: { guest: true, reason: 'guest-shutdown' } }, /shut down from inside/],
    [{ event: 'SHUTDOWN', data: { guest: true, reason: 'guest-reset' } }, /restarted from inside/],
    [{ event: 'SHUTDOWN', data: { guest: true, reason: 'guest-panic' } }, /crashed/],
    [{ event: 'SHUTDOWN', data: { guest: true, reason: 'something-new' } }, /shut down from inside/],
    [{ event: 'SHUTDOWN', data: { guest: false, reason: 'host-qmp-quit' } }, null],
    [{ event: 'SHUTDOWN', data: { guest: false, reason: 'host-signal' } }, null],
    [{ event: 'SHUTDOWN' }, null],
    [{ event: 'RESET', data: { guest: true, reason: 'guest-reset' } }, null],
    [{ event: 'STOP' }, null],
  ];
  for (const [event, expected] of cases) {
    const got = guestShutdownReason(event);
    if (expected) t.regex(got ?? '', expected, JSON.stringify(event));
    else t.is(got, null, JSON.stringify(event));
  }
});
