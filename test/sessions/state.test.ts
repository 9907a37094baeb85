// The session state machine as a table: every (state, event) pair, the
// transitions allowed and the ones refused (null: a programming error the
// manager reports), plus the properties the rest of the broker relies on.
import test from 'ava';
import { isLive, nextState, type SessionEvent } from '../../src/sessions/state.js';
import type { SessionState } from '../../src/store/session-rows.js';

const STATES: SessionState[] = ['starting', 'queued', 'running', 'stopping', 'stopped', 'failed'];
const EVENTS: SessionEvent[] = ['submitted', 'launched', 'launch-failed', 'stop-requested', 'exited', 'cleaned-up'];

// Rows: states; columns in EVENTS order. '-' = refused.
const EXPECTED: Record<SessionState, Array<SessionState | '-'>> = {
  //          submitted  launched   launch-failed stop-requested exited     cleaned-up
  starting: ['queued',   'running', 'failed',     'stopping',    'failed',  '-'],
  queued:   ['-',        'running', 'failed',     'stopping',    'failed',  '-'],
  running:  ['-',        '-',       '-',          'stopping',    'stopped', '-'],
  stopping: ['-',        '-',       '-',          '-',           'stopped', 'stopped'],
  stopped:  ['-',        '-',       '-',          '-',           '-',       '-'],
  failed:   ['-',        '-',       '-',          '-',           '-',       '-'],
};

for (const state of STATES) {
  for (const [i, event] of EVENTS.entries()) {
    const expected = EXPECTED[state][i]!;
    test(`${state} on ${event} ${expected === '-' ? 'is refused' : `becomes ${expected}`}`, (t) => {
      t.is(nextState(state, event), expected === '-' ? null : expected);
    });
  }
}

test('only starting, queued and running sessions are live', (t) => {
  t.deepEqual(STATES.filter(isLive), ['starting', 'queued', 'running']);
});

test('stopped and failed are terminal, and every other state can reach one of them', (t) => {
  const reachesEnd = (state: SessionState, seen = new Set<SessionState>()): boolean => {
    if (state === 'stopped' || state === 'failed') return true;
    seen.add(state);
    return EVENTS.some((e) => {
      const next = nextState(state, e);
      return next !== null && !seen.has(next) && reachesEnd(next, seen);
    });
  };
  for (const state of STATES) t.true(reachesEnd(state), state);
  for (const event of EVENTS) {
    t.is(nextState('stopped', event), null);
    t.is(nextState('failed', event), null);
  }
});

test('no transition leads back to starting, and a stop request never revives a session', (t) => {
  for (const state of STATES) for (const event of EVENTS) t.not(nextState(state, event), 'starting');
  for (const state of STATES) {
    const next = nextState(state, 'stop-requested');
    if (next !== null) t.false(isLive(next), `${state} → ${next}`);
  }
});
