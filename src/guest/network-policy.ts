// What a guest may reach on the network, as data and as an nftables ruleset.
// Pure: no I/O. The ruleset is loaded into the session's own network namespace
// (see launcher/guest-netns.ts), where QEMU's user-mode networking (slirp) opens
// the guest's connections as ordinary sockets: the OUTPUT hook of that namespace
// sees every connection the guest asks for, whatever the protocol.
//
// Order of the rules (first match wins):
//   0. traffic inside the namespace (its lo): accepted, nothing listens there;
//   1. every address of the host itself, loopback, broadcast and multicast: rejected, whatever the lists say;
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
 * Every destination that is the host itself, from `ip -json address show` (each
 * interface's addresses, up or down) and `ip -json route show table local` for
 * each family (local, broadcast and anycast routes, also those without an
 * address, e.g. AnyIP): link-local ones without their zone, deduplicated, sorted.
 */
export function hostAddresses(ipJson: readonly string[]): Cidr[] {
  const seen = new Map<string, Cidr>();
  const add = (value: unknown) => {
    const c = typeof value === 'string' ? parseCidr(value.split('%')[0]!) : null;
    if (c) seen.set(formatCidr(c), c);
  };
  for (const text of ipJson) {
    if (!text.trim()) continue; // ip prints nothing for a family without routes
    const entries = JSON.parse(text) as Array<{ addr_info?: Array<{ local?: unknown }>; dst?: unknown }>;
    for (const entry of Array.isArray(entries) ? entries : []) {
      for (const info of entry.addr_info ?? []) add(info.local);
      if (entry.dst !== 'default') add(entry.dst);
    }
  }
  return [...seen.values()].sort((a, b) => a.family - b.family || formatCidr(a).localeCompare(formatCidr(b)));
}

/**
 * Refused whatever the host's interfaces say: loopback, "this network" (0/8,
 * which Linux delivers locally), limited broadcast, multicast (host services
 * such as mDNS listen there) and the unspecified IPv6 address.
 */
const ALWAYS_REFUSED: readonly Cidr[] = [
  '127.0.0.0/8', '0.0.0.0/8', '224.0.0.0/4', '255.255.255.255/32', '::1/128', '::/128', 'ff00::/8',
].map((c) => parseCidr(c)!);

/** The nftables ruleset (for `nft -f`) for one guest's namespace. */
export function buildGuestRuleset(policy: GuestNetworkPolicy, host: readonly Cidr[]): string {
  const hostSet = [...ALWAYS_REFUSED, ...host];
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
    // IPv6 neighbour and router discovery towards pasta's side of the link (multicast and
    // link-local, both refused below): without it the namespace has no IPv6 at all.
    '    icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit } accept',
    '    ip daddr @host4 jump refuse',
    '    ip6 daddr @host6 jump refuse',
    '    ip daddr @deny4 jump refuse',
    '    ip6 daddr @deny6 jump refuse',
  );
  if (policy.allow.length) {
    lines.push(
      '    meta nfproto ipv4 ip daddr != @allow4 jump refuse',
      '    meta nfproto ipv6 ip6 daddr != @allow6 jump refuse',
    );
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

