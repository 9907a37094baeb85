// The audit trail end to end, on a real broker with real QEMU (the blank
// machine), local accounts made by the real qwdctl, real viewers through the
// bridge, and the JSON-lines sink: every change leaves a row with its actor,
// qwdctl audit reads them, the file gets the same rows, and no token, ticket
// or password is in either.
import test, { type ExecutionContext } from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { makeSetup, requireQemu, waitFor } from '../helpers/env.js';
import { startTestBroker } from '../helpers/broker.js';
import { qwdctl } from '../helpers/cli.js';
import { WebClient } from '../helpers/web-client.js';
import { connectRfb } from '../helpers/rfb-client.js';
import type { AuditEntry } from '../../src/audit/query.js';

test.before(() => requireQemu());

const PASSWORDS = { alice: 'alice-Secret-4711', bob: 'bob-Secret-0815', root: 'admin-Secret-9999' };

async function withUsers(t: ExecutionContext, extra: Record<string, unknown> = {}) {
  const setup = makeSetup(t, {
    auth: {
      backends: [{ type: 'local' }], linksRequireLogin: false,
      rateLimit: { maxFailures: 5, maxFailuresPerClient: 5, windowS: 60 },
    },
    ...extra,
  });
  for (const [name, password] of Object.entries(PASSWORDS)) {
    const args = ['--config', setup.configFile, 'users', 'add', name, ...(name === 'root' ? ['--admin'] : [])];
    const res = await qwdctl(args, { input: `${password}\n` });
    t.is(res.code, 0, res.stderr);
  }
  return setup;
}

async function login(url: string, user: keyof typeof PASSWORDS): Promise<WebClient> {
  const browser = new WebClient(url);
  await browser.get('/login');
  const res = await browser.post('/login', { user, password: PASSWORDS[user], next: '/' });
  if (res.status !== 303) throw new Error(`login of ${user} failed: ${res.status}`);
  await browser.get('/');
  return browser;
}

/** Every row of the trail, as qwdctl audit --json prints it (through the running broker's admin socket). */
async function auditJson(configFile: string, ...filters: string[]): Promise<AuditEntry[]> {
  const res = await qwdctl(['--config', configFile, 'audit', '--json', ...filters]);
  if (res.code !== 0) throw new Error(`qwdctl audit failed (${res.code}): ${res.stderr}`);
  return JSON.parse(res.stdout) as AuditEntry[];
}

/** The whole events table as text, every column, for searching it for secrets. */
function wholeTable(stateDir: string): string {
  const db = new Database(path.join(stateDir, 'qwd.sqlite'), { readonly: true });
  try {
    return JSON.stringify(db.prepare('SELECT * FROM events').all());
  } finally {
    db.close();
  }
}

