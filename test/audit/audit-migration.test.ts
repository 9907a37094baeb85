// Migration 10 on a store written before it: the events table gains actor and
// owner, each older row gets the owner of its session (from the live session
// row, else from the session's 'created' row), and running it again changes
// nothing (a store whose schema_version was set back keeps its columns).
import test from 'ava';
import path from 'node:path';
import Database from 'better-sqlite3';
import { makeSetup } from '../helpers/env.js';
import { openDb, DB_FILE } from '../../src/store/db.js';
import { queryAudit } from '../../src/audit/query.js';

test('an older store: actor and owner are added, owners filled in from the sessions; twice is harmless', (t) => {
  const { stateDir } = makeSetup(t);
  openDb(stateDir).close();
  // The store as version 9 left it: events without actor and owner, no audit_sinks.
  const old = new Database(path.join(stateDir, DB_FILE));
  old.exec(`ALTER TABLE events DROP COLUMN actor; ALTER TABLE events DROP COLUMN owner; DROP TABLE audit_sinks;
    UPDATE schema_version SET version = 9;`);
  old.prepare(`INSERT INTO sessions (id, token, token_hash, view_token, view_token_hash, owner, machine, cpus, memory_mib,
    created_at, expires_at, state, run_dir, updated_at) VALUES ('live', 't', 'th', 'v', 'vh', 'ada', 'blank', 1, 128,
    1, 2, 'running', '/x', 1)`).run();
  const event = old.prepare('INSERT INTO events (at, session_id, kind, detail) VALUES (?, ?, ?, ?)');
  event.run(1000, 'live', 'extended', '{"byS":60}');
  event.run(1001, 'gone', 'created', '{"owner":"bea","machine":"blank"}');
  event.run(1002, 'gone', 'ended', '{"reason":"expired","code":"expired"}');
  event.run(1003, null, 'warned', null);
  event.run(1004, 'unknown', 'ended', 'not json');
  old.close();

  const db = openDb(stateDir);
  t.teardown(() => db.close());
  t.deepEqual(queryAudit(db, {}).map((e) => [e.kind, e.sessionId, e.actor, e.owner]), [
    ['extended', 'live', null, 'ada'],
    ['created', 'gone', null, 'bea'],
    ['ended', 'gone', null, 'bea'],
    ['warned', null, null, null],
    ['ended', 'unknown', null, null],
  ]);
  t.deepEqual(queryAudit(db, { kind: 'ended' })[1]!.detail, { text: 'not json' }, 'a row that is not JSON is shown as text');
  t.is((db.prepare('SELECT version FROM schema_version').get() as { version: number }).version, 10);
  db.prepare('UPDATE schema_version SET version = 9').run();
  db.close();
  const again = openDb(stateDir);
  t.is(queryAudit(again, { user: 'bea' }).length, 2);
  again.close();
});
