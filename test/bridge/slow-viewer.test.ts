// A viewer that stops reading (a laptop lid closed, a phone in a tunnel) on a
// real desktop through a real broker: what the bridge holds for it stays
// bounded while the desktop keeps offering frames, the other viewer of the same
// desktop keeps receiving its frames, and after bridge.stalledViewerS the slow
// viewer is dropped with a reason (close 4008) — never the session.
import test from 'ava';
import type net from 'node:net';
import { api, startTestBroker } from '../helpers/broker.js';
import { makeSetup, requireQemu, waitFor } from '../helpers/env.js';
import { connectRfb } from '../helpers/rfb-client.js';
import { framebufferUpdateRequest } from '../../src/qemu/rfb-client-messages.js';

test.before(() => requireQemu());

/** What the bridge may hold for one viewer that reads nothing (≤ 512 KiB: the outbox's mark and one read, viewer-outbox.ts). */
const BOUND_BYTES = 1024 * 1024;

test('a viewer that stops reading holds a bounded buffer, does not slow the other viewer, and is dropped with a reason', async (t) => {
  t.timeout(120_000);
  const setup = makeSetup(t, { bridge: { stalledViewerS: 2 } });
  const broker = await startTestBroker(t, setup.config);
  const { json: s } = await api(broker, 'POST', '/api/v1/sessions', { machine: 'blank', user: 'ada', lifetimeS: 600 });
  const fast = await connectRfb(s.wsUrl);
  t.teardown(() => fast.close());
  const slow = await connectRfb(s.wsUrl);
  t.teardown(() => slow.close());
  const closed = new Promise<{ code: number; reason: string }>((resolve) => {
    slow.ws.once('close', (code, reason) => resolve({ code, reason: reason.toString() }));
  });
  // The slow viewer stops reading, and keeps asking for whole screens (raw, ≈ 1 MiB each): with every frame the fast
  // viewer gets, it asks again, so QEMU sends it one more (it merges requests that arrive between two refreshes).
  // Soon that is more than the kernel's socket buffers hold, so the bridge has to stop reading its VNC connection.
  // (A browser that stops reading also stops asking: this one is worse.)
  const socket = (slow.ws as unknown as { _socket: net.Socket })._socket;
  socket.pause();
  let asked = 0;
  const ask = () => {
    if (slow.ws.readyState !== slow.ws.OPEN) return;
    slow.sendRaw(framebufferUpdateRequest(false, slow.width, slow.height));
    asked++;
  };
  ask();
  const screenBytes = slow.width * slow.height * 4;

  // Meanwhile the fast viewer asks for whole screens and gets them, and the slow one's buffer is watched.
  let frames = 0;
  let most = 0;
  while (broker.bridge.viewerCounts(s.id).control === 2) {
    await fast.update(false);
    ask();
    frames++;
    most = Math.max(most, broker.bridge.bufferedBytes(s.id));
  }
  t.log(`the fast viewer got ${frames} whole screens while the slow one stalled; the bridge held at most ${most} bytes ` +
    `(${asked} screens of ${screenBytes} bytes were asked for)`);
  t.true(most <= BOUND_BYTES, `held ${most} bytes`);
  t.true(most > 0, 'the bridge did hold bytes for the slow viewer (it had stopped reading)');
  t.true(frames >= 5, `the fast viewer kept getting frames (${frames})`);
  t.deepEqual(broker.bridge.viewerCounts(s.id), { control: 1, view: 0 }, 'only the slow viewer was dropped');

  // Reading again, the slow viewer finds the reason after the frames it had not read.
  socket.resume();
  t.deepEqual(await closed, { code: 4008, reason: 'viewer stopped reading' });
  // The session and the other viewer are untouched.
  await fast.update(false);
  t.is((await api(broker, 'GET', `/api/v1/sessions/${s.token}`)).json.state, 'running');
  await waitFor('the bridge to hold nothing more', () => broker.bridge.bufferedBytes(s.id) === 0, 10_000);
});
