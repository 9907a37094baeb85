// The Debian package, for real: bin/build-deb builds it, dpkg-deb and lintian inspect it,
// dpkg installs it on this host, the service is started the way its systemd unit says
// (ExecStart, User, Group, WorkingDirectory, Environment read from the installed unit; no
// systemd here, so setpriv runs it as the package's user), a real QEMU desktop is created
// through the API, a second build is installed over the first while that desktop runs and
// the restarted broker adopts it, then dpkg -r (whose prerm stops the desktop through the
// broker), a reinstall with the state dir chowned to root and the broker run as root (INSTALL.md's
// guest-network recipe) and a second dpkg -r (prerm then runs qwdctl as root), a third whose stop fails
// (prerm warns, as it must without systemd, and the removal goes on), and dpkg -P, and the file lists of /etc, /usr, /lib/systemd and /var/lib are
// compared with what they were before. Needs root (dpkg -i); refuses to run when the package
// is installed by anyone else, and always purges what it installed (t.teardown).
import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import type { ExecutionContext } from 'ava';
import { ROOT, requireDemoImage, requireProgram, requireQemu, tempDir, waitFor } from '../helpers/env.js';
import { isRunning } from '../../src/qemu/process.js';

const NAME = 'qemu-web-desktop';
const STATE_DIR = '/var/lib/qemu-web-desktop';
const CONF_DIR = '/etc/qemu-web-desktop';
const CONFFILE = `${CONF_DIR}/config.yml`;
const UNIT = `/lib/systemd/system/${NAME}.service`;
const UPSTREAM_VERSION = (JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version: string })
  .version;
/** Trees compared before installing and after purging. /var/lib/dpkg and /var/lib/apt are dpkg's and apt's own
 * databases (dpkg's records of this package are checked with dpkg-query instead). */
const COMPARED_TREES = ['/etc', '/usr', '/lib/systemd', '/var/lib'];
const NOT_COMPARED = ['/var/lib/dpkg', '/var/lib/apt'];
/** What the shadow tools leave when adduser creates the system user: backups of the account files. */
const ACCOUNT_BACKUPS = ['/etc/passwd-', '/etc/group-', '/etc/shadow-', '/etc/gshadow-'];
/** The lintian tags (all informational) that INSTALL.md explains; any other tag fails the test. */
const EXPLAINED_LINTIAN_TAGS = [
  'extra-license-file', 'package-contains-documentation-outside-usr-share-doc', 'hardening-no-bindnow',
  'hardening-no-fortify-functions', 'spelling-error-in-binary', 'package-supports-alternative-init-but-no-init.d-script',
];

interface Run { status: number | null; stdout: string; stderr: string; ms: number }

function run(file: string, args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): Run {
  const started = Date.now();
  const r = spawnSync(file, args, { encoding: 'utf8', maxBuffer: 64 << 20, ...opts });
  if (r.error) throw r.error;
  return { status: r.status, stdout: r.stdout, stderr: r.stderr, ms: Date.now() - started };
}

/**
 * Runs a command to its end without blocking the event loop (long builds and dpkg runs must not stop the
 * worker from talking to ava), and fails with its output when it does not exit 0.
 */
async function runOk(
  t: ExecutionContext, file: string, args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {},
): Promise<Run> {
  const r = await runAsync(file, args, opts);
  if (r.status !== 0) {
    throw new Error(`${file} ${args.join(' ')} exited ${r.status}:\n${r.stdout.slice(-3000)}\n${r.stderr.slice(-3000)}`);
  }
  if (r.ms > 1000) t.log(`${path.basename(file)} ${args.slice(0, 2).join(' ')}: ${(r.ms / 1000).toFixed(1)} s`);
  return r;
}

/** Runs a command without blocking the event loop (lintian runs while the rest of the test goes on). */
function runAsync(file: string, args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): Promise<Run> {
  const started = Date.now();
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { stdio: ['ignore', 'pipe', 'pipe'], ...opts });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.once('error', reject);
    child.once('close', (status) => resolve({ status, stdout, stderr, ms: Date.now() - started }));
  });
}

