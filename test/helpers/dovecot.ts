// A real Dovecot (IMAP and SMTP submission) for tests: a self-contained
// dovecot.conf in a fresh temp dir, the given users in a passwd-file, a
// self-signed certificate for STARTTLS and implicit TLS, three free loopback
// ports, stopped by the master's PID in teardown. It checks credentials as a
// product would (IMAP LOGIN, SMTP AUTH); it relays no mail (submission points at
// a port where nothing listens). Its state belongs to one test and is removed
// with its temp dir.
//
// Facts this relies on are in /work/shared/TEST-PEERS.md: `dovecot -F` keeps the
// master in the foreground; the listeners accept before auth is up, so
// readiness is the greeting, not the connect.
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import type { ExecutionContext } from 'ava';
import { requireProgram, tempDir } from './env.js';
import { descendantsOf, startPeerOnFreePorts, waitForChildrenExit, writeSelfSignedCert } from './peer-process.js';

export interface MailUser { user: string; password: string }
export interface MailServer {
  host: '127.0.0.1';
  /** Plain IMAP with STARTTLS available. */
  imapPort: number;
  /** IMAP with implicit TLS. */
  imapsPort: number;
  /** SMTP submission with AUTH PLAIN/LOGIN (STARTTLS available). */
  submissionPort: number;
  /** PEM of the self-signed certificate (SAN IP:127.0.0.1, DNS:localhost). */
  caFile: string;
  /** The dovecot master; it starts and stops every other dovecot process. */
  pid: number;
  /** SIGTERM to the master, SIGKILL after a grace, waits for it and its children, removes the temp dir. Twice is a no-op. */
  stop(): Promise<void>;
}

const READY_TIMEOUT_MS = 15000;
const TERM_GRACE_MS = 8000;

export async function startDovecot(t: ExecutionContext, users: MailUser[]): Promise<MailServer> {
  requireProgram('dovecot', 'dovecot-imapd dovecot-submissiond');
  requireProgram('openssl', 'openssl');
  for (const [binary, debianPackage] of [['imap', 'dovecot-imapd'], ['imap-login', 'dovecot-imapd'], ['submission', 'dovecot-submissiond'], ['submission-login', 'dovecot-submissiond']]) {
    if (!fs.existsSync(path.join('/usr/lib/dovecot', binary!))) throw new Error(`/usr/lib/dovecot/${binary} is missing: install the Debian package "${debianPackage}"`);
  }
  checkUsers(users);

  const dir = tempDir(t, 'qwd-dovecot-');
  // Login processes run as dovenull and auth as dovecot: they must traverse the dir.
  fs.chmodSync(dir, 0o755);
  // Mail runs as nobody (the static userdb below): it must create homes and maildirs here.
  for (const sub of ['home', 'mail']) {
    fs.mkdirSync(path.join(dir, sub));
    fs.chmodSync(path.join(dir, sub), 0o1777);
  }
  const { certFile, keyFile } = await writeSelfSignedCert(dir);

  const usersFile = path.join(dir, 'users');
  // {PLAIN.B64}: any password (':' included) fits in the passwd-file format.
  fs.writeFileSync(usersFile, users.map((u) => `${u.user}:{PLAIN.B64}${Buffer.from(u.password, 'utf8').toString('base64')}::::::\n`).join(''), { mode: 0o644 });

  const confFile = path.join(dir, 'dovecot.conf');
  const logFile = path.join(dir, 'dovecot.log');
  const logTail = () => {
    try {
      return fs.readFileSync(logFile, 'utf8').trim().split('\n').slice(-20).join('\n');
    } catch {
      return '(no log yet)';
    }
  };

  const { peer: dovecot, ports: [imapPort, imapsPort, submissionPort] } = await startPeerOnFreePorts(t, {
    file: 'dovecot',
    portCount: 4,
    argsFor: ([imapPort, imapsPort, submissionPort, relayPort]) => {
      fs.writeFileSync(confFile, dovecotConf({ dir, certFile, keyFile, usersFile, logFile, imapPort, imapsPort, submissionPort, relayPort }));
      return ['-F', '-c', confFile];
    },
    readyWhat: 'dovecot to greet on IMAP and submission',
    isReady: async ([imapPort, , submissionPort]) => (await greeting(imapPort)).startsWith('* OK') && (await greeting(submissionPort)).startsWith('220 '),
    readyTimeoutMs: READY_TIMEOUT_MS,
    termGraceMs: TERM_GRACE_MS,
    failureDetail: () => `${logFile}:\n${logTail()}`,
  });
  let stopping: Promise<void> | undefined;
  const stop = () => (stopping ??= (async () => {
    // The master stops its children on SIGTERM; note them first to confirm they are gone.
    const children = descendantsOf(dovecot.pid);
    await dovecot.stop();
    await waitForChildrenExit(children, 'dovecot children');
    fs.rmSync(dir, { recursive: true, force: true });
  })());
  t.teardown(stop);
  return { host: '127.0.0.1', imapPort, imapsPort, submissionPort, caFile: certFile, pid: dovecot.pid, stop };
}

