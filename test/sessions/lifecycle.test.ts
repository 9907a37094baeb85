// The races of a session's life (lifecycle.ts), on the fake launcher and a
// fake clock: a stop while the VM boots, a stop while it queues, an exit while
// a stop runs, a launch that fails while a stop waits for it, a stop found
// abandoned. Each is one scripted interleaving, with no QEMU and no sleep; the
// real launchers meet the same paths against real QEMU and a real Slurm in
// test/http and test/abuse.
import test from 'ava';
import { QwdError } from '../../src/errors.js';
import { endReason } from '../../src/store/end-reason.js';
import type { EndedEvent } from '../../src/sessions/manager.js';
import type { VmHandle } from '../../src/launcher/types.js';
import { waitFor } from '../helpers/env.js';
import { REQUEST, endedOnce, fakeSessions } from '../helpers/fake-sessions.js';
import { stuckAfterMs } from '../../src/purge/service.js';

test('a stop while the VM boots waits for it, stops it once it is up, and the start says it was stopped', async (t) => {
  const { manager, launcher, rows, sessionDirs, audit } = fakeSessions(t, { fake: { starts: ['slow'] } });
  const creating = manager.create(REQUEST);
  const id = await waitFor('the VM to boot', () => rows.all().find((r) => launcher.waiting(r.id))?.id);
  t.is(rows.byId(id)!.state, 'starting');
  t.true(manager.busy(id), 'the purge job leaves a start in progress alone');
  const ended = endedOnce(manager);
  const stopping = manager.stop(id, 'stopped by its user');
  t.is(rows.byId(id)!.state, 'stopping');
  launcher.ready(id);
  await stopping;
  const err = await t.throwsAsync(creating);
  t.true(err instanceof QwdError && err.code === 'QWD_SESSION_ENDED');
  t.deepEqual(await ended, { id, end: { code: 'stopped', detail: 'stopped by its user' } }, 'the stop\'s reason');
  t.is(launcher.stopsRun.get(id), 1, 'the VM that came up was stopped, once');
  t.is(rows.byId(id), undefined);
  t.deepEqual(sessionDirs(), []);
  t.deepEqual(audit(id).map((e) => e.kind), ['created', 'ended']);
  t.false(manager.busy(id));
});

test('a stop while the VM boots, whose start then fails, releases the session once with the stop\'s reason', async (t) => {
  const { manager, launcher, rows, sessionDirs, audit } = fakeSessions(t, { fake: { starts: ['slow'] } });
  const creating = manager.create(REQUEST);
  const id = await waitFor('the VM to boot', () => rows.all().find((r) => launcher.waiting(r.id))?.id);
  const ends: EndedEvent[] = [];
  manager.on('ended', (e: EndedEvent) => ends.push(e));
  const stopping = manager.stop(id, 'stopped by its user');
  launcher.failQueued(id, 'the VM never booted');
  await stopping;
  await t.throwsAsync(creating, { message: /never booted/ });
  t.deepEqual(ends, [{ id, end: { code: 'stopped', detail: 'stopped by its user' } }]);
  t.is(launcher.stopsRun.get(id), undefined, 'nothing came up, nothing to stop');
  t.is(rows.byId(id), undefined);
  t.deepEqual(sessionDirs(), []);
  t.deepEqual(audit(id).map((e) => e.kind), ['created', 'ended']);
});

test('a VM that exits while its stop runs is released once, with the stop\'s reason', async (t) => {
  const { manager, launcher, rows } = fakeSessions(t);
  const row = await manager.create(REQUEST);
  const ends: EndedEvent[] = [];
  manager.on('ended', (e: EndedEvent) => ends.push(e));
  const release = launcher.holdStops();
  const stopping = manager.stop(row.id, 'stopped by its user');
  launcher.exit(row.id, { code: 0, signal: null });
  // The exit as a watch or the purge job would report it, while the stop still runs: it joins the stop.
  const exited = manager.dispatch(row.id, { type: 'exited', reason: endReason('vm-exited') });
  release();
  await Promise.all([stopping, exited]);
  t.deepEqual(ends, [{ id: row.id, end: { code: 'stopped', detail: 'stopped by its user' } }]);
  t.is(rows.byId(row.id), undefined);
});

