// GPU claims in the store: every PCI function of a claimed unit is held by at
// most one session, and a database from before per-function claims migrates.
import test from 'ava';
import { openDb } from '../../src/store/db.js';
import { SessionRows, type SessionRow } from '../../src/store/session-rows.js';
import { AdmissionError } from '../../src/errors.js';
import { tempDir } from '../helpers/env.js';
import { endReason } from '../../src/store/end-reason.js';

function session(id: string): SessionRow {
  return {
    id, token: `t-${id}`, tokenHash: `th-${id}`, viewToken: `v-${id}`, viewTokenHash: `vh-${id}`, owner: 'u', machine: 'm', cpus: 1, memoryMiB: 512,
    createdAt: 1, expiresAt: 2, state: 'running', handle: null, runDir: `/r/${id}`, updatedAt: 1, viewers: 0, oneShot: false, email: null,
    warnedBeforeS: null, gpus: 1, idleSince: null, balloonTargetMiB: null, hadViewer: false,
  };
}

function store(t: import('ava').ExecutionContext) {
  const dir = tempDir(t);
  const db = openDb(dir);
  t.teardown(() => db.close());
  return { dir, db, rows: new SessionRows(db) };
}

test('a function already claimed cannot be claimed again, whichever GPU address the claim names', (t) => {
  const { rows } = store(t);
  rows.insert(session('a'));
  rows.insert(session('b'));
  rows.claimGpu('0000:01:00.0', 'a', ['0000:01:00.0', '0000:01:00.1', '0000:02:00.0'], 1);
  // The other GPU of the same IOMMU group, as the old per-GPU discovery listed it.
  const err = t.throws(() => rows.claimGpu('0000:02:00.0', 'b', ['0000:02:00.0', '0000:01:00.0'], 2), { instanceOf: AdmissionError });
  t.is(err!.code, 'QWD_ADMISSION_CAPACITY');
  t.regex(err!.userMessage!, /No GPU is free/);
  t.deepEqual(rows.gpuClaims().map((c) => c.sessionId), ['a'], 'nothing of the refused claim was written');
  t.deepEqual([...rows.claimedGpuFunctions()].sort(), [['0000:01:00.0', 'a'], ['0000:01:00.1', 'a'], ['0000:02:00.0', 'a']]);
  rows.remove(rows.byId('a')!, endReason('stopped'), 3);
  t.deepEqual([...rows.claimedGpuFunctions()], [], 'ending the session frees every function');
  rows.claimGpu('0000:02:00.0', 'b', ['0000:02:00.0', '0000:01:00.0'], 4);
  t.is(rows.claimedGpuFunctions().get('0000:01:00.0'), 'b');
});

test('orphan claims (session row gone) are released function by function', (t) => {
  const { rows, db } = store(t);
  rows.insert(session('a'));
  rows.claimGpu('0000:01:00.0', 'a', ['0000:01:00.0', '0000:01:00.1'], 1);
  db.prepare("DELETE FROM sessions WHERE id = 'a'").run();
  t.is(rows.releaseOrphanGpuClaims(), 1);
  t.deepEqual([...rows.claimedGpuFunctions()], []);
});

test('a database with per-GPU claims from before migration 7 keeps them, now exclusive per function', (t) => {
  const { dir, db, rows } = store(t);
  rows.insert(session('a'));
  rows.insert(session('b'));
  const latest = (db.prepare('SELECT version FROM schema_version').get() as { version: number }).version;
  // Put the database back in its version-6 shape: no per-function table, two
  // sessions double-claiming one IOMMU group through its two GPUs (the old bug).
  db.exec('DROP TABLE gpu_claim_functions; UPDATE schema_version SET version = 6');
  const legacy = db.prepare('INSERT INTO gpu_claims (address, session_id, functions, claimed_at) VALUES (?, ?, ?, ?)');
  legacy.run('0000:01:00.0', 'a', JSON.stringify(['0000:01:00.0', '0000:01:00.1']), 10);
  legacy.run('0000:02:00.0', 'b', JSON.stringify(['0000:02:00.0', '0000:01:00.1']), 20);
  db.close();
  const reopened = openDb(dir);
  t.teardown(() => reopened.close());
  const after = new SessionRows(reopened);
  t.is((reopened.prepare('SELECT version FROM schema_version').get() as { version: number }).version, latest,
    'every migration since 6 ran again');
  t.is(after.gpuClaims().length, 2, 'existing claims are kept');
  t.deepEqual(Object.fromEntries(after.claimedGpuFunctions()), { '0000:01:00.0': 'a', '0000:01:00.1': 'a', '0000:02:00.0': 'b' }, 'the earlier claim keeps the shared function');
  t.throws(() => after.claimGpu('0000:01:00.0', 'b', ['0000:01:00.0'], 30), { instanceOf: AdmissionError });
});
