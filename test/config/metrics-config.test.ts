// The metrics: section (src/config/metrics.ts): off by default, listen parsed as
// host:port, the bearer token inline or from a file, and every bad value a clear
// error that names the key and never quotes a token back.
import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { parseConfig } from '../../src/config/schema.js';
import { readBearerToken } from '../../src/config/metrics.js';
import { tempDir } from '../helpers/env.js';

const parse = (metrics: unknown, dir = '/tmp') => parseConfig({ metrics }, '/etc/qwd/config.yml', dir);
const TOKEN = 'f3a9c2d4e5b6a7980123456789abcdef';

test('metrics are off by default, on the broker\'s own listener and without a token', (t) => {
  const { config, problems } = parseConfig({}, null, '/tmp');
  t.deepEqual(problems, []);
  t.deepEqual(config!.metrics, { enabled: false, listen: null, bearerToken: null, bearerTokenFile: null });
});

test('metrics.listen takes an IPv4 or IPv6 address or a host name with a port', (t) => {
  t.deepEqual(parse({ enabled: true, listen: '127.0.0.1:9464' }).config!.metrics.listen, { host: '127.0.0.1', port: 9464 });
  t.deepEqual(parse({ enabled: true, listen: '[::1]:9464' }).config!.metrics.listen, { host: '::1', port: 9464 });
  t.deepEqual(parse({ enabled: true, listen: 'localhost:0' }).config!.metrics.listen, { host: 'localhost', port: 0 });
});

test('bad metrics values are refused, each naming its key and what was expected', (t) => {
  const cases: Array<[unknown, RegExp]> = [
    [{ enabled: 'yes' }, /config\.yml: metrics\.enabled must be true or false, got "yes"/],
    [{ listen: '9464' }, /metrics\.listen must be an address and port like 127\.0\.0\.1:9464 .*got "9464"/],
    [{ listen: '127.0.0.1:70000' }, /metrics\.listen must be .*got "127\.0\.0\.1:70000"/],
    [{ listen: '::1:9464' }, /metrics\.listen must be .*\[::1\]:9464/],
    [{ listen: 9464 }, /metrics\.listen must be .*got 9464/],
    [{ bearerToken: 12345 }, /metrics\.bearerToken must be a string .*got a number/],
    [{ port: 9464 }, /metrics\.port is not a known key \(known: enabled, listen, bearerToken, bearerTokenFile\)/],
    ['on', /metrics must be a mapping, got "on"/],
  ];
  for (const [metrics, expected] of cases) {
    const { config, problems } = parse(metrics);
    t.is(config, null, JSON.stringify(metrics));
    t.regex(problems.join('\n'), expected);
  }
});

test('a token that is too short or holds spaces is refused without being quoted back', (t) => {
  for (const token of ['short-secret', 'has a space in the middle of it']) {
    const { config, problems } = parse({ enabled: true, bearerToken: token });
    t.is(config, null);
    t.regex(problems.join('\n'), /metrics\.bearerToken must be at least 16 printable ASCII characters without spaces/);
    t.false(problems.join('\n').includes(token), 'the token is not in the message');
  }
});

test('a token file must exist and not be readable by everyone; both a token and a file is refused', (t) => {
  const dir = tempDir(t);
  const missing = parse({ enabled: true, bearerTokenFile: 'nope.token' }, dir);
  t.regex(missing.problems.join('\n'), new RegExp(`metrics\\.bearerTokenFile: ${dir}/nope\\.token cannot be read \\(ENOENT\\)`));
  const open = path.join(dir, 'open.token');
  fs.writeFileSync(open, `${TOKEN}\n`, { mode: 0o644 });
  fs.chmodSync(open, 0o644);
  t.regex(parse({ enabled: true, bearerTokenFile: open }).problems.join('\n'), /can be read by every user: chmod o-r/);
  const file = path.join(dir, 'metrics.token');
  fs.writeFileSync(file, `${TOKEN}\n`, { mode: 0o600 });
  t.regex(
    parse({ enabled: true, bearerToken: TOKEN, bearerTokenFile: file }, dir).problems.join('\n'),
    /metrics\.bearerToken and metrics\.bearerTokenFile cannot both be set/,
  );
  const { config } = parse({ enabled: true, bearerTokenFile: 'metrics.token' }, dir);
  t.is(config!.metrics.bearerTokenFile, file, 'resolved against the config\'s directory');
  t.is(readBearerToken(config!.metrics), TOKEN, 'the first line, trimmed');
});

test('a token file whose first line is no token is refused at start, without quoting it', (t) => {
  const dir = tempDir(t);
  const file = path.join(dir, 'metrics.token');
  fs.writeFileSync(file, 'not a token\n', { mode: 0o600 });
  const { config } = parse({ enabled: true, bearerTokenFile: file }, dir);
  const err = t.throws(() => readBearerToken(config!.metrics));
  t.regex(err!.message, /metrics\.bearerTokenFile: the first line of .*metrics\.token must be at least 16 printable/);
  t.false(err!.message.includes('not a token'));
  fs.rmSync(file);
  t.regex(t.throws(() => readBearerToken(config!.metrics))!.message, /cannot be read \(ENOENT\)/);
});
