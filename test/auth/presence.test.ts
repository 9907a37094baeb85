// Who is connected (names of logged-in viewers), logins that survive a broker
// restart, and the security headers every page carries.
import test from 'ava';
import { makeSetup, requireQemu } from '../helpers/env.js';
import { startTestBroker } from '../helpers/broker.js';
import { qwdctl } from '../helpers/cli.js';
import { WebClient } from '../helpers/web-client.js';
import { connectRfb } from '../helpers/rfb-client.js';
import { issueViewerTicket, readViewerTicket } from '../../src/bridge/viewer-ticket.js';

test.before(() => requireQemu());

async function withUsers(t: import('ava').ExecutionContext) {
  // Links that work without a login: the tests connect an anonymous viewer too.
  const setup = makeSetup(t, { auth: { backends: [{ type: 'local' }], linksRequireLogin: false } });
  for (const name of ['alice', 'bob']) {
    const res = await qwdctl(['--config', setup.configFile, 'users', 'add', name], { input: `${name}-Secret-123\n` });
    t.is(res.code, 0, res.stderr);
  }
  return setup;
}

async function login(url: string, user: string) {
  const b = new WebClient(url);
  await b.get('/login');
  const res = await b.post('/login', { user, password: `${user}-Secret-123` });
  if (res.status !== 303) throw new Error(`login ${user}: ${res.status}`);
  await b.get('/');
  return b;
}

test('viewer tickets: signed for one link, expire, cannot be forged', (t) => {
  const ticket = issueViewerTicket('secret', 'tokenA', 'bob', 1000);
  t.is(readViewerTicket('secret', 'tokenA', ticket, 2000), 'bob');
  t.is(readViewerTicket('secret', 'tokenB', ticket, 2000), null, 'another link');
  t.is(readViewerTicket('other', 'tokenA', ticket, 2000), null, 'another secret');
  t.is(readViewerTicket('secret', 'tokenA', ticket, 1000 + 11 * 60 * 1000), null, 'expired');
  const [payload, mac] = ticket.split('.');
  const forged = Buffer.from(JSON.stringify({ u: 'root', e: 9e15 })).toString('base64url');
  t.is(readViewerTicket('secret', 'tokenA', `${forged}.${mac}`, 2000), null);
  t.is(readViewerTicket('secret', 'tokenA', `${payload}`, 2000), null);
  t.is(readViewerTicket('secret', 'tokenA', null), null);
});

test('the owner sees the names of logged-in viewers on the session page and in the API', async (t) => {
  const setup = await withUsers(t);
  const broker = await startTestBroker(t, setup.config);
  const alice = await login(broker.url, 'alice');
  const bob = await login(broker.url, 'bob');
  const { json: s } = await alice.api('POST', '/api/v1/sessions', { machine: 'blank' }, { withCsrf: true });
  const viewerPage = await bob.get(`/s/${s.token}/view`);
  const ticket = /data-ticket="([^"]+)"/.exec(viewerPage.text)![1]!;
  const rfb = await connectRfb(`${s.wsUrl}?t=${encodeURIComponent(ticket)}`);
  t.teardown(() => rfb.close());
  const anonymous = await connectRfb(s.viewWsUrl);
  t.teardown(() => anonymous.close());
  const page = await alice.get(`/s/${s.token}`);
  t.regex(page.text, /class="viewers">2 \(1 view-only\)<\/span> <span class="viewer-names muted">: bob</);
  const info = await alice.api('GET', `/api/v1/sessions/${s.token}`);
  t.deepEqual(info.json.viewerNames, ['bob']);
  t.false('viewerNames' in (await alice.api('GET', `/api/v1/sessions/${s.viewUrl.split('/s/')[1]}`)).json, 'view-only holders do not see names');
});

test('a login survives a broker restart (sessions in the store); pages carry security headers', async (t) => {
  const setup = await withUsers(t);
  const first = await startTestBroker(t, setup.config, { keepVms: true });
  const alice = await login(first.url, 'alice');
  await first.close();
  const second = await startTestBroker(t, { ...setup.config, listen: { host: '127.0.0.1', port: Number(new URL(first.url).port) } });
  const again = new WebClient(second.url);
  Object.assign(again, { cookie: (alice as unknown as { cookie: string }).cookie });
  const form = await again.get('/');
  t.is(form.status, 200);
  t.regex(form.text, /Desktop for <strong>alice<\/strong>/);
  const res = await fetch(`${second.url}/login`);
  t.regex(res.headers.get('content-security-policy') ?? '', /default-src 'self'/);
  t.is(res.headers.get('x-content-type-options'), 'nosniff');
  t.is(res.headers.get('referrer-policy'), 'no-referrer');
  t.regex(res.headers.get('x-frame-options') ?? '', /SAMEORIGIN|DENY/);
  const cookie = (await fetch(`${second.url}/login`)).headers.get('set-cookie') ?? '';
  t.regex(cookie, /HttpOnly/);
  t.regex(cookie, /SameSite=Lax/);
});
