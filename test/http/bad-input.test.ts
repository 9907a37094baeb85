// Bad input gets a clear 4xx and changes nothing: no run dir, no qemu, no row.
import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { api, startTestBroker } from '../helpers/broker.js';
import { makeSetup, pidsMentioning, rawUpgrade, requireQemu } from '../helpers/env.js';
import { WebClient } from '../helpers/web-client.js';
import type { Broker } from '../../src/main.js';

test.before(() => requireQemu());

function assertNothingCreated(t: import('ava').ExecutionContext, broker: Broker, stateDir: string) {
  t.deepEqual(broker.services.rows.all(), [], 'no session row');
  const runDir = path.join(stateDir, 'sessions');
  t.deepEqual(fs.existsSync(runDir) ? fs.readdirSync(runDir) : [], [], 'no run dir');
  t.deepEqual(pidsMentioning(stateDir), [], 'no qemu spawned');
}

const good = { machine: 'blank', cpus: 1, memoryMiB: 128, lifetimeS: 600, user: 'alice' };
const cases: Array<[string, unknown, number, RegExp]> = [
  ['a path as machine name', { ...good, machine: '../../etc/passwd' }, 400, /machine must be the name of a machine/],
  ['an unknown machine', { ...good, machine: 'windows' }, 404, /no machine called "windows"/],
  ['an option smuggled into cpus', { ...good, cpus: '1 -display sdl' }, 400, /cpus must be a whole number from 1 to 2, got "1 -display sdl"/],
  ['fractional cpus', { ...good, cpus: 1.5 }, 400, /cpus must be a whole number/],
  ['too many cpus', { ...good, cpus: 64 }, 400, /cpus must be a whole number from 1 to 2/],
  ['negative memory', { ...good, memoryMiB: -512 }, 400, /memoryMiB must be a whole number from 64 to 512, got -512/],
  ['huge memory', { ...good, memoryMiB: 1e12 }, 400, /memoryMiB must be a whole number from 64 to 512/],
  ['memory as text with unit', { ...good, memoryMiB: '8G' }, 400, /memoryMiB must be a whole number/],
  ['a life-time beyond the maximum', { ...good, lifetimeS: 10 * 86400 }, 400, /lifetimeS must be a whole number from 1 to 86400/],
  ['a missing machine', { cpus: 1, user: 'a' }, 400, /machine is required/],
  ['a missing user', { machine: 'blank' }, 400, /user is required/],
  ['a user name with shell characters', { ...good, user: 'bob; rm -rf /' }, 400, /user must be 1 to 64 letters/],
  ['an overlong string', { ...good, user: 'x'.repeat(5000) }, 400, /user is too long/],
  ['an unknown field', { ...good, gpu: 'all' }, 400, /unknown field "gpu"/],
  ['an array body', [good], 400, /must be an object/],
];

for (const [title, body, status, message] of cases) {
  test(`API refuses ${title}`, async (t) => {
    const setup = makeSetup(t);
    const broker = await startTestBroker(t, setup.config);
    const res = await api(broker, 'POST', '/api/v1/sessions', body);
    t.is(res.status, status, res.text);
    t.regex(res.json.error.message, message);
    t.regex(res.json.error.code, /^QWD_/);
    assertNothingCreated(t, broker, setup.stateDir);
  });
}

test('malformed JSON and oversized bodies are refused with 4xx', async (t) => {
  const setup = makeSetup(t);
  const broker = await startTestBroker(t, setup.config);
  const malformed = await fetch(`${broker.url}/api/v1/sessions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"machine": ' });
  t.is(malformed.status, 400);
  t.regex((await malformed.json()).error.message, /not valid/);
  const big = await fetch(`${broker.url}/api/v1/sessions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ ...good, user: 'x'.repeat(100_000) }) });
  t.is(big.status, 413);
  const notJson = await fetch(`${broker.url}/api/v1/sessions`, { method: 'POST', headers: { 'content-type': 'text/plain' }, body: 'machine=blank' });
  t.is(notJson.status, 400);
  assertNothingCreated(t, broker, setup.stateDir);
});

