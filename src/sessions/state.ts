// The session state machine, as a pure transition table. Only a session's
// SessionLife (lifecycle.ts) applies transitions; anything not in the table is
// a programming error.
import type { SessionState } from '../store/session-rows.js';

export type SessionEvent = 'submitted' | 'launched' | 'launch-failed' | 'stop-requested' | 'exited' | 'cleaned-up';

const TABLE: Record<SessionState, Partial<Record<SessionEvent, SessionState>>> = {
  starting: {
    submitted: 'queued', launched: 'running', 'launch-failed': 'failed', 'stop-requested': 'stopping', exited: 'failed',
  },
  queued: { launched: 'running', 'launch-failed': 'failed', 'stop-requested': 'stopping', exited: 'failed' },
  running: { 'stop-requested': 'stopping', exited: 'stopped' },
  stopping: { exited: 'stopped', 'cleaned-up': 'stopped' },
  stopped: {},
  failed: {},
};

export function nextState(current: SessionState, event: SessionEvent): SessionState | null {
  return TABLE[current][event] ?? null;
}

export function isLive(state: SessionState): boolean {
  return state === 'starting' || state === 'queued' || state === 'running';
}
