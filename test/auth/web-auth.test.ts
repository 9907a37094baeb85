// Who may create, see and stop a desktop, with local accounts made by the
// real qwdctl: login, CSRF, rate limiting, ownership, admins, API tokens,
// chained backends, and no password written anywhere.
import test, { type ExecutionContext } from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { startBroker } from '../../src/main.js';
import { createLogger } from '../../src/log.js';
import type { Config } from '../../src/config/schema.js';
import { makeSetup, requireQemu } from '../helpers/env.js';
import { startTestBroker, stopAllVms } from '../helpers/broker.js';
import { qwdctl } from '../helpers/cli.js';
import { WebClient } from '../helpers/web-client.js';
import { closedPort } from '../helpers/peer-process.js';
import { startSlapd } from '../helpers/slapd.js';
import { startDovecot } from '../helpers/dovecot.js';

/** A broker that logs to a file in the setup's dir (to search it for passwords or read what it said), stopped with its VMs in teardown. */
async function brokerWithLog(t: ExecutionContext, setup: { dir: string; config: Config }, level: 'trace' | 'debug' | 'info') {
  const logFile = path.join(setup.dir, 'broker.log');
  const stream = fs.createWriteStream(logFile);
  const broker = await startBroker(setup.config, createLogger(level, stream));
  t.teardown(async () => {
    await stopAllVms(broker);
    await broker.close();
  });
  return { broker, logFile, stream };
}

test.before(() => requireQemu());

const PASSWORDS = { alice: 'alice-Secret-4711', bob: 'bob-Secret-0815', root: 'admin-Secret-9999' };

