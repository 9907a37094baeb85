import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { parseConfig } from '../../src/config/schema.js';
import { loadConfig, INSTALL_DIR } from '../../src/config/load.js';
import { ConfigError } from '../../src/errors.js';
import { tempDir } from '../helpers/env.js';

test('embedded defaults: 127.0.0.1:8080, local launcher, state under ./var of the install dir', (t) => {
  const config = loadConfig({}, {});
  t.is(config.source, null);
  t.deepEqual(config.listen, { host: '127.0.0.1', port: 8080 });
  t.is(config.launcher, 'local');
  t.is(config.stateDir, path.join(INSTALL_DIR, 'var'));
  t.is(config.runDir, path.join(INSTALL_DIR, 'var', 'sessions'));
  t.is(config.machinesDir, path.join(INSTALL_DIR, 'machines'));
  t.is(config.qemu.accel, 'auto');
  t.true(Object.isFrozen(config) && Object.isFrozen(config.limits));
});

const bad: Array<[string, unknown, RegExp]> = [
  ['port out of range', { listen: { port: 70000 } }, /cfg\.yml: listen\.port must be an integer from 0 to 65535, got 70000/],
  ['memory as a string', { limits: { maxMemoryMiBPerSession: '8G' } }, /limits\.maxMemoryMiBPerSession must be an integer from 16 to \d+, got "8G"/],
  ['unknown key', { limit: {} }, /limit is not a known key/],
  ['nested unknown key', { qemu: { accell: 'kvm' } }, /qemu\.accell is not a known key/],
  ['accel not in the list', { qemu: { accel: 'hvf' } }, /qemu\.accel must be one of auto, kvm, tcg, got "hvf"/],
  ['section not a mapping', { limits: 3 }, /limits must be a mapping, got 3/],
  ['lifetimes out of order', { limits: { minLifetimeS: 100, maxLifetimeS: 50, defaultLifetimeS: 60 } }, /minLifetimeS \(100\) must not exceed limits\.maxLifetimeS \(50\)/],
  ['bad cron', { purge: { schedule: 'every minute' } }, /purge\.schedule must be a cron expression/],
  ['bad public URL', { publicUrl: 'ftp://x' }, /publicUrl must be an http:\/\/ or https:\/\/ URL/],
  ['run dir too long for Unix sockets', { runDir: '/' + 'x'.repeat(100) }, /108-byte limit/],
];
for (const [title, raw, message] of bad) {
  test(`config validation: ${title}`, (t) => {
    const { config, problems } = parseConfig(raw, '/etc/qwd/cfg.yml', '/etc/qwd');
    t.is(config, null);
    t.true(problems.some((p) => message.test(p)), problems.join('\n'));
  });
}

test('every problem is reported at once', (t) => {
  const { problems } = parseConfig({ listen: { port: -1 }, qemu: { accel: 'x', readyTimeoutMs: 'soon' }, nope: 1 }, 'c.yml', '/');
  t.is(problems.length, 4, problems.join('\n'));
});

test('relative paths in a config file resolve against its directory; env and flags override', (t) => {
  const dir = tempDir(t);
  const file = path.join(dir, 'config.yml');
  fs.writeFileSync(file, 'stateDir: state\nmachinesDir: ../m\nlisten: { port: 9000 }\n');
  const fromFile = loadConfig({ configFile: file }, {});
  t.is(fromFile.stateDir, path.join(dir, 'state'));
  t.is(fromFile.machinesDir, path.resolve(dir, '..', 'm'));
  t.is(fromFile.listen.port, 9000);
  const viaEnv = loadConfig({}, { QWD_CONFIG: file, QWD_PORT: '9100', QWD_STATE_DIR: '/tmp/qwd-env-state' });
  t.is(viaEnv.listen.port, 9100);
  t.is(viaEnv.stateDir, '/tmp/qwd-env-state');
  const viaFlags = loadConfig({ configFile: file, port: '9200' }, { QWD_PORT: '9100' });
  t.is(viaFlags.listen.port, 9200);
});

