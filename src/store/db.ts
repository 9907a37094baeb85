// The SQLite store (better-sqlite3, WAL) under the state dir, written by one
// process at a time: the broker, or qwdctl when no broker runs (writer-lock.ts).
// Holds session rows, tombstones of ended sessions, web sessions and an audit
// log. Schema migrations are numbered and run once.
import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { QwdError } from '../errors.js';

export type Db = Database.Database;

/** SQL, or a function for a step that must look first (SQLite has no ADD COLUMN IF NOT EXISTS). */
type Migration = string | ((db: Db) => void);

const MIGRATIONS: Migration[] = [
  `CREATE TABLE sessions (
     id TEXT PRIMARY KEY,
     token TEXT NOT NULL UNIQUE,
     token_hash TEXT NOT NULL UNIQUE,
     view_token TEXT NOT NULL UNIQUE,
     view_token_hash TEXT NOT NULL UNIQUE,
     owner TEXT NOT NULL,
     machine TEXT NOT NULL,
     cpus INTEGER NOT NULL,
     memory_mib INTEGER NOT NULL,
     created_at INTEGER NOT NULL,
     expires_at INTEGER NOT NULL,
     state TEXT NOT NULL,
     handle TEXT,
     run_dir TEXT NOT NULL,
     updated_at INTEGER NOT NULL
   );
   CREATE INDEX sessions_owner ON sessions(owner);
   CREATE TABLE ended_sessions (
     token_hash TEXT PRIMARY KEY,
     session_id TEXT NOT NULL,
     ended_at INTEGER NOT NULL,
     reason TEXT NOT NULL
   );
   CREATE TABLE events (
     id INTEGER PRIMARY KEY AUTOINCREMENT,
     at INTEGER NOT NULL,
     session_id TEXT,
     kind TEXT NOT NULL,
     detail TEXT
   );
   CREATE TABLE web_sessions (
     sid TEXT PRIMARY KEY,
     data TEXT NOT NULL,
     expires_at INTEGER NOT NULL
   );`,
  // 2: live viewer counts, written by the broker's bridge, read by qwdctl status.
  `ALTER TABLE sessions ADD COLUMN viewers INTEGER NOT NULL DEFAULT 0;`,
  // 3: one-shot sessions, the owner's e-mail for warnings, the last warning sent.
  `ALTER TABLE sessions ADD COLUMN one_shot INTEGER NOT NULL DEFAULT 0;
   ALTER TABLE sessions ADD COLUMN email TEXT;
   ALTER TABLE sessions ADD COLUMN warned_before_s INTEGER;`,
  // 4: GPUs. One row per claimed GPU unit, keyed by its first display
  // function; which functions are held is in gpu_claim_functions (7).
  `ALTER TABLE sessions ADD COLUMN gpus INTEGER NOT NULL DEFAULT 0;
   CREATE TABLE gpu_claims (
     address TEXT PRIMARY KEY,
     session_id TEXT NOT NULL,
     functions TEXT NOT NULL,
     claimed_at INTEGER NOT NULL
   );
   CREATE INDEX gpu_claims_session ON gpu_claims(session_id);`,
  // 5: balloon bookkeeping: since when nobody watches, and the target set.
  `ALTER TABLE sessions ADD COLUMN idle_since INTEGER;
   ALTER TABLE sessions ADD COLUMN balloon_target_mib INTEGER;`,
  // 6: authentication: local accounts (scrypt hashes), e-mail login tokens and API tokens (SHA-256 only).
  `CREATE TABLE users (
     name TEXT PRIMARY KEY,
     hash TEXT NOT NULL,
     email TEXT,
     admin INTEGER NOT NULL DEFAULT 0,
     created_at INTEGER NOT NULL
   );
   CREATE TABLE email_tokens (
     hash TEXT PRIMARY KEY,
     email TEXT NOT NULL,
     expires_at INTEGER NOT NULL,
     used_at INTEGER
   );
   CREATE TABLE api_tokens (
     id TEXT PRIMARY KEY,
     hash TEXT NOT NULL UNIQUE,
     user TEXT NOT NULL,
     admin INTEGER NOT NULL DEFAULT 0,
     created_at INTEGER NOT NULL,
     last_used_at INTEGER
   );`,
  // 7: GPU claims exclusive per PCI function. Migration 4 keyed a claim by the
  // GPU's address only, so two GPUs of one IOMMU group (or a group listed
  // twice) could be claimed by two sessions. Each claimed function now has its
  // own row whose primary key is the function address: no function is ever
  // held twice. Additive: gpu_claims stays as it is, existing claims are copied
  // (INSERT OR IGNORE: of an old double claim the first holder keeps the
  // function; the other keeps its gpu_claims row until it ends).
  `CREATE TABLE IF NOT EXISTS gpu_claim_functions (
     address TEXT PRIMARY KEY,
     claim_address TEXT NOT NULL,
     session_id TEXT NOT NULL
   );
   CREATE INDEX IF NOT EXISTS gpu_claim_functions_session ON gpu_claim_functions(session_id);
   INSERT OR IGNORE INTO gpu_claim_functions (address, claim_address, session_id)
     SELECT c.address, c.address, c.session_id FROM gpu_claims c ORDER BY c.claimed_at;
   INSERT OR IGNORE INTO gpu_claim_functions (address, claim_address, session_id)
     SELECT f.value, c.address, c.session_id FROM gpu_claims c, json_each(c.functions) f ORDER BY c.claimed_at;`,
  // 8: whether a session has ever had a viewer (one-shot sessions end when the
  // last one leaves), kept across broker restarts. Rows from before are 0: a
  // one-shot session then waits for a viewer again, as it did. Idempotent (a
  // database whose schema_version was set back keeps its column).
  (db) => addColumnOnce(db, 'sessions', 'had_viewer', 'INTEGER NOT NULL DEFAULT 0'),
  // 9: why a session ended, as a typed code next to its words (end-reason.ts). Older tombstones get the code their
  // words were written for (the words each code wrote then); any other words were a stop on request.
  (db) => {
    addColumnOnce(db, 'ended_sessions', 'code', 'TEXT');
    const setCode = db.prepare('UPDATE ended_sessions SET code = ? WHERE code IS NULL AND reason = ?');
    for (const [code, words] of LEGACY_END_WORDS) setCode.run(code, words);
    db.prepare("UPDATE ended_sessions SET code = 'stopped' WHERE code IS NULL").run();
  },
  // 10: the audit trail you can query (src/audit/): who did it (actor) and whose it is (owner: the session's owner,
  // the account logged in or changed), indexes for time (--since, retention) and session, and how far each
  // configured sink (JSON-lines file, syslog) has shipped. No index on actor or owner: the two made every audit write
  // (a viewer joining) ~60% dearer (360 vs 220 µs, measured) for a rarer query (--user scans: 20-45 ms per 200k rows).
  (db) => {
    addColumnOnce(db, 'events', 'actor', 'TEXT');
    addColumnOnce(db, 'events', 'owner', 'TEXT');
    db.exec(`CREATE INDEX IF NOT EXISTS events_at ON events(at);
      CREATE INDEX IF NOT EXISTS events_session ON events(session_id);
      CREATE TABLE IF NOT EXISTS audit_sinks (name TEXT PRIMARY KEY, last_id INTEGER NOT NULL);`);
    // Older rows: the owner of a session that still exists, or the one its 'created' row named.
    db.exec(`UPDATE events SET owner = COALESCE(
        (SELECT s.owner FROM sessions s WHERE s.id = events.session_id),
        (SELECT json_extract(c.detail, '$.owner') FROM events c
          WHERE c.session_id = events.session_id AND c.kind = 'created' AND json_valid(c.detail)))
      WHERE owner IS NULL AND session_id IS NOT NULL`);
  },
];

