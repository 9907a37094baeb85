// No token reaches the log: a broker logging at trace is taken through
// creates, shares, view links, refused DELETEs, revocations, bad tokens,
// e-mail login links, API tokens and CSRF failures; then the whole log is
// searched for every token the test met.
import test from 'ava';
import crypto from 'node:crypto';
import fs from 'node:fs';
import { makeSetup, rawUpgrade, requireQemu, waitFor } from '../helpers/env.js';
import { WebClient } from '../helpers/web-client.js';
import { startSmtpSink } from '../helpers/smtp.js';
import { SecretCollector, assertNoTokenInLog, startLoggingBroker } from '../helpers/log-secrets.js';
import { hashPassword } from '../../src/auth/password-hash.js';
import { hashToken, newApiToken } from '../../src/auth/service.js';
import { redactSecrets } from '../../src/log.js';

test.before(() => requireQemu());

const PASSWORDS = { alice: 'alice-Secret-4711', bob: 'bob-Secret-0815' };

test('redactSecrets blanks tokens in paths, query strings, API tokens, cookies and bare 43-character words', (t) => {
  const token = crypto.randomBytes(32).toString('base64url');
  const api = `qwd_${crypto.randomBytes(32).toString('base64url')}`;
  const cases: Array<[string, string]> = [
    [`{"path":"/s/${token}/stop"}`, '{"path":"/s/[redacted]/stop"}'],
    [`{"path":"/ws/${token}?t=abc.def"}`, '{"path":"/ws/[redacted]?t=[redacted]"}'],
    [`{"path":"/api/v1/sessions/${token}/extend"}`, '{"path":"/api/v1/sessions/[redacted]/extend"}'],
    [`{"path":"/login/email/${token}"}`, '{"path":"/login/email/[redacted]"}'],
    [`{"path":"/v/short-token-x"}`, '{"path":"/v/[redacted]"}'],
    [`{"url":"/login?next=%2Fs%2F${token}"}`, '{"url":"/login?next=[redacted]"}'],
    [`{"msg":"form POST to /s%2F${token}"}`, '{"msg":"form POST to /s%2F[redacted]"}'],
    [`{"msg":"Bearer ${api}"}`, '{"msg":"Bearer [redacted]"}'],
    [`{"msg":"token ${api} unknown"}`, '{"msg":"token qwd_[redacted] unknown"}'],
    [`{"cookie":"qwd.sid=s%3Aabc.def; qwd.csrf=${token}.${token}"}`, '{"cookie":"qwd.sid=[redacted]; qwd.csrf=[redacted]"}'],
    [`{"msg":"session ${token} ended"}`, '{"msg":"session [redacted] ended"}'],
    ['{"msg":"a sha256 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef stays"}', '{"msg":"a sha256 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef stays"}'],
    ['{"sessionId":"0a1b2c3d4e5f","path":"/healthz"}', '{"sessionId":"0a1b2c3d4e5f","path":"/healthz"}'],
  ];
  for (const [line, expected] of cases) t.is(redactSecrets(line), expected, line.slice(0, 60));
});

