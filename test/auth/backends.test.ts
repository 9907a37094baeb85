// The password backends against real servers started by the tests: OpenLDAP
// slapd (StartTLS, LDAPS, search-then-bind, direct bind, admin group) and
// Dovecot (IMAP, SMTP submission AUTH) — directly and through the login form.
import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { stringify } from 'yaml';
import { groupNameOfDn, ldapBackend, pickUserName, sameDn } from '../../src/auth/backends/ldap.js';
import { imapBackend } from '../../src/auth/backends/imap.js';
import { smtpBackend } from '../../src/auth/backends/smtp.js';
import { escapeDnValue, escapeFilterValue } from '../../src/auth/escape.js';
import type { LdapBackendConfig } from '../../src/config/auth.js';
import { startSlapd, type LdapServer } from '../helpers/slapd.js';
import { startDovecot } from '../helpers/dovecot.js';
import { makeSetup, requireProgram, requireQemu, waitFor } from '../helpers/env.js';
import { startTestBroker } from '../helpers/broker.js';
import { WebClient } from '../helpers/web-client.js';
import { closedPort } from '../helpers/peer-process.js';

const USERS = [
  { uid: 'alice', password: 'alice-Secret-4711', cn: 'Alice Liddell', mail: 'alice@example.org' },
  { uid: 'bob', password: 'bob-Secret-0815', cn: 'Bob Builder', mail: 'bob@example.org' },
];
const GROUPS = [{ cn: 'desktop-admins', members: ['alice'] }, { cn: 'physics', members: ['alice'] }];

function ldapConfig(server: LdapServer, over: Partial<LdapBackendConfig> = {}): LdapBackendConfig {
  return {
    type: 'ldap', name: 'ldap', url: server.url, startTls: true, allowCleartext: false, caFile: server.caFile, bindDn: server.serviceDn, bindPassword: server.servicePassword,
    baseDn: server.peopleDn, filter: '(uid={user})', userDnTemplate: null, userAttribute: 'uid', mailAttribute: 'mail',
    adminGroupDn: `cn=desktop-admins,${server.groupsDn}`, timeoutMs: 3000, groupBaseDn: null, memberOfAttribute: null, ...over,
  };
}

test('escaping: filter values per RFC 4515, DN values per RFC 4514', (t) => {
  t.is(escapeFilterValue('*)(uid=*'), '\\2a\\29\\28uid=\\2a');
  t.is(escapeFilterValue('admin)(|(a=b'), 'admin\\29\\28|\\28a=b');
  t.is(escapeFilterValue('back\\slash\u0000'), 'back\\5cslash\\00');
  t.is(escapeFilterValue('é'), '\\c3\\a9');
  t.is(escapeDnValue('o,brien+x'), 'o\\,brien\\+x');
  t.is(escapeDnValue(' lead#'), '\\ lead#');
  t.is(escapeDnValue('#hash'), '\\#hash');
});

test('LDAP search-then-bind over StartTLS: valid, wrong password, empty password, unknown user, group admin', async (t) => {
  const server = await startSlapd(t, { users: USERS, groups: GROUPS });
  const ldap = ldapBackend(ldapConfig(server));
  const alice = await ldap.authenticate!('alice', USERS[0]!.password);
  t.true(alice.ok);
  if (alice.ok) {
    t.is(alice.identity.user, 'alice');
    t.is(alice.identity.email, 'alice@example.org');
    t.true(alice.identity.admin, 'member of the admin group');
  }
  const bob = await ldap.authenticate!('bob', USERS[1]!.password);
  t.true(bob.ok && !bob.identity.admin);
  t.like(await ldap.authenticate!('alice', 'wrong-password'), { ok: false, reason: 'invalid' });
  t.like(await ldap.authenticate!('alice', ''), { ok: false, reason: 'invalid' }, 'an empty password is never an anonymous bind');
  t.like(await ldap.authenticate!('nobody', 'whatever-1'), { ok: false, reason: 'invalid' });
});