interface ConfValues { dir: string; certFile: string; keyFile: string; usersFile: string; logFile: string; imapPort: number; imapsPort: number; submissionPort: number; relayPort: number }

function dovecotConf({ dir, certFile, keyFile, usersFile, logFile, imapPort, imapsPort, submissionPort, relayPort }: ConfValues): string {
  return `# Self-contained: nothing from /etc/dovecot is read.
base_dir = ${dir}/run
state_dir = ${dir}/state
log_path = ${logFile}
protocols = imap submission
listen = 127.0.0.1
ssl = yes
ssl_cert = <${certFile}
ssl_key = <${keyFile}
disable_plaintext_auth = no
auth_mechanisms = plain login
# Dovecot delays every failed login by 2 s by default; tests try wrong passwords on
# purpose. With 0 a failure is still answered on its next 0.5 s check.
auth_failure_delay = 0
passdb {
  driver = passwd-file
  args = ${usersFile}
}
userdb {
  driver = static
  args = uid=nobody gid=nogroup home=${dir}/home/%u
}
mail_location = maildir:${dir}/mail/%u
service imap-login {
  inet_listener imap {
    port = ${imapPort}
  }
  inet_listener imaps {
    port = ${imapsPort}
    ssl = yes
  }
}
service submission-login {
  inet_listener submission {
    port = ${submissionPort}
  }
}
# Submission refuses even correct credentials (451) without a relay; nothing
# listens on this port, so AUTH works and no message leaves.
submission_relay_host = 127.0.0.1
submission_relay_port = ${relayPort}
# Without this, repeated failures from one IP add growing delays (2, 4, 8 … 15 s).
service anvil {
  unix_listener anvil-auth-penalty {
    mode = 0
  }
}
`;
}

function checkUsers(users: MailUser[]): void {
  const seen = new Set<string>();
  for (const u of users) {
    // The name goes into the passwd-file and into paths (%u): keep it plain.
    if (!/^[A-Za-z0-9][A-Za-z0-9._@+-]*$/.test(u.user)) throw new Error(`startDovecot: user name must match [A-Za-z0-9][A-Za-z0-9._@+-]*, got ${JSON.stringify(u.user)}`);
    if (!u.password) throw new Error(`startDovecot: user "${u.user}" needs a non-empty password`);
    if (seen.has(u.user)) throw new Error(`startDovecot: user "${u.user}" is given twice`);
    seen.add(u.user);
  }
}

/** The first line a server sends on connect, or '' if it closes or stays silent. */
function greeting(port: number): Promise<string> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    let got = '';
    const done = () => {
      socket.destroy();
      resolve(got.split('\r\n')[0] ?? '');
    };
    socket.setTimeout(1000, done);
    socket.on('data', (d: Buffer) => {
      got += d.toString('latin1');
      if (got.includes('\r\n')) done();
    });
    socket.on('error', done); // Refused or reset: not ready yet.
    socket.on('close', done);
  });
}