/** The words tombstones carried before codes were stored, per code (migration 9). */
const LEGACY_END_WORDS: ReadonlyArray<[string, string]> = [
  ['revoked', 'revoked'], ['expired', 'expired'], ['one-shot', 'one-shot desktop: its last viewer left'],
  ['start-abandoned', 'start-abandoned'], ['stop-abandoned', 'stop-abandoned'],
  ['ended-while-down', 'the virtual machine ended while the service was down'],
  ['reconciled', 'reconciled after restart'], ['launch-failed', 'failed to start'],
  ['vm-exited', 'the virtual machine stopped'], ['vm-exited', 'the virtual machine was shut down'],
  ['vm-exited', 'the virtual machine stopped unexpectedly'],
];

export const DB_FILE = 'qwd.sqlite';
/** SQLite's companions of the database file in WAL mode. */
const DB_COMPANIONS = ['-wal', '-shm', '-journal'];

/**
 * Opens the store. The state dir and every parent up to / must be writable by
 * nobody else (assertSafeStateDir), checked before anything is created; the
 * database and its -wal/-shm are 0600 whatever the umask (SQLite gives the
 * companions the database file's mode, and an existing file is set again).
 */
export function openDb(stateDir: string): Db {
  assertSafeStateDir(stateDir);
  fs.mkdirSync(stateDir, { recursive: true, mode: 0o700 });
  const file = path.join(stateDir, DB_FILE);
  // Created (or found) 0600 before SQLite opens it; O_NOFOLLOW: not a symlink planted there.
  fs.closeSync(fs.openSync(file, fs.constants.O_RDWR | fs.constants.O_CREAT | fs.constants.O_NOFOLLOW, 0o600));
  restrictDbFiles(file);
  const db = new Database(file);
  db.pragma('journal_mode = WAL');
  // What better-sqlite3's SQLite build already gives a WAL database (DEFAULT_WAL_SYNCHRONOUS=1), said here so a
  // different build cannot change it. NORMAL in WAL: a crash of the broker loses nothing; a power cut may lose the
  // last commits, but the desktops die with the host then. A viewer's connect or disconnect costs the event loop
  // ≈ 25 µs instead of ≈ 140 µs under FULL (BENCHMARKS.md, npm run bench:store).
  db.pragma('synchronous = NORMAL');
  db.pragma('busy_timeout = 5000');
  db.pragma('foreign_keys = ON');
  migrate(db);
  restrictDbFiles(file);
  return db;
}

