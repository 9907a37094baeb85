// Reading the audit trail (qwdctl audit, through the admin operations):
// filters into one parameterised SELECT. Reads only; the times an
// administrator types are parsed by the command (cli/commands/audit.ts).
import type { Db } from '../store/db.js';
import { QwdError } from '../errors.js';

/** One row of the trail, as qwdctl audit --json prints it. */
export interface AuditEntry {
  id: number;
  /** ISO 8601 UTC. */
  at: string;
  kind: string;
  sessionId: string | null;
  /** Who did it (audit/actor.ts). */
  actor: string | null;
  /** Whose it is: the session's owner, the account logged in or changed. */
  owner: string | null;
  detail: Record<string, unknown> | null;
}

export interface AuditFilter {
  /** Epoch ms, inclusive. */
  since?: number;
  /** Epoch ms, exclusive. */
  until?: number;
  /** Matches the actor or the owner. */
  user?: string;
  sessionId?: string;
  kind?: string;
  /** The newest `limit` rows that match, printed oldest first. */
  limit?: number;
  /** Paging: only rows older than this row (in the trail's order: time, then id). */
  beforeId?: number;
}

export const DEFAULT_LIMIT = 1000;
/**
 * At most this many rows per query: the query runs on the broker's event loop (admin socket), and 10,000 rows take
 * tens of milliseconds there, where a million froze it for seconds. More: page with beforeId (--before-id).
 */
export const MAX_LIMIT = 10_000;

interface RawEvent {
  id: number; at: number; session_id: string | null; kind: string; detail: string | null;
  actor: string | null; owner: string | null;
}

export function queryAudit(db: Db, filter: AuditFilter): AuditEntry[] {
  const where: string[] = [];
  const params: Record<string, unknown> = {};
  if (filter.since !== undefined) { where.push('at >= @since'); params.since = filter.since; }
  if (filter.until !== undefined) { where.push('at < @until'); params.until = filter.until; }
  if (filter.user !== undefined) { where.push('(actor = @user OR owner = @user)'); params.user = filter.user; }
  if (filter.sessionId !== undefined) { where.push('session_id = @sessionId'); params.sessionId = filter.sessionId; }
  if (filter.kind !== undefined) { where.push('kind = @kind'); params.kind = filter.kind; }
  const limit = filter.limit ?? DEFAULT_LIMIT;
  if (!Number.isInteger(limit) || limit < 1 || limit > MAX_LIMIT) {
    const message = `--limit must be a whole number from 1 to ${MAX_LIMIT}, got ${String(limit)}`;
    throw new QwdError('QWD_BAD_REQUEST', message, { userMessage: message });
  }
  params.limit = limit;
  if (filter.beforeId !== undefined) {
    if (!Number.isSafeInteger(filter.beforeId) || filter.beforeId < 1) {
      const message = `--before-id must be a row id (a whole number), got ${String(filter.beforeId)}`;
      throw new QwdError('QWD_BAD_REQUEST', message, { userMessage: message });
    }
    const cursor = db.prepare('SELECT at FROM events WHERE id = ?').get(filter.beforeId) as { at: number } | undefined;
    if (!cursor) {
      const message = `--before-id ${filter.beforeId}: no audit row has this id (deleted by retention?)`;
      throw new QwdError('QWD_BAD_REQUEST', message, { userMessage: message });
    }
    where.push('(at, id) < (@beforeAt, @beforeId)');
    Object.assign(params, { beforeAt: cursor.at, beforeId: filter.beforeId });
  }
  // ORDER BY at, id (not id alone): the events_at index (at, then the rowid = id) gives both the --since range and
  // the order, so a --since query reads only its rows; ORDER BY id made SQLite walk the whole table by rowid.
  const sql = 'SELECT id, at, session_id, kind, detail, actor, owner FROM events' +
    (where.length ? ` WHERE ${where.join(' AND ')}` : '') + ' ORDER BY at DESC, id DESC LIMIT @limit';
  const rows = (db.prepare(sql).all(params) as RawEvent[]).reverse();
  return rows.map(toEntry);
}

export function toEntry(r: RawEvent): AuditEntry {
  let detail: Record<string, unknown> | null = null;
  if (r.detail !== null) {
    try {
      detail = JSON.parse(r.detail) as Record<string, unknown>;
    } catch {
      detail = { text: r.detail }; // not written by this code (rows are JSON): shown as it is
    }
  }
  return {
    id: r.id, at: new Date(r.at).toISOString(), kind: r.kind, sessionId: r.session_id, actor: r.actor, owner: r.owner,
    detail,
  };
}

export type { RawEvent };
