// A real OpenLDAP slapd for tests: a fresh directory tree (people, groups, a
// search-then-bind service account) in a temp dir, served on two free loopback
// ports (ldap:// with StartTLS, ldaps://) with a self-signed certificate, and
// stopped by PID in teardown. Not a fixture for the product's config: the test
// decides how the product talks to it. The state (database, cert, config)
// belongs to one test and is removed with its temp dir.
//
// Facts this relies on are in /work/shared/TEST-PEERS.md: slapd.conf with -f,
// slapadd while stopped, a `-d` level keeps slapd in the foreground so the PID
// we spawn is slapd's own.
import fs from 'node:fs';
import path from 'node:path';
import crypto from 'node:crypto';
import type { ExecutionContext } from 'ava';
import { Client } from 'ldapts';
import { requireProgram, tempDir } from './env.js';
import { runProgram, startPeerOnFreePorts, writeSelfSignedCert } from './peer-process.js';

export interface LdapUser {
  uid: string; password: string; cn?: string; mail?: string;
  /** Extra memberOf DNs written as given, with no group entry behind them (groups kept elsewhere, as in AD). */
  memberOf?: string[];
}
export interface LdapGroup { cn: string; members: string[] /* uids */ }
export interface LdapServer {
  /** ldap://127.0.0.1:PORT — plain, StartTLS available. */
  url: string;
  /** ldaps://127.0.0.1:PORT2 — implicit TLS. */
  ldapsUrl: string;
  baseDn: string;
  peopleDn: string;
  groupsDn: string;
  /** The rootdn: bypasses every ACL. */
  adminDn: string;
  adminPassword: string;
  /** cn=reader: a normal entry that the ACLs let read people and groups (search-then-bind). */
  serviceDn: string;
  servicePassword: string;
  /** PEM of the self-signed certificate (SAN IP:127.0.0.1, DNS:localhost) for LDAPS and StartTLS. */
  caFile: string;
  pid: number;
  /** SIGTERM, SIGKILL after a grace, waits for the exit, removes the temp dir. Twice is a no-op. */
  stop(): Promise<void>;
}

const BASE_DN = 'dc=example,dc=org';
const SCHEMA_DIR = '/etc/ldap/schema';
const MODULE_DIR = '/usr/lib/ldap';
const READY_TIMEOUT_MS = 15000;
const TERM_GRACE_MS = 5000;

/**
 * Starts slapd with the given users and groups. Groups are groupOfNames with
 * `member` DNs; with the memberof overlay each user also carries the
 * operational attribute `memberOf` (returned only when asked for by name or '+').
 */
