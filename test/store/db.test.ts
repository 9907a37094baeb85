// The SQLite store: WAL mode (the broker writes while qwdctl reads), migrations
// that run once, and session tokens that are long, distinct and URL-safe.
import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { openDb } from '../../src/store/db.js';
import { hashToken, isWellFormedToken, newToken } from '../../src/sessions/tokens.js';
import { tempDir } from '../helpers/env.js';

test('the database is in WAL mode, so a reader in a transaction does not block a writer', (t) => {
  const dir = tempDir(t);
  const writer = openDb(dir);
  t.teardown(() => writer.close());
  t.is(writer.pragma('journal_mode', { simple: true }), 'wal');
  const reader = openDb(dir);
  t.teardown(() => reader.close());
  t.is(reader.pragma('journal_mode', { simple: true }), 'wal');
  writer.prepare('INSERT INTO events (at, kind) VALUES (?, ?)').run(1, 'first');
  const count = reader.prepare('SELECT COUNT(*) AS n FROM events');
  const read = reader.transaction(() => {
    const before = (count.get() as { n: number }).n;
    // In rollback-journal mode this write would fail with SQLITE_BUSY while the reader holds its snapshot.
    writer.prepare('INSERT INTO events (at, kind) VALUES (?, ?)').run(2, 'second');
    return { before, during: (count.get() as { n: number }).n };
  });
  t.deepEqual(read(), { before: 1, during: 1 }, 'the reader keeps its snapshot');
  t.is((count.get() as { n: number }).n, 2, 'and sees the write afterwards');
  t.true(fs.existsSync(path.join(dir, 'qwd.sqlite-wal')));
});

test('opening the store twice runs each migration once and keeps the data', (t) => {
  const dir = tempDir(t);
  const first = openDb(dir);
  const version = (first.prepare('SELECT version FROM schema_version').get() as { version: number }).version;
  first.prepare('INSERT INTO events (at, kind) VALUES (?, ?)').run(1, 'kept');
  first.close();
  const second = openDb(dir);
  t.teardown(() => second.close());
  t.true(version >= 7);
  t.deepEqual(second.prepare('SELECT version FROM schema_version').all(), [{ version }]);
  t.is((second.prepare('SELECT kind FROM events').get() as { kind: string }).kind, 'kept');
});

test('the state dir is created 0700', (t) => {
  const dir = path.join(tempDir(t), 'state');
  openDb(dir).close();
  t.is(fs.statSync(dir).mode & 0o777, 0o700);
});

test('session tokens carry at least 128 random bits, base64url, and never repeat', (t) => {
  const tokens = Array.from({ length: 2000 }, () => newToken());
  t.is(new Set(tokens).size, tokens.length, 'all distinct');
  for (const token of tokens) {
    t.regex(token, /^[A-Za-z0-9_-]+$/, 'base64url, no padding');
    t.true(Buffer.from(token, 'base64url').length * 8 >= 128, `${token} carries >= 128 bits`);
    t.true(isWellFormedToken(token));
  }
  // Bits are spread: each of the 64 base64url characters shows up in the first position.
  t.is(new Set(tokens.map((tok) => tok[0])).size, 64);
  t.regex(hashToken(tokens[0]!), /^[0-9a-f]{64}$/);
  t.not(hashToken(tokens[0]!), hashToken(tokens[1]!));
});

test('malformed tokens are refused before any lookup', (t) => {
  for (const bad of ['', 'short', `${newToken()}x`, `${newToken().slice(0, 42)}=`, `${newToken().slice(0, 42)}/`, '../../etc/passwd', null, 42]) {
    t.false(isWellFormedToken(bad), JSON.stringify(bad));
  }
});
