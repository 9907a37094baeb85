// Who may create, see and stop a desktop, with local accounts made by the
// real qwdctl: login, CSRF, rate limiting, ownership, admins, API tokens,
// chained backends, and no password written anywhere.
import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { startBroker } from '../../src/main.js';
import { createLogger } from '../../src/log.js';
import { makeSetup, requireQemu } from '../helpers/env.js';
import { startTestBroker, stopAllVms } from '../helpers/broker.js';
import { qwdctl } from '../helpers/cli.js';
import { WebClient } from '../helpers/web-client.js';
import { closedPort } from '../helpers/peer-process.js';

test.before(() => requireQemu());

const PASSWORDS = { alice: 'alice-Secret-4711', bob: 'bob-Secret-0815', root: 'admin-Secret-9999' };

async function localSetup(t: import('ava').ExecutionContext, extra: Record<string, unknown> = {}) {
  const setup = makeSetup(t, { auth: { backends: [{ type: 'local' }], rateLimit: { maxFailures: 3, windowS: 60 } }, ...extra });
  for (const [name, password] of Object.entries(PASSWORDS)) {
    const res = await qwdctl(['--config', setup.configFile, 'users', 'add', name, ...(name === 'root' ? ['--admin'] : []), '--email', `${name}@example.org`], { input: `${password}\n` });
    t.is(res.code, 0, res.stderr);
  }
  return setup;
}

async function loggedIn(url: string, user: keyof typeof PASSWORDS) {
  const browser = new WebClient(url);
  await browser.get('/login');
  const res = await browser.post('/login', { user, password: PASSWORDS[user], next: '/' });
  if (res.status !== 303) throw new Error(`login of ${user} failed: ${res.status} ${res.text.slice(0, 200)}`);
  // The login rotates the browser session and its CSRF token: load a page as a browser would.
  await browser.get('/');
  return browser;
}

test('qwdctl users: add, list, passwd, admin, del; passwords never on the command line or in the store', async (t) => {
  const setup = await localSetup(t);
  const c = ['--config', setup.configFile];
  const list = JSON.parse((await qwdctl([...c, 'users', 'list', '--json'])).stdout);
  t.deepEqual(list.map((u: { name: string; admin: boolean }) => [u.name, u.admin]), [['alice', false], ['bob', false], ['root', true]]);
  t.false(JSON.stringify(list).includes('scrypt'), 'no hashes in the listing');
  t.is((await qwdctl([...c, 'users', 'add', 'alice'], { input: 'whatever-long\n' })).code, 1, 'duplicate');
  const short = await qwdctl([...c, 'users', 'add', 'carol'], { input: 'short\n' });
  t.is(short.code, 1);
  t.regex(short.stderr, /at least 8 characters/);
  t.is((await qwdctl([...c, 'users', 'add', 'bad name'], { input: 'long-enough-1\n' })).code, 1);
  t.is((await qwdctl([...c, 'users', 'passwd', 'bob'], { input: 'bob-New-Secret-1\n' })).code, 0);
  t.is((await qwdctl([...c, 'users', 'admin', 'bob', 'on'])).code, 0);
  t.is((await qwdctl([...c, 'users', 'del', 'bob'])).code, 0);
  t.is((await qwdctl([...c, 'users', 'del', 'bob'])).code, 3);
  const db = fs.readFileSync(path.join(setup.stateDir, 'qwd.sqlite'));
  for (const p of [...Object.values(PASSWORDS), 'bob-New-Secret-1']) t.false(db.includes(p), 'no password in the database file');
  const store = new Database(path.join(setup.stateDir, 'qwd.sqlite'), { readonly: true });
  t.teardown(() => store.close());
  t.regex((store.prepare('SELECT hash FROM users LIMIT 1').get() as { hash: string }).hash, /^scrypt\$16384\$8\$1\$/);
});

test('the form needs a login; the session belongs to the logged-in user; logout ends the login', async (t) => {
  const setup = await localSetup(t);
  const broker = await startTestBroker(t, setup.config);
  const anonymous = new WebClient(broker.url);
  const root = await anonymous.get('/');
  t.is(root.status, 303);
  t.is(root.location, '/login?next=%2F');
  t.is((await anonymous.api('POST', '/api/v1/sessions', { machine: 'blank', user: 'alice' })).status, 401);

  const alice = await loggedIn(broker.url, 'alice');
  const form = await alice.get('/');
  t.regex(form.text, /Desktop for <strong>alice<\/strong>/);
  t.notRegex(form.text, /name="user"/);
  const created = await alice.post('/sessions', { machine: 'blank', user: 'mallory', lifetimeS: '3600' });
  t.is(created.status, 303);
  const row = broker.services.manager.list()[0]!;
  t.is(row.owner, 'alice', 'the typed name is ignored once logged in');
  t.is(row.email, 'alice@example.org');
  await alice.post('/logout', {});
  t.is((await alice.get('/')).status, 303);
});

