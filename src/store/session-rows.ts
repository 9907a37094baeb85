// Row access for sessions and their tombstones. Plain data in and out; the
// writers are called by the session services (sessions/: manager, lifecycle,
// presence) and the purge job (purge/service.ts), never by routes or the CLI.
import type Database from 'better-sqlite3';
import type { Db } from './db.js';
import { AdmissionError } from '../errors.js';
import { endReason, storedEnd, type EndReason } from './end-reason.js';

/** queued: handed to a scheduler (Slurm) that has not started it yet. */
export type SessionState = 'starting' | 'queued' | 'running' | 'stopping' | 'stopped' | 'failed';

export interface SessionRow {
  id: string;
  token: string;
  tokenHash: string;
  viewToken: string;
  viewTokenHash: string;
  owner: string;
  machine: string;
  cpus: number;
  memoryMiB: number;
  createdAt: number;
  expiresAt: number;
  state: SessionState;
  /** The launcher's handle (JSON), null while starting. */
  handle: unknown;
  runDir: string;
  updatedAt: number;
  /** Viewers connected through the broker's bridge right now. */
  viewers: number;
  /** Ends when its last viewer leaves. */
  oneShot: boolean;
  /** Where life-time warnings are mailed, if anywhere. */
  email: string | null;
  /** The smallest "seconds before the end" warning already sent, or null. */
  warnedBeforeS: number | null;
  /** Number of GPUs asked for (their claims are in gpu_claims). */
  gpus: number;
  /** Since when no viewer is connected (null while someone is). */
  idleSince: number | null;
  /** The balloon target last set (MiB), null = never set (full memory). */
  balloonTargetMiB: number | null;
  /** A viewer has been connected at some point (set by setViewers; survives restarts). */
  hadViewer: boolean;
}

/** A claimed GPU unit (its functions are each held in gpu_claim_functions). */
export interface GpuClaim {
  /** The unit's first display function. */
  address: string;
  sessionId: string;
  /** PCI addresses passed to the VM (the GPU and its IOMMU group mates). */
  functions: string[];
  claimedAt: number;
}

export type LinkKind = 'control' | 'view';

/** An audit row to write along with another change. */
export interface AuditLine {
  kind: string;
  detail: Record<string, unknown> | null;
  actor: string | null;
  /** Whose it is, when the caller has it at hand; else read from the session's row in the same statement. */
  owner?: string | null;
}

export interface EndedRow {
  sessionId: string;
  endedAt: number;
  end: EndReason;
}

interface RawRow {
  id: string; token: string; token_hash: string; view_token: string; view_token_hash: string;
  owner: string; machine: string; cpus: number; memory_mib: number; created_at: number;
  expires_at: number; state: SessionState; handle: string | null; run_dir: string; updated_at: number; viewers: number;
  one_shot: number; email: string | null; warned_before_s: number | null; gpus: number; idle_since: number | null;
  balloon_target_mib: number | null; had_viewer: number;
}

function fromRaw(r: RawRow): SessionRow {
  return {
    id: r.id, token: r.token, tokenHash: r.token_hash, viewToken: r.view_token, viewTokenHash: r.view_token_hash,
    owner: r.owner, machine: r.machine, cpus: r.cpus, memoryMiB: r.memory_mib, createdAt: r.created_at,
    expiresAt: r.expires_at, state: r.state, handle: r.handle ? JSON.parse(r.handle) : null, runDir: r.run_dir,
    updatedAt: r.updated_at, viewers: r.viewers,
    oneShot: r.one_shot === 1, email: r.email, warnedBeforeS: r.warned_before_s, gpus: r.gpus,
    idleSince: r.idle_since, balloonTargetMiB: r.balloon_target_mib, hadViewer: r.had_viewer === 1,
  };
}

export class SessionRows {
  constructor(readonly db: Db) {}