test('a stop of a queued session whose cancel fails still releases it and reports the failure', async (t) => {
  const { manager, launcher, rows, audit } = fakeSessions(t, {
    fake: { starts: ['queue'], stops: ['fail'], capabilities: { queues: true, ownsCapacity: true } },
  });
  const row = await manager.create(REQUEST);
  t.is(row.state, 'queued');
  await t.throwsAsync(manager.stop(row.id), { message: /survived SIGKILL/ });
  t.is(rows.byId(row.id), undefined);
  t.deepEqual(audit(row.id).map((e) => e.kind), ['created', 'queued', 'stop-failed', 'ended']);
  // The job the scheduler kept starts after all: it is stopped as soon as it is up, and nothing is left.
  launcher.ready(row.id);
  await waitFor('the leftover VM to be stopped', () => launcher.stopsRun.get(row.id) === 2);
  t.false(await launcher.isAlive(row.handle as VmHandle));
});

test('events after the end change nothing: a second stop, a late exit, a late stop request', async (t) => {
  const { manager, launcher, rows, audit } = fakeSessions(t);
  const row = await manager.create(REQUEST);
  await manager.stop(row.id, 'first');
  await manager.stop(row.id, 'second');
  launcher.exit(row.id);
  await manager.dispatch(row.id, { type: 'exited', reason: endReason('vm-exited') });
  t.is(rows.ended(row.tokenHash)?.end.detail, 'first');
  t.deepEqual(audit(row.id).map((e) => e.kind), ['created', 'started', 'ended']);
});

test('a stop its writer abandoned (a row left stopping) is finished by the purge job once it is old', async (t) => {
  const { manager, purge, launcher, rows, clock, config, sessionDirs } = fakeSessions(t);
  const row = await manager.create(REQUEST);
  // What a writer that died in the middle of a stop leaves: the row says stopping, the VM still runs.
  rows.update(row.id, { state: 'stopping' }, clock.now());
  t.deepEqual((await purge.run()).actions, [], 'a young stopping row may be a stop still running');
  await clock.advance(stuckAfterMs(config) + 1);
  const report = await purge.run();
  t.deepEqual(report.actions, [{ id: row.id, action: 'cleanup', reason: 'stop-abandoned' }]);
  t.is(launcher.stopsRun.get(row.id), 1, 'its VM, still alive, was stopped');
  t.deepEqual(rows.ended(row.tokenHash)?.end, endReason('stop-abandoned'));
  t.deepEqual(sessionDirs(), []);
});

test('an unknown event for a state is a programming error, and changes nothing', async (t) => {
  const { manager, rows } = fakeSessions(t);
  const row = await manager.create(REQUEST);
  const err = await t.throwsAsync(manager.dispatch(row.id, { type: 'submitted', handle: row.handle as VmHandle }));
  t.true(err instanceof QwdError && err.code === 'QWD_INTERNAL');
  t.regex(err!.message, /no transition from running on submitted/);
  t.is(rows.byId(row.id)?.state, 'running');
});

test('a stop that comes before the scheduler has queued the job cancels the job as soon as it is queued', async (t) => {
  const { manager, launcher, rows, sessionDirs } = fakeSessions(t, {
    fake: { starts: ['queue'], capabilities: { queues: true, ownsCapacity: true } },
  });
  // The row exists as soon as create() is called; the fake submits its job a moment later.
  const creating = manager.create(REQUEST);
  const id = rows.all()[0]!.id;
  t.is(rows.byId(id)!.state, 'starting');
  await manager.stop(id, 'stopped by its user');
  await t.throwsAsync(creating);
  t.is(launcher.stopsRun.get(id), 1, 'the queued job was cancelled');
  t.is(rows.byId(id), undefined);
  t.deepEqual(sessionDirs(), []);
  t.deepEqual(rows.ended(rows.all()[0]?.tokenHash ?? '')?.end, undefined);
});

