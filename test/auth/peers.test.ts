// The harness's own tests: the real slapd and Dovecot that the authentication
// tests use start from nothing, check credentials as a product would see them
// (LDAP bind, IMAP LOGIN, SMTP AUTH), speak TLS with the certificate they hand
// out, and leave no process behind.
import test from 'ava';
import fs from 'node:fs';
import { Client, InvalidCredentialsError } from 'ldapts';
import { ImapFlow } from 'imapflow';
import nodemailer from 'nodemailer';
import { startSlapd, type LdapServer } from '../helpers/slapd.js';
import { startDovecot } from '../helpers/dovecot.js';
import { descendantsOf, isRunning } from '../helpers/peer-process.js';

const USERS = [
  { uid: 'alice', password: 'correct', cn: 'Alice Liddell', mail: 'alice@example.org' },
  { uid: 'bob', password: 'bob-Secret-0815', cn: 'Bob Builder', mail: 'bob@example.org' },
];
const GROUPS = [
  { cn: 'desktop-users', members: ['alice', 'bob'] },
  { cn: 'desktop-admins', members: ['alice'] },
];

async function ldapClient(t: import('ava').ExecutionContext, url: string, ca?: Buffer): Promise<Client> {
  const client = new Client({ url, connectTimeout: 3000, timeout: 5000, ...(ca ? { tlsOptions: { ca: [ca] } } : {}) });
  t.teardown(() => client.unbind());
  return client;
}

const userDn = (ldap: LdapServer, uid: string) => `uid=${uid},${ldap.peopleDn}`;

test('slapd: a user binds with the right password; a wrong password or an unknown user gets invalidCredentials (49)', async (t) => {
  const ldap = await startSlapd(t, { users: USERS, groups: GROUPS });
  t.regex(ldap.url, /^ldap:\/\/127\.0\.0\.1:\d+$/);
  t.regex(ldap.ldapsUrl, /^ldaps:\/\/127\.0\.0\.1:\d+$/);

  const good = await ldapClient(t, ldap.url);
  await good.bind(userDn(ldap, 'alice'), 'correct');
  t.true(good.isBound);

  const wrong = await ldapClient(t, ldap.url);
  const error = await t.throwsAsync(wrong.bind(userDn(ldap, 'alice'), 'wrong'), { instanceOf: InvalidCredentialsError });
  t.is(error?.code, 49);

  const unknown = await ldapClient(t, ldap.url);
  const unknownError = await t.throwsAsync(unknown.bind(userDn(ldap, 'mallory'), 'correct'), { instanceOf: InvalidCredentialsError });
  t.is(unknownError?.code, 49);
});

test('slapd: StartTLS on the ldap URL and implicit TLS on the ldaps URL verify against caFile; without it TLS is refused', async (t) => {
  const ldap = await startSlapd(t, { users: USERS });
  const ca = fs.readFileSync(ldap.caFile);
  t.regex(ca.toString(), /-----BEGIN CERTIFICATE-----/);

  const starttls = await ldapClient(t, ldap.url);
  await starttls.startTLS({ ca: [ca] });
  await starttls.bind(userDn(ldap, 'alice'), 'correct');
  t.true(starttls.isBound);

  const ldaps = await ldapClient(t, ldap.ldapsUrl, ca);
  await ldaps.bind(userDn(ldap, 'bob'), 'bob-Secret-0815');
  t.true(ldaps.isBound);
  const wrong = await ldapClient(t, ldap.ldapsUrl, ca);
  await t.throwsAsync(wrong.bind(userDn(ldap, 'bob'), 'wrong'), { instanceOf: InvalidCredentialsError });

  // The certificate is self-signed: a client that does not trust caFile must fail.
  const untrusted = await ldapClient(t, ldap.ldapsUrl);
  await t.throwsAsync(untrusted.bind(userDn(ldap, 'bob'), 'bob-Secret-0815'), { message: /self[- ]signed|unable to verify|certificate/i });
});

test('slapd: the service account finds users and their groups (by member and by memberOf); anonymous sees nothing', async (t) => {
  const ldap = await startSlapd(t, { users: USERS, groups: GROUPS });

  const service = await ldapClient(t, ldap.url);
  await service.bind(ldap.serviceDn, ldap.servicePassword);
  const { searchEntries: people } = await service.search(ldap.peopleDn, { scope: 'one', filter: '(uid=alice)', attributes: ['uid', 'cn', 'sn', 'mail', 'userPassword', 'memberOf'] });
  t.is(people.length, 1);
  t.is(people[0]!.dn, userDn(ldap, 'alice'));
  t.is(people[0]!.cn, 'Alice Liddell');
  t.is(people[0]!.sn, 'Liddell');
  t.is(people[0]!.mail, 'alice@example.org');
  t.deepEqual(people[0]!.userPassword ?? [], [], 'the service account must not read password hashes');
  t.deepEqual([people[0]!.memberOf].flat().sort(), [`cn=desktop-admins,${ldap.groupsDn}`, `cn=desktop-users,${ldap.groupsDn}`]);

  const { searchEntries: groups } = await service.search(ldap.groupsDn, { scope: 'one', filter: `(&(objectClass=groupOfNames)(member=${userDn(ldap, 'bob')}))`, attributes: ['cn'] });
  t.deepEqual(groups.map((g) => g.cn), ['desktop-users']);

  // A bound user reads the directory too (but not password hashes).
  const alice = await ldapClient(t, ldap.url);
  await alice.bind(userDn(ldap, 'alice'), 'correct');
  const { searchEntries: seenByAlice } = await alice.search(ldap.peopleDn, { scope: 'one', filter: '(uid=bob)', attributes: ['mail', 'userPassword'] });
  t.deepEqual(seenByAlice.map((e) => [e.mail, e.userPassword ?? []]), [['bob@example.org', []]]);

  // The admin sees the hashes: they are salted SHA-1, never the password.
  const admin = await ldapClient(t, ldap.url);
  await admin.bind(ldap.adminDn, ldap.adminPassword);
  const { searchEntries: hashes } = await admin.search(userDn(ldap, 'alice'), { scope: 'base', attributes: ['userPassword'] });
  t.regex(String(hashes[0]!.userPassword), /^\{SSHA\}/);

  const anonymous = await ldapClient(t, ldap.url);
  const seen = await anonymous.search(ldap.baseDn, { scope: 'sub', filter: '(objectClass=*)' }).then((r) => r.searchEntries.length, (err: Error) => err.name);
  t.true(seen === 0 || seen === 'NoSuchObjectError', `anonymous saw ${seen}`);
});