test('unreadable, non-YAML and invalid override values give a ConfigError naming the file', (t) => {
  const dir = tempDir(t);
  t.throws(() => loadConfig({ configFile: path.join(dir, 'missing.yml') }, {}), { instanceOf: ConfigError, message: /missing\.yml: cannot read the config file \(ENOENT\)/ });
  const broken = path.join(dir, 'broken.yml');
  fs.writeFileSync(broken, 'listen: [\n');
  t.throws(() => loadConfig({ configFile: broken }, {}), { instanceOf: ConfigError, message: /broken\.yml: not valid YAML/ });
  t.throws(() => loadConfig({}, { QWD_PORT: 'eighty' }), { instanceOf: ConfigError, message: /QWD_PORT: must be a port number/ });
});

test('the example config parses and documents every key', (t) => {
  const example = path.join(INSTALL_DIR, 'etc', 'qemu-web-desktop', 'config.example.yml');
  const config = loadConfig({ configFile: example }, {});
  const text = fs.readFileSync(example, 'utf8');
  const keys = (obj: object, prefix = ''): string[] => Object.entries(obj).flatMap(([k, v]) => (v && typeof v === 'object' && !Array.isArray(v) ? keys(v, `${prefix}${k}.`) : [`${prefix}${k}`]));
  for (const key of keys(config).filter((k) => k !== 'source')) {
    const leaf = key.split('.').pop()!;
    t.regex(text, new RegExp(`^\\s*#?\\s*${leaf}:`, 'm'), `${key} is documented`);
  }
});

