// The purge job's work, run by the cron schedule (schedule.ts), by qwdctl purge
// and by tests: expired sessions are stopped, sessions whose VM is gone (or
// whose start or stop was abandoned) are released, orphan run dirs removed,
// idle guests' memory reclaimed, life-time warnings mailed, old tombstones
// forgotten, audit rows past audit.retentionDays deleted (in batches); a run
// that did something leaves a 'purged' audit row saying what. What to do is
// decided by the pure functions of this folder; every change to a session
// goes through the session manager. One run at a time: a run asked for while
// another runs starts when it ends, so two runs never both mail the same
// warning.
import fsp from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from '../log.js';
import type { Config } from '../config/schema.js';
import type { Launcher, VmHandle } from '../launcher/types.js';
import type { SessionRow, SessionRows } from '../store/session-rows.js';
import type { SessionManager } from '../sessions/manager.js';
import { endReason } from '../store/end-reason.js';
import type { Mailer } from '../notify/mailer.js';
import { lifetimeWarningMail } from '../notify/lifetime-warning.js';
import { selectIdleReclaims } from '../admission/idle-reclaim.js';
import { selectOrphanDirs, selectPurge, type PurgeAction } from './select.js';
import { selectWarnings, type Warning } from './warnings.js';
import { deleteAuditBefore, retentionCutoff, unshippedBefore } from '../audit/retention.js';
import { configuredSinkNames } from '../audit/sinks.js';
import { ACTORS } from '../audit/actor.js';
import type { MetricsRecorder } from '../metrics/recorder.js';

export interface PurgeDeps {
  manager: SessionManager;
  rows: SessionRows;
  launcher: Launcher;
  config: Config;
  log: Logger;
  /** Sends life-time warnings; absent when no mail is configured. */
  mailer?: Mailer | null;
  /** Base URL for links in mails (the broker's public address). */
  baseUrl?: string;
  /** Runs and what they did (absent: not counted). */
  metrics?: MetricsRecorder;
}

export interface PurgeReport {
  actions: PurgeAction[];
  warnings: Warning[];
  orphanDirs: string[];
  /** Of `actions`, those that threw (logged; the next run sees their sessions again). Empty in a dry run. */
  failedActions: PurgeAction[];
  /** Of `orphanDirs`, how many were removed (a session may have taken a name since the listing). 0 in a dry run. */
  orphanDirsRemoved: number;
  forgottenTombstones: number;
  /** Audit rows older than audit.retentionDays, deleted by this run. */
  auditRowsDeleted: number;
  dryRun: boolean;
}

/** How long a start or stop may take before the purge job counts it abandoned (two ready waits and a stop ladder). */
export function stuckAfterMs(config: Config): number {
  return config.qemu.readyTimeoutMs * 2 + config.qemu.quitGraceMs + config.qemu.termGraceMs + 10000;
}

export class PurgeService {
  /** The end of the last run asked for (runs go one after the other). */
  private queue: Promise<void> = Promise.resolve();

  constructor(private readonly deps: PurgeDeps) {}

  /** actor: who asked for this run (the audit trail's 'purged' row); the cron schedule by default. */
  run(opts: { dryRun?: boolean; actor?: string } = {}): Promise<PurgeReport> {
    const run = this.queue.then(() => this.timed(opts));
    this.queue = run.then(() => undefined, () => undefined);
    return run;
  }

  /** One run, counted in the metrics (ok with what it did, or failed) with how long it took. */
  private async timed(opts: { dryRun?: boolean; actor?: string }): Promise<PurgeReport> {
    const started = performance.now();
    const seconds = () => (performance.now() - started) / 1000;
    try {
      const report = await this.once(opts);
      this.deps.metrics?.purgeRan(report, seconds(), this.deps.manager.clock.now());
      return report;
    } catch (err) {
      if (!opts.dryRun) this.deps.metrics?.purgeRan(null, seconds(), this.deps.manager.clock.now());
      throw err;
    }
  }

