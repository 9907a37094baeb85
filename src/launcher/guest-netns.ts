// A network namespace per session, so a guest never reaches the host itself.
//
// QEMU's user-mode networking (slirp) turns the guest's connections into
// ordinary sockets of the QEMU process, and maps the guest's gateway 10.0.2.2
// to the loopback of whatever namespace QEMU runs in. Run on the host, that is
// the host's loopback (the broker, LDAP, databases…), and any other address of
// the host is reachable too. So QEMU runs in a namespace of its own:
//   - `ip netns add qwd-<session>`: an empty namespace (only its own, unused loopback);
//   - an nftables ruleset in it (guest/network-policy.ts): every host address,
//     loopback and the site's denied destinations are refused, in that namespace
//     only (nothing is added to the host's own firewall);
//   - QEMU is started through `nsenter --net=…`, which execs it: the pid is QEMU's;
//   - pasta (from passt) then gives the namespace outbound connectivity through
//     the host's sockets, with `--no-map-gw` (the gateway is not mapped to the
//     host) and no port forwarded in either direction; pasta drops its
//     capabilities and sandboxes itself once attached.
// Teardown ends pasta and deletes the namespace, and is safe to repeat.
// Needs root (CAP_SYS_ADMIN to create the namespace); the broker checks at start.
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { QwdError } from '../errors.js';
import type { Config } from '../config/schema.js';
import { findProgram, readLogTail, runTool } from '../qemu/run-tool.js';
import { readCmdline, readProcStat } from '../qemu/process.js';
import { spawn } from 'node:child_process';
import { buildGuestRuleset, hostAddresses, type GuestNetworkPolicy } from '../guest/network-policy.js';

/** The tools, by absolute path, as the config gives them (guestNetwork.*). */
export type GuestNetworkTools = Pick<Config['guestNetwork'], 'ip' | 'nsenter' | 'unshare' | 'umount' | 'nft' | 'pasta'>;

/**
 * Where session namespaces are bound: the one place Debian's AppArmor profile for
 * passt lets pasta open a namespace by path (@{run}/user/@{uid}/netns/*), for the
 * broker's own uid (pasta keeps it with --runas).
 */
export function netnsDir(): string {
  return `/run/user/${process.getuid?.() ?? 0}/netns`;
}
const TOOL_TIMEOUT_MS = 10_000;
const HINT = 'bin/setup installs iproute2, util-linux, mount, nftables and passt';

/**
 * The namespace name of a session (its run dir's name is the session id). Not
 * "qwd-<id>", QEMU's process name: pasta's command line names the namespace,
 * and looking for a session's QEMU by its name must not find pasta.
 */
export function netnsName(runDir: string): string {
  const id = path.basename(runDir);
  if (!/^[A-Za-z0-9_-]{1,40}$/.test(id)) {
    throw new QwdError('QWD_INTERNAL', `run dir name ${JSON.stringify(id)} cannot name a network namespace`);
  }
  return `qwdnet-${id}`;
}

export function netnsPath(runDir: string): string {
  return path.join(netnsDir(), netnsName(runDir));
}

/** The argv prefix that runs a program inside the session's namespace (nsenter execs it). */
export function inNetnsArgv(
  tools: GuestNetworkTools, runDir: string, file: string, argv: readonly string[],
): { file: string; argv: string[] } {
  return { file: tools.nsenter, argv: [`--net=${netnsPath(runDir)}`, '--', file, ...argv] };
}

/**
 * Creates the session's namespace and loads its rules (before QEMU starts in it),
 * and starts pasta: `connected` resolves once pasta has configured the namespace.
 * On failure everything made so far is removed again and a QwdError says why
 * (a failure of `connected` is the caller's to clean up, with tearDownGuestNetwork).
 */