  insert(row: SessionRow): void {
    this.db.prepare(
      'INSERT INTO sessions (id, token, token_hash, view_token, view_token_hash, owner, machine, cpus, memory_mib, ' +
        'created_at, expires_at, state, handle, run_dir, updated_at, one_shot, email, gpus, idle_since)\n' +
        '       VALUES (@id, @token, @tokenHash, @viewToken, @viewTokenHash, @owner, @machine, @cpus, @memoryMiB, ' +
        '@createdAt, @expiresAt, @state, @handle, @runDir, @updatedAt, @oneShot, @email, @gpus, @createdAt)',
    ).run({ ...row, handle: row.handle === null ? null : JSON.stringify(row.handle), oneShot: row.oneShot ? 1 : 0 });
  }

  byId(id: string): SessionRow | undefined {
    // Prepared once: read at every viewer change and every lifecycle step.
    this.byIdStatement ??= this.db.prepare('SELECT * FROM sessions WHERE id = ?');
    const r = this.byIdStatement.get(id) as RawRow | undefined;
    return r && fromRaw(r);
  }

  byTokenHash(hash: string): { row: SessionRow; kind: LinkKind } | undefined {
    const r = this.db.prepare('SELECT * FROM sessions WHERE token_hash = ? OR view_token_hash = ?')
      .get(hash, hash) as RawRow | undefined;
    return r && { row: fromRaw(r), kind: r.token_hash === hash ? 'control' : 'view' };
  }

  /** Replaces a link's token; the old one is tombstoned as revoked. */
  rotateToken(row: SessionRow, kind: LinkKind, token: string, tokenHash: string, now: number): void {
    this.db.transaction(() => {
      const oldHash = kind === 'control' ? row.tokenHash : row.viewTokenHash;
      if (kind === 'control') {
        this.db.prepare('UPDATE sessions SET token = ?, token_hash = ?, updated_at = ? WHERE id = ?')
          .run(token, tokenHash, now, row.id);
      }
      else this.db.prepare('UPDATE sessions SET view_token = ?, view_token_hash = ?, updated_at = ? WHERE id = ?')
        .run(token, tokenHash, now, row.id);
      this.db.prepare(
        'INSERT OR REPLACE INTO ended_sessions (token_hash, session_id, ended_at, code, reason) VALUES (?, ?, ?, ?, ?)'
      ).run(oldHash, row.id, now, 'revoked', endReason('revoked').detail);
    })();
  }

  /** Records the warning sent, and (when given) its audit row in the same transaction. */
  setWarned(id: string, beforeS: number, now: number, audit?: AuditLine): void {
    this.withAudit(id, now, audit, () => {
      this.db.prepare('UPDATE sessions SET warned_before_s = ? WHERE id = ?').run(beforeS, id);
    });
  }

  all(): SessionRow[] {
    return (this.db.prepare('SELECT * FROM sessions ORDER BY created_at').all() as RawRow[]).map(fromRaw);
  }

  byOwner(owner: string): SessionRow[] {
    return (this.db.prepare('SELECT * FROM sessions WHERE owner = ? ORDER BY created_at').all(owner) as RawRow[])
      .map(fromRaw);
  }

  /** Changes the row, and (when given) writes its audit row in the same transaction: both or neither. */
  update(
    id: string, changes: Partial<Pick<SessionRow, 'state' | 'handle' | 'expiresAt'>>, now: number, audit?: AuditLine,
  ): void {
    const sets: string[] = ['updated_at = @now'];
    const params: Record<string, unknown> = { id, now };
    if (changes.state !== undefined) { sets.push('state = @state'); params.state = changes.state; }
    if (changes.handle !== undefined) {
      sets.push('handle = @handle'); params.handle = changes.handle === null ? null : JSON.stringify(changes.handle);
    }
    if (changes.expiresAt !== undefined) {
      sets.push('expires_at = @expiresAt', 'warned_before_s = NULL'); params.expiresAt = changes.expiresAt;
    }
    this.withAudit(id, now, audit, () => {
      this.db.prepare(`UPDATE sessions SET ${sets.join(', ')} WHERE id = @id`).run(params);
    });
  }

