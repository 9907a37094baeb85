// The `oidc` backend's config keys: defaults, and each bad value refused
// naming the file, the key and what was expected (table-driven, no I/O but the
// secret file's readability).
import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { parseConfig } from '../../src/config/schema.js';
import type { OidcBackendConfig } from '../../src/config/oidc.js';
import { tempDir } from '../helpers/env.js';

const PUBLIC = 'https://desktops.example.org';
const GOOD = { type: 'oidc', issuer: 'https://sso.example.org/realms/lab/', clientId: 'qwd', clientSecret: 's3cret-value' };

function parse(backend: Record<string, unknown>, top: Record<string, unknown> = { publicUrl: PUBLIC }) {
  return parseConfig({ ...top, auth: { backends: [backend] } }, '/etc/qwd/cfg.yml', '/etc/qwd');
}

test('an oidc backend: the defaults a Keycloak or Dex site expects', (t) => {
  const { config, problems } = parse(GOOD);
  t.deepEqual(problems, []);
  const b = config!.auth.backends[0] as OidcBackendConfig;
  t.like(b, {
    type: 'oidc', name: 'oidc', label: 'oidc', issuer: 'https://sso.example.org/realms/lab/', clientId: 'qwd',
    clientSecret: 's3cret-value', clientSecretFile: null, userClaim: 'preferred_username', emailClaim: 'email',
    groupsClaim: 'groups', recheckS: 300, unreachableGraceS: 900, timeoutMs: 5000, allowHttpIssuer: false,
  });
  t.deepEqual(b.scopes, ['openid', 'profile', 'email']);
  t.deepEqual([b.adminGroups, b.allowedGroups], [[], []]);
  t.true(config!.auth.linksRequireLogin, 'links need a login, as with any login backend');
});

test('the issuer is kept exactly as configured, with or without a trailing slash (it must equal the iss claim)', (t) => {
  for (const issuer of ['https://sso.example.org/realms/lab/', 'https://sso.example.org/realms/lab', 'https://dex.example.org/']) {
    const { config, problems } = parse({ ...GOOD, issuer });
    t.deepEqual(problems, []);
    t.is((config!.auth.backends[0] as OidcBackendConfig).issuer, issuer);
  }
});

test('two oidc backends that both default to the name "oidc" are refused, naming both and why', (t) => {
  const { config, problems } = parseConfig({
    publicUrl: PUBLIC,
    auth: { backends: [{ type: 'local' }, GOOD, { ...GOOD, issuer: 'https://other.example.org/' }] },
  }, '/etc/qwd/cfg.yml', '/etc/qwd');
  t.is(config, null);
  t.deepEqual(problems, [
    '/etc/qwd/cfg.yml: auth.backends: auth.backends[1] and auth.backends[2] are both named "oidc" (a backend ' +
      'without name: is named after its type); give them distinct name: keys',
  ]);
  const named = parseConfig({
    publicUrl: PUBLIC, auth: { backends: [{ ...GOOD, name: 'lab' }, { ...GOOD, name: 'lab' }] },
  }, '/etc/qwd/cfg.yml', '/etc/qwd');
  t.true(named.problems.some((p) => /auth\.backends\[0\] and auth\.backends\[1\] are both named "lab"; give/.test(p)),
    named.problems.join('\n'));
  const distinct = parseConfig({
    publicUrl: PUBLIC, auth: { backends: [GOOD, { ...GOOD, name: 'second' }] },
  }, '/etc/qwd/cfg.yml', '/etc/qwd');
  t.deepEqual(distinct.problems, []);
});

test('an oidc backend next to local accounts, with its secret in a file', (t) => {
  const dir = tempDir(t);
  fs.writeFileSync(path.join(dir, 'oidc-secret'), 'from-a-file\n', { mode: 0o600 });
  const { config, problems } = parseConfig({
    publicUrl: PUBLIC,
    auth: { backends: [{ type: 'local' }, { ...GOOD, clientSecret: undefined, clientSecretFile: 'oidc-secret', name: 'keycloak', label: 'Campus login', adminGroups: ['qwd-admins'], allowedGroups: ['staff', 'users'], recheckS: 0 }] },
  }, path.join(dir, 'cfg.yml'), dir);
  t.deepEqual(problems, []);
  const b = config!.auth.backends[1] as OidcBackendConfig;
  t.is(b.clientSecretFile, path.join(dir, 'oidc-secret'));
  t.is(b.label, 'Campus login');
  t.is(b.recheckS, 0);
});

