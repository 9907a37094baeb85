// Single sign-on (the `oidc` backend) against a real OpenID provider on
// 127.0.0.1 (oidc-provider, configured as a site configures Keycloak), the
// browser side driven by plain HTTP: login with PKCE, state and nonce; groups,
// admin rights and desktops in the user's name; API tokens; wrong state,
// replayed code, expired ID token, refused users; the provider down (at login
// and at a re-check), malformed answers, 10,000 groups; losing access at the
// next request; logout that goes on to the provider. No token in the log.
import test, { type ExecutionContext } from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { startBroker, type Broker } from '../../src/main.js';
import { createLogger } from '../../src/log.js';
import { makeSetup, requireProgram } from '../helpers/env.js';
import { startTestBroker, stopAllVms } from '../helpers/broker.js';
import { WebClient } from '../helpers/web-client.js';
import { qwdctl } from '../helpers/cli.js';
import { closedPort } from '../helpers/peer-process.js';
import { ProviderBrowser, startOidcProvider, type TestProvider } from '../helpers/oidc-provider.js';
import { SecretCollector, assertNoTokenInLog } from '../helpers/log-secrets.js';

const PUBLIC_URL = 'http://desktops.test';

test.before(() => requireProgram('qemu-img', 'qemu-utils'));

interface SsoOptions {
  backend?: Record<string, unknown>;
  idTokenTtlS?: number;
  /** Log every level to <dir>/broker.log (to search it for tokens). */
  logToFile?: boolean;
  /** The issuer the broker is given (default: the test provider's). */
  issuer?: string;
  /** More top-level config keys. */
  extra?: Record<string, unknown>;
}

async function ssoSetup(t: ExecutionContext, opts: SsoOptions = {}) {
  const provider = await startOidcProvider(t, { publicUrl: PUBLIC_URL, idTokenTtlS: opts.idTokenTtlS });
  provider.accounts.set('alice', { email: 'alice@example.org', groups: ['staff', 'qwd-admins'] });
  provider.accounts.set('bob', { email: 'bob@example.org', groups: ['staff', 'physics'] });
  provider.accounts.set('eve', { email: 'eve@example.org', groups: ['visitors'] });
  let offsetMs = 0;
  const setup = makeSetup(t, {
    ...opts.extra,
    publicUrl: PUBLIC_URL,
    auth: {
      backends: [{ type: 'local' }, {
        type: 'oidc', name: 'sso', label: 'Lab SSO', issuer: opts.issuer ?? provider.issuer,
        clientId: provider.clientId, clientSecret: provider.clientSecret, allowHttpIssuer: true,
        scopes: ['openid', 'profile', 'email', 'groups'], adminGroups: ['qwd-admins'], allowedGroups: ['staff'],
        recheckS: 0, timeoutMs: 2000, ...opts.backend,
      }],
    },
  });
  const now = () => Date.now() + offsetMs;
  let broker: Broker;
  let logFile = '';
  if (opts.logToFile) {
    logFile = path.join(setup.dir, 'broker.log');
    const stream = fs.createWriteStream(logFile);
    broker = await startBroker(setup.config, createLogger('trace', stream), { launcher: 'fake', now });
    t.teardown(async () => {
      await stopAllVms(broker);
      await broker.close();
      await new Promise<void>((resolve) => stream.end(resolve));
    });
  } else {
    broker = await startTestBroker(t, setup.config, { launcher: 'fake', now });
  }
  const clock = { advance: (ms: number) => { offsetMs += ms; } };
  return { provider, setup, broker, clock, logFile };
}

/** The broker's callback URL (publicUrl is not where the test reaches the broker): its path and query. */
function local(callback: URL): string {
  return callback.pathname + callback.search;
}