export async function startSlapd(t: ExecutionContext, opts: { users?: LdapUser[]; groups?: LdapGroup[] } = {}): Promise<LdapServer> {
  requireProgram('slapd', 'slapd');
  requireProgram('slapadd', 'slapd');
  requireProgram('slappasswd', 'slapd');
  requireProgram('openssl', 'openssl');
  for (const schema of ['core', 'cosine', 'inetorgperson']) {
    if (!fs.existsSync(path.join(SCHEMA_DIR, `${schema}.schema`))) throw new Error(`${SCHEMA_DIR}/${schema}.schema is missing: install the Debian package "slapd"`);
  }
  const users = opts.users ?? [];
  const groups = opts.groups ?? [];
  checkFixtures(users, groups);

  const dir = tempDir(t, 'qwd-slapd-');
  const dbDir = path.join(dir, 'db');
  fs.mkdirSync(dbDir);
  const { certFile, keyFile } = await writeSelfSignedCert(dir);

  const peopleDn = `ou=people,${BASE_DN}`;
  const groupsDn = `ou=groups,${BASE_DN}`;
  const adminDn = `cn=admin,${BASE_DN}`;
  const serviceDn = `cn=reader,${BASE_DN}`;
  const adminPassword = `admin-${crypto.randomBytes(9).toString('base64url')}`;
  const servicePassword = `reader-${crypto.randomBytes(9).toString('base64url')}`;
  const userDn = (uid: string) => `uid=${escapeDnValue(uid)},${peopleDn}`;
  const groupDn = (cn: string) => `cn=${escapeDnValue(cn)},${groupsDn}`;

  const [adminHash, serviceHash, ...userHashes] = await Promise.all([adminPassword, servicePassword, ...users.map((u) => u.password)].map(hashPassword));

  const confFile = path.join(dir, 'slapd.conf');
  fs.writeFileSync(confFile, [
    `include ${SCHEMA_DIR}/core.schema`,
    `include ${SCHEMA_DIR}/cosine.schema`,
    `include ${SCHEMA_DIR}/inetorgperson.schema`,
    `pidfile ${path.join(dir, 'slapd.pid')}`,
    `argsfile ${path.join(dir, 'slapd.args')}`,
    `modulepath ${MODULE_DIR}`,
    // back_mdb and memberof are modules on Debian, not built in.
    'moduleload back_mdb',
    'moduleload memberof',
    // TLS settings are global: they must come before the first `database`.
    `TLSCertificateFile ${certFile}`,
    `TLSCertificateKeyFile ${keyFile}`,
    'database mdb',
    `suffix "${BASE_DN}"`,
    `rootdn "${adminDn}"`,
    `rootpw ${adminHash}`,
    `directory ${dbDir}`,
    'maxsize 16777216',
    // Anonymous may only authenticate (bind); the service account and any
    // bound user may read everything but password hashes; the rootdn bypasses ACLs.
    'access to attrs=userPassword',
    '  by self write',
    '  by anonymous auth',
    '  by * none',
    'access to *',
    `  by dn.exact="${serviceDn}" read`,
    '  by users read',
    '  by * none',
    // Keeps memberOf on users in step with online changes to groups. slapadd
    // does not run overlays, so the LDIF below writes the initial memberOf values.
    'overlay memberof',
    '',
  ].join('\n'));

  const memberOf = new Map<string, string[]>();
  for (const group of groups) for (const uid of group.members) memberOf.set(uid, [...(memberOf.get(uid) ?? []), groupDn(group.cn)]);
  const entries: Array<Array<[string, string]>> = [
    [['dn', BASE_DN], ['objectClass', 'dcObject'], ['objectClass', 'organization'], ['dc', 'example'], ['o', 'Example']],
    [['dn', peopleDn], ['objectClass', 'organizationalUnit'], ['ou', 'people']],
    [['dn', groupsDn], ['objectClass', 'organizationalUnit'], ['ou', 'groups']],
    [['dn', serviceDn], ['objectClass', 'organizationalRole'], ['objectClass', 'simpleSecurityObject'], ['cn', 'reader'], ['description', 'search-then-bind service account'], ['userPassword', serviceHash!]],
    ...users.map((u, i): Array<[string, string]> => [
      ['dn', userDn(u.uid)],
      ['objectClass', 'inetOrgPerson'],
      ['uid', u.uid],
      ['cn', u.cn ?? u.uid],
      ['sn', (u.cn ?? u.uid).split(' ').at(-1) || u.uid],
      ...(u.mail === undefined ? [] : [['mail', u.mail] as [string, string]]),
      ['userPassword', userHashes[i]!],
      ...[...(memberOf.get(u.uid) ?? []), ...(u.memberOf ?? [])].map((dn): [string, string] => ['memberOf', dn]),
    ]),
    ...groups.map((g): Array<[string, string]> => [
      ['dn', groupDn(g.cn)],
      ['objectClass', 'groupOfNames'],
      ['cn', g.cn],
      ...g.members.map((uid): [string, string] => ['member', userDn(uid)]),
    ]),
  ];
  const ldifFile = path.join(dir, 'data.ldif');
  fs.writeFileSync(ldifFile, entries.map((entry) => entry.map(([name, value]) => ldifLine(name, value)).join('\n') + '\n').join('\n'));
  await runProgram('slapadd', ['-q', '-f', confFile, '-l', ldifFile]);

  const urlFor = (port: number) => `ldap://127.0.0.1:${port}`;
  const ldapsUrlFor = (port: number) => `ldaps://127.0.0.1:${port}`;
  const { peer: slapd, ports: [port, ldapsPort] } = await startPeerOnFreePorts(t, {
    file: 'slapd',
    portCount: 2,
    // `-d none`: foreground (the PID is slapd's) and only errors on stderr, e.g. a failed bind(2).
    argsFor: ([p, ps]) => ['-h', `${urlFor(p)}/ ${ldapsUrlFor(ps)}/`, '-f', confFile, '-d', 'none'],
    readyWhat: 'slapd to accept a bind as its rootdn',
    isReady: ([p]) => bindsAs(urlFor(p), adminDn, adminPassword),
    readyTimeoutMs: READY_TIMEOUT_MS,
    termGraceMs: TERM_GRACE_MS,
  });
  const url = urlFor(port);
  const ldapsUrl = ldapsUrlFor(ldapsPort);
  let stopping: Promise<void> | undefined;
  const stop = () => (stopping ??= slapd.stop().then(() => fs.rmSync(dir, { recursive: true, force: true })));
  t.teardown(stop);
  return { url, ldapsUrl, baseDn: BASE_DN, peopleDn, groupsDn, adminDn, adminPassword, serviceDn, servicePassword, caFile: certFile, pid: slapd.pid, stop };
}

