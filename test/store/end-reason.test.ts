// End reasons: a typed code decides (a revoked link is not an ended desktop,
// an expired one "ran out of life-time"), the words are what people read; and
// tombstones written before codes were stored are read by their words.
import test from 'ava';
import { openDb } from '../../src/store/db.js';
import { SessionRows } from '../../src/store/session-rows.js';
import { describeEnd, endReason, storedEnd } from '../../src/store/end-reason.js';
import { makeSetup } from '../helpers/env.js';

test('each code has words of its own, and a detail given replaces them', (t) => {
  t.deepEqual(endReason('expired'), { code: 'expired', detail: 'expired' });
  t.deepEqual(endReason('stopped', 'stopped by ada (administrator)'), {
    code: 'stopped', detail: 'stopped by ada (administrator)',
  });
  t.is(describeEnd(endReason('expired')), 'its life-time ran out');
  t.is(describeEnd(endReason('stopping')), 'it is being stopped');
  t.is(describeEnd(endReason('vm-exited', 'the virtual machine was shut down')), 'the virtual machine was shut down');
});

test('a stored code is taken as it is; a code this version does not know reads as a stop, its words kept', (t) => {
  t.deepEqual(storedEnd('one-shot', 'anything'), { code: 'one-shot', detail: 'anything' });
  t.deepEqual(storedEnd('no-such-code', 'stopped by its user'), { code: 'stopped', detail: 'stopped by its user' });
  t.deepEqual(storedEnd(null, 'stopped by its user'), { code: 'stopped', detail: 'stopped by its user' });
});

test('a tombstone keeps its code and words, and one from before schema 9 is still read', (t) => {
  const { config } = makeSetup(t, {}, { machines: () => {} });
  const db = openDb(config.stateDir);
  t.teardown(() => db.close());
  const rows = new SessionRows(db);
  const now = Date.now();
  const row = {
    id: 'abcdefabcdef', token: 't1', tokenHash: 'h1', viewToken: 't2', viewTokenHash: 'h2', owner: 'ada',
    machine: 'blank', cpus: 1, memoryMiB: 64, createdAt: now, expiresAt: now + 60_000, state: 'running' as const,
    handle: null, runDir: '/nonexistent', updatedAt: now, viewers: 0, oneShot: true, email: null,
    warnedBeforeS: null, gpus: 0, idleSince: now, balloonTargetMiB: null, hadViewer: true,
  };
  rows.insert(row);
  rows.remove(row, endReason('one-shot'), now);
  t.deepEqual(rows.ended('h1'), { sessionId: row.id, endedAt: now, end: endReason('one-shot') });
  t.deepEqual(rows.ended('h2')?.end, endReason('one-shot'), 'the view-only link says the same');
});

test('migration 9 gives tombstones written before it the code their words were written for', (t) => {
  const { config } = makeSetup(t, {}, { machines: () => {} });
  const db = openDb(config.stateDir);
  // Back to the version-8 shape: tombstones with words only.
  db.exec('ALTER TABLE ended_sessions DROP COLUMN code; UPDATE schema_version SET version = 8');
  const tomb = db.prepare('INSERT INTO ended_sessions (token_hash, session_id, ended_at, reason) VALUES (?, ?, 1, ?)');
  tomb.run('h-expired', 'a', 'expired');
  tomb.run('h-revoked', 'a', 'revoked');
  tomb.run('h-exit', 'b', 'the virtual machine was shut down');
  tomb.run('h-user', 'c', 'stopped by its user');
  db.close();
  const reopened = openDb(config.stateDir);
  t.teardown(() => reopened.close());
  const rows = new SessionRows(reopened);
  t.deepEqual(rows.ended('h-expired')?.end, { code: 'expired', detail: 'expired' });
  t.deepEqual(rows.ended('h-revoked')?.end, { code: 'revoked', detail: 'revoked' });
  t.deepEqual(rows.ended('h-exit')?.end, { code: 'vm-exited', detail: 'the virtual machine was shut down' });
  t.deepEqual(rows.ended('h-user')?.end, { code: 'stopped', detail: 'stopped by its user' });
});
