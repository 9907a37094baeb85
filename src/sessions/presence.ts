// Viewer presence: what the bridge's viewer counts mean for a session. It
// records the count (status pages, qwdctl), gives memory back to a guest whose
// balloon was shrunk for idleness as soon as somebody watches again, and ends
// a one-shot session once its last viewer has been gone for
// sessions.oneShotGraceS (a page reload does not end it). It owns the one-shot
// grace timers, on the injected clock; the session's life stays the manager's
// (it asks the manager to stop).
import type { Logger } from '../log.js';
import type { Config } from '../config/schema.js';
import type { CancelTimer } from '../clock.js';
import type { SessionRows } from '../store/session-rows.js';
import type { AdoptedEvent, EndedEvent, SessionManager } from './manager.js';
import { endReason } from '../store/end-reason.js';
import { ACTORS } from '../audit/actor.js';

/** A viewer that came or went, for the audit trail: its link's access and its logged-in name, if any. */
export interface ViewerChange {
  change: 'joined' | 'left';
  access: 'control' | 'view';
  /** The name on its viewer ticket (a logged-in viewer), else null. */
  name: string | null;
  /** Why it left (browser closed, stopped reading, link revoked...). */
  why?: string;
}

export interface PresenceDeps {
  manager: SessionManager;
  rows: SessionRows;
  config: Config;
  log: Logger;
}

export class ViewerPresence {
  private readonly graceTimers = new Map<string, CancelTimer>();
  private readonly onEnded = ({ id }: EndedEvent) => this.cancelGrace(id);
  // Nobody is connected after a restart: a one-shot session whose viewer had already been
  // gets the usual grace period for a viewer to come back.
  private readonly onAdopted = ({ row }: AdoptedEvent) => {
    if (row.oneShot && row.hadViewer) this.endAfterGrace(row.id);
  };

  constructor(private readonly deps: PresenceDeps) {
    deps.manager.on('ended', this.onEnded);
    deps.manager.on('adopted', this.onAdopted);
  }

  /** How many viewers the bridge has for a session now; the viewer that changed it is audited in the same write. */
  record(id: string, viewers: number, viewer?: ViewerChange): void {
    const { manager, rows, log } = this.deps;
    const row = rows.byId(id);
    if (!row) return;
    const audit = viewer && {
      kind: `viewer-${viewer.change}`,
      detail: { access: viewer.access, viewers, ...(viewer.why ? { why: viewer.why } : {}) },
      actor: viewer.name ?? (viewer.access === 'control' ? ACTORS.controlLink : ACTORS.viewLink),
      owner: row.owner,
    };
    rows.setViewers(id, viewers, manager.clock.now(), audit);
    // Somebody is back on a guest whose memory was taken for idleness: give it back.
    if (
      viewers > 0 && row.balloonTargetMiB !== null && row.balloonTargetMiB < row.memoryMiB && row.state === 'running'
    ) {
      manager.setBalloon(id, row.memoryMiB)
        .catch((err) => log.warn({ sessionId: id, err: (err as Error).message }, 'balloon restore failed'));
    }
    if (!row.oneShot) return;
    if (viewers > 0) {
      // (setViewers has recorded in the row that it had a viewer: that survives a restart)
      this.cancelGrace(id);
      return;
    }
    if (row.hadViewer) this.endAfterGrace(id);
  }

  /** A one-shot session nobody watches: it ends after sessions.oneShotGraceS unless a viewer comes back. */
  private endAfterGrace(id: string): void {
    if (this.graceTimers.has(id)) return;
    const { manager, rows, config, log } = this.deps;
    this.graceTimers.set(id, manager.clock.after(config.sessions.oneShotGraceS * 1000, () => {
      this.graceTimers.delete(id);
      if (rows.byId(id)?.viewers !== 0) return;
      manager.stop(id, endReason('one-shot'))
        .catch((err) => log.error({ err, sessionId: id }, 'one-shot stop failed'));
    }, { background: true }));
  }

  private cancelGrace(id: string): void {
    this.graceTimers.get(id)?.();
    this.graceTimers.delete(id);
  }

  /** Stops every timer and listens no more (a broker that closes). */
  close(): void {
    for (const cancel of this.graceTimers.values()) cancel();
    this.graceTimers.clear();
    this.deps.manager.off('ended', this.onEnded);
    this.deps.manager.off('adopted', this.onAdopted);
  }
}