/** One readiness probe: true when a simple bind succeeds. */
async function bindsAs(url: string, dn: string, password: string): Promise<boolean> {
  const client = new Client({ url, connectTimeout: 1000, timeout: 2000 });
  try {
    await client.bind(dn, password);
    return true;
  } catch {
    // Not listening yet (ECONNREFUSED) or not serving yet: poll again.
    return false;
  } finally {
    await client.unbind().catch(() => undefined); // A client that never connected has nothing to unbind.
  }
}

function checkFixtures(users: LdapUser[], groups: LdapGroup[]): void {
  const uids = new Set<string>();
  for (const u of users) {
    if (!u.uid) throw new Error('startSlapd: every user needs a non-empty uid');
    if (!u.password) throw new Error(`startSlapd: user "${u.uid}" needs a non-empty password (slapd would treat an empty one as an unauthenticated bind)`);
    if (uids.has(u.uid)) throw new Error(`startSlapd: user "${u.uid}" is given twice`);
    uids.add(u.uid);
  }
  const cns = new Set<string>();
  for (const g of groups) {
    if (!g.cn) throw new Error('startSlapd: every group needs a non-empty cn');
    if (cns.has(g.cn)) throw new Error(`startSlapd: group "${g.cn}" is given twice`);
    cns.add(g.cn);
    // groupOfNames requires at least one member (RFC 4519 section 3.5).
    if (g.members.length === 0) throw new Error(`startSlapd: group "${g.cn}" needs at least one member (groupOfNames requires one)`);
    for (const uid of g.members) if (!uids.has(uid)) throw new Error(`startSlapd: group "${g.cn}" lists member "${uid}", which is not among the users`);
  }
}

/** Escapes an attribute value for use in a DN (RFC 4514 section 2.4). */
function escapeDnValue(value: string): string {
  return value
    .replace(/[\\,+"<>;=]/g, (c) => `\\${c}`)
    .replace(/^([ #])/, '\\$1')
    .replace(/ $/, '\\ ')
    .replace(/\0/g, '\\00');
}

/** One LDIF attribute line, base64-encoded when the value is not a SAFE-STRING (RFC 2849). */
function ldifLine(name: string, value: string): string {
  const safe = /^(?:[\x01-\x09\x0b\x0c\x0e-\x1f\x21-\x39\x3b\x3d-\x7f][\x01-\x09\x0b\x0c\x0e-\x7f]*)?$/.test(value) && !value.endsWith(' ');
  return safe ? `${name}: ${value}` : `${name}:: ${Buffer.from(value, 'utf8').toString('base64')}`;
}

async function hashPassword(password: string): Promise<string> {
  // Test passwords only: passing them on argv is acceptable here.
  return (await runProgram('slappasswd', ['-n', '-h', '{SSHA}', '-s', password])).trim();
}