async function localSetup(t: import('ava').ExecutionContext, extra: Record<string, unknown> = {}) {
  const setup = makeSetup(t, { auth: { backends: [{ type: 'local' }], rateLimit: { maxFailures: 3, maxFailuresPerClient: 3, windowS: 60 } }, ...extra });
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

test('CSRF in none mode: a cookie API call without the token is refused though nobody is logged in; cookie-less scripts need none', async (t) => {
  const setup = makeSetup(t);
  const broker = await startTestBroker(t, setup.config);
  const browser = new WebClient(broker.url);
  t.is((await browser.get('/')).status, 200);
  t.true(browser.hasCookie, 'the form page starts a browser session');
  const forged = await browser.api('POST', '/api/v1/sessions', { machine: 'blank', user: 'ada' });
  t.is(forged.status, 403);
  t.is(forged.json.error.code, 'QWD_CSRF');
  t.deepEqual(broker.services.manager.list(), [], 'nothing was created');
  const created = await browser.api('POST', '/api/v1/sessions', { machine: 'blank', user: 'ada' }, { withCsrf: true });
  t.is(created.status, 201);
  t.is((await browser.api('POST', `/api/v1/sessions/${created.json.token}/extend`, { byS: 60 })).status, 403, 'extend with the cookie, no token');
  t.is((await browser.api('DELETE', `/api/v1/sessions/${created.json.token}`)).status, 403, 'stop with the cookie, no token');
  t.is(broker.services.manager.list().length, 1);
  // A cookie the broker never issued (or one from an ended browser session) is still a cookie: the token is needed.
  const stale = await fetch(`${broker.url}/api/v1/sessions`, { method: 'POST', headers: { 'content-type': 'application/json', cookie: 'qwd.sid=s%3Aforged.sig' }, body: JSON.stringify({ machine: 'blank', user: 'eve' }) });
  t.is(stale.status, 403);
  const script = await fetch(`${broker.url}/api/v1/sessions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ machine: 'blank', user: 'bea' }) });
  t.is(script.status, 201, 'no cookie, nothing ambient: no token needed');
  t.is((await browser.api('DELETE', `/api/v1/sessions/${created.json.token}`, undefined, { withCsrf: true })).status, 204);
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

test('an API token follows its local account: admin off takes its admin rights, users del deletes it', async (t) => {
  const setup = await localSetup(t);
  const broker = await startTestBroker(t, setup.config);
  const c = ['--config', setup.configFile];
  const issue = async (user: string, admin: boolean) => JSON.parse((await qwdctl([...c, 'tokens', 'issue', user, ...(admin ? ['--admin'] : []), '--json'])).stdout) as { id: string; token: string };
  const rootToken = await issue('root', true);
  const bobToken = await issue('bob', false);
  const call = (token: string, method = 'GET', body?: unknown) => fetch(`${broker.url}/api/v1/sessions`, { method, headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body) });
  t.is((await call(bobToken.token, 'POST', { machine: 'blank' })).status, 201, 'bob makes a desktop');
  t.is(((await (await call(rootToken.token)).json()) as unknown[]).length, 1, 'the admin token sees every desktop');

  t.is((await qwdctl([...c, 'users', 'admin', 'root', 'off'])).code, 0);
  const demoted = await call(rootToken.token);
  t.is(demoted.status, 200, 'still root, no longer an admin');
  t.is(((await demoted.json()) as unknown[]).length, 0, 'root now sees only his own desktops');
  t.is((await qwdctl([...c, 'users', 'admin', 'root', 'on'])).code, 0);
  t.is(((await (await call(rootToken.token)).json()) as unknown[]).length, 1, 'admin again');

  const del = await qwdctl([...c, 'users', 'del', 'bob']);
  t.is(del.code, 0, del.stderr);
  t.regex(del.stdout, /deleted user bob and its 1 API token/);
  const gone = await call(bobToken.token);
  t.is(gone.status, 401, 'a deleted account\'s token is refused');
  t.regex(((await gone.json()) as { error: { message: string } }).error.message, /not valid/);
  const listed = JSON.parse((await qwdctl([...c, 'tokens', 'list', '--json'])).stdout) as Array<{ user: string }>;
  t.deepEqual(listed.map((k) => k.user), ['root'], 'bob\'s token was deleted with him');

  // A token whose row outlived its account (made before tokens were deleted with it) is refused too.
  const db = new Database(path.join(setup.stateDir, 'qwd.sqlite'));
  t.teardown(() => db.close());
  const orphan = await issue('alice', false);
  db.prepare('DELETE FROM users WHERE name = ?').run('alice');
  t.is((await call(orphan.token)).status, 401, 'no account, no token (only local accounts are configured)');
});

test('chained backends: the first is down, the second accepts; all down says "unavailable"', async (t) => {
  const port = await closedPort();
  const setup = await localSetup(t, { auth: { backends: [{ type: 'ldap', url: `ldap://127.0.0.1:${port}`, startTls: true, baseDn: 'dc=x', timeoutMs: 1000 }, { type: 'local' }] } });
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

test('a backend that accepts TCP but never answers is skipped after its timeout and the next one logs the user in', async (t) => {
  const net = await import('node:net');
  const sockets = new Set<import('node:net').Socket>();
  const silent = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('error', () => {
      // The broker gave up on it (timeout): expected.
    });
  });
  await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => {
    for (const s of sockets) s.destroy();
    silent.close(() => resolve());
  }));
  const port = (silent.address() as import('node:net').AddressInfo).port;
  const setup = await localSetup(t, { auth: { backends: [{ type: 'ldap', url: `ldap://127.0.0.1:${port}`, startTls: true, baseDn: 'dc=x', timeoutMs: 1000 }, { type: 'local' }] } });
  const { broker, logFile, stream } = await brokerWithLog(t, setup, 'info');
  const b = new WebClient(broker.url);
  await b.get('/login');
  const started = Date.now();
  const res = await b.post('/login', { user: 'alice', password: PASSWORDS.alice, next: '/' });
  const tookMs = Date.now() - started;
  t.is(res.status, 303, 'logged in by the local backend');
  t.true(sockets.size > 0, 'the LDAP backend did connect to the silent server');
  // Not a speed target (the local backend's scrypt is slow on a loaded CI host): the
  // broker waited for the LDAP timeout, and gave up long before a TCP-level timeout.
  t.true(tookMs >= 900 && tookMs < 30_000, `the silent LDAP server cost its timeout (1000 ms), not a TCP timeout: ${tookMs} ms`);
  await new Promise<void>((r) => stream.end(r));
  const lines = fs.readFileSync(logFile, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as { msg: string; backend?: string; user?: string });
  t.true(lines.some((l) => l.msg === 'login backend unavailable; trying the next' && l.backend === 'ldap'), 'the log says the LDAP backend was unavailable');
  t.true(lines.some((l) => l.msg === 'login accepted' && l.backend === 'local' && l.user === 'alice'));
});

