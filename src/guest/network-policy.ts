// What a guest may reach on the network, as data and as an nftables ruleset.
// Pure: no I/O. The ruleset is loaded into the session's own network namespace
// (see launcher/guest-netns.ts), where QEMU's user-mode networking (slirp) opens
// the guest's connections as ordinary sockets: the OUTPUT hook of that namespace
// sees every connection the guest asks for, whatever the protocol.
//
// Order of the rules (first match wins):
//   0. traffic inside the namespace (its lo): accepted, nothing listens there;
//   1. every address of the host itself, and loopback: rejected, whatever the lists say;
//   2. `deny`: rejected (link-local, i.e. cloud metadata at 169.254.169.254, by default);
//   3. `allow`, when not empty: everything outside it is rejected;
//   4. otherwise accepted.
// Rejected TCP gets a reset and everything else an ICMP "administratively
// prohibited", so the guest sees "connection refused" at once instead of a timeout.
import { formatCidr, parseCidr, type Cidr } from '../config/cidr.js';

export interface GuestNetworkPolicy {
  readonly allow: readonly Cidr[];
  readonly deny: readonly Cidr[];
}

/**
 * The host's own addresses from `ip -json address show` (every interface, up or
 * down, both families; link-local ones without their zone), deduplicated and sorted.
 */
export function hostAddresses(ipJson: string): Cidr[] {
  const seen = new Map<string, Cidr>();
  const links = JSON.parse(ipJson) as Array<{ addr_info?: Array<{ local?: unknown }> }>;
  for (const link of Array.isArray(links) ? links : []) {
    for (const info of link.addr_info ?? []) {
      const c = typeof info.local === 'string' ? parseCidr(info.local.split('%')[0]!) : null;
      if (c) seen.set(formatCidr(c), c);
    }
  }
  return [...seen.values()].sort((a, b) => a.family - b.family || formatCidr(a).localeCompare(formatCidr(b)));
}

const LOOPBACK: readonly Cidr[] = [parseCidr('127.0.0.0/8')!, parseCidr('::1/128')!];

/** The nftables ruleset (for `nft -f`) for one guest's namespace. */
export function buildGuestRuleset(policy: GuestNetworkPolicy, host: readonly Cidr[]): string {
  const hostSet = [...LOOPBACK, ...host];
  const lines = [
    '# qemu-web-desktop: what this session\'s guest may reach (written by the broker; see INSTALL.md).',
    'flush ruleset',
    'table inet qwd_guest {',
    ...setLines('host', hostSet),
    ...setLines('deny', policy.deny),
  ];
  if (policy.allow.length) lines.push(...setLines('allow', policy.allow));
  lines.push(
    '  chain output {',
    '    type filter hook output priority 0; policy accept;',
    // The namespace's own loopback and addresses (pasta copies the host's) are local to
    // the namespace, where nothing listens; that traffic, and the resets that refuse
    // connections below, never leave it through lo. Filtering lo would drop those resets.
    '    oifname "lo" accept',
    '    ip daddr @host4 jump refuse',
    '    ip6 daddr @host6 jump refuse',
    '    ip daddr @deny4 jump refuse',
    '    ip6 daddr @deny6 jump refuse',
  );
  if (policy.allow.length) {
    lines.push('    meta nfproto ipv4 ip daddr != @allow4 jump refuse', '    meta nfproto ipv6 ip6 daddr != @allow6 jump refuse');
  }
  lines.push(
    '  }',
    '  chain refuse {',
    '    meta l4proto tcp reject with tcp reset',
    '    reject with icmpx type admin-prohibited',
    '  }',
    '}',
    '',
  );
  return lines.join('\n');
}

/** A named interval set per family; an empty set is still declared so the rules that use it load. */
function setLines(name: string, cidrs: readonly Cidr[]): string[] {
  return ([4, 6] as const).flatMap((family) => {
    const elements = cidrs.filter((c) => c.family === family).map(formatCidr);
    const type = family === 4 ? 'ipv4_addr' : 'ipv6_addr';
    const body = elements.length ? ` elements = { ${elements.join(', ')} };` : '';
    return [`  set ${name}${family} { type ${type}; flags interval; auto-merge;${body} }`];
  });
}