test('LDAP filter injection: crafted user names match nobody, even with a valid password', async (t) => {
  const server = await startSlapd(t, { users: USERS, groups: GROUPS });
  const ldap = ldapBackend(ldapConfig(server));
  for (const name of ['*)(uid=*', 'admin)(|(a=b', '*', 'alice)(uid=bob', 'ali*']) {
    t.like(await ldap.authenticate!(name, USERS[0]!.password), { ok: false, reason: 'invalid' }, name);
  }
  const direct = ldapBackend(ldapConfig(server, { userDnTemplate: `uid={user},${server.peopleDn}`, bindDn: null, bindPassword: null }));
  t.like(await direct.authenticate!('alice,ou=people', USERS[0]!.password), { ok: false }, 'DN injection in a direct bind');
});

test('LDAP direct bind over LDAPS, and a server that is down', async (t) => {
  const server = await startSlapd(t, { users: USERS, groups: GROUPS });
  const direct = ldapBackend(ldapConfig(server, { url: server.ldapsUrl, startTls: false, bindDn: null, bindPassword: null, userDnTemplate: `uid={user},${server.peopleDn}` }));
  const ok = await direct.authenticate!('bob', USERS[1]!.password);
  t.true(ok.ok);
  if (ok.ok) t.is(ok.identity.email, 'bob@example.org');
  t.like(await direct.authenticate!('bob', 'nope-nope'), { ok: false, reason: 'invalid' });
  const port = await closedPort();
  const down = ldapBackend(ldapConfig(server, { url: `ldap://127.0.0.1:${port}` }));
  t.like(await down.authenticate!('alice', USERS[0]!.password), { ok: false, reason: 'unavailable' });
  await server.stop();
  t.like(await direct.authenticate!('bob', USERS[1]!.password), { ok: false, reason: 'unavailable' });
});

test('LDAP through the login form: the admin group sees every desktop; an ordinary user only theirs', async (t) => {
  requireQemu();
  const server = await startSlapd(t, { users: USERS, groups: GROUPS });
  const setup = makeSetup(t, { auth: { backends: [{ type: 'ldap', url: server.url, startTls: true, caFile: server.caFile, bindDn: server.serviceDn, bindPassword: server.servicePassword, baseDn: server.peopleDn, adminGroupDn: `cn=desktop-admins,${server.groupsDn}` }] } });
  const broker = await startTestBroker(t, setup.config);
  const login = async (user: string, password: string) => {
    const b = new WebClient(broker.url);
    await b.get('/login');
    const res = await b.post('/login', { user, password });
    await b.get('/');
    return { b, res };
  };
  const { b: bob, res } = await login('bob', USERS[1]!.password);
  t.is(res.status, 303);
  const created = await bob.api('POST', '/api/v1/sessions', { machine: 'blank' }, { withCsrf: true });
  t.is(created.status, 201);
  t.is(broker.services.manager.get(created.json.id)!.email, 'bob@example.org', 'mail from the directory');
  const { b: alice } = await login('alice', USERS[0]!.password);
  t.regex((await alice.get('/manage')).text, /All desktops[\s\S]*<td>bob<\/td>/);
  const injected = await login('*)(uid=*', USERS[0]!.password);
  t.is(injected.res.status, 401);
  const empty = await login('alice', '');
  t.is(empty.res.status, 401);
});

test('LDAP identity helpers: user name from the entry, group cn from a DN, DN comparison', (t) => {
  t.is(pickUserName(['alice'], 'ALICE'), 'alice');
  t.is(pickUserName(['ali', 'alice'], 'Alice'), 'alice', 'the value matching the typed name among several');
  t.is(pickUserName(['alice'], 'alice@example.org'), 'alice', 'logged in by another attribute: the first value');
  t.is(pickUserName(['bad name', ''], 'x'), null);
  t.is(pickUserName([], 'alice'), null);
  t.is(groupNameOfDn('cn=physics,ou=groups,dc=example,dc=org'), 'physics');
  t.is(groupNameOfDn('CN = Lab\\2C B ,ou=groups'), 'Lab, B');
  t.is(groupNameOfDn('cn=\\c3\\a9quipe,ou=groups'), 'équipe');
  t.is(groupNameOfDn('ou=groups,dc=example'), null);
  t.true(sameDn('cn=Desktop-Admins, ou=groups,dc=example,dc=org', 'CN=desktop-admins,OU=groups,DC=example,DC=org'));
  t.false(sameDn('cn=desktop-admins,ou=groups,dc=example', 'cn=desktop-admin,ou=groups,dc=example'));
});

