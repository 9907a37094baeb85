// The bridge asks the launcher where a desktop's VNC is before it upgrades a
// viewer's request (asynchronously: the Slurm launcher reads the job's VNC
// secret from shared storage). A launcher that cannot say gets the viewer an
// HTTP 503, never a WebSocket. The launcher here is the fake one
// (src/launcher/fake.ts), which has no screen; everything else is the real broker.
import test from 'ava';
import { api, startTestBroker } from '../helpers/broker.js';
import { makeSetup, rawUpgrade } from '../helpers/env.js';

test('a viewer of a desktop whose launcher cannot say where its VNC is gets 503 before any upgrade', async (t) => {
  const setup = makeSetup(t);
  const broker = await startTestBroker(t, setup.config, { launcher: 'fake' });
  const { status, json: s } = await api(broker, 'POST', '/api/v1/sessions', { machine: 'blank', user: 'ada', lifetimeS: 600 });
  t.is(status, 201);
  t.is(broker.services.manager.get(s.id)?.state, 'running');
  const answer = await rawUpgrade(`${broker.url}/ws/${s.token}`);
  t.regex(answer, /^HTTP\/1\.1 503 Service Unavailable\r\n/);
  t.is(broker.services.manager.get(s.id)?.viewers, 0, 'no viewer was counted');
});

test('a viewer of a stopped desktop still gets 410 and an unknown link 404 (the checks before the launcher is asked)', async (t) => {
  const setup = makeSetup(t);
  const broker = await startTestBroker(t, setup.config, { launcher: 'fake' });
  const { json: s } = await api(broker, 'POST', '/api/v1/sessions', { machine: 'blank', user: 'ada', lifetimeS: 600 });
  await broker.services.manager.stop(s.id);
  t.regex(await rawUpgrade(`${broker.url}/ws/${s.token}`), /^HTTP\/1\.1 410 Gone\r\n/);
  t.regex(await rawUpgrade(`${broker.url}/ws/${'x'.repeat(43)}`), /^HTTP\/1\.1 404 Not Found\r\n/);
});
