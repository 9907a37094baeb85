// Viewer presence (presence.ts) on a fake clock: a one-shot desktop ends when
// its last viewer has been gone for the grace period, not a millisecond
// before; a reload within it keeps the desktop; one nobody ever watched is
// never ended by it; a broker restart gives the grace period again. And a
// guest whose memory was taken for idleness gets it back when a viewer comes.
import test from 'ava';
import { endReason } from '../../src/store/end-reason.js';
import { REQUEST, endedOnce, fakeSessions } from '../helpers/fake-sessions.js';

const GRACE_S = 30;
const oneShot = { config: { sessions: { oneShotGraceS: GRACE_S } } };

test('a one-shot session ends exactly when its last viewer has been gone for the grace period', async (t) => {
  const { manager, presence, rows, clock, sessionDirs } = fakeSessions(t, oneShot);
  const row = await manager.create({ ...REQUEST, oneShot: true });
  presence.record(row.id, 1);
  presence.record(row.id, 0);
  await clock.advance(GRACE_S * 1000 - 1);
  t.is(rows.byId(row.id)?.state, 'running', 'not a millisecond before');
  const ended = endedOnce(manager);
  await clock.advance(1);
  t.deepEqual(await ended, { id: row.id, end: endReason('one-shot') });
  t.is(rows.byId(row.id), undefined);
  t.deepEqual(sessionDirs(), []);
  t.is(clock.pending, 0, 'no timer is left behind');
});

test('a viewer back within the grace period (a reload) keeps the desktop, and its leaving starts the period again', async (t) => {
  const { manager, presence, rows, clock } = fakeSessions(t, oneShot);
  const row = await manager.create({ ...REQUEST, oneShot: true });
  presence.record(row.id, 1);
  presence.record(row.id, 0);
  await clock.advance(GRACE_S * 1000 - 1);
  presence.record(row.id, 1);
  await clock.advance(10 * GRACE_S * 1000);
  t.is(rows.byId(row.id)?.state, 'running');
  presence.record(row.id, 0);
  await clock.advance(GRACE_S * 1000 - 1);
  t.is(rows.byId(row.id)?.state, 'running');
  const ended = endedOnce(manager);
  await clock.advance(1);
  t.is((await ended).end.code, 'one-shot');
});

test('a one-shot session nobody ever watched is not ended by one-shot, and neither is a normal session', async (t) => {
  const { manager, presence, rows, clock } = fakeSessions(t, oneShot);
  const never = await manager.create({ ...REQUEST, oneShot: true });
  const normal = await manager.create(REQUEST);
  presence.record(never.id, 0);
  presence.record(normal.id, 1);
  presence.record(normal.id, 0);
  await clock.advance(100 * GRACE_S * 1000);
  t.is(rows.byId(never.id)?.state, 'running');
  t.is(rows.byId(normal.id)?.state, 'running');
  t.is(clock.pending, 0);
});

test('after a restart, a one-shot session whose viewer had left gets the grace period again, counted from the restart', async (t) => {
  const sessions = fakeSessions(t, oneShot);
  const row = await sessions.manager.create({ ...REQUEST, oneShot: true });
  sessions.presence.record(row.id, 1);
  sessions.presence.record(row.id, 0);
  await sessions.clock.advance(GRACE_S * 1000 - 1000);
  const second = await sessions.restart();
  t.is(second.rows.byId(row.id)?.state, 'running', 'the VM was adopted');
  t.true(second.rows.byId(row.id)?.hadViewer, 'the store remembers it had a viewer');
  await sessions.clock.advance(GRACE_S * 1000 - 1);
  t.is(second.rows.byId(row.id)?.state, 'running', 'a full grace period from the restart');
  const ended = endedOnce(second.manager);
  await sessions.clock.advance(1);
  t.is((await ended).end.code, 'one-shot');
});

test('after a restart, a viewer back within the grace period keeps the adopted one-shot session', async (t) => {
  const sessions = fakeSessions(t, oneShot);
  const row = await sessions.manager.create({ ...REQUEST, oneShot: true });
  sessions.presence.record(row.id, 1);
  sessions.presence.record(row.id, 0);
  const second = await sessions.restart();
  second.presence.record(row.id, 1);
  await sessions.clock.advance(10 * GRACE_S * 1000);
  t.is(second.rows.byId(row.id)?.state, 'running');
  second.presence.record(row.id, 0);
  const ended = endedOnce(second.manager);
  await sessions.clock.advance(GRACE_S * 1000);
  t.is((await ended).end.code, 'one-shot');
});

test('a viewer coming back to a guest whose memory was reclaimed gives it its memory back', async (t) => {
  const { manager, presence, launcher, rows } = fakeSessions(t);
  const row = await manager.create({ ...REQUEST, memoryMiB: 512 });
  await manager.setBalloon(row.id, 128);
  t.is(rows.byId(row.id)?.balloonTargetMiB, 128);
  presence.record(row.id, 1);
  await new Promise((resolve) => { setImmediate(resolve); });
  t.deepEqual(launcher.qmpSent(row.id).map((c) => c.args), [{ value: 128 * 1048576 }, { value: 512 * 1048576 }]);
  t.is(rows.byId(row.id)?.balloonTargetMiB, null);
  t.is(rows.byId(row.id)?.viewers, 1);
});
