// Single sign-on in the audit trail, against a real OpenID provider on
// 127.0.0.1 (oidc-provider, test/helpers/oidc-provider.ts) and a real broker
// (fake launcher: no VM is needed): an accepted login, a user outside
// allowedGroups, a callback with a wrong state, and a logout each leave their
// row, with no code, state or token in it.
import test from 'ava';
import { makeSetup, requireProgram } from '../helpers/env.js';
import { startTestBroker } from '../helpers/broker.js';
import { WebClient } from '../helpers/web-client.js';
import { ProviderBrowser, startOidcProvider } from '../helpers/oidc-provider.js';
import { queryAudit } from '../../src/audit/query.js';

const PUBLIC_URL = 'http://desktops.test';

test.before(() => requireProgram('qemu-img', 'qemu-utils'));

test('SSO logins, refusals, failures and logouts are audited with the backend and the user, never a token',
  async (t) => {
    const provider = await startOidcProvider(t, { publicUrl: PUBLIC_URL });
    provider.accounts.set('alice', { email: 'alice@example.org', groups: ['staff'] });
    provider.accounts.set('eve', { email: 'eve@example.org', groups: ['visitors'] });
    const setup = makeSetup(t, {
      publicUrl: PUBLIC_URL,
      auth: { backends: [{
        type: 'oidc', name: 'sso', label: 'Lab SSO', issuer: provider.issuer, clientId: provider.clientId,
        clientSecret: provider.clientSecret, allowHttpIssuer: true, scopes: ['openid', 'profile', 'email', 'groups'],
        allowedGroups: ['staff'], timeoutMs: 2000,
      }] },
    });
    const broker = await startTestBroker(t, setup.config, { launcher: 'fake' });
    const callbackFor = async (user: string) => {
      const browser = new WebClient(broker.url);
      await browser.get('/login');
      const start = await browser.post('/auth/oidc/sso/login', { next: '/' });
      t.is(start.status, 303);
      const callback = await new ProviderBrowser(provider.issuer).authorize(start.location!, user);
      return { browser, callback, path: callback.pathname + callback.search };
    };

    const alice = await callbackFor('alice');
    t.is((await alice.browser.get(alice.path)).status, 303);
    const eve = await callbackFor('eve');
    t.is((await eve.browser.get(eve.path)).status, 403);
    const forged = await callbackFor('alice');
    const wrongState = new URL(forged.callback);
    wrongState.searchParams.set('state', 'x'.repeat(43));
    t.is((await forged.browser.get(wrongState.pathname + wrongState.search)).status, 400);
    await alice.browser.get('/');
    t.is((await alice.browser.post('/logout', {})).status, 303);

    const rows = queryAudit(broker.services.db, {}).filter((e) => /^log/.test(e.kind));
    t.deepEqual(rows.map((e) => [e.kind, e.actor, e.owner, e.detail]), [
      ['login', 'alice', 'alice', { backend: 'sso', result: 'success' }],
      ['login', 'web:anonymous', 'eve', { backend: 'sso', result: 'failure', reason: 'refused' }],
      ['login', 'web:anonymous', null, { backend: 'sso', result: 'failure', reason: 'provider' }],
      ['logout', 'alice', 'alice', { backend: 'sso', result: 'logout' }],
    ]);
    const table = JSON.stringify(broker.services.db.prepare('SELECT * FROM events').all());
    for (const c of [alice.callback, eve.callback, forged.callback]) {
      for (const secret of [c.searchParams.get('code'), c.searchParams.get('state')]) {
        t.truthy(secret);
        t.false(table.includes(secret!), 'no authorization code or state in the trail');
      }
    }
  });
