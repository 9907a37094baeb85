// Nobody can lock a user out by failing logins with their name: the attacker,
// from 127.0.0.2, is throttled; the victim, from 127.0.0.1, still logs in; and
// once many addresses reach the per-name back-off, her own browser still does.
// Two real client addresses (the client socket bound with localAddress), no
// X-Forwarded-For.
import test from 'ava';
import { makeSetup, requireQemu } from '../helpers/env.js';
import { startTestBroker } from '../helpers/broker.js';
import { WebClient } from '../helpers/web-client.js';
import { hashPassword } from '../../src/auth/password-hash.js';

test.before(() => requireQemu());

test('an attacker hammering a name from another address is throttled while the victim logs in; many addresses reach the per-name back-off', async (t) => {
  const setup = makeSetup(t, { auth: { backends: [{ type: 'local' }], rateLimit: { maxFailures: 3, maxFailuresPerClient: 10, maxFailuresPerName: 8, windowS: 300 } } });
  const broker = await startTestBroker(t, setup.config);
  broker.services.users.add({ name: 'alice', hash: await hashPassword('alice-Secret-4711'), email: null, admin: false, createdAt: Date.now() });
  const attacker = new WebClient(broker.url, { localAddress: '127.0.0.2' });
  await attacker.get('/login');
  const answers: number[] = [];
  for (let i = 0; i < 12; i++) answers.push((await attacker.post('/login', { user: 'alice', password: `guess-${i}` })).status);
  t.deepEqual(answers, [401, 401, 401, ...Array(9).fill(429)], 'three guesses, then told to wait');
  const victim = new WebClient(broker.url, { localAddress: '127.0.0.1' });
  await victim.get('/login');
  t.is((await victim.post('/login', { user: 'alice', password: 'alice-Secret-4711' })).status, 303, 'the victim logs in from her own address');
  // Mistyping afterwards still works too: her own budget.
  const again = new WebClient(broker.url, { localAddress: '127.0.0.1' });
  await again.get('/login');
  t.is((await again.post('/login', { user: 'alice', password: 'typo' })).status, 401);
  // Many addresses together reach the per-name limit (8): the slower global back-off.
  for (const address of ['127.0.0.5', '127.0.0.6', '127.0.0.7']) {
    const b = new WebClient(broker.url, { localAddress: address });
    await b.get('/login');
    for (let i = 0; i < 3; i++) await b.post('/login', { user: 'alice', password: `spray-${i}` });
  }
  const late = new WebClient(broker.url, { localAddress: '127.0.0.8' });
  await late.get('/login');
  const refused = await late.post('/login', { user: 'alice', password: 'alice-Secret-4711' });
  t.is(refused.status, 429, 'the name backs off once many addresses failed with it');
  t.regex(refused.text, /Too many failed logins\. Try again in \d+ s\./);
  // Her own browser, known from its earlier login (a signed mark, auth/known-device.ts), is not held back by it.
  await victim.get('/login');
  t.is((await victim.post('/login', { user: 'alice', password: 'alice-Secret-4711' })).status, 303, 'the victim\'s own browser still logs in');
});
