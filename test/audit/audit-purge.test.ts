// The audit trail and the purge job, on the fake launcher and a fake clock
// (test/helpers/fake-sessions.ts: a real store, manager, presence and purge
// service): who ends a session when nobody asked (expiry, the VM itself, a
// one-shot timer), the 'purged' row, and retention that deletes old rows only,
// in batches that give the event loop back.
import test from 'ava';
import { REQUEST, endedOnce, fakeSessions } from '../helpers/fake-sessions.js';
import { deleteAuditBefore, retentionCutoff, unshippedBefore } from '../../src/audit/retention.js';
import { configuredSinkNames } from '../../src/audit/sinks.js';
import { queryAudit } from '../../src/audit/query.js';
import { adminOperations } from '../../src/admin/operations.js';

const DAY = 86_400_000;

function trail(db: Parameters<typeof queryAudit>[0], sessionId: string) {
  return queryAudit(db, { sessionId }).map((e) => [e.kind, e.actor, e.owner]);
}

test('an expired session is ended by the purge job, and the run leaves a purged row', async (t) => {
  const { manager, purge, db, clock } = fakeSessions(t);
  const row = await manager.create({ ...REQUEST, lifetimeS: 60 }, { actor: 'ada' });
  await clock.advance(60_000);
  await purge.run();
  t.deepEqual(trail(db, row.id), [
    ['created', 'ada', 'ada'], ['started', 'system:broker', 'ada'], ['ended', 'system:purge', 'ada'],
  ]);
  const [purged] = queryAudit(db, { kind: 'purged' });
  t.like(purged, { actor: 'system:purge', sessionId: null });
  t.deepEqual(purged!.detail!.actions, [{ id: row.id, action: 'stop', reason: 'expired' }]);
  // A run through qwdctl says so; a run with nothing to do leaves no row.
  await purge.run({ actor: 'cli:qwdctl' });
  t.is(queryAudit(db, { kind: 'purged' }).length, 1);
});

test('a VM that ends by itself (a power-off inside the guest) is ended by system:vm, with the launcher\'s words',
  async (t) => {
    const { manager, db, launcher } = fakeSessions(t);
    const row = await manager.create(REQUEST, { actor: 'ada' });
    const ended = endedOnce(manager);
    launcher.exit(row.id, { code: 0, signal: null, reason: 'the guest powered off' });
    await ended;
    const last = queryAudit(db, { sessionId: row.id }).at(-1)!;
    t.like(last, { kind: 'ended', actor: 'system:vm', owner: 'ada' });
    t.deepEqual(last.detail, { reason: 'the guest powered off', code: 'vm-exited' });
  });

test('a one-shot session whose viewer left is ended by system:one-shot; viewers come and go in the trail',
  async (t) => {
    const { manager, presence, db, clock, config } = fakeSessions(t);
    const row = await manager.create({ ...REQUEST, oneShot: true }, { actor: 'ada' });
    presence.record(row.id, 1, { change: 'joined', access: 'view', name: null });
    presence.record(row.id, 0, { change: 'left', access: 'view', name: null, why: 'browser closed' });
    const ended = endedOnce(manager);
    await clock.advance(config.sessions.oneShotGraceS * 1000);
    await ended;
    t.deepEqual(trail(db, row.id), [
      ['created', 'ada', 'ada'], ['started', 'system:broker', 'ada'], ['viewer-joined', 'link:view', 'ada'],
      ['viewer-left', 'link:view', 'ada'], ['ended', 'system:one-shot', 'ada'],
    ]);
    t.deepEqual(queryAudit(db, { kind: 'viewer-left' })[0]!.detail, { access: 'view', viewers: 0, why: 'browser closed' });
  });

test('a refusal is audited with who asked, what they asked (no script) and the reason code; nothing else is made',
  async (t) => {
    const { manager, db, rows } = fakeSessions(t, { config: { limits: { maxSessionsPerUser: 1 } } });
    await manager.create(REQUEST, { actor: 'ada' });
    const err = await t.throwsAsync(manager.create(REQUEST, { actor: 'ada' }));
    t.is((err as { code?: string }).code, 'QWD_ADMISSION_LIMIT');
    await t.throwsAsync(manager.create({ machine: '../../etc/passwd\u001b[2J', user: 'ada' }, { actor: 'ada' }));
    await t.throwsAsync(manager.create({ ...REQUEST, script: 'echo secret-script' }, { actor: 'ada' }));
    const refusals = queryAudit(db, { kind: 'refused' });
    t.is(refusals.length, 3);
    t.like(refusals[0], { actor: 'ada', owner: 'ada', sessionId: null });
    t.like(refusals[0]!.detail, { code: 'QWD_ADMISSION_LIMIT', asked: { machine: 'blank', lifetimeS: 600 } });
    t.false(JSON.stringify(refusals).includes('secret-script'), 'the boot script asked for is not kept');
    t.like(refusals[1]!.detail, { code: 'QWD_BAD_REQUEST', asked: { machine: '../../etc/passwd\\u001b[2J' } });
    t.is(rows.all().length, 1, 'no row for a refusal');
  });