test('trustProxy takes false, a hop count or proxy addresses; true is refused with what to write instead', (t) => {
  const parse = (trustProxy: unknown) => parseConfig({ trustProxy }, '/etc/qwd/cfg.yml', '/etc/qwd');
  t.is(parse(undefined).config!.trustProxy, false, 'the default');
  t.is(parse(false).config!.trustProxy, false);
  t.is(parse(1).config!.trustProxy, 1);
  t.deepEqual(parse('loopback').config!.trustProxy, ['loopback']);
  t.deepEqual(parse('127.0.0.1, ::1').config!.trustProxy, ['127.0.0.1', '::1']);
  t.deepEqual(parse(['10.0.0.0/8', '192.168.1.0/255.255.255.0', 'fd00::/8', 'uniquelocal']).config!.trustProxy, ['10.0.0.0/8', '192.168.1.0/255.255.255.0', 'fd00::/8', 'uniquelocal']);
  const refusedTrue = parse(true);
  t.is(refusedTrue.config, null);
  t.true(refusedTrue.problems.some((p) => /cfg\.yml: trustProxy: true is refused/.test(p) && /trustProxy: 1/.test(p) && /proxy's address/.test(p)), refusedTrue.problems.join('\n'));
  for (const bad of [0, -1, 1.5, 'everyone', ['10.0.0.0/33'], ['10.0.0.1', 7], [], '300.1.1.1']) {
    const { config, problems } = parse(bad);
    t.is(config, null, JSON.stringify(bad));
    t.true(problems.some((p) => /trustProxy must be false, a hop count/.test(p)), problems.join('\n'));
  }
});

test('an ldap:// backend without StartTLS is refused unless allowCleartext says so; ldaps:// and StartTLS are accepted', (t) => {
  const parse = (backend: Record<string, unknown>) => parseConfig({ auth: { backends: [{ type: 'ldap', baseDn: 'dc=example,dc=org', ...backend }] } }, '/etc/qwd/cfg.yml', '/etc/qwd');
  const clear = parse({ url: 'ldap://ldap.example.org' });
  t.is(clear.config, null);
  t.true(clear.problems.some((p) => /cfg\.yml: auth\.backends\[0\]\.url ldap:\/\/ldap\.example\.org without startTls would send passwords in clear/.test(p) && /allowCleartext: true/.test(p)), clear.problems.join('\n'));
  t.truthy(parse({ url: 'ldap://ldap.example.org', startTls: true }).config, 'StartTLS');
  t.truthy(parse({ url: 'ldaps://ldap.example.org' }).config, 'LDAPS');
  const local = parse({ url: 'ldap://127.0.0.1:389', allowCleartext: true }).config;
  t.truthy(local, 'an explicit opt-in for a server on the same host');
  t.like(local!.auth.backends[0], { type: 'ldap', allowCleartext: true, startTls: false });
  t.true(parse({ url: 'ldap://127.0.0.1', allowCleartext: 'yes' }).problems.some((p) => /allowCleartext must be true or false/.test(p)));
});

test('an e-mail backend without mail.smtpHost, and a caFile that cannot be read, are refused when the config is parsed', (t) => {
  const dir = tempDir(t);
  const email = parseConfig({ publicUrl: 'https://desktops.example.org', auth: { backends: [{ type: 'email', allowedDomains: ['example.org'] }] } }, '/etc/qwd/cfg.yml', '/etc/qwd');
  t.is(email.config, null);
  t.true(email.problems.some((p) => /cfg\.yml: mail\.smtpHost is required when auth\.backends has an "email" backend/.test(p)), email.problems.join('\n'));
  const ca = path.join(dir, 'ca.pem');
  fs.writeFileSync(ca, '-----BEGIN CERTIFICATE-----\n');
  const withCa = (caFile: string, type = 'imap') => parseConfig({ auth: { backends: [type === 'imap' ? { type, host: 'imap.example.org', caFile } : { type, url: 'ldaps://ldap.example.org', baseDn: 'dc=x', caFile }] } }, path.join(dir, 'cfg.yml'), dir);
  t.is(withCa('ca.pem').config!.auth.backends[0]!.type, 'imap', 'a readable file, relative to the config file');
  for (const type of ['imap', 'ldap']) {
    const missing = withCa('missing-ca.pem', type);
    t.is(missing.config, null);
    t.true(missing.problems.some((p) => p.includes(`auth.backends[0].caFile: ${path.join(dir, 'missing-ca.pem')} cannot be read (ENOENT)`)), missing.problems.join('\n'));
  }
  t.true(withCa('.').problems.some((p) => /caFile: .* is not a file/.test(p)), 'a directory');
});

test('bridge viewer caps: defaults below QEMU\'s 32 clients; out-of-range values and a reserve that leaves no view-only place are refused', (t) => {
  t.deepEqual(parseConfig({}, null, '/').config!.bridge, { maxViewersPerLink: 8, maxViewersPerSession: 24, reservedControlViewers: 4, stalledViewerS: 30, clipboard: 'both', viewOnlyClipboard: false });
  const table: Array<[Record<string, unknown>, RegExp]> = [
    [{ clipboard: 'paste-only' }, /bridge\.clipboard must be one of both, to-guest, from-guest, off, got "paste-only"/],
    [{ viewOnlyClipboard: 'yes' }, /bridge\.viewOnlyClipboard/],
    [{ maxViewersPerLink: 32 }, /bridge\.maxViewersPerLink/],
    [{ maxViewersPerSession: 0 }, /bridge\.maxViewersPerSession/],
    [{ reservedControlViewers: 'four' }, /bridge\.reservedControlViewers/],
    [{ maxViewersPerSession: 4, reservedControlViewers: 4 }, /reservedControlViewers \(4\) must be less than bridge\.maxViewersPerSession \(4\)/],
    [{ maxViewers: 3 }, /bridge\.maxViewers is not a known key/],
    [{ stalledViewerS: 0 }, /bridge\.stalledViewerS/],
  ];
  for (const [bridge, problem] of table) {
    const { config, problems } = parseConfig({ bridge }, 'c.yml', '/');
    t.is(config, null, JSON.stringify(bridge));
    t.regex(problems.join('\n'), problem);
  }
});