test('wrong password, unknown user and empty password get the same answer; the rate limit engages with a clear wait', async (t) => {
  const setup = await localSetup(t);
  const broker = await startTestBroker(t, setup.config);
  const b = new WebClient(broker.url);
  await b.get('/login');
  const wrong = await b.post('/login', { user: 'alice', password: 'nope-nope' });
  const unknown = await b.post('/login', { user: 'zoe', password: 'nope-nope' });
  t.is(wrong.status, 401);
  t.is(unknown.status, 401);
  t.regex(wrong.text, /Invalid user name or password/);
  t.regex(unknown.text, /Invalid user name or password/);
  t.notRegex(wrong.text, /nope-nope/, 'the password is not echoed');
  const third = await b.post('/login', { user: 'alice', password: '' });
  t.is(third.status, 401);
  const limited = await b.post('/login', { user: 'alice', password: PASSWORDS.alice });
  t.is(limited.status, 429, 'even the right password waits once the limit is reached');
  t.regex(limited.text, /Too many failed logins\. Try again in \d+ s\./);
  // Another IP-less client for another user is limited by IP too (same 127.0.0.1).
  const other = new WebClient(broker.url);
  await other.get('/login');
  t.is((await other.post('/login', { user: 'bob', password: PASSWORDS.bob })).status, 429);
});

test('CSRF: forms and cookie API calls without the token are refused and change nothing', async (t) => {
  const setup = await localSetup(t);
  const broker = await startTestBroker(t, setup.config);
  const alice = await loggedIn(broker.url, 'alice');
  const forged = await alice.post('/sessions', { machine: 'blank', lifetimeS: '3600' }, { withCsrf: false });
  t.is(forged.status, 403);
  t.regex(forged.text, /did not come from this site/);
  t.is((await alice.api('POST', '/api/v1/sessions', { machine: 'blank' })).status, 403, 'cookie API call without X-CSRF-Token');
  t.deepEqual(broker.services.manager.list(), []);
  const ok = await alice.api('POST', '/api/v1/sessions', { machine: 'blank' }, { withCsrf: true });
  t.is(ok.status, 201);
  const noCsrfStop = await alice.post(`/s/${ok.json.token}/stop`, {}, { withCsrf: false });
  t.is(noCsrfStop.status, 403);
  t.is(broker.services.manager.list().length, 1);
  // Login itself is protected too (no login CSRF).
  const fresh = new WebClient(broker.url);
  t.is((await fresh.post('/login', { user: 'alice', password: PASSWORDS.alice }, { withCsrf: false })).status, 403);
});

