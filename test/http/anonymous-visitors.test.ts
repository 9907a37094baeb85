// Anonymous visitors cost no storage: no browser-session row for a page load
// (the CSRF token is stateless), forged or missing tokens are refused and
// change nothing, the normal flow still works, and page loads per address are
// rate limited.
import test from 'ava';
import { makeSetup, requireQemu } from '../helpers/env.js';
import { startTestBroker } from '../helpers/broker.js';
import { WebClient } from '../helpers/web-client.js';
import type { Broker } from '../../src/main.js';

test.before(() => requireQemu());

const webSessionRows = (broker: Broker) => (broker.services.db.prepare('SELECT count(*) AS n FROM web_sessions').get() as { n: number }).n;

test('500 anonymous page loads of / and the login page leave the web-session table as it was', async (t) => {
  for (const auth of [undefined, { backends: [{ type: 'local' }] }]) {
    const setup = makeSetup(t, auth ? { auth: { ...auth, rateLimit: { anonymousPagesPerMinute: 0 } } } : { auth: { rateLimit: { anonymousPagesPerMinute: 0 } } });
    const broker = await startTestBroker(t, setup.config);
    const before = webSessionRows(broker);
    for (let i = 0; i < 250; i++) {
      const [home, login] = await Promise.all([fetch(`${broker.url}/`, { redirect: 'manual' }), fetch(`${broker.url}/login`, { redirect: 'manual' })]);
      t.true([200, 303].includes(home.status) && [200, 303].includes(login.status));
      t.false(home.headers.getSetCookie().some((c) => c.startsWith('qwd.sid=')), 'no session cookie for an anonymous visitor');
      await Promise.all([home.arrayBuffer(), login.arrayBuffer()]);
    }
    t.is(webSessionRows(broker), before, `${auth ? 'local' : 'none'}: no row for 500 anonymous page loads`);
  }
});

test('a form POST with a missing, wrong, foreign or cookie-less CSRF token is refused with QWD_CSRF and changes nothing; the real flow works', async (t) => {
  const setup = makeSetup(t);
  const broker = await startTestBroker(t, setup.config);
  const browser = new WebClient(broker.url);
  await browser.get('/');
  t.true(browser.holds('qwd.csrf'));
  t.false(browser.holds('qwd.sid'));
  const other = new WebClient(broker.url);
  await other.get('/');
  const form = { machine: 'blank', user: 'ada', lifetimeS: '600' };
  const post = (fields: Record<string, string>, cookie: string, accept = 'application/json') => fetch(`${broker.url}/sessions`, {
    method: 'POST', redirect: 'manual', body: new URLSearchParams(fields).toString(),
    headers: { 'content-type': 'application/x-www-form-urlencoded', accept, ...(cookie ? { cookie } : {}) },
  });
  const forged = [
    ['missing', form, browser.cookie],
    ['wrong', { ...form, _csrf: 'x'.repeat(87) }, browser.cookie],
    ['tampered', { ...form, _csrf: browser.csrf.slice(0, -1) + (browser.csrf.endsWith('A') ? 'B' : 'A') }, browser.cookie],
    ['another browser\'s', { ...form, _csrf: other.csrf }, browser.cookie],
    ['without its cookie', { ...form, _csrf: browser.csrf }, ''],
    ['an empty', { ...form, _csrf: '' }, browser.cookie],
  ] as const;
  for (const [what, fields, cookie] of forged) {
    const res = await post(fields, cookie);
    t.is(res.status, 403, what);
    t.is(((await res.json()) as { error: { code: string } }).error.code, 'QWD_CSRF', what);
  }
  const html = await post(form, browser.cookie, 'text/html');
  t.is(html.status, 403);
  t.regex(await html.text(), /did not come from this site/);
  t.deepEqual(broker.services.rows.all(), [], 'nothing was created');
  t.is(webSessionRows(broker), 0, 'and no browser session stored');
  const made = await browser.post('/sessions', form);
  t.is(made.status, 303, 'the page\'s own token works');
  t.is(broker.services.rows.all().length, 1);
  t.is(webSessionRows(broker), 1, 'a browser that made a desktop has a session (it holds the desktop in open mode)');
  t.is((await browser.get('/manage')).text.match(/class="button primary"/g)?.length, 1, 'and sees its desktop');
});

test('anonymous page loads beyond auth.rateLimit.anonymousPagesPerMinute get 429 with a clear message; other addresses, static files and /healthz are not', async (t) => {
  const setup = makeSetup(t, { auth: { rateLimit: { anonymousPagesPerMinute: 20 } } });
  const broker = await startTestBroker(t, setup.config);
  const hammer = new WebClient(broker.url, { localAddress: '127.0.0.3' });
  for (let i = 0; i < 20; i++) t.is((await hammer.get(i % 2 ? '/' : '/manage')).status, 200);
  const limited = await hammer.get('/');
  t.is(limited.status, 429);
  t.regex(limited.text, /Too many page loads from your address\. Try again in \d+ s\./);
  const json = await fetch(`${broker.url}/`, { headers: { accept: 'application/json' } });
  t.is(json.status, 200, 'fetch connects from 127.0.0.1: another address');
  t.is((await fetch(`${broker.url}/static/style.css`)).status, 200, 'static files are not pages');
  t.is((await fetch(`${broker.url}/healthz`)).status, 200);
  const neighbour = new WebClient(broker.url, { localAddress: '127.0.0.4' });
  t.is((await neighbour.get('/')).status, 200, 'another address has its own budget');
  t.is(webSessionRows(broker), 0);
});