test('after logins, sessions and stops, no password appears in the state dir, run dirs or logs', async (t) => {
  const setup = await localSetup(t);
  const { broker, logFile, stream } = await brokerWithLog(t, setup, 'trace');
  const alice = await loggedIn(broker.url, 'alice');
  const bad = new WebClient(broker.url);
  await bad.get('/login');
  await bad.post('/login', { user: 'bob', password: 'bob-typo-Secret' });
  const { json: s } = await alice.api('POST', '/api/v1/sessions', { machine: 'blank' }, { withCsrf: true });
  const { json: running } = await alice.api('POST', '/api/v1/sessions', { machine: 'blank' }, { withCsrf: true });
  const secrets = [...Object.values(PASSWORDS), 'bob-typo-Secret'];
  // While a desktop runs: its run dir (QMP/VNC sockets, pid file, argv) is there to be scanned.
  const runDir = broker.services.manager.get(running.id)!.runDir;
  t.true(fs.existsSync(runDir));
  t.true(fs.readdirSync(runDir).length > 0, 'the live run dir has content');
  await flushed(stream);
  assertNoSecretsUnder(t, setup.dir, logFile, secrets, [runDir]);
  for (const x of [s, running]) t.is((await alice.api('DELETE', `/api/v1/sessions/${x.token}`, undefined, { withCsrf: true })).status, 204);
  await new Promise<void>((r) => stream.end(r));
  assertNoSecretsUnder(t, setup.dir, logFile, secrets);
});

/** Waits until everything written to the log stream so far is in the file (the broker keeps logging). */
async function flushed(stream: fs.WriteStream): Promise<void> {
  await new Promise<void>((resolve, reject) => stream.write('', (err) => (err ? reject(err) : resolve())));
}

/**
 * Every file under dir (state dir, run dirs, the captured log) is free of
 * every secret; each of liveRunDirs (desktops still running) was among the
 * scanned and had files in it.
 */
function assertNoSecretsUnder(t: import('ava').ExecutionContext, dir: string, logFile: string, secrets: string[], liveRunDirs: string[] = []): void {
  const files: string[] = [];
  const walk = (d: string) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.isFile()) files.push(p);
    }
  };
  walk(dir);
  t.true(files.some((f) => f.endsWith('qwd.sqlite')));
  for (const runDir of liveRunDirs) t.true(files.some((f) => f.startsWith(runDir + path.sep)), `the live run dir ${runDir} is under the scanned dir`);
  t.true(files.includes(logFile) && fs.statSync(logFile).size > 1000, 'the trace log is under the scanned dir and has content');
  for (const file of files) {
    const content = fs.readFileSync(file);
    for (const secret of secrets) t.false(content.includes(secret), `${secret} found in ${file}`);
  }
}

