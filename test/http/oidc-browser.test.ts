// The "Log in with <label>" button in a real Chromium: from the broker's login
// page through the provider's own sign-in and consent pages (oidc-provider on
// 127.0.0.1) back to the broker, then logout through the provider's
// end-session page back to the login page. publicUrl is the broker's real
// address here (a port picked free first), so the browser follows every
// redirect itself.
import test from 'ava';
import { makeSetup, requireProgram } from '../helpers/env.js';
import { startTestBroker } from '../helpers/broker.js';
import { freePorts } from '../helpers/peer-process.js';
import { launchChromium } from '../helpers/chromium.js';
import { startOidcProvider } from '../helpers/oidc-provider.js';

test.before(() => requireProgram('qemu-img', 'qemu-utils'));

test('Chromium: the SSO button logs in through the provider, and logout goes through the provider\'s end-session page', async (t) => {
  const [port] = await freePorts(1);
  const publicUrl = `http://127.0.0.1:${port}`;
  const provider = await startOidcProvider(t, { publicUrl });
  provider.accounts.set('alice', { email: 'alice@example.org', groups: ['staff', 'qwd-admins'] });
  const setup = makeSetup(t, {
    listen: { host: '127.0.0.1', port },
    publicUrl,
    auth: {
      backends: [{ type: 'local' }, {
        type: 'oidc', name: 'sso', label: 'Lab SSO', issuer: provider.issuer, clientId: provider.clientId,
        clientSecret: provider.clientSecret, allowHttpIssuer: true, scopes: ['openid', 'profile', 'email', 'groups'],
        adminGroups: ['qwd-admins'], allowedGroups: ['staff'],
      }],
    },
  });
  const broker = await startTestBroker(t, setup.config, { launcher: 'fake' });
  t.is(broker.url, publicUrl);
  const { context, problems } = await launchChromium(t);
  const page = await context.newPage();
  await page.goto(`${publicUrl}/manage`);
  t.is(new URL(page.url()).pathname, '/login');
  t.true(await page.locator('input[name="password"]').isVisible(), 'the password form is there too');
  await page.getByRole('button', { name: 'Log in with Lab SSO' }).click();
  // The provider's development pages @import web fonts from the internet: their load event never comes here.
  const dom = { waitUntil: 'domcontentloaded' } as const;
  await page.waitForURL((u) => u.origin === provider.issuer, dom);
  await page.locator('input[name="login"]').fill('alice');
  await page.locator('input[name="password"]').fill('any password');
  await page.getByRole('button', { name: 'Sign-in' }).click();
  await page.getByRole('button', { name: 'Continue' }).click();
  await page.waitForURL(`${publicUrl}/manage`);
  t.regex(await page.locator('header').innerText(), /alice \(admin\)/);

  // Clicked with the pointer: the nav's button once also took the share-link cards' flex layout, and the click
  // landed on its form instead.
  await page.getByRole('button', { name: 'Log out' }).click();
  await page.waitForURL((u) => u.origin === provider.issuer && u.pathname.startsWith('/session/end'), dom);
  await page.getByRole('button', { name: /yes, sign me out/i }).click();
  await page.waitForURL((u) => u.origin === publicUrl && u.pathname === '/login');
  await page.goto(`${publicUrl}/`);
  t.is(new URL(page.url()).pathname, '/login', 'logged out of the broker');
  // Only the broker's pages are judged (the provider's development pages load web fonts from the internet).
  const ours = (list: string[]) => list.filter((line) => line.includes(publicUrl) && !line.includes(provider.issuer));
  t.deepEqual(ours(problems.errors), []);
  t.deepEqual(ours(problems.httpErrors), []);
});