/**
 * dpkg, waiting while another dpkg or apt on this host holds its lock (other jobs share the machine):
 * the condition waited on is the lock being free, for up to 3 minutes.
 */
async function dpkg(t: ExecutionContext | null, args: string[]): Promise<Run> {
  const deadline = Date.now() + 180_000;
  for (;;) {
    const r = await runAsync('dpkg', args);
    const locked = r.status !== 0 && /lock was locked by another process|Could not get lock|is locked by another/
      .test(r.stderr);
    if (!locked) {
      if (r.status !== 0) throw new Error(`dpkg ${args.join(' ')} exited ${r.status}:\n${r.stdout.slice(-3000)}\n${r.stderr.slice(-3000)}`);
      t?.log(`dpkg ${args.join(' ')}: ${(r.ms / 1000).toFixed(1)} s`);
      return r;
    }
    if (Date.now() > deadline) throw new Error(`dpkg ${args.join(' ')}: the dpkg lock stayed taken for 3 minutes: ${r.stderr}`);
    await waitFor('the dpkg lock to be free', () => run('fuser', ['/var/lib/dpkg/lock-frontend']).status !== 0, 180_000);
  }
}

/** Packages other than ours that dpkg touched since the log had `offset` bytes (another job installing). */
function otherDpkgActivity(offset: number): string[] {
  const log = fs.readFileSync('/var/log/dpkg.log', 'utf8').slice(offset);
  const names = new Set<string>();
  for (const line of log.split('\n')) {
    const m = /^\S+ \S+ (?:install|upgrade|remove|purge|configure) (\S+?)(?::\S+)? /.exec(line);
    if (m && m[1] !== NAME) names.add(m[1]!);
  }
  return [...names];
}

/** Of `paths`, those that some installed package other than ours owns (dpkg -S). */
function ownedByOtherPackages(paths: string[]): Set<string> {
  const owned = new Set<string>();
  if (!paths.length) return owned;
  const r = run('dpkg-query', ['-S', ...paths]);
  for (const line of r.stdout.split('\n')) {
    const m = /^(.+?): (\/.*)$/.exec(line);
    if (m && !m[1]!.split(', ').some((p) => p.split(':')[0] === NAME)) owned.add(m[2]!);
  }
  return owned;
}

function packageStatus(): string {
  // dpkg-query fails for a package dpkg never heard of, and says "unknown ok not-installed" for a purged one.
  const r = run('dpkg-query', ['-W', '-f=${Status}', NAME]);
  return r.status === 0 && !r.stdout.includes('not-installed') ? r.stdout.trim() : 'not-installed';
}

/** Every path under the compared trees (symlinks not followed), as a set. */
function listTrees(): Set<string> {
  const out = new Set<string>();
  const walk = (dir: string): void => {
    if (NOT_COMPARED.includes(dir)) return;
    let entries: fs.Dirent[];
    try {
      entries = fs.readdirSync(dir, { withFileTypes: true });
    } catch (err) {
      // A directory removed by someone else between readdir and here is simply not listed.
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw err;
    }
    for (const e of entries) {
      const p = path.join(dir, e.name);
      out.add(p);
      if (e.isDirectory()) walk(p);
    }
  };
  for (const tree of COMPARED_TREES) walk(fs.realpathSync(tree));
  return out;
}

/** Paths under the compared trees owned by uid or gid (after purge: must be none). */
function ownedBy(paths: Set<string>, uid: number, gid: number): string[] {
  return [...paths].filter((p) => {
    try {
      const st = fs.lstatSync(p);
      return st.uid === uid || st.gid === gid;
    } catch {
      return false; // gone since it was listed
    }
  });
}

interface UnitService { execStart: string[]; user: string; group: string; workingDirectory: string; env: Record<string, string> }

