// Local accounts, single-use e-mail login tokens and API tokens. Passwords are
// only ever stored as scrypt hashes; tokens only as SHA-256 hashes.
import type { Db } from './db.js';

export interface LocalUser {
  name: string;
  hash: string;
  email: string | null;
  admin: boolean;
  createdAt: number;
}

export interface ApiToken {
  id: string;
  user: string;
  admin: boolean;
  createdAt: number;
  lastUsedAt: number | null;
}

export class UserStore {
  constructor(readonly db: Db) {}

  get(name: string): LocalUser | undefined {
    const r = this.db.prepare('SELECT name, hash, email, admin, created_at FROM users WHERE name = ?')
      .get(name) as { name: string; hash: string; email: string | null; admin: number; created_at: number } | undefined;
    return r && { name: r.name, hash: r.hash, email: r.email, admin: r.admin === 1, createdAt: r.created_at };
  }

  list(): LocalUser[] {
    return (
      this.db.prepare('SELECT name, hash, email, admin, created_at FROM users ORDER BY name')
        .all() as Array<{ name: string; hash: string; email: string | null; admin: number; created_at: number }>
    ).map((r) => ({ name: r.name, hash: r.hash, email: r.email, admin: r.admin === 1, createdAt: r.created_at }));
  }

  add(user: LocalUser): void {
    this.db.prepare('INSERT INTO users (name, hash, email, admin, created_at) VALUES (?, ?, ?, ?, ?)')
      .run(user.name, user.hash, user.email, user.admin ? 1 : 0, user.createdAt);
  }

  setHash(name: string, hash: string): boolean {
    return this.db.prepare('UPDATE users SET hash = ? WHERE name = ?').run(hash, name).changes === 1;
  }

  setAdmin(name: string, admin: boolean): boolean {
    return this.db.prepare('UPDATE users SET admin = ? WHERE name = ?').run(admin ? 1 : 0, name).changes === 1;
  }

  /**
   * Deletes the account and, in the same transaction, its API tokens (a later
   * account of the same name must not inherit them). Returns how many tokens
   * went with it, or null when there was no such account.
   */
  remove(name: string): { tokens: number } | null {
    return this.db.transaction(() => {
      if (this.db.prepare('DELETE FROM users WHERE name = ?').run(name).changes !== 1) return null;
      return { tokens: this.db.prepare('DELETE FROM api_tokens WHERE user = ?').run(name).changes };
    }).immediate();
  }

  addEmailToken(hash: string, email: string, expiresAt: number): void {
    this.db.prepare('INSERT INTO email_tokens (hash, email, expires_at) VALUES (?, ?, ?)').run(hash, email, expiresAt);
  }

  /** Marks the token used and returns its address, once, if it has not expired. */
  consumeEmailToken(hash: string, now: number): string | null {
    return this.db.transaction(() => {
      const r = this.db.prepare('SELECT email, expires_at, used_at FROM email_tokens WHERE hash = ?')
        .get(hash) as { email: string; expires_at: number; used_at: number | null } | undefined;
      if (!r || r.used_at !== null || r.expires_at < now) return null;
      this.db.prepare('UPDATE email_tokens SET used_at = ? WHERE hash = ?').run(now, hash);
      return r.email;
    }).immediate();
  }

  /** The address of a login link that is still usable, without using it up. */
  peekEmailToken(hash: string, now: number): string | null {
    const r = this.db.prepare('SELECT email, expires_at, used_at FROM email_tokens WHERE hash = ?')
      .get(hash) as { email: string; expires_at: number; used_at: number | null } | undefined;
    return r && r.used_at === null && r.expires_at >= now ? r.email : null;
  }

  pruneEmailTokens(now: number): void {
    this.db.prepare('DELETE FROM email_tokens WHERE expires_at < ?').run(now - 86400000);
  }

  addApiToken(id: string, hash: string, user: string, admin: boolean, now: number): void {
    this.db.prepare('INSERT INTO api_tokens (id, hash, user, admin, created_at) VALUES (?, ?, ?, ?, ?)')
      .run(id, hash, user, admin ? 1 : 0, now);
  }

  apiTokenByHash(hash: string, now: number): ApiToken | undefined {
    const r = this.db.prepare(
      'SELECT id, user, admin, created_at, last_used_at FROM api_tokens WHERE hash = ?'
    ).get(hash) as {
      id: string; user: string; admin: number; created_at: number; last_used_at: number | null;
    } | undefined;
    if (!r) return undefined;
    this.db.prepare('UPDATE api_tokens SET last_used_at = ? WHERE id = ?').run(now, r.id);
    return { id: r.id, user: r.user, admin: r.admin === 1, createdAt: r.created_at, lastUsedAt: now };
  }

  apiTokens(): ApiToken[] {
    return (
      this.db.prepare('SELECT id, user, admin, created_at, last_used_at FROM api_tokens ORDER BY created_at')
        .all() as Array<{ id: string; user: string; admin: number; created_at: number; last_used_at: number | null }>
    ).map(
      (r) => ({ id: r.id, user: r.user, admin: r.admin === 1, createdAt: r.created_at, lastUsedAt: r.last_used_at })
    );
  }

  revokeApiToken(id: string): boolean {
    return this.db.prepare('DELETE FROM api_tokens WHERE id = ?').run(id).changes === 1;
  }
}