test('every change leaves a row with who did it; qwdctl audit filters them; the JSON-lines file gets the same rows; ' +
  'no token, ticket or password anywhere', async (t) => {
  const setup = await withUsers(t);
  const jsonFile = path.join(setup.dir, 'audit', 'audit.jsonl');
  fs.mkdirSync(path.dirname(jsonFile));
  const config = { ...setup.config, audit: { ...setup.config.audit, jsonFile } };
  // What qwdctl wrote before the broker started (the accounts) is in the store; the new sink starts after it.
  const before = await auditJson(setup.configFile, '--kind', 'user-added');
  t.deepEqual(before.map((e) => [e.actor, e.owner, e.detail]), [
    ['cli:qwdctl', 'alice', { admin: false, email: false }], ['cli:qwdctl', 'bob', { admin: false, email: false }],
    ['cli:qwdctl', 'root', { admin: true, email: false }],
  ]);
  const broker = await startTestBroker(t, config);

  // A failed login (the name as typed, never the password), then good ones.
  const guess = new WebClient(broker.url);
  await guess.get('/login');
  const wrongPassword = 'not-alices-password-1';
  t.is((await guess.post('/login', { user: 'alice', password: wrongPassword, next: '/' })).status, 401);
  const alice = await login(broker.url, 'alice');
  const bob = await login(broker.url, 'bob');
  const root = await login(broker.url, 'root');

  // Refused (over the CPU limit of the blank machine), then created.
  const refused = await alice.api('POST', '/api/v1/sessions', { machine: 'blank', cpus: 64 }, { withCsrf: true });
  t.true(refused.status >= 400 && refused.status < 500, String(refused.status));
  const { json: s } = await alice.api('POST', '/api/v1/sessions', { machine: 'blank' }, { withCsrf: true });
  t.truthy(s.id, JSON.stringify(s));
  const viewToken = s.viewUrl.split('/s/')[1] as string;

  // Bob watches with his login's ticket (control link); somebody holds the view-only link.
  const viewerPage = await bob.get(`/s/${s.token}/view`);
  const ticket = /data-ticket="([^"]+)"/.exec(viewerPage.text)![1]!;
  const bobViewer = await connectRfb(`${s.wsUrl}?t=${encodeURIComponent(ticket)}`);
  const anonymousViewer = await connectRfb(s.viewWsUrl);
  bobViewer.close();
  anonymousViewer.close();
  await waitFor('both viewers gone', () => broker.services.rows.byId(s.id)?.viewers === 0 &&
    (broker.services.rows.db.prepare("SELECT COUNT(*) AS n FROM events WHERE kind = 'viewer-left'").get() as
      { n: number }).n === 2);

  t.is((await alice.api('POST', `/api/v1/sessions/${s.token}/extend`, { byS: 60 }, { withCsrf: true })).status, 200);
  const revoked = await alice.api('POST', `/api/v1/sessions/${s.token}/revoke`, { link: 'view' }, { withCsrf: true });
  t.is(revoked.status, 200);
  const newViewToken = revoked.json.viewUrl.split('/s/')[1] as string;
  // An administrator stops it from its page.
  t.is((await root.post(`/s/${s.token}/stop`, {})).status, 303);
  await waitFor('the session ended', () => !broker.services.manager.get(s.id));

  const trail = await auditJson(setup.configFile, '--session', s.id);
  const rows = trail.map((e) => [e.kind, e.actor, e.owner]);
  t.deepEqual(rows, [
    ['created', 'alice', 'alice'],
    ['started', 'system:broker', 'alice'],
    ['viewer-joined', 'bob', 'alice'],
    ['viewer-joined', 'link:view', 'alice'],
    ['viewer-left', rows[4]![1], 'alice'],
    ['viewer-left', rows[5]![1], 'alice'],
    ['extended', 'alice', 'alice'],
    ['link-revoked', 'alice', 'alice'],
    ['ended', 'root', 'alice'],
  ]);
  t.deepEqual(new Set([rows[4]![1], rows[5]![1]]), new Set(['bob', 'link:view']));
  const byKind = (kind: string) => trail.find((e) => e.kind === kind)!;
  t.like(byKind('created').detail, { owner: 'alice', machine: 'blank', cpus: 1, memoryMiB: 128 });
  t.true((byKind('started').detail!.startMs as number) >= 0);
  t.deepEqual(trail.filter((e) => e.kind === 'viewer-joined').map((e) => e.detail!.access), ['control', 'view']);
  t.like(byKind('extended').detail, { byS: 60 });
  t.deepEqual(byKind('link-revoked').detail, { kind: 'view' });
  t.deepEqual(byKind('ended').detail, { reason: 'stopped by root (administrator)', code: 'stopped' });
  for (const e of trail) t.regex(e.at, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);

  const refusal = await auditJson(setup.configFile, '--kind', 'refused');
  t.is(refusal.length, 1);
  t.like(refusal[0], { actor: 'alice', owner: 'alice', sessionId: null });
  t.like(refusal[0]!.detail, { code: 'QWD_BAD_REQUEST', asked: { machine: 'blank', cpus: 64 } });

  t.is((await bob.post('/logout', {})).status, 303);
  const logins = await auditJson(setup.configFile, '--kind', 'login');
  t.deepEqual(logins.map((e) => [e.actor, e.owner, e.detail!.result, e.detail!.backend]), [
    ['web:anonymous', 'alice', 'failure', 'password'],
    ['alice', 'alice', 'success', 'local'],
    ['bob', 'bob', 'success', 'local'],
    ['root', 'root', 'success', 'local'],
  ]);
  // --user: what bob did or what was about him (his login, his viewing, his logout), nothing else.
  const bobs = await auditJson(setup.configFile, '--user', 'bob', '--since', '1h');
  t.deepEqual(bobs.map((e) => e.kind), ['user-added', 'login', 'viewer-joined', 'viewer-left', 'logout']);
  t.like(bobs[4]!.detail, { backend: 'local', result: 'logout' });
  t.deepEqual((await auditJson(setup.configFile, '--since', '1h', '--limit', '2')).map((e) => e.kind).length, 2);
  t.deepEqual(await auditJson(setup.configFile, '--until', '2000-01-01'), []);

  // The human table: one line per row, ISO UTC times.
  const table = await qwdctl(['--config', setup.configFile, 'audit', '--session', s.id]);
  t.is(table.code, 0, table.stderr);
  t.is(table.stdout.trimEnd().split('\n').length, 1 + trail.length);
  t.regex(table.stdout, /^TIME \(UTC\) +KIND/);
  t.regex(table.stdout, /\n\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ +created +/);

  // The JSON-lines file: the same rows as the store, from the broker's start on, in order.
  const all = await auditJson(setup.configFile, '--limit', '10000');
  const shipped = all.filter((e) => e.id > before[before.length - 1]!.id);
  const lines = await waitFor('the file caught up', () => {
    if (!fs.existsSync(jsonFile)) return false;
    const got = fs.readFileSync(jsonFile, 'utf8').trimEnd().split('\n').map((l) => JSON.parse(l) as AuditEntry);
    return got.length >= shipped.length && got;
  });
  t.deepEqual(lines, shipped);
  t.is(fs.statSync(jsonFile).mode & 0o777, 0o600);

  const secrets = [
    s.token, viewToken, newViewToken, ticket, wrongPassword, ...Object.values(PASSWORDS),
  ];
  const table_ = wholeTable(setup.stateDir);
  const file = fs.readFileSync(jsonFile, 'utf8');
  for (const secret of secrets) {
    t.false(table_.includes(secret), `the events table holds no ${secret.slice(0, 6)}…`);
    t.false(file.includes(secret), `the JSON-lines file holds no ${secret.slice(0, 6)}…`);
  }
});
