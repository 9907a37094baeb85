import test from 'ava';
import { selectOrphanDirs, selectPurge, type PurgeCandidate } from '../../src/purge/select.js';

const now = 1_000_000;
const c = (over: Partial<PurgeCandidate>): PurgeCandidate => ({ id: 'a', state: 'running', expiresAt: now + 1000, updatedAt: now - 1000, alive: true, busy: false, ...over });

const table: Array<[string, PurgeCandidate, string | null]> = [
  ['a live session before its end is kept', c({}), null],
  ['a session at its end time is stopped', c({ expiresAt: now }), 'stop:expired'],
  ['a session past its end is stopped', c({ expiresAt: now - 1 }), 'stop:expired'],
  ['a running session whose VM is gone is cleaned up', c({ alive: false }), 'cleanup:vm-exited'],
  ['an expired session whose VM is gone is cleaned up (not stopped)', c({ alive: false, expiresAt: now - 5 }), 'cleanup:vm-exited'],
  ['a session busy in this process is left alone', c({ expiresAt: now - 1, busy: true }), null],
  ['a recent start is left alone', c({ state: 'starting', alive: false, updatedAt: now - 100 }), null],
  ['an abandoned start is cleaned up', c({ state: 'starting', alive: false, updatedAt: now - 60_001 }), 'cleanup:start-abandoned'],
  ['a stopping session whose VM is gone is cleaned up', c({ state: 'stopping', alive: false }), 'cleanup:stop-abandoned'],
  ['a stuck stopping session is cleaned up', c({ state: 'stopping', updatedAt: now - 60_001 }), 'cleanup:stop-abandoned'],
  ['a recent stopping session with a live VM is left alone', c({ state: 'stopping' }), null],
  ['a queued session before its end is kept', c({ state: 'queued', busy: true }), null],
  ['a queued session still waiting at its end is stopped, even while its start is awaited', c({ state: 'queued', busy: true, expiresAt: now }), 'stop:expired'],
  ['a queued session the scheduler no longer knows is cleaned up', c({ state: 'queued', alive: false }), 'cleanup:vm-exited'],
];
for (const [title, candidate, expected] of table) {
  test(`purge: ${title}`, (t) => {
    const actions = selectPurge([candidate], now, 60_000);
    t.deepEqual(actions.map((a) => `${a.action}:${a.reason}`), expected ? [expected] : []);
  });
}

test('orphan run dirs are those named like a session id without a row', (t) => {
  t.deepEqual(selectOrphanDirs(['0123456789ab', 'aaaaaaaaaaaa', 'notes.txt', 'ABCDEF012345'], new Set(['aaaaaaaaaaaa'])), ['0123456789ab']);
});