test('a row left failed by a writer that died while releasing it is released at the next start, not refused', async (t) => {
  const sessions = fakeSessions(t);
  const row = await sessions.manager.create(REQUEST);
  // What a broker killed after storing "failed" and before its release leaves behind.
  sessions.rows.update(row.id, { state: 'failed' }, sessions.clock.now());
  const second = await sessions.restart();
  t.is(second.rows.byId(row.id), undefined);
  t.is(second.rows.ended(row.tokenHash)?.end.code, 'reconciled');
  t.is(sessions.launcher.stopsRun.get(row.id), 1, 'its VM, still running, was stopped first');
});

test('a stop that meets a release in progress joins it instead of stopping the VM again', async (t) => {
  const { manager, launcher, rows } = fakeSessions(t);
  const row = await manager.create(REQUEST);
  const ends: EndedEvent[] = [];
  manager.on('ended', (e: EndedEvent) => ends.push(e));
  launcher.exit(row.id, { code: 0, signal: null, reason: 'the virtual machine was shut down from inside' });
  await manager.stop(row.id, 'stopped by its user');
  t.deepEqual(ends.map((e) => e.end.code), ['vm-exited']);
  t.is(launcher.stopsRun.get(row.id), undefined);
  t.is(rows.byId(row.id), undefined);
});

test('a release the store refuses once (disk full) leaves the row for the purge job, which finishes it', async (t) => {
  const { manager, purge, rows, clock, config } = fakeSessions(t);
  const row = await manager.create(REQUEST);
  // A store that cannot write cannot be produced on demand: its remove() throws once, as SQLite does on a full disk.
  const remove = rows.remove.bind(rows);
  rows.remove = () => {
    rows.remove = remove;
    throw new Error('SQLITE_FULL: database or disk is full');
  };
  await t.throwsAsync(manager.stop(row.id, 'stopped by its user'), { message: /SQLITE_FULL/ });
  t.is(rows.byId(row.id)?.state, 'stopping', 'the row is still there');
  t.false(manager.busy(row.id), 'nobody holds it: the purge job may finish it');
  await clock.advance(stuckAfterMs(config) + 1);
  t.deepEqual((await purge.run()).actions, [{ id: row.id, action: 'cleanup', reason: 'stop-abandoned' }]);
  t.is(rows.byId(row.id), undefined);
});

test('after a restart: a queued job is waited for again, a VM gone while down and a start nobody runs are released', async (t) => {
  const sessions = fakeSessions(t, {
    fake: { starts: ['queue', 'ready', 'slow'], capabilities: { queues: true, ownsCapacity: true } },
  });
  const queued = await sessions.manager.create(REQUEST);
  const gone = await sessions.manager.create(REQUEST);
  sessions.manager.create(REQUEST).catch(() => {}); // its writer dies while it boots
  const starting = await waitFor('the third start', () => sessions.rows.all().find((r) => r.state === 'starting'));
  sessions.launcher.exit(gone.id, { code: 0, signal: null }); // while no broker watches
  sessions.launcher.failQueued(starting.id); // the VM of the abandoned start never comes either
  const second = await sessions.restart();
  t.is(second.rows.ended(gone.tokenHash)?.end.code, 'ended-while-down');
  t.is(second.rows.ended(starting.tokenHash)?.end.code, 'start-abandoned');
  t.is(second.rows.byId(queued.id)?.state, 'queued', 'the queued job is adopted');
  sessions.launcher.ready(queued.id);
  await waitFor('the adopted job to run', () => second.rows.byId(queued.id)?.state === 'running');
});