export async function prepareGuestNetwork(
  tools: GuestNetworkTools, runDir: string, policy: GuestNetworkPolicy,
): Promise<{ connected: Promise<void> }> {
  const name = netnsName(runDir);
  const run = (file: string, argv: string[]) =>
    runTool(file, argv, { timeoutMs: TOOL_TIMEOUT_MS, errorCode: 'QWD_NETWORK_FAILED', installHint: HINT });
  // A namespace of this name can only be left over from a start of this same session that died half-way.
  if (fs.existsSync(netnsPath(runDir))) await tearDownGuestNetwork(tools, runDir);
  try {
    // A namespace bound to a file (as `ip netns add` does under /run/netns).
    await fsp.mkdir(netnsDir(), { recursive: true, mode: 0o700 });
    await fsp.writeFile(netnsPath(runDir), '', { mode: 0o600, flag: 'wx' });
    // The namespace is made, and every destination that is this host read (whatever
    // the state of its interfaces), at the same time: nothing runs in the namespace yet.
    // allSettled: a failed read must not start the teardown while unshare still mounts.
    const settled = await Promise.allSettled([
      run(tools.unshare, [`--net=${netnsPath(runDir)}`, '--', tools.ip, 'link', 'set', 'lo', 'up']),
      run(tools.ip, ['-json', 'address', 'show']),
      run(tools.ip, ['-4', '-json', 'route', 'show', 'table', 'local']),
      run(tools.ip, ['-6', '-json', 'route', 'show', 'table', 'local']),
    ]);
    const failed = settled.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason;
    const tables = settled.slice(1).map((r) => (r as PromiseFulfilledResult<{ stdout: string }>).value);
    const rules = buildGuestRuleset(policy, hostAddresses(tables.map((r) => r.stdout)));
    const rulesFile = path.join(runDir, 'guest-net.nft');
    await fsp.writeFile(rulesFile, rules, { mode: 0o600 });
    await run(tools.nsenter, [`--net=${netnsPath(runDir)}`, '--', tools.nft, '-f', rulesFile]);
    // Read the rules back: a QEMU without them would reach the host, so trust no exit status alone.
    const loaded = await run(
      tools.nsenter, [`--net=${netnsPath(runDir)}`, '--', tools.nft, 'list', 'chain', 'inet', 'qwd_guest', 'output'],
    );
    if (!/hook output/.test(loaded.stdout) || !/@host4/.test(loaded.stdout)) {
      throw new QwdError(
        'QWD_NETWORK_FAILED',
        `${tools.nft} did not load the guest rules into ${name} (is guestNetwork.nft nftables' nft?): ` +
          `${loaded.stdout.slice(0, 200)}`,
      );
    }
    // pasta configures the namespace while QEMU starts (a guest needs its network only
    // seconds later); the launcher awaits `connected` together with QEMU's readiness.
    const connected = connectGuestNetwork(tools, runDir);
    connected.catch(() => {
      // Awaited by the launcher, which tears everything down on failure.
    });
    return { connected };
  } catch (err) {
    await tearDownGuestNetwork(tools, runDir).catch(() => {
      // The original error says more; a namespace left behind is removed by the next cleanup of this run dir.
    });
    throw err;
  }
}

/**
 * Connects the namespace to the outside with pasta. pasta runs in the
 * foreground, in its own process group, with no pid file of its own (Debian's
 * AppArmor profile for passt lets it write files only under /tmp and $HOME):
 * the broker records its pid and start time in the run dir (pasta.pid) for
 * teardown, also after a broker restart. Resolves once pasta has configured
 * the namespace's interface and default route.
 */
async function connectGuestNetwork(tools: GuestNetworkTools, runDir: string): Promise<void> {
  const logFd = fs.openSync(path.join(runDir, 'pasta.log'), 'a', 0o600);
  let child;
  try {
    child = spawn(tools.pasta, [
      '--foreground', '--quiet', '--stderr', '--runas', '0', '--config-net', '--no-map-gw',
      '--tcp-ports', 'none', '--udp-ports', 'none', '--tcp-ns', 'none', '--udp-ns', 'none',
      '--netns', netnsPath(runDir),
    ], { detached: true, stdio: ['ignore', logFd, logFd] });
  } finally {
    fs.closeSync(logFd);
  }
  let exited: string | null = null;
  child.once('exit', (code, signal) => (exited = signal ?? `exit ${code}`));
  await new Promise<void>((resolve, reject) => {
    child.once('spawn', resolve);
    child.once('error', (err) => reject(
      new QwdError('QWD_NETWORK_FAILED', `cannot run ${tools.pasta}: ${err.message} (${HINT})`, { cause: err }),
    ));
  });
  child.unref();
  const pid = child.pid!;
  try {
    await fsp.writeFile(
      path.join(runDir, 'pasta.pid'), `${pid} ${readProcStat(pid)?.startTime ?? ''}\n`, { mode: 0o600 },
    );
    // --runas 0: pasta must stay able to enter a namespace that root owns; it
    // still drops every capability and isolates itself once attached.
    const deadline = Date.now() + TOOL_TIMEOUT_MS;
    const inNs = (argv: string[]) => runTool(
      tools.nsenter, [`--net=${netnsPath(runDir)}`, '--', tools.ip, ...argv],
      { timeoutMs: TOOL_TIMEOUT_MS, errorCode: 'QWD_NETWORK_FAILED' },
    );
    for (let delay = 5; ; delay = Math.min(delay * 2, 100)) {
      if (exited) {
        throw new QwdError(
          'QWD_NETWORK_FAILED',
          `pasta for ${netnsName(runDir)} ended during start-up (${exited}): ` +
            `${await readLogTail(path.join(runDir, 'pasta.log'))}`,
        );
      }
      // A default route of either family (an IPv6-only host gives pasta no IPv4 one).
      if ((await inNs(['-json', 'route', 'show', 'default'])).stdout.includes('"dst":"default"')) return;
      if ((await inNs(['-6', '-json', 'route', 'show', 'default'])).stdout.includes('"dst":"default"')) return;
      if (Date.now() > deadline) {
        throw new QwdError(
          'QWD_NETWORK_FAILED', `pasta did not configure ${netnsName(runDir)} within ${TOOL_TIMEOUT_MS} ms`,
        );
      }
      await new Promise((r) => setTimeout(r, delay));
    }
  } catch (err) {
    // Ours for sure (our child, not yet reaped): it must not outlive a start that failed.
    if (!exited) child.kill('SIGKILL');
    throw err;
  }
}