/** Presses "Log in with Lab SSO" and signs in at the provider; returns where the provider sends the browser back. */
async function startSso(broker: Broker, provider: TestProvider, user: string, browser = new WebClient(broker.url)) {
  const page = await browser.get('/login');
  if (!/Log in with Lab SSO/.test(page.text)) throw new Error(`no SSO button on the login page: ${page.text}`);
  const start = await browser.post('/auth/oidc/sso/login', { next: '/manage' });
  if (start.status !== 303 || !start.location?.startsWith(provider.issuer)) {
    throw new Error(`the login start answered ${start.status} ${start.location ?? start.text.slice(0, 300)}`);
  }
  const callback = await new ProviderBrowser(provider.issuer).authorize(start.location, user);
  return { browser, callback, authorizeUrl: new URL(start.location) };
}

async function ssoLogin(broker: Broker, provider: TestProvider, user: string) {
  const { browser, callback, authorizeUrl } = await startSso(broker, provider, user);
  const done = await browser.get(local(callback));
  if (done.status !== 303) throw new Error(`the callback answered ${done.status}: ${done.text.slice(0, 500)}`);
  await browser.get('/');
  return { browser, callback, done, authorizeUrl };
}

function webSessionRows(broker: Broker): Array<{ data: string }> {
  return broker.services.db.prepare('SELECT data FROM web_sessions').all() as Array<{ data: string }>;
}

