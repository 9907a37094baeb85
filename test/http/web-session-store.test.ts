// The browser-session store (SQLite): a logout is final. A request that read
// its session before another request logged out must not write the row back
// when it ends (express-session touches an unchanged session at the end of
// every request).
import test from 'ava';
import type session from 'express-session';
import { openDb } from '../../src/store/db.js';
import { SqliteWebSessionStore } from '../../src/http/web-session-store.js';
import { tempDir } from '../helpers/env.js';

function loggedIn(expires: number): session.SessionData {
  return { cookie: { expires: new Date(expires), originalMaxAge: 3_600_000 }, user: 'ada' } as unknown as session.SessionData;
}

const call = (fn: (done: (err?: unknown) => void) => void) =>
  new Promise<void>((resolve, reject) => fn((err) => (err ? reject(err as Error) : resolve())));

test('touch moves a live session\'s expiry and leaves its data; after a destroy it writes nothing back', async (t) => {
  const db = openDb(tempDir(t));
  t.teardown(() => db.close());
  const store = new SqliteWebSessionStore(db);
  const soon = Date.now() + 60_000;
  await call((done) => store.set('sid-a', loggedIn(soon), done));
  const later = Date.now() + 3_600_000;
  await call((done) => store.touch('sid-a', { ...loggedIn(later), user: 'changed' } as session.SessionData, done));
  const row = db.prepare('SELECT data, expires_at FROM web_sessions WHERE sid = ?').get('sid-a') as
    { data: string; expires_at: number };
  t.is(row.expires_at, later, 'the expiry moved');
  t.is((JSON.parse(row.data) as { user: string }).user, 'ada', 'the data did not: touch is not a save');

  // A request read sid-a; another logged out (destroy); the first one ends and touches it.
  await call((done) => store.destroy('sid-a', done));
  await call((done) => store.touch('sid-a', loggedIn(later), done));
  t.is(store.count(), 0, 'the logged-out row stays gone');
  t.is(store.read('sid-a'), null);
});
