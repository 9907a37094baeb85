// Single sign-on (the `oidc` backend) against a real OpenID provider on
// 127.0.0.1 (oidc-provider, configured as a site configures Keycloak), the
// browser side driven by plain HTTP: login with PKCE, state and nonce; groups,
// admin rights and desktops in the user's name; API tokens; wrong state,
// replayed code, expired ID token, refused users; the provider down (at login
// and at a re-check), malformed answers, 10,000 groups; losing access at the
// next request; logout that goes on to the provider. No token in the log.
// Also: a new session id at login, a nonce or signature that does not hold, a
// provider that never answers, an issuer with a trailing slash, several login
// tabs, the login start's rate limit, unsafe `next` values.
import test, { type ExecutionContext } from 'ava';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import Database from 'better-sqlite3';
import { startBroker, type Broker } from '../../src/main.js';
import { SqliteWebSessionStore } from '../../src/http/web-session-store.js';
import { createLogger } from '../../src/log.js';
import { makeSetup, requireProgram } from '../helpers/env.js';
import { startTestBroker, stopAllVms } from '../helpers/broker.js';
import { WebClient } from '../helpers/web-client.js';
import { qwdctl } from '../helpers/cli.js';
import { closedPort } from '../helpers/peer-process.js';
import {
  ProviderBrowser, startOidcProvider, type ProviderOptions, type TestProvider,
} from '../helpers/oidc-provider.js';
import { SecretCollector, assertNoTokenInLog } from '../helpers/log-secrets.js';
import { parseSamples, sampleValue } from '../helpers/prometheus.js';

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
  /** More keys of the auth section (rateLimit). */
  auth?: Record<string, unknown>;
  /** How the test provider is set up (issuer with a trailing slash, no refresh tokens). */
  provider?: Partial<ProviderOptions>;
}

/**
 * Each request to the provider may take this long: generous, so that a loaded machine (load 16 seen) does not
 * turn a slow answer into a failed login; the test about the timeout sets its own.
 */
const PROVIDER_TIMEOUT_MS = 15_000;

