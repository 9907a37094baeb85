// What one viewer can cost the others, end to end on a real broker and real
// QEMU: viewer caps per link and per session (refused before the upgrade), and
// a view-only viewer pouring clipboard text at the bridge.
import test, { type ExecutionContext } from 'ava';
import WebSocket from 'ws';
import { api, startTestBroker } from '../helpers/broker.js';
import net from 'node:net';
import { makeSetup, requireQemu, waitFor } from '../helpers/env.js';
import { connectRfb, type RfbSession } from '../helpers/rfb-client.js';

test.before(() => requireQemu());

/** The whole HTTP answer (head and body) to a WebSocket upgrade request, read until the broker closes. */
function upgradeAnswer(wsUrl: string): Promise<string> {
  const url = new URL(wsUrl);
  return new Promise((resolve, reject) => {
    const socket = net.connect(Number(url.port), url.hostname, () => socket.write(`GET ${url.pathname} HTTP/1.1\r\nHost: ${url.host}\r\n` +
      'Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n'));
    let got = '';
    socket.on('data', (d: Buffer) => (got += d.toString('utf8')));
    socket.on('error', reject);
    socket.on('close', () => resolve(got));
  });
}

const good = { machine: 'blank', user: 'ada', lifetimeS: 3600 };

test('a full view-only link refuses the next viewer with 503 QWD_VIEWERS_FULL before the upgrade; the owner still gets in; a slot frees when a viewer leaves', async (t) => {
  const setup = makeSetup(t, { bridge: { maxViewersPerLink: 3, maxViewersPerSession: 6, reservedControlViewers: 2 } });
  const broker = await startTestBroker(t, setup.config);
  const { json: s } = await api(broker, 'POST', '/api/v1/sessions', good);
  const open: RfbSession[] = [];
  t.teardown(() => { for (const v of open) v.close(); });
  for (let i = 0; i < 3; i++) open.push(await connectRfb(s.viewWsUrl));
  t.deepEqual(broker.bridge.viewerCounts(s.id), { control: 0, view: 3 });

  const refused = await upgradeAnswer(s.viewWsUrl);
  t.regex(refused, /^HTTP\/1\.1 503 /);
  t.regex(refused, /X-QWD-Error: QWD_VIEWERS_FULL/);
  t.regex(refused, /QWD_VIEWERS_FULL: this view-only link already has 3 viewers \(the limit is 3\)\n$/);
  await t.throwsAsync(connectRfb(s.viewWsUrl), { message: 'HTTP 503' }, 'a real ws client is refused too');
  t.deepEqual(broker.bridge.viewerCounts(s.id), { control: 0, view: 3 }, 'the refused viewers were never counted');

  const owner = await connectRfb(s.wsUrl);
  open.push(owner);
  t.is((await owner.update(false)).length, owner.width * owner.height * 4, 'the owner gets in and sees the screen');

  open.shift()!.close();
  await waitFor('the bridge to see the viewer go', () => broker.bridge.viewerCounts(s.id).view === 2, 5000);
  open.push(await connectRfb(s.viewWsUrl));
  t.deepEqual(broker.bridge.viewerCounts(s.id), { control: 1, view: 3 });

  // The owner's link fills the rest; past the session cap, the control link is refused too.
  open.push(await connectRfb(s.wsUrl), await connectRfb(s.wsUrl));
  t.deepEqual(broker.bridge.viewerCounts(s.id), { control: 3, view: 3 });
  t.regex(await upgradeAnswer(s.wsUrl), /^HTTP\/1\.1 503 [^]*QWD_VIEWERS_FULL: this desktop already has 6 viewers/);
  t.is((await api(broker, 'GET', `/api/v1/sessions/${s.token}`)).json.state, 'running');
});

/** A running session on a fresh broker, with a control viewer and a view-only viewer connected. */
async function sessionWithTwoViewers(t: ExecutionContext) {
  const setup = makeSetup(t);
  const broker = await startTestBroker(t, setup.config);
  const { json: s } = await api(broker, 'POST', '/api/v1/sessions', good);
  const control = await connectRfb(s.wsUrl);
  const viewer = await connectRfb(s.viewWsUrl);
  t.teardown(() => { control.close(); viewer.close(); });
  return { broker, s, control, viewer };
}

test('16 MiB of clipboard text from a view-only viewer in 4 KiB frames is dropped as it streams: the control viewer keeps getting frames and /healthz answers', async (t) => {
  const { broker, control, viewer } = await sessionWithTwoViewers(t);
  const total = 16 * 1024 * 1024;
  const frame = Buffer.alloc(4096, 0x41);
  const header = Buffer.from([6, 0, 0, 0, 0, 0, 0, 0]);
  header.writeUInt32BE(total, 4);

  const cpuBefore = process.cpuUsage();
  const rssBefore = process.memoryUsage().rss;
  let sending = true;
  const sent = (async () => {
    viewer.ws.send(header);
    for (let off = 0; off < total; off += frame.length) {
      viewer.ws.send(frame);
      // Let the control viewer and /healthz take turns with the flood (the broker runs in this process).
      if (off % (256 * 1024) === 0) await new Promise((r) => setImmediate(r));
      // Wait for the socket to drain now and then, as a browser's WebSocket would.
      if (viewer.ws.bufferedAmount > 1024 * 1024) await waitFor('the viewer socket to drain', () => viewer.ws.bufferedAmount < 256 * 1024, 30000);
    }
    await waitFor('all clipboard frames to leave', () => viewer.ws.bufferedAmount === 0, 30000);
    sending = false;
  })();
  // Meanwhile the control viewer gets frames and the broker answers, for as long as the flood lasts.
  let frames = 0;
  let health = 0;
  while (sending || frames === 0) {
    t.is((await control.update(false)).length, control.width * control.height * 4);
    frames++;
    const res = await fetch(`${broker.url}/healthz`);
    t.is(res.status, 200);
    await res.text();
    health++;
  }
  await sent;
  // The view-only viewer's framing survived: it is still connected and its next request is answered.
  t.is((await viewer.update(false)).length, viewer.width * viewer.height * 4);
  t.is(viewer.ws.readyState, WebSocket.OPEN);
  const cpu = process.cpuUsage(cpuBefore);
  t.log(`16 MiB of dropped ClientCutText: ${((cpu.user + cpu.system) / 1000).toFixed(0)} ms CPU (broker and test client in one process), ` +
    `RSS ${(rssBefore / 2 ** 20).toFixed(0)} → ${(process.memoryUsage().rss / 2 ** 20).toFixed(0)} MiB; meanwhile ${frames} control frames, ${health} /healthz answers`);
});

test('a control viewer sending clipboard text over 1 MiB is closed with 1009 and a clear reason; the view-only viewer is unaffected', async (t) => {
  const { broker, s, control, viewer } = await sessionWithTwoViewers(t);
  const closed = new Promise<{ code: number; reason: string }>((resolve) => control.ws.once('close', (code, reason) => resolve({ code, reason: reason.toString() })));
  const header = Buffer.from([6, 0, 0, 0, 0, 0, 0, 0]);
  header.writeUInt32BE(1024 * 1024 + 1, 4);
  control.sendRaw(header);
  t.deepEqual(await closed, { code: 1009, reason: 'clipboard text over the limit of 1048576 bytes' });
  await waitFor('the bridge to drop the control viewer', () => broker.bridge.viewerCount(s.id) === 1, 5000);
  t.is((await viewer.update(false)).length, viewer.width * viewer.height * 4);
  t.is((await api(broker, 'GET', `/api/v1/sessions/${s.token}`)).json.state, 'running');
});