  /** The count, and (when given) the viewer's audit row in the same transaction: one write, not two. */
  setViewers(id: string, viewers: number, now: number, audit?: AuditLine): void {
    // idle_since: kept while nobody watches, set when the last viewer leaves, cleared when one comes.
    // had_viewer: set by the first viewer, never cleared (a one-shot session's "first viewer has been").
    const statement = this.viewersStatement ??= this.db.prepare(
      'UPDATE sessions SET viewers = @viewers, idle_since = CASE WHEN @viewers > 0 THEN NULL ELSE ' +
        'COALESCE(idle_since, @now) END, had_viewer = CASE WHEN @viewers > 0 THEN 1 ELSE had_viewer END ' +
        'WHERE id = @id'
    );
    if (!audit) {
      statement.run({ viewers, now, id });
      return;
    }
    this.viewersAndAudit ??= this.db.transaction((i: string, v: number, n: number, a: AuditLine) => {
      statement.run({ viewers: v, now: n, id: i });
      this.audit(i, a.kind, a.detail, n, { actor: a.actor, owner: a.owner });
    });
    this.viewersAndAudit(id, viewers, now, audit);
  }

  /** The balloon target, and (when given) its audit row in the same transaction. */
  setBalloonTarget(id: string, targetMiB: number | null, now: number, audit?: AuditLine): void {
    this.withAudit(id, now, audit, () => {
      this.db.prepare('UPDATE sessions SET balloon_target_mib = ? WHERE id = ?').run(targetMiB, id);
    });
  }

  /** After a broker restart nobody is connected: the counts start again from zero. */
  resetViewers(): void {
    this.db.prepare('UPDATE sessions SET viewers = 0, idle_since = COALESCE(idle_since, ?) WHERE viewers != 0')
      .run(Date.now());
  }

  /**
   * Claims a GPU unit for a session: one gpu_claims row, and one row per PCI
   * function whose primary key makes the function exclusive. If any function
   * is already held nothing is claimed (one transaction) and the request is
   * refused as "no GPU free"; admission checks claimedGpuFunctions() first,
   * so this is the safety net, not the usual path.
   */
  claimGpu(address: string, sessionId: string, functions: string[], now: number): void {
    const all = [...new Set([address, ...functions])];
    this.db.transaction(() => {
      const holders = this.db.prepare(
        `SELECT address, session_id FROM gpu_claim_functions WHERE address IN (${all.map(() => '?').join(', ')})
        UNION SELECT address, session_id FROM gpu_claims WHERE address = ?`,
      ).all(...all, address) as Array<{ address: string; session_id: string }>;
      if (holders.length) {
        const message = 'No GPU is free right now. Start the desktop without a GPU, or try again later.';
        throw new AdmissionError('QWD_ADMISSION_CAPACITY', message, {
          limit: 'gpu', conflict: holders.map((h) => `${h.address} is held by session ${h.session_id}`).join(', '),
        });
      }
      this.db.prepare('INSERT INTO gpu_claims (address, session_id, functions, claimed_at) VALUES (?, ?, ?, ?)')
        .run(address, sessionId, JSON.stringify(functions), now);
      const fn = this.db.prepare(
        'INSERT INTO gpu_claim_functions (address, claim_address, session_id) VALUES (?, ?, ?)'
      );
      for (const f of all) fn.run(f, address, sessionId);
    })();
  }

  gpuClaims(): GpuClaim[] {
    return (
      this.db.prepare('SELECT address, session_id, functions, claimed_at FROM gpu_claims ORDER BY address')
        .all() as Array<{ address: string; session_id: string; functions: string; claimed_at: number }>
    ).map(
      (r) => ({
        address: r.address, sessionId: r.session_id, functions: JSON.parse(r.functions), claimedAt: r.claimed_at,
      })
    );
  }

  /** Every claimed PCI function → the session holding it. */
  claimedGpuFunctions(): Map<string, string> {
    const rows = this.db.prepare('SELECT address, session_id FROM gpu_claim_functions')
      .all() as Array<{ address: string; session_id: string }>;
    return new Map(rows.map((r) => [r.address, r.session_id]));
  }