function restrictDbFiles(file: string): void {
  for (const name of [file, ...DB_COMPANIONS.map((suffix) => file + suffix)]) {
    try {
      fs.chmodSync(name, 0o600);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err; // a companion SQLite has not made yet
    }
  }
}

/**
 * Refuses a state dir others could write into (as sshd refuses key files on
 * such paths, StrictModes): the state dir must be owned by root or by us and
 * not group/other-writable; each existing parent up to / likewise, except that
 * a sticky-bit directory such as /tmp (1777) is fine as a parent. Symlinks are
 * followed (the real path is what is checked). Throws before creating anything.
 */
export function assertSafeStateDir(stateDir: string): void {
  const uid = process.getuid?.() ?? 0;
  const target = path.resolve(stateDir);
  let dir = target;
  while (!fs.existsSync(dir)) dir = path.dirname(dir); // the part that exists; the rest is created 0700
  const stateDirExists = dir === target;
  const real = fs.realpathSync(dir);
  for (let current = real; ; current = path.dirname(current)) {
    const isStateDir = stateDirExists && current === real;
    const problem = unsafeDirReason(fs.statSync(current), uid, isStateDir);
    if (problem) {
      const what = isStateDir ? 'the state dir' : `a parent of the state dir ${target}`;
      const message = `${current} (${what}) ${problem}; fix it (e.g. chmod go-w ${current}) or choose another stateDir`;
      throw new QwdError('QWD_STATE_DIR_UNSAFE', message, { userMessage: message });
    }
    if (current === path.dirname(current)) return;
  }
}

function unsafeDirReason(st: fs.Stats, uid: number, isStateDir: boolean): string | null {
  if (!st.isDirectory()) return 'is not a directory';
  if (st.uid !== 0 && st.uid !== uid) return `is owned by another user (uid ${st.uid})`;
  const othersWrite = (st.mode & 0o022) !== 0;
  const sticky = (st.mode & 0o1000) !== 0;
  const mode = (st.mode & 0o7777).toString(8).padStart(4, '0');
  if (othersWrite && (isStateDir || !sticky)) return `is writable by others (mode ${mode})`;
  return null;
}

/**
 * Adds a column unless it is there (migrations may meet a database that already has it). Names are this file's
 * constants, never input.
 */
function addColumnOnce(db: Db, table: string, column: string, definition: string): void {
  const columns = db.prepare('SELECT name FROM pragma_table_info(?)').all(table) as Array<{ name: string }>;
  if (columns.some((c) => c.name === column)) return;
  const alter = ['ALTER TABLE', table, 'ADD COLUMN', column, definition].join(' ');
  db.exec(alter);
}

function migrate(db: Db): void {
  db.exec('CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)');
  const row = db.prepare('SELECT version FROM schema_version').get() as { version: number } | undefined;
  let version = row?.version ?? 0;
  if (!row) db.prepare('INSERT INTO schema_version (version) VALUES (0)').run();
  while (version < MIGRATIONS.length) {
    const next = version + 1;
    db.transaction(() => {
      const step = MIGRATIONS[version]!;
      if (typeof step === 'string') db.exec(step);
      else step(db);
      db.prepare('UPDATE schema_version SET version = ?').run(next);
    }).immediate();
    version = next;
  }
}

/**
 * A store write that failed because of the disk (SQLITE_FULL, SQLITE_IOERR*)
 * becomes a clear QWD_STORE_FAILED (the transaction was rolled back, nothing
 * was written); any other error is returned as it is.
 */
export function storeError(err: unknown): unknown {
  const code = (err as { code?: unknown }).code;
  if (typeof code !== 'string' || !/^SQLITE_(FULL|IOERR)/.test(code)) return err;
  return new QwdError('QWD_STORE_FAILED', `state store: ${(err as Error).message} (${code}); nothing was written`, {
    cause: err,
    userMessage: code === 'SQLITE_FULL'
      ? 'The server has no disk space left to record a new desktop; try again later.'
      : 'The server cannot record a new desktop right now; try again later.',
  });
}