/** The [Service] keys this test needs from the installed unit (no quoting is used in it: checked). */
function readUnit(text: string): UnitService {
  const get = (key: string): string[] => text.split('\n').filter((l) => l.startsWith(`${key}=`))
    .map((l) => l.slice(key.length + 1));
  const [execStart] = get('ExecStart');
  const [user] = get('User');
  const [group] = get('Group');
  const [workingDirectory] = get('WorkingDirectory');
  if (!execStart || !user || !group || !workingDirectory) {
    throw new Error(`the unit lacks ExecStart, User, Group or WorkingDirectory:\n${text}`);
  }
  if (/["'\\$%]/.test(execStart)) throw new Error(`ExecStart uses quoting or specifiers this test does not parse: ${execStart}`);
  const env: Record<string, string> = {};
  for (const line of get('Environment')) {
    for (const assignment of line.split(' ')) {
      const eq = assignment.indexOf('=');
      env[assignment.slice(0, eq)] = assignment.slice(eq + 1);
    }
  }
  return { execStart: execStart.split(/\s+/), user, group, workingDirectory, env };
}

interface Broker { child: ChildProcess; pid: number; url: string; exited: Promise<number | null>; log: () => string }

/**
 * Starts the installed unit's ExecStart as its User/Group (setpriv, supplementary groups of the user), port 0;
 * `asUser` stands for a drop-in's User=/Group= (INSTALL.md's guest-network recipe: root).
 */
async function startFromUnit(t: ExecutionContext, started: Set<number>, asUser?: string): Promise<Broker> {
  const unit = readUnit(fs.readFileSync(UNIT, 'utf8'));
  if (asUser) Object.assign(unit, { user: asUser, group: asUser });
  const env = { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', LANG: 'C.UTF-8', ...unit.env, QWD_PORT: '0' };
  const child = spawn('setpriv', [
    `--reuid=${unit.user}`, `--regid=${unit.group}`, '--init-groups', '--', ...unit.execStart,
  ], { cwd: unit.workingDirectory, env, stdio: ['ignore', 'pipe', 'pipe'] });
  const pid = child.pid!;
  started.add(pid); // setpriv execs the broker: this PID is the broker's
  let stdout = '';
  let stderr = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const url = await Promise.race([
    waitFor('the packaged broker to print where it listens', () => /listening on (http:\/\/\S+)/.exec(stdout)?.[1], 90_000),
    exited.then((code) => {
      throw new Error(`the packaged broker exited (${code}) before listening:\n${stderr.slice(-3000)}`);
    }),
  ]);
  t.is(new URL(url).hostname, '127.0.0.1', 'the packaged config listens on loopback only');
  return { child, pid, url, exited, log: () => stderr };
}

async function stopBroker(broker: Broker): Promise<number | null> {
  process.kill(broker.pid, 'SIGTERM'); // what systemctl stop/restart does with KillMode=process
  return broker.exited;
}

/** The QEMU process of session `id` (its -name is qwd-<id>), from /proc. */
function qemuPidOf(id: string): number | null {
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let argv: string[];
    try {
      argv = fs.readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0');
    } catch {
      continue; // ended while we looked
    }
    const i = argv.indexOf('-name');
    if (i >= 0 && (argv[i + 1] ?? '').split(',')[0] === `qwd-${id}`) return Number(entry);
  }
  return null;
}

function uidOf(pid: number): number {
  const line = fs.readFileSync(`/proc/${pid}/status`, 'utf8').split('\n').find((l) => l.startsWith('Uid:'))!;
  return Number(line.split(/\s+/)[1]);
}

test.serial('the Debian package builds, installs, serves a desktop as its own user, upgrades under it, and purges clean', async (t) => {
  t.timeout(600_000);
  if (process.getuid?.() !== 0) throw new Error('this test installs a package with dpkg -i: run it as root');
  requireProgram('dpkg-deb', 'dpkg');
  requireProgram('dpkg-shlibdeps', 'dpkg-dev');
  requireProgram('lintian', 'lintian');
  requireProgram('setpriv', 'util-linux');
  requireProgram('adduser', 'adduser');
  requireProgram('fuser', 'psmisc');
  requireQemu();
  const demoImage = requireDemoImage();
  const already = packageStatus();
  if (already !== 'not-installed') {
    throw new Error(`${NAME} is already on this host (dpkg status "${already}"), not installed by this test: ` +
      `it will not touch it. Remove it first (dpkg -P ${NAME}) to run this test.`);
  }
  for (const leftover of [STATE_DIR, CONF_DIR]) {
    if (fs.existsSync(leftover)) throw new Error(`${leftover} exists without the package: remove it first (this test purges it)`);
  }

  const out = tempDir(t, 'qwd-deb-');
  const started = new Set<number>();
  let installed = false;
  t.teardown(async () => {
    for (const pid of started) {
      if (isRunning(pid)) process.kill(pid, 'SIGKILL');
    }
    for (const pid of started) await waitFor(`pid ${pid} to end`, () => !isRunning(pid), 10_000);
    if (installed && packageStatus() !== 'not-installed') {
      // Whatever happened above: nothing of the package stays on the host.
      await dpkg(null, ['-P', NAME]);
    }
  });

  const dpkgLogOffset = fs.statSync('/var/log/dpkg.log').size;
  const before = listTrees();

  // --- build (the first with the default xz compression, the upgrade's with gzip) -------------------------------
  const arch = (await runOk(t, 'dpkg', ['--print-architecture'])).stdout.trim();
  const build1 = await runOk(t, path.join(ROOT, 'bin', 'build-deb'), ['--out', out, '--revision', '1'], { cwd: ROOT });
  const deb1 = path.join(out, `${NAME}_${UPSTREAM_VERSION}-1_${arch}.deb`);
  t.true(fs.existsSync(deb1), `bin/build-deb wrote ${deb1}:\n${build1.stdout}`);
  t.log(`build 1 (tsc + xz): ${(build1.ms / 1000).toFixed(1)} s, ${(fs.statSync(deb1).size / 1048576).toFixed(2)} MiB`);
  const lintian = runAsync('lintian', ['--display-info', '--tag-display-limit', '0', deb1]);

  const info = (await runOk(t, 'dpkg-deb', ['--info', deb1])).stdout;
  t.regex(info, new RegExp(`^ Package: ${NAME}$`, 'm'));
  t.regex(info, new RegExp(`^ Version: ${UPSTREAM_VERSION.replace(/\./g, '\\.')}-1$`, 'm'));
  t.regex(info, new RegExp(`^ Architecture: ${arch}$`, 'm'), 'the host architecture: better-sqlite3 is native');
  const depends = /^ Depends: (.*)$/m.exec(info)?.[1] ?? '';
  for (const dep of ['nodejs (>= 20)', 'qemu-system-x86', 'qemu-utils', 'adduser', 'libc6']) {
    t.true(depends.includes(dep), `Depends has ${dep}: ${depends}`);
  }
  for (const member of ['conffiles', 'postinst', 'prerm', 'postrm', 'md5sums']) t.regex(info, new RegExp(` ${member} `));
  t.is((await runOk(t, 'dpkg-deb', ['--info', deb1, 'conffiles'])).stdout.trim(), CONFFILE, 'the config is the one conffile');

  const contents = (await runOk(t, 'dpkg-deb', ['--contents', deb1])).stdout.split('\n').filter(Boolean);
  const files = contents.map((l) => l.split(/\s+/).slice(5).join(' ').replace(/^\./, '').replace(/ -> .*$/, ''));
  for (const p of [
    '/usr/bin/qwdctl', '/usr/lib/qemu-web-desktop/bin/qwdctl', '/usr/lib/qemu-web-desktop/dist/cli/main.js',
    '/usr/lib/qemu-web-desktop/package.json', '/usr/lib/qemu-web-desktop/public/form.js',
    '/usr/lib/qemu-web-desktop/node_modules/better-sqlite3/build/Release/better_sqlite3.node',
    '/usr/lib/qemu-web-desktop/node_modules/express/package.json', UNIT, CONFFILE,
    '/usr/share/man/man1/qwdctl.1.gz', '/usr/share/doc/qemu-web-desktop/copyright',
    '/usr/share/doc/qemu-web-desktop/changelog.Debian.gz',
    '/usr/share/doc/qemu-web-desktop/examples/nginx/qemu-web-desktop.conf',
    '/usr/share/doc/qemu-web-desktop/examples/config.example.yml',
  ]) t.true(files.includes(p), `the package holds ${p}`);
  for (const dev of ['ava', 'eslint', 'tsx', 'typescript', 'oidc-provider', 'playwright-core', 'smtp-server']) {
    t.false(files.some((f) => f.startsWith(`/usr/lib/qemu-web-desktop/node_modules/${dev}/`)), `no dev dependency ${dev}`);
  }
  t.false(files.some((f) => f.endsWith('.map') || f.startsWith('/usr/lib/qemu-web-desktop/src/')), 'no sources or maps');
  t.false(files.some((f) => f.includes('/better-sqlite3/deps/')), 'no SQLite sources');
  t.false(files.some((f) => f.startsWith('/var/')), 'nothing under /var: postinst makes the state dir');
  t.true(contents.every((l) => l.split(/\s+/)[1] === 'root/root'), 'every file belongs to root');

  // --- install ---------------------------------------------------------------------------------------------------
  installed = true;
  await dpkg(t, ['-i', deb1]);
  t.is(packageStatus(), 'install ok installed');
  const verify = await runAsync('dpkg', ['--verify', NAME]);
  t.deepEqual([verify.status, verify.stdout], [0, ''], 'every installed file matches the package\'s md5sums');
  const passwd = (await runOk(t, 'getent', ['passwd', NAME])).stdout.trim().split(':');
  const [uid, gid] = [Number(passwd[2]), Number(passwd[3])];
  t.true(uid > 0 && uid < 1000, `a system uid, got ${uid}`);
  t.is(passwd[5], STATE_DIR, 'home: the state dir');
  t.is(passwd[6], '/usr/sbin/nologin');
  const state = fs.statSync(STATE_DIR);
  t.deepEqual([state.uid, state.gid, state.mode & 0o7777], [uid, gid, 0o700], 'the state dir: the user\'s, 0700');
  t.is(fs.statSync(`${STATE_DIR}/machines`).uid, uid);
  const conf = fs.statSync(CONFFILE);
  t.deepEqual([conf.uid, conf.gid, conf.mode & 0o7777], [0, gid, 0o640], 'the config (it may hold secrets): root:the group, 0640');
  t.is((await runOk(t, 'dpkg-statoverride', ['--list', CONFFILE])).stdout.trim(), `root ${NAME} 640 ${CONFFILE}`);
  const unitText = fs.readFileSync(UNIT, 'utf8');
  for (const line of ['ProtectSystem=full', 'PrivateTmp=yes', 'UMask=0077', 'NoNewPrivileges=yes', 'KillMode=process']) {
    t.true(unitText.split('\n').includes(line), `the unit has ${line}`);
  }
  t.regex(fs.readFileSync('/usr/lib/qemu-web-desktop/bin/build-demo-image', 'utf8'),
    /^\[ -n "\$OUT" \] \|\| OUT=\/var\/lib\/qemu-web-desktop\/machines\/images\/demo\.qcow2$/m,
    'the packaged demo-image builder writes into the package\'s machines dir by default');
  const postinst = `/var/lib/dpkg/info/${NAME}.postinst`;
  // As dpkg runs it (deb-systemd-helper insists on being called from dpkg).
  const again = await runOk(t, postinst, ['configure', `${UPSTREAM_VERSION}-1`], {
    env: { ...process.env, DPKG_MAINTSCRIPT_PACKAGE: NAME, DPKG_MAINTSCRIPT_NAME: 'postinst', DPKG_RUNNING_VERSION: '1.21' },
  });
  t.is(again.stderr, '', 'postinst configure runs again without a complaint (idempotent)');
  t.is((await runOk(t, '/usr/bin/qwdctl', ['version'])).stdout.trim(), UPSTREAM_VERSION);
  t.regex((await runOk(t, '/usr/bin/qwdctl', ['config', 'path'])).stdout, new RegExp(CONFFILE));
  t.regex((await runOk(t, 'gzip', ['-dc', '/usr/share/man/man1/qwdctl.1.gz'])).stdout, /^\.SH COMMANDS$/m, 'a man page');

  // The administrator's steps (INSTALL.md): the demo machine (its image copied here rather than rebuilt with
  // /usr/lib/qemu-web-desktop/bin/build-demo-image, which takes minutes), and a local edit of the conffile.
  fs.mkdirSync(`${STATE_DIR}/machines/images`, { recursive: true });
  fs.copyFileSync(demoImage, `${STATE_DIR}/machines/images/demo.qcow2`);
  fs.copyFileSync('/usr/share/doc/qemu-web-desktop/examples/machines/demo.yml', `${STATE_DIR}/machines/demo.yml`);
  t.false(/^limits:/m.test(fs.readFileSync(CONFFILE, 'utf8')), 'the short packaged config leaves limits at their defaults');
  // This host runs other tests at once: its load must not refuse the desktop.
  fs.appendFileSync(CONFFILE, '\nlimits:\n  maxLoadPerCpu: 1000\n');

  // --- the service, as its unit starts it --------------------------------------------------------------------------
  const broker1 = await startFromUnit(t, started);
  t.is(uidOf(broker1.pid), uid, 'the broker runs as the package\'s user');
  const created = await fetch(`${broker1.url}/api/v1/sessions`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ machine: 'demo', user: 'deb-test' }),
  });
  const session = await created.json() as { id: string; token: string; state: string };
  t.is(created.status, 201, JSON.stringify(session));
  t.is(session.state, 'running');
  const qemuPid = qemuPidOf(session.id);
  if (qemuPid === null) throw new Error(`no QEMU process named qwd-${session.id}`);
  started.add(qemuPid);
  t.is(uidOf(qemuPid), uid, 'QEMU runs as the package\'s user too');

  // --- upgrade with the desktop running ----------------------------------------------------------------------------
  const build2 = await runOk(t, path.join(ROOT, 'bin', 'build-deb'),
    ['--out', out, '--revision', '2', '--compression', 'gzip'], { cwd: ROOT });
  const deb2 = path.join(out, `${NAME}_${UPSTREAM_VERSION}-2_${arch}.deb`);
  t.log(`build 2 (gzip): ${(build2.ms / 1000).toFixed(1)} s, ${(fs.statSync(deb2).size / 1048576).toFixed(2)} MiB`);
  await dpkg(t, ['-i', deb2]);
  t.is(run('dpkg-query', ['-W', '-f=${Version}', NAME]).stdout, `${UPSTREAM_VERSION}-2`);
  t.true(isRunning(qemuPid), 'the desktop survived the upgrade');
  t.regex(fs.readFileSync(CONFFILE, 'utf8'), /^ {2}maxLoadPerCpu: 1000$/m, 'the administrator\'s edit of the conffile is kept');
  t.deepEqual(fs.readdirSync(CONF_DIR), ['config.yml'], 'no .dpkg-dist/.dpkg-new beside it');
  t.is(fs.statSync(CONFFILE).mode & 0o7777, 0o640, 'the upgrade keeps the config 0640');
  t.is(await stopBroker(broker1), 0, 'the old broker ends cleanly on SIGTERM');
  t.true(isRunning(qemuPid), 'the desktop outlives the broker (KillMode=process)');
  const broker2 = await startFromUnit(t, started);
  await waitFor('the new broker to report its reconciliation', () => /"adopted":\[[^\]]*\]/.exec(broker2.log()), 30_000);
  t.regex(broker2.log(), new RegExp(`"adopted":\\["${session.id}"\\]`), 'the upgraded broker adopted the running desktop');
  const after = await fetch(`${broker2.url}/api/v1/sessions/${session.token}`);
  t.is(after.status, 200);
  t.is((await after.json() as { state: string }).state, 'running');
  t.true(isRunning(qemuPid), 'the same QEMU process');

  // --- remove: prerm stops the desktop through the running broker; config and state stay --------------------------
  const remove = await dpkg(t, ['-r', NAME]);
  t.regex(remove.stdout + remove.stderr, new RegExp(`stopped session ${session.id}`));
  t.false(isRunning(qemuPid), 'the desktop was stopped by prerm on remove');
  t.is(packageStatus(), 'deinstall ok config-files');
  t.false(fs.existsSync('/usr/lib/qemu-web-desktop'));
  t.false(fs.existsSync('/usr/bin/qwdctl'));
  t.true(fs.existsSync(CONFFILE), 'remove keeps the conffile');
  t.true(fs.existsSync(`${STATE_DIR}/qwd.sqlite`), 'remove keeps the state');
  t.is(await stopBroker(broker2), 0);

  // --- remove with the state dir root's and the broker run as root (INSTALL.md's guest-network recipe) -------------
  // prerm runs qwdctl as the state dir's owner: as the package's user it could reach neither the admin socket nor
  // the store, and the desktop would outlive its broker.
  await dpkg(t, ['-i', deb2]);
  t.is(fs.statSync(CONFFILE).mode & 0o7777, 0o640, 'a reinstall over the kept config keeps it 0640');
  await runOk(t, 'chown', ['-R', 'root:root', STATE_DIR]);
  fs.writeFileSync(CONFFILE, fs.readFileSync(CONFFILE, 'utf8').replace(/^ {2}network: none$/m, `  network: none\n  runAs: ${NAME}`));
  const broker3 = await startFromUnit(t, started, 'root');
  t.is(uidOf(broker3.pid), 0, 'this broker runs as root');
  const created3 = await fetch(`${broker3.url}/api/v1/sessions`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ machine: 'demo', user: 'deb-root' }),
  });
  const session3 = await created3.json() as { id: string; state: string };
  t.is(created3.status, 201, JSON.stringify(session3));
  const qemuPid3 = qemuPidOf(session3.id);
  if (qemuPid3 === null) throw new Error(`no QEMU process named qwd-${session3.id}`);
  started.add(qemuPid3);
  t.is(uidOf(qemuPid3), uid, 'QEMU dropped to qemu.runAs');
  const remove3 = await dpkg(t, ['-r', NAME]);
  t.regex(remove3.stdout + remove3.stderr, new RegExp(`stopped session ${session3.id}`));
  t.notRegex(remove3.stdout + remove3.stderr, /could not stop|WARNING/);
  t.false(isRunning(qemuPid3), 'prerm stopped the desktop through the root broker');
  t.is(await stopBroker(broker3), 0);

  // --- remove when the stop fails, without systemd: prerm says so loudly and the removal goes on -------------------
  // The state dir handed to a uid without a name (prerm then runs qwdctl through setpriv) that can read neither the
  // config nor the root broker's socket and store: qwdctl fails. With systemd, prerm would kill the unit's cgroup;
  // here there is none, so the desktop stays and prerm must say which processes to look for.
  await dpkg(t, ['-i', deb2]);
  const broker4 = await startFromUnit(t, started, 'root');
  const created4 = await fetch(`${broker4.url}/api/v1/sessions`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ machine: 'demo', user: 'deb-fail' }),
  });
  const session4 = await created4.json() as { id: string };
  t.is(created4.status, 201, JSON.stringify(session4));
  const qemuPid4 = qemuPidOf(session4.id);
  if (qemuPid4 === null) throw new Error(`no QEMU process named qwd-${session4.id}`);
  started.add(qemuPid4);
  const nobodyUid = 4242424;
  t.is(run('getent', ['passwd', String(nobodyUid)]).status, 2, `uid ${nobodyUid} has no name on this host`);
  fs.chownSync(STATE_DIR, nobodyUid, nobodyUid);
  const remove4 = await dpkg(t, ['-r', NAME]);
  t.regex(remove4.stderr, /could not stop every running desktop through qwdctl/);
  t.regex(remove4.stderr, /WARNING: systemd is not running, so the desktops that could not be stopped/);
  t.regex(remove4.stderr, /-name qwd-/);
  t.is(packageStatus(), 'deinstall ok config-files', 'the removal went on');
  t.true(isRunning(qemuPid4), 'without systemd the desktop is left running (and said so)');
  t.is(await stopBroker(broker4), 0);
  process.kill(qemuPid4, 'SIGKILL'); // the test's own QEMU: what the warning asks the administrator to stop
  await waitFor(`QEMU ${qemuPid4} to end`, () => !isRunning(qemuPid4), 10_000);
  fs.chownSync(STATE_DIR, 0, 0);

  // --- purge: nothing of the package is left ----------------------------------------------------------------------
  await dpkg(t, ['-P', NAME]);
  t.is(packageStatus(), 'not-installed');
  installed = false;
  t.false(fs.existsSync(STATE_DIR), 'purge removes the state dir');
  t.false(fs.existsSync(CONF_DIR), 'purge removes the config');
  t.is(run('dpkg-statoverride', ['--list', CONFFILE]).status, 1, 'purge removes the config\'s mode override');
  const afterPurge = listTrees();
  // Other jobs on this host may install packages meanwhile: what another package owns is theirs, not a leftover.
  const addedAll = [...afterPurge].filter((p) => !before.has(p) && !ACCOUNT_BACKUPS.includes(p));
  const othersOwn = ownedByOtherPackages(addedAll);
  const added = addedAll.filter((p) => !othersOwn.has(p));
  const removed = [...before].filter((p) => !afterPurge.has(p));
  const others = otherDpkgActivity(dpkgLogOffset);
  t.log(`tree comparison: ${before.size} paths before, ${afterPurge.size} after; ${addedAll.length - added.length} new ` +
    `paths of other packages; dpkg activity of other packages meanwhile: ${others.join(', ') || 'none'}`);
  t.deepEqual(added, [], `no file left behind under ${COMPARED_TREES.join(' ')}`);
  t.false(removed.some((p) => p.includes(NAME) || p.startsWith(STATE_DIR)), 'nothing of ours was there before');
  if (others.length) t.log(`paths gone meanwhile (other packages were changed): ${removed.slice(0, 20).join(' ')}`);
  else t.deepEqual(removed, [], 'and none removed that was there before');
  t.deepEqual(ownedBy(afterPurge, uid, gid), [], 'nothing owned by the package\'s user remains');
  t.is(run('getent', ['passwd', NAME]).status, 0, 'the system user is kept on purge (Debian practice; INSTALL.md)');
  t.is(run('dpkg-query', ['-L', NAME]).status, 1, 'dpkg no longer knows a file of it');

  // --- lintian ----------------------------------------------------------------------------------------------------
  const lint = await lintian;
  t.log(`lintian: ${(lint.ms / 1000).toFixed(1)} s`);
  const tags = lint.stdout.split('\n').filter((l) => /^[EWIXP]: /.test(l));
  t.deepEqual(tags.filter((l) => /^[EW]: /.test(l)), [], 'lintian: no error and no warning');
  const infoTags = [...new Set(tags.map((l) => l.split(' ')[2]!))];
  t.log(`lintian informational tags: ${infoTags.join(', ') || 'none'}`);
  const installMd = fs.readFileSync(path.join(ROOT, 'INSTALL.md'), 'utf8');
  for (const tag of infoTags) {
    t.true(EXPLAINED_LINTIAN_TAGS.includes(tag) && installMd.includes(tag), `lintian tag ${tag} is explained in INSTALL.md`);
  }
});