test('LDAP identity is the entry\'s userAttribute, not the typed name: "ALICE" and her mail address log in as "alice"', async (t) => {
  const server = await startSlapd(t, { users: USERS, groups: GROUPS });
  const search = ldapBackend(ldapConfig(server, { filter: '(|(uid={user})(mail={user}))' }));
  for (const typed of ['ALICE', 'Alice', 'alice@example.org']) {
    const r = await search.authenticate!(typed, USERS[0]!.password);
    t.true(r.ok, typed);
    if (r.ok) t.is(r.identity.user, 'alice', typed);
  }
  const direct = ldapBackend(ldapConfig(server, { userDnTemplate: `uid={user},${server.peopleDn}`, bindDn: null, bindPassword: null }));
  const r = await direct.authenticate!('BOB', USERS[1]!.password);
  t.true(r.ok);
  if (r.ok) t.is(r.identity.user, 'bob', 'a direct bind reads the uid of the bound entry');
  const cn = ldapBackend(ldapConfig(server, { userAttribute: 'cn' }));
  const byCn = await cn.authenticate!('alice', USERS[0]!.password);
  t.like(byCn, { ok: false, reason: 'unavailable' }, '"Alice Liddell" is not a usable user name: refused, not passed on');
});

test('LDAP groups come from memberOf on the user entry and from a group search; memberOf alone can make an admin', async (t) => {
  const users = [...USERS, { uid: 'carol', password: 'carol-Secret-5', mail: 'carol@example.org', memberOf: ['cn=ops-admins,ou=groups,dc=example,dc=org'] }];
  const server = await startSlapd(t, { users, groups: GROUPS });
  const opsAdmins = `cn=ops-admins,${server.groupsDn}`;
  const viaMemberOf = ldapBackend(ldapConfig(server, { memberOfAttribute: 'memberOf', adminGroupDn: opsAdmins }));
  const carol = await viaMemberOf.authenticate!('carol', 'carol-Secret-5');
  t.true(carol.ok);
  if (carol.ok) {
    t.true(carol.identity.admin, 'memberOf names the admin group (no group entry lists her)');
    t.deepEqual(carol.identity.groups, ['ops-admins']);
  }
  const alice = await viaMemberOf.authenticate!('alice', USERS[0]!.password);
  t.true(alice.ok);
  if (alice.ok) {
    t.deepEqual(alice.identity.groups, ['desktop-admins', 'physics']);
    t.false(alice.identity.admin);
  }
  const bob = await viaMemberOf.authenticate!('bob', USERS[1]!.password);
  t.true(bob.ok && bob.identity.groups.length === 0 && !bob.identity.admin);

  const viaSearch = ldapBackend(ldapConfig(server, { groupBaseDn: server.groupsDn, adminGroupDn: opsAdmins }));
  const alice2 = await viaSearch.authenticate!('alice', USERS[0]!.password);
  t.true(alice2.ok);
  if (alice2.ok) t.deepEqual(alice2.identity.groups, ['desktop-admins', 'physics'], 'cn of the groups that list her as member');
  const carol2 = await viaSearch.authenticate!('carol', 'carol-Secret-5');
  t.true(carol2.ok);
  if (carol2.ok) t.false(carol2.identity.admin, 'without memberOfAttribute her memberOf value is not read');
});