/**
 * Ends the session's pasta (checked by pid, start time and program first) and
 * deletes its namespace. Safe to repeat, and after a broker restart.
 */
export async function tearDownGuestNetwork(tools: GuestNetworkTools, runDir: string): Promise<void> {
  const pasta = ourPasta(tools, runDir);
  if (pasta !== null) {
    signal(pasta, 'SIGTERM');
    for (let waited = 0; waited < 2000 && ourPasta(tools, runDir) !== null; waited += 20) {
      await new Promise((r) => setTimeout(r, 20));
    }
    if (ourPasta(tools, runDir) !== null) signal(pasta, 'SIGKILL');
  }
  if (fs.existsSync(netnsPath(runDir))) {
    // Detached if bound (as `ip netns delete` does: another mount namespace, e.g. one of
    // `ip netns exec`, may still hold a copy of the mount), then removed.
    if (isMountPoint(netnsPath(runDir))) {
      await runTool(
        tools.umount, ['--lazy', netnsPath(runDir)],
        { timeoutMs: TOOL_TIMEOUT_MS, errorCode: 'QWD_NETWORK_FAILED', installHint: HINT },
      );
    }
    await fsp.rm(netnsPath(runDir), { force: true });
  }
}

function isMountPoint(file: string): boolean {
  try {
    return fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n').some((line) => line.split(' ')[4] === file);
  } catch {
    return false;
  }
}

function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch (err) {
    // It ended between the check and the signal: what was wanted.
    if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
  }
}

/** The pid of this run dir's pasta while it runs (same pid, start time and program as recorded), else null. */
function ourPasta(tools: GuestNetworkTools, runDir: string): number | null {
  let recorded: string[];
  try {
    recorded = fs.readFileSync(path.join(runDir, 'pasta.pid'), 'utf8').trim().split(' ');
  } catch {
    return null; // never started, or the run dir is gone
  }
  const pid = Number(recorded[0]);
  if (!Number.isInteger(pid) || pid <= 1) return null;
  const stat = readProcStat(pid);
  if (!stat || stat.state === 'Z' || stat.startTime !== recorded[1]) return null;
  // pasta is a link to passt; the kernel names the process after the link it was run by.
  const argv0 = readCmdline(pid)?.[0] ?? '';
  return argv0 === tools.pasta || /^(pasta|passt)/.test(readComm(pid)) ? pid : null;
}

function readComm(pid: number): string {
  try {
    return fs.readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
  } catch {
    return '';
  }
}

/** Why sessions with network cannot be isolated on this host, or null when they can. */
export function guestNetworkUnavailable(tools: GuestNetworkTools): string | null {
  if (process.getuid?.() !== 0) return 'the broker does not run as root, which a network namespace per session needs';
  const missing = ([
    ['ip', 'iproute2'], ['nsenter', 'util-linux'], ['unshare', 'util-linux'], ['umount', 'mount'], ['nft', 'nftables'],
    ['pasta', 'passt'],
  ] as const)
    .filter(([key]) => !findProgram(tools[key])).map(([key, pkg]) => `${tools[key]} (Debian package ${pkg})`);
  return missing.length ? `missing ${missing.join(', ')}` : null;
}