test('holding the share link lets you use the desktop, not stop it; the owner and an admin can', async (t) => {
  const setup = await localSetup(t);
  const broker = await startTestBroker(t, setup.config);
  const alice = await loggedIn(broker.url, 'alice');
  const bob = await loggedIn(broker.url, 'bob');
  const root = await loggedIn(broker.url, 'root');
  const { json: s } = await alice.api('POST', '/api/v1/sessions', { machine: 'blank' }, { withCsrf: true });
  const bobPage = await bob.get(`/s/${s.token}`);
  t.is(bobPage.status, 200);
  t.regex(bobPage.text, />Connect</);
  t.notRegex(bobPage.text, /\/stop"/);
  t.regex(bobPage.text, /Shared with you by alice/);
  t.is((await bob.post(`/s/${s.token}/stop`, {})).status, 403);
  t.is((await bob.api('DELETE', `/api/v1/sessions/${s.token}`, undefined, { withCsrf: true })).status, 403);
  t.is((await bob.post(`/s/${s.token}/extend`, {})).status, 403);
  t.is((await bob.api('GET', '/api/v1/sessions')).json.length, 0, 'bob lists only his own');
  t.is((await alice.api('GET', '/api/v1/sessions')).json.length, 1);
  t.regex((await bob.get('/manage')).text, /You have no desktop running/);

  const admin = await root.get('/manage');
  t.regex(admin.text, /All desktops/);
  t.regex(admin.text, /<td>alice<\/td>/);
  t.regex(admin.text, /Host: \d+ CPUs, load/);
  t.regex(admin.text, /Stop all desktops/);
  t.is((await bob.post('/admin/stop-all', { confirm: 'yes' })).status, 403);
  t.is((await root.post('/admin/stop-all', {})).status, 400, 'stop all needs the confirmation box');
  t.is(broker.services.manager.list().length, 1);
  t.is((await root.post(`/s/${s.token}/extend`, {})).status, 303, 'an admin may extend');
  t.is((await root.post('/admin/stop-all', { confirm: 'yes' })).status, 303);
  t.deepEqual(broker.services.manager.list(), []);
  t.regex((await alice.get(`/s/${s.token}`)).text, /stopped by root \(administrator, stop all\)/);
});

test('API tokens issued by qwdctl work without cookies or CSRF, act as their user, and can be revoked', async (t) => {
  const setup = await localSetup(t);
  const broker = await startTestBroker(t, setup.config);
  const issued = JSON.parse((await qwdctl(['--config', setup.configFile, 'tokens', 'issue', 'alice', '--json'])).stdout);
  t.regex(issued.token, /^qwd_[A-Za-z0-9_-]{43}$/);
  const auth = { authorization: `Bearer ${issued.token}`, 'content-type': 'application/json' };
  const created = await fetch(`${broker.url}/api/v1/sessions`, { method: 'POST', headers: auth, body: JSON.stringify({ machine: 'blank', user: 'mallory' }) });
  t.is(created.status, 201);
  t.is(broker.services.manager.list()[0]!.owner, 'alice');
  const listed = JSON.parse((await qwdctl(['--config', setup.configFile, 'tokens', 'list', '--json'])).stdout);
  t.is(listed[0].user, 'alice');
  t.truthy(listed[0].lastUsedAt);
  t.false(fs.readFileSync(path.join(setup.stateDir, 'qwd.sqlite')).includes(issued.token), 'only the hash is stored');
  t.is((await qwdctl(['--config', setup.configFile, 'tokens', 'revoke', issued.id])).code, 0);
  const after = await fetch(`${broker.url}/api/v1/sessions`, { headers: auth });
  t.is(after.status, 401);
  t.regex((await after.json()).error.message, /not valid/);
});

test('chained backends: the first is down, the second accepts; all down says "unavailable"', async (t) => {
  const port = await closedPort();
  const setup = await localSetup(t, { auth: { backends: [{ type: 'ldap', url: `ldap://127.0.0.1:${port}`, baseDn: 'dc=x', timeoutMs: 1000 }, { type: 'local' }] } });
  const broker = await startTestBroker(t, setup.config);
  const alice = await loggedIn(broker.url, 'alice');
  t.regex((await alice.get('/')).text, /Desktop for <strong>alice<\/strong>/);
  const onlyDown = makeSetup(t, { auth: { backends: [{ type: 'imap', host: '127.0.0.1', port, secure: false, timeoutMs: 1000 }] } });
  const broker2 = await startTestBroker(t, onlyDown.config);
  const b = new WebClient(broker2.url);
  await b.get('/login');
  const res = await b.post('/login', { user: 'alice', password: 'whatever-1' });
  t.is(res.status, 503);
  t.regex(res.text, /login service is unavailable/);
  t.notRegex(res.text, /ECONNREFUSED|Error:|at /, 'no stack trace or error code for the user');
});

test('after logins, sessions and stops, no password appears in the state dir, run dirs or logs', async (t) => {
  const setup = await localSetup(t);
  const logFile = path.join(setup.dir, 'broker.log');
  const stream = fs.createWriteStream(logFile);
  const broker = await startBroker(setup.config, createLogger('trace', stream));
  t.teardown(async () => {
    await stopAllVms(broker);
    await broker.close();
  });
  const alice = await loggedIn(broker.url, 'alice');
  const bad = new WebClient(broker.url);
  await bad.get('/login');
  await bad.post('/login', { user: 'bob', password: 'bob-typo-Secret' });
  const { json: s } = await alice.api('POST', '/api/v1/sessions', { machine: 'blank' }, { withCsrf: true });
  t.is((await alice.api('DELETE', `/api/v1/sessions/${s.token}`, undefined, { withCsrf: true })).status, 204);
  await new Promise<void>((r) => stream.end(r));
  const files: string[] = [];
  const walk = (dir: string) => {
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.isFile()) files.push(p);
    }
  };
  walk(setup.dir);
  t.true(files.some((f) => f.endsWith('qwd.sqlite')));
  t.true(fs.statSync(logFile).size > 1000, 'the trace log has content');
  for (const file of files) {
    const content = fs.readFileSync(file);
    for (const secret of [...Object.values(PASSWORDS), 'bob-typo-Secret']) t.false(content.includes(secret), `${secret} found in ${file}`);
  }
});
