// The session manager's lifecycle on the fake launcher (src/launcher/fake.ts):
// starts that fail, VMs that exit on their own, starts that queue, stops that
// come twice or fail — each scripted, with no QEMU and no Slurm. The store,
// the manager and the session dirs are real; only the launcher is a fake, and
// the real launchers' own behaviour stays tested against real QEMU and a real
// Slurm (test/launcher, test/http/slurm.test.ts).
import test, { type ExecutionContext } from 'ava';
import type { FakeLauncherOptions } from '../../src/launcher/fake.js';
import { QwdError } from '../../src/errors.js';
import { waitFor } from '../helpers/env.js';
import { REQUEST, endedOnce, fakeSessions } from '../helpers/fake-sessions.js';

function managerOn(t: ExecutionContext, fake: Omit<FakeLauncherOptions, 'runRoot'> = {}) {
  return fakeSessions(t, { fake });
}

test('a start that fails leaves no session and no session dir, and says why it ended', async (t) => {
  const { manager, rows, sessionDirs } = managerOn(t, { starts: ['fail'] });
  const ended = endedOnce(manager);
  const err = await t.throwsAsync(manager.create(REQUEST));
  t.true(err instanceof QwdError && err.code === 'QWD_LAUNCH_FAILED');
  t.deepEqual((await ended).end, { code: 'launch-failed', detail: 'failed to start: The desktop could not start.' });
  t.deepEqual(rows.all(), []);
  t.deepEqual(sessionDirs(), []);
});

test('a VM that exits on its own ends its session with the launcher\'s reason and releases its session dir', async (t) => {
  const { manager, launcher, rows, sessionDirs, audit } = managerOn(t);
  const row = await manager.create(REQUEST);
  t.is(row.state, 'running');
  t.deepEqual(sessionDirs(), [row.id]);
  const ended = endedOnce(manager);
  launcher.exit(row.id, { code: null, signal: null, reason: 'the virtual machine was shut down from inside' });
  t.deepEqual(await ended, { id: row.id, end: { code: 'vm-exited', detail: 'the virtual machine was shut down from inside' } });
  t.is(rows.byId(row.id), undefined);
  t.deepEqual(sessionDirs(), []);
  t.deepEqual(audit(row.id).map((e) => e.kind), ['created', 'started', 'ended']);
  t.is(launcher.stopsRun.get(row.id), undefined, 'a VM that is gone is not stopped again');
});

test('a queued start answers at once, shows where it waits, and runs when the scheduler starts it', async (t) => {
  const { manager, launcher, rows } = managerOn(t, {
    starts: ['queue'], capabilities: { queues: true, ownsCapacity: true, onBrokerHost: false, guestControl: false },
  });
  const row = await manager.create(REQUEST);
  t.is(row.state, 'queued');
  t.deepEqual(await manager.queueInfo(row.id), {
    state: 'waiting', reason: 'Resources', position: 1, node: null, native: { state: 'PENDING' },
  });
  launcher.ready(row.id);
  await waitFor('the session to run', () => rows.byId(row.id)?.state === 'running');
  t.is(await manager.queueInfo(row.id), null, 'a running session is no longer queued');
});

test('stopping a queued session cancels it and releases everything', async (t) => {
  const { manager, launcher, rows, sessionDirs } = managerOn(t, {
    starts: ['queue'], capabilities: { queues: true, ownsCapacity: true },
  });
  const row = await manager.create(REQUEST);
  await manager.stop(row.id, 'stopped by its owner');
  t.is(rows.byId(row.id), undefined);
  t.deepEqual(sessionDirs(), []);
  t.is(launcher.stopsRun.get(row.id), 1);
});

test('stopping a session twice while it stops runs one stop of its VM, and both callers wait for it', async (t) => {
  const { manager, launcher, rows } = managerOn(t);
  const row = await manager.create(REQUEST);
  const release = launcher.holdStops();
  const first = manager.stop(row.id, 'first');
  const second = manager.stop(row.id, 'second');
  // The launcher's own de-duplication (shared by every launcher): a direct second stop joins the first.
  const direct = launcher.stop(rows.byId(row.id)!.handle as { kind: string });
  t.is(rows.byId(row.id)?.state, 'stopping');
  release();
  await Promise.all([first, second]);
  t.is(await direct, 'quit');
  t.is(launcher.stopsRun.get(row.id), 1);
  t.is(rows.byId(row.id), undefined);
});

test('a stop that fails still releases the session, and the failure reaches the caller and the audit log', async (t) => {
  const { manager, launcher, rows, sessionDirs, audit } = managerOn(t, { stops: ['fail'] });
  const row = await manager.create(REQUEST);
  const err = await t.throwsAsync(manager.stop(row.id));
  t.regex(err!.message, /survived SIGKILL/);
  t.is(rows.byId(row.id), undefined);
  t.deepEqual(sessionDirs(), []);
  t.deepEqual(audit(row.id).map((e) => e.kind), ['created', 'started', 'stop-failed', 'ended']);
  t.true(await launcher.isAlive(row.handle as { kind: string }), 'the VM survived: the audit line is how it is found');
});

test('the balloon goes through the launcher\'s QMP, and a launcher without guest control is refused in words', async (t) => {
  const local = managerOn(t);
  const row = await local.manager.create(REQUEST);
  await local.manager.setBalloon(row.id, 64);
  t.deepEqual(local.launcher.qmpSent(row.id).map((c) => c.command), ['balloon']);

  const remote = managerOn(t, { capabilities: { onBrokerHost: false, guestControl: false } });
  t.is(remote.launcher.qmp, undefined, 'no guest control, no qmp()');
  const other = await remote.manager.create(REQUEST);
  const err = await t.throwsAsync(remote.manager.setBalloon(other.id, 64));
  t.true(err instanceof QwdError);
  t.is((err as QwdError).userMessage, 'This desktop runs on a cluster node; its memory (balloon) cannot be managed from here.');
});