test('slapd: stop() ends the PID it spawned and removes its files; a second stop() is a no-op', async (t) => {
  const started = Date.now();
  const ldap = await startSlapd(t, { users: USERS.slice(0, 1) });
  const startMs = Date.now() - started;
  t.true(isRunning(ldap.pid));
  const stopping = Date.now();
  await ldap.stop();
  const stopMs = Date.now() - stopping;
  t.false(isRunning(ldap.pid));
  t.false(fs.existsSync(ldap.caFile));
  await ldap.stop();
  t.log(`slapd started in ${startMs} ms, stopped in ${stopMs} ms`);
});

test('dovecot: IMAP login over STARTTLS and over implicit TLS accepts the right password and rejects a wrong one', async (t) => {
  const mail = await startDovecot(t, [{ user: 'alice', password: 'correct' }, { user: 'bob', password: 'bob-Secret-0815' }]);
  t.is(mail.host, '127.0.0.1');
  const ca = fs.readFileSync(mail.caFile);

  const login = async (port: number, secure: boolean, user: string, pass: string) => {
    const client = new ImapFlow({ host: mail.host, port, secure, auth: { user, pass }, tls: { ca: [ca] }, logger: false });
    client.on('error', () => undefined); // A failed login also surfaces as a rejected connect().
    try {
      await client.connect();
      const secured = client.secureConnection || Boolean((client as unknown as { socket?: { encrypted?: boolean } }).socket?.encrypted);
      await client.logout();
      return { ok: true, secured };
    } catch (err) {
      // imapflow leaves the socket open after a failed login over STARTTLS (TEST-PEERS.md).
      client.close();
      return { ok: false, error: err as Error & { authenticationFailed?: boolean; serverResponseCode?: string } };
    }
  };

  for (const [port, secure] of [[mail.imapPort, false], [mail.imapsPort, true]] as const) {
    const right = await login(port, secure, 'alice', 'correct');
    t.true(right.ok, `port ${port}: ${right.error?.message}`);
    t.true(right.secured, `port ${port}: the session must be TLS (STARTTLS or implicit)`);
    const wrong = await login(port, secure, 'alice', 'wrong');
    t.false(wrong.ok, `port ${port}: a wrong password was accepted`);
    t.true(wrong.error?.authenticationFailed, `port ${port}: ${wrong.error?.message}`);
    const unknown = await login(port, secure, 'mallory', 'correct');
    t.true(unknown.error?.authenticationFailed, `port ${port}: ${unknown.error?.message}`);
  }
  t.true((await login(mail.imapsPort, true, 'bob', 'bob-Secret-0815')).ok);
});

test('dovecot: SMTP submission AUTH accepts the right password and rejects a wrong one with 535', async (t) => {
  const mail = await startDovecot(t, [{ user: 'alice', password: 'correct' }]);
  const ca = fs.readFileSync(mail.caFile);
  const transport = (pass: string) => nodemailer.createTransport({ host: mail.host, port: mail.submissionPort, secure: false, requireTLS: true, auth: { user: 'alice', pass }, tls: { ca: [ca] } });

  const right = transport('correct');
  t.teardown(() => right.close());
  t.true(await right.verify());

  const wrong = transport('wrong');
  t.teardown(() => wrong.close());
  const error = await t.throwsAsync(wrong.verify());
  t.is((error as Error & { responseCode?: number }).responseCode, 535, error?.message);
});

test('dovecot: stop() ends the master and all its children and removes its files; a second stop() is a no-op', async (t) => {
  const started = Date.now();
  const mail = await startDovecot(t, [{ user: 'alice', password: 'correct' }]);
  const startMs = Date.now() - started;
  const children = descendantsOf(mail.pid);
  t.true(isRunning(mail.pid));
  t.true(children.length >= 2, `dovecot's children: ${children.join(', ')}`);
  const stopping = Date.now();
  await mail.stop();
  const stopMs = Date.now() - stopping;
  t.false(isRunning(mail.pid));
  t.deepEqual(children.filter(isRunning), []);
  t.false(fs.existsSync(mail.caFile));
  await mail.stop();
  t.log(`dovecot started in ${startMs} ms, stopped in ${stopMs} ms`);
});
