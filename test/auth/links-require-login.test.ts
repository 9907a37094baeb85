// auth.linksRequireLogin with a real backend (local accounts): on by default,
// a link opened without a login goes to the login page and back to the link;
// its WebSocket is refused without a logged-in browser session. Off: the link
// alone opens the desktop, as INSTALL.md says.
import test from 'ava';
import WebSocket from 'ws';
import { makeSetup, rawUpgrade, requireQemu } from '../helpers/env.js';
import { startTestBroker } from '../helpers/broker.js';
import { WebClient } from '../helpers/web-client.js';
import { hashPassword } from '../../src/auth/password-hash.js';
import type { Broker } from '../../src/main.js';

test.before(() => requireQemu());

async function brokerWithAlice(t: import('ava').ExecutionContext, linksRequireLogin?: boolean) {
  const setup = makeSetup(t, { auth: { backends: [{ type: 'local' }], ...(linksRequireLogin === undefined ? {} : { linksRequireLogin }) } });
  const broker = await startTestBroker(t, setup.config);
  for (const name of ['alice', 'bob']) broker.services.users.add({ name, hash: await hashPassword(`${name}-Secret-4711`), email: null, admin: false, createdAt: Date.now() });
  const alice = await loginAs(broker, 'alice');
  const { status, json } = await alice.api('POST', '/api/v1/sessions', { machine: 'blank' }, { withCsrf: true });
  t.is(status, 201);
  return { broker, alice, s: json as { token: string; viewUrl: string; wsUrl: string; viewWsUrl: string } };
}

async function loginAs(broker: Broker, name: string, next = '/'): Promise<WebClient> {
  const b = new WebClient(broker.url);
  await b.get('/login');
  const res = await b.post('/login', { user: name, password: `${name}-Secret-4711`, next });
  if (res.status !== 303) throw new Error(`login of ${name}: ${res.status}`);
  await b.get('/');
  return b;
}

/** Resolves with the RFB banner, or rejects with the HTTP status of a refused upgrade. */
function firstMessage(url: string, cookie?: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, cookie ? { headers: { cookie } } : {});
    ws.once('message', (d: Buffer) => {
      resolve(d.toString('latin1'));
      ws.close();
    });
    ws.once('unexpected-response', (_req, res) => reject(new Error(`HTTP ${res.statusCode}`)));
    ws.once('error', reject);
  });
}

test('links require a login by default with a real backend: pages redirect to the login and back, the API says 401, the WebSocket 401', async (t) => {
  const { broker, s } = await brokerWithAlice(t);
  t.true(broker.services.config.auth.linksRequireLogin, 'the default with a real backend');
  const viewToken = new URL(s.viewUrl).pathname.split('/')[2]!;
  const stranger = new WebClient(broker.url);
  for (const path of [`/s/${s.token}`, `/s/${viewToken}`, `/s/${s.token}/view`, `/s/${viewToken}/view`]) {
    const res = await stranger.get(path);
    t.is(res.status, 303, path);
    t.is(res.location, `/login?next=${encodeURIComponent(path)}`, path);
  }
  t.is((await stranger.api('GET', `/api/v1/sessions/${s.token}`)).json.error.code, 'QWD_UNAUTHORIZED');
  t.is((await fetch(`${broker.url}/api/v1/sessions/${viewToken}`)).status, 401);
  for (const url of [s.wsUrl, s.viewWsUrl]) {
    t.regex(await rawUpgrade(url.replace(/^ws/, 'http')), /^HTTP\/1\.1 401 /, 'no cookie');
    await t.throwsAsync(firstMessage(url, stranger.cookie), { message: 'HTTP 401' }, 'an anonymous cookie');
    await t.throwsAsync(firstMessage(url, 'qwd.sid=s%3Aforged.signature'), { message: 'HTTP 401' }, 'a forged session cookie');
  }
  // Bob logs in from the login page the link sent him to, and comes back to the link.
  const bob = new WebClient(broker.url);
  const asked = await bob.get(`/s/${viewToken}`);
  const login = await bob.get(asked.location!);
  t.regex(login.text, new RegExp(`name="next" value="/s/${viewToken}"`));
  const back = await bob.post('/login', { user: 'bob', password: 'bob-Secret-4711', next: `/s/${viewToken}` });
  t.is(back.location, `/s/${viewToken}`, 'back to the link after the login');
  t.regex((await bob.get(back.location!)).text, /view-only/);
  t.is(await firstMessage(s.viewWsUrl, bob.cookie), 'RFB 003.008\n', 'logged in: the view link connects');
  t.is(await firstMessage(s.wsUrl, bob.cookie), 'RFB 003.008\n', 'and the control link');
  // A logout ends the WebSocket access too, also for the cookie replayed.
  const cookie = bob.cookie;
  await bob.get('/');
  t.is((await bob.post('/logout', {})).status, 303);
  await t.throwsAsync(firstMessage(s.wsUrl, cookie), { message: 'HTTP 401' });
});

test('with auth.linksRequireLogin false, the link alone opens the desktop (page, API and WebSocket), and changing it still needs the owner', async (t) => {
  const { broker, s } = await brokerWithAlice(t, false);
  const stranger = new WebClient(broker.url);
  t.is((await stranger.get(`/s/${s.token}`)).status, 200);
  t.is((await fetch(`${broker.url}/api/v1/sessions/${s.token}`)).status, 200);
  t.is(await firstMessage(s.wsUrl), 'RFB 003.008\n');
  t.is(await firstMessage(s.viewWsUrl), 'RFB 003.008\n');
  t.is((await stranger.post(`/s/${s.token}/stop`, {})).status, 403, 'not the owner');
  t.is(broker.services.rows.all().length, 1);
});

test('auth "none" never requires a login for links; asking for it is a config error', async (t) => {
  const open = makeSetup(t);
  t.false(open.config.auth.linksRequireLogin);
  t.throws(() => makeSetup(t, { auth: { linksRequireLogin: true } }), { message: /auth\.linksRequireLogin: true needs a login backend/ });
});
