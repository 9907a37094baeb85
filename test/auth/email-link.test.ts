// Login by e-mail link, through a real SMTP server on loopback: the link
// arrives, works once, and expires; other domains get nothing.
import test from 'ava';
import Database from 'better-sqlite3';
import path from 'node:path';
import http from 'node:http';
import { parseConfig } from '../../src/config/schema.js';
import { makeSetup, requireQemu, waitFor } from '../helpers/env.js';
import { startTestBroker } from '../helpers/broker.js';
import { startSmtpSink } from '../helpers/smtp.js';
import { WebClient } from '../helpers/web-client.js';

test.before(() => requireQemu());

async function setupEmail(t: import('ava').ExecutionContext) {
  const smtp = await startSmtpSink(t);
  const setup = makeSetup(t, {
    publicUrl: PUBLIC_URL,
    auth: { backends: [{ type: 'email', allowedDomains: ['example.org'], linkTtlS: 600 }], rateLimit: { maxFailures: 5, windowS: 60 } },
    mail: { smtpHost: '127.0.0.1', smtpPort: smtp.port, smtpStartTls: false, from: 'desktops@example.org' },
  });
  const broker = await startTestBroker(t, setup.config);
  return { smtp, setup, broker };
}

const PUBLIC_URL = 'https://desktops.example.org';
const linkIn = (text: string) => /(https?:\/\/[^\s]+\/login\/email\/[A-Za-z0-9_-]{43})/.exec(text)?.[1];

test('the link arrives, logs in once, and cannot be used again', async (t) => {
  const { smtp, broker } = await setupEmail(t);
  const b = new WebClient(broker.url);
  const page = await b.get('/login');
  t.regex(page.text, /Send me a login link/);
  t.notRegex(page.text, /type="password"/, 'no password form without a password backend');
  const sent = await b.post('/login/email', { email: 'Ada@Example.org' });
  t.is(sent.status, 200);
  t.regex(sent.text, /a link is on its way/);
  await waitFor('the login mail', () => smtp.mails.length === 1, 5000);
  t.deepEqual(smtp.mails[0]!.to, ['ada@example.org']);
  const link = linkIn(smtp.mails[0]!.text)!;
  t.truthy(link);
  const path_ = new URL(link).pathname;
  // Opening it (what a mail scanner or a link preview also does) only asks: GET twice, still usable.
  const scanner = await new WebClient(broker.url).get(path_);
  t.is(scanner.status, 200);
  t.regex(scanner.text, /Log in as <strong>ada@example\.org<\/strong>\?/);
  const shown = await b.get(path_);
  t.is(shown.status, 200);
  t.notRegex((await b.get('/')).text, /Desktop for <strong>ada@example\.org/, 'not logged in by opening the link');
  await b.get(path_);
  const used = await b.post(path_, {});
  t.is(used.status, 303);
  t.regex((await b.get('/')).text, /Desktop for <strong>ada@example\.org<\/strong>/);
  const again = new WebClient(broker.url);
  t.is((await again.get(path_)).status, 410);
  await again.get('/login');
  const replay = await again.post(path_, {});
  t.is(replay.status, 410);
  t.regex(replay.text, /expired or was already used/);
});

test('an expired link does not log in; other domains and garbage get clear refusals and no mail', async (t) => {
  const { smtp, setup, broker } = await setupEmail(t);
  const b = new WebClient(broker.url);
  await b.get('/login');
  await b.post('/login/email', { email: 'bob@example.org' });
  await waitFor('the login mail', () => smtp.mails.length === 1, 5000);
  const link = linkIn(smtp.mails[0]!.text)!;
  // Let the clock pass the link's end (10 minutes) by moving its expiry into the past.
  const db = new Database(path.join(setup.stateDir, 'qwd.sqlite'));
  db.prepare('UPDATE email_tokens SET expires_at = ?').run(Date.now() - 1000);
  db.close();
  t.is((await b.get(new URL(link).pathname)).status, 410);
  t.is((await b.post(new URL(link).pathname, {})).status, 410, 'nor by posting it');
  const other = await b.post('/login/email', { email: 'eve@evil.example' });
  t.is(other.status, 400);
  t.regex(other.text, /only sent to addresses at example\.org/);
  const garbage = await b.post('/login/email', { email: 'not an address' });
  t.is(garbage.status, 400);
  t.is((await b.get('/login/email/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA')).status, 410);
  t.is(smtp.mails.length, 1);
});

