// A change and its audit row are one write: when the row cannot be written
// (here a real SQLite trigger aborts the INSERT into events, as a full disk or
// a read-only store would make it fail), the change is rolled back with it,
// and when the change is made its row is there. The store, the manager and
// the admin operations are real; the launcher is the fake one
// (src/launcher/fake.ts, see test/helpers/fake-sessions.ts).
import test from 'ava';
import { REQUEST, fakeSessions } from '../helpers/fake-sessions.js';
import { adminOperations } from '../../src/admin/operations.js';
import { UserStore } from '../../src/store/users.js';
import type { Db } from '../../src/store/db.js';

/** Makes every INSERT of an audit row of `kind` fail inside SQLite; returns the undo. */
function failAuditOf(db: Db, kind: string): () => void {
  db.exec(`CREATE TRIGGER fail_audit BEFORE INSERT ON events WHEN NEW.kind = '${kind}'
    BEGIN SELECT RAISE(ABORT, 'simulated write failure'); END`);
  return () => db.exec('DROP TRIGGER fail_audit');
}

const tombstones = (db: Db, id: string) =>
  (db.prepare('SELECT COUNT(*) AS n FROM ended_sessions WHERE session_id = ?').get(id) as { n: number }).n;

test('an end whose audit row cannot be written keeps the session row; ended is still emitted; a retry ends it once', async (t) => {
  const { manager, rows, db, audit } = fakeSessions(t);
  const row = await manager.create(REQUEST);
  const undo = failAuditOf(db, 'ended');
  const emitted: string[] = [];
  manager.on('ended', (e: { id: string }) => emitted.push(e.id));
  await t.throwsAsync(manager.stop(row.id), { any: true, message: /simulated write failure/ });
  t.deepEqual(emitted, [row.id], 'listeners (viewers, presence) are told even when the store failed');
  t.truthy(rows.byId(row.id), 'the row stays for the next stop or the purge job');
  t.is(tombstones(db, row.id), 0, 'no tombstone without its audit row');
  t.false(audit(row.id).some((e) => e.kind === 'ended'));
  undo();
  await manager.stop(row.id);
  t.is(rows.byId(row.id), undefined);
  t.is(tombstones(db, row.id), 2);
  t.deepEqual(audit(row.id).filter((e) => e.kind === 'ended').length, 1);
});

test('a state change whose audit row cannot be written is rolled back; with it, both are there', (t) => {
  const { rows, db, audit } = fakeSessions(t);
  const id = 'sess-atomic';
  rows.insert({
    id, token: 't', tokenHash: 'th', viewToken: 'v', viewTokenHash: 'vh', owner: 'ada', machine: 'blank', cpus: 1,
    memoryMiB: 512, createdAt: 1000, expiresAt: 999_000, state: 'starting', handle: null, runDir: '/nonexistent',
    updatedAt: 1000, viewers: 0, oneShot: false, email: 'ada@example.org', warnedBeforeS: null, gpus: 0,
    idleSince: null, balloonTargetMiB: null, hadViewer: false,
  });
  const changes: Array<[string, () => void, () => unknown, unknown]> = [
    ['started', () => rows.update(id, { state: 'running' }, 2000, { kind: 'started', detail: null, actor: 'system:broker' }),
      () => rows.byId(id)!.state, 'running'],
    ['balloon', () => rows.setBalloonTarget(id, 256, 3000, { kind: 'balloon', detail: { targetMiB: 256 }, actor: 'x' }),
      () => rows.byId(id)!.balloonTargetMiB, 256],
    ['warned', () => rows.setWarned(id, 300, 4000, { kind: 'warned', detail: { beforeS: 300 }, actor: 'system:purge' }),
      () => rows.byId(id)!.warnedBeforeS, 300],
  ];
  for (const [kind, change, read, after] of changes) {
    const before = read();
    const undo = failAuditOf(db, kind);
    t.throws(change, { any: true, message: /simulated write failure/ }, kind);
    t.is(read(), before, `${kind}: the change is rolled back`);
    undo();
    change();
    t.is(read(), after, `${kind}: the change is made`);
    t.is(audit(id).filter((e) => e.kind === kind).length, 1, `${kind}: one row`);
  }
});

test('an account or API-token change whose audit row cannot be written is not made', async (t) => {
  const { rows, db } = fakeSessions(t);
  const users = new UserStore(db);
  const admin = adminOperations({
    rows: () => rows, users: () => users, services: () => Promise.reject(new Error('not needed here')),
  });
  const undo = failAuditOf(db, 'user-added');
  const user = { name: 'eve', hash: 'scrypt$x', email: null, admin: false, createdAt: 1 };
  await t.throwsAsync(admin.addUser(user), { any: true, message: /simulated write failure/ });
  t.false(await admin.hasUser('eve'));
  undo();
  await admin.addUser(user);
  t.true(await admin.hasUser('eve'));
  const undoToken = failAuditOf(db, 'api-token-added');
  const token = { id: 'tok1', hash: 'h', user: 'eve', admin: false, createdAt: 2 };
  await t.throwsAsync(admin.addApiToken(token), { any: true, message: /simulated write failure/ });
  t.deepEqual(await admin.listApiTokens(), []);
  undoToken();
  const undoRemove = failAuditOf(db, 'user-removed');
  await t.throwsAsync(admin.removeUser('eve'), { any: true, message: /simulated write failure/ });
  t.true(await admin.hasUser('eve'), 'the account is still there');
  undoRemove();
  t.truthy(await admin.removeUser('eve'));
  t.false(await admin.hasUser('eve'));
  const kinds = (db.prepare("SELECT kind FROM events WHERE actor = 'cli:qwdctl' ORDER BY id").all() as Array<{ kind: string }>)
    .map((r) => r.kind);
  t.deepEqual(kinds, ['user-added', 'user-removed']);
});