test('after LDAP, IMAP and SMTP logins (right and wrong), sessions and stops, no password appears in the state dir, run dirs or logs', async (t) => {
  const ldapUser = { uid: 'lena', password: 'lena-Ldap-Secret-31', mail: 'lena@example.org' };
  const imapUser = { user: 'ivan', password: 'ivan-Imap-Secret-32' };
  const smtpUser = { user: 'sam', password: 'sam-Smtp-Secret-33' };
  const [ldap, imap, smtp] = await Promise.all([startSlapd(t, { users: [ldapUser] }), startDovecot(t, [imapUser]), startDovecot(t, [smtpUser])]);
  const setup = await localSetup(t, { auth: { rateLimit: { maxFailures: 50, windowS: 60 }, backends: [
    { type: 'ldap', url: ldap.url, startTls: true, caFile: ldap.caFile, bindDn: ldap.serviceDn, bindPassword: ldap.servicePassword, baseDn: ldap.peopleDn },
    { type: 'imap', host: '127.0.0.1', port: imap.imapPort, secure: false, caFile: imap.caFile, emailDomain: 'example.org' },
    { type: 'smtp', host: '127.0.0.1', port: smtp.submissionPort, secure: false, caFile: smtp.caFile, emailDomain: 'example.org' },
    { type: 'local' },
  ] } });
  const { broker, logFile, stream } = await brokerWithLog(t, setup, 'trace');
  const running: Array<{ browser: WebClient; token: string; runDir: string }> = [];
  const logins: Array<[string, string, string]> = [['lena', ldapUser.password, 'ldap'], ['ivan', imapUser.password, 'imap'], ['sam', smtpUser.password, 'smtp'], ['alice', PASSWORDS.alice, 'local']];
  for (const [user, password] of logins) {
    const wrong = new WebClient(broker.url);
    await wrong.get('/login');
    t.is((await wrong.post('/login', { user, password: `${password}-typo` })).status, 401, `${user}: a wrong password goes through every backend and is refused`);
    const b = new WebClient(broker.url);
    await b.get('/login');
    t.is((await b.post('/login', { user, password })).status, 303, `${user} logs in`);
    await b.get('/');
    const { status, json: s } = await b.api('POST', '/api/v1/sessions', { machine: 'blank' }, { withCsrf: true });
    t.is(status, 201);
    const row = broker.services.manager.get(s.id)!;
    t.is(row.owner, user);
    t.true(fs.existsSync(row.runDir), 'a run dir was made');
    running.push({ browser: b, token: s.token, runDir: row.runDir });
  }
  const secrets = logins.flatMap(([, password]) => [password, `${password}-typo`]);
  // Scanned while every desktop still runs (run dirs full), then again after the stops.
  await flushed(stream);
  assertNoSecretsUnder(t, setup.dir, logFile, secrets, running.map((r) => r.runDir));
  for (const r of running) t.is((await r.browser.api('DELETE', `/api/v1/sessions/${r.token}`, undefined, { withCsrf: true })).status, 204);
  await new Promise<void>((r) => stream.end(r));
  const accepted = fs.readFileSync(logFile, 'utf8').split('\n').filter((l) => l.includes('"login accepted"')).map((l) => JSON.parse(l) as { backend: string; user: string });
  t.deepEqual(accepted.map((l) => [l.user, l.backend]), logins.map(([user, , via]) => [user, via]), 'each login was vouched for by the backend meant to test');
  assertNoSecretsUnder(t, setup.dir, logFile, secrets);
});

/** One request with an explicit cookie (the WebClient keeps its own), returning the raw Set-Cookie. */
async function send(url: string, method: string, path_: string, opts: { cookie?: string; form?: Record<string, string>; headers?: Record<string, string> } = {}) {
  const res = await fetch(url + path_, {
    method, redirect: 'manual',
    headers: { ...(opts.cookie ? { cookie: opts.cookie } : {}), ...(opts.form ? { 'content-type': 'application/x-www-form-urlencoded' } : {}), ...opts.headers },
    body: opts.form ? new URLSearchParams(opts.form) : undefined,
  });
  const text = await res.text();
  const setCookie = res.headers.get('set-cookie');
  // Every cookie set, as a browser would send them back (the login also sets qwd.known).
  const cookies = res.headers.getSetCookie().map((c) => c.split(';')[0]!);
  return { status: res.status, location: res.headers.get('location'), text, setCookie, cookie: cookies.length ? cookies.join('; ') : null, csrf: /name="_csrf" value="([^"]+)"/.exec(text)?.[1] ?? null };
}

test('the session cookie changes at login (no fixation); the pre-login cookie and a cookie replayed after logout are not logged in', async (t) => {
  const setup = await localSetup(t);
  const broker = await startTestBroker(t, setup.config);
  const before = await send(broker.url, 'GET', '/login');
  t.truthy(before.cookie && before.csrf);
  const login = await send(broker.url, 'POST', '/login', { cookie: before.cookie!, form: { user: 'alice', password: PASSWORDS.alice, next: '/', _csrf: before.csrf! } });
  t.is(login.status, 303);
  t.truthy(login.cookie);
  t.not(login.cookie, before.cookie, 'a new session id at login');
  t.is((await send(broker.url, 'GET', '/', { cookie: before.cookie! })).location, '/login?next=%2F', 'the cookie from before the login is not logged in');
  const home = await send(broker.url, 'GET', '/', { cookie: login.cookie! });
  t.regex(home.text, /Desktop for <strong>alice<\/strong>/);
  const logout = await send(broker.url, 'POST', '/logout', { cookie: login.cookie!, form: { _csrf: home.csrf! } });
  t.is(logout.status, 303);
  const replay = await send(broker.url, 'GET', '/', { cookie: login.cookie! });
  t.is(replay.status, 303, 'the logged-out cookie, replayed, is not logged in');
  t.is(replay.location, '/login?next=%2F');
  t.is((await send(broker.url, 'GET', '/manage', { cookie: login.cookie! })).status, 303);
});

