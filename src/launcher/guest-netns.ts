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
//   - pasta (from passt) gives it outbound connectivity through the host's
//     sockets, with `--no-map-gw` (the gateway is not mapped to the host) and no
//     port forwarded in either direction; pasta drops its capabilities and
//     sandboxes itself once attached, and exits by itself when the namespace goes;
//   - QEMU is started through `nsenter --net=…`, which execs it: the pid is QEMU's.
// Teardown deletes the namespace (pasta then exits) and is safe to repeat.
// Needs root (CAP_SYS_ADMIN to create the namespace); the broker checks at start.
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { QwdError } from '../errors.js';
import { findProgram, runTool } from '../qemu/run-tool.js';
import { buildGuestRuleset, hostAddresses, type GuestNetworkPolicy } from '../guest/network-policy.js';

export interface GuestNetworkTools {
  readonly ip: string;
  readonly nsenter: string;
  readonly nft: string;
  readonly pasta: string;
}

const NETNS_DIR = '/run/netns';
const TOOL_TIMEOUT_MS = 10_000;
const HINT = 'bin/setup installs iproute2, util-linux, nftables and passt';

/** The namespace name of a session (its run dir's name is the session id). */
export function netnsName(runDir: string): string {
  const id = path.basename(runDir);
  if (!/^[A-Za-z0-9_-]{1,40}$/.test(id)) throw new QwdError('QWD_INTERNAL', `run dir name ${JSON.stringify(id)} cannot name a network namespace`);
  return `qwd-${id}`;
}

export function netnsPath(runDir: string): string {
  return path.join(NETNS_DIR, netnsName(runDir));
}

/** The argv prefix that runs a program inside the session's namespace (nsenter execs it). */
export function inNetnsArgv(tools: GuestNetworkTools, runDir: string, file: string, argv: readonly string[]): { file: string; argv: string[] } {
  return { file: tools.nsenter, argv: [`--net=${netnsPath(runDir)}`, '--', file, ...argv] };
}

/**
 * Creates the session's namespace, loads its rules and connects it with pasta.
 * On failure everything made so far is removed again and a QwdError says why.
 */
export async function setUpGuestNetwork(tools: GuestNetworkTools, runDir: string, policy: GuestNetworkPolicy): Promise<void> {
  const name = netnsName(runDir);
  const run = (file: string, argv: string[], input?: string) => runTool(file, argv, { timeoutMs: TOOL_TIMEOUT_MS, errorCode: 'QWD_NETWORK_FAILED', installHint: HINT, input });
  // A namespace of this name can only be left over from a start of this same session that died half-way.
  if (fs.existsSync(netnsPath(runDir))) await tearDownGuestNetwork(tools, runDir);
  try {
    await run(tools.ip, ['netns', 'add', name]);
    await run(tools.ip, ['-n', name, 'link', 'set', 'lo', 'up']);
    // Every address of the host, up or down (Node's os.networkInterfaces() omits interfaces that are down).
    const { stdout } = await run(tools.ip, ['-json', 'address', 'show']);
    const rules = buildGuestRuleset(policy, hostAddresses(stdout));
    const rulesFile = path.join(runDir, 'guest-net.nft');
    await fsp.writeFile(rulesFile, rules, { mode: 0o600 });
    await run(tools.nsenter, [`--net=${netnsPath(runDir)}`, '--', tools.nft, '-f', rulesFile]);
    // Read the rules back: a QEMU without them would reach the host, so trust no exit status alone.
    const loaded = await run(tools.nsenter, [`--net=${netnsPath(runDir)}`, '--', tools.nft, 'list', 'chain', 'inet', 'qwd_guest', 'output']);
    if (!/hook output/.test(loaded.stdout) || !/@host4/.test(loaded.stdout)) {
      throw new QwdError('QWD_NETWORK_FAILED', `${tools.nft} did not load the guest rules into ${netnsName(runDir)} (is guestNetwork.nft nftables' nft?): ${loaded.stdout.slice(0, 200)}`);
    }
    // --runas 0: pasta must stay able to enter a namespace that root owns; it
    // still drops every capability and isolates itself after attaching.
    await run(tools.pasta, [
      '--runas', '0', '--quiet', '--netns', netnsPath(runDir), '--config-net', '--no-map-gw',
      '--tcp-ports', 'none', '--udp-ports', 'none', '--tcp-ns', 'none', '--udp-ns', 'none',
      '--pid', path.join(runDir, 'pasta.pid'),
    ]);
  } catch (err) {
    await tearDownGuestNetwork(tools, runDir).catch(() => {
      // The original error says more; a namespace left behind is removed by the next cleanup of this run dir.
    });
    throw err;
  }
}

/**
 * Deletes the session's namespace and waits for its pasta to exit (pasta quits
 * when its namespace goes; one that does not within a second is killed, after
 * checking by its command line that it is this session's). Safe to repeat.
 */
export async function tearDownGuestNetwork(tools: GuestNetworkTools, runDir: string): Promise<void> {
  const pasta = readPastaPid(runDir);
  if (fs.existsSync(netnsPath(runDir))) {
    await runTool(tools.ip, ['netns', 'delete', netnsName(runDir)], { timeoutMs: TOOL_TIMEOUT_MS, errorCode: 'QWD_NETWORK_FAILED', installHint: HINT });
  }
  if (pasta === null) return;
  const ours = () => {
    try {
      return fs.readFileSync(`/proc/${pasta}/cmdline`, 'utf8').split('\0').includes(netnsPath(runDir));
    } catch {
      return false; // gone
    }
  };
  for (let waited = 0; waited < 1000 && ours(); waited += 20) await new Promise((r) => setTimeout(r, 20));
  if (ours()) process.kill(pasta, 'SIGKILL');
  for (let waited = 0; waited < 2000 && ours(); waited += 20) await new Promise((r) => setTimeout(r, 20));
}

function readPastaPid(runDir: string): number | null {
  try {
    const pid = Number(fs.readFileSync(path.join(runDir, 'pasta.pid'), 'utf8').trim());
    return Number.isInteger(pid) && pid > 1 ? pid : null;
  } catch {
    return null; // never started, or the run dir is gone
  }
}

/** Why sessions with network cannot be isolated on this host, or null when they can. */
export function guestNetworkUnavailable(tools: GuestNetworkTools): string | null {
  if (process.getuid?.() !== 0) return 'the broker does not run as root, which a network namespace per session needs';
  const missing = ([['ip', 'iproute2'], ['nsenter', 'util-linux'], ['nft', 'nftables'], ['pasta', 'passt']] as const)
    .filter(([key]) => !findProgram(tools[key])).map(([key, pkg]) => `${tools[key]} (Debian package ${pkg})`);
  return missing.length ? `missing ${missing.join(', ')}` : null;
}
