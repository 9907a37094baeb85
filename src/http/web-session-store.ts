// express-session store in the SQLite state database, so browser sessions
// survive a broker restart. Expired rows are removed by prune().
import session from 'express-session';
import type { Db } from '../store/db.js';

const DAY_MS = 86400000;

export class SqliteWebSessionStore extends session.Store {
  constructor(private readonly db: Db) {
    super();
  }

  override get(sid: string, callback: (err: unknown, session?: session.SessionData | null) => void): void {
    try {
      callback(null, this.read(sid));
    } catch (err) {
      callback(err);
    }
  }

  /** A live browser session's data, or null (synchronous: for the WebSocket upgrade check). */
  read(sid: string): session.SessionData | null {
    const row = this.db.prepare('SELECT data, expires_at FROM web_sessions WHERE sid = ?').get(sid) as
      { data: string; expires_at: number } | undefined;
    if (!row || row.expires_at < Date.now()) return null;
    return JSON.parse(row.data) as session.SessionData;
  }

  /** How many browser sessions are stored (anonymous visitors must not add any). */
  count(): number {
    return (this.db.prepare('SELECT count(*) AS n FROM web_sessions').get() as { n: number }).n;
  }

  override set(sid: string, data: session.SessionData, callback?: (err?: unknown) => void): void {
    try {
      const expires = expiresAt(data);
      this.db.prepare('INSERT INTO web_sessions (sid, data, expires_at) VALUES (?, ?, ?) '
        + 'ON CONFLICT(sid) DO UPDATE SET data = excluded.data, expires_at = excluded.expires_at')
        .run(sid, JSON.stringify(data), expires);
      callback?.();
    } catch (err) {
      callback?.(err);
    }
  }

  override destroy(sid: string, callback?: (err?: unknown) => void): void {
    try {
      this.db.prepare('DELETE FROM web_sessions WHERE sid = ?').run(sid);
      callback?.();
    } catch (err) {
      callback?.(err);
    }
  }

  /**
   * Moves an unchanged session's expiry. Only where its row still exists: a request that read the session before a
   * logout (in another request) destroyed it must not write the logged-in row back when it ends.
   */
  override touch(sid: string, data: session.SessionData, callback?: (err?: unknown) => void): void {
    try {
      const expires = expiresAt(data);
      this.db.prepare('UPDATE web_sessions SET expires_at = ? WHERE sid = ?').run(expires, sid);
      callback?.();
    } catch (err) {
      callback?.(err);
    }
  }

  prune(now = Date.now()): number {
    return this.db.prepare('DELETE FROM web_sessions WHERE expires_at < ?').run(now).changes;
  }
}

/** When a session's row expires: its cookie's expiry, or a day from now for a cookie without one. */
function expiresAt(data: session.SessionData): number {
  return data.cookie?.expires ? new Date(data.cookie.expires).getTime() : Date.now() + DAY_MS;
}