test('a boot script with a group condition applies for an LDAP user in the group and not for one outside', async (t) => {
  requireQemu();
  requireProgram('genisoimage', 'genisoimage');
  requireProgram('isoinfo', 'genisoimage');
  const server = await startSlapd(t, { users: USERS, groups: GROUPS });
  const setup = makeSetup(t, {
    auth: { backends: [{ type: 'ldap', url: server.url, startTls: true, caFile: server.caFile, bindDn: server.serviceDn, bindPassword: server.servicePassword, baseDn: server.peopleDn, groupBaseDn: server.groupsDn }] },
    guest: { bootScripts: { scripts: [{ exec: 'echo physics-only @USER@', when: { groups: ['physics'] } }, { exec: 'echo for-everyone @USER@' }] } },
  }, {
    machines: (d) => {
      execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', path.join(d, 'scripted.qcow2'), '64M']);
      fs.writeFileSync(path.join(d, 'scripted.yml'), stringify({ name: 'scripted', image: 'scripted.qcow2', memoryMiB: { default: 128, max: 256 }, bootScripts: { delivery: 'cloud-init', scripts: [] } }));
    },
  });
  const broker = await startTestBroker(t, setup.config);
  const userData = async (user: string, password: string) => {
    const b = new WebClient(broker.url);
    await b.get('/login');
    t.is((await b.post('/login', { user, password })).status, 303, `${user} logs in`);
    await b.get('/');
    const created = await b.api('POST', '/api/v1/sessions', { machine: 'scripted' }, { withCsrf: true });
    t.is(created.status, 201, JSON.stringify(created.json));
    const iso = path.join(broker.services.manager.get(created.json.id)!.runDir, 'seed.iso');
    return execFileSync('isoinfo', ['-R', '-i', iso, '-x', '/user-data'], { encoding: 'utf8' });
  };
  const alice = await userData('alice', USERS[0]!.password);
  t.regex(alice, /echo physics-only alice/);
  t.regex(alice, /echo for-everyone alice/);
  const bob = await userData('bob', USERS[1]!.password);
  t.regex(bob, /echo for-everyone bob/);
  t.notRegex(bob, /physics-only/);
});

test('IMAP login: valid and invalid over STARTTLS and implicit TLS; server down', async (t) => {
  const mail = await startDovecot(t, [{ user: 'carol', password: 'carol-Secret-1' }]);
  const starttls = imapBackend({ type: 'imap', name: 'imap', host: '127.0.0.1', port: mail.imapPort, secure: false, caFile: mail.caFile, timeoutMs: 5000, emailDomain: 'example.org' });
  const ok = await starttls.authenticate!('carol', 'carol-Secret-1');
  t.true(ok.ok);
  if (ok.ok) t.is(ok.identity.email, 'carol@example.org');
  t.like(await starttls.authenticate!('carol', 'wrong-password'), { ok: false, reason: 'invalid' });
  t.like(await starttls.authenticate!('mallory', 'carol-Secret-1'), { ok: false, reason: 'invalid' });
  const implicit = imapBackend({ type: 'imap', name: 'imaps', host: '127.0.0.1', port: mail.imapsPort, secure: true, caFile: mail.caFile, timeoutMs: 5000, emailDomain: null });
  t.true((await implicit.authenticate!('carol', 'carol-Secret-1')).ok);
  const port = await closedPort();
  const down = imapBackend({ type: 'imap', name: 'down', host: '127.0.0.1', port, secure: false, caFile: null, timeoutMs: 2000, emailDomain: null });
  t.like(await down.authenticate!('carol', 'carol-Secret-1'), { ok: false, reason: 'unavailable' });
});

test('SMTP AUTH against Dovecot submission: valid, invalid, down', async (t) => {
  const mail = await startDovecot(t, [{ user: 'dave', password: 'dave-Secret-2' }]);
  const smtp = smtpBackend({ type: 'smtp', name: 'smtp', host: '127.0.0.1', port: mail.submissionPort, secure: false, caFile: mail.caFile, timeoutMs: 5000, emailDomain: 'example.org' });
  t.true((await smtp.authenticate!('dave', 'dave-Secret-2')).ok);
  t.like(await smtp.authenticate!('dave', 'wrong-password'), { ok: false, reason: 'invalid' });
  const port = await closedPort();
  const down = smtpBackend({ type: 'smtp', name: 'down', host: '127.0.0.1', port, secure: false, caFile: null, timeoutMs: 2000, emailDomain: null });
  t.like(await down.authenticate!('dave', 'dave-Secret-2'), { ok: false, reason: 'unavailable' });
});

