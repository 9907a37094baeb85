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
}

export const DEFAULT_LIMIT = 1000;
export const MAX_LIMIT = 1_000_000;

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
  const sql = 'SELECT id, at, session_id, kind, detail, actor, owner FROM events' +
    (where.length ? ` WHERE ${where.join(' AND ')}` : '') + ' ORDER BY id DESC LIMIT @limit';
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
