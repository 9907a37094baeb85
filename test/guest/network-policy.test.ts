// The guest network policy as data: CIDR parsing, the host's addresses from
// `ip -json address`, and the nftables ruleset (checked by nft itself in a
// namespace of the test's own, when nft is installed).
import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import crypto from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { formatCidr, parseCidr, DEFAULT_DENY } from '../../src/config/cidr.js';
import { buildGuestRuleset, hostAddresses } from '../../src/guest/network-policy.js';
import { parseConfig } from '../../src/config/schema.js';
import { requireProgram, tempDir } from '../helpers/env.js';

const CIDRS: Array<[string, string | null]> = [
  ['10.1.2.3/16', '10.1.0.0/16'],
  ['10.1.2.3', '10.1.2.3/32'],
  ['0.0.0.0/0', '0.0.0.0/0'],
  ['192.168.1.255/23', '192.168.0.0/23'],
  ['::1', '::1/128'],
  ['fe80::1/10', 'fe80::/10'],
  ['2001:db8:0:0:1:0:0:1', '2001:db8::1:0:0:1/128'],
  ['2001:db8::1/32', '2001:db8::/32'],
  ['::ffff:192.0.2.1', '::ffff:c000:201/128'],
  ['::/0', '::/0'],
  ['10.0.0.0/33', null],
  ['2001:db8::/129', null],
  ['1.2.3', null],
  ['256.1.1.1', null],
  ['10.0.0.0/8/8', null],
  ['10.0.0.0/', null],
  ['10.0.0.0/-1', null],
  ['a::b::c', null],
  ['example.org', null],
  ['', null],
];

for (const [input, expected] of CIDRS) {
  test(`parseCidr(${JSON.stringify(input)}) is ${expected ?? 'refused'}`, (t) => {
    const c = parseCidr(input);
    t.is(c ? formatCidr(c) : null, expected);
  });
}

const IP_JSON = JSON.stringify([
  { ifname: 'lo', addr_info: [{ family: 'inet', local: '127.0.0.1' }, { family: 'inet6', local: '::1' }] },
  { ifname: 'eth0', addr_info: [{ family: 'inet', local: '192.0.2.2' }, { family: 'inet6', local: 'fe80::1%eth0' }] },
  { ifname: 'down0', operstate: 'DOWN', addr_info: [{ family: 'inet', local: '10.9.9.9' }] },
  { ifname: 'noaddr' },
  { ifname: 'eth1', addr_info: [{ family: 'inet', local: '192.0.2.2' }] },
]);

const LOCAL_ROUTES = JSON.stringify([
  { type: 'local', dst: '127.0.0.0/8', dev: 'lo' },
  { type: 'broadcast', dst: '192.0.2.255', dev: 'eth0' },
  { type: 'local', dst: '198.51.100.0/24', dev: 'lo' },
  { type: 'local', dst: 'default', dev: 'lo' },
]);

test('the host\'s addresses come from every interface, up or down, and its local routes, without zones or duplicates', (t) => {
  t.deepEqual(hostAddresses([IP_JSON, LOCAL_ROUTES, '']).map(formatCidr),
    ['10.9.9.9/32', '127.0.0.0/8', '127.0.0.1/32', '192.0.2.2/32', '192.0.2.255/32', '198.51.100.0/24', '::1/128', 'fe80::1/128']);
});

const deny = DEFAULT_DENY.map((c) => parseCidr(c)!);

test('the ruleset refuses the host, then the deny list; without an allow list nothing else is refused', (t) => {
  const rules = buildGuestRuleset({ allow: [], deny }, hostAddresses([IP_JSON]));
  t.regex(rules, /set host4 \{[^}]*elements = \{ 127\.0\.0\.0\/8, 0\.0\.0\.0\/8, 224\.0\.0\.0\/4, 255\.255\.255\.255\/32, 10\.9\.9\.9\/32, 127\.0\.0\.1\/32, 192\.0\.2\.2\/32 \}/);
  t.regex(rules, /set host6 \{[^}]*::1\/128[^}]*ff00::\/8[^}]*fe80::1\/128/, 'loopback, multicast, then the host\'s own');
  t.regex(rules, /set deny4 \{[^}]*169\.254\.0\.0\/16/);
  t.regex(rules, /set deny6 \{[^}]*fe80::\/10/);
  const chain = rules.slice(rules.indexOf('chain output'), rules.indexOf('chain refuse'));
  const order = ['oifname "lo" accept', '@host4', '@host6', '@deny4', '@deny6'].map((s) => chain.indexOf(s));
  t.deepEqual([...order].sort((a, b) => a - b), order, 'lo first, then host, then deny');
  t.false(order.includes(-1));
  t.notRegex(rules, /allow/);
});

test('with an allow list, everything outside it is refused, after the host and deny rules', (t) => {
  const rules = buildGuestRuleset({ allow: [parseCidr('10.0.0.0/8')!], deny }, []);
  t.regex(rules, /set allow4 \{[^}]*10\.0\.0\.0\/8/);
  t.regex(rules, /set allow6 \{ type ipv6_addr; flags interval; auto-merge; \}/, 'an empty IPv6 allow set: no IPv6 destination is allowed');
  const chain = rules.slice(rules.indexOf('chain output'), rules.indexOf('chain refuse'));
  t.true(chain.indexOf('@deny6') < chain.indexOf('!= @allow4'));
});

test('nft accepts the ruleset, loaded into a namespace of the test\'s own', (t) => {
  requireProgram('nft', 'nftables');
  requireProgram('ip', 'iproute2');
  const ns = `qwdtest-${crypto.randomBytes(4).toString('hex')}`;
  t.is(spawnSync('ip', ['netns', 'add', ns]).status, 0);
  t.teardown(() => spawnSync('ip', ['netns', 'delete', ns]));
  const file = path.join(tempDir(t), 'rules.nft');
  fs.writeFileSync(file, buildGuestRuleset({ allow: [parseCidr('10.0.0.0/8')!, parseCidr('2001:db8::/32')!], deny }, hostAddresses([IP_JSON])));
  const load = spawnSync('ip', ['netns', 'exec', ns, '/usr/sbin/nft', '-f', file], { encoding: 'utf8' });
  t.is(load.status, 0, load.stderr);
  const list = spawnSync('ip', ['netns', 'exec', ns, '/usr/sbin/nft', 'list', 'chain', 'inet', 'qwd_guest', 'output'], { encoding: 'utf8' });
  t.regex(list.stdout, /ip daddr @host4/);
});

test('guestNetwork config: CIDR lists are validated with the key and the value; tools must be absolute paths', (t) => {
  const bad = parseConfig({ guestNetwork: { allow: ['10.0.0.0/8', 'example.org'], deny: 'everything', nft: 'nft' } }, 'c.yml', '/tmp');
  t.is(bad.config, null);
  t.true(bad.problems.some((m) => /guestNetwork\.allow/.test(m) && /example\.org/.test(m)), bad.problems.join('\n'));
  t.true(bad.problems.some((m) => /guestNetwork\.deny/.test(m) && /everything/.test(m)), bad.problems.join('\n'));
  t.true(bad.problems.some((m) => /guestNetwork\.nft/.test(m) && /absolute path/.test(m)), bad.problems.join('\n'));
  const good = parseConfig({}, null, '/tmp');
  t.deepEqual(good.config!.guestNetwork.deny.map(formatCidr), ['169.254.0.0/16', 'fe80::/10']);
  t.deepEqual(good.config!.guestNetwork.allow, []);
  t.is(good.config!.guestNetwork.pasta, '/usr/bin/pasta');
});
