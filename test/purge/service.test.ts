// The purge job (purge/service.ts) on the fake launcher and a fake clock:
// what expires is stopped when it expires and not before; a VM found gone is
// released with the launcher's words; a start its writer abandoned is cleaned
// up; life-time warnings reach a real SMTP server once per point; runs asked
// for together go one after the other.
import test from 'ava';
import { endReason } from '../../src/store/end-reason.js';
import path from 'node:path';
import { REQUEST, fakeSessions } from '../helpers/fake-sessions.js';
import { startSmtpSink } from '../helpers/smtp.js';
import { waitFor } from '../helpers/env.js';
import { stuckAfterMs } from '../../src/purge/service.js';

test('a session is stopped by the purge run after it expires, not by one before', async (t) => {
  const { manager, purge, rows, clock, launcher } = fakeSessions(t);
  const row = await manager.create({ ...REQUEST, lifetimeS: 600 });
  await clock.advance(600_000 - 1);
  t.deepEqual((await purge.run()).actions, []);
  t.is(rows.byId(row.id)?.state, 'running');
  await clock.advance(1);
  const report = await purge.run();
  t.deepEqual(report.actions, [{ id: row.id, action: 'stop', reason: 'expired' }]);
  t.is(rows.byId(row.id), undefined);
  t.is(launcher.stopsRun.get(row.id), 1);
  t.deepEqual(rows.ended(row.tokenHash)?.end, endReason('expired'));
});

test('a dry run says what it would do and does nothing', async (t) => {
  const { manager, purge, rows, clock, launcher } = fakeSessions(t);
  const row = await manager.create({ ...REQUEST, lifetimeS: 60 });
  await clock.advance(60_000);
  const report = await purge.run({ dryRun: true });
  t.true(report.dryRun);
  t.deepEqual(report.actions, [{ id: row.id, action: 'stop', reason: 'expired' }]);
  t.is(rows.byId(row.id)?.state, 'running');
  t.is(launcher.stopsRun.get(row.id), undefined);
});

test('a VM found gone (its exit unnoticed) is released with the launcher\'s own account', async (t) => {
  const { manager, purge, rows, launcher } = fakeSessions(t);
  const row = await manager.create(REQUEST);
  manager.detach(); // nobody watches it: only the purge job can notice
  launcher.exit(row.id, { code: null, signal: null, reason: 'cancelled by the scheduler' });
  t.deepEqual((await purge.run()).actions, [{ id: row.id, action: 'cleanup', reason: 'vm-exited' }]);
  t.is(rows.byId(row.id), undefined);
  t.deepEqual(rows.ended(row.tokenHash)?.end, { code: 'vm-exited', detail: 'cancelled by the scheduler' });
  t.is(launcher.stopsRun.get(row.id), undefined, 'a VM that is gone is not stopped');
});

test('a start its writer abandoned is cleaned up once it is old, and one this process runs is left alone', async (t) => {
  const { manager, purge, rows, clock, config, launcher } = fakeSessions(t, { fake: { starts: ['slow'] } });
  const creating = manager.create(REQUEST);
  const id = await waitFor('the VM to boot', () => rows.all().find((r) => launcher.waiting(r.id))?.id);
  // A second row as a writer that died while starting it leaves it: nobody in this process starts it.
  const abandoned = {
    ...rows.byId(id)!, id: 'abandoned00001', token: 'abandoned-control', tokenHash: 'abandoned-control',
    viewToken: 'abandoned-view', viewTokenHash: 'abandoned-view',
    runDir: path.join(config.runDir, 'abandoned00001'),
  };
  rows.insert(abandoned);
  t.deepEqual((await purge.run()).actions, [], 'a young start may still be running somewhere');
  await clock.advance(stuckAfterMs(config) + 1);
  t.deepEqual((await purge.run()).actions, [{ id: abandoned.id, action: 'cleanup', reason: 'start-abandoned' }]);
  t.is(rows.byId(abandoned.id), undefined);
  t.deepEqual(rows.ended('abandoned-control')?.end, endReason('start-abandoned'));
  t.is(rows.byId(id)?.state, 'starting', 'the start this process runs is not touched');
  launcher.ready(id);
  t.is((await creating).state, 'running');
});

test('life-time warnings reach a real SMTP server once per point, with the page\'s link', async (t) => {
  const smtp = await startSmtpSink(t);
  const mail = { smtpHost: '127.0.0.1', smtpPort: smtp.port, smtpStartTls: false, from: 'desktops@example.org' };
  const config = { sessions: { warnBeforeS: [3600, 60, 30] }, mail };
  const { manager, purge, clock } = fakeSessions(t, { config, mail: true, baseUrl: 'http://desktops.example.org' });
  const row = await manager.create({ ...REQUEST, lifetimeS: 45, email: 'ada@example.org' });
  // 45 s left is past the 3600 and 60 s points: one mail for both.
  t.deepEqual((await purge.run()).warnings, [{ id: row.id, beforeS: 60, remainingS: 45 }]);
  await waitFor('the first mail', () => smtp.mails.length === 1);
  t.deepEqual(smtp.mails[0]!.to, ['ada@example.org']);
  t.regex(smtp.mails[0]!.raw, /Subject: Your desktop blank ends in 1 minute/);
  t.true(smtp.mails[0]!.text.includes(`http://desktops.example.org/s/${row.token}`));
  await purge.run();
  await clock.advance(14_000);
  t.deepEqual((await purge.run()).warnings, [], 'nothing new at 31 s left');
  await clock.advance(1000);
  t.deepEqual((await purge.run()).warnings, [{ id: row.id, beforeS: 30, remainingS: 30 }]);
  await waitFor('the second mail', () => smtp.mails.length === 2);
  await purge.run();
  await purge.run();
  t.is(smtp.mails.length, 2, 'each point is mailed once');
});

test('purge runs asked for together go one after the other, so a warning is mailed once', async (t) => {
  const smtp = await startSmtpSink(t);
  const mail = { smtpHost: '127.0.0.1', smtpPort: smtp.port, smtpStartTls: false, from: 'desktops@example.org' };
  const config = { sessions: { warnBeforeS: [60] }, mail };
  const { manager, purge } = fakeSessions(t, { config, mail: true });
  await manager.create({ ...REQUEST, lifetimeS: 50, email: 'ada@example.org' });
  await Promise.all([purge.run(), purge.run(), purge.run()]);
  t.is(smtp.mails.length, 1);
});
