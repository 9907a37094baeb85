// Pure selection of what the purge job must do: stop expired sessions, clean up
// sessions whose VM is gone, abandon starts that never finished, and delete
// run dirs that belong to no session.
import type { SessionState } from '../store/session-rows.js';

export interface PurgeCandidate {
  id: string;
  state: SessionState;
  expiresAt: number;
  updatedAt: number;
  alive: boolean;
  /** A start or stop of this session is in progress in this process. */
  busy: boolean;
}

export type PurgeAction =
  | { id: string; action: 'stop'; reason: 'expired' }
  | { id: string; action: 'cleanup'; reason: 'vm-exited' | 'start-abandoned' | 'stop-abandoned' };

export function selectPurge(sessions: readonly PurgeCandidate[], now: number, stuckAfterMs: number): PurgeAction[] {
  const actions: PurgeAction[] = [];
  for (const s of sessions) {
    if (s.state === 'queued') {
      // Waiting for a node: the scheduler holds it (its start is awaited in this
      // process, so "busy" does not protect it). Gone from the scheduler → clean
      // up (unless its awaited start is about to notice); still waiting at its
      // end time → stop (cancel) it.
      if (!s.alive) {
        if (!s.busy) actions.push({ id: s.id, action: 'cleanup', reason: 'vm-exited' });
      } else if (s.expiresAt <= now) actions.push({ id: s.id, action: 'stop', reason: 'expired' });
      continue;
    }
    if (s.busy) continue;
    if (s.state === 'starting') {
      if (now - s.updatedAt > stuckAfterMs) actions.push({ id: s.id, action: 'cleanup', reason: 'start-abandoned' });
      continue;
    }
    if (s.state === 'stopping') {
      if (!s.alive || now - s.updatedAt > stuckAfterMs) {
        actions.push({ id: s.id, action: 'cleanup', reason: 'stop-abandoned' });
      }
      continue;
    }
    if (s.state === 'failed' || s.state === 'stopped') {
      // Ended, but its release did not finish (a writer that died, a store that was full): finish it.
      const reason = s.state === 'failed' ? 'start-abandoned' : 'stop-abandoned';
      actions.push({ id: s.id, action: 'cleanup', reason });
      continue;
    }
    if (s.state !== 'running') continue;
    if (!s.alive) actions.push({ id: s.id, action: 'cleanup', reason: 'vm-exited' });
    else if (s.expiresAt <= now) actions.push({ id: s.id, action: 'stop', reason: 'expired' });
  }
  return actions;
}

/** Run dirs named like a session id that no session row claims. */
export function selectOrphanDirs(dirNames: readonly string[], knownIds: ReadonlySet<string>): string[] {
  return dirNames.filter((name) => /^[0-9a-f]{12}$/.test(name) && !knownIds.has(name));
}