test('retention deletes rows older than audit.retentionDays and keeps the rest (fake clock)', async (t) => {
  const { purge, db, rows, clock } = fakeSessions(t, { config: { audit: { retentionDays: 30 } } });
  const now = clock.now();
  for (const ageDays of [400, 31, 30.5, 29, 1, 0]) {
    rows.audit(null, 'login', { result: 'success', ageDays }, now - ageDays * DAY, { actor: 'ada', owner: 'ada' });
  }
  const report = await purge.run();
  t.is(report.auditRowsDeleted, 3);
  const left = queryAudit(db, { kind: 'login' }).map((e) => e.detail!.ageDays);
  t.deepEqual(left, [29, 1, 0]);
  t.deepEqual(queryAudit(db, { kind: 'purged' }), [], 'retention alone writes no purged row (not one a minute)');
  t.is((await purge.run()).auditRowsDeleted, 0);
  t.is(queryAudit(db, {}).length, 3, 'a run that did nothing writes nothing either');
  await clock.advance(31 * DAY);
  t.is((await purge.run()).auditRowsDeleted, 3);
  t.deepEqual(queryAudit(db, {}), []);
});

test('rows past retention that a configured sink has not got yet are counted per sink (logged before the delete)', (t) => {
  const { db, rows, clock } = fakeSessions(t);
  const now = clock.now();
  for (let i = 0; i < 10; i++) rows.audit(null, 'login', { i }, now - (40 - i) * DAY, { actor: 'ada' }); // ids 1-10
  const names = configuredSinkNames({
    retentionDays: 30, jsonFile: '/var/log/qwd/audit.jsonl',
    syslog: { host: 'logs.example.org', port: 514, facility: 'authpriv', appName: 'qemu-web-desktop' },
  } as Parameters<typeof configuredSinkNames>[0]);
  t.deepEqual(names, ['jsonFile:/var/log/qwd/audit.jsonl', 'syslog:logs.example.org:514']);
  const mark = db.prepare('INSERT INTO audit_sinks (name, last_id) VALUES (?, ?)');
  mark.run(names[0], 10); // got everything
  mark.run(names[1], 3); // failing since row 3
  // The cutoff (30 days) takes rows 1-10 (40..31 days old): the syslog sink never got 4-10.
  t.deepEqual(unshippedBefore(db, now - 30 * DAY, names), [{ sink: names[1], rows: 7 }]);
  t.deepEqual(unshippedBefore(db, now - 35 * DAY, names), [{ sink: names[1], rows: 2 }]);
  t.deepEqual(unshippedBefore(db, now - 30 * DAY, ['jsonFile:/never/started']), [], 'a sink with no mark yet');
});

test('retentionDays 0 keeps every row', async (t) => {
  const { purge, db, rows, clock } = fakeSessions(t, { config: { audit: { retentionDays: 0 } } });
  rows.audit(null, 'login', null, clock.now() - 10_000 * DAY, { actor: 'ada' });
  t.is(retentionCutoff(0, clock.now()), null);
  t.is((await purge.run()).auditRowsDeleted, 0);
  t.is(queryAudit(db, {}).length, 1);
});

test('a big delete goes in batches and gives the event loop back between them', async (t) => {
  const { db, rows } = fakeSessions(t);
  const insert = db.transaction(() => {
    for (let i = 0; i < 20_000; i++) rows.audit(null, 'login', { i }, 1000 + i, { actor: 'ada' });
    for (let i = 0; i < 5; i++) rows.audit(null, 'login', { i }, 10_000_000 + i, { actor: 'ada' });
  });
  insert();
  let turns = 0;
  let running = true;
  const spin = () => {
    if (!running) return;
    turns++;
    setImmediate(spin);
  };
  setImmediate(spin);
  const started = process.hrtime.bigint();
  const deleted = await deleteAuditBefore(db, 5_000_000, 1000);
  const ms = Number(process.hrtime.bigint() - started) / 1e6;
  running = false;
  t.is(deleted, 20_000);
  t.true(turns >= 19, `the event loop turned ${turns} times during 20 batches`);
  t.is(queryAudit(db, {}).length, 5);
  t.log(`20000 rows deleted in ${ms.toFixed(1)} ms, ${turns} event-loop turns in between`);
});

test('the admin operation refuses a filter of the wrong type (what the socket may be sent) with a usage error',
  async (t) => {
    const { rows } = fakeSessions(t);
    const admin = adminOperations({
      rows: () => rows, users: () => { throw new Error('not used'); }, services: () => { throw new Error('not used'); },
    });
    rows.audit(null, 'login', null, 1, { actor: 'ada' });
    t.is((await admin.audit({ user: 'ada' })).length, 1);
    for (const bad of [{ since: '2h' }, { user: 7 }, { limit: 0 }, { kind: 'x'.repeat(300) }]) {
      const err = await t.throwsAsync(admin.audit(bad as never));
      t.is((err as { code?: string }).code, 'QWD_BAD_REQUEST', JSON.stringify(bad));
    }
  });

test('qwdctl stop\'s reason is bounded (500) and escaped in the ended row and the tombstone', async (t) => {
  const { manager, rows, db } = fakeSessions(t);
  const admin = adminOperations({
    rows: () => rows, users: () => { throw new Error('not used'); },
    services: async () => ({ manager }) as unknown as Awaited<ReturnType<Parameters<typeof adminOperations>[0]['services']>>,
  });
  const row = await manager.create(REQUEST);
  await admin.stopSession(row.id, 'maintenance \u001b[2J' + 'x'.repeat(2000));
  const [ended] = queryAudit(db, { sessionId: row.id, kind: 'ended' });
  const reason = ended!.detail!.reason as string;
  t.true(reason.startsWith('maintenance \\u001b[2J'), reason.slice(0, 40));
  t.true(reason.length <= 520, `${reason.length} characters`);
  t.is(rows.ended(row.tokenHash)!.end.detail, reason);
});