async function ssoSetup(t: ExecutionContext, opts: SsoOptions = {}) {
  const provider = await startOidcProvider(t, { publicUrl: PUBLIC_URL, idTokenTtlS: opts.idTokenTtlS, ...opts.provider });
  provider.accounts.set('alice', { email: 'alice@example.org', groups: ['staff', 'qwd-admins'] });
  provider.accounts.set('bob', { email: 'bob@example.org', groups: ['staff', 'physics'] });
  provider.accounts.set('eve', { email: 'eve@example.org', groups: ['visitors'] });
  let offsetMs = 0;
  const setup = makeSetup(t, {
    ...opts.extra,
    publicUrl: PUBLIC_URL,
    auth: {
      ...opts.auth,
      backends: [{ type: 'local' }, {
        type: 'oidc', name: 'sso', label: 'Lab SSO', issuer: opts.issuer ?? provider.issuer,
        clientId: provider.clientId, clientSecret: provider.clientSecret, allowHttpIssuer: true,
        scopes: ['openid', 'profile', 'email', 'groups'], adminGroups: ['qwd-admins'], allowedGroups: ['staff'],
        recheckS: 0, timeoutMs: PROVIDER_TIMEOUT_MS, ...opts.backend,
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
async function startSso(
  broker: Broker, provider: TestProvider, user: string, browser = new WebClient(broker.url), next = '/manage',
) {
  const page = await browser.get('/login');
  if (!/Log in with Lab SSO/.test(page.text)) throw new Error(`no SSO button on the login page: ${page.text}`);
  const start = await browser.post('/auth/oidc/sso/login', { next });
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

/** What the launcher is asked to start (passed on to the real fake launcher): the boot scripts of each start. */
function recordBootScripts(broker: Broker): string[][] {
  const launcher = broker.services.launcher;
  const startVm = launcher.start.bind(launcher);
  const scriptsStarted: string[][] = [];
  launcher.start = (spec) => {
    scriptsStarted.push((spec.bootScripts?.scripts ?? []).map((s) => s.text.trim()));
    return startVm(spec);
  };
  return scriptsStarted;
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
  // The boot scripts chosen by groups, as the launcher is asked to start them.
  const scriptsStarted = recordBootScripts(broker);
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
  t.log(`JWKS fetched ${provider.hits.get('/jwks') ?? 0} time(s) for the login and its re-check (signature checks)`);
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
  t.is(data.oidc.tokens.accessToken, null, 'no access token is kept beside a refresh token');
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
  t.true(Date.now() - started < 5000, 'connection refused: answered at once, not after the timeout');
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

/** The value of one cookie in a WebClient's jar. */
function cookieOf(browser: WebClient, name: string): string | null {
  for (const part of browser.cookie.split('; ')) if (part.startsWith(`${name}=`)) return part.slice(name.length + 1);
  return null;
}

test('a group a boot script names is kept even as the last of 10,000: the script is chosen', async (t) => {
  const { provider, broker } = await ssoSetup(t, {
    extra: { guest: { bootScripts: { scripts: [{ exec: 'echo beamline @USER@', when: { groups: ['beamline-7'] } }] } } },
  });
  const scriptsStarted = recordBootScripts(broker);
  const groups = ['staff', ...Array.from({ length: 10_000 }, (_, i) => `lab-group-${i}`), 'beamline-7'];
  provider.accounts.set('bob', { email: 'bob@example.org', groups });
  const bob = await ssoLogin(broker, provider, 'bob');
  const row = webSessionRows(broker).map((r) => JSON.parse(r.data)).find((d) => d.identity?.user === 'bob');
  t.is(row.identity.groups.length, 200, 'still bounded');
  t.true(row.identity.groups.includes('beamline-7'), 'the named group is kept');
  const created = await bob.browser.api('POST', '/api/v1/sessions', { machine: 'blank', lifetimeS: 600 }, { withCsrf: true });
  t.is(created.status, 201, JSON.stringify(created.json));
  t.deepEqual(scriptsStarted, [['echo beamline bob']]);
});

test('the browser session gets a new id at login: the cookie from the login start is not logged in', async (t) => {
  const { provider, broker } = await ssoSetup(t);
  const { browser, callback } = await startSso(broker, provider, 'alice');
  const before = cookieOf(browser, 'qwd.sid');
  t.truthy(before, 'the login start set a session cookie (it holds state, nonce and verifier)');
  t.is((await browser.get(local(callback))).status, 303);
  const after = cookieOf(browser, 'qwd.sid');
  t.truthy(after);
  t.not(after, before, 'a new session cookie at login');
  t.is((await browser.get('/')).status, 200, 'the new cookie is logged in');
  const old = new WebClient(broker.url);
  old.cookie = `qwd.sid=${before}`;
  t.is((await old.get('/')).status, 303, 'the old cookie is sent to log in');
  t.is((await old.api('GET', '/api/v1/sessions')).status, 401);
  const sid = decodeURIComponent(before!).slice(2).split('.')[0]!;
  const oldRow = broker.services.db.prepare('SELECT data FROM web_sessions WHERE sid = ?').get(sid);
  t.is(oldRow, undefined, 'the old session row is gone');
});

test('a provider that accepts connections but never answers: a clear 503 after about timeoutMs', async (t) => {
  const sockets = new Set<net.Socket>();
  const silent = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => {
    for (const socket of sockets) socket.destroy();
    silent.close(() => resolve());
  }));
  const port = (silent.address() as net.AddressInfo).port;
  const timeoutMs = 1000;
  const { broker } = await ssoSetup(t, { issuer: `http://127.0.0.1:${port}`, backend: { timeoutMs } });
  const browser = new WebClient(broker.url);
  await browser.get('/login');
  const started = performance.now();
  const res = await browser.post('/auth/oidc/sso/login', { next: '/' });
  const tookMs = performance.now() - started;
  t.log(`answered after ${Math.round(tookMs)} ms (timeoutMs ${timeoutMs})`);
  t.is(res.status, 503);
  t.regex(res.text, /Single sign-on with Lab SSO is unavailable right now/);
  noStack(t, res.text);
  t.true(sockets.size >= 1 || tookMs >= timeoutMs - 50, 'the broker did connect and wait');
  t.true(tookMs >= timeoutMs - 50, `not before the timeout (${Math.round(tookMs)} ms)`);
  t.true(tookMs < timeoutMs + 3000, `about timeoutMs, with room for a loaded machine (${Math.round(tookMs)} ms)`);
  t.is(webSessionRows(broker).length, 0, 'no browser-session row for a start that did not happen');
});

test('an ID token whose signature does not verify against the provider\'s keys is refused', async (t) => {
  const { provider, broker } = await ssoSetup(t);
  const { browser, callback } = await startSso(broker, provider, 'alice');
  provider.faults.set('/jwks', 'other-jwks');
  const res = await browser.get(local(callback));
  t.is(res.status, 502);
  t.regex(res.text, /The answer from Lab SSO could not be accepted/);
  noStack(t, res.text);
  t.true((provider.hits.get('/jwks') ?? 0) >= 1, 'the keys were fetched to check the signature');
  t.is((await browser.get('/')).status, 303, 'not logged in');
});

test('a nonce that does not match the login start is refused', async (t) => {
  const { provider, broker } = await ssoSetup(t);
  const { browser, callback } = await startSso(broker, provider, 'alice');
  // The stored nonce is changed (as if the ID token were from another login start): the token's nonce no longer matches.
  const rows = broker.services.db.prepare('SELECT sid, data FROM web_sessions').all() as Array<{ sid: string; data: string }>;
  const row = rows.find((r) => JSON.parse(r.data).oidcPending)!;
  const data = JSON.parse(row.data);
  data.oidcPending[0].nonce = 'n'.repeat(43);
  broker.services.db.prepare('UPDATE web_sessions SET data = ? WHERE sid = ?').run(JSON.stringify(data), row.sid);
  const res = await browser.get(local(callback));
  t.is(res.status, 502);
  t.regex(res.text, /The answer from Lab SSO could not be accepted/);
  noStack(t, res.text);
  t.is((await browser.get('/')).status, 303, 'not logged in');
});

for (const unsafe of ['//evil.example/x', 'https://evil.example/', '/\\evil.example']) {
  test(`an unsafe next on the SSO start (${unsafe}) lands on a local page`, async (t) => {
    const { provider, broker } = await ssoSetup(t);
    const { browser, callback } = await startSso(broker, provider, 'alice', undefined, unsafe);
    const done = await browser.get(local(callback));
    t.is(done.status, 303);
    t.is(done.location, '/');
  });
}

test('an issuer with a trailing slash is used as configured: the login works', async (t) => {
  const { provider, broker } = await ssoSetup(t, { provider: { issuerSuffix: '/' } });
  t.true(provider.issuer.endsWith('/'));
  const backend = broker.services.config.auth.backends.find((b) => b.name === 'sso');
  t.is(backend?.type === 'oidc' ? backend.issuer : null, provider.issuer);
  const alice = await ssoLogin(broker, provider, 'alice');
  t.regex((await alice.browser.get('/')).text, /Desktop for <strong>alice<\/strong>/);
});

test('without refresh tokens the access token is kept (size-capped) and the re-check uses userinfo', async (t) => {
  const { provider, broker } = await ssoSetup(t, { provider: { refreshTokens: false } });
  const bob = await ssoLogin(broker, provider, 'bob');
  const row = webSessionRows(broker).map((r) => JSON.parse(r.data)).find((d) => d.identity?.user === 'bob');
  t.is(row.oidc.tokens.refreshToken, null);
  t.truthy(row.oidc.tokens.accessToken);
  t.true(row.oidc.tokens.accessToken.length <= 8192);
  const userinfo = provider.hits.get('/me') ?? 0;
  t.is((await bob.browser.get('/')).status, 200);
  t.true((provider.hits.get('/me') ?? 0) > userinfo, 're-checked through userinfo');
  provider.accounts.set('bob', { email: 'bob@example.org', groups: ['physics'] });
  t.is((await bob.browser.get('/')).status, 303, 'out of allowedGroups: logged out');
});

test('two login tabs: each start keeps its own state; at most 5 are kept, the oldest dropped', async (t) => {
  const { provider, broker } = await ssoSetup(t);
  const first = await startSso(broker, provider, 'alice');
  const second = await startSso(broker, provider, 'alice', first.browser, '/second');
  t.is((await first.browser.get(local(first.callback))).location, '/manage', 'the first tab logs in');
  const again = await first.browser.get(local(second.callback));
  t.is(again.status, 303, 'the second tab also completes (its start was not overwritten)');
  t.is(again.location, '/second');

  const browser = new WebClient(broker.url);
  const oldest = await startSso(broker, provider, 'bob', browser);
  for (let i = 0; i < 4; i++) t.is((await browser.post('/auth/oidc/sso/login', { next: '/' })).status, 303);
  const newest = await startSso(broker, provider, 'bob', browser, '/newest');
  const rows = webSessionRows(broker).map((r) => JSON.parse(r.data)).filter((d) => d.oidcPending);
  t.is(rows.length, 1);
  t.is(rows[0].oidcPending.length, 5, 'at most 5 kept');
  t.is((await browser.get(local(newest.callback))).location, '/newest');
  const dropped = await browser.get(local(oldest.callback));
  t.is(dropped.status, 400, 'the oldest start was dropped');
  t.regex(dropped.text, /did not start in this browser, or has expired/);
});

test('the SSO login start is rate-limited per client address; a completed login does not count', async (t) => {
  const { provider, broker } = await ssoSetup(t, { auth: { rateLimit: { maxFailuresPerClient: 3, windowS: 300 } } });
  const browser = new WebClient(broker.url);
  const completed = await startSso(broker, provider, 'alice', browser);
  for (let i = 0; i < 2; i++) t.is((await browser.post('/auth/oidc/sso/login', { next: '/' })).status, 303);
  const pendingNow = () => webSessionRows(broker).map((r) => JSON.parse(r.data).oidcPending);
  const before = pendingNow();
  t.is(before[0].length, 3);
  const refused = await browser.post('/auth/oidc/sso/login', { next: '/' });
  t.is(refused.status, 429);
  t.regex(refused.text, /Too many logins started\. Try again in \d+ s\./);
  noStack(t, refused.text);
  t.deepEqual(pendingNow(), before, 'no login start stored');
  // A visitor without a session from the same address: refused before any row is written.
  const fresh = new WebClient(broker.url);
  await fresh.get('/login');
  t.is((await fresh.post('/auth/oidc/sso/login', { next: '/' })).status, 429);
  t.false(fresh.holds('qwd.sid'), 'no session cookie');
  t.is(webSessionRows(broker).length, 1, 'no new browser-session row');
  const headers = await fetch(`${broker.url}/auth/oidc/sso/login`, {
    method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded', cookie: browser.cookie },
    body: new URLSearchParams({ _csrf: browser.csrf, next: '/' }).toString(), redirect: 'manual',
  });
  t.is(headers.status, 429);
  t.regex(headers.headers.get('retry-after') ?? '', /^\d+$/);
  // The start that logs in is forgiven: this client may start again.
  t.is((await browser.get(local(completed.callback))).status, 303);
  await browser.get('/'); // the page's CSRF token for the new session id
  t.is((await browser.post('/auth/oidc/sso/login', { next: '/' })).status, 303);
  // The password form is not held back by SSO starts (a key of its own).
  t.is((await browser.post('/login', { user: 'nobody', password: 'wrong-password' })).status, 401);
});

test('a request waiting on another\'s re-check, whose session a logout destroyed meanwhile, goes on logged out (no 500)', async (t) => {
  const { provider, broker } = await ssoSetup(t);
  const alice = await ssoLogin(broker, provider, 'alice');
  const original = cookieOf(alice.browser, 'qwd.sid')!;
  const sid = decodeURIComponent(original).slice(2).split('.')[0]!;
  // The store's reads of this session are counted; the second read after arming (the waiting request's reload,
  // after its first load) is held until the test has destroyed the session, as a logout in another tab does.
  const realGet = SqliteWebSessionStore.prototype.get;
  let reads = 0;
  let reloading!: () => void;
  const reloadReached = new Promise<void>((resolve) => { reloading = resolve; });
  let goOn!: () => void;
  const reloadMayGo = new Promise<void>((resolve) => { goOn = resolve; });
  let firstLoad!: () => void;
  const firstLoadDone = new Promise<void>((resolve) => { firstLoad = resolve; });
  t.teardown(() => { SqliteWebSessionStore.prototype.get = realGet; });
  const slowToken = provider.hold('/token');
  // Request A: its re-check (recheckS 0) waits at the provider's token endpoint.
  const a = alice.browser.get('/');
  await slowToken.reached;
  SqliteWebSessionStore.prototype.get = function (this: SqliteWebSessionStore, id, callback) {
    if (id !== sid) return realGet.call(this, id, callback);
    reads += 1;
    if (reads === 1) {
      realGet.call(this, id, callback);
      firstLoad();
      return;
    }
    reloading();
    void reloadMayGo.then(() => realGet.call(this, id, callback));
  };
  // Request B: loads the session, then waits on A's re-check.
  const b = alice.browser.api('GET', '/api/v1/sessions');
  await firstLoadDone;
  slowToken.release();
  await reloadReached;
  // What POST /logout in another tab does to the row (SqliteWebSessionStore.destroy).
  broker.services.db.prepare('DELETE FROM web_sessions WHERE sid = ?').run(sid);
  goOn();
  t.is((await b).status, 401, 'B goes on as not logged in');
  t.is((await a).status, 200, 'A had its answer');
  const row = broker.services.db.prepare('SELECT data FROM web_sessions WHERE sid = ?').get(sid);
  t.is(row, undefined, 'the destroyed session is not written back by B');
  const old = new WebClient(broker.url);
  old.cookie = `qwd.sid=${original}`;
  t.is((await old.get('/')).status, 303, 'the logged-out cookie stays logged out');
});

test('single sign-on logins are counted in qwd_auth_attempts_total under the backend\'s name, with the password logins\' outcomes', async (t) => {
  const { provider, broker } = await ssoSetup(t, { extra: { metrics: { enabled: true } } });
  await ssoLogin(broker, provider, 'alice');
  const eve = await startSso(broker, provider, 'eve');
  t.is((await eve.browser.get(local(eve.callback))).status, 403);
  const replay = await ssoLogin(broker, provider, 'bob');
  t.is((await replay.browser.get(local(replay.callback))).status, 400, 'the same callback again: no login start left');
  const res = await fetch(broker.metricsUrl!);
  t.is(res.status, 200);
  const samples = parseSamples(await res.text());
  const count = (outcome: string) => sampleValue(samples, 'qwd_auth_attempts_total', { backend: 'sso', outcome });
  t.deepEqual(
    { success: count('success'), invalid: count('invalid'), unavailable: count('unavailable') },
    { success: 2, invalid: 2, unavailable: 0 },
    'alice and bob in; eve refused and the replayed callback invalid',
  );
});