const bad: Array<[string, Record<string, unknown>, RegExp, Record<string, unknown>?]> = [
  ['no publicUrl', GOOD, /cfg\.yml: publicUrl is required when auth\.backends has an "oidc" backend: the redirect URI registered at the provider is <publicUrl>\/auth\/oidc\/oidc\/callback/, {}],
  ['no issuer', { ...GOOD, issuer: undefined }, /auth\.backends\[0\]\.issuer is required/],
  ['issuer not a URL', { ...GOOD, issuer: 'sso.example.org' }, /auth\.backends\[0\]\.issuer must be the provider's issuer URL \(https:\/\/…, no query\), got "sso\.example\.org"/],
  ['plain http issuer', { ...GOOD, issuer: 'http://sso.example.org' }, /issuer http:\/\/sso\.example\.org is plain http: use https:\/\/, or .*allowHttpIssuer: true/],
  ['no clientId', { ...GOOD, clientId: undefined }, /auth\.backends\[0\]\.clientId is required/],
  ['both secret and secret file', { ...GOOD, clientSecretFile: '/etc/qwd/secret' }, /set clientSecret or clientSecretFile, not both/],
  ['no secret at all', { ...GOOD, clientSecret: undefined }, /auth\.backends\[0\]\.clientSecret or clientSecretFile is required/],
  ['unreadable secret file', { ...GOOD, clientSecret: undefined, clientSecretFile: '/nonexistent/secret' }, /clientSecretFile: \/nonexistent\/secret cannot be read \(ENOENT\)/],
  ['scopes without openid', { ...GOOD, scopes: ['profile', 'email'] }, /auth\.backends\[0\]\.scopes must be a list of scopes that includes openid/],
  ['scopes not a list', { ...GOOD, scopes: 'openid profile' }, /auth\.backends\[0\]\.scopes must be a list of names/],
  ['a name unfit for a URL', { ...GOOD, name: 'Key Cloak/1' }, /auth\.backends\[0\]\.name must be a short lower-case name/],
  ['recheckS negative', { ...GOOD, recheckS: -1 }, /auth\.backends\[0\]\.recheckS must be an integer from 0 to 86400, got -1/],
  ['unreachableGraceS not a number', { ...GOOD, unreachableGraceS: '15m' }, /unreachableGraceS must be an integer from 0 to 604800, got "15m"/],
  ['timeoutMs too small', { ...GOOD, timeoutMs: 10 }, /timeoutMs must be an integer from 100 to 60000, got 10/],
  ['groups not a list', { ...GOOD, allowedGroups: 'staff' }, /auth\.backends\[0\]\.allowedGroups must be a list of names, got "staff"/],
  ['a claim name with spaces', { ...GOOD, groupsClaim: 'my groups' }, /auth\.backends\[0\]\.groupsClaim must be a claim name, got "my groups"/],
  ['a typo', { ...GOOD, adminGroup: ['x'] }, /auth\.backends\[0\]\.adminGroup is not a known key/],
  ['oidc with none', GOOD, /"none" cannot be combined with other backends/, { publicUrl: PUBLIC, extraNone: true }],
];
for (const [title, backend, message, top] of bad) {
  test(`oidc config refused: ${title}`, (t) => {
    const { extraNone, ...rest } = top ?? { publicUrl: PUBLIC };
    const raw = { ...rest, auth: { backends: extraNone ? [{ type: 'none' }, backend] : [backend] } };
    const { config, problems } = parseConfig(raw, '/etc/qwd/cfg.yml', '/etc/qwd');
    t.is(config, null);
    t.true(problems.some((p) => message.test(p)), problems.join('\n'));
    t.false(problems.join('\n').includes('s3cret-value'), 'the secret is never echoed');
  });
}