test('chained through the form: LDAP down, then IMAP accepts; a wrong password is "invalid"', async (t) => {
  requireQemu();
  const mail = await startDovecot(t, [{ user: 'erin', password: 'erin-Secret-3' }]);
  const port = await closedPort();
  const setup = makeSetup(t, { auth: { backends: [
    { type: 'ldap', url: `ldap://127.0.0.1:${port}`, startTls: true, baseDn: 'dc=example,dc=org', timeoutMs: 1000 },
    { type: 'imap', host: '127.0.0.1', port: mail.imapPort, secure: false, caFile: mail.caFile },
  ] } });
  const broker = await startTestBroker(t, setup.config);
  const b = new WebClient(broker.url);
  await b.get('/login');
  t.is((await b.post('/login', { user: 'erin', password: 'erin-Secret-3' })).status, 303);
  await b.get('/');
  t.regex((await b.get('/')).text, /Desktop for <strong>erin<\/strong>/);
  const c = new WebClient(broker.url);
  await c.get('/login');
  const wrong = await c.post('/login', { user: 'erin', password: 'not-it' });
  t.is(wrong.status, 401);
  t.regex(wrong.text, /Invalid user name or password/);
});

/**
 * A server that accepts TCP connections and never sends a byte (a hung
 * daemon, a firewall that lets the SYN through): a real socket, not a mock.
 * Closed, with every connection it took, in teardown.
 */
async function startSilentServer(t: import('ava').ExecutionContext): Promise<{ port: number; connections: () => number }> {
  const net = await import('node:net');
  const sockets = new Set<import('node:net').Socket>();
  let accepted = 0;
  const server = net.createServer((socket) => {
    accepted++;
    sockets.add(socket);
    socket.on('error', () => {
      // The client gave up (timeout): expected, nothing to do.
    });
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => {
    for (const s of sockets) s.destroy();
    server.close(() => resolve());
  }));
  return { port: (server.address() as import('node:net').AddressInfo).port, connections: () => accepted };
}

test('a server that accepts TCP but never answers is "unavailable" within the backend timeout (LDAP, LDAPS, IMAP, IMAPS, SMTP, SMTPS)', async (t) => {
  const silent = await startSilentServer(t);
  const timeoutMs = 1000;
  const ldap = (url: string, startTls: boolean): LdapBackendConfig => ({
    type: 'ldap', name: 'ldap', url, startTls, allowCleartext: false, caFile: null, bindDn: null, bindPassword: null, baseDn: 'dc=example,dc=org', filter: '(uid={user})',
    userDnTemplate: null, userAttribute: 'uid', mailAttribute: 'mail', adminGroupDn: null, timeoutMs, groupBaseDn: null, memberOfAttribute: null,
  });
  const cases: Array<[string, ReturnType<typeof ldapBackend>]> = [
    ['ldap + StartTLS', ldapBackend(ldap(`ldap://127.0.0.1:${silent.port}`, true))],
    ['ldaps', ldapBackend(ldap(`ldaps://127.0.0.1:${silent.port}`, false))],
    ['imap + STARTTLS', imapBackend({ type: 'imap', name: 'imap', host: '127.0.0.1', port: silent.port, secure: false, caFile: null, timeoutMs, emailDomain: null })],
    ['imaps', imapBackend({ type: 'imap', name: 'imaps', host: '127.0.0.1', port: silent.port, secure: true, caFile: null, timeoutMs, emailDomain: null })],
    ['smtp + STARTTLS', smtpBackend({ type: 'smtp', name: 'smtp', host: '127.0.0.1', port: silent.port, secure: false, caFile: null, timeoutMs, emailDomain: null })],
    ['smtps', smtpBackend({ type: 'smtp', name: 'smtps', host: '127.0.0.1', port: silent.port, secure: true, caFile: null, timeoutMs, emailDomain: null })],
  ];
  for (const [what, backend] of cases) {
    const before = silent.connections();
    const started = Date.now();
    const result = await backend.authenticate!('alice', 'alice-Secret-4711');
    const tookMs = Date.now() - started;
    t.like(result, { ok: false, reason: 'unavailable' }, what);
    // Seen by this process's own server: its accept may be handled after the client's timer on a busy host.
    await waitFor(`${what}: the connection`, () => silent.connections() > before, 10_000);
    // Not before the timeout, and long before the system's own TCP time-outs (minutes): a busy host may add seconds.
    t.true(tookMs >= timeoutMs * 0.9 && tookMs < timeoutMs + 10_000, `${what}: gave up after ${tookMs} ms (timeout ${timeoutMs} ms)`);
  }
});