test('the cookie is Secure behind a trusted proxy saying https, and not when the proxy is not trusted', async (t) => {
  const trusted = await startTestBroker(t, makeSetup(t, { trustProxy: 1 }).config);
  // An anonymous visitor gets only the CSRF cookie (no browser session is stored for them).
  const https = await send(trusted.url, 'GET', '/', { headers: { 'x-forwarded-proto': 'https' } });
  t.regex(https.setCookie ?? '', /^qwd\.csrf=[^;]+;.*; Secure/i);
  t.regex(https.setCookie ?? '', /HttpOnly/i);
  t.regex(https.setCookie ?? '', /SameSite=Lax/i);
  const plain = await send(trusted.url, 'GET', '/');
  t.truthy(plain.setCookie);
  t.notRegex(plain.setCookie!, /Secure/i, 'plain http through the proxy');
  const untrusted = await startTestBroker(t, makeSetup(t).config);
  const spoofed = await send(untrusted.url, 'GET', '/', { headers: { 'x-forwarded-proto': 'https' } });
  t.truthy(spoofed.setCookie);
  t.notRegex(spoofed.setCookie!, /Secure/i, 'X-Forwarded-Proto is ignored without trustProxy');
});

test('a login ends after auth.sessionTtlS; qwdctl users admin off and del take effect at the next request', async (t) => {
  const setup = await localSetup(t, { auth: { backends: [{ type: 'local' }], sessionTtlS: 600 } });
  const broker = await startTestBroker(t, setup.config);
  const alice = await loggedIn(broker.url, 'alice');
  const root = await loggedIn(broker.url, 'root');
  const bob = await loggedIn(broker.url, 'bob');
  t.regex((await root.get('/manage')).text, /All desktops/);
  // Move alice's login start 601 s into the past, as if the clock had run on.
  const { db } = broker.services;
  const moved = db.prepare("UPDATE web_sessions SET data = json_set(data, '$.loggedInAt', ?) WHERE json_extract(data, '$.identity.user') = ?").run(Date.now() - 601_000, 'alice').changes;
  t.is(moved, 1);
  const expired = await alice.get('/');
  t.is(expired.status, 303);
  t.is(expired.location, '/login?next=%2F');
  t.is((await alice.api('GET', '/api/v1/sessions')).status, 401);
  t.regex((await bob.get('/')).text, /Desktop for <strong>bob<\/strong>/, 'a login within its lifetime stays');

  t.is((await qwdctl(['--config', setup.configFile, 'users', 'admin', 'root', 'off'])).code, 0);
  const demoted = await root.get('/manage');
  t.notRegex(demoted.text, /All desktops/, 'no longer an admin, without logging in again');
  t.is((await root.post('/admin/stop-all', { confirm: 'yes' })).status, 403);
  t.is((await qwdctl(['--config', setup.configFile, 'users', 'admin', 'bob', 'on'])).code, 0);
  t.regex((await bob.get('/manage')).text, /All desktops/, 'promotion takes effect too');
  t.is((await qwdctl(['--config', setup.configFile, 'users', 'del', 'bob'])).code, 0);
  t.is((await bob.get('/')).status, 303, 'a deleted account is logged out');
  t.is((await bob.api('POST', '/api/v1/sessions', { machine: 'blank' }, { withCsrf: true })).status, 401);
});

test('after a login the browser stays on the site, whatever next says (backslash, scheme-relative, absolute, tab)', async (t) => {
  const setup = await localSetup(t);
  const broker = await startTestBroker(t, setup.config);
  const origin = new URL(broker.url).origin;
  // As typed into the address bar (query-encoded) and as the login form posts them back (decoded).
  const hostile = ['/%5Cevil.com', '//evil.com', 'https://evil.com', '/%09/evil.com', '/%5C/evil.com', '/%0A/evil.com', '%5C%5Cevil.com', 'javascript:alert(1)'];
  for (const next of hostile) {
    const b = new WebClient(broker.url);
    const form = await b.get(`/login?next=${next}`);
    const echoed = /name="next" value="([^"]*)"/.exec(form.text)?.[1];
    t.is(echoed, '/', `${next}: the login form carries "/" instead`);
    // A crafted form (a page elsewhere cannot post without the CSRF token, but the check must not rely on that).
    const res = await b.post('/login', { user: 'alice', password: PASSWORDS.alice, next: decodeURIComponent(next) });
    t.is(res.status, 303, next);
    t.is(res.location, '/', `${next}: redirected home, not to ${res.location}`);
    t.is(new URL(res.location!, broker.url).origin, origin);
  }
  const b = new WebClient(broker.url);
  await b.get('/login?next=%2Fmanage%3Fx%3D1');
  const ok = await b.post('/login', { user: 'alice', password: PASSWORDS.alice, next: '/manage?x=1' });
  t.is(ok.location, '/manage?x=1', 'a path on the site is kept');
});