test('requesting links is rate limited per address', async (t) => {
  const { smtp, broker } = await setupEmail(t);
  const b = new WebClient(broker.url);
  await b.get('/login');
  for (let i = 0; i < 5; i++) t.is((await b.post('/login/email', { email: 'flood@example.org' })).status, 200);
  const limited = await b.post('/login/email', { email: 'flood@example.org' });
  t.is(limited.status, 429);
  t.regex(limited.text, /Too many login links requested\. Try again in \d+ s/);
  await waitFor('five mails', () => smtp.mails.length === 5, 5000);
  t.is(smtp.mails.length, 5);
});

test('a config with an e-mail backend but no publicUrl is refused, naming the key', (t) => {
  const raw = { auth: { backends: [{ type: 'email', allowedDomains: ['example.org'] }] } };
  const { config, problems } = parseConfig(raw, '/etc/qwd/cfg.yml', '/etc/qwd');
  t.is(config, null);
  t.true(problems.some((p) => /cfg\.yml: publicUrl is required when auth\.backends has an "email" backend/.test(p) && /Host header/.test(p)), problems.join('\n'));
  t.truthy(parseConfig({ ...raw, publicUrl: PUBLIC_URL, mail: { smtpHost: '127.0.0.1' } }, '/etc/qwd/cfg.yml', '/etc/qwd').config, 'with publicUrl (and mail.smtpHost) it is accepted');
});

/** One raw HTTP request with a Host header of our choosing (fetch would not let us forge it). */
function rawRequest(port: number, opts: { method: string; path: string; host: string; cookie?: string; form?: Record<string, string> }): Promise<{ status: number; text: string; cookie: string | null }> {
  const body = opts.form ? new URLSearchParams(opts.form).toString() : undefined;
  return new Promise((resolve, reject) => {
    const req = http.request({
      host: '127.0.0.1', port, method: opts.method, path: opts.path,
      headers: { host: opts.host, 'x-forwarded-host': opts.host, ...(opts.cookie ? { cookie: opts.cookie } : {}), ...(body ? { 'content-type': 'application/x-www-form-urlencoded', 'content-length': Buffer.byteLength(body) } : {}) },
    }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (text += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text, cookie: res.headers['set-cookie']?.[0]?.split(';')[0] ?? null }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

test('a forged Host header does not change the mailed link: it always points at publicUrl', async (t) => {
  const { smtp, broker } = await setupEmail(t);
  const port = Number(new URL(broker.url).port);
  const page = await rawRequest(port, { method: 'GET', path: '/login', host: 'evil.example' });
  t.is(page.status, 200);
  const csrf = /name="_csrf" value="([^"]+)"/.exec(page.text)?.[1];
  t.truthy(csrf && page.cookie);
  const sent = await rawRequest(port, { method: 'POST', path: '/login/email', host: 'evil.example', cookie: page.cookie!, form: { email: 'victim@example.org', _csrf: csrf! } });
  t.is(sent.status, 200, sent.text.slice(0, 300));
  await waitFor('the login mail', () => smtp.mails.length === 1, 5000);
  const link = linkIn(smtp.mails[0]!.text)!;
  t.truthy(link);
  t.true(link.startsWith(`${PUBLIC_URL}/login/email/`), link);
  t.false(smtp.mails[0]!.text.includes('evil.example'), 'the Host header never reaches the mail');
});
