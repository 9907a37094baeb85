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