function noStack(t: ExecutionContext, text: string): void {
  t.notRegex(text, /\n\s+at .+\(|Error: |node_modules/, 'no stack trace or error class on the page');
}

test('a login through the provider: PKCE and state, the user name, e-mail, groups and admin rights; desktops and API tokens in that name', async (t) => {
  const { provider, broker, setup, logFile } = await ssoSetup(t, {
    logToFile: true,
    extra: { guest: { bootScripts: { scripts: [
      { exec: 'echo staff @USER@', when: { groups: ['staff'] } },
      { exec: 'echo physics @USER@', when: { groups: ['physics'] } },
    ] } } },
  });
  // What the launcher is asked to start (passed on to the real fake launcher): the boot scripts chosen by groups.
  const launcher = broker.services.launcher;
  const startVm = launcher.start.bind(launcher);
  const scriptsStarted: string[][] = [];
  launcher.start = (spec) => {
    scriptsStarted.push((spec.bootScripts?.scripts ?? []).map((s) => s.text.trim()));
    return startVm(spec);
  };
  const secrets = new SecretCollector();
  const anonymous = new WebClient(broker.url);
  const page = await anonymous.get('/login');
  t.regex(page.text, /name="password"/, 'the password form is still there');
  t.regex(page.text, /<form method="post" action="\/auth\/oidc\/sso\/login"[^>]*>[\s\S]*Log in with Lab SSO/);
  // The login and logout forms are answered with a redirect to the provider: the CSP's form-action allows it.
  const csp = (await fetch(`${broker.url}/login`)).headers.get('content-security-policy') ?? '';
  t.regex(csp, new RegExp(`form-action 'self' ${provider.issuer}(;|$)`));

  const loginStarted = performance.now();
  const { browser, callback, done, authorizeUrl } = await ssoLogin(broker, provider, 'alice');
  t.log(`SSO login (button → provider sign-in and consent → callback → first page): ${Math.round(performance.now() - loginStarted)} ms`);
  t.is(authorizeUrl.searchParams.get('code_challenge_method'), 'S256');
  t.is(authorizeUrl.searchParams.get('redirect_uri'), `${PUBLIC_URL}/auth/oidc/sso/callback`);
  t.is(authorizeUrl.searchParams.get('scope'), 'openid profile email groups');
  t.truthy(authorizeUrl.searchParams.get('nonce'));
  t.is(done.location, '/manage', 'back where the login started');
  const pageStarted = performance.now();
  const home = await browser.get('/');
  t.log(`a page with a re-check (recheckS 0: refresh grant + userinfo): ${Math.round(performance.now() - pageStarted)} ms`);
  t.is(home.status, 200);
  t.regex(home.text, /Desktop for <strong>alice<\/strong>/);
  t.regex(home.text, /alice \(admin\)/, 'admin through adminGroups');

  const created = await browser.api('POST', '/api/v1/sessions', { machine: 'blank', lifetimeS: 600 }, { withCsrf: true });
  t.is(created.status, 201, JSON.stringify(created.json));
  const row = broker.services.manager.list()[0]!;
  t.is(row.owner, 'alice');
  t.is(row.email, 'alice@example.org');
  t.deepEqual(scriptsStarted, [['echo staff alice']], 'the provider\'s groups chose the boot scripts');

  const [stored] = webSessionRows(broker);
  const data = JSON.parse(stored!.data);
  t.deepEqual(data.identity, {
    user: 'alice', email: 'alice@example.org', groups: ['staff', 'qwd-admins'], admin: true, via: 'sso',
  });

  // Bob: allowed, not an admin; his groups are his own.
  const bob = await ssoLogin(broker, provider, 'bob');
  const bobHome = await bob.browser.get('/');
  t.regex(bobHome.text, /Desktop for <strong>bob<\/strong>/);
  t.notRegex(bobHome.text, /bob \(admin\)/);

  // A script's API token for an SSO user keeps working (qwdctl talks to the running broker).
  const issued = JSON.parse((await qwdctl(['--config', setup.configFile, 'tokens', 'issue', 'alice', '--json'])).stdout);
  const listed = await fetch(`${broker.url}/api/v1/sessions`, { headers: { authorization: `Bearer ${issued.token}` } });
  t.is(listed.status, 200);
  t.deepEqual(((await listed.json()) as Array<{ owner: string }>).map((s) => s.owner), ['alice']);

  secrets.add(provider.clientSecret, callback.searchParams.get('code'), callback.searchParams.get('state'),
    authorizeUrl.searchParams.get('nonce'), issued.token, data.oidc.tokens.refreshToken, data.oidc.tokens.accessToken,
    data.oidc.tokens.idToken);
  secrets.addCookies(browser.cookie);
  t.truthy(data.oidc.tokens.refreshToken, 'a refresh token is kept for re-checks');
  assertNoTokenInLog(t, logFile, secrets.secrets, 500);
  t.regex(fs.readFileSync(logFile, 'utf8'), /"outcome":"accepted"/, 'the login is logged');
});

test('a callback with a wrong state, or without a login started in this browser, is refused with a clear page', async (t) => {
  const { provider, broker } = await ssoSetup(t);
  const { browser, callback } = await startSso(broker, provider, 'alice');
  const forged = new URL(callback);
  forged.searchParams.set('state', 'x'.repeat(43));
  const wrong = await browser.get(local(forged));
  t.is(wrong.status, 400);
  t.regex(wrong.text, /did not start in this browser/);
  noStack(t, wrong.text);
  // The login start was spent by the wrong callback: the right one no longer works either.
  const late = await browser.get(local(callback));
  t.is(late.status, 400);
  t.regex(late.text, /already used or has expired/);
  t.is((await browser.get('/')).status, 303, 'not logged in');

  const stranger = new WebClient(broker.url);
  const other = await stranger.get(local(callback));
  t.is(other.status, 400, 'a callback in a browser that started no login');
  t.is((await stranger.get('/')).status, 303);
});

test('a replayed code is refused cleanly: in the same browser, and at the provider when put in another login', async (t) => {
  const { provider, broker } = await ssoSetup(t);
  const first = await ssoLogin(broker, provider, 'alice');
  const again = await first.browser.get(local(first.callback));
  t.is(again.status, 400);
  t.regex(again.text, /already used or has expired/);
  noStack(t, again.text);
  t.is((await first.browser.get('/')).status, 200, 'the login that used the code stands');

  // Another browser starts its own login, and the old code is slipped into its callback (its own state):
  // state and PKCE hold, and the provider refuses the used code (invalid_grant).
  const { browser, callback } = await startSso(broker, provider, 'bob');
  const swapped = new URL(callback);
  swapped.searchParams.set('code', first.callback.searchParams.get('code')!);
  const replay = await browser.get(local(swapped));
  t.is(replay.status, 400);
  t.regex(replay.text, /already used or has expired/);
  t.is((await browser.get('/')).status, 303, 'not logged in');
});

test('a user who cancels at the provider gets a clear page, not an error', async (t) => {
  const { provider, broker } = await ssoSetup(t);
  const browser = new WebClient(broker.url);
  await browser.get('/login');
  const start = await browser.post('/auth/oidc/sso/login', { next: '/' });
  const back = await new ProviderBrowser(provider.issuer).cancel(start.location!);
  t.is(back.searchParams.get('error'), 'access_denied');
  const res = await browser.get(local(back));
  t.is(res.status, 403);
  t.regex(res.text, /Lab SSO did not log you in/);
  noStack(t, res.text);
  t.is((await browser.get('/')).status, 303);
});

test('an expired ID token is refused (the broker\'s clock is past its exp)', async (t) => {
  const { provider, broker, clock } = await ssoSetup(t, { idTokenTtlS: 60 });
  const { browser, callback } = await startSso(broker, provider, 'alice');
  clock.advance(5 * 60 * 1000); // past exp (60 s) and openid-client's 30 s tolerance, within the 10 min login start
  const res = await browser.get(local(callback));
  t.is(res.status, 502);
  t.regex(res.text, /answer from Lab SSO could not be accepted/);
  noStack(t, res.text);
  t.is((await browser.get('/')).status, 303, 'not logged in');
});

test('users outside allowedGroups, or without a usable user name, are refused with a clear page', async (t) => {
  const { provider, broker } = await ssoSetup(t);
  const { browser, callback } = await startSso(broker, provider, 'eve');
  const eve = await browser.get(local(callback));
  t.is(eve.status, 403);
  t.regex(eve.text, /Your account eve is not in a group allowed to use this service/);
  t.is((await browser.get('/')).status, 303);

  provider.accounts.set('mallory', { preferred_username: '../../etc', groups: ['staff'] });
  const m = await startSso(broker, provider, 'mallory');
  const res = await m.browser.get(local(m.callback));
  t.is(res.status, 403);
  t.regex(res.text, /no user name this service can use \(claim &quot;preferred_username&quot;\)/);
  t.is(broker.services.manager.list().length, 0);
});

test('provider down at login: a clear message, the password login and /healthz still work', async (t) => {
  const port = await closedPort();
  const { broker, setup } = await ssoSetup(t, { issuer: `http://127.0.0.1:${port}` });
  const add = await qwdctl(['--config', setup.configFile, 'users', 'add', 'carol'], { input: 'carol-Secret-1234\n' });
  t.is(add.code, 0, add.stderr);
  const browser = new WebClient(broker.url);
  await browser.get('/login');
  const started = Date.now();
  const res = await browser.post('/auth/oidc/sso/login', { next: '/' });
  t.is(res.status, 503);
  t.regex(res.text, /Single sign-on with Lab SSO is unavailable right now\. Please try again later, or log in with your user name and password\./);
  t.regex(res.text, /name="password"/, 'the password form is offered');
  noStack(t, res.text);
  t.true(Date.now() - started < 5000, 'answered within the timeout (timeoutMs 2000), with room for a loaded machine');
  t.is((await fetch(`${broker.url}/healthz`)).status, 200);
  const login = await browser.post('/login', { user: 'carol', password: 'carol-Secret-1234', next: '/' });
  t.is(login.status, 303);
  t.regex((await browser.get('/')).text, /Desktop for <strong>carol<\/strong>/);
});

test('a user removed from allowedGroups, or deleted at the provider, loses access at the next request', async (t) => {
  const { provider, broker } = await ssoSetup(t);
  const bob = await ssoLogin(broker, provider, 'bob');
  t.is((await bob.browser.get('/')).status, 200);
  provider.accounts.set('bob', { email: 'bob@example.org', groups: ['physics'] });
  const page = await bob.browser.get('/');
  t.is(page.status, 303, 'sent to log in');
  t.is(page.location, '/login?next=%2F');
  t.is((await bob.browser.api('GET', '/api/v1/sessions')).status, 401, 'the API too');

  const alice = await ssoLogin(broker, provider, 'alice');
  t.is((await alice.browser.api('GET', '/api/v1/sessions')).status, 200);
  // Still allowed: a changed group list reaches the login (admin rights gone with qwd-admins).
  provider.accounts.set('alice', { email: 'alice@example.org', groups: ['staff'] });
  const home = await alice.browser.get('/');
  t.is(home.status, 200);
  t.notRegex(home.text, /alice \(admin\)/);
  provider.accounts.delete('alice');
  t.is((await alice.browser.api('GET', '/api/v1/sessions')).status, 401, 'refresh refused (invalid_grant): logged out');
  t.is((await alice.browser.get('/')).status, 303);
});

test('provider unreachable at a re-check: the login is kept for unreachableGraceS, then ends', async (t) => {
  const { provider, broker, clock } = await ssoSetup(t, { backend: { recheckS: 60, unreachableGraceS: 600 } });
  const alice = await ssoLogin(broker, provider, 'alice');
  const tokenHits = () => provider.hits.get('/token') ?? 0;
  const before = tokenHits();
  t.is((await alice.browser.get('/')).status, 200);
  t.is(tokenHits(), before, 'no re-check within recheckS');
  await provider.stop();
  clock.advance(120_000);
  t.is((await alice.browser.get('/')).status, 200, 'kept: the provider is only unreachable');
  clock.advance(5_000);
  t.is((await alice.browser.get('/')).status, 200, 'kept, without asking again for min(recheckS, 30) s');
  await provider.start();
  clock.advance(60_000);
  t.is((await alice.browser.get('/')).status, 200);
  t.is(tokenHits(), before + 1, 'asked again once it could, and the login is good');
  await provider.stop();
  clock.advance(60_000 + 600_000 + 1000);
  t.is((await alice.browser.get('/')).status, 303, 'grace over: logged out');
});

test('logout ends the broker\'s login and goes on to the provider\'s end_session_endpoint (RP-initiated logout)', async (t) => {
  const { provider, broker } = await ssoSetup(t);
  const alice = await ssoLogin(broker, provider, 'alice');
  const at = new ProviderBrowser(provider.issuer);
  const out = await alice.browser.post('/logout', {});
  t.is(out.status, 303);
  const to = new URL(out.location!);
  t.is(`${to.origin}${to.pathname}`, `${provider.issuer}/session/end`);
  t.is(to.searchParams.get('post_logout_redirect_uri'), `${PUBLIC_URL}/login`);
  t.truthy(to.searchParams.get('id_token_hint'));
  t.is((await alice.browser.get('/')).status, 303, 'logged out of the broker');
  t.is(webSessionRows(broker).filter((r) => JSON.parse(r.data).identity).length, 0, 'no login row left');
  // The provider accepts the hint: it asks to confirm the logout, not to report an error.
  const confirm = await at.get(to.href);
  t.is(confirm.status, 200);
  t.regex(confirm.text, /logout/i);
  t.notRegex(confirm.text, /invalid_request|error/i);
});

test('malformed JSON from the provider\'s discovery or token endpoint: a clear page, no 5xx stack; discovery is retried', async (t) => {
  const { provider, broker } = await ssoSetup(t);
  provider.faults.set('/.well-known/openid-configuration', 'garbage-json');
  const browser = new WebClient(broker.url);
  await browser.get('/login');
  const start = await browser.post('/auth/oidc/sso/login', { next: '/' });
  t.is(start.status, 503);
  t.regex(start.text, /Single sign-on with Lab SSO is unavailable right now/);
  noStack(t, start.text);
  provider.faults.delete('/.well-known/openid-configuration');

  const { browser: b2, callback } = await startSso(broker, provider, 'alice');
  provider.faults.set('/token', 'garbage-json');
  const res = await b2.get(local(callback));
  t.is(res.status, 502);
  t.regex(res.text, /The answer from Lab SSO could not be accepted/);
  noStack(t, res.text);
  provider.faults.set('/token', 'http-500');
  const c = await startSso(broker, provider, 'alice');
  const down = await c.browser.get(local(c.callback));
  t.is(down.status, 503);
  t.regex(down.text, /Lab SSO cannot be reached right now/);
  provider.faults.delete('/token');
  await ssoLogin(broker, provider, 'alice');
  t.pass('a good answer logs in again');
});

test('a groups claim with 10,000 groups: allowed and admin decided on all of them, 200 kept, the session row stays small', async (t) => {
  const { provider, broker } = await ssoSetup(t, { backend: { adminGroups: ['qwd-admins'] } });
  const many = Array.from({ length: 10_000 }, (_, i) => `lab-group-${i}`);
  many.push('staff', 'qwd-admins');
  provider.accounts.set('bob', { email: 'bob@example.org', groups: many });
  const bob = await ssoLogin(broker, provider, 'bob');
  const home = await bob.browser.get('/');
  t.is(home.status, 200);
  t.regex(home.text, /bob \(admin\)/);
  const row = webSessionRows(broker).map((r) => JSON.parse(r.data)).find((d) => d.identity?.user === 'bob');
  t.is(row.identity.groups.length, 200);
  t.deepEqual(row.identity.groups.slice(0, 2), ['staff', 'qwd-admins'], 'the groups the config names come first');
  t.true(JSON.stringify(row).length < 32_000, `row of ${JSON.stringify(row).length} bytes`);
  // Re-checks (recheckS 0) handle it as well.
  t.is((await bob.browser.get('/manage')).status, 200);
});

test('a config file with an oidc backend passes qwdctl config check; without publicUrl it is refused naming the key', async (t) => {
  const setup = makeSetup(t, {
    publicUrl: PUBLIC_URL,
    auth: { backends: [{ type: 'oidc', issuer: 'https://sso.example.org/realms/lab', clientId: 'qwd', clientSecret: 's3cret-s3cret' }] },
  });
  const ok = await qwdctl(['--config', setup.configFile, 'config', 'check']);
  t.is(ok.code, 0, ok.stderr);
  const shown = await qwdctl(['--config', setup.configFile, 'config', 'show']);
  t.is(shown.code, 0, shown.stderr);
  t.regex(shown.stdout, /sso\.example\.org\/realms\/lab/);
  t.notRegex(shown.stdout, /s3cret-s3cret/, 'config show masks the client secret');
  const raw = fs.readFileSync(setup.configFile, 'utf8').replace(/^publicUrl:.*\n/m, '');
  fs.writeFileSync(setup.configFile, raw);
  const bad = await qwdctl(['--config', setup.configFile, 'config', 'check']);
  t.not(bad.code, 0);
  t.regex(bad.stderr + bad.stdout, /publicUrl is required when auth\.backends has an "oidc" backend/);
  t.notRegex(bad.stderr + bad.stdout, /s3cret-s3cret/, 'the secret is not echoed');
});

test('an oidc-only login page shows just the button', async (t) => {
  const provider = await startOidcProvider(t, { publicUrl: PUBLIC_URL });
  const setup = makeSetup(t, {
    publicUrl: PUBLIC_URL,
    auth: { backends: [{ type: 'oidc', name: 'sso', label: 'Lab SSO', issuer: provider.issuer, clientId: provider.clientId, clientSecret: provider.clientSecret, allowHttpIssuer: true }] },
  });
  const broker = await startTestBroker(t, setup.config, { launcher: 'fake' });
  const page = await new WebClient(broker.url).get('/login');
  t.notRegex(page.text, /name="password"/);
  t.regex(page.text, /<button type="submit" class="primary" autofocus>Log in with Lab SSO<\/button>/);
  const db = new Database(path.join(setup.stateDir, 'qwd.sqlite'), { readonly: true });
  t.teardown(() => db.close());
  t.is((db.prepare('SELECT count(*) AS n FROM web_sessions').get() as { n: number }).n, 0, 'showing the page stores nothing');
});