test('the form shows the error in the page and keeps what was typed', async (t) => {
  const setup = makeSetup(t);
  const broker = await startTestBroker(t, setup.config);
  const browser = new WebClient(broker.url);
  await browser.get('/');
  const res = await browser.post('/sessions', { machine: '../../etc/passwd', cpus: '1 -display sdl', memoryMiB: '128', lifetimeS: '600', user: 'alice' });
  t.is(res.status, 400);
  const html = res.text;
  t.regex(html, /class="error" role="alert">machine must be the name of a machine/);
  t.regex(html, /value="alice"/);
  t.notRegex(html, /<script>alert/);
  assertNothingCreated(t, broker, setup.stateDir);
});

test('admission refusals are 429/503 with a message and create nothing', async (t) => {
  const setup = makeSetup(t, { limits: { maxSessionsPerUser: 1 } });
  const broker = await startTestBroker(t, setup.config);
  const first = await api(broker, 'POST', '/api/v1/sessions', good);
  t.is(first.status, 201);
  const second = await api(broker, 'POST', '/api/v1/sessions', good);
  t.is(second.status, 429);
  t.regex(second.json.error.message, /already have 1 desktop running/);
  t.is(broker.services.rows.all().length, 1);
  t.is(pidsMentioning(setup.stateDir).length, 1, 'only the first session runs');
});

const badTokens = ['x', 'A'.repeat(43), 'A'.repeat(42) + '!', '..%2F..%2Fetc%2Fpasswd', 'A'.repeat(500)];
for (const [i, token] of badTokens.entries()) {
  test(`unknown or garbled token #${i} ${JSON.stringify(token.slice(0, 12))} gets 404 on /s/, /api/ and /ws/ without an upgrade`, async (t) => {
    const setup = makeSetup(t);
    const broker = await startTestBroker(t, setup.config);
    t.is((await fetch(`${broker.url}/s/${token}`)).status, 404);
    t.is((await fetch(`${broker.url}/s/${token}/view`)).status, 404);
    t.is((await api(broker, 'GET', `/api/v1/sessions/${token}`)).status, 404);
    t.is((await api(broker, 'DELETE', `/api/v1/sessions/${token}`)).status, 404);
    t.regex(await rawUpgrade(`${broker.url}/ws/${token}`), /^HTTP\/1\.1 404 /);
  });
}

test('the bridge answers no subprotocol unless the client offered binary', async (t) => {
  const setup = makeSetup(t);
  const broker = await startTestBroker(t, setup.config);
  const { json } = await api(broker, 'POST', '/api/v1/sessions', good);
  const { default: WebSocket } = await import('ws');
  for (const offered of [undefined, ['binary'], ['base64', 'binary']]) {
    const ws = new WebSocket(json.wsUrl, offered);
    const banner = await new Promise<string>((resolve, reject) => {
      ws.once('message', (d: Buffer) => resolve(d.toString('latin1')));
      ws.once('error', reject);
    });
    t.is(banner, 'RFB 003.008\n');
    t.is(ws.protocol, offered ? 'binary' : '', `offered ${JSON.stringify(offered)}`);
    ws.close();
  }
});

test('a client offering only other subprotocols is not answered with one', async (t) => {
  const setup = makeSetup(t);
  const broker = await startTestBroker(t, setup.config);
  const { json } = await api(broker, 'POST', '/api/v1/sessions', good);
  const head = await rawUpgrade(json.wsUrl.replace('ws', 'http'), { 'Sec-WebSocket-Protocol': 'chat, superchat' });
  t.regex(head, /^HTTP\/1\.1 101/);
  t.notRegex(head, /sec-websocket-protocol/i);
});