test('behind a trusted proxy (trustProxy 1 or loopback), a forged left-most X-Forwarded-For gets no fresh rate-limit budget', async (t) => {
  for (const trustProxy of [1, 'loopback'] as const) {
    const setup = await localSetup(t, { trustProxy });
    const broker = await startTestBroker(t, setup.config);
    // What nginx sends with $proxy_add_x_forwarded_for: whatever the client wrote, then the address it saw.
    const viaProxy = (forged: string, client = '203.0.113.7') => ({ 'x-forwarded-for': `${forged}, ${client}` });
    const attempt = async (user: string, forged: string, client?: string) => {
      const page = await send(broker.url, 'GET', '/login', { headers: viaProxy(forged, client) });
      return send(broker.url, 'POST', '/login', { cookie: page.cookie!, headers: viaProxy(forged, client), form: { user, password: 'wrong-guess-1', _csrf: page.csrf! } });
    };
    // Three failures (the limit), each claiming another address and another user name.
    for (let i = 0; i < 3; i++) t.is((await attempt(`user${i}`, `198.51.100.${i}`)).status, 401, `${trustProxy}: guess ${i}`);
    const fourth = await attempt('user9', '198.51.100.99');
    t.is(fourth.status, 429, `${trustProxy}: the real client address (right-most) is limited, whatever it claims`);
    t.regex(fourth.text, /Try again in \d+ s/);
    t.is((await attempt('user10', '198.51.100.100', '203.0.113.8')).status, 401, `${trustProxy}: another real client has its own budget (the header is read)`);
  }
});

test('20 concurrent wrong-password logins for one user: at most the limit reach the backend, the rest are told to wait', async (t) => {
  const setup = await localSetup(t);
  const { broker, logFile, stream } = await brokerWithLog(t, setup, 'info');
  // Twenty browsers, each with its own session and CSRF token, then every guess at once.
  const browsers = await Promise.all(Array.from({ length: 20 }, async () => {
    const b = new WebClient(broker.url);
    await b.get('/login');
    return b;
  }));
  const answers = await Promise.all(browsers.map((b, i) => b.post('/login', { user: 'alice', password: `guess-number-${i}` })));
  const statuses = answers.map((a) => a.status);
  t.is(statuses.filter((s) => s === 401).length, 3, `the configured limit (3) is checked, no more: ${statuses.join(' ')}`);
  t.is(statuses.filter((s) => s === 429).length, 17);
  for (const a of answers.filter((x) => x.status === 429)) t.regex(a.text, /Too many failed logins\. Try again in \d+ s\./);
  await new Promise<void>((r) => stream.end(r));
  const refused = fs.readFileSync(logFile, 'utf8').split('\n').filter((l) => l.includes('"login refused by backend"'));
  t.is(refused.length, 3, 'the local backend was asked three times');
});

test('an API token for a user of another backend keeps the identity it was issued with', async (t) => {
  const port = await closedPort();
  const setup = await localSetup(t, { auth: { backends: [{ type: 'imap', host: '127.0.0.1', port, secure: false, timeoutMs: 1000 }, { type: 'local' }] } });
  const broker = await startTestBroker(t, setup.config);
  const issued = JSON.parse((await qwdctl(['--config', setup.configFile, 'tokens', 'issue', 'ivan', '--admin', '--json'])).stdout) as { token: string };
  const res = await fetch(`${broker.url}/api/v1/sessions`, { method: 'POST', headers: { authorization: `Bearer ${issued.token}`, 'content-type': 'application/json' }, body: JSON.stringify({ machine: 'blank' }) });
  t.is(res.status, 201, 'no local account is needed: a name from another backend keeps the identity it was issued with');
  t.is(broker.services.manager.list()[0]!.owner, 'ivan');
});