  /** Claims whose session row is gone (a crash between steps): released. */
  releaseOrphanGpuClaims(): number {
    return this.db.transaction(() => {
      this.db.prepare('DELETE FROM gpu_claim_functions WHERE session_id NOT IN (SELECT id FROM sessions)').run();
      return this.db.prepare('DELETE FROM gpu_claims WHERE session_id NOT IN (SELECT id FROM sessions)').run().changes;
    })();
  }

  /**
   * Deletes the row (and its GPU claims) and leaves a tombstone so old links answer 410 with the reason; the audit
   * row (when given, its owner the session's) is written in the same transaction: a crash keeps both or neither.
   */
  remove(row: SessionRow, end: EndReason, now: number, audit?: AuditLine): void {
    this.db.transaction(() => {
      if (audit) this.audit(row.id, audit.kind, audit.detail, now, { actor: audit.actor, owner: row.owner });
      this.db.prepare('DELETE FROM gpu_claims WHERE session_id = ?').run(row.id);
      this.db.prepare('DELETE FROM gpu_claim_functions WHERE session_id = ?').run(row.id);
      this.db.prepare('DELETE FROM sessions WHERE id = ?').run(row.id);
      const tomb = this.db.prepare(
        'INSERT OR REPLACE INTO ended_sessions (token_hash, session_id, ended_at, code, reason) VALUES (?, ?, ?, ?, ?)'
      );
      tomb.run(row.tokenHash, row.id, now, end.code, end.detail);
      tomb.run(row.viewTokenHash, row.id, now, end.code, end.detail);
    })();
  }

  ended(tokenHash: string): EndedRow | undefined {
    const r = this.db.prepare('SELECT session_id, ended_at, code, reason FROM ended_sessions WHERE token_hash = ?')
      .get(tokenHash) as { session_id: string; ended_at: number; code: string | null; reason: string } | undefined;
    return r && { sessionId: r.session_id, endedAt: r.ended_at, end: storedEnd(r.code, r.reason) };
  }

  forgetEndedBefore(cutoff: number): number {
    return this.db.prepare('DELETE FROM ended_sessions WHERE ended_at < ?').run(cutoff).changes;
  }

  /**
   * One audit row (src/audit/). `who.actor` is who did it (a user name, or a `system:`/`cli:`/`link:`/`web:` actor
   * that no user name can be); `who.owner` whose it is, by default the session's owner (read in the same statement).
   */
  audit(
    sessionId: string | null, kind: string, detail: Record<string, unknown> | null, now: number,
    who: { actor?: string | null; owner?: string | null } = {},
  ): void {
    this.auditStatement ??= this.db.prepare(
      'INSERT INTO events (at, session_id, kind, detail, actor, owner) VALUES (?, ?, ?, ?, ?, ' +
        'COALESCE(?, (SELECT owner FROM sessions WHERE id = ?)))',
    );
    this.auditStatement.run(
      now, sessionId, kind, detail ? JSON.stringify(detail) : null, who.actor ?? null, who.owner ?? null, sessionId,
    );
    this.audited?.();
  }

  /** Runs `change` and writes `audit` (if any) for session `id` in one transaction: one write, not two. */
  private withAudit(id: string, now: number, audit: AuditLine | undefined, change: () => void): void {
    if (!audit) {
      change();
      return;
    }
    this.db.transaction(() => {
      change();
      this.audit(id, audit.kind, audit.detail, now, { actor: audit.actor, owner: audit.owner });
    })();
  }

  /** Called after each audit row is written (the sinks' shipper wakes up: src/audit/shipper.ts). */
  audited: (() => void) | null = null;
  /** Prepared once: audit rows and viewer counts are the store's most frequent writes. */
  private auditStatement: Database.Statement | null = null;
  private viewersStatement: Database.Statement | null = null;
  private byIdStatement: Database.Statement | null = null;
  private viewersAndAudit: ((id: string, viewers: number, now: number, audit: AuditLine) => void) | null = null;
}