test('after creates, shares, view links, refused DELETEs, bad tokens, e-mail links, API tokens and CSRF failures, no token is in the log', async (t) => {
  requireQemu();
  const smtp = await startSmtpSink(t);
  const setup = makeSetup(t, {
    publicUrl: 'https://desktops.example.org',
    auth: { backends: [{ type: 'local' }, { type: 'email', allowedDomains: ['example.org'], linkTtlS: 600 }], rateLimit: { maxFailures: 50, maxFailuresPerName: 100, maxFailuresPerClient: 100, windowS: 60 } },
    mail: { smtpHost: '127.0.0.1', smtpPort: smtp.port, smtpStartTls: false, from: 'desktops@example.org' },
  });
  const { broker, logFile, flushed } = await startLoggingBroker(t, setup.config, setup.dir);
  const { users } = broker.services;
  for (const [name, password] of Object.entries(PASSWORDS)) users.add({ name, hash: await hashPassword(password), email: `${name}@example.org`, admin: false, createdAt: Date.now() });
  const apiToken = newApiToken();
  users.addApiToken(apiToken.id, hashToken(apiToken.token), 'alice', false, Date.now());
  const secrets = new SecretCollector();
  secrets.add(apiToken.token, ...Object.values(PASSWORDS));

  const login = async (user: keyof typeof PASSWORDS) => {
    const b = new WebClient(broker.url);
    secrets.addFrom((await b.get('/login')).text);
    secrets.addCookies(b.cookie);
    t.is((await b.post('/login', { user, password: PASSWORDS[user], next: '/' })).status, 303);
    secrets.addFrom((await b.get('/')).text);
    secrets.addCookies(b.cookie);
    return b;
  };
  const alice = await login('alice');
  const bob = await login('bob');

  // Create (API with the cookie, and the form), share, watch.
  const created = await alice.api('POST', '/api/v1/sessions', { machine: 'blank' }, { withCsrf: true });
  t.is(created.status, 201);
  secrets.addFrom(JSON.stringify(created.json));
  const s = created.json as { token: string; viewUrl: string };
  const viewToken = new URL(s.viewUrl).pathname.split('/')[2]!;
  for (const p of [`/s/${s.token}`, `/s/${viewToken}`, `/s/${s.token}/view`, `/s/${viewToken}/view`]) {
    const page = await alice.get(p);
    t.is(page.status, 200, p);
    secrets.addFrom(page.text);
  }
  t.is((await bob.get(`/s/${s.token}`)).status, 200, 'bob, logged in, opens the shared link');
  // Refused: bob stops or extends alice's desktop; a view link used to stop.
  t.is((await bob.api('DELETE', `/api/v1/sessions/${s.token}`, undefined, { withCsrf: true })).status, 403);
  t.is((await bob.post(`/s/${s.token}/stop`, {})).status, 403);
  t.is((await alice.api('DELETE', `/api/v1/sessions/${viewToken}`, undefined, { withCsrf: true })).status, 403);
  // CSRF failures carrying the token in the path.
  t.is((await alice.post(`/s/${s.token}/extend`, {}, { withCsrf: false })).status, 403);
  t.is((await alice.api('POST', `/api/v1/sessions/${s.token}/extend`, { byS: 60 })).status, 403);
  // Not logged in: the link asks for a login (the token goes into next=), the WebSocket is refused.
  const stranger = new WebClient(broker.url);
  const asked = await stranger.get(`/s/${s.token}`);
  t.is(asked.status, 303);
  secrets.addFrom((await stranger.get(asked.location!)).text);
  t.regex(await rawUpgrade(`${broker.url}/ws/${s.token}`), /^HTTP\/1\.1 401 /);
  // Revocation makes new tokens.
  const revoked = await alice.api('POST', `/api/v1/sessions/${s.token}/revoke`, { link: 'view' }, { withCsrf: true });
  t.is(revoked.status, 200);
  secrets.addFrom(JSON.stringify(revoked.json));
  // Bad tokens everywhere.
  const bad = Array.from({ length: 3 }, () => crypto.randomBytes(32).toString('base64url'));
  secrets.add(...bad);
  for (const b of bad) {
    t.is((await alice.get(`/s/${b}`)).status, 404);
    t.is((await alice.api('DELETE', `/api/v1/sessions/${b}`, undefined, { withCsrf: true })).status, 404);
    t.is((await alice.api('POST', `/api/v1/sessions/${b}/revoke`, { link: 'control' }, { withCsrf: true })).status, 404);
    t.regex(await rawUpgrade(`${broker.url}/ws/${b}`, { cookie: alice.cookie }), /^HTTP\/1\.1 404 /);
    t.is((await alice.get(`/login/email/${b}`)).status, 410);
  }
  const wrongApi = `qwd_${crypto.randomBytes(32).toString('base64url')}`;
  secrets.add(wrongApi);
  t.is((await fetch(`${broker.url}/api/v1/sessions`, { headers: { authorization: `Bearer ${wrongApi}` } })).status, 401);
  const viaToken = await fetch(`${broker.url}/api/v1/sessions`, { headers: { authorization: `Bearer ${apiToken.token}` } });
  t.is(viaToken.status, 200);
  secrets.addFrom(await viaToken.text());
  // An e-mail login link: asked for, opened, used, replayed.
  const mailer = new WebClient(broker.url);
  await mailer.get('/login');
  secrets.addCookies(mailer.cookie);
  t.is((await mailer.post('/login/email', { email: 'ada@example.org' })).status, 200);
  await waitFor('the login mail', () => smtp.mails.length === 1, 10000);
  const link = /\/login\/email\/([A-Za-z0-9_-]{43})/.exec(smtp.mails[0]!.text)![1]!;
  secrets.add(link);
  t.is((await mailer.get(`/login/email/${link}`)).status, 200);
  t.is((await mailer.post(`/login/email/${link}`, {})).status, 303);
  secrets.addCookies(mailer.cookie);
  secrets.addFrom((await mailer.get('/')).text);
  t.is((await mailer.post(`/login/email/${link}`, {})).status, 410, 'a used link');
  // Stopping by its owner.
  t.is((await alice.api('DELETE', `/api/v1/sessions/${s.token}`, undefined, { withCsrf: true })).status, 204);
  secrets.addCookies(alice.cookie);
  secrets.addCookies(bob.cookie);

  await flushed();
  const log = fs.readFileSync(logFile, 'utf8');
  t.regex(log, /"path":"\/api\/v1\/sessions\/\[redacted\]"/, 'the refused DELETE was logged, without its token');
  t.regex(log, /login link mailed/);
  t.true(secrets.secrets.size >= 20, `tokens collected: ${secrets.secrets.size}`);
  assertNoTokenInLog(t, logFile, secrets.secrets);
});