  private async once(opts: { dryRun?: boolean; actor?: string }): Promise<PurgeReport> {
    const { rows, launcher, config, log, manager } = this.deps;
    const now = manager.clock.now();
    const all = rows.all();
    const candidates = await Promise.all(all.map(async (r) => ({
      id: r.id, state: r.state, expiresAt: r.expiresAt, updatedAt: r.updatedAt,
      alive: r.handle !== null && await launcher.isAlive(r.handle as VmHandle)
        .catch(() => true), // unknown: assume alive, never clean up on a hiccup
      busy: manager.busy(r.id),
    })));
    const actions = selectPurge(
      candidates, now, stuckAfterMs(config),
    );
    let dirs: string[] = [];
    try {
      dirs = await fsp.readdir(launcher.runRoot);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    const orphanDirs = selectOrphanDirs(dirs, new Set(all.map((r) => r.id)));
    const warnings = this.deps.mailer ? selectWarnings(
      all.filter((r) => !actions.some((a) => a.id === r.id)), now, config.sessions.warnBeforeS,
    ) : [];
    if (opts.dryRun) {
      const nothingDone = { failedActions: [], orphanDirsRemoved: 0, forgottenTombstones: 0, auditRowsDeleted: 0 };
      return { actions, warnings, orphanDirs, ...nothingDone, dryRun: true };
    }
    await this.sendWarnings(warnings, all);
    await this.reclaimIdleMemory(all, actions, now);
    const failedActions: PurgeAction[] = [];
    for (const action of actions) {
      try {
        await this.apply(action);
      } catch (err) {
        failedActions.push(action);
        log.error({ err, sessionId: action.id }, 'purge action failed');
      }
    }
    let orphanDirsRemoved = 0;
    for (const dir of orphanDirs) {
      // Re-check: a session may have been created since the listing.
      if (rows.byId(dir)) continue;
      await launcher.cleanup(null, path.join(launcher.runRoot, dir));
      orphanDirsRemoved++;
      log.info({ dir }, 'orphan run dir removed');
    }
    const releasedClaims = rows.releaseOrphanGpuClaims();
    if (releasedClaims) log.warn({ releasedClaims }, 'GPU claims without a session released');
    const forgottenTombstones = rows.forgetEndedBefore(now - config.purge.endedRetentionS * 1000);
    const cutoff = retentionCutoff(config.audit.retentionDays, now);
    if (cutoff !== null) {
      // Rows a failing sink never got are deleted all the same (the store keeps what retention allows): said loudly.
      for (const { sink, rows: unshipped } of unshippedBefore(rows.db, cutoff, configuredSinkNames(config.audit))) {
        log.warn({ sink, unshipped, auditCutoff: new Date(cutoff).toISOString() },
          'audit rows past retention deleted before this sink got them');
      }
    }
    const auditRowsDeleted = cutoff === null ? 0 : await deleteAuditBefore(rows.db, cutoff);
    if (actions.length || orphanDirs.length) log.info({ actions, orphanDirs }, 'purge done');
    if (auditRowsDeleted) {
      log.info({ auditRowsDeleted, auditCutoff: new Date(cutoff!).toISOString() }, 'audit rows past retention deleted');
    }
    // Retention alone leaves no 'purged' row from the schedule: a row a minute would be written forever to say rows
    // were deleted (the log line above says it; a run that also did something counts them in its row). A run an
    // administrator asked for (qwdctl purge) that deleted rows is recorded.
    const asked = opts.actor !== undefined && opts.actor !== ACTORS.purge;
    if (actions.length || orphanDirs.length || (auditRowsDeleted && asked)) {
      rows.audit(null, 'purged', {
        actions: actions.map((a) => ({ id: a.id, action: a.action, reason: a.reason })), orphanDirs: orphanDirs.length,
        forgottenTombstones, auditRowsDeleted,
        ...(cutoff === null ? {} : { auditCutoff: new Date(cutoff).toISOString() }),
      }, manager.clock.now(), { actor: opts.actor ?? ACTORS.purge });
    }
    return {
      actions, warnings, orphanDirs, failedActions, orphanDirsRemoved, forgottenTombstones, auditRowsDeleted,
      dryRun: false,
    };
  }

  /** One decision as an event to the session: expired → stop; gone or abandoned → release (stopping what runs). */
  private async apply(action: PurgeAction): Promise<void> {
    const { manager, rows, launcher } = this.deps;
    if (action.action === 'stop') {
      await manager.stop(action.id, endReason('expired'));
      return;
    }
    const row = rows.byId(action.id);
    if (!row) return;
    const handle = row.handle as VmHandle | null;
    const reason = action.reason === 'vm-exited' ? await manager.exitReason(row) : endReason(action.reason);
    // As with every stop, whatever the launcher says, the session's resources are released.
    const alive = handle !== null && await launcher.isAlive(handle).catch(() => true); // unknown: stop it to be sure
    await manager.dispatch(row.id, alive ? { type: 'stop-requested', reason } : { type: 'exited', reason });
  }

  /**
   * Shrinks the balloon of guests nobody has watched for balloon.idleAfterS (never GPU guests: see selectIdleReclaims).
   */
  private async reclaimIdleMemory(rows: SessionRow[], actions: PurgeAction[], now: number): Promise<void> {
    const { manager, config, log } = this.deps;
    for (const { id, targetMiB } of selectIdleReclaims(rows, new Set(actions.map((a) => a.id)), now, config.balloon)) {
      try {
        await manager.setBalloon(id, targetMiB);
        log.info({ sessionId: id, targetMiB }, 'memory reclaimed from an idle guest');
      } catch (err) {
        log.warn({ sessionId: id, err: (err as Error).message }, 'balloon reclaim failed');
      }
    }
  }

  private async sendWarnings(warnings: Warning[], rows: SessionRow[]): Promise<void> {
    const { mailer, log, rows: store, manager } = this.deps;
    if (!mailer) return;
    for (const w of warnings) {
      const row = rows.find((r) => r.id === w.id)!;
      try {
        await mailer.send({ to: row.email!, ...lifetimeWarningMail(row, w.remainingS, this.deps.baseUrl ?? null) });
        store.setWarned(row.id, w.beforeS, manager.clock.now(), {
          kind: 'warned', detail: { beforeS: w.beforeS, to: row.email }, actor: ACTORS.purge,
        });
        log.info({ sessionId: row.id, beforeS: w.beforeS }, 'life-time warning mailed');
      } catch (err) {
        // Not recorded as sent: the next purge run tries again.
        log.warn({ sessionId: row.id, err: (err as Error).message }, 'life-time warning not sent');
      }
    }
  }
}
